"""Daemon start-up, reload and shutdown (docs/cli.md, "aimx serve"), in-process and as a process."""

import os
import signal
import smtplib
import socket
import subprocess
import sys

from twisted.internet import defer, reactor, threads
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SkipTest

from aimx import service
from aimx.control.amp import ControlSocket
from aimx.control.approvals import Expiry
from aimx.auditlog import AuditLog
from aimx.indexer import Indexer
from aimx.webhooks import Webhooks
from aimx.logs import event_line
from aimx.ops import bind, datadir_readme
from aimx.errors import ConfigError
from aimx.store import keys
from tests.integration.base import REPO, DaemonTestCase, base_config, stop_daemon
from tests.integration.test_inbound import PLAIN, message


class LoggedTestCase(DaemonTestCase):
    def setUp(self):
        super().setUp()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def logged(self) -> str:
        return "\n".join(event_line(e, journal=True) for e in self.events)


class StartupTests(LoggedTestCase):
    def test_listener_and_pid(self):
        """The daemon listens, logs its banner and writes its pid file (case 1)."""
        self.start_daemon()
        socket.create_connection(("127.0.0.1", self.port)).close()
        text = self.logged()
        self.assertIn(f"<6>aimx.smtp: listening address=127.0.0.1:{self.port} tls=disabled",
                      text)
        with open(os.path.join(self.runtime_dir, "aimx.pid")) as f:
            self.assertEqual(f.read(), f"{os.getpid()}\n")

    def test_explicit_tls_missing(self):
        """An explicit --tls-cert that is missing is fatal (case 2)."""
        options = self.options("--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/k")
        e = self.assertRaises(ConfigError, service.build, options, reactor, environ=self.environ)
        self.assertIn("TLS cert/key not readable: /nonexistent/cert.pem", str(e))

    def test_tls_enabled(self):
        """A readable certificate turns STARTTLS on and the banner says so."""
        cert, key = (os.path.join(self.config_dir, n) for n in ("c.pem", "k.pem"))
        keys.generate_self_signed(cert, key, "localhost")
        self.start_daemon(self.options("--tls-cert", cert, "--tls-key", key))
        self.assertIn(f"listening address=127.0.0.1:{self.port} tls=enabled", self.logged())

    def test_dkim_key_missing(self):
        """A missing DKIM private key is fatal and binds nothing (case 3)."""
        os.unlink(keys.dkim_paths(self.config_dir)[0])
        e = self.assertRaises(ConfigError, service.build, self.options(), reactor, environ=self.environ)
        self.assertIn("Failed to load DKIM private key", str(e))
        self.assertFalse(os.path.exists(os.path.join(self.runtime_dir, "aimx.pid")))

    def test_config_missing(self):
        """A missing config.toml is fatal with the setup hint (case 4)."""
        os.unlink(os.path.join(self.config_dir, "config.toml"))
        e = self.assertRaises(ConfigError, service.build, self.options(), reactor, environ=self.environ)
        self.assertIn("Config file not found at", str(e))

    def test_readme_refreshed(self):
        """An outdated data-dir README is replaced at start-up, mode 0644 (case 14)."""
        os.makedirs(self.data_dir)
        path = os.path.join(self.data_dir, "README.md")
        with open(path, "w") as f:
            f.write("<!-- aimx-readme-version: 0 -->\nold\n")
        self.start_daemon()
        with open(path) as f:
            self.assertEqual(f.readline().rstrip("\n"), datadir_readme.VERSION_LINE)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o644)

    def test_orphan_owner(self):
        """An owner missing from passwd is a warning, not an error (case 15)."""
        self.write_config(base_config(self.data_dir,
                                      mailboxes={"ghost": {"owner": "nosuchuser123"}}))
        self.start_daemon()
        self.assertIn("does not resolve via getpwnam; mailbox marked inactive", self.logged())


class DkimDnsCheckTests(LoggedTestCase):
    def local_p(self) -> str:
        return keys.local_public_key_b64(self.config_dir)

    @defer.inlineCallbacks
    def check(self) -> str:
        daemon = self.start_daemon()
        yield daemon.dkim_check.done
        return self.logged()

    @defer.inlineCallbacks
    def test_mismatch(self):
        """A different published key is an ERROR naming aimx setup; SMTP still up (case 5)."""
        self.dns.add_txt("aimx._domainkey.test.local", "v=DKIM1; k=rsa; p=COMPLETELY-DIFFERENT-KEY")
        text = yield self.check()
        self.assertIn("ERROR: DKIM key mismatch", text)
        self.assertIn("aimx setup", text)
        socket.create_connection(("127.0.0.1", self.port)).close()

    @defer.inlineCallbacks
    def test_resolve_error(self):
        """No record at all: the check is skipped with a warning (case 6)."""
        text = yield self.check()
        self.assertIn("Warning: DKIM DNS sanity check skipped", text)

    @defer.inlineCallbacks
    def test_match(self):
        """The right key published: no DKIM warning or error (case 7)."""
        self.dns.add_txt("aimx._domainkey.test.local", f"v=DKIM1; k=rsa; p={self.local_p()}")
        text = yield self.check()
        self.assertNotIn("DKIM", text)

    @defer.inlineCallbacks
    def test_no_p_tag(self):
        """A record without p= is reported (case 7)."""
        self.dns.add_txt("aimx._domainkey.test.local", "v=DKIM1; k=rsa")
        text = yield self.check()
        self.assertIn("has no non-empty p= value", text)


class ReloadTests(LoggedTestCase):
    @defer.inlineCallbacks
    def test_sighup_adds_mailbox(self):
        """A hand-added mailbox routes after a reload, no restart (case 12)."""
        self.start_daemon()
        self.write_config(base_config(self.data_dir, catchall=False, mailboxes={"carol": {}}))
        self.daemon.reload()
        self.assertIn("<6>aimx.config: config reloaded path=", self.logged())
        self.assertIn("mailboxes=3", self.logged())
        reply = yield self.smtp(PLAIN, ["carol@test.local"])
        self.assertEqual(reply[0], 250)
        self.assertEqual(len(self.inbox("carol")), 1)

    @defer.inlineCallbacks
    def test_bad_reload_keeps_config(self):
        """Invalid TOML on reload keeps the old config; a later good reload works (case 13)."""
        self.start_daemon()
        self.write_config("this is = = not toml")
        self.daemon.reload()
        self.assertIn("config reload failed, keeping the previous config", self.logged())
        reply = yield self.smtp(PLAIN, ["alice@test.local"])
        self.assertEqual(reply[0], 250)
        self.write_config(base_config(self.data_dir, catchall=False))
        self.daemon.reload()
        self.assertIn("mailboxes=2", self.logged())


class ShutdownTests(LoggedTestCase):
    @defer.inlineCallbacks
    def test_stop_when_idle(self):
        """Stopping removes the pid file and refuses new connections (case 10)."""
        daemon = self.start_daemon()
        yield stop_daemon(daemon)
        self.assertFalse(os.path.exists(os.path.join(self.runtime_dir, "aimx.pid")))
        self.assertRaises(
            ConnectionRefusedError, socket.create_connection, ("127.0.0.1", self.port)
        )

    @defer.inlineCallbacks
    def test_stop_mid_session(self):
        """A session open when the stop starts can still deliver (case 11)."""
        daemon = self.start_daemon()
        client = yield threads.deferToThread(smtplib.SMTP, "127.0.0.1", self.port)
        yield threads.deferToThread(client.ehlo, "x")
        stopped = stop_daemon(daemon)
        self.assertNoResult(stopped)
        reply = yield threads.deferToThread(
            client.sendmail, "a@example.com", ["alice@test.local"], message(message_id="late@x")
        )
        self.assertEqual(reply, {})
        yield threads.deferToThread(client.quit)
        yield stopped
        self.assertEqual(len(self.inbox("alice")), 1)
        self.assertIn("<6>aimx.smtp: listener shutting down connections=1", self.logged())


class ProcessTests(DaemonTestCase):
    """The real entry points as processes: `aimx serve`, `twistd aimx`, `aimx ingest`."""

    def run_aimx(self, *args, stdin: bytes = b"", env=None) -> defer.Deferred:
        """`python -m aimx ARGS` in a thread, so the reactor keeps serving the fixture
        DNS it may query; fires with the C{CompletedProcess}."""
        env = dict(os.environ, PYTHONPATH=REPO, AIMX_CONFIG_DIR=self.config_dir, **(env or {}))
        return threads.deferToThread(
            subprocess.run, [sys.executable, "-m", "aimx", *args], input=stdin,
            capture_output=True, env=env, timeout=60, cwd=REPO,
        )

    async def test_serve_config_missing(self):
        """`aimx serve` without a config exits 1 with one clear line."""
        os.unlink(os.path.join(self.config_dir, "config.toml"))
        result = await self.run_aimx("serve", "--bind", "127.0.0.1:0")
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"Config file not found at", result.stderr)
        self.assertNotIn(b"Traceback", result.stderr)

    async def test_serve_port_in_use(self):
        """A port held by another program: exit 1 naming the address, nothing left serving."""
        with socket.socket() as held:
            held.bind(("127.0.0.1", 0))
            held.listen()
            port = held.getsockname()[1]
            result = await self.run_aimx("serve", "--bind", f"127.0.0.1:{port}",
                                   "--runtime-dir", self.runtime_dir)
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"Failed to bind to 127.0.0.1:{port}".encode(), result.stderr)
        self.assertNotIn(b"Traceback", result.stderr)

    async def test_serve_tls_unreadable(self):
        """`aimx serve --tls-cert /nonexistent` exits non-zero with the reason."""
        result = await self.run_aimx("serve", "--bind", "127.0.0.1:0", "--tls-cert", "/nonexistent")
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"TLS cert/key not readable: /nonexistent", result.stderr)

    async def test_twistd_plugin(self):
        """`twistd aimx` is discoverable and takes the daemon's options."""
        result = await threads.deferToThread(
            subprocess.run,
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "aimx", "--help"],
            capture_output=True, env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO, timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        for flag in (b"--bind", b"--tls-cert", b"--tls-key", b"--config-dir", b"--data-dir"):
            self.assertIn(flag, result.stdout)

    async def test_ingest_catchall(self):
        """`aimx --data-dir T ingest` stores one file, no received_from_ip (case 37, cli 11)."""
        raw = PLAIN.replace(b"Subject: Test", b"Subject: Plain text test")
        result = await self.run_aimx("--data-dir", self.data_dir, "ingest", "catchall@test.local",
                               stdin=raw, env=self.environ)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"received email", result.stderr)
        self.assertIn(b"stored email", result.stderr)
        fields, _ = self.only_mail("catchall")
        self.assertEqual(fields["from"], "Alice <alice@example.com>")
        self.assertEqual(fields["subject"], "Plain text test")
        self.assertEqual(fields["message_id"], "plain-001@example.com")
        self.assertIs(fields["read"], False)
        self.assertNotIn("received_from_ip", fields)

    async def test_ingest_routing_and_dedup(self):
        """Ingest routes like SMTP, and a re-ingest of the same Message-ID is skipped (cli 12)."""
        env = dict(self.environ, AIMX_DATA_DIR=self.data_dir)
        for _ in range(2):
            result = await self.run_aimx("ingest", "alice@test.local", stdin=PLAIN, env=env)
            self.assertEqual(result.returncode, 0, result.stderr)
        other = PLAIN.replace(b"plain-001", b"plain-002")
        await self.run_aimx("ingest", "unknown@test.local", stdin=other, env=env)
        self.assertEqual(len(self.inbox("alice")), 1)
        self.assertEqual(len(self.inbox("catchall")), 1)

    async def test_ingest_empty_and_poisoned(self):
        """`aimx ingest` stores an empty message and one with an unreadable part:
        exit 0, never the EX_TEMPFAIL a pipeline would retry for ever."""
        env = dict(self.environ, AIMX_DATA_DIR=self.data_dir)
        poisoned = (
            b"Subject: poisoned\r\nMessage-ID: <p@x>\r\n"
            b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n--B\r\n'
            b"Content-Disposition: attachment; filename*=unicode-escape''%5Cud800.pdf\r\n"
            b"\r\nx\r\n--B--\r\n"
        )
        for stdin in (b"", poisoned):
            result = await self.run_aimx("ingest", "alice@test.local", stdin=stdin, env=env)
            self.assertEqual(result.returncode, 0, result.stderr)
        subjects = sorted(self.read_mail(path)[0]["subject"] for path in self.inbox("alice"))
        self.assertEqual(subjects, ["(no subject)", "poisoned"])

    async def test_ingest_unroutable(self):
        """No catchall and an unknown recipient: exit 1 with the routing error."""
        self.write_config(base_config(self.data_dir, catchall=False))
        result = await self.run_aimx("ingest", "zed@test.local", stdin=PLAIN, env=self.environ)
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"Error: no mailbox routes recipient zed@test.local", result.stderr)

    async def test_help_and_version(self):
        """Top-level help lists the groups and hides ingest; --version is one line."""
        result = await self.run_aimx("--help")
        self.assertEqual(result.returncode, 0)
        for word in (b"Operations (as current user)", b"Server administration", b"send",
                     b"mailboxes", b"mcp", b"serve", b"--data-dir", b"AIMX_DATA_DIR"):
            self.assertIn(word, result.stdout)
        self.assertNotIn(b"ingest", result.stdout)
        version = (await self.run_aimx("--version")).stdout.decode()
        # `aimx <version>`, and ` (<commit>)` only when the build recorded one.
        self.assertRegex(version, r"^aimx \d+\.\d+\.\d+( \([0-9a-f]{7,40}\))?\n$")

    async def test_unknown_verb(self):
        """An unknown command is a usage error naming it."""
        result = await self.run_aimx("status")
        self.assertEqual(result.returncode, 2)
        self.assertIn(b"status", result.stderr)


class SignalTests(DaemonTestCase):
    """`aimx serve` as a real process: SIGHUP reloads, SIGTERM drains and exits 0."""

    async def test_sighup_then_sigterm(self):
        """A hand-added mailbox routes after SIGHUP; SIGTERM exits 0 and removes the pid file."""
        proc = await self.serve("--bind", "127.0.0.1:0")
        self.write_config(base_config(self.data_dir, mailboxes={"dave": {}}))
        proc.send_signal(signal.SIGHUP)
        await self.log_says(proc, "config reloaded")  # the reload is asynchronous
        await self.smtp(message(message_id="d@x"), ["dave@test.local"])
        self.assertEqual(len(self.inbox("dave")), 1)
        proc.send_signal(signal.SIGTERM)
        code = await threads.deferToThread(proc.wait, 40)
        self.assertEqual(code, 0)
        self.assertFalse(os.path.exists(self.pid_file))


def ipv6_loopback() -> bool:
    """Whether this host can bind ::1 (containers often have no IPv6)."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class ListenerTests(LoggedTestCase):
    """Several --bind values, IPv6, and the pid file as the readiness signal (in-process)."""

    def bound(self) -> list[str]:
        return bind.logged_addresses(self.logged())

    @defer.inlineCallbacks
    def test_two_binds_both_answer(self):
        """HOST:PORT and a tcp: endpoint both listen; mail sent to either is stored."""
        daemon = self.start_daemon(self.options("--bind", "tcp:0:interface=127.0.0.1"))
        ports = [p.getHost().port for p in daemon.smtp.ports]
        self.assertEqual(len(set(ports)), 2)
        self.assertEqual(self.bound(), [f"127.0.0.1:{p}" for p in ports])
        for n, address in enumerate(self.bound()):
            reply = yield self.smtp(message(message_id=f"two{n}@x"), ["alice@test.local"],
                                    address=address)
            self.assertEqual(reply[0], 250)
        self.assertEqual(len(self.inbox("alice")), 2)

    @defer.inlineCallbacks
    def test_ipv6_loopback(self):
        """[::1]:0 listens on IPv6; the log brackets the address; a client there is stored."""
        if not ipv6_loopback():
            raise SkipTest("no IPv6 loopback (::1) on this host")
        daemon = self.start_daemon(self.options("--bind", "[::1]:0"))
        port = daemon.smtp.ports[1].getHost().port
        self.assertEqual(self.bound()[1], f"[::1]:{port}")
        reply = yield self.smtp(message(message_id="v6@x"), ["alice@test.local"],
                                address=f"[::1]:{port}")
        self.assertEqual(reply[0], 250)
        fields, _ = self.only_mail("alice")
        self.assertEqual(fields["received_from_ip"], "::1")

    def test_pid_file_comes_last(self):
        """The pid file is started after every listener, the DKIM check and the held
        mail's expiry after it; the mail index, the audit log and the webhook deliveries
        before them all (so they stop after the SMTP and control drains, and the log
        writes what they recorded)."""
        daemon = self.start_daemon()
        self.assertEqual(
            [type(child) for child in daemon],
            [Indexer, AuditLog, Webhooks, service.SmtpListener, ControlSocket, service.PidFile,
             service.DkimDnsCheck, Expiry],
        )
        with open(self.pid_file) as f:
            self.assertEqual(f.read(), f"{os.getpid()}\n")

    @defer.inlineCallbacks
    def test_failed_bind_leaves_no_pid_file(self):
        """A --bind that fails after another bound: fatal, that one unbound, no pid file."""
        held = socket.socket()
        self.addCleanup(held.close)
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        daemon = service.build(self.options("--bind", f"127.0.0.1:{port}"), reactor,
                               environ=self.environ)
        e = self.assertRaises(ConfigError, daemon.startService)
        yield stop_daemon(daemon)
        self.assertEqual(str(e), f"Failed to bind to 127.0.0.1:{port}: [Errno 98] "
                                 "Address already in use")
        self.assertEqual(daemon.smtp.ports, [])
        self.assertNotIn("listening", self.logged())
        self.assertFalse(os.path.exists(self.pid_file))
        self.assertFalse(os.path.lexists(os.path.join(self.runtime_dir, "aimx.sock")))

    @property
    def pid_file(self) -> str:
        return os.path.join(self.runtime_dir, service.PID_NAME)


class SocketActivationTests(DaemonTestCase):
    """`aimx serve --bind systemd:...` with a listening socket passed as systemd does."""

    def inherited(self) -> socket.socket:
        s = socket.socket()
        self.addCleanup(s.close)
        s.bind(("127.0.0.1", 0))
        s.listen()
        return s

    async def activated(self, sock: socket.socket, *args: str):
        command = [sys.executable, "-m", "tests.integration.socketactivate",
                   str(sock.fileno()), "aimx.socket"]
        return await self.serve(*args, command=command, pass_fds=(sock.fileno(),))

    async def test_activated_and_bound(self):
        """The inherited socket and a --bind of its own both answer; SIGTERM exits 0."""
        sock = self.inherited()
        proc = await self.activated(sock, "--bind", "systemd:domain=INET:index=0",
                                    "--bind", "127.0.0.1:0")
        address = "127.0.0.1:%d" % sock.getsockname()[1]
        sock.close()  # only the daemon holds it now
        self.assertEqual(self.addresses[0], address)
        self.assertEqual(len(self.addresses), 2)
        for n, each in enumerate(self.addresses):
            reply = await self.smtp(message(message_id=f"sd{n}@x"), ["alice@test.local"],
                                    address=each)
            self.assertEqual(reply[0], 250)
        self.assertEqual(len(self.inbox("alice")), 2)
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(await threads.deferToThread(proc.wait, 40), 0)

    async def test_wrong_domain(self):
        """An IPv4 socket claimed as INET6 is refused at start-up with the domain to use."""
        sock = self.inherited()
        command = [sys.executable, "-m", "tests.integration.socketactivate",
                   str(sock.fileno()), "aimx.socket", sys.executable, "-m", "aimx", "serve",
                   "--bind", "systemd:domain=INET6:index=0", "--config-dir", self.config_dir,
                   "--runtime-dir", self.runtime_dir]
        result = await threads.deferToThread(
            subprocess.run, command, pass_fds=(sock.fileno(),), capture_output=True,
            env=dict(os.environ, PYTHONPATH=REPO, **self.environ), cwd=REPO, timeout=60,
        )
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn(b"Failed to bind to systemd:domain=INET6:index=0: the socket systemd "
                      b"passed (descriptor 3) is AF_INET, not AF_INET6: say domain=INET",
                      result.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.runtime_dir, service.PID_NAME)))

    def test_not_activated(self):
        """--bind systemd:... without a socket from systemd exits 1 saying so."""
        result = subprocess.run(
            [sys.executable, "-m", "aimx", "serve", "--bind", "systemd:domain=INET:index=0",
             "--config-dir", self.config_dir, "--runtime-dir", self.runtime_dir],
            capture_output=True, env=dict(os.environ, PYTHONPATH=REPO, **self.environ),
            cwd=REPO, timeout=60,
        )
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"Failed to bind to systemd:domain=INET:index=0: systemd passed no "
                      b"socket at that index", result.stderr)
        self.assertNotIn(b"Traceback", result.stderr)
