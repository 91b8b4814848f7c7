"""DNS verification (aimx.auth.dnsverify) against a real loopback FixtureDNS, lookups in
a thread while the reactor serves it (the pure checks are in tests.test_dnscheck).
"""

from twisted.internet import reactor, threads
from twisted.trial.unittest import TestCase

from aimx.auth import dnsverify
from aimx.auth.resolver import Resolver
from aimx.loopback.dns import FixtureDNS
from aimx.ops.dnscheck import PASS, WARN, Lookup
from tests.test_dnscheck import DOMAIN, KEY, V4, V6, expected


class LookupTests(TestCase):
    """dnsverify against a loopback FixtureDNS."""

    def setUp(self):
        self.dns = FixtureDNS(reactor)
        self.dns.start()
        self.addCleanup(self.dns.stop)
        self.resolver = Resolver.public({"AIMX_NAMESERVERS": self.dns.nameservers})

    def lookup(self, rdtype, name):
        return threads.deferToThread(dnsverify.lookup, self.resolver, rdtype, name)

    async def test_lookup_types(self):
        """A, AAAA, MX (as "<pref> <host>.") and TXT (strings joined)."""
        self.dns.add_a(DOMAIN, V4)
        self.dns.add_aaaa(DOMAIN, V6)
        self.dns.add_mx(DOMAIN, 10, DOMAIN)
        self.dns.add_txt(DOMAIN, "v=spf1 ", "ip4:1.2.3.4 -all")
        self.assertEqual(await self.lookup("A", DOMAIN), Lookup([V4]))
        self.assertEqual(await self.lookup("AAAA", DOMAIN), Lookup([V6]))
        self.assertEqual(await self.lookup("MX", DOMAIN), Lookup([f"10 {DOMAIN}."]))
        self.assertEqual(await self.lookup("TXT", DOMAIN), Lookup(["v=spf1 ip4:1.2.3.4 -all"]))

    async def test_no_record_is_empty(self):
        """NXDOMAIN and a name without that type are empty answers, not errors."""
        self.dns.add_a(DOMAIN, V4)
        self.assertEqual(await self.lookup("TXT", "nothing.example.com"), Lookup())
        self.assertEqual(await self.lookup("MX", DOMAIN), Lookup())

    async def test_servfail_is_error(self):
        """SERVFAIL is a lookup error naming the query, in one short clause."""
        self.dns.add_servfail(DOMAIN)
        result = await self.lookup("A", DOMAIN)
        self.assertEqual(result.answers, ())
        self.assertIn(f"{DOMAIN} A", result.error)
        self.assertIn("SERVFAIL", result.error)
        self.assertNotIn("; ", result.error)

    async def test_not_cached(self):
        """The setup resolver sees a change at once, even for records with a TTL."""
        self.dns.add_txt(DOMAIN, "first", ttl=300)
        self.assertEqual(await self.lookup("TXT", DOMAIN), Lookup(["first"]))
        self.dns.clear()
        self.dns.add_txt(DOMAIN, "second", ttl=300)
        self.assertEqual(await self.lookup("TXT", DOMAIN), Lookup(["second"]))

    async def test_verify(self):
        """verify() looks everything up and judges it: a published zone passes."""
        self.dns.add_a(DOMAIN, V4)
        self.dns.add_mx(DOMAIN, 10, DOMAIN)
        self.dns.add_txt(DOMAIN, f"v=spf1 ip4:{V4} -all")
        self.dns.add_txt(f"aimx._domainkey.{DOMAIN}", f"v=DKIM1; k=rsa; p={KEY}")
        self.dns.add_txt(f"_dmarc.{DOMAIN}", "v=DMARC1; p=none")
        checks = await threads.deferToThread(dnsverify.verify, expected(), self.resolver)
        self.assertEqual([(c.name, c.status) for c in checks], [
            ("A", PASS), ("MX", PASS), ("SPF", PASS), ("DKIM", PASS), ("DMARC", WARN),
        ])
