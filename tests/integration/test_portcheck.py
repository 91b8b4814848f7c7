"""`aimx portcheck` end to end on loopback: the outbound check against a loopback
"gmail.com" MX, the inbound one against an in-process verifier.

The outbound check resolves the well-known domain's MX through aimx's resolver, so a
L{FixtureDNS} (C{AIMX_NAMESERVERS}) says C{gmail.com} is handled by
C{gmail-smtp-in.l.google.com} at 127.0.0.1, and C{AIMX_SMTP_OUT_PORT} points at a
recording responder listening on 127.0.0.1:0: the tests see every byte the check sent.
The verifier (L{aimx.verifier.service.Verifier}) listens on 127.0.0.1:0 for HTTP,
with C{allow_private} so it probes loopback callers, and its probe-back port set to
the port the check treats as "port 25" (C{AIMX_PORTCHECK_BIND=127.0.0.1:<that port>}),
a port the test holds bound (L{reserve_port}) so that only the check can listen there.
Nothing touches the real port 25 or leaves loopback.
"""

import argparse
import functools
import io
import os
import socket
import subprocess
import sys

from twisted.internet import defer, reactor, task, threads
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from aimx.auth.resolver import Resolver
from aimx.cli import arguments
from aimx.cli import portcheck as cli
from aimx.cli.session import Session, execute
from aimx.cli.term import Terminal
from aimx.ops import portcheck as core
from aimx.ops import portholder
from aimx.ops.portcheck import ProbeSettings
from aimx.ops.portholder import AIMX
from aimx.loopback.dns import FixtureDNS
from aimx.verifier import client
from aimx.verifier.service import Verifier
from aimx.verifier.smtp import Responder, ResponderFactory
from tests.integration.base import DaemonTestCase, reserve_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IS_ROOT = os.geteuid() == 0


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


#: The MX the fixture DNS gives the default outbound check domain (gmail.com).
MX_HOST = "gmail-smtp-in.l.google.com"


class _Recording(Responder):
    """The verifier's responder, keeping every byte it receives."""

    def dataReceived(self, data):
        self.factory.received.append(data)
        super().dataReceived(data)


class _Silent(Protocol):
    """Accepts the connection, keeps what it is sent and never says a word."""

    def connectionMade(self):
        self.factory.connected.callback(None)

    def dataReceived(self, data):
        self.factory.received.append(data)


def silent_mx() -> Factory:
    """A listener that never sends a banner (C{.connected} fires on its connection)."""
    factory = Factory.forProtocol(_Silent)
    factory.connected, factory.received = defer.Deferred(), []
    return factory


def recording_mx(banner: str = "220 mx.google.test ESMTP ready") -> ResponderFactory:
    """A responder that records what it is sent (C{.received}, a list of bytes)."""
    factory = ResponderFactory(reactor, banner=banner, hostname="mx.google.test")
    factory.protocol = _Recording
    factory.received = []
    return factory


class PortcheckMixin:
    """A loopback "gmail.com" MX and a verifier; L{portcheck} runs the verb in-process
    with the real reactor."""

    def start_mx(self, dns: FixtureDNS, factory=None) -> ResponderFactory:
        """Publish gmail.com's MX (lowest preference on 127.0.0.1, a backup elsewhere)
        in C{dns} and listen for it on a free loopback port (L{mx_port})."""
        dns.add_mx("gmail.com", 20, "alt2." + MX_HOST)
        dns.add_mx("gmail.com", 5, MX_HOST)
        dns.add_a(MX_HOST, "127.0.0.1")
        dns.add_a("alt2." + MX_HOST, "127.0.0.2")
        self.mx = factory or recording_mx()
        port = reactor.listenTCP(0, self.mx, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.mx_port = port.getHost().port
        return self.mx

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
        arguments.portcheck(sub, argparse.ArgumentParser(add_help=False))
        args = parser.parse_args(["portcheck", *argv])
        args.config_dir, args.data_dir = os.path.abspath(self.mktemp()), None
        environ = {
            "AIMX_NAMESERVERS": self.dns.nameservers,
            "AIMX_PORTCHECK_BIND": f"127.0.0.1:{port}",
            "AIMX_SMTP_OUT_PORT": str(out_port or self.mx_port),
        }
        out, err = io.StringIO(), io.StringIO()
        session = Session(args, connect=None, euid=0,
                          term=Terminal(out, err, io.StringIO(), environ), environ=environ)
        verb = functools.partial(cli.portcheck, reactor=reactor, detect=detect,
                                 run_in_thread=threads.deferToThread)
        code = await execute(verb, args, session)
        return code, out.getvalue(), err.getvalue()


def mx_label(port: int) -> str:
    return f"{MX_HOST} [127.0.0.1]:{port} (MX of gmail.com)"


class OutboundCheckTests(PortcheckMixin, TestCase):
    """The outbound check itself: loopback DNS for gmail.com, a loopback MX."""

    def setUp(self):
        self.dns = FixtureDNS(reactor)
        self.dns.start()
        self.addCleanup(self.dns.stop)
        self.resolver = Resolver.from_env({"AIMX_NAMESERVERS": self.dns.nameservers})

    def check(self, port: int, domain: str = "gmail.com", **kw):
        return defer.Deferred.fromCoroutine(client.outbound_probe(
            reactor, domain, ProbeSettings(out_port=port), resolver=self.resolver,
            run_in_thread=threads.deferToThread, **kw,
        ))

    @defer.inlineCallbacks
    def test_pass_banner_then_quit(self):
        """The lowest MX's banner is read, QUIT is sent, nothing else; the pass names it."""
        mx = self.start_mx(self.dns)
        result = yield self.check(self.mx_port)
        self.assertEqual(result, core.ProbeResult(
            True, detail=f"{mx_label(self.mx_port)} sent its 220 banner"))
        self.assertEqual(b"".join(mx.received), b"QUIT\r\n")
        self.assertEqual([q for q in self.dns.queries if q[0] == "alt2." + MX_HOST], [],
                         "only the lowest-preference MX is looked up")

    @defer.inlineCallbacks
    def test_refused(self):
        """Nothing listens on the MX's port: fails with "connection refused" (blocked)."""
        self.start_mx(self.dns)
        port = reserve_port(self)
        result = yield self.check(port)
        self.assertFalse(result.ok)
        self.assertIsNone(result.error)
        self.assertEqual(result.detail,
                         f"cannot connect to {mx_label(port)}: connection refused")
        self.assertEqual(core.outbound_message(result), core.OUTBOUND_BLOCKED)

    @defer.inlineCallbacks
    def test_no_mx(self):
        """No such domain, a domain without MX, a null MX: the check cannot run, and
        no connection is attempted."""
        self.dns.add_a("nomx.example", "127.0.0.1")
        self.dns.add_mx("null.example", 0, "")  # the root name: RFC 7505 null MX
        for domain in ("gmail.com", "nomx.example", "null.example"):
            result = yield self.check(reserve_port(self), domain)
            self.assertEqual(result, core.ProbeResult(False, error=f"{domain} has no MX record"))
            self.assertEqual(core.outbound_message(result), core.OUTBOUND_UNCHECKED)

    @defer.inlineCallbacks
    def test_mx_without_address(self):
        """An MX host with no A record, or DNS failing: the check cannot run."""
        self.dns.add_mx("gmail.com", 5, MX_HOST)
        self.dns.add_mx("broken.example", 5, "mx.broken.example")
        self.dns.add_servfail("mx.broken.example")
        result = yield self.check(reserve_port(self))
        self.assertEqual(result.error, f"{MX_HOST} (MX of gmail.com) has no A record")
        result = yield self.check(reserve_port(self), "broken.example")
        self.assertTrue(result.error.startswith(
            "cannot look up mx.broken.example (MX of broken.example): "), result.error)

    @defer.inlineCallbacks
    def test_banner_timeout(self):
        """A server that accepts and stays silent fails at the banner timeout, on the
        injected clock (no wall-clock wait); nothing was sent to it."""
        silent = self.start_mx(self.dns, silent_mx())
        clock = task.Clock()
        d = self.check(self.mx_port, clock=clock)
        yield silent.connected
        for _ in range(100):  # reactor turns until the prober armed its banner timer
            if clock.getDelayedCalls():
                break
            yield task.deferLater(reactor, 0, lambda: None)
        clock.advance(core.OUTBOUND_IO_TIMEOUT - 0.5)
        self.assertFalse(d.called)
        clock.advance(0.5)
        result = yield d
        self.assertEqual(result, core.ProbeResult(
            False, detail=f"{mx_label(self.mx_port)}: no banner within 5 s"))
        self.assertEqual(silent.received, [])

    @defer.inlineCallbacks
    def test_refusing_banner(self):
        """A 554 banner: the port is open but the MX will not talk; inconclusive, and
        not even QUIT is sent."""
        mx = self.start_mx(self.dns, recording_mx("554 5.7.1 go away"))
        result = yield self.check(self.mx_port)
        self.assertEqual(result, core.ProbeResult(False, error=(
            f"{mx_label(self.mx_port)}: answered '554 5.7.1 go away' instead of a 220 banner")))
        self.assertEqual(mx.received, [])

    @defer.inlineCallbacks
    def test_verb_without_verifier(self):
        """`aimx portcheck` with nothing configured: the outbound check passes against the
        loopback gmail.com MX; the inbound check is explained and skipped; exit 0."""
        mx = self.start_mx(self.dns)
        port = reserve_port(self)
        code, out, err = yield defer.Deferred.fromCoroutine(self.portcheck(port=port))
        self.assertEqual((code, err), (0, ""))
        self.assertIn(f"  Outbound port 25... [OK] - {mx_label(self.mx_port)} sent its 220 "
                      "banner\n  Inbound port 25... [WARN] - not checked: no verifier "
                      "configured (verify_host)\n", out)
        self.assertIn(cli.OUTBOUND_ONLY, out)
        self.assertEqual(b"".join(mx.received), b"QUIT\r\n")
        self.assertTrue(bindable(port), "nothing was bound")

    @defer.inlineCallbacks
    def test_verb_check_domain(self):
        """--outbound-check-domain picks another domain's MX; its failure is explained."""
        self.start_mx(self.dns)
        code, out, err = yield defer.Deferred.fromCoroutine(self.portcheck(
            "--outbound-check-domain", "example.net", port=reserve_port(self)))
        self.assertEqual(code, 1)
        self.assertIn("  Outbound port 25... [FAIL] - example.net has no MX record\n", out)
        self.assertIn(core.OUTBOUND_UNCHECKED, err)
        self.assertIn("Error: Some checks failed.", err)


class PortcheckTests(PortcheckMixin, TestCase):
    def setUp(self):
        self.dns = FixtureDNS(reactor)
        self.dns.start()
        self.addCleanup(self.dns.stop)
        self.start_mx(self.dns)

    @defer.inlineCallbacks
    def test_all_pass_with_temporary_responder(self):
        """Port free: the responder answers the verifier's probe back; exit 0; port freed."""
        port = reserve_port(self)
        self.start_verifier(port)
        code, out, err = yield defer.Deferred.fromCoroutine(
            self.portcheck("--verify-host", self.verify_host + "/", port=port)
        )
        self.assertEqual((code, err), (0, ""))
        self.assertIn(f"  Outbound port 25... [OK] - {mx_label(self.mx_port)} sent its 220 "
                      "banner\n"
                      "  Inbound port 25... [OK] - the verifier reached 127.0.0.1 on port 25\n",
                      out)
        self.assertIn("Port 25 reachable. Ready for `aimx setup`.", out)
        self.assertTrue(bindable(port), "the temporary responder is gone")

    @defer.inlineCallbacks
    def test_nothing_answers_probe_back(self):
        """The verifier's probe back finds nothing listening: inbound fails, exit 1."""
        responder_port, silent_port = reserve_port(self), reserve_port(self)
        self.start_verifier(silent_port)
        code, out, err = yield defer.Deferred.fromCoroutine(
            self.portcheck("--verify-host", self.verify_host, port=responder_port)
        )
        self.assertEqual(code, 1)
        self.assertIn("  Inbound port 25... [FAIL] - the verifier could not reach 127.0.0.1 "
                      "on port 25\n", out)
        self.assertIn("Outbound port 25... [OK]", out)
        self.assertIn(core.INBOUND_UNREACHABLE, err)
        self.assertIn("Error: Some checks failed. See details above.", err)

    @defer.inlineCallbacks
    def test_outbound_blocked(self):
        """Nothing answers on the MX's port: outbound fails with the reason."""
        port = reserve_port(self)
        self.start_verifier(port)
        dead = reserve_port(self)
        code, out, err = yield defer.Deferred.fromCoroutine(
            self.portcheck("--verify-host", self.verify_host, port=port, out_port=dead)
        )
        self.assertEqual(code, 1)
        self.assertIn(f"Outbound port 25... [FAIL] - cannot connect to {mx_label(dead)}: "
                      "connection refused\n", out)
        self.assertIn("Inbound port 25... [OK]", out)
        self.assertIn(core.OUTBOUND_BLOCKED, err)

    @defer.inlineCallbacks
    def test_verifier_unreachable(self):
        """No verifier at the URL: the inbound check failed, naming the URL."""
        port = reserve_port(self)
        self.start_verifier(port)
        dead = f"http://127.0.0.1:{reserve_port(self)}"
        code, out, err = yield defer.Deferred.fromCoroutine(
            self.portcheck("--verify-host", dead, port=port)
        )
        self.assertEqual(code, 1)
        self.assertIn(f"Inbound port 25... [FAIL] - {dead}/probe: connection refused\n", out)
        self.assertIn(core.INBOUND_UNCHECKED, err)

    @defer.inlineCallbacks
    def test_port_held_by_other_program(self):
        """A program holds the port: outbound checked, no responder, exit 1 naming it."""
        name, argv = own_process()
        if portholder.is_aimx_process(name, argv):
            raise self.skipTest("this test process looks like aimx to ss")
        held = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(held.stopListening)
        port = held.getHost().port
        self.start_verifier(port)
        occupancy = client.detect_occupancy(port)
        if occupancy == portholder.FREE:
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
                           detect=lambda p: portholder.FREE)
        )
        self.assertEqual(code, 1)
        self.assertIn("Error: Cannot bind port 25 for preflight:", err)
        self.assertIn("Run with sudo or ensure port 25 is available.", err)

    @defer.inlineCallbacks
    def test_verifier_http(self):
        """/health over HTTP; /probe behind a loopback proxy names the client's address."""
        port = reserve_port(self)
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
        port = reserve_port(self)
        self.start_verifier(port)
        env = dict(os.environ, PYTHONPATH=REPO, AIMX_CONFIG_DIR=os.path.abspath(self.mktemp()),
                   AIMX_NAMESERVERS=self.dns.nameservers,
                   AIMX_PORTCHECK_BIND=f"127.0.0.1:{port}",
                   AIMX_SMTP_OUT_PORT=str(self.mx_port))
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
        self.start_mx(self.dns)
        self.start_verifier(self.port)
        code, out, err = yield defer.Deferred.fromCoroutine(
            self.portcheck("--verify-host", self.verify_host, port=self.port,
                           detect=lambda p: AIMX)
        )
        self.assertEqual((code, err), (0, ""))
        self.assertIn("  Inbound port 25... [OK] - the verifier reached 127.0.0.1 on port 25\n",
                      out)

    @defer.inlineCallbacks
    def test_outbound_probe_against_daemon(self):
        """The outbound check reads aimx's own ESMTP banner and says QUIT (gmail.com's
        MX pointed at the daemon)."""
        self.start_daemon()
        self.dns.add_mx("gmail.com", 5, MX_HOST)
        self.dns.add_a(MX_HOST, "127.0.0.1")
        result = yield defer.Deferred.fromCoroutine(client.outbound_probe(
            reactor, "gmail.com", core.ProbeSettings(out_port=self.port),
            resolver=Resolver.from_env(self.environ), run_in_thread=threads.deferToThread,
        ))
        self.assertTrue(result.ok, result)
