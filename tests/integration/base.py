"""Shared set-up for integration tests: a real daemon on loopback with fixture DNS.

Each test gets scratch config/data/runtime dirs, a DKIM key, a L{FixtureDNS} on
127.0.0.1, and the daemon's service tree started in-process on 127.0.0.1:0.  SMTP
clients are real (C{smtplib} or raw sockets) and run in threads, so the reactor
keeps serving while they block.

L{DaemonTestCase.serve} runs C{aimx serve} as a process instead.  No port is
guessed: the daemon binds port 0 and the test waits for its readiness signal, the
pid file (written once every listener is bound), then reads the bound addresses
from the C{bind:} lines logged before it (L{aimx.ops.bind.logged_addresses}).

A second uid (C{nobody}) talks to the daemon from a child process that drops
privileges before connecting (L{tests.integration.asuser}), so C{SO_PEERCRED}
is real: L{DaemonTestCase.as_nobody}, and L{SecondUid} for the tests built on it
(root only).
"""

import json
import os
import pwd
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import tomllib

from twisted.internet import defer, reactor, task, threads
from twisted.trial.unittest import TestCase

from aimx import service
from aimx.core import frontmatter
from aimx.ops import bind
from aimx.smtp.server import SmtpLimits
from aimx.store import keys
from aimx.testing import fakes
from aimx.loopback import keys as dkimkeys
from aimx.loopback.dns import FixtureDNS

DOMAIN = "test.local"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IS_ROOT = os.geteuid() == 0
#: The second uid.
NOBODY = 65534
#: Seconds a started `aimx serve` may take to become ready.
READY_TIMEOUT = 30


def reserve_port(case: TestCase) -> int:
    """A loopback TCP port kept for C{case}: bound, not listening, until clean-up.

    Connecting to it is refused, no other program and no port-0 bind gets it, yet a
    listener of the code under test can still take it (Twisted binds with
    C{SO_REUSEADDR}, as this socket does). Unlike bind-then-close, nothing can take
    the port between the pick and its use.
    """
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    held.bind(("127.0.0.1", 0))
    case.addCleanup(held.close)
    return held.getsockname()[1]


def current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def base_config(data_dir: str, *, catchall: bool = True, mailboxes=(), hooks=(),
                **top) -> str:
    """alice, bob (and the catchall), owned by the current user, then C{mailboxes}.

    @param mailboxes: more mailboxes (or more keys of these): name to table fields.
    @param hooks: C{(mailbox, hook table)} pairs (L{aimx.testing.fakes.hook_table}).
    @param top: top-level keys (C{trust}, C{max_sessions_per_ip}, ...).
    """
    tables = {"alice": {}, "bob": {}}
    if catchall:
        tables["catchall"] = {"address": f"*@{DOMAIN}"}
    for name, fields in dict(mailboxes).items():
        tables[name] = {**tables.get(name, {}), **fields}
    for name, table in hooks:
        box = tables.setdefault(name, {})
        box["hooks"] = [*box.get("hooks", []), table]
    return fakes.config_text(DOMAIN, data_dir=data_dir, owner=current_user(),
                             mailboxes=tables, **top)


class DaemonTestCase(TestCase):
    """Starts FixtureDNS; L{start_daemon} builds and starts the service tree."""

    catchall = True
    limits = SmtpLimits()

    def setUp(self):
        root = os.path.abspath(self.mktemp())
        self.config_dir = os.path.join(root, "etc")
        self.data_dir = os.path.join(root, "data")
        # Short, under /tmp: a UNIX socket path must fit in 108 bytes.
        self.runtime_dir = tempfile.mkdtemp(prefix="aimx-run-")
        self.addCleanup(shutil.rmtree, self.runtime_dir, True)
        os.makedirs(self.config_dir)
        self.write_config(base_config(self.data_dir, catchall=self.catchall))
        keys.generate_dkim_key(self.config_dir, bits=1024)
        self.dns = FixtureDNS(reactor)
        self.dns.start()
        self.addCleanup(self.dns.stop)
        self.environ = {"AIMX_NAMESERVERS": self.dns.nameservers}

    def write_config(self, text: str):
        with open(os.path.join(self.config_dir, "config.toml"), "w") as f:
            f.write(text)

    def options(self, *extra: str) -> service.Options:
        options = service.Options()
        options.parseOptions(
            [
                "--bind", "127.0.0.1:0",
                "--config-dir", self.config_dir,
                "--runtime-dir", self.runtime_dir,
                *extra,
            ]
        )
        return options

    def start_daemon(self, options=None, limits=None) -> service.Daemon:
        if options is None:
            options = self.options()
        daemon = service.build(
            options, reactor, limits=limits or self.limits, environ=self.environ
        )
        self.run_daemon(daemon)
        self.daemon = daemon
        self.port = daemon.smtp.ports[0].getHost().port
        return daemon

    def run_daemon(self, daemon: service.Daemon) -> service.Daemon:
        """Start C{daemon}; L{stop_daemon} it at clean-up."""
        daemon.startService()
        self.addCleanup(stop_daemon, daemon)
        return daemon

    # -- a second uid --------------------------------------------------------------

    def as_nobody(self, mode: str, *args: str, runtime_dir=None):
        """Run tests.integration.asuser as nobody in a thread; fires with the result."""
        env = dict(os.environ, PYTHONPATH=REPO, AIMX_CONFIG_DIR=self.config_dir,
                   AIMX_RUNTIME_DIR=runtime_dir or self.runtime_dir)
        argv = [sys.executable, "-m", "tests.integration.asuser", str(NOBODY), str(NOBODY),
                mode, *args]
        return threads.deferToThread(
            subprocess.run, argv, env=env, cwd=REPO, capture_output=True, timeout=60
        )

    async def nobody_commands(self, *calls) -> list:
        """Control commands C{(name in aimx.control.commands, arguments)} as nobody: one
        C{{"ok": reply}} or C{{"error": code, "reason": text}} per command."""
        result = await self.as_nobody("amp", json.dumps([list(c) for c in calls]))
        self.assertEqual(result.returncode, 0, result.stderr)
        return json.loads(result.stdout)

    # -- the daemon as a process -------------------------------------------------

    async def serve(self, *args: str, env=None, command=(), pass_fds=(),
                    journal: bool = False) -> subprocess.Popen:
        """Start C{aimx serve} with this test's directories and wait until it is ready.

        Its log goes to C{self.serve_log}; C{self.addresses} are the bound SMTP
        addresses (C{host:port}, IPv6 in brackets) and C{self.port} the first one's.

        @param args: more C{aimx serve} arguments (C{--bind ...}).
        @param command: words to run C{python -m aimx serve ...} under (a wrapper that
            execs it, so the pid stays the one the pid file must hold).
        @param journal: the log is "the journal": C{JOURNAL_STREAM} names it, as
            systemd does for a service whose output goes to journald.
        """
        self.serve_log = os.path.join(os.path.abspath(self.mktemp()) + ".log")
        env = dict(os.environ, PYTHONPATH=REPO, **self.environ, **(env or {}))
        env.pop("JOURNAL_STREAM", None)
        with open(self.serve_log, "wb") as log:
            if journal:
                st = os.fstat(log.fileno())
                env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
            proc = subprocess.Popen(
                [*command, sys.executable, "-m", "aimx", "serve", "--config-dir",
                 self.config_dir, "--runtime-dir", self.runtime_dir, *args],
                env=env, cwd=REPO, stderr=log, pass_fds=pass_fds,
            )
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        self.addresses = await self.ready(proc)
        self.port = bind.split_address(self.addresses[0])[1]
        return proc

    @property
    def pid_file(self) -> str:
        return os.path.join(self.runtime_dir, service.PID_NAME)

    async def ready(self, proc: subprocess.Popen) -> list[str]:
        """Wait for C{proc}'s pid file; the addresses its log had bound by then.

        @raise AssertionError: it exited first, or was not ready within
            L{READY_TIMEOUT} seconds (with the end of its log).
        """
        await self.until(proc, lambda: self._pid_in_file() == proc.pid, "ready")
        return bind.logged_addresses(self.served_log())

    async def log_says(self, proc: subprocess.Popen, text: str) -> None:
        """Wait until C{proc}'s log says C{text} (a line it logs once something is done)."""
        await self.until(proc, lambda: text in self.served_log(), f"logging {text!r}")

    async def until(self, proc: subprocess.Popen, done, what: str) -> None:
        """Look at C{done()} every reactor tick or so until it holds.

        @raise AssertionError: C{proc} exited first, or C{what} took more than
            L{READY_TIMEOUT} seconds (with the end of its log).
        """
        deadline = reactor.seconds() + READY_TIMEOUT
        while not done():
            if proc.poll() is not None or reactor.seconds() > deadline:
                why = (f"exited with {proc.returncode}" if proc.returncode is not None
                       else f"not {what} within {READY_TIMEOUT} s")
                raise AssertionError(f"aimx serve {why}:\n{self.served_log()[-3000:]}")
            await task.deferLater(reactor, 0.02, lambda: None)

    def _pid_in_file(self) -> int | None:
        try:
            with open(self.pid_file) as f:
                return int(f.read())
        except (OSError, ValueError):
            return None

    def served_log(self) -> str:
        with open(self.serve_log, encoding="utf-8", errors="replace") as f:
            return f.read()

    # -- clients ---------------------------------------------------------------

    def smtp(self, raw: bytes, rcpts, mail_from="sender@example.com", helo="client.example.com",
             address: str | None = None):
        """Send one message with smtplib in a thread; fires with the final reply.

        @param address: C{host:port} to connect to (IPv6 in brackets); default
            127.0.0.1 and L{port}.
        """
        host, port = bind.split_address(address) if address else ("127.0.0.1", self.port)

        def send():
            with smtplib.SMTP(host, port, local_hostname=helo, timeout=30) as c:
                c.ehlo(helo)
                c.mail(mail_from)
                for rcpt in rcpts:
                    c.rcpt(rcpt)
                return c.data(raw)

        return threads.deferToThread(send)

    def dialogue(self, chunks: list[bytes]):
        """Send raw chunks on one socket and read reply lines until the server closes.

        End the chunks with QUIT (or something that makes the server close).
        """

        def talk():
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                out = b""
                for chunk in chunks:
                    s.sendall(chunk)
                while True:
                    data = s.recv(65536)
                    if not data:
                        break
                    out += data
                return out.split(b"\r\n")[:-1]

        return threads.deferToThread(talk)

    # -- the store -------------------------------------------------------------

    def inbox(self, mailbox: str) -> list[str]:
        """Paths of the stored .md files of a mailbox, flat and bundled."""
        directory = os.path.join(self.data_dir, "inbox", mailbox)
        if not os.path.isdir(directory):
            return []
        paths = []
        for name in sorted(os.listdir(directory)):
            if name.startswith("."):
                continue
            path = os.path.join(directory, name)
            if os.path.isdir(path):
                path = os.path.join(path, name + ".md")
            paths.append(path)
        return paths

    def read_mail(self, path: str) -> tuple[dict, bytes]:
        with open(path, "rb") as f:
            return frontmatter.parse(f.read())

    def only_mail(self, mailbox: str) -> tuple[dict, bytes]:
        [path] = self.inbox(mailbox)
        return self.read_mail(path)

    def publish_dkim(self, domain: str, selector: str = "sel") -> bytes:
        """Publish a DKIM key for C{domain}; return its private PEM."""
        private, txt = dkimkeys.generate_key()
        self.dns.add_txt(f"{selector}._domainkey.{domain}", txt)
        return private

    def sign(self, raw: bytes, private: bytes, domain: str, selector: str = "sel") -> bytes:
        return dkimkeys.sign_message(raw, private_pem=private, selector=selector, domain=domain)


class SecondUid(DaemonTestCase):
    """The daemon runs, and its socket is reachable by nobody, whose commands and CLI
    runs are tried against this uid's mailboxes.  Listed first among the bases of a
    test case built on another L{DaemonTestCase} (C{class T(SecondUid, CliTestCase)})."""

    skip = None if IS_ROOT else "needs root to act as a second uid"

    def setUp(self):
        super().setUp()
        os.chmod(self.runtime_dir, 0o755)
        self.start_daemon()


@defer.inlineCallbacks
def stop_daemon(daemon: service.Daemon):
    """Stop C{daemon} once its start-up DKIM check has answered.

    The check asks the fixture DNS from a pool thread, and stopping joins that
    thread on the reactor the fixture answers from: stopping first would wait
    out the resolver's timeout.
    """
    check = getattr(daemon.dkim_check, "done", None)
    if check is not None:
        yield check
    yield daemon.stopService()


def load_toml(path: str) -> dict:
    with open(path, "rb") as f:
        return tomllib.load(f)
