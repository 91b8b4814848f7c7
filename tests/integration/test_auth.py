"""Tests for aimx.auth (resolver, DKIM, SPF, verify_inbound) against a real loopback DNS.

Every lookup goes from dnspython (in a thread) to aimx.loopback.dns.FixtureDNS on 127.0.0.1,
selected with an AIMX_NAMESERVERS value; nothing is patched. The resolver's configuration is
tested without DNS in tests.test_auth.
"""

import socket

import dkim as dkimpy
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import spf as pyspf
from twisted.internet import defer, reactor, task, threads
from twisted.trial.unittest import TestCase

from aimx.auth import dkim, spf
from aimx.auth.resolver import DnsNoDomain, DnsNoRecord, DnsTempError, Resolver
from aimx.auth.verify import verify_inbound
from aimx.core import trust
from aimx.core.authresults import AuthResults
from aimx.core.config import Config, MailboxConfig
from aimx.loopback.dns import FixtureDNS, from_args
from tests.test_auth import KEY_TXT, PRIVATE_PEM, author, mail, signed


def signed_with(raw: bytes, domain: str, selector: str = "sel", **options) -> bytes:
    """C{raw} signed by dkimpy with its own options (C{signature_algorithm}, C{length},
    C{include_headers})."""
    return dkimpy.sign(raw, selector.encode(), domain.encode(), PRIVATE_PEM, **options) + raw


def identity_of(raw: bytes):
    """The identity fields of a message, as the ingest chain parses them."""
    from aimx.core.message import parse_message

    return parse_message(raw).identity


class FixtureTestCase(TestCase):
    """Starts a FixtureDNS and a resolver pointed at it."""

    def setUp(self):
        self.dns = FixtureDNS(reactor)
        self.dns.start()
        self.addCleanup(self.dns.stop)
        self.resolver = Resolver.from_env({"AIMX_NAMESERVERS": self.dns.nameservers})

    def call(self, f, *args, **kwargs) -> defer.Deferred:
        """Run blocking DNS work in a thread while the reactor serves the fixture."""
        return threads.deferToThread(f, *args, **kwargs)


class FixtureDNSTests(FixtureTestCase):
    def query(self, name, rdtype, via=dns.query.udp):
        host, port = self.dns.nameservers.split(":")
        return self.call(via, dns.message.make_query(name, rdtype), host, port=int(port),
                         timeout=5)

    async def test_udp_and_tcp(self):
        """The same port answers over UDP and TCP; long TXT values are split at 255 bytes."""
        self.dns.add_txt("k.example.com", "a" * 600)
        for via in (dns.query.udp, dns.query.tcp):
            answer = (await self.query("k.example.com", "TXT", via)).answer[0]
            self.assertEqual([len(s) for s in answer[0].strings], [255, 255, 90])

    async def test_rcodes(self):
        """Unknown names are NXDOMAIN; a known name without the type is an empty NOERROR."""
        self.dns.add_a("host.example.com", "192.0.2.1")
        missing = await self.query("nope.example.com", "A")
        self.assertEqual(missing.rcode(), dns.rcode.NXDOMAIN)
        empty = await self.query("HOST.example.com", "TXT")
        self.assertEqual((empty.rcode(), empty.answer), (dns.rcode.NOERROR, []))
        self.dns.add_servfail("host.example.com")
        failing = await self.query("host.example.com", "A")
        self.assertEqual(failing.rcode(), dns.rcode.SERVFAIL)

    async def test_cname_chain(self):
        """An alias is answered with its CNAMEs and its target's records; a loop or
        a chain of more than 8 is SERVFAIL; a chain to an unknown name is NXDOMAIN."""
        self.dns.add_cname("alias.example.com", "mid.example.net")
        self.dns.add_cname("mid.example.net", "host.example.org")
        self.dns.add_a("host.example.org", "192.0.2.1")
        answer = (await self.query("alias.example.com", "A")).answer
        self.assertEqual([(r.name.to_text(), r.rdtype) for r in answer],
                         [("alias.example.com.", dns.rdatatype.CNAME),
                          ("mid.example.net.", dns.rdatatype.CNAME),
                          ("host.example.org.", dns.rdatatype.A)])
        self.dns.add_cname("loop.example.com", "loop.example.com")
        self.assertEqual((await self.query("loop.example.com", "A")).rcode(),
                         dns.rcode.SERVFAIL)
        self.dns.add_cname("dangling.example.com", "nowhere.example.com")
        self.assertEqual((await self.query("dangling.example.com", "A")).rcode(),
                         dns.rcode.NXDOMAIN)

    async def test_stop_closes_tcp(self):
        """stop() closes open TCP connections and fires once they are gone."""
        fixture = FixtureDNS(reactor)
        fixture.start()
        port = int(fixture.nameservers.split(":")[1])
        sock = await self.call(socket.create_connection, ("127.0.0.1", port))
        self.addCleanup(sock.close)
        while not fixture._factory.connections:  # let the reactor accept it
            await task.deferLater(reactor, 0, lambda: None)
        await fixture.stop()
        self.assertEqual(fixture._factory.connections, [])


    async def test_from_args(self):
        """The program form serves its --txt records; VALUE may contain '='."""
        server = from_args(reactor, ["--txt", "_dmarc.x.test=v=DMARC1; p=reject"])
        self.addCleanup(server.stop)
        resolver = Resolver.from_env({"AIMX_NAMESERVERS": server.nameservers})
        self.assertEqual(await self.call(resolver.txt, "_dmarc.x.test"), ["v=DMARC1; p=reject"])

    async def test_from_args_mx_and_a(self):
        """--mx and --a publish a mail route."""
        server = from_args(reactor, ["--mx", "x.test=mx.x.test", "--a", "mx.x.test=127.0.0.1"])
        self.addCleanup(server.stop)
        resolver = Resolver.from_env({"AIMX_NAMESERVERS": server.nameservers})
        self.assertEqual(await self.call(resolver.mx, "x.test"), [(10, "mx.x.test")])
        self.assertEqual(await self.call(resolver.addresses, "mx.x.test"), ["127.0.0.1"])

    def test_from_args_needs_value(self):
        """A --txt without '=' is a usage error."""
        self.assertRaises(SystemExit, from_args, reactor, ["--txt", "x.test"])


class ResolverTests(FixtureTestCase):
    async def test_txt_strings_joined(self):
        """A multi-string TXT record comes back as one string; records stay separate."""
        self.dns.add_txt("example.com", "v=spf1 ", "-all")
        self.dns.add_txt("example.com", "other")
        self.assertEqual(sorted(await self.call(self.resolver.txt, "Example.COM.")),
                         ["other", "v=spf1 -all"])

    async def test_long_txt(self):
        """A TXT value longer than 255 bytes (published as several strings) comes back whole."""
        value = "".join(chr(97 + i % 26) for i in range(3000))
        self.dns.add_txt("big.example.com", value)
        self.assertEqual(await self.call(self.resolver.txt, "big.example.com"), [value])

    async def test_no_record(self):
        """NXDOMAIN and an empty answer are both DnsNoRecord; NXDOMAIN is DnsNoDomain."""
        self.dns.add_a("host.example.com", "192.0.2.1")
        await self.assertFailure(self.call(self.resolver.txt, "missing.example.com"),
                                 DnsNoDomain)
        e = await self.assertFailure(self.call(self.resolver.txt, "host.example.com"),
                                     DnsNoRecord)
        self.assertNotIsInstance(e, DnsNoDomain)

    async def test_null_mx(self):
        """A Null MX (RFC 7505) comes back as the host "."."""
        self.dns.add_mx("null.example.com", 0, ".")
        self.assertEqual(await self.call(self.resolver.mx, "null.example.com"), [(0, ".")])

    async def test_invalid_name(self):
        """A name DNS cannot express has no record."""
        await self.assertFailure(self.call(self.resolver.txt, "a..example.com"), DnsNoRecord)

    async def test_cname(self):
        """The records at the end of a CNAME chain come back for the alias (dnspython
        follows the chain inside the answer); a chain that ends nowhere has no record,
        a looping one is a temporary error."""
        self.dns.add_cname("alias.example.com", "target.example.net")
        self.dns.add_txt("target.example.net", "v=spf1 -all")
        self.dns.add_a("target.example.net", "192.0.2.7")
        self.assertEqual(await self.call(self.resolver.txt, "alias.example.com"),
                         ["v=spf1 -all"])
        self.assertEqual(await self.call(self.resolver.addresses, "alias.example.com"),
                         ["192.0.2.7"])
        self.dns.add_cname("dangling.example.com", "nowhere.example.com")
        await self.assertFailure(self.call(self.resolver.txt, "dangling.example.com"),
                                 DnsNoRecord)
        self.dns.add_cname("loop.example.com", "loop.example.com")
        await self.assertFailure(self.call(self.resolver.txt, "loop.example.com"),
                                 DnsTempError)

    async def test_servfail(self):
        """SERVFAIL is DnsTempError."""
        self.dns.add_servfail("broken.example.com")
        await self.assertFailure(self.call(self.resolver.txt, "broken.example.com"),
                                 DnsTempError)

    async def test_changes_seen_live(self):
        """Records added after a lookup are seen by the next one (TTL 0: not cached)."""
        await self.assertFailure(self.call(self.resolver.txt, "late.example.com"), DnsNoRecord)
        self.dns.add_txt("late.example.com", "now")
        self.assertEqual(await self.call(self.resolver.txt, "late.example.com"), ["now"])

    async def test_cached_for_ttl(self):
        """An answer with a TTL is reused for that long without asking again."""
        self.dns.add_txt("cached.example.com", "first", ttl=300)
        self.assertEqual(await self.call(self.resolver.txt, "cached.example.com"), ["first"])
        self.dns.clear()
        self.dns.add_txt("cached.example.com", "second", ttl=300)
        self.assertEqual(await self.call(self.resolver.txt, "cached.example.com"), ["first"])

    async def test_mx(self):
        """MX records come back sorted by preference, hosts without the final dot."""
        self.dns.add_mx("example.com", 20, "b.example.com")
        self.dns.add_mx("example.com", 10, "a.example.com")
        self.assertEqual(await self.call(self.resolver.mx, "example.com"),
                         [(10, "a.example.com"), (20, "b.example.com")])

    async def test_addresses(self):
        """A and AAAA lookups."""
        self.dns.add_a("mx.example.com", "192.0.2.25")
        self.dns.add_aaaa("mx.example.com", "2001:db8::25")
        self.assertEqual(await self.call(self.resolver.addresses, "mx.example.com"),
                         ["192.0.2.25"])
        self.assertEqual(await self.call(self.resolver.addresses, "mx.example.com", ipv6=True),
                         ["2001:db8::25"])

    async def test_ptr(self):
        """PTR lookups of a reverse name."""
        self.dns.add_ptr("1.2.0.192.in-addr.arpa", "mx.example.com")
        self.assertEqual(await self.call(self.resolver.ptr, "1.2.0.192.in-addr.arpa"),
                         ["mx.example.com"])

    async def test_key_lookup(self):
        """KeyLookup returns the key bytes, None when absent or failing, and remembers
        which names failed temporarily."""
        self.dns.add_txt("sel._domainkey.example.com", KEY_TXT)
        self.dns.add_servfail("bad._domainkey.example.com")
        f = dkim.KeyLookup(self.resolver.txt_bytes)
        self.assertEqual(await self.call(f, b"sel._domainkey.example.com."),
                         KEY_TXT.encode("ascii"))
        self.assertIsNone(await self.call(f, b"nokey._domainkey.example.com."))
        self.assertIsNone(await self.call(f, b"bad._domainkey.example.com."))
        self.assertIsNone(await self.call(f, b"\xff._domainkey.example.com."))
        self.assertEqual(f.temporary, {b"bad._domainkey.example.com"})


def result(domain, selector="sel", outcome="pass", aligned=True, **extra):
    """The DkimResult a default signature by C{domain} gives (fields compared below)."""
    return (domain, selector, outcome, aligned) + tuple(extra.values())


class DkimTests(FixtureTestCase):
    def setUp(self):
        super().setUp()
        self.dns.add_txt("sel._domainkey.example.com", KEY_TXT)

    async def verify(self, raw, aligned_to="example.com", **kwargs):
        results = await self.call(
            dkim.verify, raw, dkim.KeyLookup(self.resolver.txt_bytes),
            lambda d: d == aligned_to, **kwargs)
        return tuple((r.domain, r.selector, r.result, r.aligned) for r in results)

    async def test_pass(self):
        """Case 7: a signature whose key is published verifies."""
        self.assertEqual(await self.verify(signed(mail(), "example.com")),
                         (result("example.com"),))

    async def test_body_changed(self):
        """Case 7: one changed body byte fails."""
        raw = signed(mail(), "example.com").replace(b"Hello there.", b"Hello therE.")
        self.assertEqual(await self.verify(raw), (result("example.com", outcome="fail"),))

    async def test_key_absent(self):
        """Case 7: a signature whose key is not in DNS fails."""
        raw = signed(mail(), "example.com", selector="gone")
        self.assertEqual(await self.verify(raw), (result("example.com", "gone", "fail"),))

    async def test_key_lookup_error(self):
        """A temporary DNS error fetching the key is a temperror."""
        self.dns.add_servfail("tmp._domainkey.example.com")
        raw = signed(mail(), "example.com", selector="tmp")
        self.assertEqual(await self.verify(raw), (result("example.com", "tmp", "temperror"),))

    async def test_two_signatures_one_broken(self):
        """Case 7: two signatures, the first broken: each is verified, the result is pass."""
        good = signed(mail(), "example.com")
        broken = signed(good, "example.com", selector="gone")
        self.assertEqual(await self.verify(broken),
                         (result("example.com", "gone", "fail"), result("example.com")))

    async def test_malformed_signature(self):
        """A malformed DKIM-Signature header is a failing signature; others still verify."""
        raw = b"DKIM-Signature: v=1; junk\r\n" + signed(mail(), "example.com")
        self.assertEqual(await self.verify(raw), (("", "", "fail", False),
                                                  result("example.com")))

    async def test_unsigned_and_garbage(self):
        """No signature, or an unparsable message, gives no results."""
        for raw in (mail(), b"", b"garbage", b"\xff\xfe\x00\r\n\r\n"):
            self.assertEqual(await self.verify(raw), (), raw[:20])

    async def test_rsa_sha1_fails(self):
        """RFC 8301: an rsa-sha1 signature fails, even with the right key; no lookup."""
        raw = signed_with(mail(), "example.com", signature_algorithm=b"rsa-sha1")
        before = len(self.dns.queries)
        [r] = await self.call(dkim.verify, raw, dkim.KeyLookup(self.resolver.txt_bytes),
                              lambda d: True)
        self.assertEqual((r.result, r.algorithm, r.why), ("fail", "rsa-sha1",
                                                          "rsa-sha1 (RFC 8301)"))
        self.assertEqual(len(self.dns.queries), before)

    async def test_partial_body(self):
        """A signature whose l= is shorter than the body passes but is marked partial."""
        raw = signed_with(mail(), "example.com", length=True)
        [whole] = await self.call(dkim.verify, raw, dkim.KeyLookup(self.resolver.txt_bytes),
                                  lambda d: True)
        self.assertEqual((whole.result, whole.partial_body), ("pass", False))
        appended = raw + b"Also wire the money to account 666.\r\n"
        [part] = await self.call(dkim.verify, appended,
                                 dkim.KeyLookup(self.resolver.txt_bytes), lambda d: True)
        self.assertEqual((part.result, part.partial_body), ("pass", True))

    async def test_signature_cap_aligned_first(self):
        """At most five signatures are evaluated: the aligned ones first, then in order."""
        raw = mail()
        for i in range(6):
            raw = signed(raw, "other.example", selector=f"o{i}")
        raw = signed(raw, "example.com")  # aligned, and on top
        shuffled = signed(raw, "other.example", selector="o9")
        results = await self.verify(shuffled)
        outcomes = [r[2] for r in results]
        self.assertEqual(outcomes.count("skipped"), len(results) - 5)
        self.assertEqual(results[1], result("example.com"))  # the aligned one was evaluated
        self.assertEqual(outcomes[0], "fail")  # the first unaligned one in header order

    async def test_lookups_deduplicated(self):
        """Signatures sharing a key name cost one lookup."""
        raw = mail()
        for _ in range(4):
            raw = signed(raw, "example.com", selector="gone")
        before = len(self.dns.queries)
        await self.verify(raw)
        lookups = [q for q in self.dns.queries[before:] if q[0].startswith("gone.")]
        self.assertEqual(len(lookups), 1)

    async def test_sign_lf(self):
        """A signature made with linesep=LF on an LF message verifies."""
        raw = mail().replace(b"\r\n", b"\n")
        header = dkim.sign(raw, private_key_pem=PRIVATE_PEM, selector="sel",
                           domain="example.com", linesep=b"\n")
        self.assertTrue(header.startswith(b"DKIM-Signature: ") and header.endswith(b"\n"))
        self.assertNotIn(b"\r", header)
        self.assertIn(b"c=relaxed/relaxed", header)
        self.assertIn(b"a=rsa-sha256", header)
        self.assertEqual(await self.verify(header + raw), (result("example.com"),))

    def test_sign_bad_key(self):
        """Signing with an unusable key raises ValueError."""
        self.assertRaises(ValueError, dkim.sign, mail(), private_key_pem=b"nope",
                          selector="sel", domain="example.com")


class SpfTests(FixtureTestCase):
    def check(self, ip="127.0.0.1", mail_from="a@example.com", helo="mx.example.com",
              resolver=None):
        return self.call(spf.check, ip, mail_from, helo, resolver or self.resolver)

    async def test_results(self):
        """Case 4: pass, fail, softfail and neutral records."""
        for record, result in [("v=spf1 ip4:127.0.0.1 -all", "pass"), ("v=spf1 -all", "fail"),
                               ("v=spf1 ~all", "softfail"), ("v=spf1 ?all", "neutral")]:
            self.dns.clear()
            self.dns.add_txt("example.com", record)
            self.assertEqual(await self.check(), result, record)

    async def test_no_record(self):
        """Case 4: no TXT record (or only non-SPF TXT) is none."""
        self.assertEqual(await self.check(), "none")
        self.dns.add_txt("example.com", "google-site-verification=x")
        self.assertEqual(await self.check(), "none")

    async def test_permerror(self):
        """Case 4: a syntactically broken record (permerror) is none."""
        self.dns.add_txt("example.com", "v=spf1 ip4:not-an-ip -all")
        self.assertEqual(await self.check(), "none")

    async def test_temperror(self):
        """A DNS error (temperror) is none."""
        self.dns.add_servfail("example.com")
        self.assertEqual(await self.check(), "none")

    async def test_include_a_mx(self):
        """include:, a: and mx: mechanisms resolve through the fixture."""
        self.dns.add_txt("example.com",
                         "v=spf1 include:_spf.example.net a:relay.example.com mx -all")
        self.dns.add_txt("_spf.example.net", "v=spf1 ip4:192.0.2.1 -all")
        self.dns.add_a("relay.example.com", "192.0.2.2")
        self.dns.add_mx("example.com", 10, "mx.example.com")
        self.dns.add_a("mx.example.com", "192.0.2.3")
        for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
            self.assertEqual(await self.check(ip), "pass", ip)
        self.assertEqual(await self.check("192.0.2.4"), "fail")

    async def test_ipv6(self):
        """An IPv6 client matches ip6: and AAAA records of a:."""
        self.dns.add_txt("example.com", "v=spf1 ip6:2001:db8::/64 a:v6.example.com -all")
        self.dns.add_aaaa("v6.example.com", "2001:db8:1::1")
        self.assertEqual(await self.check("2001:db8::7"), "pass")
        self.assertEqual(await self.check("2001:db8:1::1"), "pass")
        self.assertEqual(await self.check("2001:db8:2::1"), "fail")

    async def test_ptr(self):
        """The ptr mechanism uses PTR then A lookups."""
        self.dns.add_txt("example.com", "v=spf1 ptr -all")
        self.dns.add_ptr("5.2.0.192.in-addr.arpa", "host.example.com")
        self.dns.add_a("host.example.com", "192.0.2.5")
        self.assertEqual(await self.check("192.0.2.5"), "pass")

    async def test_bad_ip(self):
        """An IP pyspf cannot parse is none, not an exception."""
        self.assertEqual(await self.check("not-an-ip"), "none")

    def query(self, ip="127.0.0.1", mail_from="a@example.com", helo="mx.example.com"):
        """A query as check() makes it."""
        return spf._Query(i=ip, s=mail_from, h=helo, querytime=spf.QUERY_TIME,
                          resolver=self.resolver)

    async def test_pyspf_global_untouched(self):
        """A check uses our resolver through the query, never pyspf's DNSLookup."""
        self.assertIs(pyspf.DNSLookup, pyspf.DNSLookup_dnspython)
        self.patch(pyspf, "DNSLookup", lambda *args, **kwargs: self.fail("DNSLookup called"))
        self.dns.add_txt("example.com", "v=spf1 a mx ptr -all")
        self.dns.add_a("example.com", "192.0.2.1")
        self.dns.add_mx("example.com", 10, "mx.example.com")
        self.dns.add_a("mx.example.com", "192.0.2.2")
        self.assertEqual(await self.check("192.0.2.2"), "pass")
        self.assertEqual(await self.check(), "fail")

    async def test_answer_shapes(self):
        """dns() answers as pyspf's dnspython driver: TXT 1-tuples of bytes (the strings
        of a record joined), address strings, MX (preference, host), PTR host names."""
        self.dns.add_txt("example.com", "v=spf1 ", "-all")
        self.dns.add_a("example.com", "192.0.2.1")
        self.dns.add_aaaa("example.com", "2001:db8::1")
        self.dns.add_mx("example.com", 10, "mx.example.com")
        self.dns.add_ptr("1.2.0.192.in-addr.arpa", "host.example.com")
        q = self.query()
        answers = await self.call(lambda: [q.dns("Example.COM.", t)
                                           for t in ("TXT", "A", "AAAA", "MX", "SPF")])
        self.assertEqual(answers, [[(b"v=spf1 -all",)], ["192.0.2.1"], ["2001:db8::1"],
                                   [(10, "mx.example.com")], []])
        self.assertEqual(await self.call(q.dns, "1.2.0.192.in-addr.arpa", "PTR"),
                         ["host.example.com"])

    async def test_cached_per_query(self):
        """Each (name, type) is asked once per check, whatever its spelling; a new
        check asks again."""
        self.dns.add_txt("example.com", "v=spf1 -all")
        q = self.query()
        for name in ("example.com", "EXAMPLE.com.", "example.COM"):
            await self.call(q.dns, name, "TXT")
        await self.call(self.query().dns, "example.com", "TXT")
        self.assertEqual(self.dns.queries, [("example.com", 16)] * 2)

    async def test_invalid_names(self):
        """A name with an empty label or a label over 63 octets has no data and sends
        no query (RFC 7208 §4.3), nor counts as a void lookup."""
        q = self.query()
        for name in ("", ".", "a..example.com", "x" * 64 + ".example.com", "é" * 32 + ".com"):
            self.assertEqual(await self.call(q.dns, name, "TXT"), [], name)
        self.assertEqual((self.dns.queries, q.void_lookups), ([], 0))
        self.dns.add_txt("x" * 63 + ".example.com", "v=spf1 -all")
        self.assertEqual(await self.call(q.dns, "x" * 63 + ".example.com", "TXT"),
                         [(b"v=spf1 -all",)])

    async def test_void_lookup_limit(self):
        """RFC 7208 §4.6.4: two void lookups (NXDOMAIN or no data) are allowed, the
        third is a permerror (recorded as none); lookups told not to count do not."""
        self.dns.add_a("empty.example.com", "192.0.2.9")
        two = "v=spf1 a:nx1.example.com mx:empty.example.com ip4:127.0.0.1 -all"
        three = "v=spf1 a:nx1.example.com a:nx2.example.com a:nx3.example.com ip4:127.0.0.1 -all"
        self.dns.add_txt("example.com", two)
        self.assertEqual(await self.check(), "pass")
        self.dns.clear()
        self.dns.add_txt("example.com", three)
        result, _, why = await self.call(self.query().check)
        self.assertEqual(result, "permerror")
        self.assertIn("Void lookup limit of 2 exceeded", why)
        self.assertEqual(await self.check(), "none")
        q = self.query()
        for i in range(5):
            self.assertEqual(await self.call(q.dns, f"nx{i}.example.com", "A", None, True), [])
        self.assertEqual(q.void_lookups, 0)

    async def test_cname(self):
        """A record, an include target and an a: host reached through CNAMEs are
        followed (by the resolver): the check passes as if they were direct."""
        self.dns.add_cname("example.com", "spf.provider.net")
        self.dns.add_txt("spf.provider.net", "v=spf1 include:_spf.example.org -all")
        self.dns.add_cname("_spf.example.org", "_spf2.example.org")
        self.dns.add_txt("_spf2.example.org", "v=spf1 a:relay.example.org -all")
        self.dns.add_cname("relay.example.org", "host.example.org")
        self.dns.add_a("host.example.org", "192.0.2.8")
        self.assertEqual(await self.check("192.0.2.8"), "pass")
        self.assertEqual(await self.check("192.0.2.9"), "fail")

    async def test_cname_loop(self):
        """A CNAME loop is a temperror (the resolver reports it), recorded as none."""
        self.dns.add_cname("example.com", "example.com")
        result, _, _ = await self.call(self.query().check)
        self.assertEqual((result, await self.check()), ("temperror", "none"))

    async def test_temperror_result(self):
        """A temporary failure of any lookup of the check (here an include target's
        record) makes it a temperror, recorded as none."""
        self.dns.add_txt("example.com", "v=spf1 include:_spf.example.net -all")
        self.dns.add_servfail("_spf.example.net")
        q = self.query()
        result, _, why = await self.call(q.check)
        self.assertEqual(result, "temperror")
        self.assertIn("_spf.example.net", why)
        self.assertEqual(await self.check(), "none")

    async def test_time_spent(self):
        """Once the check's time is spent, a lookup not yet made is a temperror."""
        self.dns.add_txt("example.com", "v=spf1 -all")
        q = self.query()
        q.querytime = -1
        await self.assertFailure(self.call(q.dns, "example.com", "TXT"), pyspf.TempError)
        self.assertEqual(self.dns.queries, [])

    async def test_concurrent_resolvers(self):
        """Concurrent checks in threads each use their own resolver."""
        other = FixtureDNS(reactor)
        other.start()
        self.addCleanup(other.stop)
        other.add_txt("example.com", "v=spf1 -all")
        other_resolver = Resolver.from_env({"AIMX_NAMESERVERS": other.nameservers})
        self.dns.add_txt("example.com", "v=spf1 +all")
        results = await defer.gatherResults(
            [self.check(resolver=r) for r in [self.resolver, other_resolver] * 10])
        self.assertEqual(results, ["pass", "fail"] * 10)


class VerifyInboundTests(FixtureTestCase):
    def setUp(self):
        super().setUp()
        for domain in ("example.com", "company.com", "mail.company.com", "attacker.org"):
            self.dns.add_txt(f"sel._domainkey.{domain}", KEY_TXT)

    def verify(self, raw, *, peer_ip="127.0.0.1", mail_from=None, helo=None, identity=None,
               budget=20.0):
        return self.call(verify_inbound, raw, peer_ip=peer_ip, mail_from=mail_from, helo=helo,
                         identity=identity or identity_of(raw), resolver=self.resolver,
                         budget=budget)

    async def test_unsigned_plain(self):
        """Case 1: unsigned mail, no records: none/none/none, and trusted none by default."""
        r = await self.verify(mail(), mail_from="alice@example.com", helo="mx.example.com")
        self.assertEqual((r.dkim, r.spf, r.dmarc, r.signatures), ("none", "none", "none", ()))
        self.assertEqual(trust.evaluate("none", (), identity_of(mail()), r).trusted, "none")

    async def test_ingest_without_ip(self):
        """Case 2: ingest of a mail without Received/From: no IP, spf none."""
        self.dns.add_txt("example.com", "v=spf1 +all")
        r = await self.verify(mail().replace(b"From: Alice <alice@example.com>\r\n", b""),
                              peer_ip="0.0.0.0")
        self.assertEqual((r.spf, r.spf_ip, r.spf_sender, r.dmarc), ("none", None, None, "none"))

    async def test_ingest_fallbacks(self):
        """Case 2: ingest uses the Received IP and the parsed header From for SPF."""
        self.dns.add_txt("example.com", "v=spf1 ip4:203.0.113.5 -all")
        raw = mail("A <a@example.com>", headers=["Received: from x (x [203.0.113.5])"])
        r = await self.verify(raw, peer_ip="0.0.0.0")
        self.assertEqual((r.spf, r.spf_ip, r.spf_sender), ("pass", "203.0.113.5", "a@example.com"))

    async def test_null_sender_helo(self):
        """Case 5: MAIL FROM:<> checks postmaster@<helo>, not the header From."""
        self.dns.add_txt("mail.example.com", "v=spf1 ip4:127.0.0.1 -all")
        self.dns.add_txt("example.com", "v=spf1 -all")
        r = await self.verify(mail(), mail_from="", helo="mail.example.com")
        self.assertEqual((r.spf, r.spf_sender), ("pass", "postmaster@mail.example.com"))

    async def test_envelope_wins(self):
        """Case 6: the envelope sender wins over the header From."""
        self.dns.add_txt("uzyn.com", "v=spf1 ip4:127.0.0.1 -all")
        self.dns.add_txt("example.com", "v=spf1 -all")
        r = await self.verify(mail("alice@example.com"), mail_from="chua@uzyn.com",
                              helo="mx.uzyn.com")
        self.assertEqual((r.spf, r.spf_sender), ("pass", "chua@uzyn.com"))

    async def test_dkim_results(self):
        """Case 7 end to end: pass, fail (changed body, absent key), none, one of two broken."""
        raw = signed(mail(), "example.com")
        self.assertEqual((await self.verify(raw)).dkim, "pass")
        self.assertEqual((await self.verify(raw.replace(b"there", b"thEre"))).dkim, "fail")
        self.assertEqual((await self.verify(signed(mail(), "example.com", "gone"))).dkim, "fail")
        self.assertEqual((await self.verify(mail())).dkim, "none")
        self.assertEqual((await self.verify(signed(raw, "example.com", "gone"))).dkim, "pass")

    async def test_dmarc(self):
        """Case 8: every DMARC variant against _dmarc.example.com "v=DMARC1; p=reject"."""
        self.dns.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
        self.dns.add_txt("other.org", "v=spf1 ip4:127.0.0.1 -all")
        self.dns.add_txt("example.com", "v=spf1 -all")
        cases = [
            ("From example.com, DKIM example.com", signed(mail(), "example.com"), {}, "pass"),
            ("From mail.example.com, DKIM example.com (tree walk)",
             signed(mail("x@mail.example.com"), "example.com"), {}, "pass"),
            ("SPF pass for other.org, no DKIM", mail(), {"mail_from": "x@other.org"}, "fail"),
            ("SPF fail, no DKIM", mail(), {"mail_from": "a@example.com"}, "fail"),
            ("DKIM by attacker.org only", signed(mail(), "attacker.org"), {}, "fail"),
        ]
        for what, raw, kwargs, expected in cases:
            self.assertEqual((await self.verify(raw, **kwargs)).dmarc, expected, what)

    async def test_dmarc_spf_aligned(self):
        """SPF pass for an aligned MAIL FROM domain passes DMARC without DKIM."""
        self.dns.add_txt("_dmarc.example.com", "v=DMARC1; p=none")
        self.dns.add_txt("bounce.example.com", "v=spf1 ip4:127.0.0.1 -all")
        r = await self.verify(mail(), mail_from="b@bounce.example.com")
        self.assertEqual((r.spf, r.dmarc), ("pass", "pass"))

    async def test_dmarc_adkim_strict(self):
        """Case 8: adkim=s with d=example.com and From @mail.example.com fails."""
        self.dns.add_txt("_dmarc.mail.example.com", "v=DMARC1; p=reject; adkim=s")
        r = await self.verify(signed(mail("x@mail.example.com"), "example.com"))
        self.assertEqual((r.dkim, r.dmarc, r.signatures[0].aligned), ("pass", "fail", True))

    async def test_dmarc_no_record(self):
        """Case 8: no DMARC record anywhere is none, even with aligned DKIM."""
        r = await self.verify(signed(mail("x@a.b.c.d.example.com"), "example.com"))
        self.assertEqual((r.dkim, r.dmarc, r.signatures[0].aligned), ("pass", "none", True))

    async def test_dmarc_long_name_walk(self):
        """The walk from a name of five or more labels jumps to its last four labels."""
        self.dns.add_txt("_dmarc.c.d.example.com", "v=DMARC1; p=none")
        r = await self.verify(signed(mail("x@a.b.c.d.example.com"), "example.com"))
        self.assertEqual(r.dmarc, "pass")
        self.dns.clear()
        self.dns.add_txt("sel._domainkey.example.com", KEY_TXT)
        self.dns.add_txt("_dmarc.b.c.d.example.com", "v=DMARC1; p=none")  # skipped by the jump
        r = await self.verify(signed(mail("x@a.b.c.d.example.com"), "example.com"))
        self.assertEqual(r.dmarc, "none")

    async def test_dmarc_ignores_non_dmarc_txt(self):
        """Non-DMARC TXT at _dmarc names are skipped; several DMARC records mean none."""
        self.dns.add_txt("_dmarc.mail.example.com", "hello")
        self.dns.add_txt("_dmarc.example.com", "v=DMARC1; p=none")
        raw = signed(mail("x@mail.example.com"), "example.com")
        r = await self.verify(raw)
        self.assertEqual(r.dmarc, "pass")
        self.dns.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
        r = await self.verify(raw)
        self.assertEqual(r.dmarc, "none")

    async def test_dmarc_dns_error(self):
        """A DNS error during the walk is dmarc fail, flagged as temporary."""
        self.dns.add_servfail("_dmarc.example.com")
        r = await self.verify(signed(mail(), "example.com"))
        self.assertEqual((r.dkim, r.dmarc, r.dmarc_temperror, r.temporary),
                         ("pass", "fail", True, True))

    async def test_dmarc_without_policy(self):
        """A record without a usable p= is no policy: none (RFC 7489 §6.6.3)."""
        for record in ("v=DMARC1; rua=mailto:r@example.com", "v=DMARC1; p=bogus"):
            self.dns.clear()
            self.dns.add_txt("sel._domainkey.example.com", KEY_TXT)
            self.dns.add_txt("_dmarc.example.com", record)
            self.assertEqual((await self.verify(mail())).dmarc, "none", record)

    async def test_dmarc_several_from_addresses(self):
        """Several From mailboxes give no author: dmarc none and nothing aligned."""
        self.dns.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
        raw = signed(mail("alice@example.com, bob@example.com"), "example.com")
        r = await self.verify(raw)
        self.assertEqual((r.dmarc, r.from_domain, r.signatures[0].aligned),
                         ("none", None, False))

    async def test_aligned_key_temperror(self):
        """A temporary failure fetching an aligned signature's key is flagged."""
        self.dns.add_servfail("tmp._domainkey.example.com")
        r = await self.verify(signed(mail(), "example.com", selector="tmp"))
        self.assertEqual((r.dkim, r.aligned_temperror, r.temporary), ("fail", True, True))
        self.dns.add_servfail("tmp._domainkey.attacker.org")
        r = await self.verify(signed(mail(), "attacker.org", selector="tmp"))
        self.assertEqual((r.aligned_temperror, r.temporary), (False, False))

    async def test_budget_spent(self):
        """With the budget spent every lookup is a temporary failure: nothing hangs."""
        self.dns.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
        r = await self.verify(signed(mail(), "example.com"), budget=0)
        self.assertEqual((r.signatures[0].result, r.dmarc, r.temporary),
                         ("temperror", "fail", True))

    async def test_never_raises(self):
        """Hostile input gives results, never an exception."""
        for raw in (b"", b"\x00\xff" * 100, b"DKIM-Signature: d=\xff; s=\x00\r\n\r\n"):
            r = await self.verify(raw, peer_ip="not an ip", mail_from="@", helo="\xff",
                                  identity=author("\x00@\x00"))
            self.assertIsInstance(r, AuthResults)


class TrustTests(FixtureTestCase):
    """Acceptance cases 9-12: trust from real DKIM results and the mailbox policy."""

    senders = ("*@company.com",)

    def setUp(self):
        super().setUp()
        for domain in ("company.com", "mail.company.com", "attacker.org"):
            self.dns.add_txt(f"sel._domainkey.{domain}", KEY_TXT)

    async def trusted(self, from_, domain=None, policy="verified", senders=senders):
        raw = mail(from_)
        if domain:
            raw = signed(raw, domain)
        ident = identity_of(raw)
        results = await self.call(verify_inbound, raw, peer_ip="127.0.0.1",
                                  mail_from=ident.author.addr_spec, helo="mx.test",
                                  identity=ident, resolver=self.resolver)
        return trust.evaluate(policy, senders, ident, results).trusted

    async def test_verified(self):
        """Case 9: allowlisted + aligned DKIM is true; unsigned or not listed is false."""
        self.assertEqual(await self.trusted("boss@company.com", "company.com"), "true")
        self.assertEqual(await self.trusted("boss@company.com"), "false")
        self.assertEqual(await self.trusted("x@other.com", "company.com"), "false")

    async def test_case_insensitive(self):
        """Case 10: upper-case From with either pattern case is true."""
        self.assertEqual(await self.trusted("Boss <BOSS@Company.COM>", "company.com"), "true")
        self.assertEqual(await self.trusted("Boss <BOSS@Company.COM>", "company.com",
                                            senders=("*@Company.com",)), "true")

    async def test_mailbox_overrides(self):
        """Case 11: an empty mailbox list, mailbox trust none, and a mailbox-only policy."""
        cases = [
            (Config(domain="x.test", trust="verified", trusted_senders=self.senders),
             {"trusted_senders": []}, "false"),
            (Config(domain="x.test", trust="verified", trusted_senders=self.senders),
             {"trust": "none"}, "none"),
            (Config(domain="x.test"), {"trust": "verified", "trusted_senders": ["boss@*"]},
             "true"),
        ]
        for config, overrides, expected in cases:
            mailbox = MailboxConfig(name="m", address="m@x.test", owner="root", **overrides)
            trusted = await self.trusted("boss@company.com", "company.com",
                                         config.effective_trust(mailbox),
                                         config.effective_trusted_senders(mailbox))
            self.assertEqual(trusted, expected, overrides)

    async def test_alignment_required(self):
        """Case 12: d=attacker.org for From boss@company.com is false; mail.company.com true."""
        self.assertEqual(await self.trusted("boss@company.com", "attacker.org"), "false")
        self.assertEqual(await self.trusted("boss@company.com", "mail.company.com"), "true")
