"""Tests for L{aimx.core.headertext}."""

from twisted.trial.unittest import SynchronousTestCase

from aimx.core.headertext import MAX_SECTIONS, decode_name, decode_words, parameter


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


class ParameterTests(SynchronousTestCase):
    """MIME parameters read from the raw field (RFC 2045, RFC 2231, RFC 6532)."""

    def test_plain_and_quoted(self) -> None:
        """Tokens and quoted strings; names are case-insensitive; absent is None."""
        self.assertEqual(parameter('attachment; FileName="a b.pdf"', "filename"), "a b.pdf")
        self.assertEqual(parameter("text/plain; name=a.txt ; x=y", "name"), "a.txt")
        self.assertIsNone(parameter("attachment", "filename"))
        self.assertIsNone(parameter('attachment; x="filename=no"', "filename"))

    def test_surrogate_escaped_utf8(self) -> None:
        """compat32's surrogate escapes of 8-bit bytes are read as UTF-8."""
        field = 'attachment; filename="caf\udcc3\udca9.txt"'
        self.assertEqual(parameter(field, "filename"), "café.txt")

    def test_sections_stop_at_a_gap(self) -> None:
        """Sections are joined in order up to the first missing one."""
        field = "a; name*0=ab; name*2=zz; name*1=cd"
        self.assertEqual(parameter(field, "name"), "abcdzz")
        self.assertEqual(parameter("a; name*0=ab; name*2=zz", "name"), "ab")

    def test_many_sections_bounded(self) -> None:
        """At most MAX_SECTIONS sections are read."""
        field = "a" + "".join(f"; name*{i}=x" for i in range(MAX_SECTIONS + 50))
        self.assertEqual(parameter(field, "name"), "x" * MAX_SECTIONS)

    def test_unterminated_quote(self) -> None:
        """An unterminated quoted string runs to the end of the field."""
        self.assertEqual(parameter('a; name="x; y', "name"), "x; y")

    def test_hostile_charsets(self) -> None:
        """Unknown and non-text charsets fall back to UTF-8, then Windows-1252."""
        for charset in ("base64", "rot13", "zlib", "x-nope", "utf-16", "idna", "utf-7"):
            value = parameter(f"a; name*={charset}''%C3%A9%FF.txt", "name")
            self.assertNotIn("\ufffd", value, charset)
            value.encode("utf-8")


class DecodeNameTests(SynchronousTestCase):
    """L{decode_name}: bytes of a name as text, without replacement characters."""

    def test_order(self) -> None:
        """Declared charset, then UTF-8, then Windows-1252, then Latin-1."""
        self.assertEqual(decode_name(b"\xe9", "iso-8859-1"), "é")
        self.assertEqual(decode_name("é".encode()), "é")
        self.assertEqual(decode_name(b"\x93x\x94"), "\u201cx\u201d")
        self.assertEqual(decode_name(b"\x81"), "\x81")
