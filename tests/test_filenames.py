"""Tests for L{aimx.core.filenames}."""

import os
import unicodedata
from datetime import datetime, timedelta, timezone

from twisted.trial.unittest import SynchronousTestCase

from aimx.core.filenames import (
    base_stem,
    dedupe_attachment_name,
    is_valid_id,
    pick_stem,
    sanitize_attachment_name,
    slugify,
    stem_candidates,
)

WHEN = datetime(2025, 3, 14, 15, 9, 26, tzinfo=timezone.utc)
BASE = "2025-03-14-150926-hello"


class SlugifyTests(SynchronousTestCase):
    """L{slugify}."""

    def test_words(self) -> None:
        """Words are lowercased and joined by single dashes."""
        self.assertEqual(slugify("Hello World"), "hello-world")

    def test_punctuation_runs(self) -> None:
        """A run of other characters becomes one dash."""
        self.assertEqual(slugify("foo!@#$bar"), "foo-bar")

    def test_edges_trimmed(self) -> None:
        """Leading and trailing punctuation leaves no dash."""
        self.assertEqual(slugify("!!!hello!!!"), "hello")

    def test_digits(self) -> None:
        """Digits are kept."""
        self.assertEqual(slugify("Invoice #123 for 2025"), "invoice-123-for-2025")

    def test_truncated(self) -> None:
        """The slug is cut to 20 code points without a trailing dash."""
        self.assertEqual(
            slugify("This is a very long subject that should be truncated"),
            "this-is-a-very-long",
        )

    def test_empty_fallback(self) -> None:
        """Nothing alphanumeric gives C{no-subject}."""
        for subject in ("", "   ", "!!!???@@@", "---"):
            self.assertEqual(slugify(subject), "no-subject", subject)

    def test_missing_subject_value(self) -> None:
        """The missing-subject placeholder slugs to C{no-subject}."""
        self.assertEqual(slugify("(no subject)"), "no-subject")

    def test_normalisation(self) -> None:
        """NFD and NFC forms give the same slug."""
        self.assertEqual(
            slugify(unicodedata.normalize("NFD", "Héllo")),
            slugify(unicodedata.normalize("NFC", "Héllo")),
        )

    def test_unicode_letters(self) -> None:
        """Non-ASCII letters are kept."""
        slug = slugify("Héllo Wörld!")
        self.assertTrue(slug.startswith("héllo"))
        self.assertIn("wörld", slug)

    def test_underscore_is_separator(self) -> None:
        """Underscore is not alphanumeric."""
        self.assertEqual(slugify("a_b"), "a-b")

    def test_combining_marks_continue_the_word(self) -> None:
        """Marks (category M) stay in the word they follow: Indic words are not
        split at a virama or vowel sign (a departure from AIMX's slugs)."""
        self.assertEqual(slugify("नमस्ते दुनिया"), "नमस्ते-दुनिया")
        self.assertEqual(slugify("தமிழ் மொழி"), "தமிழ்-மொழி")
        self.assertEqual(slugify("İstanbul"), "i̇stanbul")  # lower() gives i + U+0307

    def test_leading_mark_is_a_separator(self) -> None:
        """A mark that follows no letter starts no word."""
        self.assertEqual(slugify("\u0301abc"), "abc")
        self.assertEqual(slugify("x \u0301 y"), "x-y")

    def test_cut_keeps_marks_with_their_base(self) -> None:
        """The 20-code-point cut never separates a base character from its marks."""
        # 19 letters, then a letter with two marks (no precomposed form): 22 code points.
        self.assertEqual(slugify("a" * 19 + "q\u0302\u0303"), "a" * 19)
        self.assertEqual(slugify("a" * 17 + "q\u0302\u0303"), "a" * 17 + "q\u0302\u0303")
        # Code point 21 is a virama: its base (code point 20) goes with it.
        slug = slugify("ab नमस्ते दुनिया नमस्ते")
        self.assertEqual(slug, "ab-नमस्ते-दुनिया-नम")
        self.assertEqual(len(slug), 19)

    def test_cluster_longer_than_the_cut(self) -> None:
        """A first letter carrying more than 19 marks leaves nothing: no-subject."""
        self.assertEqual(slugify("a" + "\u0301" * 30), "no-subject")


class StemTests(SynchronousTestCase):
    """Stem allocation."""

    def test_base_stem(self) -> None:
        """The base stem is the UTC time and the slug."""
        self.assertEqual(base_stem(WHEN, "Hello"), BASE)

    def test_base_stem_converts_to_utc(self) -> None:
        """An aware time in another zone is converted to UTC."""
        local = WHEN.astimezone(timezone(timedelta(hours=2)))
        self.assertEqual(base_stem(local, "Hello"), BASE)

    def test_base_stem_naive_is_utc(self) -> None:
        """A naive time is taken as UTC."""
        self.assertEqual(base_stem(WHEN.replace(tzinfo=None), "Hello"), BASE)

    def test_candidates(self) -> None:
        """Candidates are base, base-2, base-3."""
        candidates = stem_candidates("s")
        self.assertEqual([next(candidates) for _ in range(3)], ["s", "s-2", "s-3"])

    def test_first_message(self) -> None:
        """An empty directory gives the base stem."""
        self.assertEqual(pick_stem(BASE, set().__contains__, bundle=False), BASE)

    def test_same_second(self) -> None:
        """The second and third same-second messages get -2 and -3."""
        names = {BASE + ".md"}
        self.assertEqual(pick_stem(BASE, names.__contains__, bundle=False), BASE + "-2")
        names.add(BASE + "-2.md")
        self.assertEqual(pick_stem(BASE, names.__contains__, bundle=False), BASE + "-3")

    def test_bundle_dir_blocks_flat(self) -> None:
        """An existing bundle directory forces a flat message to -2."""
        names = {BASE}
        self.assertEqual(pick_stem(BASE, names.__contains__, bundle=False), BASE + "-2")

    def test_flat_file_does_not_block_bundle(self) -> None:
        """An existing flat C{<stem>.md} does not block a bundle."""
        names = {BASE + ".md"}
        self.assertEqual(pick_stem(BASE, names.__contains__, bundle=True), BASE)

    def test_bundle_dir_blocks_bundle(self) -> None:
        """An existing bundle directory moves a bundle to -2."""
        names = {BASE, BASE + "-2.md"}
        self.assertEqual(pick_stem(BASE, names.__contains__, bundle=True), BASE + "-2")


class SanitizeAttachmentNameTests(SynchronousTestCase):
    """L{sanitize_attachment_name}."""

    def test_plain(self) -> None:
        """An ordinary name is kept."""
        self.assertEqual(sanitize_attachment_name("notes.txt", 0), "notes.txt")

    def test_traversal(self) -> None:
        """Only the last path component is kept."""
        self.assertEqual(sanitize_attachment_name("../../../etc/cron.d/evil", 0), "evil")

    def test_dot_components(self) -> None:
        """A name that is C{.}, C{..} or ends in C{/..} falls back."""
        for raw in (".", "..", "a/..", "a/b/."):
            self.assertEqual(sanitize_attachment_name(raw, 2), "attachment-2", raw)

    def test_nul(self) -> None:
        """NUL is removed."""
        name = sanitize_attachment_name("bad\0name.txt", 0)
        self.assertNotIn("\0", name)
        self.assertTrue(name.endswith("name.txt"))

    def test_crlf(self) -> None:
        """CR and LF are removed."""
        name = sanitize_attachment_name("report\r\nline2.pdf", 0)
        self.assertNotIn("\r", name)
        self.assertNotIn("\n", name)
        self.assertTrue(name.endswith(".pdf"))

    def test_leading_dash(self) -> None:
        """Leading dashes are trimmed."""
        self.assertEqual(sanitize_attachment_name("-rf", 0), "rf")

    def test_backslashes(self) -> None:
        """Backslashes are replaced."""
        name = sanitize_attachment_name("a\\b\\c.pdf", 0)
        self.assertNotIn("\\", name)
        self.assertTrue(name.endswith(".pdf"))

    def test_separator_runs(self) -> None:
        """A run of unsafe characters becomes a single underscore."""
        name = sanitize_attachment_name("a////b\\\\c.pdf", 0)
        self.assertNotIn("__", name)
        self.assertEqual(name, "b_c.pdf")

    def test_only_controls(self) -> None:
        """Nothing but control characters falls back to the index."""
        self.assertEqual(
            sanitize_attachment_name("\0\0\r\n\x01\x02", 3), "attachment-3"
        )

    def test_empty(self) -> None:
        """An empty name falls back to the index."""
        self.assertEqual(sanitize_attachment_name("", 0), "attachment-0")

    def test_long(self) -> None:
        """A long name is cut to at most 200 UTF-8 bytes."""
        self.assertLessEqual(len(sanitize_attachment_name("a" * 500, 0).encode()), 200)

    def test_long_multibyte(self) -> None:
        """The cut falls on a character boundary and is trimmed again."""
        name = sanitize_attachment_name("é" * 99 + "-" + "é" * 50, 0)
        self.assertEqual(name, "é" * 99)

    def test_nfc(self) -> None:
        """Names are NFC-normalised."""
        self.assertEqual(
            sanitize_attachment_name(unicodedata.normalize("NFD", "café.pdf"), 0),
            unicodedata.normalize("NFC", "café.pdf"),
        )

    def test_bidi_and_zero_width(self) -> None:
        """RLO (U+202E), ZWJ (U+200D), C1 controls and BOM do not survive."""
        name = sanitize_attachment_name("\u202eevil\u200dfdp.exe\u0085\ufeff", 0)
        for char in "\u202e\u200d\u0085\ufeff":
            self.assertNotIn(char, name)
        self.assertEqual(name, "evil_fdp.exe")

    def test_lone_surrogates(self) -> None:
        """Lone surrogates (which no file system encoding takes) are unsafe."""
        for raw, expected in (("a\ud800b.pdf", "a_b.pdf"), ("\udcff\udc80x", "x"),
                              ("\udfff", "attachment-4")):
            name = sanitize_attachment_name(raw, 4)
            self.assertEqual(name, expected)
            os.fsencode(name)

    def test_hidden_file(self) -> None:
        """A leading dot is trimmed so no dotfile is created."""
        self.assertEqual(sanitize_attachment_name(".bashrc", 0), "bashrc")

    def test_whitespace_trimmed(self) -> None:
        """Surrounding whitespace and dots are trimmed."""
        self.assertEqual(sanitize_attachment_name("  report.pdf . ", 0), "report.pdf")


class DedupeAttachmentNameTests(SynchronousTestCase):
    """L{dedupe_attachment_name}."""

    def test_free(self) -> None:
        """A free name is kept."""
        self.assertEqual(dedupe_attachment_name("report.pdf", set()), "report.pdf")

    def test_counter_from_one(self) -> None:
        """A taken name gets -1, then -2."""
        self.assertEqual(
            dedupe_attachment_name("report.pdf", {"report.pdf"}), "report-1.pdf"
        )
        self.assertEqual(
            dedupe_attachment_name("report.pdf", {"report.pdf", "report-1.pdf"}),
            "report-2.pdf",
        )

    def test_last_dot(self) -> None:
        """The extension starts at the last dot."""
        self.assertEqual(dedupe_attachment_name("a.tar.gz", {"a.tar.gz"}), "a.tar-1.gz")

    def test_no_extension(self) -> None:
        """A name without a dot gets a plain suffix."""
        self.assertEqual(dedupe_attachment_name("README", {"README"}), "README-1")

    def test_message_file_taken(self) -> None:
        """An attachment named like the message file is renamed."""
        taken = {"2025-03-14-150926-hello.md"}
        self.assertEqual(
            dedupe_attachment_name("2025-03-14-150926-hello.md", taken),
            "2025-03-14-150926-hello-1.md",
        )

    def test_taken_not_changed(self) -> None:
        """The set of taken names is not modified."""
        taken = {"x"}
        dedupe_attachment_name("x", taken)
        self.assertEqual(taken, {"x"})


class IsValidIdTests(SynchronousTestCase):
    """L{is_valid_id}."""

    def test_valid(self) -> None:
        """A normal stem is valid."""
        self.assertTrue(is_valid_id("2025-03-14-150926-hello-2"))

    def test_invalid(self) -> None:
        """Empty ids and ids with C{..}, C{/}, C{\\} or NUL are invalid."""
        for bad in ("", "../x", "a/b", "a\\b", "a\0b", ".."):
            self.assertFalse(is_valid_id(bad), bad)


class DedupeScaleTests(SynchronousTestCase):
    def test_many_same_names_linear(self):
        """With the shared memo, 20 000 parts named alike take one probe each, not N."""
        tried = {}

        class Counting(set):
            probes = 0

            def __contains__(self, item):
                Counting.probes += 1
                return super().__contains__(item)

        taken = Counting()
        for _ in range(20_000):
            taken.add(dedupe_attachment_name("a.txt", taken, tried))
        self.assertEqual(len(taken), 20_000)
        self.assertLess(Counting.probes, 3 * 20_000)
