"""Tests for aimx.core.dmarc: records, organisational domains, alignment, tree walk, verdict."""

from twisted.trial.unittest import SynchronousTestCase

from aimx.core import dmarc


class ParseRecordTests(SynchronousTestCase):
    def test_tags(self):
        """Tags are split on ';' with names lower-cased and values trimmed."""
        self.assertEqual(dmarc.parse_record("v=DMARC1; p=reject; ADKIM = s ;pct=50;"),
                         {"v": "DMARC1", "p": "reject", "adkim": "s", "pct": "50"})

    def test_not_dmarc(self):
        """Records not starting with exactly v=DMARC1 are not DMARC records."""
        for txt in ("v=spf1 -all", "p=reject; v=DMARC1", "v=DMARC2; p=none", "", "garbage"):
            self.assertIsNone(dmarc.parse_record(txt), txt)

    def test_first_tag_wins_and_junk_ignored(self):
        """A repeated tag keeps its first value; parts without '=' are ignored."""
        self.assertEqual(dmarc.parse_record("v=DMARC1; p=none; junk; p=reject"),
                         {"v": "DMARC1", "p": "none"})


class OrganizationalDomainTests(SynchronousTestCase):
    def test_registrable(self):
        """The organisational domain is the registrable domain from the PSL."""
        self.assertEqual(dmarc.organizational_domain("a.b.Example.COM."), "example.com")
        self.assertEqual(dmarc.organizational_domain("mail.company.co.uk"), "company.co.uk")

    def test_public_suffix_is_itself(self):
        """A public suffix (or TLD) is its own organisational domain."""
        self.assertEqual(dmarc.organizational_domain("co.uk"), "co.uk")
        self.assertEqual(dmarc.organizational_domain("com"), "com")

    def test_private_section(self):
        """Private-section suffixes count: two github.io sites are different organisations."""
        self.assertEqual(dmarc.organizational_domain("x.alice.github.io"), "alice.github.io")


class AlignedTests(SynchronousTestCase):
    def test_relaxed(self):
        """Relaxed alignment compares organisational domains, case-insensitively."""
        self.assertTrue(dmarc.aligned("mail.Example.com", "example.com", "r"))
        self.assertTrue(dmarc.aligned("a.example.com", "b.example.com", "r"))
        self.assertFalse(dmarc.aligned("example.org", "example.com", "r"))
        self.assertFalse(dmarc.aligned("alice.github.io", "bob.github.io", "r"))

    def test_strict(self):
        """Strict alignment needs equal domains."""
        self.assertTrue(dmarc.aligned("Example.com", "example.com.", "s"))
        self.assertFalse(dmarc.aligned("mail.example.com", "example.com", "s"))

    def test_missing(self):
        """A missing domain never aligns."""
        self.assertFalse(dmarc.aligned(None, "example.com"))
        self.assertFalse(dmarc.aligned("", ""))


class NormalizeTests(SynchronousTestCase):
    def test_forms(self):
        """Trimmed, lower-cased, final dot dropped, IDN as A-labels."""
        self.assertEqual(dmarc.normalize(" Example.COM. "), "example.com")
        self.assertEqual(dmarc.normalize("Bücher.de"), "xn--bcher-kva.de")
        self.assertEqual(dmarc.normalize(None), "")

    def test_idn_aligns_with_a_label(self):
        """A U-label From domain aligns with the A-label d= that signs it."""
        self.assertTrue(dmarc.aligned("xn--bcher-kva.de", "mail.bücher.de"))


class LookupNamesTests(SynchronousTestCase):
    def test_short_names(self):
        """Below five labels, the walk drops the leftmost label down to the TLD."""
        self.assertEqual(dmarc.lookup_names("Mail.Example.com."),
                         ["_dmarc.mail.example.com", "_dmarc.example.com", "_dmarc.com"])
        self.assertEqual(dmarc.lookup_names("localhost"), ["_dmarc.localhost"])

    def test_jump_to_four_labels(self):
        """A name of five or more labels jumps straight to its last four."""
        self.assertEqual(dmarc.lookup_names("a.b.c.d.e.example.com"), [
            "_dmarc.a.b.c.d.e.example.com", "_dmarc.d.e.example.com",
            "_dmarc.e.example.com", "_dmarc.example.com", "_dmarc.com"])
        self.assertEqual(dmarc.lookup_names("a.b.c.example.com"), [
            "_dmarc.a.b.c.example.com", "_dmarc.b.c.example.com", "_dmarc.c.example.com",
            "_dmarc.example.com", "_dmarc.com"])

    def test_invalid(self):
        """An empty name or one with empty labels has nothing to look up."""
        self.assertEqual(dmarc.lookup_names(""), [])
        self.assertEqual(dmarc.lookup_names("a..com"), [])


class EvaluateTests(SynchronousTestCase):
    record = {"v": "DMARC1", "p": "reject"}

    def evaluate(self, record=record, *, error=False, from_domain="example.com", spf="none",
                 mail_from_domain=None, dkim=()):
        return dmarc.evaluate(record, error=error, from_domain=from_domain, spf=spf,
                              mail_from_domain=mail_from_domain, dkim_pass_domains=dkim)

    def test_dkim_aligned(self):
        """An aligned passing DKIM domain passes, relaxed by default."""
        self.assertEqual(self.evaluate(dkim=["example.com"]), "pass")
        self.assertEqual(self.evaluate(from_domain="mail.example.com", dkim=["example.com"]),
                         "pass")

    def test_adkim_strict(self):
        """adkim=s requires the exact From domain."""
        record = {"v": "DMARC1", "p": "none", "adkim": "s"}
        self.assertEqual(self.evaluate(record, from_domain="mail.example.com",
                                       dkim=["example.com"]), "fail")

    def test_spf_aligned(self):
        """SPF pass for an aligned MAIL FROM domain passes; aspf=s needs equality."""
        self.assertEqual(self.evaluate(spf="pass", mail_from_domain="bounce.example.com"),
                         "pass")
        self.assertEqual(self.evaluate({"v": "DMARC1", "p": "none", "aspf": "s"}, spf="pass",
                                       mail_from_domain="bounce.example.com"), "fail")

    def test_no_usable_policy_is_none(self):
        """A record without p=, or with an unknown one, is no policy (RFC 7489 §6.6.3)."""
        for record in ({"v": "DMARC1"}, {"v": "DMARC1", "p": "maybe"}):
            self.assertEqual(self.evaluate(record, spf="fail"), "none", record)
        self.assertEqual(self.evaluate({"v": "DMARC1", "p": "Quarantine"}), "fail")

    def test_unaligned_spf_pass_fails(self):
        """SPF pass for another domain and no DKIM is fail."""
        self.assertEqual(self.evaluate(spf="pass", mail_from_domain="other.org"), "fail")

    def test_nothing_passes_fails(self):
        """A record with SPF fail and no DKIM is fail (aimx decision)."""
        self.assertEqual(self.evaluate(spf="fail", mail_from_domain="example.com"), "fail")

    def test_unaligned_dkim_fails(self):
        """A passing DKIM signature of another domain does not count."""
        self.assertEqual(self.evaluate(dkim=["attacker.org"]), "fail")

    def test_no_record(self):
        """No record is none whatever passed."""
        self.assertEqual(self.evaluate(None, dkim=["example.com"]), "none")

    def test_dns_error(self):
        """A DNS error other than no record is fail."""
        self.assertEqual(self.evaluate(None, error=True, dkim=["example.com"]), "fail")

    def test_no_from_domain(self):
        """Without a single From domain the result is none."""
        self.assertEqual(self.evaluate(from_domain=None, error=True), "none")
