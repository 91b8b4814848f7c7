"""`aimx demo`, the README's main command, run as a process, and the commands it prints.

The demo runs as a child process on loopback port 0 (its daemon picks a free port
and the demo reads it back), in a scratch directory.
The commands it prints are parsed from its output and pasted: each runs in a
shell of its own (C{bash -c}) as the current user, with none of the test's aimx
variables, as in another terminal.  When the tests run as root they are pasted
as C{nobody} too, the owner of a root-run demo's mailboxes, through
L{tests.integration.asuser} (this interpreter lives where C{nobody} may not exec
it, so the line is split with C{shlex} and its aimx arguments run after the
privilege drop, with the line's own variables).  Nothing waits on the wall clock:
output is read until the line that signals readiness, each wait bounded.
"""

import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

from twisted.internet import threads
from twisted.trial.unittest import SkipTest, TestCase

from aimx.errors import AimxError
from aimx.loopback import keys as dkimkeys
from tests.test_demo import DemoSendTestCase

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IS_ROOT = os.geteuid() == 0
NOBODY = 65534
#: The demo prints this after the commands to try, once everything is up.
READY = "Ctrl-C stops the demo."
TRY = "Try it from another shell"
#: A comment before a command only root may run (in a demo root started).
AS_ROOT = "# as root:"
#: Bound on any one wait for a child process.
TIMEOUT = 120


def read_until(stream, *needles: str, timeout: float = TIMEOUT) -> str:
    """Read C{stream} (a pipe) until one line contains every needle; what was read.

    @raise AssertionError: the pipe ended, or nothing matched within C{timeout}.
    """
    import time

    deadline = time.monotonic() + timeout
    text = ""
    fd = stream.fileno()
    needle = " ... ".join(needles)
    while not any(all(n in line for n in needles) for line in text.splitlines()):
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(left, 0))
        if not ready:
            raise AssertionError(f"no {needle!r} within {timeout} s; got:\n{text[-3000:]}")
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError(f"output ended before {needle!r}:\n{text[-3000:]}")
        text += chunk.decode("utf-8", "replace")
    return text


def printed_commands(output: str) -> list[tuple[str, bool]]:
    """The commands after "Try it from another shell": C{(line, root_only)} each."""
    block = output.split(TRY, 1)[1].split(READY, 1)[0]
    commands, root_only = [], False
    for line in block.splitlines():
        if line.startswith("  #"):
            root_only = line.strip().startswith(AS_ROOT)
        elif line.startswith("  ") and line.strip():
            commands.append((line.strip(), root_only))
    return commands


def shell_env(home: str) -> dict:
    """Another terminal's environment: no aimx variables, no PYTHONPATH, its own HOME."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AIMX_") and k not in ("PYTHONPATH", "SUDO_USER")}
    env.update(HOME=home, NO_COLOR="1")
    return env


class DemoTests(TestCase):
    async def test_demo_receives_and_replies(self):
        """Three messages in over SMTP+STARTTLS, one signed reply to the first out to the
        sender's MX."""
        base = tempfile.mkdtemp(prefix="aimx-demo-test-")  # short: the socket path must fit
        self.addCleanup(shutil.rmtree, base, True)
        result = await threads.deferToThread(
            subprocess.run,
            [sys.executable, "-m", "aimx", "demo", "--port", "0", "--no-wait",
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
            raw = f.read()
        self.assertTrue(raw.startswith(b"DKIM-Signature:"))
        # The reply answers Alice's message: one thread for `aimx mail thread`.
        alice = re.search(r'message_id = "(plain-\d+@sender\.localhost)"', out)[1]
        self.assertIn(f"\r\nIn-Reply-To: <{alice}>\r\n".encode(), raw)
        self.assertIn(f'in_reply_to = "{alice}"', out)

    async def test_daemon_failure_reason_shown(self):
        """A daemon that dies (its socket path too long) is reported with its own reason."""
        base = os.path.join(tempfile.mkdtemp(prefix="aimx-demo-test-"), "d" * 120)
        self.addCleanup(shutil.rmtree, os.path.dirname(base), True)
        result = await threads.deferToThread(
            subprocess.run,
            [sys.executable, "-m", "aimx", "demo", "--port", "0", "--no-wait",
             "--dir", base],
            cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, timeout=120,
        )
        self.assertEqual(result.returncode, 1)
        # The daemon may die before its SMTP port is seen or after: either way, its reason.
        self.assertIn(b"exited", result.stderr)
        self.assertIn(b"(Failed to bind UDS send socket", result.stderr)
        self.assertIn(b"AF_UNIX path too long", result.stderr)


class RunningDemoTests(TestCase):
    """A demo that keeps serving, and the commands it prints, pasted."""

    def setUp(self):
        # World-writable (as /tmp): a root-run demo's mailbox owner, nobody, runs its
        # hooks and pastes its commands in here.  Short: the socket path must fit.
        self.scratch = tempfile.mkdtemp(prefix="aimx-demo-test-")
        self.addCleanup(shutil.rmtree, self.scratch, True)
        os.chmod(self.scratch, 0o1777)
        self.home = os.path.join(self.scratch, "home")
        os.mkdir(self.home)
        os.chmod(self.home, 0o1777)
        self.base = os.path.join(self.scratch, "demo")

    async def start_demo(self) -> str:
        """Start `aimx demo` (as this user); fires with its output up to L{READY}."""
        # The interpreter's own bin directory off PATH, so the demo names `python -m aimx`
        # of this checkout rather than an installed console script of another aimx.
        bindir = os.path.dirname(sys.executable)
        path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                               if os.path.abspath(p) != bindir)
        env = {k: v for k, v in os.environ.items() if k != "SUDO_USER"}
        env.update(PYTHONPATH=REPO, PATH=path)
        log = open(os.path.join(self.scratch, "demo.stderr"), "wb")
        self.addCleanup(log.close)
        proc = subprocess.Popen(
            [sys.executable, "-m", "aimx", "demo", "--port", "0",
             "--dir", self.base],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log,
        )
        self.addCleanup(self._stop, proc)
        try:
            return await threads.deferToThread(read_until, proc.stdout, READY)
        except AssertionError as e:
            with open(log.name, "rb") as f:
                raise AssertionError(f"{e}\nstderr:\n{f.read().decode()[-3000:]}") from None

    def _stop(self, proc: subprocess.Popen):
        if proc.poll() is None:
            proc.terminate()
        proc.stdout.close()
        return threads.deferToThread(proc.wait, TIMEOUT)

    def paste(self, line: str):
        """Run one printed line in a fresh shell as this user; fires with the result."""
        return threads.deferToThread(
            subprocess.run, ["bash", "-c", line], env=shell_env(self.home), cwd=self.scratch,
            capture_output=True, timeout=TIMEOUT,
        )

    def paste_as_nobody(self, line: str):
        """Run one printed line as nobody: its variables, its aimx arguments after the drop."""
        words = shlex.split(line)
        env = shell_env(self.home)
        while "=" in words[0] and words[0].split("=", 1)[0].isidentifier():
            name, value = words.pop(0).split("=", 1)
            env[name] = value
        program = [sys.executable, "-m", "aimx"]
        self.assertEqual(words[:3], program, line)
        env["PYTHONPATH"] = REPO  # where tests.integration.asuser lives (it is the same)
        argv = [sys.executable, "-m", "tests.integration.asuser", str(NOBODY), str(NOBODY),
                "cli", *words[3:]]
        return threads.deferToThread(
            subprocess.run, argv, env=env, cwd=self.scratch, capture_output=True,
            timeout=TIMEOUT,
        )

    def prefix(self, commands) -> str:
        """The words every printed command starts with (the demo's variables and aimx)."""
        [line] = [line for line, _ in commands if line.endswith(" mailboxes list")]
        return line[: -len(" mailboxes list")]

    async def hook_line(self, prefix: str, needle: str) -> str:
        """Follow the demo's log with the printed `aimx logs` until the result line of a
        hook run (its C{exit_code}) containing C{needle} appears; that line."""
        follow = subprocess.Popen(
            ["bash", "-c", f"{prefix} logs --follow --lines 1000"],
            env=shell_env(self.home), cwd=self.scratch, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            text = await threads.deferToThread(read_until, follow.stdout, needle, "exit_code=")
        finally:
            os.killpg(follow.pid, signal.SIGTERM)  # aimx and its `tail -F`
            follow.stdout.close()
            await threads.deferToThread(follow.wait, TIMEOUT)
        return [line for line in text.splitlines() if needle in line and "exit_code=" in line][0]

    def verbs(self, commands) -> list[str]:
        """The first two words of each command after the common prefix."""
        prefix = self.prefix(commands)
        return [" ".join(shlex.split(line[len(prefix):])[:2]) for line, _ in commands]

    async def test_printed_commands_work(self):
        """Every command the demo prints succeeds pasted into another shell: the listing
        shows the three messages and the search finds Alice's, the hook it suggests fires
        on `aimx demo send`, doctor finds no failure, logs shows the demo's log, send
        reaches the sender's mail server."""
        output = await self.start_demo()
        commands = printed_commands(output)
        expected = ["mailboxes list", "mail list", "mail search", "hooks create", "demo send",
                    "send --from", "doctor", "logs"]
        if not IS_ROOT:
            expected.append("agents setup")
        self.assertEqual(self.verbs(commands), expected)
        results = {}
        for verb, (line, _) in zip(self.verbs(commands), commands):
            result = await self.paste(line)
            self.assertEqual(result.returncode, 0,
                             f"{line}\nstdout:\n{result.stdout.decode()}\n"
                             f"stderr:\n{result.stderr.decode()}")
            results[verb] = result
        prefix = self.prefix(commands)

        listed = results["mail list"].stdout.decode().splitlines()
        self.assertEqual(listed[0].split("  ")[-1], "SUBJECT")
        self.assertEqual(sorted(line.split("  ")[-1] for line in listed[1:]),
                         ["Hello from the demo", "Report attached", "Weekly digest"])
        found = results["mail search"].stdout.decode()
        self.assertIn("Hello from the demo", found)
        self.assertIn("Re: Hello from the demo", found)

        doctor = results["doctor"].stdout.decode()
        self.assertNotIn("FAIL", doctor)
        self.assertNotIn("✗", doctor)
        self.assertIn("SMTP server:      running (aimx demo on 127.0.0.1:", doctor)
        for check in ("A", "MX", "SPF", "DKIM"):
            self.assertIn(f"  {check}: [OK]\n", doctor)
        # The records setup proposes: DMARC monitoring; no reverse DNS at loopback.
        self.assertIn("  DMARC: [OK] - p=none: monitoring, no policy applied yet\n", doctor)
        self.assertNotIn("PTR", doctor)
        self.assertIn("  Outbound: [OK] - mx.sender.localhost [127.0.0.1]:", doctor)
        self.assertIn("All checks passed.", doctor)

        logs = results["logs"].stdout.decode()
        self.assertIn("verb=HOOK-CREATE", logs)  # the pasted `hooks create`, just now
        self.assertIn("stored email", logs)
        self.assertIn(os.path.join(self.base, "aimx.log"), results["logs"].stderr.decode())

        self.assertEqual(len(os.listdir(os.path.join(self.base, "remote-mx"))), 2)
        line = await self.hook_line(prefix, 'stderr_tail="hook fired: Hello again')
        self.assertIn("exit_code=0", line)

    async def test_printed_commands_work_as_nobody(self):
        """Root's demo gives its mailboxes to nobody, who can paste every command but the
        one marked "as root" (doctor reads the root-only config; it says so)."""
        if not IS_ROOT:
            raise SkipTest("needs root to run the commands as a second uid")
        output = await self.start_demo()
        self.assertIn("mailbox owner:  nobody (hooks run as nobody)", output)
        commands = printed_commands(output)
        verbs = self.verbs(commands)
        self.assertEqual([v for v, (_, root_only) in zip(verbs, commands) if root_only],
                         ["doctor"])
        for line, root_only in commands:
            result = await self.paste_as_nobody(line)
            report = (f"{line}\nstdout:\n{result.stdout.decode()}\n"
                      f"stderr:\n{result.stderr.decode()}")
            if root_only:
                self.assertEqual(result.returncode, 1, report)
                self.assertIn(b"re-run it as root (sudo aimx doctor)", result.stderr, report)
            else:
                self.assertEqual(result.returncode, 0, report)
        line = await self.hook_line(self.prefix(commands),
                                    'stderr_tail="hook fired: Hello again')
        self.assertIn("owner=nobody", line)
        self.assertIn("exit_code=0", line)

    async def test_hook_fires_on_demo_send(self):
        """A hook made with `aimx hooks create` (no --fire-on-untrusted) runs, as the
        mailbox owner, for the message `aimx demo send` delivers: it is DKIM-signed by
        the sender domain and so trusted."""
        output = await self.start_demo()
        prefix = self.prefix(printed_commands(output))
        marker = os.path.join(self.scratch, "fired")
        cmd = f'["/bin/sh", "-c", "cat > {marker}"]'
        create = await self.paste(f"{prefix} hooks create --mailbox agent --event on_receive "
                                  f"--cmd {shlex.quote(cmd)} --name marker")
        self.assertEqual(create.returncode, 0, create.stderr)
        sent = await self.paste(f"{prefix} demo send --subject 'Hook test' --body 'Fire.'")
        self.assertEqual(sent.returncode, 0, sent.stderr)
        self.assertIn(b"DKIM-signed by sender.localhost", sent.stdout)
        line = await self.hook_line(prefix, "hook_name=marker event=on_receive")
        self.assertIn("exit_code=0", line)
        with open(marker, encoding="utf-8") as f:
            stored = f.read()
        self.assertIn('subject = "Hook test"', stored)
        self.assertIn('trusted = "true"', stored)
        self.assertIn('dkim = "pass"', stored)
        self.assertEqual(os.stat(marker).st_uid, NOBODY if IS_ROOT else os.geteuid())


class DemoSendRefusedTests(DemoSendTestCase):
    """`aimx demo send` to a demo that stopped (a real connect to loopback)."""

    def test_not_answering(self):
        """A demo that stopped: nothing answers on its port, and that is said."""
        key = os.path.join(self.run_dir, "sender.key")
        with open(key, "wb") as f:
            f.write(dkimkeys.generate_key()[0])
        # Bound but not listening, and held: connecting is refused, and no other
        # program can take the port while the test runs (a closed one could be).
        dead = socket.socket()
        self.addCleanup(dead.close)
        dead.bind(("127.0.0.1", 0))
        port = dead.getsockname()[1]
        self.with_state(sender_key=key, port=port)
        e = self.assertRaises(AimxError, self.send)
        self.assertIn(f"the demo is not answering on 127.0.0.1:{port}", str(e))
