"""Tests for aimx.smtp.outbound: MX delivery over real loopback sockets.

DNS is a L{FixtureDNS} on 127.0.0.1; every MX host gets its own 127.0.0.x address with a
L{SmtpSink} listening there, all on one port (the transport has one port for all hosts).
The sender's socket options and the lookup bound are tested in tests.test_smtp_outbound.
"""

import os

from twisted.internet import reactor, threads
from twisted.protocols import basic
from twisted.trial.unittest import TestCase

from aimx.auth.resolver import Resolver
from aimx.core.delivery import DEFERRED, DELIVERED, FAILED, RcptResult
from aimx.loopback.dns import FixtureDNS
from aimx.loopback.smtpsink import SmtpSink, listen_all
from aimx.smtp.outbound import MxTransport
from aimx.store import keys
from tests.test_smtp_outbound import HELO, MESSAGE, SENDER


def boundary_message() -> bytes:
    """A CRLF message whose LF form has "." lines starting exactly at 16 and 32 KiB."""
    out = b"Subject: chunks\n\n"
    for target, line in ((16384, b".at the first boundary\n"), (32768, b".\n")):
        while len(out) < target:
            room = target - len(out)
            out += b"x" * min(70, room - 1) + b"\n" if room > 1 else b"\n"
        out += line
    return (out + b"end\n").replace(b"\n", b"\r\n")


class OutboundTestCase(TestCase):
    """Fixture DNS, loopback sinks, and an MxTransport aimed at them."""

    def setUp(self):
        self.dns = FixtureDNS(reactor)
        self.dns.start()
        self.addCleanup(self.dns.stop)
        self.resolver = Resolver.from_env({"AIMX_NAMESERVERS": self.dns.nameservers},
                                          resolv_conf="/nonexistent")

    def mx(self, domain: str, *hosts: tuple[int, str, str]):
        """Publish MX records C{(pref, host, ip)} and each host's A record."""
        for pref, host, ip in hosts:
            self.dns.add_mx(domain, pref, host)
            self.dns.add_a(host, ip)

    def sink(self, **kwargs) -> SmtpSink:
        sink = SmtpSink(reactor, **kwargs)
        self.addCleanup(sink.stop)
        return sink

    def tls_pair(self):
        """A self-signed certificate for mx1.example.com and its key."""
        directory = self.mktemp()
        cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
        keys.generate_self_signed(cert, key, "mx1.example.com")
        return keys.load_tls_pair(cert, key)

    def transport(self, sinks: dict[str, SmtpSink], **kwargs) -> MxTransport:
        """Start C{sinks} (IP -> sink) on one port and return a transport aimed at it."""
        port = listen_all(sinks)
        kwargs.setdefault("timeout", 10.0)
        return MxTransport(reactor=reactor, resolver=self.resolver,
                           run_in_thread=threads.deferToThread, helo=HELO, port=port, **kwargs)

    async def send(self, transport, rcpts, message=MESSAGE, mail_from=SENDER):
        plan = await transport.plan(rcpts)
        return await transport.deliver(mail_from, plan, message)


class TransactionTests(OutboundTestCase):
    async def test_delivered_one_transaction(self):
        """Two recipients of one domain go in one transaction, EHLO = helo, data intact."""
        self.mx("example.com", (10, "mx1.example.com", "127.0.0.2"))
        sink = self.sink()
        t = self.transport({"127.0.0.2": sink})
        results = await self.send(t, ["bob@example.com", "carol@example.com"])
        self.assertEqual([r.status for r in results], [DELIVERED, DELIVERED])
        self.assertEqual(results[0].details, "mx1.example.com: 250 2.0.0 sink ok")
        [txn] = sink.transactions
        self.assertEqual((txn.helo, txn.mail_from, txn.rcpts, txn.tls),
                         (HELO, SENDER, ["bob@example.com", "carol@example.com"], False))
        self.assertEqual(txn.data, MESSAGE)
        self.assertEqual(sink.connections, 1)

    async def test_rcpt_550_failed(self):
        """A 550 to RCPT fails that recipient permanently."""
        self.mx("example.com", (10, "mx1.example.com", "127.0.0.2"))
        t = self.transport({"127.0.0.2": self.sink(rcpt={"bob@example.com": 550})})
        [result] = await self.send(t, ["bob@example.com"])
        self.assertEqual(result.status, FAILED)
        self.assertIn("Rejected by mx1.example.com: 550", result.details)

    async def test_rcpt_451_deferred(self):
        """A 451 to RCPT defers that recipient."""
        self.mx("example.com", (10, "mx1.example.com", "127.0.0.2"))
        t = self.transport({"127.0.0.2": self.sink(rcpt={"bob@example.com": 451})})
        [result] = await self.send(t, ["bob@example.com"])
        self.assertEqual(result.status, DEFERRED)
        self.assertIn("mx1.example.com: 451", result.details)

    async def test_mixed_rcpt_codes(self):
        """One RCPT refused, one accepted: one failed, one delivered in the same transaction."""
        self.mx("example.com", (10, "mx1.example.com", "127.0.0.2"))
        sink = self.sink(rcpt={"bob@example.com": 550})
        t = self.transport({"127.0.0.2": sink})
        results = await self.send(t, ["bob@example.com", "carol@example.com"])
        self.assertEqual([r.status for r in results], [FAILED, DELIVERED])
        self.assertEqual(sink.transactions[0].rcpts, ["carol@example.com"])
        self.assertEqual(sink.transactions[0].data, MESSAGE)

    async def test_gotcha13_all_rcpts_refused(self):
        """Every RCPT refused ("No recipients accepted"): each classified by its own code."""
        self.mx("example.com", (10, "mx1.example.com", "127.0.0.2"))
        sink = self.sink(rcpt={"bob@example.com": 550, "carol@example.com": 451})
        t = self.transport({"127.0.0.2": sink})
        results = await self.send(t, ["bob@example.com", "carol@example.com"])
        self.assertEqual([r.status for r in results], [FAILED, DEFERRED])
        self.assertIn("550", results[0].details)
        self.assertIn("451", results[1].details)
        self.assertIsNone(sink.transactions[0].data)

    async def test_mail_from_refused(self):
        """A 5xx to MAIL fails every recipient."""
        self.mx("example.com", (10, "mx1.example.com", "127.0.0.2"))
        t = self.transport({"127.0.0.2": self.sink(replies={"MAIL": 553})})
        results = await self.send(t, ["bob@example.com", "carol@example.com"])
        self.assertEqual([r.status for r in results], [FAILED, FAILED])
        self.assertIn("Rejected by mx1.example.com: 553", results[0].details)

    async def test_end_of_data_reply(self):
        """The reply after the data decides every accepted recipient (4xx or 5xx)."""
        self.mx("example.com", (10, "mx1.example.com", "127.0.0.2"))
        self.mx("example.org", (10, "mx2.example.org", "127.0.0.3"))
        t = self.transport({"127.0.0.2": self.sink(replies={"DATA": 554}),
                            "127.0.0.3": self.sink(replies={"DATA": 452})})
        results = await self.send(t, ["bob@example.com", "bob@example.org"])
        self.assertEqual([r.status for r in results], [FAILED, DEFERRED])
        self.assertIn("Rejected by mx1.example.com: 554", results[0].details)
        self.assertIn("mx2.example.org: 452", results[1].details)

    async def test_ehlo_refused_keeps_code(self):
        """A 421 to EHLO is temporary (Twisted would report a permanent 502)."""
        self.mx("example.com", (10, "mx1.example.com", "127.0.0.2"))
        t = self.transport({"127.0.0.2": self.sink(replies={"EHLO": 421})})
        [result] = await self.send(t, ["bob@example.com"])
        self.assertEqual(result.status, DEFERRED)
        self.assertIn("mx1.example.com: 421", result.details)

    async def test_gotcha11_bytes_identical(self):
        """CRLF, dot-led lines and 8-bit bytes reach the receiver byte for byte."""
        self.mx("example.com", (10, "mx1.example.com", "127.0.0.2"))
        sink = self.sink()
        t = self.transport({"127.0.0.2": sink})
        message = MESSAGE + b"caf\xc3\xa9\r\n.\r\n..\r\n"
        await self.send(t, ["bob@example.com"], message=message)
        self.assertEqual(sink.transactions[0].data, message)

    async def test_gotcha12_dot_at_chunk_boundary(self):
        """A "." line starting exactly at a 16 KiB chunk boundary is still dot-stuffed."""
        self.assertEqual(basic.FileSender.CHUNK_SIZE, 16384)
        message = boundary_message()
        lf = message.replace(b"\r\n", b"\n")
        self.assertEqual((lf[16383:16385], lf[32767:32770]), (b"\n.", b"\n.\n"))
        self.mx("example.com", (10, "mx1.example.com", "127.0.0.2"))
        sink = self.sink()
        t = self.transport({"127.0.0.2": sink})
        [result] = await self.send(t, ["bob@example.com"], message=message)
        self.assertEqual(result.status, DELIVERED)
        self.assertEqual(sink.transactions[0].data, message)

    async def test_two_domains_two_transactions(self):
        """Recipients of two domains: one transaction each; results in the given order."""
        self.mx("example.com", (10, "mx1.example.com", "127.0.0.2"))
        self.mx("example.org", (10, "mx2.example.org", "127.0.0.3"))
        com, org = self.sink(), self.sink()
        t = self.transport({"127.0.0.2": com, "127.0.0.3": org})
        rcpts = ["a@example.org", "b@example.com", "c@EXAMPLE.org"]
        results = await self.send(t, rcpts)
        self.assertEqual([r.rcpt for r in results], rcpts)
        self.assertEqual([r.status for r in results], [DELIVERED] * 3)
        self.assertEqual([txn.rcpts for txn in com.transactions], [["b@example.com"]])
        self.assertEqual([txn.rcpts for txn in org.transactions],
                         [["a@example.org", "c@EXAMPLE.org"]])


class ConnectionTests(OutboundTestCase):
    async def test_gotcha14_connection_refused(self):
        """Nothing listening on the host's address: deferred, naming the host."""
        self.mx("example.com", (10, "mx1.example.com", "127.0.0.3"))
        t = self.transport({"127.0.0.2": self.sink()})  # only to pick a port
        [result] = await self.send(t, ["bob@example.com"])
        self.assertEqual(result.status, DEFERRED)
        self.assertIn("mx1.example.com: Connection was refused", result.details)

    async def test_closed_at_connect(self):
        """A server that hangs up before its greeting: deferred."""
        self.mx("example.com", (10, "mx1.example.com", "127.0.0.2"))
        t = self.transport({"127.0.0.2": self.sink(behaviour="close")})
        [result] = await self.send(t, ["bob@example.com"])
        self.assertEqual(result.status, DEFERRED)
        self.assertIn("mx1.example.com: Connection was closed", result.details)

    async def test_silent_server_times_out(self):
        """A server that never answers: deferred "Connection timed out to <host>"."""
        self.mx("example.com", (10, "mx1.example.com", "127.0.0.2"))
        t = self.transport({"127.0.0.2": self.sink(behaviour="silent")}, timeout=0.5)
        [result] = await self.send(t, ["bob@example.com"])
        self.assertEqual(result, RcptResult(
            "bob@example.com", DEFERRED,
            "All MX servers for example.com unreachable: Connection timed out to mx1.example.com"))

    async def test_starttls_self_signed(self):
        """STARTTLS with a self-signed certificate: TLS used (SNI = MX host), delivered."""
        self.mx("example.com", (10, "mx1.example.com", "127.0.0.2"))
        sink = self.sink(tls=self.tls_pair())
        t = self.transport({"127.0.0.2": sink})
        [result] = await self.send(t, ["bob@example.com"])
        self.assertEqual(result.status, DELIVERED)
        [txn] = sink.transactions
        self.assertEqual((txn.tls, txn.helo, txn.data), (True, HELO, MESSAGE))
        self.assertEqual(sink.server_names, [b"mx1.example.com"])

    async def test_starttls_broken(self):
        """A failed STARTTLS handshake defers that host; no plaintext retry on it."""
        self.mx("example.com", (10, "mx1.example.com", "127.0.0.2"))
        sink = self.sink(behaviour="badtls", tls=self.tls_pair())
        t = self.transport({"127.0.0.2": sink})
        [result] = await self.send(t, ["bob@example.com"])
        self.assertEqual(result.status, DEFERRED)
        self.assertIn("mx1.example.com: TLS failed: ", result.details)
        self.assertEqual((sink.connections, sink.transactions), (1, []))

    async def test_starttls_reply_injection(self):
        """Plain-text bytes after the STARTTLS 220 are dropped, not read as replies over TLS."""
        self.mx("example.com", (10, "mx1.example.com", "127.0.0.2"))
        sink = self.sink(behaviour="forgetls", tls=self.tls_pair())
        t = self.transport({"127.0.0.2": sink})
        [result] = await self.send(t, ["bob@example.com"])
        self.assertEqual(result.status, DELIVERED)
        [txn] = sink.transactions
        self.assertEqual((txn.tls, txn.rcpts, txn.data), (True, ["bob@example.com"], MESSAGE))


class MxOrderTests(OutboundTestCase):
    async def test_preference_order(self):
        """MX 20 b and 10 a: a is tried first (and alone, as it accepts)."""
        self.mx("example.com", (20, "b.example.com", "127.0.0.3"),
                (10, "a.example.com", "127.0.0.2"))
        a, b = self.sink(), self.sink()
        t = self.transport({"127.0.0.2": a, "127.0.0.3": b})
        [result] = await self.send(t, ["bob@example.com"])
        self.assertEqual(result.details, "a.example.com: 250 2.0.0 sink ok")
        self.assertEqual((len(a.transactions), b.connections), (1, 0))

    async def test_temp_then_ok(self):
        """[mx1 451, mx2 ok]: delivered via mx2."""
        self.mx("example.com", (10, "mx1.example.com", "127.0.0.2"),
                (20, "mx2.example.com", "127.0.0.3"))
        mx2 = self.sink()
        t = self.transport({"127.0.0.2": self.sink(rcpt={"bob@example.com": 451}),
                            "127.0.0.3": mx2})
        [result] = await self.send(t, ["bob@example.com"])
        self.assertEqual((result.status, result.details),
                         (DELIVERED, "mx2.example.com: 250 2.0.0 sink ok"))
        self.assertEqual(mx2.transactions[0].data, MESSAGE)

    async def test_permanent_does_not_stop_next_host(self):
        """[mx1 550, mx2 ok]: a permanent refusal on mx1 still tries mx2."""
        self.mx("example.com", (10, "mx1.example.com", "127.0.0.2"),
                (20, "mx2.example.com", "127.0.0.3"))
        t = self.transport({"127.0.0.2": self.sink(rcpt={"bob@example.com": 550}),
                            "127.0.0.3": self.sink()})
        [result] = await self.send(t, ["bob@example.com"])
        self.assertEqual(result.status, DELIVERED)

    async def test_temp_then_permanent_failed(self):
        """[mx1 451, mx2 550]: failed, both hosts in the details."""
        self.mx("example.com", (10, "mx1.example.com", "127.0.0.2"),
                (20, "mx2.example.com", "127.0.0.3"))
        t = self.transport({"127.0.0.2": self.sink(rcpt={"bob@example.com": 451}),
                            "127.0.0.3": self.sink(rcpt={"bob@example.com": 550})})
        [result] = await self.send(t, ["bob@example.com"])
        self.assertEqual(result.status, FAILED)
        self.assertEqual(result.details,
                         "All MX servers for example.com unreachable: mx1.example.com: 451 "
                         "4.3.0 sink says try later; Rejected by mx2.example.com: 550 5.7.1 "
                         "sink says no")

    async def test_all_temporary(self):
        """[mx1, mx2, mx3 all temporary]: deferred, each host named with its error."""
        self.mx("example.com", (10, "mx1.example.com", "127.0.0.2"),
                (20, "mx2.example.com", "127.0.0.3"), (30, "mx3.example.com", "127.0.0.4"))
        t = self.transport({"127.0.0.2": self.sink(rcpt={"bob@example.com": 451}),
                            "127.0.0.3": self.sink(behaviour="close")})
        [result] = await self.send(t, ["bob@example.com"])
        self.assertEqual(result.status, DEFERRED)
        self.assertTrue(result.details.startswith("All MX servers for example.com unreachable: "))
        for part in ["mx1.example.com: 451", "mx2.example.com: Connection was closed",
                     "mx3.example.com: Connection was refused"]:
            self.assertIn(part, result.details)

    async def test_only_pending_recipients_retried(self):
        """Recipients accepted by mx1 are not sent again to mx2."""
        self.mx("example.com", (10, "mx1.example.com", "127.0.0.2"),
                (20, "mx2.example.com", "127.0.0.3"))
        mx1, mx2 = self.sink(rcpt={"carol@example.com": 451}), self.sink()
        t = self.transport({"127.0.0.2": mx1, "127.0.0.3": mx2})
        results = await self.send(t, ["bob@example.com", "carol@example.com"])
        self.assertEqual([r.status for r in results], [DELIVERED, DELIVERED])
        self.assertEqual(mx1.transactions[0].rcpts, ["bob@example.com"])
        self.assertEqual(mx2.transactions[0].rcpts, ["carol@example.com"])


class ResolutionTests(OutboundTestCase):
    async def test_implicit_mx(self):
        """No MX but an A record: the domain host itself receives the mail."""
        self.dns.add_a("example.com", "127.0.0.2")
        sink = self.sink()
        t = self.transport({"127.0.0.2": sink})
        plan = await t.plan(["bob@example.com"])
        self.assertEqual(plan.routes[0].hosts, ("example.com",))
        [result] = await t.deliver(SENDER, plan, MESSAGE)
        self.assertEqual(result.details, "example.com: 250 2.0.0 sink ok")

    async def test_nxdomain(self):
        """NXDOMAIN: the plan lists the domain as missing, its recipient fails, and no
        address lookup is made for it."""
        self.mx("example.com", (10, "mx1.example.com", "127.0.0.2"))
        t = self.transport({"127.0.0.2": self.sink()})
        plan = await t.plan(["bob@example.com", "x@nowhere.example"])
        text = "550 5.1.2 nowhere.example: no such domain"
        self.assertEqual(plan.missing, [("nowhere.example", text)])
        results = await t.deliver(SENDER, plan, MESSAGE)
        self.assertEqual(results[1], RcptResult("x@nowhere.example", FAILED, text))
        self.assertEqual([q for q in self.dns.queries if q[0] == "nowhere.example"],
                         [("nowhere.example", 15)])

    async def test_null_mx(self):
        """A Null MX (RFC 7505): missing, 556 5.1.10, nothing connects."""
        self.dns.add_mx("null.example", 0, ".")
        sink = self.sink()
        t = self.transport({"127.0.0.2": sink})
        plan = await t.plan(["x@null.example"])
        text = "556 5.1.10 null.example does not accept mail (null MX, RFC 7505)"
        self.assertEqual(plan.missing, [("null.example", text)])
        self.assertEqual(await t.deliver(SENDER, plan, MESSAGE),
                         [RcptResult("x@null.example", FAILED, text)])
        self.assertEqual(sink.connections, 0)

    async def test_no_mail_server(self):
        """A name with neither MX nor A/AAAA (empty answers): missing, failed."""
        self.dns.add_txt("nomx.example", "v=spf1 -all")
        t = self.transport({"127.0.0.2": self.sink()})
        plan = await t.plan(["x@nomx.example"])
        text = ("550 5.1.2 No mail server found for domain nomx.example "
                "(no MX, A or AAAA record)")
        self.assertEqual(plan.missing, [("nomx.example", text)])
        [result] = await t.deliver(SENDER, plan, MESSAGE)
        self.assertEqual(result, RcptResult("x@nomx.example", FAILED, text))

    async def test_dns_failure(self):
        """SERVFAIL for the domain: its recipients are deferred, and it is not "missing"."""
        self.dns.add_servfail("broken.example")
        t = self.transport({"127.0.0.2": self.sink()})
        plan = await t.plan(["bob@broken.example"])
        self.assertEqual(plan.missing, [])
        [result] = await t.deliver(SENDER, plan, MESSAGE)
        self.assertEqual(result.status, DEFERRED)
        self.assertTrue(result.details.startswith("DNS failure for broken.example: "))

    async def test_ipv6_disabled_aaaa_only(self):
        """enable_ipv6 false and an AAAA-only MX host: skipped, nothing connects."""
        self.dns.add_mx("example.com", 10, "mx6.example.com")
        self.dns.add_aaaa("mx6.example.com", "::1")
        sink = self.sink()
        t = self.transport({"127.0.0.2": sink})
        [result] = await self.send(t, ["bob@example.com"])
        self.assertEqual(result.status, DEFERRED)
        self.assertIn("mx6.example.com: no A record (enable_ipv6 = false); skipping",
                      result.details)
        self.assertEqual(sink.connections, 0)

    async def test_ipv6_enabled_prefers_aaaa(self):
        """enable_ipv6 true: the AAAA address is used when published."""
        self.dns.add_mx("example.com", 10, "mx6.example.com")
        self.dns.add_aaaa("mx6.example.com", "::1")
        self.dns.add_a("mx6.example.com", "127.0.0.2")
        v6, v4 = self.sink(), self.sink()
        t = self.transport({"::1": v6, "127.0.0.2": v4}, ipv6=True)
        [result] = await self.send(t, ["bob@example.com"])
        self.assertEqual(result.status, DELIVERED)
        self.assertEqual((len(v6.transactions), v4.connections), (1, 0))

    async def test_host_lookup_failure(self):
        """An MX host whose A lookup fails: "<host>: DNS lookup failed: ..."."""
        self.dns.add_mx("example.com", 10, "mx1.example.com")
        self.dns.add_servfail("mx1.example.com")
        t = self.transport({"127.0.0.2": self.sink()})
        [result] = await self.send(t, ["bob@example.com"])
        self.assertEqual(result.status, DEFERRED)
        self.assertIn("mx1.example.com: DNS lookup failed: ", result.details)

    async def test_invalid_addresses(self):
        """Bad recipient syntax fails before any lookup; a bad sender fails everyone."""
        self.mx("example.com", (10, "mx1.example.com", "127.0.0.2"))
        sink = self.sink()
        t = self.transport({"127.0.0.2": sink})
        results = await self.send(t, ["no-at-sign", "bob@example.com"])
        self.assertEqual([r.status for r in results], [FAILED, DELIVERED])
        self.assertTrue(results[0].details.startswith("Invalid recipient address 'no-at-sign': "))
        [result] = await self.send(t, ["bob@example.com"], mail_from="bad sender@x.com")
        self.assertEqual(result.status, FAILED)
        self.assertTrue(result.details.startswith("Invalid sender address 'bad sender@x.com': "))
        self.assertEqual(sink.connections, 1)
