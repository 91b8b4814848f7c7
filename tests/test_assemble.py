"""MIME assembly of outbound mail."""

import email
import email.policy
import itertools

from twisted.trial.unittest import TestCase

from aimx.core.assemble import (
    TOO_LARGE,
    assemble,
    content_params,
    parse_body,
    qp_encode,
    with_signature,
)
from aimx.core.submission import check_header_block
from aimx.errors import BodyTooLarge, MalformedError

HEAD = (
    b"From: alice@agent.example.com\r\nTo: r@example.com\r\nBcc: hidden@z.com\r\n"
    b"Subject: Hi\r\nMIME-Version: 1.0\r\n"
)
#: An operator's configured signature (there is none by default).
SIGNATURE = "The support team.  \nhttps://support.example.org"


def build(body: bytes, head: bytes = HEAD, **kw):
    lines, rest = check_header_block(head + b"\r\n" + body)
    counter = itertools.count()
    kw.setdefault("text_only", False)
    kw.setdefault("html_body", None)
    kw.setdefault("signature", SIGNATURE)
    return assemble(lines, rest, boundary=lambda: f"aimx-{next(counter):032x}", **kw)


def parse(wire: bytes):
    return email.message_from_bytes(wire, policy=email.policy.default)


class ShapeTests(TestCase):
    def test_markdown_alternative(self):
        """Default mode: text/plain then text/html, rendered (case 3)."""
        out = build(b"# Hello\r\n\r\nWorld\r\n")
        msg = parse(out.wire)
        self.assertEqual(msg.get_content_type(), "multipart/alternative")
        self.assertIn(b'Content-Type: multipart/alternative; boundary="aimx-', out.wire)
        plain, html = msg.get_payload()
        self.assertEqual((plain.get_content_type(), html.get_content_type()),
                         ("text/plain", "text/html"))
        self.assertIn("# Hello", plain.get_content())
        self.assertIn("The support team.", plain.get_content())
        self.assertIn("<h1", html.get_content())
        self.assertIn(">Hello</h1>", html.get_content())
        self.assertIn("https://support.example.org", html.get_content())
        self.assertEqual(out.format, "markdown")
        self.assertEqual(out.text, "# Hello\n\nWorld\n\n" + SIGNATURE)

    def test_headers_kept_bcc_and_mime_replaced(self):
        out = build(b"x")
        head = out.wire.split(b"\r\n\r\n", 1)[0]
        self.assertNotIn(b"Bcc", head)
        self.assertEqual(head.count(b"MIME-Version: 1.0"), 1)
        self.assertTrue(head.startswith(b"From: alice@agent.example.com\r\nTo: r@example.com\r\n"))

    def test_synthesized_message_id_first(self):
        out = build(b"x", message_id="<id@agent.example.com>")
        self.assertTrue(out.wire.startswith(b"Message-ID: <id@agent.example.com>\r\nFrom:"))

    def test_text_only(self):
        """A single text/plain part with its CTE in the top block (cases 5, 9)."""
        out = build(b"Your code: 9999", text_only=True, signature="-- daemon-sig-marker")
        head, body = out.wire.split(b"\r\n\r\n", 1)
        head += b"\r\n"
        self.assertIn(b"Content-Type: text/plain; charset=utf-8\r\n", head)
        self.assertIn(b"Content-Transfer-Encoding: 7bit\r\n", head)
        self.assertNotIn(b"multipart/", out.wire)
        self.assertEqual(body, b"Your code: 9999\r\n\r\n-- daemon-sig-marker\r\n")
        self.assertEqual(out.format, "text")

    def test_operator_html(self):
        """Caller HTML verbatim, no signature in it (case 6)."""
        out = build(b"fallback text.", html_body=b"<h1>x</h1>")
        plain, html = parse(out.wire).get_payload()
        self.assertEqual(html.get_content().strip(), "<h1>x</h1>")
        self.assertIn("The support team.", plain.get_content())
        self.assertEqual(out.format, "html")

    def test_no_signature(self):
        out = build(b"plain", signature="")
        self.assertNotIn(b"The support team.", out.wire)
        self.assertNotIn(b"support.example.org", out.wire)

    def test_attachments_nest_alternative(self):
        """Outer mixed, inner alternative, distinct boundaries (case 4)."""
        body = (
            b"--aimx-b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n## Report\r\n\r\n"
            b"Details inline.\r\n--aimx-b\r\nContent-Type: text/plain; name=\"note.txt\"\r\n"
            b"Content-Disposition: attachment; filename=\"note.txt\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\nYXR0YWNoZWQgcGF5bG9hZA==\r\n--aimx-b--\r\n"
        )
        head = HEAD + b'Content-Type: multipart/mixed; boundary="aimx-b"\r\n'
        out = build(body, head=head)
        msg = parse(out.wire)
        self.assertEqual(msg.get_content_type(), "multipart/mixed")
        alternative, note = msg.get_payload()
        self.assertEqual(alternative.get_content_type(), "multipart/alternative")
        self.assertNotEqual(msg.get_boundary(), alternative.get_boundary())
        self.assertIn(b'filename="note.txt"', out.wire)
        self.assertEqual(note.get_payload(decode=True), b"attached payload")
        self.assertIn(">Report</h2>", alternative.get_payload()[1].get_content())
        self.assertEqual(len(out.attachments), 1)
        self.assertEqual(out.attachments[0].filename_raw, "note.txt")
        self.assertNotIn("attached payload", out.text)

    def test_text_only_with_attachment_has_no_alternative(self):
        body = (
            b"--B\r\n\r\nhello\r\n--B\r\nContent-Type: application/pdf\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n--B--\r\n"
        )
        out = build(body, head=HEAD + b"Content-Type: multipart/mixed; boundary=B\r\n",
                    text_only=True)
        msg = parse(out.wire)
        self.assertEqual([p.get_content_type() for p in msg.get_payload()],
                         ["text/plain", "application/pdf"])
        self.assertIn(b'filename="attachment"', out.wire)

    def test_markdown_cap(self):
        """Over 5 MiB of Markdown with the signature is refused; text-only is not (case 21)."""
        body = b"a" * (5 * 1024 * 1024 + 1)
        e = self.assertRaises(BodyTooLarge, build, body, signature="")
        self.assertEqual(str(e), TOO_LARGE)
        self.assertEqual(build(body, signature="", text_only=True).format, "text")

    def test_8bit_text_is_quoted_printable(self):
        out = build("Grüße =\tend \r\n".encode(), text_only=True, signature="")
        self.assertIn(b"Content-Transfer-Encoding: quoted-printable", out.wire)
        self.assertTrue(out.wire.isascii())
        self.assertEqual(parse(out.wire).get_content(), "Grüße =\tend \r\n")


class PieceTests(TestCase):
    def test_attachment_headers_stay_7bit(self):
        """Non-ASCII names go out as RFC 2231 (the stdlib decodes them back); ASCII names
        keep the spec's quoting; a type that is not type/subtype becomes octet-stream."""
        from aimx.core.assemble import attachment_entity
        from aimx.core.message import Attachment

        head, _ = attachment_entity(Attachment("Grüße \"q\".pdf", "application/pdf", b"x"))
        self.assertTrue(head.isascii())
        part = email.message_from_bytes(head + b"\r\n", policy=email.policy.default)
        self.assertEqual(part.get_filename(), 'Grüße "q".pdf')
        head, _ = attachment_entity(Attachment('a"b.txt', "text/plain\r\nX: y", b"x"))
        self.assertIn(b'filename="a\\"b.txt"', head)
        self.assertTrue(head.startswith(b'Content-Type: application/octet-stream; name="a'))

    def test_content_params(self):
        self.assertEqual(
            content_params('Multipart/Mixed; BOUNDARY="a;b"; filename="x\\"y"; name=z'),
            ("multipart/mixed", {"boundary": "a;b", "filename": 'x"y', "name": "z"}),
        )

    def test_filename_before_name(self):
        lines = ["Content-Type: multipart/mixed; boundary=B"]
        body = (b"--B\r\n\r\nt\r\n--B\r\nContent-Type: text/csv; name=n.csv\r\n"
                b"Content-Disposition: attachment; filename=f.csv\r\n\r\na,b\r\n--B--\r\n")
        text, parts = parse_body(lines, body)
        self.assertEqual(text, "t")
        self.assertEqual((parts[0].filename_raw, parts[0].content_type, parts[0].data),
                         ("f.csv", "text/csv", b"a,b"))

    def test_part_cap(self):
        """A submission of a million empty parts is refused, not expanded."""
        lines = ["Content-Type: multipart/mixed; boundary=b"]
        e = self.assertRaises(MalformedError, parse_body, lines, b"--b\n\nx\n" * 1001)
        self.assertEqual(str(e), "more than 1000 MIME parts")
        self.assertEqual(len(parse_body(lines, b"--b\n\nx\n" * 1000)[1]), 999)

    def test_signature_joins_with_blank_line(self):
        self.assertEqual(with_signature("hi\r\n\r\n", "a\r\nb"), "hi\n\na\nb")
        self.assertEqual(with_signature("hi", ""), "hi")

    def test_qp_line_length_and_round_trip(self):
        import quopri

        data = ("é" * 60 + " x=y\tz" + "a" * 200).encode() + b"\r\nnext \r\n"
        encoded = qp_encode(data)
        self.assertTrue(all(len(line) <= 76 for line in encoded.split(b"\r\n")))
        self.assertEqual(quopri.decodestring(encoded), data)
        self.assertIn(b"next=20\r\n", encoded)
