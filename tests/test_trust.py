"""Tests for aimx.core.trust: sender patterns, the trust verdict and the hook gate."""

import attrs
from twisted.trial.unittest import SynchronousTestCase

from aimx.core import trust
from aimx.core.authresults import FAIL, PASS, TEMPERROR, AuthResults, DkimResult
from aimx.core.identity import from_headers
from aimx.core.trust import Verdict
from tests.test_identity import HOSTILE_FROM


class GlobMatchTests(SynchronousTestCase):
    def assertMatches(self, pattern, yes=(), no=()):
        for text in yes:
            self.assertTrue(trust.glob_match(pattern, text), (pattern, text))
        for text in no:
            self.assertFalse(trust.glob_match(pattern, text), (pattern, text))

    def test_spec_examples(self):
        """Patterns as docs/configuration.md describes them."""
        self.assertMatches("*@company.com", ["alice@company.com"],
                           ["alice@sub.company.com", "alice@company.com.evil"])
        self.assertMatches("*@*.company.com", ["a@sub.company.com"], ["a@company.com"])
        self.assertMatches("boss@gmail.com", ["boss@gmail.com"], ["boss@gmail.co"])
        self.assertMatches("{alice,bob}@x.com", ["alice@x.com", "bob@x.com"], ["carol@x.com"])
        self.assertMatches("*", ["", "anything@at.all"])

    def test_star_and_double_star(self):
        """'*' does not cross '/', '**' does."""
        self.assertMatches("a*b", ["ab", "axxb"], ["a/b"])
        self.assertMatches("a**b", ["a/b", "ab"])

    def test_question_mark(self):
        """'?' matches exactly one character."""
        self.assertMatches("?@x.com", ["a@x.com"], ["@x.com", "ab@x.com"])

    def test_classes(self):
        """Sets, ranges and negated sets ('!' or '^')."""
        self.assertMatches("[abc]@x", ["b@x"], ["d@x"])
        self.assertMatches("[a-c]@x", ["b@x"], ["d@x"])
        self.assertMatches("[!a]@x", ["b@x"], ["a@x"])
        self.assertMatches("[^a]@x", ["b@x"], ["a@x"])
        self.assertMatches("[a\\-c]@x", ["-@x", "c@x"], ["b@x"])
        self.assertMatches("[-a]@x", ["-@x"])

    def test_nested_braces(self):
        """Alternatives nest and may hold wildcards; commas outside braces are literal."""
        self.assertMatches("{a,{b,c*}}@x", ["a@x", "b@x", "cde@x"], ["d@x"])
        self.assertMatches("a,b", ["a,b"], ["a"])

    def test_negation(self):
        """A leading '!' negates the whole pattern; two cancel."""
        self.assertMatches("!*@spam.com", ["a@ham.com"], ["a@spam.com"])
        self.assertMatches("!!*@spam.com", ["a@spam.com"], ["a@ham.com"])

    def test_escape(self):
        """A backslash makes the next character literal."""
        self.assertMatches("\\*@x", ["*@x"], ["a@x"])
        self.assertMatches("\\{a\\}", ["{a}"])

    def test_literal(self):
        """literal() matches its address alone, case aside, glob characters and all."""
        for address in ("ops@x.example", "!a*b?{c,d}[e]\\f@x.example"):
            self.assertMatches(trust.literal(address), [address, address.upper()],
                               ["x" + address, address + "x", "ops@y.example"])
        self.assertMatches(trust.literal("a*@x.example"), ["a*@x.example"], ["ab@x.example"])

    def test_case_insensitive(self):
        """Pattern and text are compared lower-cased (aimx decision)."""
        self.assertMatches("*@Company.COM", ["boss@company.com", "BOSS@company.com"])

    def test_regex_characters_literal(self):
        """Regex metacharacters in a pattern are literal."""
        self.assertMatches("a.b+c@x", ["a.b+c@x"], ["axb+c@x", "a.bbc@x"])

    def test_invalid(self):
        """Invalid patterns raise ValueError naming the pattern."""
        for pattern in ("[abc", "{a,b", "a\\", "[z-a]", "[]"):
            e = self.assertRaises(ValueError, trust.glob_match, pattern, "x")
            self.assertIn(repr(pattern), str(e))


def passing(domain="company.com", aligned=True, **extra) -> DkimResult:
    headers = frozenset({"from", "to", "subject", "date", "message-id", "content-type"})
    return DkimResult(domain, "sel", "rsa-sha256", PASS, aligned, signed_headers=headers,
                      **extra)


def auth(*signatures: DkimResult, dmarc_temperror=False) -> AuthResults:
    return AuthResults(dkim=PASS if any(s.passed for s in signatures) else "none",
                       spf="none", dmarc="none", signatures=signatures,
                       dmarc_temperror=dmarc_temperror)


def ident(from_="boss@company.com", *extra):
    return from_headers([("From", from_), ("Subject", "s"), *extra])


class EvaluateTests(SynchronousTestCase):
    senders = ("*@company.com",)

    def verdict(self, from_="boss@company.com", *signatures, policy="verified",
                senders=senders, extra=()):
        if not signatures:
            signatures = (passing(),)
        return trust.evaluate(policy, senders, ident(from_, *extra), auth(*signatures))

    def test_policy_none(self):
        """Policy none is not evaluated: "none", no reason."""
        self.assertEqual(self.verdict(policy="none"),
                         Verdict("none", False, "boss@company.com", None))

    def test_verified(self):
        """Case 9: allowlisted + aligned DKIM is true; without DKIM or not listed, false."""
        self.assertEqual(self.verdict(), Verdict("true", True, "boss@company.com"))
        self.assertEqual(
            trust.evaluate("verified", self.senders, ident(), auth()),
            Verdict("false", True, "boss@company.com", "no valid DKIM signature"))
        self.assertEqual(self.verdict("x@other.com", passing("other.com")),
                         Verdict("false", False, "x@other.com",
                                 "sender not in trusted_senders"))

    def test_case_insensitive(self):
        """Case 10: upper-case From and pattern still match."""
        self.assertEqual(self.verdict("Boss <BOSS@Company.COM>").trusted, "true")
        self.assertEqual(self.verdict("Boss <BOSS@Company.COM>",
                                      senders=("*@Company.com",)).trusted, "true")

    def test_empty_list(self):
        """Case 11: an empty list trusts nobody."""
        self.assertEqual(self.verdict(senders=()).reason, "sender not in trusted_senders")

    def test_invalid_pattern_matches_nothing(self):
        """An invalid pattern that slipped past validation allows nobody."""
        self.assertEqual(self.verdict(senders=("[bad", "*@company.com")).trusted, "true")
        self.assertEqual(self.verdict(senders=("[bad",)).trusted, "false")

    def test_unknown_policy(self):
        """An unknown policy fails closed."""
        self.assertEqual(self.verdict(policy="maybe").trusted, "false")

    def test_dkim_reasons(self):
        """Each way the DKIM evidence falls short is named."""
        cases = [
            (passing("evil.com", aligned=False), "no DKIM signature aligned with company.com"),
            (passing(partial_body=True), "signature covers only part of the body (l=)"),
            (attrs.evolve(passing(), result=FAIL), "DKIM signature of company.com did not verify"),
            (attrs.evolve(passing(), result=TEMPERROR),
             "DKIM key of company.com could not be looked up (temporary error)"),
            (attrs.evolve(passing(), result=FAIL, algorithm="rsa-sha1"),
             "signature uses rsa-sha1 (RFC 8301)"),
            (attrs.evolve(passing(), signed_headers=frozenset({"from"})),
             "signature does not cover the Subject header"),
        ]
        for signature, reason in cases:
            self.assertEqual(self.verdict("boss@company.com", signature).reason, reason)

    def test_one_good_signature_is_enough(self):
        """A good aligned signature trusts, whatever else is there."""
        self.assertEqual(self.verdict("boss@company.com", passing(partial_body=True),
                                      attrs.evolve(passing(), result=FAIL), passing()).trusted,
                         "true")

    def test_reply_to_must_be_signed(self):
        """A Reply-To the signature does not cover is not trusted (replayed, or added)."""
        v = self.verdict("boss@company.com", passing(), extra=[("Reply-To", "eve@evil.com")])
        self.assertEqual(v.reason, "signature does not cover the Reply-To header")

    def test_hostile_from_table(self):
        """Hostile From values with an allow-all list and an aligned pass for the domain the
        value claims: trust only where the author is clean, never anything else."""
        for value, author, problem in HOSTILE_FROM:
            signature = passing(domain="company.com")
            if author is not None:
                signature = passing(domain=author.rpartition("@")[2])
            v = trust.evaluate("verified", ("*",), ident(value), auth(signature))
            if problem is None:
                self.assertEqual((v.trusted, v.sender), ("true", author), value)
            else:
                self.assertEqual((v.trusted, v.reason), ("false", problem), value)

    def test_allowlist_sees_the_parsed_address(self):
        """The attacks of the issue: the allowlist boss@company.com never matches them."""
        for value in ('"<boss@company.com>"@evil.com', "eve@evil.com (<boss@company.com>)",
                      '=?utf-8?b?PGJvc3NAY29tcGFueS5jb20+?= <eve@evil.com>',
                      '"Boss" <eve@evil.com>, <boss@company.com>'):
            v = trust.evaluate("verified", ("boss@company.com",), ident(value),
                               auth(passing("evil.com")))
            self.assertEqual(v.trusted, "false", value)
            self.assertFalse(v.allowlisted, value)


class MustRetryTests(SynchronousTestCase):
    """451 4.4.3 only when a temporary failure could turn an allow-listed author trusted."""

    def test_cases(self):
        temp = attrs.evolve(passing(), result=TEMPERROR)
        listed = [("verified", ("*@company.com",))]
        self.assertTrue(trust.must_retry(auth(temp), ident(), listed))
        self.assertTrue(trust.must_retry(auth(passing(), dmarc_temperror=True), ident(), listed))
        self.assertFalse(trust.must_retry(auth(passing()), ident(), listed))
        self.assertFalse(trust.must_retry(auth(attrs.evolve(temp, aligned=False)), ident(),
                                          listed))
        self.assertFalse(trust.must_retry(auth(temp), ident("eve@evil.com"), listed))
        self.assertFalse(trust.must_retry(auth(temp), ident(), [("none", ("*",))]))
        self.assertFalse(trust.must_retry(auth(temp), ident('"boss"@company.com'), listed))
        self.assertTrue(trust.must_retry(auth(temp), ident(),
                                         [("verified", ()), *listed]))


class HookFiresTests(SynchronousTestCase):
    def test_gate(self):
        """Case 13: only "true" fires a default hook; fire_on_untrusted always fires."""
        self.assertTrue(trust.hook_fires("true", False))
        self.assertFalse(trust.hook_fires("false", False))
        self.assertFalse(trust.hook_fires("none", False))
        for trusted in ("true", "false", "none"):
            self.assertTrue(trust.hook_fires(trusted, True))
