"""Client-side composition of outbound mail."""

import base64
import email
import email.header
import uuid
from datetime import datetime, timedelta, timezone

from twisted.trial.unittest import SynchronousTestCase

from aimx.core.compose import Attachment, ComposeError, compose, guess_type, normalize_crlf

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
ID1 = uuid.UUID("0b3c7a52-51a4-4d8e-9c1f-2f1e0f6b9a01")
ID2 = uuid.UUID("9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a")


def fixed_uuids():
    """A uuid4 stand-in answering ID1, then ID2."""
    return iter([ID1, ID2]).__next__


def build(**overrides) -> bytes:
    fields = dict(from_="alice@agent.example.com", to=["r@example.com"], subject="Hi",
                  body="Hello", now=NOW, uuid4=fixed_uuids())
    fields.update(overrides)
    return compose(**fields)


def headers(raw: bytes) -> list[tuple[str, str]]:
    """(name, value) of each header line, in order (no folded lines expected)."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return [tuple(line.split(": ", 1)) for line in head.split("\r\n")]


class ComposeHeaderTests(SynchronousTestCase):
    def test_plain_message(self):
        """Without attachments: the spec's header order, CRLF, no Content-Type."""
        raw = build()
        self.assertEqual(raw, (
            b"From: alice@agent.example.com\r\n"
            b"To: r@example.com\r\n"
            b"Subject: Hi\r\n"
            b"Date: Fri, 02 Jan 2026 03:04:05 +0000\r\n"
            b"Message-ID: <0b3c7a52-51a4-4d8e-9c1f-2f1e0f6b9a01@agent.example.com>\r\n"
            b"MIME-Version: 1.0\r\n"
            b"\r\n"
            b"Hello\r\n"
        ))

    def test_date_in_utc(self):
        """A local time is written as the same instant in UTC, zone +0000."""
        local = NOW.astimezone(timezone(timedelta(hours=-5)))
        self.assertIn(("Date", "Fri, 02 Jan 2026 03:04:05 +0000"), headers(build(now=local)))

    def test_message_id_default_uuid(self):
        """The default Message-ID is a lowercase hyphenated UUIDv4 at the From domain."""
        raw = compose(from_="Alice <alice@Agent.Example.com>", to=["r@example.com"],
                      subject="s", body="b", now=NOW)
        value = dict(headers(raw))["Message-ID"]
        self.assertRegex(value, r"^<[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-"
                                r"[0-9a-f]{12}@Agent\.Example\.com>$")

    def test_message_id_without_at(self):
        """A From without @ gives a Message-ID at localhost."""
        self.assertEqual(dict(headers(build(from_="no-at-sign")))["Message-ID"],
                         f"<{ID1}@localhost>")

    def test_recipient_lists(self):
        """To/Cc/Bcc join every entry with ", "; commas in quotes or <> do not split."""
        raw = build(to=["a@x.com, b@y.com", '"Doe, John" <j@z.com>'],
                    cc=["c@x.com", "<odd,one@x.com>"], bcc=["h@x.com,"])
        self.assertEqual(headers(raw)[:4], [
            ("From", "alice@agent.example.com"),
            ("To", 'a@x.com, b@y.com, "Doe, John" <j@z.com>'),
            ("Cc", "c@x.com, <odd,one@x.com>"),
            ("Bcc", "h@x.com"),
        ])
        self.assertEqual(headers(raw)[4][0], "Subject")

    def test_string_lists(self):
        """A single string is one value, as the MCP tools pass them."""
        self.assertEqual(build(to="a@x.com, b@y.com", cc="c@x.com"),
                         build(to=["a@x.com", "b@y.com"], cc=["c@x.com"]))

    def test_no_empty_cc_or_bcc(self):
        """Blank Cc/Bcc values emit no header."""
        names = [name for name, _ in headers(build(cc=["", " , "], bcc=[]))]
        self.assertNotIn("Cc", names)
        self.assertNotIn("Bcc", names)


class ThreadingTests(SynchronousTestCase):
    def threading(self, **overrides) -> list[tuple[str, str]]:
        return [(n, v) for n, v in headers(build(**overrides))
                if n in ("In-Reply-To", "References")]

    def test_reply_id_bracketed(self):
        """A reply id without brackets gets them; References repeats it (case 36)."""
        self.assertEqual(self.threading(reply_to="original123@example.com"), [
            ("In-Reply-To", "<original123@example.com>"),
            ("References", "<original123@example.com>"),
        ])

    def test_position(self):
        """Threading headers sit between Message-ID and MIME-Version."""
        names = [n for n, _ in headers(build(reply_to="<a@b>"))]
        self.assertEqual(names[4:8], ["Message-ID", "In-Reply-To", "References", "MIME-Version"])

    def test_explicit_references(self):
        """A non-blank references value is used as given; a blank one is not."""
        self.assertEqual(self.threading(reply_to="<b@x>", references="<a@x> <b@x>"),
                         [("In-Reply-To", "<b@x>"), ("References", "<a@x> <b@x>")])
        self.assertEqual(self.threading(reply_to="<b@x>", references="  "),
                         [("In-Reply-To", "<b@x>"), ("References", "<b@x>")])

    def test_references_alone_ignored(self):
        """References without a reply id adds no threading header (case 36)."""
        self.assertEqual(self.threading(references="<a@x>"), [])
        self.assertEqual(self.threading(reply_to=" ", references="<a@x>"), [])

    def test_crlf_stripped(self):
        """CR and LF are silently dropped from the reply id and references."""
        self.assertEqual(
            self.threading(reply_to="<orig\r\n@x>\n", references="<r@x>\r\n <orig@x>"),
            [("In-Reply-To", "<orig@x>"), ("References", "<r@x> <orig@x>")])


class InjectionTests(SynchronousTestCase):
    def test_each_header(self):
        """CR or LF in From, To, Cc, Bcc or Subject is refused, naming the header."""
        cases = [("From", {"from_": "a@x\nBcc: e@x"}), ("To", {"to": ["r@x", "s@x\r"]}),
                 ("Cc", {"cc": ["c@x\r\nX: y"]}), ("Bcc", {"bcc": ["\nb@x"]}),
                 ("Subject", {"subject": "a\r\nBcc: x"})]
        for name, overrides in cases:
            e = self.assertRaises(ComposeError, build, **overrides)
            self.assertEqual(
                str(e), f"Header '{name}' contains CRLF characters. Possible header injection")


class BodyTests(SynchronousTestCase):
    def test_line_endings(self):
        """CRLF, lone CR and lone LF all become CRLF, then one CRLF is appended."""
        raw = build(body="a\nb\rc\r\nd")
        self.assertTrue(raw.endswith(b"\r\n\r\na\r\nb\r\nc\r\nd\r\n"))
        self.assertEqual(normalize_crlf("x\r\r\n\n"), "x\r\n\r\n\r\n")

    def test_utf8_body(self):
        """A non-ASCII body travels as UTF-8."""
        self.assertTrue(build(body="Grüße").endswith("Grüße\r\n".encode("utf-8")))


class EncodedWordTests(SynchronousTestCase):
    def decoded(self, raw: bytes, name: str) -> str:
        value = email.message_from_bytes(raw)[name]
        return str(email.header.make_header(email.header.decode_header(value)))

    def test_subject(self):
        """A non-ASCII Subject is 7-bit encoded-words that decode to the original."""
        subject = "Grüße aus Köln – " + "ein langer Betreff " * 5
        raw = build(subject=subject)
        self.assertTrue(raw.split(b"\r\n\r\n", 1)[0].isascii())
        self.assertIn(b"Subject: =?utf-8?", raw)
        self.assertEqual(self.decoded(raw, "Subject"), subject)

    def test_display_names(self):
        """Non-ASCII display names are encoded; the address and ASCII entries stay verbatim."""
        raw = build(from_='"Jörg \\"Ops\\"" <alice@agent.example.com>',
                    to=["Zoë <z@x.com>, plain@y.com"])
        fields = dict(headers(raw))
        self.assertTrue(fields["From"].endswith(" <alice@agent.example.com>"))
        self.assertEqual(self.decoded(raw, "From"), 'Jörg "Ops" <alice@agent.example.com>')
        self.assertTrue(fields["To"].endswith(" <z@x.com>, plain@y.com"))
        self.assertEqual(self.decoded(raw, "To"), "Zoë <z@x.com>, plain@y.com")
        self.assertEqual(fields["Message-ID"], f"<{ID1}@agent.example.com>")

    def test_non_ascii_address_verbatim(self):
        """An address with a non-ASCII mailbox part is left as UTF-8 (RFC 6532)."""
        raw = build(to=["Jö <jö@x.com>"])
        self.assertIn("To: Jö <jö@x.com>\r\n".encode("utf-8"), raw)


class AttachmentPackagingTests(SynchronousTestCase):
    def test_layout(self):
        """multipart/mixed: the text part, then base64 parts, then the closing boundary."""
        data = (bytes(range(256)) * 2)[:500]
        raw = build(body="Body\nline", attachments=[
            Attachment("note.txt", "text/plain", b"attached payload"),
            Attachment("blob.bin", "application/octet-stream", data)])
        boundary = f"aimx-{ID2.hex}"
        head, body = raw.split(b"\r\n\r\n", 1)
        self.assertTrue(head.endswith(
            f'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="{boundary}"'
            .encode("ascii")))
        self.assertRegex(boundary, r"^aimx-[0-9a-f]{32}$")
        parts = body.decode("ascii").split(f"--{boundary}")
        self.assertEqual(parts[0], "")
        self.assertEqual(parts[1], "\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                                   "Body\r\nline\r\n")
        self.assertEqual(parts[2], (
            '\r\nContent-Type: text/plain; name="note.txt"\r\n'
            'Content-Disposition: attachment; filename="note.txt"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n"
            f"{base64.b64encode(b'attached payload').decode()}\r\n"))
        lines = parts[3].split("\r\n\r\n", 1)[1].split("\r\n")
        self.assertEqual(lines[-1], "")
        self.assertEqual([len(line) for line in lines[:-1]], [76] * 8 + [60])
        self.assertEqual(base64.b64decode("".join(lines)), data)
        self.assertEqual(parts[4], "--\r\n")

    def test_parses_back(self):
        """The stdlib parser sees the body and each file with its name and bytes."""
        raw = build(body="Grüße", attachments=[
            Attachment("a.pdf", "application/pdf", b"%PDF"), Attachment("empty", "x/y", b"")])
        message = email.message_from_bytes(raw)
        text, pdf, empty = message.get_payload()
        # The CRLF ending the body is the one that precedes the delimiter (RFC 2046 §5.1.1).
        self.assertEqual(text.get_payload(decode=True), "Grüße".encode("utf-8"))
        self.assertEqual((pdf.get_filename(), pdf.get_payload(decode=True)),
                         ("a.pdf", b"%PDF"))
        self.assertEqual((empty.get_content_type(), empty.get_payload(decode=True)),
                         ("x/y", b""))

    def test_filename_escaping(self):
        """Backslash and quote are escaped, CR dropped, LF made a space (case 37)."""
        raw = build(attachments=[Attachment('file"name.txt', "text/plain", b"x"),
                                 Attachment("a\\b\r\nc", "text/plain", b"x")])
        self.assertIn(b'filename="file\\"name.txt"', raw)
        self.assertIn(b'name="file\\"name.txt"', raw)
        self.assertIn(b'filename="a\\\\b c"', raw)


class GuessTypeTests(SynchronousTestCase):
    def test_guess_type(self):
        """Unknown or compressed extensions are application/octet-stream."""
        self.assertEqual(guess_type("report.pdf"), "application/pdf")
        self.assertEqual(guess_type("photo.JPG"), "image/jpeg")
        self.assertEqual(guess_type("noext"), "application/octet-stream")
        self.assertEqual(guess_type("x.unknownext"), "application/octet-stream")
        self.assertEqual(guess_type("logs.tar.gz"), "application/octet-stream")
