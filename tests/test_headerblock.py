"""Tests for L{aimx.core.headerblock}: the one split of the header block."""

from twisted.trial.unittest import SynchronousTestCase

from aimx.core.headerblock import HeaderBlockError, MAX_FIELDS, as_text, same_fields, split


class SplitTests(SynchronousTestCase):
    def test_fields_and_body_offset(self):
        """Fields keep their folds (CRLF-joined); the offset is just past the empty line."""
        raw = b"A: 1\r\nB: two\r\n  folded\r\n\r\nbody\r\n"
        fields, after = split(raw)
        self.assertEqual(fields, [[b"A", b" 1\r\n"], [b"B", b" two\r\n  folded\r\n"]])
        self.assertEqual(raw[after:], b"body\r\n")

    def test_mbox_line_first_only(self):
        """A "From " line is skipped on the first line and refused anywhere else."""
        self.assertEqual(split(b"From x y\r\nA: 1\r\n\r\n")[0], [[b"A", b" 1\r\n"]])
        for raw in (b"A: 1\r\nFrom the CEO: wire\r\n\r\nbody",
                    b"Subject: Wire 10k\r\nFrom x\r\n only after I confirm\r\n\r\n"):
            self.assertRaises(HeaderBlockError, split, raw)

    def test_refusals(self):
        """A continuation before any field, a stray line, too many fields."""
        for raw in (b" cont\r\nA: 1\r\n\r\n", b"A: 1\r\nno colon here\r\n\r\n",
                    b"X: y\r\n" * (MAX_FIELDS + 1) + b"\r\n"):
            self.assertRaises(HeaderBlockError, split, raw)
        self.assertEqual(len(split(b"X: y\r\n" * MAX_FIELDS + b"\r\n")[0]), MAX_FIELDS)

    def test_bare_cr_stays_in_the_line(self):
        """Lines end at LF only: a bare CR is part of the field (the stdlib splits there)."""
        fields, _ = split(b"X-Pad: x\r\rSubject: forged\r\nSubject: real\r\n\r\n")
        self.assertEqual([name for name, _ in fields], [b"X-Pad", b"Subject"])

    def test_many_folds_linear(self):
        """A field of 200 000 continuation lines is joined once (it would be quadratic)."""
        fields, _ = split(b"X: a\r\n" + b" y\r\n" * 200_000 + b"\r\nbody")
        self.assertEqual(fields[0][1].count(b"\r\n"), 200_001)


class CompareTests(SynchronousTestCase):
    def test_same_and_different(self):
        """Folds and line ends aside, the same fields compare equal; others do not."""
        fields = as_text(split(b"From: a@b\r\nSubject: one\r\n two\r\n\r\n")[0])
        self.assertEqual(fields, [("From", "a@b"), ("Subject", "one\r\n two")])
        self.assertTrue(same_fields(fields, [("from", "a@b"), ("Subject", "one\n two")]))
        self.assertFalse(same_fields(fields, [("From", "a@b")]))
        self.assertFalse(same_fields(fields, [("From", "a@b"), ("Subject", "other")]))
