"""`aimx demo --no-wait`, the README's main command, run as a process."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile

from twisted.internet import threads
from twisted.trial.unittest import TestCase

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DemoTests(TestCase):
    async def test_demo_receives_and_replies(self):
        """Three messages in over SMTP+STARTTLS, one signed reply out to the sender's MX."""
        base = tempfile.mkdtemp(prefix="aimx-demo-test-")  # short: the socket path must fit
        self.addCleanup(shutil.rmtree, base, True)
        result = await threads.deferToThread(
            subprocess.run,
            [sys.executable, "-m", "aimx", "demo", "--port", str(free_port()), "--no-wait",
             "--dir", base],
            cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, timeout=120,
        )
        out = result.stdout.decode()
        self.assertEqual(result.returncode, 0, result.stderr.decode()[-2000:])
        self.assertIn("Delivered 3 messages over SMTP+STARTTLS", out)
        self.assertIn('dkim = "pass"', out)
        self.assertIn("delivered to mx.sender.localhost", out)
        self.assertIn('delivery_status = "delivered"', out)
        [received] = os.listdir(os.path.join(base, "remote-mx"))
        with open(os.path.join(base, "remote-mx", received), "rb") as f:
            self.assertTrue(f.read().startswith(b"DKIM-Signature:"))

    async def test_daemon_failure_reason_shown(self):
        """A daemon that dies (its socket path too long) is reported with its own reason."""
        base = os.path.join(tempfile.mkdtemp(prefix="aimx-demo-test-"), "d" * 120)
        self.addCleanup(shutil.rmtree, os.path.dirname(base), True)
        result = await threads.deferToThread(
            subprocess.run,
            [sys.executable, "-m", "aimx", "demo", "--port", str(free_port()), "--no-wait",
             "--dir", base],
            cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, timeout=120,
        )
        self.assertEqual(result.returncode, 1)
        # The daemon may die before its SMTP port is seen or after: either way, its reason.
        self.assertIn(b"exited", result.stderr)
        self.assertIn(b"(Failed to bind UDS send socket", result.stderr)
        self.assertIn(b"AF_UNIX path too long", result.stderr)
