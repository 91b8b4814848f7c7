"""`aimx portcheck` end to end on loopback against an in-process verifier.

The verifier (L{aimx.verifier.service.Verifier}) listens on 127.0.0.1:0 for HTTP and
for its port-25 listener, with C{allow_private} so it probes loopback callers, and
its probe-back port set to the port the check treats as "port 25".  The check gets
C{AIMX_PORTCHECK_BIND=127.0.0.1:<that port>} and C{AIMX_SMTP_OUT_PORT=<the verifier's
SMTP port>}, so nothing touches the real port 25 or leaves loopback.
"""

import argparse
import functools
import io
import os
import socket
import subprocess
import sys

from twisted.internet import defer, reactor, threads
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from aimx.cli import portcheck as cli
from aimx.cli.session import Session, execute
from aimx.cli.term import Terminal
from aimx.core import portcheck as core
from aimx.core.portcheck import AIMX
from aimx.verifier import client
from aimx.verifier.service import Verifier
from tests.integration.base import DaemonTestCase

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IS_ROOT = os.geteuid() == 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bindable(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def own_process() -> tuple[str, list[str]]:
    """This process's name as ss shows it, and its command line."""
    with open("/proc/self/comm") as f:
        name = f.read().strip()
    return name, client._proc_argv(os.getpid()) or []


class PortcheckMixin:
    """Starts a verifier; L{portcheck} runs the verb in-process with the real reactor."""

    def start_verifier(self, probe_port: int, **kw) -> Verifier:
        verifier = Verifier(
            reactor, http=("127.0.0.1", 0), smtp=("127.0.0.1", 0), probe_port=probe_port,
            hostname="verifier.test", allow_private=True, **kw,
        )
        verifier.startService()
        self.addCleanup(verifier.stopService)
        self.verifier = verifier
        self.verify_host = f"http://127.0.0.1:{verifier.http_port.address.port}"
        self.smtp_port = verifier.smtp_port.address.port
        return verifier

    async def portcheck(self, *argv, port: int, out_port=None, detect=client.detect_occupancy):
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers(dest="verb")
        cli.add_parser(sub, argparse.ArgumentParser(add_help=False))
        args = parser.parse_args(["portcheck", *argv])
        args.config_dir, args.data_dir = os.path.abspath(self.mktemp()), None
        environ = {
            "AIMX_PORTCHECK_BIND": f"127.0.0.1:{port}",
            "AIMX_SMTP_OUT_PORT": str(out_port or self.smtp_port),
        }
        out, err = io.StringIO(), io.StringIO()
        session = Session(args, connect=None, euid=0,
                          term=Terminal(out, err, io.StringIO(), environ), environ=environ)
        verb = functools.partial(cli.portcheck, reactor=reactor, detect=detect)
        code = await execute(verb, args, session)
        return code, out.getvalue(), err.getvalue()


class PortcheckTests(PortcheckMixin, TestCase):
    @defer.inlineCallbacks
    def test_all_pass_with_temporary_responder(self):
        """Port free: the responder answers the verifier's probe back; exit 0; port freed."""
        port = free_port()
        self.start_verifier(port)
        code, out, err = yield defer.Deferred.fromCoroutine(
            self.portcheck("--verify-host", self.verify_host + "/", port=port)
        )
        self.assertEqual((code, err), (0, ""))
        self.assertIn("  Outbound port 25... [OK]\n  Inbound port 25... [OK]\n", out)
        self.assertIn("Port 25 reachable. Ready for `aimx setup`.", out)
        self.assertTrue(bindable(port), "the temporary responder is gone")

    @defer.inlineCallbacks
    def test_nothing_answers_probe_back(self):
        """The verifier's probe back finds nothing listening: inbound fails, exit 1."""
        responder_port, silent_port = free_port(), free_port()
        self.start_verifier(silent_port)
        code, out, err = yield defer.Deferred.fromCoroutine(
            self.portcheck("--verify-host", self.verify_host, port=responder_port)
        )
        self.assertEqual(code, 1)
        self.assertIn("  Outbound port 25... [OK]\n  Inbound port 25... [FAIL]\n", out)
        self.assertIn(core.INBOUND_UNREACHABLE, err)
        self.assertIn("the verifier could not reach 127.0.0.1", err)
        self.assertIn("Error: Some checks failed. See details above.", err)

    @defer.inlineCallbacks
    def test_outbound_blocked(self):
        """Nothing answers on the verify host's SMTP port: outbound fails with the reason."""
        port = free_port()
        self.start_verifier(port)
        code, out, err = yield defer.Deferred.fromCoroutine(
            self.portcheck("--verify-host", self.verify_host, port=port,
                           out_port=free_port())
        )
        self.assertEqual(code, 1)
        self.assertIn("Outbound port 25... [FAIL]", out)
        self.assertIn("Inbound port 25... [OK]", out)
        self.assertIn(core.OUTBOUND_BLOCKED, err)
        self.assertIn("connection refused", err)

    @defer.inlineCallbacks
    def test_verifier_unreachable(self):
        """No verifier at the URL: the inbound check failed, naming the URL."""
        port = free_port()
        self.start_verifier(port)
        dead = f"http://127.0.0.1:{free_port()}"
        code, _out, err = yield defer.Deferred.fromCoroutine(
            self.portcheck("--verify-host", dead, port=port)
        )
        self.assertEqual(code, 1)
        self.assertIn(f"Inbound port 25 check failed: {dead}/probe: connection refused", err)

    @defer.inlineCallbacks
    def test_port_held_by_other_program(self):
        """A program holds the port: outbound checked, no responder, exit 1 naming it."""
        name, argv = own_process()
        if core.is_aimx_process(name, argv):
            raise self.skipTest("this test process looks like aimx to ss")
        held = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(held.stopListening)
        port = held.getHost().port
        self.start_verifier(port)
        occupancy = client.detect_occupancy(port)
        if occupancy == core.FREE:
            raise self.skipTest("ss is not available")
        code, out, err = yield defer.Deferred.fromCoroutine(
            self.portcheck("--verify-host", self.verify_host, port=port)
        )
        self.assertEqual(code, 1)
        self.assertIn("Outbound port 25... [OK]", out)
        self.assertNotIn("Inbound", out)
        self.assertIn(f"Error: Port 25 is occupied by `{occupancy.name}`.", err)
        self.assertIn(occupancy.name, (name, "unknown"))

    @defer.inlineCallbacks
    def test_bind_failure(self):
        """ss unavailable and the port taken: the responder's bind failure is reported."""
        held = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(held.stopListening)
        port = held.getHost().port
        self.start_verifier(port)
        code, _out, err = yield defer.Deferred.fromCoroutine(
            self.portcheck("--verify-host", self.verify_host, port=port,
                           detect=lambda p: core.FREE)
        )
        self.assertEqual(code, 1)
        self.assertIn("Error: Cannot bind port 25 for preflight:", err)
        self.assertIn("Run with sudo or ensure port 25 is available.", err)

    @defer.inlineCallbacks
    def test_verifier_http(self):
        """/health over HTTP; /probe behind a loopback proxy names the client's address."""
        port = free_port()
        self.start_verifier(port)
        pool = HTTPConnectionPool(reactor)
        self.addCleanup(pool.closeCachedConnections)
        agent = Agent(reactor, pool=pool)
        response = yield agent.request(b"GET", (self.verify_host + "/health").encode())
        self.assertEqual(response.code, 200)
        self.assertEqual(
            (yield readBody(response)), b'{"status":"ok","service":"aimx-verifier"}'
        )
        # A proxy naming 127.0.0.1 (allowed here): nothing listens on the probe port.
        response = yield agent.request(
            b"GET", (self.verify_host + "/probe").encode(),
            Headers({b"X-AIMX-Client-IP": [b"127.0.0.1"]}),
        )
        self.assertEqual((yield readBody(response)), b'{"reachable":false,"ip":"127.0.0.1"}')
        response = yield agent.request(b"GET", (self.verify_host + "/nope").encode())
        self.assertEqual(response.code, 404)
        yield readBody(response)

    @defer.inlineCallbacks
    def test_verifier_refuses_loopback_without_allow_private(self):
        """A verifier without allow_private answers a bare loopback caller 400."""
        verifier = Verifier(reactor, http=("127.0.0.1", 0), smtp=None)
        verifier.startService()
        self.addCleanup(verifier.stopService)
        pool = HTTPConnectionPool(reactor)
        self.addCleanup(pool.closeCachedConnections)
        url = f"http://127.0.0.1:{verifier.http_port.address.port}/probe"
        response = yield Agent(reactor, pool=pool).request(b"GET", url.encode())
        self.assertEqual(response.code, 400)
        yield readBody(response)
        result = yield defer.Deferred.fromCoroutine(
            client.inbound_probe(reactor, url[: -len("/probe")])
        )
        self.assertFalse(result.ok)
        self.assertIn("HTTP 400", result.error)

    @defer.inlineCallbacks
    def test_cli_process(self):
        """`python -m aimx portcheck` as a process (as root) against the verifier."""
        if not IS_ROOT:
            raise self.skipTest("aimx portcheck requires root")
        port = free_port()
        self.start_verifier(port)
        env = dict(os.environ, PYTHONPATH=REPO, AIMX_CONFIG_DIR=os.path.abspath(self.mktemp()),
                   AIMX_PORTCHECK_BIND=f"127.0.0.1:{port}",
                   AIMX_SMTP_OUT_PORT=str(self.smtp_port))
        env.pop("NO_COLOR", None)
        result = yield threads.deferToThread(
            subprocess.run,
            [sys.executable, "-m", "aimx", "portcheck", "--verify-host", self.verify_host],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("Port 25 reachable", result.stdout)
        self.assertIn("[OK]", result.stdout)
        self.assertNotIn("\x1b", result.stdout)

    @defer.inlineCallbacks
    def test_twistd_plugin(self):
        """`twistd --help` lists aimx-verifier; its own help lists --probe-port."""
        env = dict(os.environ, PYTHONPATH=REPO)
        twistd = [sys.executable, "-m", "twisted"]
        listing = yield threads.deferToThread(
            subprocess.run, [*twistd, "--help"], env=env, cwd=REPO,
            capture_output=True, text=True, timeout=120,
        )
        self.assertIn("aimx-verifier", listing.stdout)
        self.assertIn("aimx ", listing.stdout)
        options = yield threads.deferToThread(
            subprocess.run, [*twistd, "aimx-verifier", "--help"], env=env, cwd=REPO,
            capture_output=True, text=True, timeout=120,
        )
        self.assertEqual(options.returncode, 0, options.stderr)
        for flag in ("--http", "--smtp", "--probe-port", "--allow-private"):
            self.assertIn(flag, options.stdout)


class AimxAnswersTests(PortcheckMixin, DaemonTestCase):
    """aimx's own daemon holds the port: its ESMTP server answers both probes' peers."""

    @defer.inlineCallbacks
    def test_probe_back_reaches_daemon(self):
        """Occupancy aimx: no responder; the verifier's EHLO reaches the real daemon."""
        self.start_daemon()
        self.start_verifier(self.port)
        code, out, err = yield defer.Deferred.fromCoroutine(
            self.portcheck("--verify-host", self.verify_host, port=self.port,
                           detect=lambda p: AIMX)
        )
        self.assertEqual((code, err), (0, ""))
        self.assertIn("  Inbound port 25... [OK]\n", out)

    @defer.inlineCallbacks
    def test_outbound_probe_against_daemon(self):
        """The outbound prober completes a multi-line EHLO with aimx's ESMTP server."""
        self.start_daemon()
        result = yield defer.Deferred.fromCoroutine(
            client.outbound_probe(reactor, "http://127.0.0.1:1",
                                  core.ProbeSettings(out_port=self.port))
        )
        self.assertEqual(result, core.PASSED)
