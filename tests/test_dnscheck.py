"""DNS records and verification shared by setup and doctor (docs/install.md, "DNS records";
issue 16: reverse DNS, split TXT strings, DMARC p=none, the backup MX).

aimx.ops.dnscheck is tested on Lookup values; aimx.auth.dnsverify against a real
loopback FixtureDNS (tests.integration.test_dnscheck). The acceptance cases are named in the docstrings.
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
    quoted,
    table_lines,
    txt_strings,
)
from aimx.errors import ConfigError
from aimx.store import keys
from aimx.host.initsystem import System
from aimx.host.programs import Completed
from aimx.testing.fakes import FakeRunner

DOMAIN = "agent.example.com"
V4, V6 = "1.2.3.4", "2001:db8::1"
PTR4 = "4.3.2.1.in-addr.arpa"
PTR6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
KEY = "ABC123"
BACKUP = "mx2.example.net"


def expected(ipv6=None, key=KEY, backup_mx=None) -> ExpectedDns:
    return ExpectedDns(domain=DOMAIN, ipv4=V4, ipv6=ipv6, selector="aimx", dkim_key=key,
                       backup_mx=backup_mx)


def healthy_answers(ipv6=None, backup_mx=None) -> dict:
    """Answers for which every check passes (reverse DNS names the domain)."""
    spf = f"v=spf1 ip4:{V4}" + (f" ip6:{ipv6}" if ipv6 else "") + " -all"
    answers = {
        ("A", DOMAIN): Lookup([V4]),
        ("MX", DOMAIN): Lookup([f"10 {DOMAIN}."]),
        ("TXT", DOMAIN): Lookup([spf]),
        ("TXT", f"aimx._domainkey.{DOMAIN}"): Lookup([f"v=DKIM1; k=rsa; p={KEY}"]),
        ("TXT", f"_dmarc.{DOMAIN}"): Lookup(["v=DMARC1; p=reject"]),
        ("PTR", PTR4): Lookup([DOMAIN]),
    }
    if ipv6:
        answers[("AAAA", DOMAIN)] = Lookup([ipv6])
        answers[("PTR", PTR6)] = Lookup([DOMAIN])
    if backup_mx:
        answers[("MX", DOMAIN)] = Lookup([f"10 {DOMAIN}.", f"20 {backup_mx}."])
        answers[("A", backup_mx)] = Lookup(["198.51.100.7"])
        answers[("AAAA", backup_mx)] = Lookup()
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
            DnsRecord("TXT", f"_dmarc.{DOMAIN}", "v=DMARC1; p=none"),
        ])

    def test_dmarc_proposal(self):
        """DMARC is proposed as p=none with reporting off: no rua, no ruf (issue 16)."""
        [dmarc] = [r for r in expected().records() if r.name.startswith("_dmarc.")]
        self.assertEqual(dmarc.value, "v=DMARC1; p=none")
        self.assertNotIn("ru", dmarc.value)

    def test_backup_mx_record(self):
        """A backup MX: its record at preference 20, right after aimx's at 10."""
        records = expected(backup_mx=BACKUP).records()
        self.assertEqual(records[1:3], [DnsRecord("MX", DOMAIN, f"10 {DOMAIN}."),
                                        DnsRecord("MX", DOMAIN, f"20 {BACKUP}.")])

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
        """The lookups: A (and AAAA), MX, TXT at the domain, the DKIM and DMARC names,
        the backup's addresses, the reverse names of the server's addresses."""
        self.assertEqual(expected(ipv6=V6, backup_mx=BACKUP).queries(), [
            ("A", DOMAIN), ("AAAA", DOMAIN), ("MX", DOMAIN), ("TXT", DOMAIN),
            ("TXT", f"aimx._domainkey.{DOMAIN}"), ("TXT", f"_dmarc.{DOMAIN}"),
            ("A", BACKUP), ("AAAA", BACKUP), ("PTR", PTR4), ("PTR", PTR6),
        ])

    def test_followups(self):
        """The PTR names' addresses (A for IPv4, AAAA for IPv6), at most four names per
        address, each once, none already asked."""
        answers = healthy_answers(V6)
        answers[("PTR", PTR4)] = Lookup([DOMAIN, "Host.Example.net.", "host.example.net",
                                         "a.example", "b.example", "c.example"])
        answers[("PTR", PTR6)] = Lookup(["host.example.net"])
        self.assertEqual(expected(ipv6=V6).followups(answers), [
            ("A", "host.example.net"), ("A", "a.example"), ("A", "b.example"),
            ("AAAA", "host.example.net"),
        ])

    def test_loopback_not_reversed(self):
        """A loopback server address (a demo) has no PTR query or check."""
        local = ExpectedDns(DOMAIN, "127.0.0.1", None, "aimx", KEY)
        self.assertNotIn("PTR", [rdtype for rdtype, _ in local.queries()])

    def test_txt_strings(self):
        """A TXT value in strings of at most 255 bytes, never cut inside a character;
        joined they are the value; one string when it fits."""
        self.assertEqual(txt_strings("v=spf1 -all"), ("v=spf1 -all",))
        self.assertEqual(txt_strings("x" * 255), ("x" * 255,))
        self.assertEqual(txt_strings("x" * 256), ("x" * 255, "x"))
        value = "a" * 254 + "é" * 200
        strings = txt_strings(value)
        self.assertEqual("".join(strings), value)
        self.assertTrue(all(len(s.encode()) <= 255 for s in strings))
        self.assertEqual(strings[0], "a" * 254)
        self.assertEqual(quoted(['say "hi"', "a\\b"]), '"say \\"hi\\"" "a\\\\b"')

    def test_long_dkim_split(self):
        """2048- and 4096-bit keys: the DKIM record in 2 and 3 quoted strings, each
        <= 255 bytes, together the record (RFC 6376 §3.6.2.2)."""
        for bits, count in ((2048, 2), (4096, 3)):
            directory = self.mktemp()
            txt = keys.generate_dkim_key(directory, bits=bits)
            key = dnsverify.local_dkim_key(directory)
            [record] = [r for r in expected(key=key).records() if "_domainkey" in r.name]
            self.assertEqual(record.value, txt)
            self.assertEqual(len(record.strings), count)
            self.assertTrue(all(len(s.encode()) <= 255 for s in record.strings))
            self.assertEqual("".join(record.strings), txt)
            self.assertTrue(record.strings[0].startswith("v=DKIM1; k=rsa; p=MII"))
            self.assertEqual(record.shown, quoted(record.strings))
            [row] = [line for line in table_lines([record])[2:]]
            self.assertTrue(row.endswith(" " + record.shown))
        short = DnsRecord("TXT", DOMAIN, "v=spf1 -all")
        self.assertEqual(short.shown, "v=spf1 -all")

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
    def check(self, name, ipv6=None, key=KEY, backup_mx=None, **replace):
        """The named check after replacing some answers of a healthy zone."""
        answers = healthy_answers(ipv6, backup_mx)
        answers.update(replace.get("answers", {}))
        [check] = [c for c in expected(ipv6, key, backup_mx).evaluate(answers)
                   if c.name == name]
        return check

    def test_all_pass(self):
        """A healthy zone passes every check, in display order."""
        checks = expected(ipv6=V6, backup_mx=BACKUP).evaluate(healthy_answers(V6, BACKUP))
        self.assertEqual([c.name for c in checks],
                         ["A", "AAAA", "MX", "MX (backup)", "SPF", "SPF (IPv6)", "DKIM", "DMARC",
                          "PTR", "PTR (IPv6)"])
        self.assertEqual({c.status for c in checks}, {PASS})
        self.assertTrue(passed(checks))

    def test_ipv4_only_checks(self):
        """Without IPv6 there is no AAAA, SPF (IPv6) or PTR (IPv6) check; without a
        backup MX no MX (backup) check."""
        names = [c.name for c in expected().evaluate(healthy_answers())]
        self.assertEqual(names, ["A", "MX", "SPF", "DKIM", "DMARC", "PTR"])

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

    def test_dmarc_policies(self):
        """p=none, quarantine and reject all pass (any case); p=none says it only
        monitors; the policy is kept for doctor's next step (issue 16)."""
        name = f"_dmarc.{DOMAIN}"
        for record, policy in (("v=DMARC1; P=None; rua=mailto:x@example.com", "none"),
                               ("v=DMARC1; p=quarantine", "quarantine"),
                               ("v=DMARC1;p=REJECT", "reject")):
            check = self.check("DMARC", answers={("TXT", name): Lookup(["other", record])})
            self.assertEqual((check.status, check.found), (PASS, policy), record)
        none = self.check("DMARC", answers={("TXT", name): Lookup(["v=DMARC1; p=none"])})
        self.assertEqual(none.message, "p=none: monitoring, no policy applied yet")
        self.assertEqual(self.check("DMARC").message, "")

    def test_dmarc_broken(self):
        """No record is missing; no valid p= or two records fail, with the record to
        publish (RFC 7489 §6.6.3: two records are none)."""
        name = f"_dmarc.{DOMAIN}"
        missing = self.check("DMARC", answers={("TXT", name): Lookup(["v=spf1 -all"])})
        self.assertEqual((missing.status, missing.message), (MISSING, "No DMARC record found"))
        self.assertFalse(passed([missing]))
        for answers, message in (
            (["v=DMARC1; rua=mailto:a@b.c"], 'DMARC record has no valid policy (p=none, '
             'p=quarantine or p=reject): ["v=DMARC1; rua=mailto:a@b.c"]'),
            (["v=DMARC1; p=rejected"], "DMARC record has no valid policy"),
            (["v=DMARC1; p=none", "v=DMARC1; p=reject"], "2 DMARC records found, so receivers "
             'use none; keep one: ["v=DMARC1; p=none", "v=DMARC1; p=reject"]'),
        ):
            check = self.check("DMARC", answers={("TXT", name): Lookup(answers)})
            self.assertEqual(check.status, FAIL)
            self.assertTrue(check.message.startswith(message), check.message)
            self.assertEqual(check.record, DnsRecord("TXT", name, "v=DMARC1; p=none"))

    def test_dkim_split_published(self):
        """A long key published as several strings verifies: the check reads the
        strings joined, as the resolver returns them."""
        key = "MIIB" + "x" * 388
        value = f"v=DKIM1; k=rsa; p={key}"
        self.assertGreater(len(txt_strings(value)), 1)
        check = self.check("DKIM", key=key, answers={
            ("TXT", f"aimx._domainkey.{DOMAIN}"): Lookup(["".join(txt_strings(value))])})
        self.assertEqual(check.status, PASS)

    def test_dkim_quotes_pasted(self):
        """The quoted strings stored as text by a DNS panel: a failure that says so."""
        key = "MIIB" + "x" * 388
        pasted = quoted(txt_strings(f"v=DKIM1; k=rsa; p={key}"))
        check = self.check("DKIM", key=key, answers={
            ("TXT", f"aimx._domainkey.{DOMAIN}"): Lookup([pasted])})
        self.assertEqual(check.status, FAIL)
        self.assertTrue(check.message.startswith("DKIM record contains quote characters"))

    def test_ptr_confirmed(self):
        """A PTR name that resolves back to the address passes, showing the name, any
        case, even when it is not the domain (then among others, by its address)."""
        ok = self.check("PTR")
        self.assertEqual((ok.status, ok.message, ok.found), (PASS, f"{V4} → {DOMAIN}", DOMAIN))
        other = self.check("PTR", answers={
            ("PTR", PTR4): Lookup(["nothing.example", "Static-4.Provider.NET."]),
            ("A", "nothing.example"): Lookup(),
            ("A", "static-4.provider.net"): Lookup(["9.9.9.9", V4])})
        self.assertEqual((other.status, other.message), (PASS, f"{V4} → static-4.provider.net"))
        six = self.check("PTR (IPv6)", ipv6=V6, answers={
            ("PTR", PTR6): Lookup(["v6.example.net"]),
            ("AAAA", "v6.example.net"): Lookup(["2001:db8:0::1"])})
        self.assertEqual(six.status, PASS)

    def test_ptr_missing(self):
        """No PTR: a warning naming the address and the domain to ask for, and where
        reverse DNS is set; verification still passes."""
        answers = healthy_answers()
        answers[("PTR", PTR4)] = Lookup()
        checks = expected().evaluate(answers)
        [ptr] = [c for c in checks if c.name == "PTR"]
        self.assertEqual(ptr.status, WARN)
        self.assertEqual(ptr.message, f"no PTR record for {V4}: ask your hosting provider to "
                                      f"set reverse DNS to {DOMAIN}; many receivers reject or "
                                      "spam-folder mail from IPs without one")
        self.assertIn("not in the DNS zone of agent.example.com", ptr.advice)
        self.assertIsNone(ptr.record)
        self.assertTrue(passed(checks))

    def test_ptr_mismatched(self):
        """A PTR name without the address: warned with both names, and why."""
        cases = (
            (Lookup(["9.9.9.9"]), "host.provider.net resolves to [9.9.9.9], not 1.2.3.4"),
            (Lookup(), "host.provider.net has no A record"),
            (Lookup(error="SERVFAIL"), "the A lookup of host.provider.net failed (SERVFAIL)"),
        )
        for forward, why in cases:
            check = self.check("PTR", answers={("PTR", PTR4): Lookup(["host.provider.net"]),
                                               ("A", "host.provider.net"): forward})
            self.assertEqual(check.status, WARN)
            self.assertEqual(check.message, f"PTR for {V4} is host.provider.net, but {why}: ask "
                                            f"your hosting provider to set reverse DNS to {DOMAIN}")
            self.assertEqual(check.found, "host.provider.net")
        failed = self.check("PTR", answers={("PTR", PTR4): Lookup(error="timed out")})
        self.assertEqual((failed.status, failed.message),
                         (WARN, f"PTR lookup for {V4} failed: timed out"))

    def test_backup_mx(self):
        """The backup MX: absent is missing, at or below aimx's preference fails, no
        address fails; any case and a preference above pass (issue 16)."""
        def mx(*answers):
            return {("MX", DOMAIN): Lookup(answers)}

        ok = self.check("MX (backup)", backup_mx=BACKUP,
                        answers=mx(f"30 {BACKUP.upper()}.", f"10 {DOMAIN}."))
        self.assertEqual(ok.status, PASS)
        missing = self.check("MX (backup)", backup_mx=BACKUP, answers=mx(f"10 {DOMAIN}."))
        self.assertEqual((missing.status, missing.message),
                         (MISSING, f"{BACKUP} is not among the MX records of {DOMAIN}"))
        self.assertEqual(missing.record, DnsRecord("MX", DOMAIN, f"20 {BACKUP}."))
        for pref in (5, 10):
            wrong = self.check("MX (backup)", backup_mx=BACKUP,
                               answers=mx(f"10 {DOMAIN}.", f"{pref} {BACKUP}."))
            self.assertEqual(wrong.status, FAIL)
            self.assertEqual(wrong.message, f"backup MX {BACKUP} has preference {pref}, not "
                                            f"above {DOMAIN}'s own 10: senders would try the "
                                            "backup first")
        unreachable = self.check("MX (backup)", backup_mx=BACKUP,
                                 answers={("A", BACKUP): Lookup(), ("AAAA", BACKUP): Lookup()})
        self.assertEqual((unreachable.status, unreachable.message),
                         (FAIL, f"backup MX {BACKUP} has no A or AAAA record: senders cannot "
                                "reach it"))
        v6_only = self.check("MX (backup)", backup_mx=BACKUP, answers={
            ("A", BACKUP): Lookup(error="SERVFAIL"), ("AAAA", BACKUP): Lookup([V6])})
        self.assertEqual(v6_only.status, PASS)
        error = self.check("MX (backup)", backup_mx=BACKUP,
                           answers={("A", BACKUP): Lookup(error="SERVFAIL")})
        self.assertEqual(error.message, f"address lookup for {BACKUP} failed: SERVFAIL")
        # The own MX check is unchanged by a backup in the set.
        self.assertEqual(self.check("MX", backup_mx=BACKUP).status, PASS)

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
