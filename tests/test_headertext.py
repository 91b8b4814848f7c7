"""Tests for L{aimx.core.headertext}."""

from twisted.trial.unittest import SynchronousTestCase

from aimx.core.headertext import decode_words


class DecodeWordsTests(SynchronousTestCase):
    """RFC 2047 encoded words in unstructured text."""

    def test_whole_word(self) -> None:
        """An encoded word standing alone between spaces is decoded."""
        self.assertEqual(decode_words("a =?utf-8?q?caf=C3=A9?= b"), "a café b")

    def test_inside_a_word_is_literal(self) -> None:
        """C{foo=?utf-8?q?bar?=} is not an encoded word (RFC 2047 §5): text runs into it."""
        for text in ("foo=?utf-8?q?bar?=", "=?utf-8?q?bar?=baz", "(=?utf-8?q?bar?=)",
                     "x =?utf-8?q?bar?=. y"):
            self.assertEqual(decode_words(text), text)

    def test_adjacent_words_joined(self) -> None:
        """Whitespace between adjacent encoded words is dropped (RFC 2047 §6.2)."""
        self.assertEqual(
            decode_words("=?utf-8?b?w6k=?= =?utf-8?B?w6k=?= and =?iso-8859-1?q?caf=E9?="),
            "éé and café",
        )

    def test_character_split_across_words(self) -> None:
        """A UTF-8 character split across two words of one charset survives."""
        self.assertEqual(decode_words("=?utf-8?q?=C3?=\r\n =?utf-8?q?=A9t=C3=A9?="), "été")

    def test_words_written_together(self) -> None:
        """A word made only of encoded words written without a space is decoded, as
        mail clients do; one with plain text attached is not."""
        self.assertEqual(decode_words("=?utf-8?q?a?==?utf-8?q?b?= c"), "ab c")
        self.assertEqual(decode_words("=?utf-8?q?a?==?utf-8?q?b?=c"), "=?utf-8?q?a?==?utf-8?q?b?=c")

    def test_plain_word_between(self) -> None:
        """A plain word between encoded words keeps its spaces."""
        self.assertEqual(decode_words("=?utf-8?q?a?= and =?utf-8?q?b?="), "a and b")

    def test_language_suffix(self) -> None:
        """RFC 2231 §5 C{charset*lang} is accepted."""
        self.assertEqual(decode_words("=?utf-8*en?q?hi?="), "hi")

    def test_spaces_kept(self) -> None:
        """Leading, trailing and repeated spaces around plain text are kept."""
        self.assertEqual(decode_words("  a  =?utf-8?q?b?=  "), "  a  b  ")
