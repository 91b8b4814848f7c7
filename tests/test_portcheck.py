"""The port-25 check without the network: verify host, the outbound check's domain
and MX choice, occupancy, the SMTP dialogues, the verifier's resources and the `aimx
portcheck` verb with fake probes (docs/cli.md, "aimx portcheck"; no hosted service: no
default verifier)."""

import argparse
import io
import json
import os

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from aimx.cli import arguments
from aimx.cli import portcheck as cli
from aimx.cli.session import Session, execute
from aimx.cli.term import Terminal
from aimx.ops import portcheck as core
from aimx.ops import portholder
from aimx.ops import verifierwire
from aimx.ops.portcheck import (
    PASSED,
    ProbeResult,
    ProbeSettings,
    ProbeTarget,
    SettingsError,
    VerifyHostError,
)
from aimx.ops.portholder import AIMX, FREE, held_by
from aimx.ops.probedialogue import ProbeDialogue
from aimx.store import configfile
from aimx.host.programs import NOT_RUN, Completed
from aimx.testing.fakes import FakeRunner
from aimx.verifier import client, service
from aimx.verifier.smtp import (
    ResponderFactory,
    _ProberFactory,
    temporary_responder_factory,
    verifier_responder_factory,
)

SS_HEADER = (
    "State  Recv-Q Send-Q Local Address:Port  Peer Address:Port Process\n"
)


def ss_line(process: str = "") -> str:
    return f"LISTEN 0      100          0.0.0.0:25         0.0.0.0:*    {process}\n"


class VerifyHostTests(SynchronousTestCase):
    def test_empty(self):
        """An empty verify host (or only slashes) is refused."""
        for value in ("", "/", "//"):
            e = self.assertRaises(VerifyHostError, core.validate_verify_host, value)
            self.assertEqual(str(e), "verify-host cannot be empty")

    def test_scheme(self):
        """Without http:// or https:// the value is refused and quoted."""
        e = self.assertRaises(VerifyHostError, core.validate_verify_host, "foo")
        self.assertEqual(
            str(e), "verify-host must start with http:// or https:// (got: foo)"
        )
        self.assertRaises(VerifyHostError, core.validate_verify_host, "ftp://x.example")

    def test_trailing_slash(self):
        """Trailing slashes are stripped."""
        self.assertEqual(
            core.validate_verify_host("https://v.example.com/"), "https://v.example.com"
        )
        self.assertEqual(core.validate_verify_host("http://h/x//"), "http://h/x")

    def test_precedence(self):
        """--verify-host > config.verify_host > nothing: there is no hosted default."""
        self.assertEqual(
            core.resolve_verify_host("https://cli.example", "https://cfg.example"),
            "https://cli.example",
        )
        self.assertEqual(
            core.resolve_verify_host(None, "https://cfg.example/"), "https://cfg.example"
        )
        self.assertIsNone(core.resolve_verify_host(None, None))

    def test_invalid_config_value(self):
        """An invalid config value is refused too (it would be used)."""
        self.assertRaises(VerifyHostError, core.resolve_verify_host, None, "nope")

    def test_probe_url(self):
        """/probe is appended to the verifier's URL."""
        self.assertEqual(core.probe_url("https://v.example.com"), "https://v.example.com/probe")

    def test_targets_print(self):
        """A probe target prints as host:port, an IPv6 address in brackets."""
        self.assertEqual(str(ProbeTarget("192.0.2.1", 25)), "192.0.2.1:25")
        self.assertEqual(str(ProbeTarget("::1", 2525)), "[::1]:2525")


class CheckDomainTests(SynchronousTestCase):
    def test_precedence(self):
        """--outbound-check-domain > config.outbound_check_domain > gmail.com."""
        self.assertEqual(core.DEFAULT_OUTBOUND_CHECK_DOMAIN, "gmail.com")
        self.assertEqual(core.resolve_check_domain(None, None), "gmail.com")
        self.assertEqual(core.resolve_check_domain(None, "example.net"), "example.net")
        self.assertEqual(core.resolve_check_domain("example.org", "example.net"),
                         "example.org")

    def test_invalid(self):
        """A value that is not a domain name is refused, naming it and the rule."""
        for value, rule in (("", "cannot be empty"), ("localhost", "at least two labels"),
                            ("mx.example.com:25", "invalid character ':'")):
            e = self.assertRaises(core.CheckDomainError, core.resolve_check_domain, value, None)
            self.assertIn(f"invalid outbound check domain '{value}'", str(e))
            self.assertIn(rule, str(e))
        self.assertRaises(core.CheckDomainError, core.resolve_check_domain, None, "a_b.com")

    def test_lowest_mx(self):
        """The lowest preference wins; no MX or a null MX (RFC 7505) is no target."""
        self.assertEqual(core.lowest_mx([(10, "b.example"), (5, "a.example")]), "a.example")
        self.assertEqual(core.lowest_mx([(5, "b.example"), (5, "a.example")]), "a.example")
        self.assertIsNone(core.lowest_mx([]))
        self.assertIsNone(core.lowest_mx([(0, ".")]))

    def test_wording(self):
        """The outbound check names the MX, its address, the port and the domain."""
        label = core.mx_label("mx.example.net", "192.0.2.7", 25, "example.net")
        self.assertEqual(label, "mx.example.net [192.0.2.7]:25 (MX of example.net)")
        self.assertEqual(
            core.outbound_passed(label),
            ProbeResult(True, detail=f"{label} sent its 220 banner"),
        )


class SettingsTests(SynchronousTestCase):
    def test_defaults(self):
        """Production: the responder binds 0.0.0.0:25; the outbound probe uses port 25."""
        self.assertEqual(core.settings_from_environ({}), ProbeSettings("0.0.0.0", 25, 25))

    def test_hooks(self):
        """AIMX_PORTCHECK_BIND and AIMX_SMTP_OUT_PORT move the ports for loopback tests."""
        settings = core.settings_from_environ(
            {"AIMX_PORTCHECK_BIND": "127.0.0.1:2525", "AIMX_SMTP_OUT_PORT": "2526"}
        )
        self.assertEqual(settings, ProbeSettings("127.0.0.1", 2525, 2526))
        self.assertEqual(
            core.settings_from_environ({"AIMX_PORTCHECK_BIND": "[::1]:2525"}).bind,
            "[::1]:2525",
        )

    def test_malformed(self):
        """Malformed hooks are refused with the variable's name."""
        for environ in (
            {"AIMX_PORTCHECK_BIND": "2525"},
            {"AIMX_PORTCHECK_BIND": "127.0.0.1:0"},
            {"AIMX_PORTCHECK_BIND": "127.0.0.1:x"},
            {"AIMX_SMTP_OUT_PORT": "70000"},
        ):
            e = self.assertRaises(SettingsError, core.settings_from_environ, environ)
            self.assertIn(next(iter(environ)), str(e))


class OccupancyTests(SynchronousTestCase):
    def test_free(self):
        """No data line under ss's header means the port is free."""
        self.assertEqual(portholder.parse_occupancy(""), FREE)
        self.assertEqual(portholder.parse_occupancy(SS_HEADER), FREE)
        self.assertEqual(portholder.parse_occupancy(SS_HEADER + "\n  \n"), FREE)

    def test_other_process(self):
        """The first users:(("<name>" names the holder."""
        out = SS_HEADER + ss_line('users:(("master",pid=812,fd=13))')
        self.assertEqual(portholder.parse_occupancy(out), held_by("master"))
        out = SS_HEADER + ss_line('users:(("postfix",pid=9,fd=3),("postfix",pid=10,fd=3))')
        self.assertEqual(portholder.parse_occupancy(out), held_by("postfix"))

    def test_unknown(self):
        """A listener without process information is held by 'unknown'."""
        self.assertEqual(portholder.parse_occupancy(SS_HEADER + ss_line()), held_by("unknown"))

    def test_aimx_by_name(self):
        """A process named aimx (the console script) is aimx."""
        out = SS_HEADER + ss_line('users:(("aimx",pid=5,fd=7))')
        self.assertEqual(portholder.parse_occupancy(out), AIMX)

    def test_aimx_under_twistd_or_python(self):
        """[py] twistd or python running aimx is aimx; judged from its command line."""
        argvs = {
            5: ["/usr/bin/python3", "/usr/bin/twistd", "-n", "--pidfile=", "aimx"],
            6: ["/usr/bin/python3", "-m", "aimx", "serve"],
            7: ["/usr/bin/python3", "/usr/bin/twistd", "-n", "web"],
        }
        out = SS_HEADER + ss_line('users:(("twistd",pid=5,fd=7))')
        self.assertEqual(portholder.parse_occupancy(out, argvs.get), AIMX)
        out = SS_HEADER + ss_line('users:(("python3",pid=6,fd=7))')
        self.assertEqual(portholder.parse_occupancy(out, argvs.get), AIMX)
        out = SS_HEADER + ss_line('users:(("twistd",pid=7,fd=7))')
        self.assertEqual(portholder.parse_occupancy(out, argvs.get), held_by("twistd"))
        out = SS_HEADER + ss_line('users:(("twistd",pid=8,fd=7))')
        self.assertEqual(portholder.parse_occupancy(out, argvs.get), held_by("twistd"))

    def test_aimx_on_a_socket_from_systemd(self):
        """Socket activation: systemd holds aimx's socket too; the port is still aimx's."""
        argvs = {5: ["/usr/bin/python3", "/usr/bin/twistd", "-n", "--pidfile=", "aimx"]}
        out = SS_HEADER + ss_line('users:(("systemd",pid=1,fd=52),("twistd",pid=5,fd=7))')
        self.assertEqual(portholder.parse_occupancy(out, argvs.get), AIMX)
        out = SS_HEADER + ss_line('users:(("systemd",pid=1,fd=52))')
        self.assertEqual(portholder.parse_occupancy(out, argvs.get), held_by("systemd"))

    def test_detect_runs_ss(self):
        """detect_occupancy runs `ss -tlnp sport = :<port>` and parses its output."""
        run = FakeRunner(default=Completed(0, SS_HEADER + ss_line('users:(("exim4",pid=3,fd=4))')))
        self.assertEqual(client.detect_occupancy(2525, run=run), held_by("exim4"))
        self.assertEqual(run.calls, [["ss", "-tlnp", "sport", "=", ":2525"]])

    def test_detect_failure_is_free(self):
        """When ss is missing or fails, the port counts as free."""
        missing = FakeRunner(default=Completed(NOT_RUN, "", "ss: No such file or directory"))
        failing = FakeRunner(default=Completed(1, "", "boom"))
        self.assertEqual(client.detect_occupancy(25, run=missing), FREE)
        self.assertEqual(client.detect_occupancy(25, run=failing), FREE)


def connect(factory, clock=None):
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def sent_lines(transport) -> list[str]:
    return transport.value().decode().split("\r\n")[:-1]


class ResponderTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()

    def test_dialogue(self):
        """Acceptance 21: 220 banner; EHLO -> 250 localhost; NOOP -> 502; QUIT -> 221 Bye."""
        proto, transport = connect(temporary_responder_factory(self.clock))
        for line in (b"EHLO x\r\n", b"NOOP\r\n", b"helo y\r\n", b"QUIT\r\n", b"EHLO z\r\n"):
            proto.dataReceived(line)
        self.assertEqual(
            sent_lines(transport),
            ["220 localhost ESMTP aimx", "250 localhost", "502 Not implemented",
             "250 localhost", "221 Bye"],
        )
        self.assertTrue(transport.disconnecting)

    def test_read_timeout(self):
        """30 s without a line closes the connection."""
        proto, transport = connect(temporary_responder_factory(self.clock))
        self.clock.advance(29)
        proto.dataReceived(b"EHLO x\r\n")
        self.clock.advance(29)
        self.assertFalse(transport.disconnected)
        self.clock.advance(1)
        self.assertTrue(transport.disconnected)

    def test_long_line(self):
        """A command line over 1024 bytes ends the session."""
        proto, transport = connect(temporary_responder_factory(self.clock))
        proto.dataReceived(b"X" * 2000)
        self.assertTrue(transport.disconnecting)

    def test_verifier_listener(self):
        """The verifier's listener names itself and answers 500 to other commands."""
        factory = verifier_responder_factory(self.clock, "check.example", 10)
        proto, transport = connect(factory)
        proto.dataReceived(b"EHLO aimx\r\nMAIL FROM:<a@b>\r\nQUIT\r\n")
        self.assertEqual(
            sent_lines(transport),
            ["220 check.example SMTP aimx-verifier", "250 check.example",
             "500 Command not recognized", "221 Bye"],
        )

    def test_session_timeout(self):
        """The verifier's sessions end after 30 s even when the peer keeps talking."""
        factory = verifier_responder_factory(self.clock, "check.example", 10)
        proto, transport = connect(factory)
        for _ in range(5):
            self.clock.advance(6)
            proto.dataReceived(b"NOOP\r\n")
        self.assertTrue(transport.disconnected)
        proto.connectionLost(None)
        self.assertEqual(factory.sessions, set())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_session_cap(self):
        """Connections beyond max_sessions are closed without a banner."""
        factory = ResponderFactory(self.clock, max_sessions=1)
        connect(factory)
        _proto, transport = connect(factory)
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)


class DialogueTests(SynchronousTestCase):
    def test_success(self):
        """220 -> EHLO; 250- lines then 250 -> QUIT and success; 221 ends it."""
        d = ProbeDialogue("aimx")
        self.assertEqual(d.received("220-mx.example ESMTP"), None)
        self.assertEqual(d.received("220 mx.example ESMTP"), "EHLO aimx")
        self.assertEqual(d.received("250-mx.example"), None)
        self.assertEqual(d.received("250-PIPELINING"), None)
        self.assertEqual(d.received("250 SIZE 1000"), "QUIT")
        self.assertTrue(d.ok)
        self.assertFalse(d.finished)
        d.received("221 Bye")
        self.assertTrue(d.finished)
        self.assertTrue(d.ok)

    def test_close_after_success(self):
        """A server that drops the line after 250 still passed."""
        d = ProbeDialogue("aimx")
        d.received("220 x")
        d.received("250 x")
        d.lost()
        self.assertTrue(d.ok)
        self.assertTrue(d.finished)

    def test_bad_banner(self):
        """A banner that is not 220 fails the probe; the peer did answer."""
        d = ProbeDialogue("aimx")
        self.assertIsNone(d.received("554 go away"))
        self.assertTrue(d.finished)
        self.assertFalse(d.ok)
        self.assertTrue(d.answered)
        self.assertEqual(d.reason, "answered '554 go away' instead of a 220 banner")

    def test_banner_only(self):
        """Without an EHLO name: 220 -> QUIT and success at once; nothing else is sent."""
        d = ProbeDialogue(None)
        self.assertIsNone(d.received("220-mx.example ESMTP"))
        self.assertEqual(d.received("220 mx.example ESMTP"), "QUIT")
        self.assertTrue(d.ok)
        self.assertFalse(d.finished)
        self.assertIsNone(d.received("221 bye"))
        self.assertTrue(d.finished)
        self.assertTrue(d.ok)
        d = ProbeDialogue(None)
        d.received("220 x")
        d.lost()
        self.assertTrue(d.ok)

    def test_timeout_wording(self):
        """A wait that times out names what was awaited: the banner, then a reply."""
        d = ProbeDialogue(None)
        self.assertEqual(d.timed_out(5), "no banner within 5 s")
        self.assertFalse(d.answered)
        d = ProbeDialogue("aimx")
        d.received("220 x")
        self.assertEqual(d.timed_out(5), "no reply within 5 s")

    def test_bad_ehlo_reply(self):
        """Anything but 250 to EHLO fails the probe."""
        d = ProbeDialogue("aimx")
        d.received("220 x")
        d.received("502 Not implemented")
        self.assertFalse(d.ok)
        self.assertIn("EHLO", d.reason)

    def test_closed_early(self):
        """A connection closed before the banner or the EHLO reply fails."""
        d = ProbeDialogue("aimx")
        d.lost()
        self.assertFalse(d.ok)
        self.assertIn("before the banner", d.reason)
        d = ProbeDialogue("aimx")
        d.received("220 x")
        d.lost("timed out")
        self.assertEqual((d.ok, d.reason), (False, "timed out"))


class ProberTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.factory = _ProberFactory(self.clock, "aimx", 5)

    def test_exchange(self):
        """The prober sends EHLO and QUIT, closes after 221, reports success on close."""
        proto, transport = connect(self.factory)
        results = []
        proto.done.addCallback(results.append)
        proto.dataReceived(b"220 mx ESMTP\r\n")
        self.assertEqual(transport.value(), b"EHLO aimx\r\n")
        proto.dataReceived(b"250-mx\r\n250 8BITMIME\r\n")
        self.assertEqual(transport.value(), b"EHLO aimx\r\nQUIT\r\n")
        proto.dataReceived(b"221 Bye\r\n")
        self.assertTrue(transport.disconnecting)
        proto.connectionLost(None)
        self.assertTrue(results[0].ok)

    def test_io_timeout(self):
        """No reply within the I/O timeout fails the probe and aborts the connection."""
        proto, transport = connect(self.factory)
        results = []
        proto.done.addCallback(results.append)
        proto.dataReceived(b"220 mx ESMTP\r\n")
        self.clock.advance(5)
        self.assertTrue(transport.disconnected)
        proto.connectionLost(None)
        self.assertFalse(results[0].ok)
        self.assertEqual(results[0].reason, "no reply within 5 s")

    def test_banner_only_exchange(self):
        """Outbound check: after the 220 banner only QUIT is written, then it closes."""
        proto, transport = connect(_ProberFactory(self.clock, None, 5))
        results = []
        proto.done.addCallback(results.append)
        self.assertEqual(transport.value(), b"")
        proto.dataReceived(b"220-mx.example ESMTP\r\n220 mx.example\r\n")
        self.assertEqual(transport.value(), b"QUIT\r\n")
        proto.dataReceived(b"221 2.0.0 Bye\r\n")
        self.assertTrue(transport.disconnecting)
        proto.connectionLost(None)
        self.assertTrue(results[0].ok)
        self.assertEqual(transport.value(), b"QUIT\r\n")

    def test_banner_timeout(self):
        """Outbound check: no banner within the timeout fails, on the clock, nothing sent."""
        proto, transport = connect(_ProberFactory(self.clock, None, 5))
        results = []
        proto.done.addCallback(results.append)
        self.clock.advance(4.9)
        self.assertFalse(transport.disconnected)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnected)
        proto.connectionLost(None)
        self.assertEqual((results[0].ok, results[0].answered), (False, False))
        self.assertEqual(results[0].reason, "no banner within 5 s")
        self.assertEqual(transport.value(), b"")

    def test_deadline(self):
        """A peer dribbling 250- lines is cut off at the budget."""
        proto, transport = connect(self.factory)
        results = []
        proto.done.addCallback(results.append)
        proto.set_deadline(12, 30)
        proto.dataReceived(b"220 mx\r\n")
        for _ in range(3):
            self.clock.advance(4)
            proto.dataReceived(b"250-more\r\n")
        self.assertTrue(transport.disconnected)
        proto.connectionLost(None)
        self.assertEqual(results[0].reason, "no complete SMTP exchange within 30 s")
        self.assertEqual(self.clock.getDelayedCalls(), [])


class AnswerTests(SynchronousTestCase):
    def test_bodies(self):
        """/health and /probe answer compact JSON with AIMX's fields."""
        self.assertEqual(verifierwire.health_body(), b'{"status":"ok","service":"aimx-verifier"}')
        self.assertEqual(
            verifierwire.probe_body(True, "1.2.3.4"), b'{"reachable":true,"ip":"1.2.3.4"}'
        )

    def test_read_probe_response(self):
        """Acceptance 22: reachable true passes; false or an HTTP error fails."""
        reached = ProbeResult(True, detail="the verifier reached 1.2.3.4 on port 25")
        self.assertEqual(
            verifierwire.read_probe_response(200, b'{"reachable":true,"ip":"1.2.3.4"}'), reached
        )
        self.assertEqual(
            verifierwire.read_probe_response(200, b'{"reachable": true, "ip": "1.2.3.4"}'), reached
        )
        self.assertEqual(verifierwire.read_probe_response(200, b'{"reachable":true}'), PASSED)
        # Only an address parsed as one is repeated to the operator.
        self.assertEqual(
            verifierwire.read_probe_response(200, b'{"reachable":true,"ip":"\\u001b[2J"}'), PASSED
        )
        result = verifierwire.read_probe_response(200, b'{"reachable":false,"ip":"1.2.3.4"}')
        self.assertFalse(result.ok)
        self.assertIsNone(result.error)
        self.assertIn("1.2.3.4", result.detail)
        self.assertFalse(verifierwire.read_probe_response(200, b"<html>oops</html>").ok)
        result = verifierwire.read_probe_response(502, b'{"reachable":true}')
        self.assertFalse(result.ok)
        self.assertIn("HTTP 502", result.error)

    def test_messages(self):
        """A plain "no" and a check that could not run get different advice."""
        no = ProbeResult(False, detail="connection refused")
        broken = ProbeResult(False, error="gmail.com has no MX record")
        self.assertEqual(core.outbound_message(no), core.OUTBOUND_BLOCKED)
        self.assertEqual(core.outbound_message(broken), core.OUTBOUND_UNCHECKED)
        self.assertIn("outbound_check_domain", core.OUTBOUND_UNCHECKED)
        self.assertEqual(core.inbound_message(no), core.INBOUND_UNREACHABLE)
        self.assertEqual(core.inbound_message(broken), core.INBOUND_UNCHECKED)
        self.assertEqual((no.reason, broken.reason),
                         ("connection refused", "gmail.com has no MX record"))


class CallerTests(SynchronousTestCase):
    def test_blocked_targets(self):
        """Loopback, private, link-local, CGNAT, ULA and mapped forms are never probed."""
        for ip in ("127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1",
                   "169.254.1.1", "0.0.0.0", "255.255.255.255", "224.0.0.1", "::1",
                   "fe80::1", "fd00::1", "::ffff:10.0.0.1", "::ffff:127.0.0.1", "::"):
            self.assertTrue(verifierwire.is_blocked_target(ip), ip)
        for ip in ("1.2.3.4", "8.8.8.8", "2a00:1450:4001::1"):
            self.assertFalse(verifierwire.is_blocked_target(ip), ip)

    def test_direct_peer(self):
        """A non-loopback peer is the target; its header is ignored."""
        self.assertEqual(str(verifierwire.caller_ip("1.2.3.4", "5.6.7.8")), "1.2.3.4")
        self.assertEqual(str(verifierwire.caller_ip("::ffff:1.2.3.4", None)), "1.2.3.4")

    def test_behind_proxy(self):
        """A loopback peer must name a public client in the header."""
        self.assertEqual(str(verifierwire.caller_ip("127.0.0.1", " 5.6.7.8 ")), "5.6.7.8")
        self.assertIsNone(verifierwire.caller_ip("127.0.0.1", None))
        self.assertIsNone(verifierwire.caller_ip("127.0.0.1", "garbage"))
        self.assertIsNone(verifierwire.caller_ip("127.0.0.1", "10.0.0.1"))
        self.assertIsNone(verifierwire.caller_ip("::1", "::ffff:127.0.0.1"))

    def test_allow_private(self):
        """--allow-private: private header values and a bare loopback peer are probed."""
        self.assertEqual(str(verifierwire.caller_ip("127.0.0.1", None, True)), "127.0.0.1")
        self.assertEqual(str(verifierwire.caller_ip("127.0.0.1", "10.0.0.1", True)), "10.0.0.1")


class FakeVerifier(service.Verifier):
    """A verifier whose probe back answers from a table and records the calls."""

    def __init__(self, reachable=True, **kw):
        super().__init__(task.Clock(), **kw)
        self.reachable = reachable
        self.probed = []
        self.pending = None

    async def probe_back(self, ip):
        self.probed.append(str(ip))
        if self.pending is not None:
            return await self.pending
        return self.reachable


def get(resource_root, path: bytes, peer="1.2.3.4", headers=None):
    request = DummyRequest(path.lstrip(b"/").split(b"/"))
    request.client = IPv4Address("TCP", peer, 50000)
    for name, value in (headers or {}).items():
        request.requestHeaders.setRawHeaders(name, [value])
    child = resource_root
    while request.postpath and not child.isLeaf:
        segment = request.postpath.pop(0)
        request.prepath.append(segment)
        child = child.getChildWithDefault(segment, request)
    result = child.render(request)
    if result is not NOT_DONE_YET:
        request.write(result)
        request.finish()
    return request


def body(request) -> dict:
    return json.loads(b"".join(request.written))


class VerifierResourceTests(SynchronousTestCase):
    def test_health(self):
        """GET /health and GET / answer the health document as JSON."""
        root = service.root_resource(FakeVerifier())
        for path in (b"/health", b"/"):
            request = get(root, path)
            self.assertEqual(body(request), {"status": "ok", "service": "aimx-verifier"})
            self.assertEqual(
                request.responseHeaders.getRawHeaders(b"content-type"), [b"application/json"]
            )

    def test_probe_direct_peer(self):
        """A public peer is probed back and told the verdict with its address."""
        verifier = FakeVerifier(reachable=True)
        request = get(service.root_resource(verifier), b"/probe", peer="1.2.3.4")
        self.assertEqual(verifier.probed, ["1.2.3.4"])
        self.assertEqual(b"".join(request.written), b'{"reachable":true,"ip":"1.2.3.4"}')
        verifier.reachable = False
        request = get(service.root_resource(verifier), b"/probe", peer="1.2.3.4")
        self.assertEqual(body(request), {"reachable": False, "ip": "1.2.3.4"})

    def test_probe_behind_proxy(self):
        """Behind a loopback proxy the header names the target."""
        verifier = FakeVerifier()
        request = get(service.root_resource(verifier), b"/probe", peer="127.0.0.1",
                      headers={"X-AIMX-Client-IP": "5.6.7.8"})
        self.assertEqual(verifier.probed, ["5.6.7.8"])
        self.assertEqual(body(request)["ip"], "5.6.7.8")

    def test_probe_without_header(self):
        """A loopback peer without the header gets 400 and nothing is probed."""
        verifier = FakeVerifier()
        request = get(service.root_resource(verifier), b"/probe", peer="127.0.0.1")
        self.assertEqual(request.responseCode, 400)
        self.assertEqual(verifier.probed, [])

    def test_private_peer(self):
        """A private caller is answered unreachable without a connection."""
        verifier = FakeVerifier()
        request = get(service.root_resource(verifier), b"/probe", peer="192.168.1.9")
        self.assertEqual(body(request), {"reachable": False, "ip": "192.168.1.9"})
        self.assertEqual(verifier.probed, [])

    def test_allow_private(self):
        """With allow_private a loopback caller is probed itself."""
        verifier = FakeVerifier(allow_private=True)
        request = get(service.root_resource(verifier), b"/probe", peer="127.0.0.1")
        self.assertEqual(verifier.probed, ["127.0.0.1"])
        self.assertEqual(body(request), {"reachable": True, "ip": "127.0.0.1"})

    def test_probe_limit(self):
        """Beyond max_probes concurrent probes the verifier answers 503."""
        verifier = FakeVerifier(max_probes=1)
        verifier.pending = defer.Deferred()
        root = service.root_resource(verifier)
        first = get(root, b"/probe")
        second = get(root, b"/probe")
        self.assertEqual(second.responseCode, 503)
        verifier.pending.callback(True)
        self.assertEqual(body(first), {"reachable": True, "ip": "1.2.3.4"})
        verifier.pending = None
        third = get(root, b"/probe")
        self.assertEqual(body(third), {"reachable": True, "ip": "1.2.3.4"})

    def test_client_gone(self):
        """A client that hung up before the verdict is not written to."""
        verifier = FakeVerifier()
        verifier.pending = defer.Deferred()
        request = get(service.root_resource(verifier), b"/probe")
        request.processingFailed(Exception("gone"))  # what a hang-up does to notifyFinish
        verifier.pending.callback(True)
        self.assertEqual(request.written, [])

    def test_options(self):
        """twistd aimx-verifier options parse binds, the probe port and 'none'."""
        options = service.Options()
        options.parseOptions(
            ["--http", "127.0.0.1:0", "--smtp", "none", "--probe-port", "2525",
             "--hostname", "v.example", "--allow-private"]
        )
        verifier = service.build(options, task.Clock())
        self.assertEqual(verifier.http, ("127.0.0.1", 0))
        self.assertIsNone(verifier.smtp)
        self.assertEqual(verifier.probe_port, 2525)
        self.assertEqual(verifier.hostname, "v.example")
        self.assertTrue(verifier.allow_private)
        defaults = service.Options()
        defaults.parseOptions([])
        self.assertEqual((defaults.http, defaults.smtp), (("127.0.0.1", 3025), ("0.0.0.0", 25)))
        self.assertEqual(defaults.probe_port, 25)
        from twisted.python import usage

        self.assertRaises(usage.UsageError, service.Options().parseOptions,
                          ["--probe-port", "0"])
        self.assertRaises(usage.UsageError, service.Options().parseOptions, ["--http", "x"])


class FakeResponder:
    """Stands in for TemporaryResponder; records that it was entered and left."""

    events = []

    def __init__(self, reactor, settings):
        self.settings = settings

    async def __aenter__(self):
        FakeResponder.events.append(("enter", self.settings.bind))
        return self

    async def __aexit__(self, *exc):
        FakeResponder.events.append(("exit", self.settings.bind))
        return False


class PortcheckVerbTests(SynchronousTestCase):
    """Acceptance 20 with fake probes."""

    MX = "mx.example [192.0.2.1]:25 (MX of gmail.com)"

    def setUp(self):
        self.config_dir = os.path.abspath(self.mktemp())
        os.makedirs(self.config_dir)
        self.outbound = core.outbound_passed(self.MX)
        self.inbound = ProbeResult(True, detail="the verifier reached 192.0.2.9 on port 25")
        self.calls = []
        FakeResponder.events = []
        self.patch(cli, "TemporaryResponder", FakeResponder)

        async def outbound(reactor, domain, settings, *, resolver, run_in_thread):
            self.calls.append(("outbound", domain, settings.out_port))
            self.assertIs(resolver, self.resolver)
            return self.outbound

        async def inbound(reactor, verify_host):
            self.calls.append(("inbound", verify_host))
            return self.inbound

        self.patch(cli, "outbound_probe", outbound)
        self.patch(cli, "inbound_probe", inbound)
        self.resolver = object()

    def portcheck(self, argv=(), *, euid=0, occupancy=FREE, environ=None, tty=False):
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers(dest="verb")
        arguments.portcheck(sub, argparse.ArgumentParser(add_help=False))
        args = parser.parse_args(["portcheck", *argv])
        args.config_dir, args.data_dir = self.config_dir, None
        out, err = io.StringIO(), io.StringIO()
        environ = {} if environ is None else environ
        term = Terminal(out, err, io.StringIO(), {"CLICOLOR_FORCE": "1"} if tty else environ)
        s = Session(args, connect=None, euid=euid, term=term, environ=environ)
        ports = []

        def detect(port):
            ports.append(port)
            return occupancy

        verb = lambda a, sess: cli.portcheck(  # noqa: E731
            a, sess, reactor=task.Clock(), detect=detect, resolver=self.resolver,
            run_in_thread=defer.maybeDeferred,
        )
        code = self.successResultOf(defer.Deferred.fromCoroutine(execute(verb, args, s)))
        self.ports = ports
        return code, out.getvalue(), err.getvalue()

    def write_config(self, extra: str) -> None:
        with open(configfile.config_path(self.config_dir), "w") as f:
            f.write('domain = "test.local"\n' + extra)

    def test_not_root(self):
        """Non-root: exit 1, `requires root`, nothing probed (even with a bad host)."""
        code, _out, err = self.portcheck(["--verify-host", "foo"], euid=1000)
        self.assertEqual(code, 1)
        self.assertIn(
            "Error: `aimx portcheck` requires root. Run with: sudo aimx portcheck", err
        )
        self.assertEqual(self.calls, [])

    def test_all_pass(self):
        """Both checks pass: exit 0, `Port 25 reachable`; the responder is held only
        for the inbound check."""
        code, out, err = self.portcheck(["--verify-host", "https://v.example.com/"])
        self.assertEqual(code, 0)
        self.assertEqual(
            out,
            "aimx portcheck - Port 25 connectivity check\n\n"
            f"  Outbound port 25... [OK] - {self.MX} sent its 220 banner\n"
            "  Inbound port 25... [OK] - the verifier reached 192.0.2.9 on port 25\n\n"
            "Port 25 reachable. Ready for `aimx setup`.\n"
            "Run `sudo aimx setup` to begin.\n",
        )
        self.assertEqual(err, "")
        self.assertEqual(
            self.calls,
            [("outbound", "gmail.com", 25), ("inbound", "https://v.example.com")],
        )
        self.assertEqual(FakeResponder.events, [("enter", "0.0.0.0:25"), ("exit", "0.0.0.0:25")])
        self.assertEqual(self.ports, [25])

    def test_no_verifier(self):
        """No verify_host: outbound checked, inbound explained, not probed; exit 0."""
        code, out, err = self.portcheck()
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(
            out,
            "aimx portcheck - Port 25 connectivity check\n\n"
            f"  Outbound port 25... [OK] - {self.MX} sent its 220 banner\n"
            "  Inbound port 25... [WARN] - not checked: no verifier configured (verify_host)\n"
            "    Checking inbound port 25 needs a verifier on another host, outside this "
            "network,\n"
            "    that connects back to this host's port 25. aimx uses no hosted service for "
            "it.\n"
            "    On that other host run:  twistd -n aimx-verifier\n"
            "      (HTTPS through a reverse proxy in front of it, or --http 0.0.0.0:3025)\n"
            '    then set verify_host = "https://<that host>" in config.toml, or pass '
            "--verify-host.\n\n"
            "Outbound port 25 works. Inbound port 25 was not checked (no verifier "
            "configured).\n"
            "Run `sudo aimx setup` to begin.\n",
        )
        self.assertEqual(self.calls, [("outbound", "gmail.com", 25)])
        self.assertEqual(FakeResponder.events, [], "nothing bound without an inbound check")

    def test_no_verifier_outbound_blocked(self):
        """No verify_host and outbound blocked: exit 1 for the outbound check."""
        self.outbound = ProbeResult(False, detail=f"cannot connect to {self.MX}: "
                                    "connection refused")
        code, out, err = self.portcheck()
        self.assertEqual(code, 1)
        self.assertIn(f"  Outbound port 25... [FAIL] - cannot connect to {self.MX}: "
                      "connection refused\n", out)
        self.assertIn("[WARN] - not checked", out)
        self.assertIn(f"  {core.OUTBOUND_BLOCKED}\n", err)
        self.assertIn("Error: Some checks failed. See details above.", err)

    def test_inbound_fails(self):
        """Inbound fails: exit 1, `Some checks failed`, the reason on its line."""
        self.inbound = ProbeResult(False, detail="the verifier could not reach 1.2.3.4")
        code, out, err = self.portcheck(["--verify-host", "https://v.example"])
        self.assertEqual(code, 1)
        self.assertIn("  Inbound port 25... [FAIL] - the verifier could not reach 1.2.3.4\n",
                      out)
        self.assertIn(core.INBOUND_UNREACHABLE, err)
        self.assertIn("Error: Some checks failed. See details above.", err)
        self.assertNotIn("Port 25 reachable", out)

    def test_outbound_inconclusive(self):
        """No MX for the check domain: the check could not run; inbound still runs."""
        self.outbound = ProbeResult(False, error="gmail.com has no MX record")
        code, out, err = self.portcheck(["--verify-host", "https://v.example"])
        self.assertEqual(code, 1)
        self.assertIn("Outbound port 25... [FAIL] - gmail.com has no MX record\n", out)
        self.assertIn("Inbound port 25... [OK]", out)
        self.assertIn(core.OUTBOUND_UNCHECKED, err)
        self.assertNotIn(core.OUTBOUND_BLOCKED, err)
        self.assertIn("Some checks failed", err)

    def test_held_by_other(self):
        """Port held by postfix: outbound tested, no inbound, exit 1 naming postfix."""
        code, out, err = self.portcheck(["--verify-host", "https://v.example"],
                                        occupancy=held_by("postfix"))
        self.assertEqual(code, 1)
        self.assertIn("Outbound port 25... [OK]", out)
        self.assertNotIn("Inbound", out)
        self.assertIn("Error: Port 25 is occupied by `postfix`.", err)
        self.assertIn("run `sudo aimx portcheck` again", err)
        self.assertEqual([c[0] for c in self.calls], ["outbound"])
        self.assertEqual(FakeResponder.events, [])

    def test_aimx_running(self):
        """aimx holds the port: no temporary responder; both probes run against it."""
        code, _, _ = self.portcheck(["--verify-host", "https://v.example"], occupancy=AIMX)
        self.assertEqual(code, 0)
        self.assertEqual(FakeResponder.events, [])
        self.assertEqual([c[0] for c in self.calls], ["outbound", "inbound"])

    def test_verify_host_precedence(self):
        """Without the flag config.toml's verify_host is used; without either, none."""
        self.assertEqual(self.portcheck()[0], 0)
        self.assertEqual([c[0] for c in self.calls], ["outbound"])
        self.write_config('verify_host = "http://cfg.example:8080/"\n')
        self.calls = []
        self.portcheck()
        self.assertEqual(self.calls[1], ("inbound", "http://cfg.example:8080"))
        self.calls = []
        self.portcheck(["--verify-host", "https://cli.example"])
        self.assertEqual(self.calls[1], ("inbound", "https://cli.example"))

    def test_check_domain_precedence(self):
        """--outbound-check-domain > outbound_check_domain in config.toml > gmail.com."""
        self.write_config('outbound_check_domain = "example.net"\n')
        self.portcheck()
        self.assertEqual(self.calls[-1], ("outbound", "example.net", 25))
        self.portcheck(["--outbound-check-domain", "example.org"])
        self.assertEqual(self.calls[-1], ("outbound", "example.org", 25))

    def test_bad_check_domain(self):
        """An invalid check domain: exit 1 naming it, nothing probed."""
        code, _out, err = self.portcheck(["--outbound-check-domain", "localhost"])
        self.assertEqual(code, 1)
        self.assertIn("Error: invalid outbound check domain 'localhost':", err)
        self.assertEqual(self.calls, [])

    def test_bad_verify_host(self):
        """Root with an invalid --verify-host: exit 1 with the validation message."""
        code, _out, err = self.portcheck(["--verify-host", "foo"])
        self.assertEqual(code, 1)
        self.assertIn("verify-host must start with http:// or https:// (got: foo)", err)
        self.assertEqual(self.calls, [])

    def test_hooks(self):
        """AIMX_PORTCHECK_BIND and AIMX_SMTP_OUT_PORT reach the responder and the probe."""
        environ = {"AIMX_PORTCHECK_BIND": "127.0.0.1:2525", "AIMX_SMTP_OUT_PORT": "2526"}
        code, _, _ = self.portcheck(["--verify-host", "https://v.example"], environ=environ)
        self.assertEqual(code, 0)
        self.assertEqual(self.ports, [2525])
        self.assertEqual(FakeResponder.events[0], ("enter", "127.0.0.1:2525"))
        self.assertEqual(self.calls[0], ("outbound", "gmail.com", 2526))

    def test_bind_failure(self):
        """A responder that cannot bind ends the check with the preflight message."""

        class Unbindable(FakeResponder):
            async def __aenter__(self):
                raise client.ResponderBindError(
                    "Cannot bind port 25 for preflight: [Errno 98] Address in use\n"
                    "Run with sudo or ensure port 25 is available."
                )

        self.patch(cli, "TemporaryResponder", Unbindable)
        code, _out, err = self.portcheck(["--verify-host", "https://v.example"])
        self.assertEqual(code, 1)
        self.assertIn("Error: Cannot bind port 25 for preflight:", err)
        self.assertEqual([c[0] for c in self.calls], ["outbound"])

    def test_colour_marks(self):
        """On a colour terminal the marks are ✓, ✗ and ⚠."""
        self.outbound = ProbeResult(False)
        _, out, _ = self.portcheck(tty=True)
        self.assertIn("✗", out)
        self.assertIn("⚠", out)
        self.assertNotIn("[FAIL]", out)
        self.outbound = PASSED
        _, out, _ = self.portcheck(["--verify-host", "https://v.example"], tty=True)
        self.assertIn("✓", out)

    def test_help(self):
        """`aimx portcheck --help` mentions port 25, --verify-host and
        --outbound-check-domain with its default (cli.md case 3)."""
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers(dest="verb")
        arguments.portcheck(sub, argparse.ArgumentParser(add_help=False))
        text = " ".join(sub.choices["portcheck"].format_help().split())
        self.assertIn("port 25", text)
        self.assertIn("--verify-host", text)
        self.assertIn("--outbound-check-domain DOMAIN", text)
        self.assertIn("else gmail.com", text)
        self.assertIn("your own verifier", text)
