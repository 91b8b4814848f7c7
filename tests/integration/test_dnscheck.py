"""DNS verification (aimx.auth.dnsverify) against a real loopback FixtureDNS, lookups in
a thread while the reactor serves it (the pure checks are in tests.test_dnscheck).
"""

from twisted.internet import reactor, threads
from twisted.trial.unittest import TestCase

from aimx.auth import dnsverify
from aimx.auth.resolver import Resolver
from aimx.loopback.dns import FixtureDNS
from aimx.ops.dnscheck import FAIL, PASS, WARN, Lookup
from aimx.store import keys
from tests.test_dnscheck import BACKUP, DOMAIN, KEY, PTR4, V4, V6, expected


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
        """A, AAAA, MX (as "<pref> <host>."), TXT (strings joined) and PTR (no final dot)."""
        self.dns.add_a(DOMAIN, V4)
        self.dns.add_aaaa(DOMAIN, V6)
        self.dns.add_mx(DOMAIN, 10, DOMAIN)
        self.dns.add_txt(DOMAIN, "v=spf1 ", "ip4:1.2.3.4 -all")
        self.dns.add_ptr(PTR4, DOMAIN)
        self.assertEqual(await self.lookup("A", DOMAIN), Lookup([V4]))
        self.assertEqual(await self.lookup("AAAA", DOMAIN), Lookup([V6]))
        self.assertEqual(await self.lookup("MX", DOMAIN), Lookup([f"10 {DOMAIN}."]))
        self.assertEqual(await self.lookup("TXT", DOMAIN), Lookup(["v=spf1 ip4:1.2.3.4 -all"]))
        self.assertEqual(await self.lookup("PTR", PTR4), Lookup([DOMAIN]))

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

    def publish(self, key=KEY):
        """The records setup proposes, the DKIM one as the strings it shows."""
        for record in expected(key=key).records():
            if record.type == "A":
                self.dns.add_a(record.name, record.value)
            elif record.type == "MX":
                pref, host = record.value.split()
                self.dns.add_mx(record.name, int(pref), host)
            else:
                self.dns.add_txt(record.name, *record.strings)

    def verify(self, **kw):
        return threads.deferToThread(dnsverify.verify, expected(**kw), self.resolver)

    async def test_verify(self):
        """verify() looks everything up and judges it: the proposed zone, with reverse
        DNS for the address, passes; p=none passes as monitoring."""
        self.publish()
        self.dns.add_ptr(PTR4, DOMAIN)
        checks = await self.verify()
        self.assertEqual([(c.name, c.status) for c in checks], [
            ("A", PASS), ("MX", PASS), ("SPF", PASS), ("DKIM", PASS), ("DMARC", PASS),
            ("PTR", PASS),
        ])
        self.assertEqual(checks[-1].message, f"{V4} → {DOMAIN}")

    async def test_split_dkim_published(self):
        """A 2048-bit key published as the two strings setup shows verifies (the
        resolver joins a record's strings)."""
        directory = self.mktemp()
        keys.generate_dkim_key(directory)
        key = dnsverify.local_dkim_key(directory)
        self.publish(key)
        [dkim] = [c for c in await self.verify(key=key) if c.name == "DKIM"]
        self.assertEqual(dkim.status, PASS)

    async def test_ptr(self):
        """Reverse DNS through the real resolver: present and forward-confirmed passes;
        missing warns; a name that resolves elsewhere, or not at all, warns with both
        names; the forward lookups happen only for the names the PTR gave."""
        self.publish()
        [missing] = [c for c in await self.verify() if c.name == "PTR"]
        self.assertEqual(missing.status, WARN)
        self.assertTrue(missing.message.startswith(f"no PTR record for {V4}"))

        self.dns.add_ptr(PTR4, "vps-1.provider.net")
        [unresolved] = [c for c in await self.verify() if c.name == "PTR"]
        self.assertEqual(unresolved.status, WARN)
        self.assertIn("vps-1.provider.net has no A record", unresolved.message)
        self.assertIn(f"set reverse DNS to {DOMAIN}", unresolved.message)

        self.dns.add_a("vps-1.provider.net", "9.9.9.9")
        [elsewhere] = [c for c in await self.verify() if c.name == "PTR"]
        self.assertIn("vps-1.provider.net resolves to [9.9.9.9], not 1.2.3.4", elsewhere.message)

        self.dns.add_a("vps-1.provider.net", V4)
        [confirmed] = [c for c in await self.verify() if c.name == "PTR"]
        self.assertEqual((confirmed.status, confirmed.found), (PASS, "vps-1.provider.net"))
        self.assertIn(("vps-1.provider.net", 1), self.dns.queries)  # type 1: A

    async def test_backup_mx(self):
        """The backup MX through the real resolver: missing, wrong preference, then right."""
        self.publish()
        self.dns.add_a(BACKUP, "198.51.100.7")
        [missing] = [c for c in await self.verify(backup_mx=BACKUP) if c.name == "MX (backup)"]
        self.assertEqual(missing.status, "missing")
        self.dns.add_mx(DOMAIN, 5, BACKUP)
        [wrong] = [c for c in await self.verify(backup_mx=BACKUP) if c.name == "MX (backup)"]
        self.assertEqual(wrong.status, FAIL)
        self.assertIn("has preference 5, not above", wrong.message)
        self.dns.clear()
        self.publish()
        self.dns.add_mx(DOMAIN, 20, BACKUP)
        self.dns.add_a(BACKUP, "198.51.100.7")
        [ok] = [c for c in await self.verify(backup_mx=BACKUP) if c.name == "MX (backup)"]
        self.assertEqual(ok.status, PASS)
