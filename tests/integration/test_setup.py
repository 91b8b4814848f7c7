"""`aimx setup` end to end on loopback (issue 7; docs/install.md, "aimx setup").

The wizard runs in-process on the reactor against a temporary root: config, data
and runtime dirs, the service directory and /etc/ssl/aimx are all inside it.  What
is real:

  - the preflight: the outbound check reads the banner of gmail.com's MX, which the
    fixture DNS puts on loopback (C{AIMX_NAMESERVERS}, C{AIMX_SMTP_OUT_PORT}), and an
    in-process verifier (allow-private) probes the temporary responder on a
    loopback port (C{AIMX_PORTCHECK_BIND});
  - the DNS verification through our resolver against a loopback L{FixtureDNS}
    (C{AIMX_NAMESERVERS}), first without, then with the records;
  - the daemon: the fake host's C{systemctl restart aimx} builds it in-process from
    the unit file the wizard wrote (its ExecStart arguments plus a loopback
    C{--bind}), and the production readiness poll waits for its SMTP greeting and
    its control socket's VERSION answer;
  - the first mailbox, created over that control socket (MAILBOX-CREATE);
  - SMTP: a message sent with STARTTLS on the generated certificate lands in the
    catchall, and one to the first mailbox in it.

Only the host's programs are fake (tests.test_setup.FakeHost: systemctl,
hostname -I, id, useradd).  Stdin is scripted.
"""

import functools
import io
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading

from twisted.internet import defer, reactor, threads
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

import aimx.cli
from aimx import service
from aimx.cli import setup as cli
from aimx.cli.session import Session, execute
from aimx.cli.term import Terminal
from aimx.control.wire import SOCKET_NAME
from aimx.ops import portcheck as core
from aimx.ops import portholder
from aimx.ops.portholder import AIMX
from aimx.store import configfile, keys
from aimx.host.initsystem import System
from aimx.loopback.dns import FixtureDNS
from aimx.control.client import connect as client_connect
from aimx.verifier import client
from tests.integration.test_portcheck import (
    PortcheckMixin,
    bindable,
    mx_label,
    own_process,
)
from tests.integration.base import reserve_port, stop_daemon
from tests.test_setup import CATCHALL, FakeHost, WizardTestCase

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOMAIN = "agent.example.com"
IPV4 = "192.0.2.10"
IS_ROOT = os.geteuid() == 0
NOBODY = 65534


async def _ready():
    return None


def read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def make_read_only(case: SynchronousTestCase, path: str) -> None:
    """Make C{path} unwritable even for root (C{chattr +i}), else skip the test."""
    if os.geteuid() != 0:
        # Its owner can always chmod it back (the wizard does): only root can pin it.
        raise SkipTest("needs root to make a directory read-only for its owner (chattr +i)")
    try:
        done = subprocess.run(["chattr", "+i", path], capture_output=True, check=False)
    except OSError:
        done = None
    if done is None or done.returncode != 0:
        raise SkipTest("cannot make a directory read-only for root here (chattr +i)")
    case.addCleanup(subprocess.run, ["chattr", "-i", path], check=False)


class SetupTestCase(PortcheckMixin, TestCase):
    """A systemd host under a temporary root, a verifier and a fixture DNS on loopback."""

    def setUp(self):
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.root, "run/systemd/system"))
        self.config_dir = os.path.join(self.root, "etc/aimx")
        self.data_dir = os.path.join(self.root, "var/lib/aimx")
        # Short, under /tmp: the daemon's UNIX socket path must fit in 108 bytes.
        self.runtime_dir = tempfile.mkdtemp(prefix="aimx-run-")
        self.addCleanup(shutil.rmtree, self.runtime_dir, True)
        self.host = FakeHost(hostname=f"{IPV4} fe80::1\n")
        self.host.on_restart = self.start_daemon_from_unit
        self.dns = FixtureDNS(reactor)
        self.dns.start()
        self.addCleanup(self.dns.stop)
        self.start_mx(self.dns)
        self.responder_port = reserve_port(self)
        self.start_verifier(self.responder_port)
        self.daemon = None

    def path(self, absolute: str) -> str:
        return os.path.join(self.root, absolute.lstrip("/"))

    async def wizard(self, *argv, stdin: str, detect=client.detect_occupancy, ready=None,
                     environ=None, verifier=True):
        """Run `aimx setup ARGV [--verify-host <verifier>/]`: (exit code, stdout, stderr)."""
        verify = ["--verify-host", self.verify_host + "/"] if verifier else []
        args = aimx.cli.arguments.parser().parse_args(["setup", *argv, *verify])
        args.config_dir, args.data_dir = self.config_dir, self.data_dir
        env = {
            "AIMX_NAMESERVERS": self.dns.nameservers,
            "AIMX_PORTCHECK_BIND": f"127.0.0.1:{self.responder_port}",
            "AIMX_SMTP_OUT_PORT": str(self.mx_port),
            "AIMX_RUNTIME_DIR": self.runtime_dir,
            **(environ or {}),
        }
        out, err = io.StringIO(), io.StringIO()
        session = Session(
            args, euid=0, term=Terminal(out, err, io.StringIO(stdin), env), environ=env,
            connect=lambda: defer.Deferred.fromCoroutine(
                client_connect(reactor, os.path.join(self.runtime_dir, SOCKET_NAME))),
        )
        verb = functools.partial(
            cli.setup, reactor=reactor, system=System(self.root, self.host),
            run_in_thread=threads.deferToThread, detect=detect, resolve=self.host.resolve,
            ready=ready or self.daemon_ready,
        )
        code = await execute(verb, args, session)
        return code, out.getvalue(), err.getvalue()

    def daemon_ready(self):
        """The production poll, aimed at the in-process daemon instead of 127.0.0.1:25."""
        socket_path = os.path.join(self.runtime_dir, SOCKET_NAME)
        return cli.service_ready(reactor, socket_path, self.daemon_port)()

    def start_daemon_from_unit(self):
        """What systemd would do: run the unit's twistd arguments (bound to loopback)."""
        with open(self.path("/etc/systemd/system/aimx.service")) as f:
            [line] = [li for li in f.read().splitlines() if li.startswith("ExecStart=")]
        program, *argv = line.removeprefix("ExecStart=").split()
        self.assertTrue(os.path.isabs(program) and os.access(program, os.X_OK), program)
        self.assertEqual(argv[:3], ["--nodaemon", "--pidfile=", "aimx"])
        options = service.Options()
        options.parseOptions([
            *argv[3:], "--bind", "127.0.0.1:0",
            "--tls-cert", self.path(keys.DEFAULT_TLS_CERT),
            "--tls-key", self.path(keys.DEFAULT_TLS_KEY),
        ])
        self.daemon = service.build(options, reactor,
                                    environ={"AIMX_NAMESERVERS": self.dns.nameservers})
        self.daemon.startService()
        self.addCleanup(stop_daemon, self.daemon)
        self.daemon_port = self.daemon.smtp.ports[0].getHost().port

    def publish(self, *, a=True):
        """The records the wizard asks for."""
        if a:
            self.dns.add_a(DOMAIN, IPV4)
        self.dns.add_mx(DOMAIN, 10, DOMAIN)
        self.dns.add_txt(DOMAIN, f"v=spf1 ip4:{IPV4} -all")
        self.dns.add_txt(f"aimx._domainkey.{DOMAIN}",
                         "v=DKIM1; k=rsa; p=" + keys.local_public_key_b64(self.config_dir))
        self.dns.add_txt(f"_dmarc.{DOMAIN}", "v=DMARC1; p=none")
        self.dns.add_ptr("10.2.0.192.in-addr.arpa", DOMAIN)

    def send_with_starttls(self, rcpt: str):
        def send():
            with smtplib.SMTP("127.0.0.1", self.daemon_port, timeout=30) as c:
                c.ehlo("client.example.com")
                self.assertTrue(c.has_extn("starttls"))
                c.starttls()
                c.ehlo("client.example.com")
                c.mail("someone@example.com")
                c.rcpt(rcpt)
                return c.data(b"Subject: first mail\r\nMessage-ID: <e2e@example.com>\r\n"
                              b"\r\nHello from the end-to-end test.\r\n")

        return threads.deferToThread(send)

    def assertNothingWritten(self):
        for path in (self.config_dir, self.data_dir, self.path("/etc/ssl/aimx"),
                     self.path("/etc/systemd/system/aimx.service"),
                     self.path("/var/lib/aimx-catchall")):
            self.assertFalse(os.path.exists(path), path)


class EndToEndTests(SetupTestCase):
    async def test_end_to_end(self):
        """Fresh install without DNS, re-run with DNS, then mail lands (acceptance 8, 12, 13)."""
        # 1. A pristine host, no records published: no backup MX, Enter verifies (not
        #    yet), q skips; then trusted senders, and the first mailbox once aimx answers.
        code, out, err = await self.wizard(
            DOMAIN, stdin=f"\n\nq\nyou@example.com, *@company.com\nY\nagent\n{CATCHALL.pw_name}\n")
        self.assertEqual((code, err), (0, ""))
        self.assertIn(f"  Outbound port 25... [OK] - {mx_label(self.mx_port)} sent its 220 "
                      "banner\n  Inbound port 25... [OK] - the verifier reached 127.0.0.1 on "
                      "port 25\n", out)
        self.assertTrue(bindable(self.responder_port), "the temporary responder is gone")
        self.assertIn("\nDNS Verification:\n\n  A: [FAIL] - No A record found\n"
                      f"         → Add: A  {DOMAIN}  {IPV4}\n", out)
        self.assertIn("  MX: [FAIL] - No MX record found\n", out)
        self.assertIn("  DKIM: [FAIL] - No DKIM record found\n", out)
        self.assertIn("Some DNS records are not yet correct.\n"
                      "DNS propagation can take up to 48 hours.\n", out)
        self.assertIn("Update your DNS records, then run `aimx doctor`", out)
        self.assertIn("  Waiting for aimx to answer on port 25 and its control socket... [OK]\n"
                      "aimx is running and answering.\n", out)
        self.assertIn(f"Mailbox 'agent' created: agent@{DOMAIN} (owner: {CATCHALL.pw_name}).",
                      out)
        self.assertIn("[x] AIMX has been set up successfully.", out)

        config, _ = configfile.load(self.config_dir)
        self.assertEqual((config.domain, config.data_dir, config.trust, config.trusted_senders),
                         (DOMAIN, self.data_dir, "verified", ("you@example.com", "*@company.com")))
        self.assertEqual(config.catchall().owner, "aimx-catchall")
        self.assertEqual(config.mailbox("agent").owner, CATCHALL.pw_name)  # the daemon wrote it
        self.assertIn(["systemctl", "restart", "aimx"], self.host.calls)
        for part in ("inbox", "sent"):
            st = os.stat(os.path.join(self.data_dir, part, "catchall"))
            self.assertEqual((st.st_uid, st.st_mode & 0o777), (CATCHALL.pw_uid, 0o700))
        self.assertIsNotNone(self.daemon, "the unit started the daemon")

        # 2. Records published; port 25 is held by aimx, so the verifier probes the
        #    live daemon; the records verify on the first Enter.
        self.publish()
        self.start_verifier(self.daemon_port)
        self.host.calls.clear()
        polls = []
        code, out, err = await self.wizard(
            DOMAIN, stdin="\n\n", detect=lambda port: AIMX,
            ready=lambda: polls.append(1) or self.daemon_ready())
        self.assertEqual((code, err), (0, ""))
        self.assertIn(f"  Outbound port 25... [OK] - {mx_label(self.mx_port)} sent its 220 "
                      "banner\n"
                      "`aimx serve` is already running on port 25; probing the live daemon.\n"
                      "  Inbound port 25... [OK] - the verifier reached 127.0.0.1 on "
                      "port 25\n", out)
        self.assertIn("Existing aimx configuration detected.", out)
        self.assertIn("\nDNS Verification:\n\n  A: [OK]\n  MX: [OK]\n  SPF: [OK]\n  DKIM: [OK]\n"
                      "  DMARC: [OK] - p=none: monitoring, no policy applied yet\n"
                      f"  PTR: [OK] - {IPV4} → {DOMAIN}\n\nAll DNS records verified.\n", out)
        self.assertIn("Mailboxes already configured: agent.", out)
        self.assertIn(f"AIMX is now running at @{DOMAIN} and ready to send and receive email.",
                      out)
        for n, reason in ((3, "TLS certificate already exists"),
                          (4, "existing trust policy preserved"),
                          (5, "aimx already installed")):
            self.assertIn(f"[WARN] Step {n} skipped ({reason}).", out)
        self.assertEqual(self.host.service_calls(), [])
        self.assertEqual(polls, [1])  # nothing restarted, but the running aimx must answer
        self.assertEqual(configfile.load(self.config_dir)[0], config)

        # 3. The daemon the unit started accepts mail for the domain, over STARTTLS.
        reply = await self.send_with_starttls(f"hello@{DOMAIN}")
        self.assertEqual(reply[0], 250)
        inbox = os.path.join(self.data_dir, "inbox", "catchall")
        [stored] = [name for name in os.listdir(inbox) if name.endswith(".md")]
        text = read_text(os.path.join(inbox, stored))
        self.assertIn("Hello from the end-to-end test.", text)
        self.assertIn('subject = "first mail"', text)
        reply = await self.send_with_starttls(f"agent@{DOMAIN}")
        self.assertEqual(reply[0], 250)
        self.assertEqual(len(os.listdir(os.path.join(self.data_dir, "inbox", "agent"))), 1)


class NoVerifierTests(SetupTestCase):
    async def test_preflight_without_verifier(self):
        """No verify_host: the outbound check (banner and QUIT to gmail.com's loopback MX)
        passes, the inbound check is explained, nothing binds port 25, Step 1 is done."""
        code, out, err = await self.wizard(
            DOMAIN, stdin="", verifier=False, ready=_ready,
            environ={"AIMX_NONINTERACTIVE": "1"})
        self.assertEqual(code, 0, err)
        self.assertIn(
            "Step 1: Preflight checks on port 25\n"
            f"  Outbound port 25... [OK] - {mx_label(self.mx_port)} sent its 220 banner\n"
            "  Inbound port 25... [WARN] - not checked: no verifier configured (verify_host)\n"
            "    Checking inbound port 25 needs a verifier on another host, outside this "
            "network,\n", out)
        self.assertIn("[OK] Step 1 complete.", out)
        self.assertEqual(b"".join(self.mx.received), b"QUIT\r\n")
        self.assertTrue(bindable(self.responder_port))


class BadInputTests(SetupTestCase):
    async def test_outbound_blocked(self):
        """Preflight fails (nothing answers outbound): exit 1, nothing on disk (acceptance 7)."""
        code, out, err = await self.wizard(
            DOMAIN, stdin="", environ={"AIMX_SMTP_OUT_PORT": str(reserve_port(self))})
        self.assertEqual(code, 1)
        self.assertIn("  Outbound port 25... [FAIL] - cannot connect to ", out)
        self.assertIn(": connection refused\n  Inbound port 25... [OK]", out)
        self.assertIn(core.OUTBOUND_BLOCKED, err)
        self.assertIn("Hetzner Cloud", err)
        self.assertIn("Error: Port 25 checks failed.", err)
        self.assertTrue(bindable(self.responder_port))
        self.assertNothingWritten()

    async def test_port_held_by_another_program(self):
        """Another program listens on port 25: exit 1 naming it, nothing on disk."""
        name, argv = own_process()
        if portholder.is_aimx_process(name, argv):
            raise self.skipTest("this test process looks like aimx to ss")
        held = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(held.stopListening)
        self.responder_port = held.getHost().port
        occupancy = client.detect_occupancy(self.responder_port)
        if occupancy == portholder.FREE:
            raise self.skipTest("ss is not available")
        code, out, err = await self.wizard(DOMAIN, stdin="")
        self.assertEqual(code, 1)
        self.assertIn(f"Error: Port 25 is occupied by {occupancy.name}. Stop the process and "
                      "run `aimx setup` again.", err)
        self.assertNotIn("Step 1", out)
        self.assertNothingWritten()

    async def test_domain_without_a_record(self):
        """Every record but A published: the A check says what to add; setup goes on."""
        os.makedirs(self.config_dir)
        keys.generate_dkim_key(self.config_dir, bits=1024)
        self.publish(a=False)
        code, out, err = await self.wizard(
            DOMAIN, stdin="\n", ready=_ready, environ={"AIMX_NONINTERACTIVE": "1"})
        self.assertEqual(code, 0)
        self.assertIn("\nDNS Verification:\n\n  A: [FAIL] - No A record found\n"
                      f"         → Add: A  {DOMAIN}  {IPV4}\n"
                      "  MX: [OK]\n  SPF: [OK]\n  DKIM: [OK]\n"
                      "  DMARC: [OK] - p=none: monitoring, no policy applied yet\n"
                      f"  PTR: [WARN] - PTR for {IPV4} is {DOMAIN}, but {DOMAIN} has no A "
                      f"record: ask your hosting provider to set reverse DNS to {DOMAIN}\n", out)
        self.assertIn("Some DNS records are not yet correct.\n", out)
        self.assertIn("No trusted senders configured", err)
        self.assertEqual(configfile.load(self.config_dir)[0].trust, "none")

    async def test_read_only_config_dir(self):
        """A config dir root cannot write: a clear message naming it, nothing written."""
        os.makedirs(self.config_dir)
        make_read_only(self, self.config_dir)
        code, _, err = await self.wizard(DOMAIN, stdin="")
        self.assertEqual(code, 1)
        self.assertIn(f"Error: cannot write to the config directory {self.config_dir}:", err)
        self.assertEqual(os.listdir(self.config_dir), [])
        self.assertFalse(os.path.exists(self.data_dir))
        self.assertFalse(os.path.exists(self.path("/etc/ssl/aimx")))

    async def test_interrupted_then_rerun(self):
        """Quit at the trust prompt, then run again: the second run completes."""
        code, _, err = await self.wizard(DOMAIN, stdin="\nq\n")
        self.assertEqual(code, 1)
        self.assertIn(f"Error: {cli.END_OF_INPUT}", err)
        self.assertFalse(os.path.exists(os.path.join(self.config_dir, "config.toml")))
        self.assertFalse(os.path.exists(self.path("/etc/systemd/system/aimx.service")))
        self.assertTrue(bindable(self.responder_port))

        code, out, err = await self.wizard(DOMAIN, stdin="\nq\n\nY\n")
        self.assertEqual((code, err), (0, ""))
        self.assertIn("Existing TLS certificate kept:", out)
        self.assertIn("Using the existing DKIM key", out)
        self.assertIsNotNone(self.daemon)
        self.assertEqual(configfile.load(self.config_dir)[0].domain, DOMAIN)


class _Refuses(Protocol):
    """An SMTP server that is up but refuses service (RFC 5321 §3.1, 554)."""

    def connectionMade(self):
        self.transport.write(b"554 not now\r\n")
        self.transport.loseConnection()


class ReadinessTests(TestCase):
    """The readiness attempts against real loopback sockets (the daemon that answers
    both is tests above; the poll's timing is tests.test_setup.ReadinessPollTests)."""

    async def test_no_greeting(self):
        """A listener that answers 554 is not aimx ready: not answering, with the reply."""
        port = reactor.listenTCP(0, Factory.forProtocol(_Refuses), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        with self.assertRaises(cli.NotAnswering) as caught:
            await cli.smtp_greets(reactor, number)
        self.assertIn(f"no SMTP greeting on port {number}: ", str(caught.exception))
        self.assertIn("554 not now", str(caught.exception))

    async def test_no_control_socket(self):
        """No control socket: not answering, naming it."""
        path = os.path.join(tempfile.mkdtemp(prefix="aimx-run-"), SOCKET_NAME)
        self.addCleanup(shutil.rmtree, os.path.dirname(path), True)
        with self.assertRaises(cli.NotAnswering) as caught:
            await cli.control_answers(reactor, path)
        self.assertEqual(str(caught.exception), "no answer on the control socket: aimx daemon "
                                                f"not running (no socket at {path})")


def interrupt_at(command, env, marker: bytes):
    """Run C{command}; send SIGINT once its stdout shows C{marker} (stdin stays open).

    @return: C{(exit code, stdout, stderr)}.
    """
    proc = subprocess.Popen(command, env=env, cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    try:
        seen = b""
        while marker not in seen:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        watchdog.cancel()
    return proc.returncode, (seen + out).decode(), err.decode()


class ProcessTests(PortcheckMixin, TestCase):
    """`python -m aimx setup` as a process: refusals before any I/O, and Ctrl-C."""

    def setUp(self):
        self.dns = FixtureDNS(reactor)
        self.dns.start()
        self.addCleanup(self.dns.stop)
        self.start_mx(self.dns)

    def aimx(self, *argv, as_nobody=False):
        env = dict(os.environ, PYTHONPATH=REPO, NO_COLOR="1",
                   AIMX_CONFIG_DIR=os.path.abspath(self.mktemp()))
        if as_nobody:
            command = [sys.executable, "-m", "tests.integration.asuser", str(NOBODY),
                       str(NOBODY), "cli", *argv]
        else:
            command = [sys.executable, "-m", "aimx", *argv]
        return threads.deferToThread(subprocess.run, command, env=env, cwd=REPO,
                                     capture_output=True, text=True, timeout=120)

    async def test_not_root(self):
        """Non-root `aimx setup` and `aimx setup <domain>`: exit 1, `requires root` (acceptance 1)."""
        for argv in ((), ("agent.example.com",)):
            result = await self.aimx("setup", *argv, as_nobody=IS_ROOT)
            self.assertEqual(result.returncode, 1, result.stderr)
            self.assertIn("`aimx setup` requires root", result.stderr)
            self.assertIn("sudo aimx setup", result.stderr)
            self.assertIn("aimx agents setup", result.stderr)

    async def test_bad_verify_host(self):
        """`aimx setup --verify-host foo`: exit 1 before the root check (acceptance 2)."""
        result = await self.aimx("setup", "--verify-host", "foo", as_nobody=IS_ROOT)
        self.assertEqual(result.returncode, 1)
        self.assertIn("Error: verify-host must start with http:// or https:// (got: foo)",
                      result.stderr)

    async def test_invalid_domain(self):
        """As root, an invalid domain is refused before port 25 or the disk is touched."""
        if not IS_ROOT:
            raise self.skipTest("needs root to get past the root check")
        result = await self.aimx("setup", "bad_domain.com")
        self.assertEqual(result.returncode, 1)
        self.assertIn("Error: invalid domain 'bad_domain.com':", result.stderr)
        self.assertEqual(result.stdout, "")

    def interrupt_env(self, responder_port: int) -> dict:
        if not IS_ROOT:
            raise self.skipTest("aimx setup requires root")
        self.config_dir = os.path.abspath(self.mktemp())
        return dict(os.environ, PYTHONPATH=REPO, NO_COLOR="1", AIMX_CONFIG_DIR=self.config_dir,
                    AIMX_DATA_DIR=os.path.abspath(self.mktemp()),
                    AIMX_NAMESERVERS=self.dns.nameservers,
                    AIMX_PORTCHECK_BIND=f"127.0.0.1:{responder_port}",
                    AIMX_SMTP_OUT_PORT=str(self.mx_port))

    async def test_ctrl_c_at_a_prompt(self):
        """Ctrl-C at the domain prompt: `Setup interrupted`, exit 1, nothing written."""
        port = reserve_port(self)
        self.start_verifier(port)
        env = self.interrupt_env(port)
        code, out, err = await threads.deferToThread(
            interrupt_at, [sys.executable, "-m", "aimx", "setup", "--verify-host",
                           self.verify_host], env, b"(e.g. agent.example.com).\n> ")
        self.assertIn(f"  Outbound port 25... [OK] - {mx_label(self.mx_port)} sent its 220 "
                      "banner\n  Inbound port 25... [OK] - the verifier reached 127.0.0.1 on "
                      "port 25\n", out)
        self.assertEqual(code, 1, err)
        self.assertIn(f"Error: {cli.INTERRUPTED}", err)
        self.assertNotIn("Traceback", err)
        self.assertFalse(os.path.exists(self.config_dir))
        self.assertFalse(os.path.exists(env["AIMX_DATA_DIR"]))

    async def test_ctrl_c_while_probing(self):
        """Ctrl-C while the outbound check waits for a banner cancels it; exit 1, and it
        is not reported as a blocked port."""
        silent = socket.socket()  # accepts (kernel backlog) but never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        self.addCleanup(silent.close)
        port = reserve_port(self)
        self.start_verifier(port)
        self.mx_port = silent.getsockname()[1]
        env = self.interrupt_env(port)
        code, out, err = await threads.deferToThread(
            interrupt_at, [sys.executable, "-m", "aimx", "setup", DOMAIN, "--verify-host",
                           self.verify_host], env, b"Outbound port 25... ")
        self.assertEqual(code, 1, err)
        self.assertIn(f"Error: {cli.INTERRUPTED}", err)
        self.assertIn("  Outbound port 25... \n", out)
        self.assertIn("  [!] Preflight checks on port 25\n", out)
        self.assertNotIn("blocked", err)
        self.assertNotIn("Traceback", err)
        self.assertFalse(os.path.exists(self.config_dir))


class ReadOnlyConfigDirTests(WizardTestCase):
    """The in-process wizard against a config dir pinned with chattr (root only)."""

    def test_read_only_config_dir(self):
        """A config dir nobody may write: a clear message naming it, nothing written."""
        os.makedirs(self.config_dir)
        make_read_only(self, self.config_dir)
        code, _, err = self.wizard(DOMAIN)
        self.assertEqual(code, 1)
        self.assertIn(f"Error: cannot write to the config directory {self.config_dir}:", err)
        self.assertIn("AIMX_CONFIG_DIR", err)
        self.assertEqual(os.listdir(self.config_dir), [])
        self.assertFalse(os.path.exists(self.data_dir))
        self.assertFalse(os.path.exists(self.path("/etc/ssl/aimx")))
