"""Tests for aimx.core.trust: sender patterns, the trust verdict and the hook gate."""

from twisted.trial.unittest import SynchronousTestCase

from aimx.core import trust


class GlobMatchTests(SynchronousTestCase):
    def assertMatches(self, pattern, yes=(), no=()):
        for text in yes:
            self.assertTrue(trust.glob_match(pattern, text), (pattern, text))
        for text in no:
            self.assertFalse(trust.glob_match(pattern, text), (pattern, text))

    def test_spec_examples(self):
        """The examples of spec §5.1."""
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


class BareLowerTests(SynchronousTestCase):
    def test_forms(self):
        """The address inside the last '<...>', else the whole value, lower-cased."""
        self.assertEqual(trust.bare_lower("Boss <BOSS@Company.COM>"), "boss@company.com")
        self.assertEqual(trust.bare_lower('"a <x@y>" <Real@Z.com>'), "real@z.com")
        self.assertEqual(trust.bare_lower("Alice@Example.com"), "alice@example.com")
        self.assertEqual(trust.bare_lower("x <open@end"), "open@end")
        self.assertEqual(trust.bare_lower(""), "")


class EvaluateTests(SynchronousTestCase):
    senders = ("*@company.com",)

    def test_policy_none(self):
        """Policy none is not evaluated: ("none", False)."""
        self.assertEqual(trust.evaluate("none", ("*",), "boss@company.com", True),
                         ("none", False))

    def test_verified(self):
        """Case 9: allowlisted + aligned DKIM is true; without DKIM or not listed, false."""
        self.assertEqual(trust.evaluate("verified", self.senders, "boss@company.com", True),
                         ("true", True))
        self.assertEqual(trust.evaluate("verified", self.senders, "boss@company.com", False),
                         ("false", True))
        self.assertEqual(trust.evaluate("verified", self.senders, "x@other.com", True),
                         ("false", False))

    def test_case_insensitive(self):
        """Case 10: upper-case From and pattern still match."""
        self.assertEqual(trust.evaluate("verified", self.senders, "Boss <BOSS@Company.COM>",
                                        True), ("true", True))
        self.assertEqual(trust.evaluate("verified", ("*@Company.com",),
                                        "Boss <BOSS@Company.COM>", True), ("true", True))

    def test_empty_list(self):
        """Case 11: an empty list trusts nobody."""
        self.assertEqual(trust.evaluate("verified", (), "boss@company.com", True),
                         ("false", False))

    def test_invalid_pattern_matches_nothing(self):
        """An invalid pattern that slipped past validation allows nobody."""
        self.assertEqual(trust.evaluate("verified", ("[bad", "*@company.com"),
                                        "boss@company.com", True), ("true", True))
        self.assertEqual(trust.evaluate("verified", ("[bad",), "[bad", True),
                         ("false", False))

    def test_unknown_policy(self):
        """An unknown policy fails closed."""
        self.assertEqual(trust.evaluate("maybe", ("*",), "boss@company.com", True),
                         ("false", False))


class HookFiresTests(SynchronousTestCase):
    def test_gate(self):
        """Case 13: only "true" fires a default hook; fire_on_untrusted always fires."""
        self.assertTrue(trust.hook_fires("true", False))
        self.assertFalse(trust.hook_fires("false", False))
        self.assertFalse(trust.hook_fires("none", False))
        for trusted in ("true", "false", "none"):
            self.assertTrue(trust.hook_fires(trusted, True))
