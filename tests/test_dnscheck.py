"""DNS records and verification shared by setup and doctor (docs/install.md, "DNS records").

aimx.ops.dnscheck is tested on Lookup values; aimx.auth.dnsverify against a real
loopback FixtureDNS (lookups in a thread while the reactor serves). Acceptance
cases of setup-and-ops.md are named in the docstrings.
"""

from twisted.trial.unittest import SynchronousTestCase

from aimx.auth import dnsverify
from aimx.auth.resolver import PUBLIC_RESOLVERS, Resolver
from aimx.ops.dnscheck import (
    FAIL,
    MISSING,
    PASS,
    WARN,
    DnsRecord,
    ExpectedDns,
    Lookup,
    parse_hostname_i,
    passed,
    table_lines,
)
from aimx.errors import ConfigError
from aimx.store import keys
from aimx.host.initsystem import System
from aimx.host.programs import Completed
from aimx.testing.fakes import FakeRunner

DOMAIN = "agent.example.com"
V4, V6 = "1.2.3.4", "2001:db8::1"
KEY = "ABC123"


def expected(ipv6=None, key=KEY) -> ExpectedDns:
    return ExpectedDns(domain=DOMAIN, ipv4=V4, ipv6=ipv6, selector="aimx", dkim_key=key)


def healthy_answers(ipv6=None) -> dict:
    """Answers for which every check passes."""
    spf = f"v=spf1 ip4:{V4}" + (f" ip6:{ipv6}" if ipv6 else "") + " -all"
    answers = {
        ("A", DOMAIN): Lookup([V4]),
        ("MX", DOMAIN): Lookup([f"10 {DOMAIN}."]),
        ("TXT", DOMAIN): Lookup([spf]),
        ("TXT", f"aimx._domainkey.{DOMAIN}"): Lookup([f"v=DKIM1; k=rsa; p={KEY}"]),
        ("TXT", f"_dmarc.{DOMAIN}"): Lookup(["v=DMARC1; p=reject"]),
    }
    if ipv6:
        answers[("AAAA", DOMAIN)] = Lookup([ipv6])
    return answers


class RecordTests(SynchronousTestCase):
    def test_records_ipv4(self):
        """IPv4 only: A, MX, SPF, DKIM, DMARC in that order (acceptance 3)."""
        records = expected(key=KEY).records()
        self.assertEqual(records, [
            DnsRecord("A", DOMAIN, V4),
            DnsRecord("MX", DOMAIN, f"10 {DOMAIN}."),
            DnsRecord("TXT", DOMAIN, f"v=spf1 ip4:{V4} -all"),
            DnsRecord("TXT", f"aimx._domainkey.{DOMAIN}", f"v=DKIM1; k=rsa; p={KEY}"),
            DnsRecord("TXT", f"_dmarc.{DOMAIN}",
                      f"v=DMARC1; p=reject; rua=mailto:postmaster@{DOMAIN}"),
        ])

    def test_records_ipv6(self):
        """With IPv6: six records, AAAA second, SPF names both addresses, no PTR (acceptance 3)."""
        records = expected(ipv6=V6).records()
        self.assertEqual(len(records), 6)
        self.assertEqual(records[1], DnsRecord("AAAA", DOMAIN, V6))
        self.assertEqual(records[3].value, f"v=spf1 ip4:{V4} ip6:{V6} -all")
        self.assertNotIn("PTR", [r.type for r in records])

    def test_no_dkim_record_without_key(self):
        """An unknown local key: no DKIM record is suggested."""
        names = [r.name for r in expected(key=None).records()]
        self.assertNotIn(f"aimx._domainkey.{DOMAIN}", names)
        self.assertEqual(len(names), 4)

    def test_queries(self):
        """The lookups: A (and AAAA), MX, TXT at the domain, the DKIM and DMARC names."""
        self.assertEqual(expected(ipv6=V6).queries(), [
            ("A", DOMAIN), ("AAAA", DOMAIN), ("MX", DOMAIN), ("TXT", DOMAIN),
            ("TXT", f"aimx._domainkey.{DOMAIN}"), ("TXT", f"_dmarc.{DOMAIN}"),
        ])

    def test_table(self):
        """Setup's table: header, rule, rows of type width 4 and name width 45."""
        lines = table_lines(expected().records()[:2])
        self.assertEqual(lines, [
            "  TYPE NAME                                          VALUE",
            "  ---- --------------------------------------------- -----",
            "  A    agent.example.com" + " " * 28 + " 1.2.3.4",
            "  MX   agent.example.com" + " " * 28 + " 10 agent.example.com.",
        ])


class HostnameTests(SynchronousTestCase):
    def test_first_v4_and_global_v6(self):
        """The first IPv4 and the first global IPv6; link-local, ULA and loopback skipped."""
        self.assertEqual(
            parse_hostname_i("10.0.0.5 203.0.113.7 fe80::1 fc00::1 fd12::3 ::1 2001:db8::42\n"),
            ("10.0.0.5", "2001:db8::42"),
        )

    def test_nothing(self):
        """No addresses (or junk): None for both."""
        self.assertEqual(parse_hostname_i("  \n"), (None, None))
        self.assertEqual(parse_hostname_i("eth0 fe80::2"), (None, None))


class EvaluateTests(SynchronousTestCase):
    def check(self, name, ipv6=None, key=KEY, **replace):
        """The named check after replacing some answers of a healthy zone."""
        answers = healthy_answers(ipv6)
        answers.update(replace.get("answers", {}))
        [check] = [c for c in expected(ipv6, key).evaluate(answers) if c.name == name]
        return check

    def test_all_pass(self):
        """A healthy zone passes every check, in display order."""
        checks = expected(ipv6=V6).evaluate(healthy_answers(V6))
        self.assertEqual([c.name for c in checks],
                         ["A", "AAAA", "MX", "SPF", "SPF (IPv6)", "DKIM", "DMARC"])
        self.assertEqual({c.status for c in checks}, {PASS})
        self.assertTrue(passed(checks))

    def test_ipv4_only_checks(self):
        """Without IPv6 there is no AAAA and no SPF (IPv6) check."""
        names = [c.name for c in expected().evaluate(healthy_answers())]
        self.assertEqual(names, ["A", "MX", "SPF", "DKIM", "DMARC"])

    def test_a(self):
        """A: other addresses fail naming them; none is missing; an error fails."""
        other = self.check("A", answers={("A", DOMAIN): Lookup(["1.2.3.5", "9.9.9.9"])})
        self.assertEqual((other.status, other.message),
                         (FAIL, "A record points to [1.2.3.5, 9.9.9.9], expected 1.2.3.4"))
        self.assertEqual(other.record, DnsRecord("A", DOMAIN, V4))
        none = self.check("A", answers={("A", DOMAIN): Lookup()})
        self.assertEqual((none.status, none.message), (MISSING, "No A record found"))
        error = self.check("A", answers={("A", DOMAIN): Lookup(error="timed out")})
        self.assertEqual((error.status, error.message),
                         (FAIL, "A record lookup failed: timed out"))
        among = self.check("A", answers={("A", DOMAIN): Lookup(["9.9.9.9", V4])})
        self.assertEqual(among.status, PASS)

    def test_aaaa(self):
        """AAAA compares addresses, not spellings."""
        spelled = self.check("AAAA", ipv6=V6,
                             answers={("AAAA", DOMAIN): Lookup(["2001:0db8:0::1"])})
        self.assertEqual(spelled.status, PASS)
        missing = self.check("AAAA", ipv6=V6, answers={("AAAA", DOMAIN): Lookup()})
        self.assertEqual((missing.status, missing.message), (MISSING, "No AAAA record found"))
        self.assertEqual(missing.record, DnsRecord("AAAA", DOMAIN, V6))

    def test_mx(self):
        """MX: any answer containing the domain (any case) passes; others fail listed."""
        upper = self.check("MX", answers={("MX", DOMAIN): Lookup([f"10 {DOMAIN.upper()}."])})
        self.assertEqual(upper.status, PASS)
        other = self.check("MX", answers={("MX", DOMAIN): Lookup(["10 mx.other.net."])})
        self.assertEqual(
            (other.status, other.message),
            (FAIL, 'MX record found but does not point to agent.example.com: ["10 mx.other.net."]'),
        )
        missing = self.check("MX", answers={("MX", DOMAIN): Lookup()})
        self.assertEqual((missing.status, missing.message), (MISSING, "No MX record found"))
        error = self.check("MX", answers={("MX", DOMAIN): Lookup(error="SERVFAIL")})
        self.assertEqual(error.message, "MX lookup failed: SERVFAIL")

    def test_spf_lookalikes(self):
        """SPF: ip4:1.2.3.45 and ip4:11.2.3.4 do not include 1.2.3.4; /32 and +ip4 do (acceptance 4)."""
        for record in ("v=spf1 ip4:1.2.3.45 -all", "v=spf1 ip4:11.2.3.4 -all",
                       "v=spf1 include:_spf.example.net -all"):
            check = self.check("SPF", answers={("TXT", DOMAIN): Lookup([record])})
            self.assertEqual(check.status, FAIL, record)
            self.assertEqual(check.message,
                             f'SPF record found but does not include 1.2.3.4: ["{record}"]')
            self.assertEqual(check.record.value, "v=spf1 ip4:1.2.3.4 -all")
        for record in ("v=spf1 ip4:1.2.3.4/32 -all", "v=spf1 mx +ip4:1.2.3.4 -all"):
            check = self.check("SPF", answers={("TXT", DOMAIN): Lookup(["other", record])})
            self.assertEqual(check.status, PASS, record)

    def test_spf_missing(self):
        """TXT records without v=spf1 (or none) are a missing SPF record."""
        for answers in ([], ["google-site-verification=x"]):
            check = self.check("SPF", answers={("TXT", DOMAIN): Lookup(answers)})
            self.assertEqual((check.status, check.message), (MISSING, "No SPF record found"))

    def test_spf_ipv6(self):
        """SPF (IPv6) wants an ip6: mechanism for the server's IPv6 address."""
        only_v4 = self.check("SPF (IPv6)", ipv6=V6,
                             answers={("TXT", DOMAIN): Lookup([f"v=spf1 ip4:{V4} -all"])})
        self.assertEqual(only_v4.status, FAIL)
        self.assertIn("does not include 2001:db8::1", only_v4.message)
        self.assertEqual(self.check("SPF", ipv6=V6,
                                    answers={("TXT", DOMAIN): Lookup([f"v=spf1 ip4:{V4} -all"])}
                                    ).status, PASS)

    def test_dkim(self):
        """DKIM: a different p= fails; missing is missing; p= spaces ignored (acceptance 6)."""
        name = f"aimx._domainkey.{DOMAIN}"
        other = self.check("DKIM", answers={("TXT", name): Lookup(["v=DKIM1; k=rsa; p=XYZ"])})
        self.assertEqual((other.status, other.message),
                         (FAIL, "DKIM record found but public key does not match local key"))
        missing = self.check("DKIM", answers={("TXT", name): Lookup(["unrelated"])})
        self.assertEqual((missing.status, missing.message), (MISSING, "No DKIM record found"))
        self.assertEqual(missing.record.name, name)
        spaced = self.check("DKIM", answers={("TXT", name): Lookup(["v=DKIM1; p=ABC 12\t3"])})
        self.assertEqual(spaced.status, PASS)

    def test_dkim_without_local_key(self):
        """Without a local key any DKIM record passes; a failure suggests no record."""
        name = f"aimx._domainkey.{DOMAIN}"
        any_key = self.check("DKIM", key=None,
                             answers={("TXT", name): Lookup(["v=DKIM1; p=XYZ"])})
        self.assertEqual(any_key.status, PASS)
        missing = self.check("DKIM", key=None, answers={("TXT", name): Lookup()})
        self.assertEqual((missing.status, missing.record), (MISSING, None))

    def test_dmarc(self):
        """DMARC p=none warns and still passes overall; no record is missing (acceptance 5)."""
        name = f"_dmarc.{DOMAIN}"
        answers = healthy_answers()
        answers[("TXT", name)] = Lookup(["v=DMARC1; P=None; rua=mailto:x@example.com"])
        checks = expected().evaluate(answers)
        dmarc = checks[-1]
        self.assertEqual(dmarc.status, WARN)
        self.assertIn("p=none", dmarc.message)
        self.assertFalse(dmarc.failed)
        self.assertTrue(passed(checks))
        missing = self.check("DMARC", answers={("TXT", name): Lookup(["v=spf1 -all"])})
        self.assertEqual((missing.status, missing.message), (MISSING, "No DMARC record found"))
        self.assertFalse(passed([missing]))
        quarantine = self.check("DMARC",
                                answers={("TXT", name): Lookup(["v=DMARC1; p=quarantine"])})
        self.assertEqual(quarantine.status, PASS)

    def test_txt_errors(self):
        """A failed TXT lookup fails the checks that need it, naming the check."""
        answers = {("TXT", DOMAIN): Lookup(error="x"),
                   ("TXT", f"aimx._domainkey.{DOMAIN}"): Lookup(error="y"),
                   ("TXT", f"_dmarc.{DOMAIN}"): Lookup(error="z")}
        messages = {c.name: c.message for c in expected().evaluate({**healthy_answers(),
                                                                     **answers})}
        self.assertEqual(messages["SPF"], "SPF lookup failed: x")
        self.assertEqual(messages["DKIM"], "DKIM lookup failed: y")
        self.assertEqual(messages["DMARC"], "DMARC lookup failed: z")


class HostTests(SynchronousTestCase):
    def test_server_addresses(self):
        """`hostname -I` is run and parsed; a failing hostname gives no addresses."""
        runner = FakeRunner(default=Completed(0, "192.0.2.7 2001:db8::7\n"))
        self.assertEqual(dnsverify.server_addresses(System(runner=runner)),
                         ("192.0.2.7", "2001:db8::7"))
        self.assertEqual(runner.calls, [["hostname", "-I"]])
        failing = FakeRunner(default=Completed(127, "", "hostname: not found"))
        self.assertEqual(dnsverify.server_addresses(System(runner=failing)), (None, None))

    def test_local_dkim_key(self):
        """The local key is the base64 SPKI of public.key; missing or junk gives None."""
        config_dir = self.mktemp()
        self.assertIsNone(dnsverify.local_dkim_key(config_dir))
        txt = keys.generate_dkim_key(config_dir, bits=1024)
        self.assertEqual("v=DKIM1; k=rsa; p=" + dnsverify.local_dkim_key(config_dir), txt)
        with open(keys.dkim_paths(config_dir)[1], "w") as f:
            f.write("not a key\n")
        self.assertIsNone(dnsverify.local_dkim_key(config_dir))


class PublicResolverTests(SynchronousTestCase):
    def test_public_servers(self):
        """Without AIMX_NAMESERVERS: 1.1.1.1, 8.8.8.8, 9.9.9.9 in that order, port 53."""
        r = Resolver.public({})
        self.assertEqual([(ns.address, ns.port) for ns in r._dns.nameservers],
                         [(ip, 53) for ip in PUBLIC_RESOLVERS])
        self.assertEqual(PUBLIC_RESOLVERS, ("1.1.1.1", "8.8.8.8", "9.9.9.9"))

    def test_env_servers(self):
        """AIMX_NAMESERVERS replaces the public resolvers; a bad value is a ConfigError."""
        r = Resolver.public({"AIMX_NAMESERVERS": "127.0.0.1:5353"})
        self.assertEqual([(ns.address, ns.port) for ns in r._dns.nameservers],
                         [("127.0.0.1", 5353)])
        self.assertRaises(ConfigError, Resolver.public, {"AIMX_NAMESERVERS": "localhost"})
