"""Tests for L{aimx.core.mimesplit}: the stdlib's tree, built without copying bodies."""

import base64
import quopri
import random
import tracemalloc

from twisted.trial.unittest import SynchronousTestCase

from aimx.core import mimesplit
from aimx.core.message import parse_message
from tests import test_message
from tests.test_message import many_parts, stored_fields


def outcome(raw: bytes):
    """C{parse_message(raw)} (which never raises)."""
    return parse_message(raw)


def split_leaves(raw: bytes) -> int:
    """How many parts of C{raw} the splitter leaves as a L{mimesplit.Span}."""
    try:
        msg = mimesplit.parse(raw)
    except RecursionError:  # nested too deep for the stdlib, as parse_message reports
        return 0
    return sum(isinstance(part.get_payload(), mimesplit.Span) for part in msg.walk())


def attachment_message(data: bytes, nl: bytes = b"\r\n") -> bytes:
    """A text part and one base64 attachment holding C{data}."""
    encoded = base64.encodebytes(data).replace(b"\n", nl)
    return nl.join(
        [
            b"From: a@example.com",
            b'Content-Type: multipart/mixed; boundary="B"',
            b"",
            b"--B",
            b"Content-Type: text/plain",
            b"",
            b"Hello.",
            b"--B",
            b'Content-Type: application/octet-stream; name="d.bin"',
            b"Content-Transfer-Encoding: base64",
            b"",
            encoded + b"--B--",
            b"",
        ]
    )


def random_message(rng: random.Random) -> bytes:
    """A random MIME message: nested multiparts, odd delimiters, every transfer
    encoding, forwarded messages, broken and truncated structure."""

    def leaf(depth: int) -> str:
        kind = rng.choice(
            ["text/plain", "text/html", "image/png", "application/pdf", "text/csv",
             "message/rfc822", "message/delivery-status", None, "multipart"]
        )
        if kind == "multipart" and depth < 3:
            return entity(depth + 1)
        headers = [f"Content-Type: {kind}"] if kind and kind != "multipart" else []
        if rng.random() < 0.3:
            headers.append('Content-Disposition: attachment; filename="a.txt"')
        cte = rng.choice(["base64", "quoted-printable", "7bit", None, "x-uuencode", "Base64"])
        text = "".join(rng.choice("ab dé\t=.-\n") for _ in range(rng.randint(0, 120)))
        if kind == "message/rfc822":
            body, cte = (entity(depth + 1) if depth < 3 else "Subject: x\n\nhi\n"), None
        elif kind == "message/delivery-status":
            body = "Reporting-MTA: dns; x\n\nAction: failed\n"
        elif cte and cte.lower() == "base64":
            body = base64.encodebytes(text.encode()).decode()
            body = rng.choice([body, body.rstrip("=\n") + "\n", body + "=\n", "==" + body,
                               body.replace("A", "A ", 1), body + "QQ\n", body[:-2] + "\n"])
        elif cte == "quoted-printable":
            body = rng.choice([quopri.encodestring(text.encode()).decode(), text + "=\n=4=ZZ="])
        else:
            body = text
        if cte:
            headers.append(f"Content-Transfer-Encoding: {cte}")
        if rng.random() < 0.05:
            headers.append(rng.choice(["From nobody", " continued", "--B0", ": no name"]))
        return "\n".join(headers) + rng.choice(["\n\n"] * 9 + ["\n"]) + body

    def entity(depth: int) -> str:
        subtype = rng.choice(["mixed", "alternative", "related", "digest"])
        boundary = rng.choice(["B", "=_x.y", "a:b", "a b", "--d", "q'(+)"]) + str(depth)
        out = f'Content-Type: multipart/{subtype}; boundary="{boundary}"\n\n'
        out += rng.choice(["", "preamble\n", "\n"])
        for _ in range(rng.randint(0, 3)):
            out += f"--{boundary}" + rng.choice(["", "", "", " ", "--"]) + "\n"
            if rng.random() < 0.05:
                out += f"--{boundary}\n"
            part = leaf(depth)
            out += part + ("\n" if not part.endswith("\n") or rng.random() < 0.7 else "")
        if rng.random() < 0.85:
            out += f"--{boundary}--" + rng.choice(["", "\n", "\nepilogue\n", " x\n"])
        return out

    text = rng.choice(["From: A <a@x>\nSubject: s\n", "", "From nobody\nTo: b@y\n"])
    text += entity(0) if rng.random() < 0.8 else leaf(0)
    raw = text.encode()
    ending = rng.random()
    if ending < 0.75:
        raw = raw.replace(b"\n", b"\r\n")
    elif ending < 0.8:
        raw = raw.replace(b"\n", b"\r\n", 2)
    if rng.random() < 0.3:
        data = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(data) + 1)
            data[position : position + rng.randrange(3)] = bytes(
                rng.choice(b"\r\n-=: \tBab") for _ in range(rng.randrange(5))
            )
        raw = bytes(data)
    return raw


class EquivalenceTests(SynchronousTestCase):
    """L{parse_message} over the splitter equals it over the stdlib feed parser."""

    def assertSameAsStdlib(self, raw: bytes) -> None:
        """C{raw} gives the same result through both parsers."""
        split = outcome(raw)
        parse = mimesplit.parse
        mimesplit.parse = mimesplit.feedparse
        try:
            whole = outcome(raw)
        finally:
            mimesplit.parse = parse
        self.assertEqual(split, whole, raw[:300])

    def corpus(self) -> list[bytes]:
        """Every message that tests/test_message.py parses, each checked on the way."""
        seen = []

        def checked(raw):
            seen.append(raw)
            self.assertSameAsStdlib(raw)
            return parse_message(raw)

        self.patch(test_message, "parse_message", checked)
        for case in (test_message.HeaderTests, test_message.DateTests,
                     test_message.BodyTests, test_message.AttachmentTests,
                     test_message.MalformedTests):
            for name in sorted(n for n in dir(case) if n.startswith("test_")):
                getattr(case(name), name)()
        return seen

    def test_message_corpus(self) -> None:
        """The messages of tests/test_message.py parse as the stdlib parses them,
        and the splitter (not its fallback) handles most of them."""
        seen = self.corpus()
        self.assertGreater(len(seen), 500, len(seen))
        split = [raw for raw in seen if raw.strip() and split_leaves(raw)]
        self.assertGreater(len(split), 300)

    def test_message_corpus_small_slices(self) -> None:
        """Searching, counting and decoding in 64-byte slices changes nothing."""
        self.patch(mimesplit, "_SLICE", 64)
        self.corpus()

    def test_random_mime(self) -> None:
        """Seeded random MIME structures parse as the stdlib parses them."""
        rng = random.Random(20261122)
        split = 0
        for _ in range(300):
            raw = random_message(rng)
            for size in (1 << 20, 3, 16):
                self.patch(mimesplit, "_SLICE", size)
                self.assertSameAsStdlib(raw)
            split += bool(raw.strip() and split_leaves(raw))
        self.assertGreater(split, 100)

    def test_delimiter_like_header(self) -> None:
        """A delimiter that also looks like a header (its boundary has a colon) ends
        the headers of a part without a blank line."""
        raw = (
            b'Content-Type: multipart/mixed; boundary="a:b"\r\n\r\n--a:b\r\n'
            b"Content-Type: text/csv\r\n--a:b\r\nContent-Type: text/csv\r\n\r\nx\r\n--a:b--\r\n"
        )
        self.assertSameAsStdlib(raw)
        self.assertEqual(split_leaves(raw), 2)
        self.assertEqual(len(parse_message(raw).attachments), 2)

    def test_near_cap(self) -> None:
        """Up to the cap (999 parts, consecutive delimiters included) the tree is
        the stdlib's."""
        for count in (997, 998, 999):
            for nl in ("\r\n", "\n"):
                raw = many_parts(count, nl)
                self.assertSameAsStdlib(raw)
                self.assertEqual(len(parse_message(raw).attachments), count)
        raw = many_parts(990).replace(b"--BOUND\r\n", b"--BOUND\r\n--BOUND\r\n", 9)
        self.assertSameAsStdlib(raw)
        self.assertEqual(len(parse_message(raw).attachments), 990)

    def test_headers_alone(self) -> None:
        """L{mimesplit.parse_headers} reads the top-level fields as the feed parser."""
        rng = random.Random(20260502)
        messages = [random_message(rng) for _ in range(300)]
        messages += [b"Subject: a\rb: c\r\nX: y\r\n\r\nbody", b"From nobody\nA: b\n c\nnot\n",
                     b"A: b\r\n--x\r\nC: d\r\n", b"", b"x", b"\r\nA: b"]
        for raw in messages:
            self.assertEqual(
                list(mimesplit.parse_headers(raw).raw_items()),
                list(mimesplit.feedparse(raw).raw_items()),
                raw[:200],
            )

    def test_big_attachment(self) -> None:
        """A 3 MiB attachment decodes to the same bytes as with the stdlib."""
        data = random.Random(1).randbytes(3 << 20)
        for nl in (b"\r\n", b"\n"):
            raw = attachment_message(data, nl)
            self.assertSameAsStdlib(raw)
            self.assertEqual(parse_message(raw).attachments[0].data, data)


class StructureTests(SynchronousTestCase):
    """The tree L{mimesplit.parse} builds."""

    def test_leaves_are_spans(self) -> None:
        """Leaf bodies stay in the raw bytes, without the line end before a delimiter."""
        raw = attachment_message(b"data")
        text, attachment = mimesplit.parse(raw).get_payload()
        span = text.get_payload()
        self.assertIsInstance(span, mimesplit.Span)
        self.assertIs(span.raw, raw)
        self.assertEqual(raw[span.start : span.end], b"Hello.")
        self.assertEqual(mimesplit.payload(attachment), b"data")

    def test_lf_only(self) -> None:
        """A message with LF line ends only is split too."""
        self.assertEqual(split_leaves(attachment_message(b"x", b"\n")), 2)

    def test_mixed_line_endings(self) -> None:
        """Mixed line ends (the stdlib also breaks lines at a lone CR) go to the stdlib."""
        raw = attachment_message(b"x").replace(b"Hello.", b"Hel\rlo.")
        self.assertEqual(split_leaves(raw), 0)

    def test_forwarded_message_parsed_alone(self) -> None:
        """A message/rfc822 part is the stdlib's, the other parts stay spans."""
        inner = b"Subject: inner\r\n\r\nbody\r\n"
        raw = attachment_message(b"x").replace(
            b"Content-Type: text/plain\r\n\r\nHello.",
            b"Content-Type: message/rfc822\r\n\r\n" + inner,
        )
        forwarded, attachment = mimesplit.parse(raw).get_payload()
        (nested,) = forwarded.get_payload()
        self.assertEqual(nested["subject"], "inner")
        self.assertIsInstance(attachment.get_payload(), mimesplit.Span)
        self.assertEqual(parse_message(raw).attachments[0].data, inner)

    def test_from_line_among_headers(self) -> None:
        """A part with a C{From } line after its first header goes to the stdlib alone."""
        raw = attachment_message(b"x").replace(
            b"Content-Type: text/plain\r\n", b"Content-Type: text/plain\r\nFrom x\r\n"
        )
        text, attachment = mimesplit.parse(raw).get_payload()
        self.assertIsInstance(text.get_payload(), str)
        self.assertIsInstance(attachment.get_payload(), mimesplit.Span)


class CapTests(SynchronousTestCase):
    """The part cap: L{mimesplit.MAX_PARTS} parts, the last one the remainder."""

    def test_remainder_leaf(self) -> None:
        """After 999 parts the rest is one leaf: a span from the next delimiter
        line to the end, with the multipart's Content-Type field in front."""
        raw = many_parts(1200)
        parts = mimesplit.parse(raw).get_payload()
        self.assertEqual(len(parts), mimesplit.MAX_PARTS)
        remainder = parts[-1]
        self.assertEqual(remainder.get_content_type(), "message/rfc822")
        self.assertEqual(remainder.get_filename(), "remainder.eml")
        span = remainder.get_payload()
        self.assertEqual((span.raw[span.start : span.start + 10], span.end),
                         (b"--BOUND\r\nC", len(raw)))
        data = b'Content-Type: multipart/mixed; boundary="BOUND"\r\n\r\n' + raw[span.start :]
        self.assertEqual(mimesplit.payload(remainder), data)
        self.assertEqual(mimesplit.raw_payload(remainder), data)

    def test_enclosing_multiparts_end(self) -> None:
        """A cap reached in a nested multipart ends the enclosing ones there."""
        inner = test_message.multipart(
            "mixed", *[test_message.attachment_part(f"{i}") for i in range(1500)],
            boundary="IN",
        )
        raw = test_message.split_entity(test_message.multipart("mixed", inner, "x: y\r\n\r\nz"))
        outer = mimesplit.parse(raw).get_payload()
        self.assertEqual(len(outer), 1)
        inner_parts = outer[0].get_payload()
        self.assertEqual(len(inner_parts), 999)  # the outer delimiter counted one
        self.assertEqual(inner_parts[-1].get_filename(), "remainder.eml")
        self.assertTrue(mimesplit.payload(inner_parts[-1]).endswith(b"z\r\n--BOUND--\r\n"))

    def test_over_budget_part_is_leaf(self) -> None:
        """A part the splitter declines, with more delimiter-looking lines than
        parts left, is a leaf: its header fields and its raw body."""
        inner = "Subject: inner\r\n" + test_message.multipart(
            "mixed", *[test_message.attachment_part(f"{i}") for i in range(1000)],
            boundary="IN",
        )
        forwarded = "Content-Type: message/rfc822\r\n\r\n" + inner
        raw = test_message.split_entity(test_message.multipart("mixed", forwarded))
        (part,) = mimesplit.parse(raw).get_payload()
        self.assertEqual(part.get_content_type(), "message/rfc822")
        self.assertIsNone(part.get_payload().head)
        self.assertEqual(mimesplit.payload(part), inner.encode())

    def test_budget_shared_with_stdlib(self) -> None:
        """Parts the stdlib builds count: a forwarded message that fits the
        budget left is parsed, one that does not is a leaf."""
        forwarded = (
            "Content-Type: message/rfc822\r\n\r\nSubject: f\r\n"
            + test_message.multipart("mixed", "\r\na", "\r\nb", boundary="F")
        )
        for count, parsed in ((995, True), (997, False)):
            parts = [test_message.attachment_part(f"{i}") for i in range(count)]
            raw = test_message.split_entity(test_message.multipart("mixed", *parts, forwarded))
            last = mimesplit.parse(raw).get_payload()[-1]
            self.assertEqual(isinstance(last.get_payload(), list), parsed, count)


class FuzzTests(SynchronousTestCase):
    """Whatever the MIME structure, the message is stored."""

    def test_random_mime(self) -> None:
        """Seeded random MIME structures parse and store, plain and grown past
        the cap."""
        rng = random.Random(20260503)
        for index in range(300):
            raw = random_message(rng)
            if index % 10 == 0:
                raw += b"\r\n--B0\r\n\r\nx" * 1100
            stored_fields(parse_message(raw))


class DecodeTests(SynchronousTestCase):
    """L{mimesplit.payload} decodes as C{get_payload(decode=True)}, in slices."""

    def assertDecodesAsStdlib(self, cte: str, body: bytes) -> None:
        """A leaf with this transfer encoding and body decodes as the stdlib's."""
        raw = b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n\r\n" + body
        expected = mimesplit.feedparse(raw).get_payload(decode=True)
        for size in (1 << 20, 1, 4, 5, 7):
            self.patch(mimesplit, "_SLICE", size)
            self.assertEqual(mimesplit.payload(mimesplit.parse(raw)), expected, (size, body))

    def test_base64(self) -> None:
        """Valid, unpadded, over-padded and broken base64 decode as the stdlib's."""
        rng = random.Random(3)
        for length in range(12):
            data = base64.encodebytes(rng.randbytes(length)).replace(b"\n", b"\r\n")
            for body in (data, data.replace(b"=", b""), data.rstrip() + b"=\r\n",
                         data.rstrip() + b"==\r\n=\r\n", b"=" + data, data + b"Q\r\n",
                         data.replace(b"\r\n", b" \r\n"), data + b"*\r\n", data[:-3],
                         data + b"\r\n\r\n", b"QU\r\nJD\r\nRA\r\n==", b"QQ==\r\nQUJD\r\n",
                         b"QUI=\r\nQUJD\r\n", b"QUI\r\n=\r\n"):
                self.assertDecodesAsStdlib("base64", body)

    def test_quoted_printable(self) -> None:
        """Quoted-printable, soft breaks and bad escapes included, decodes as the stdlib's."""
        for body in (b"caf=E9 =\r\nsoft\r\nx", b"=\r\n=\r\n", b"a=\r\n", b"=ZZ=4\r\n=",
                     b"tail =20\r\n\r\n", b"=e9=E9==\r\nend"):
            self.assertDecodesAsStdlib("quoted-printable", body)

    def test_other_encodings(self) -> None:
        """Unknown, 8-bit and uuencoded bodies come out as the stdlib gives them."""
        self.assertDecodesAsStdlib("8bit", b"caf\xc3\xa9\r\n")
        self.assertDecodesAsStdlib("x-token", b"as is")
        self.assertDecodesAsStdlib("x-uuencode", b"begin 644 x\r\n#86)C\r\n`\r\nend\r\n")

    def test_bounded_calls(self) -> None:
        """A big attachment, padded or not, is decoded a slice at a time, never
        by the stdlib in one piece."""
        seen = []

        class Recorder:
            @staticmethod
            def a2b_base64(data):
                seen.append(len(data))
                return base64.b64decode(data)

        self.patch(mimesplit, "binascii", Recorder)
        self.patch(mimesplit, "_stdlib_payload", None)
        for length in range(3 << 20, (3 << 20) + 3):
            data = random.Random(length).randbytes(length)
            del seen[:]
            self.assertEqual(parse_message(attachment_message(data)).attachments[0].data, data)
            self.assertGreater(len(seen), 3)
            self.assertLess(max(seen), mimesplit._SLICE + 100)

    def test_memory(self) -> None:
        """Parsing an 8 MiB attachment needs little more than its decoded bytes."""
        raw = attachment_message(random.Random(4).randbytes(6 << 20))
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        parse_message(raw)
        _, peak = tracemalloc.get_traced_memory()
        self.assertLess(peak, 1.2 * len(raw))


class HostileWorkTests(SynchronousTestCase):
    """Work bounded by the input's size, counted rather than timed (found by review)."""

    def test_dash_lines_found_by_one_search(self) -> None:
        """Lines that start with "--" but are no delimiter are skipped by the search,
        not checked one by one in Python."""
        body = b"--not-a-delimiter\r\n" * 20000
        raw = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
               b"Content-Type: text/plain\r\n\r\n" + body + b"--b--\r\n")
        calls = []
        real = mimesplit._Cursor.matches
        self.patch(mimesplit._Cursor, "matches",
                   lambda cur, *args: calls.append(1) or real(cur, *args))
        [part] = mimesplit.parse(raw).get_payload()
        self.assertEqual(mimesplit.payload(part), body[:-2])
        self.assertLess(len(calls), 10)

    def test_oversized_parameter_field(self) -> None:
        """A Content-Disposition over MAX_PARAM_FIELD is read without parameters (the
        stdlib's parameter parser is quadratic); at the limit it is read as usual."""
        def disposition(length: int) -> bytes:
            field = b"attachment; filename=x.pdf"
            padding = b";\r\n p=" + b"v" * (length - len(field) - 6)
            return field + padding

        for length, name in ((mimesplit.MAX_PARAM_FIELD, "x.pdf"),
                             (mimesplit.MAX_PARAM_FIELD + 1, None)):
            raw = (b"Content-Type: application/pdf\r\nContent-Disposition: "
                   + disposition(length) + b"\r\n\r\nAAAA\r\n")
            msg = mimesplit.parse(raw)
            self.assertEqual(len(msg["content-disposition"]), length)
            self.assertEqual(msg.get_filename(), name)
