"""Tests for L{aimx.core.message}."""

import base64
import email
import hashlib
import os
import random

from twisted.trial.unittest import SynchronousTestCase

from aimx.core import filenames, message as message_module, mimesplit
from aimx.core.frontmatter import inbound_fields, parse, render
from aimx.core.message import MAX_ATTACHMENTS, Attachment, parse_message


def message(headers: str = "", body: str = "Hello.\r\n") -> bytes:
    """A CRLF message with a few default headers before C{headers}."""
    head = "From: Alice <alice@example.com>\r\nTo: bob@test.local\r\n" + headers
    return (head + "\r\n" + body).encode("utf-8")


def multipart(subtype: str, *parts: str, boundary: str = "BOUND") -> str:
    """The headers and body of a multipart entity."""
    inner = "".join(f"--{boundary}\r\n{part}\r\n" for part in parts)
    return (
        f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'
        f"{inner}--{boundary}--\r\n"
    )


def split_entity(entity: str) -> bytes:
    """A message whose top-level entity is C{entity} (headers + body)."""
    headers, _, body = entity.partition("\r\n\r\n")
    return message(headers + "\r\n", body)


PLAIN = "Content-Type: text/plain; charset=utf-8\r\n\r\nplain text body"
HTML = (
    "Content-Type: text/html; charset=utf-8\r\n\r\n"
    "<html><body><h1>Hello</h1><p>World</p></body></html>"
)


class HeaderTests(SynchronousTestCase):
    """Header values."""

    def test_from_with_name(self) -> None:
        """From is C{Name <addr>}."""
        self.assertEqual(parse_message(message()).from_, "Alice <alice@example.com>")

    def test_from_without_name(self) -> None:
        """A From without a display name is the bare address."""
        raw = b"From: alice@example.com\r\n\r\nx"
        self.assertEqual(parse_message(raw).from_, "alice@example.com")

    def test_quoted_display_name(self) -> None:
        """A name with a comma stays one name, quoted so the value parses back."""
        raw = b'From: "Doe, John" <j@x.example>\r\n\r\nx'
        parsed = parse_message(raw)
        self.assertEqual(parsed.from_, '"Doe, John" <j@x.example>')
        self.assertEqual(parsed.identity.author.address, "j@x.example")

    def test_encoded_display_name(self) -> None:
        """An RFC 2047 display name is decoded; an encoded comma does not split."""
        raw = b"From: =?utf-8?q?J=C3=B6rg=2C_Sr?= <j@x.example>\r\n\r\nx"
        self.assertEqual(parse_message(raw).from_, '"Jörg, Sr" <j@x.example>')

    def test_missing_from(self) -> None:
        """No From gives an empty value and no author."""
        parsed = parse_message(b"Subject: x\r\n\r\nbody")
        self.assertEqual(parsed.from_, "")
        self.assertIsNone(parsed.identity.author)

    def test_two_from_headers(self) -> None:
        """Two From fields: the bottom one is read, and the repetition recorded."""
        raw = b"From: a@one.example, B <b@two.example>\r\nFrom: c@three.example\r\n\r\nx"
        parsed = parse_message(raw)
        self.assertEqual(parsed.from_, "c@three.example")
        self.assertEqual(parsed.identity.repeated, (("from", 2),))

    def test_several_from_mailboxes(self) -> None:
        """Every mailbox of the From field is shown; none is an author."""
        parsed = parse_message(b"From: a@one.example, B <b@two.example>\r\n\r\nx")
        self.assertEqual(parsed.from_, "a@one.example, B <b@two.example>")
        self.assertIsNone(parsed.identity.author)

    def test_pathological_address(self) -> None:
        """Thousands of nested comments leave no address instead of failing."""
        parsed = parse_message(b"From: " + b"(" * 5000 + b"a@b\r\n\r\nx")
        self.assertEqual(parsed.from_, "")
        self.assertIsNone(parsed.identity.author)

    def test_every_to(self) -> None:
        """To keeps every address, comma-joined (aimx decision)."""
        raw = b"From: a@b\r\nTo: bob@test.local, Carol <carol@x.example>, dave@y.example\r\n\r\nx"
        self.assertEqual(
            parse_message(raw).to,
            "bob@test.local, Carol <carol@x.example>, dave@y.example",
        )

    def test_two_to_headers(self) -> None:
        """Two To fields: the bottom one is what the message says."""
        raw = message("To: Carol <carol@x.example>, dave@y.example\r\n")
        self.assertEqual(parse_message(raw).to, "Carol <carol@x.example>, dave@y.example")

    def test_missing_to(self) -> None:
        """No To gives an empty value."""
        self.assertEqual(parse_message(b"From: a@b\r\n\r\nx").to, "")

    def test_cc_and_reply_to(self) -> None:
        """Cc and Reply-To keep every address; absent ones are None."""
        parsed = parse_message(message("Cc: A <a@x>, b@y\r\nReply-To: r@z\r\n"))
        self.assertEqual(parsed.cc, "A <a@x>, b@y")
        self.assertEqual(parsed.reply_to, "r@z")
        plain = parse_message(message())
        self.assertIsNone(plain.cc)
        self.assertIsNone(plain.reply_to)

    def test_group_without_addresses(self) -> None:
        """An empty group yields no address."""
        self.assertIsNone(parse_message(message("Cc: undisclosed-recipients:;\r\n")).cc)

    def test_subject_encoded(self) -> None:
        """RFC 2047 words are decoded; whitespace between words is dropped."""
        raw = message("Subject: =?utf-8?b?w6k=?= =?utf-8?B?w6k=?= and =?iso-8859-1?q?caf=E9?=\r\n")
        self.assertEqual(parse_message(raw).subject, "éé and café")

    def test_subject_split_character(self) -> None:
        """A UTF-8 character split across two encoded words survives."""
        raw = message("Subject: =?utf-8?q?=C3?= =?utf-8?q?=A9t=C3=A9?=\r\n")
        self.assertEqual(parse_message(raw).subject, "été")

    def test_subject_folded(self) -> None:
        """A folded subject is unfolded."""
        raw = message("Subject: Invoice #42\r\n for March\r\n")
        self.assertEqual(parse_message(raw).subject, "Invoice #42 for March")

    def test_subject_raw_utf8(self) -> None:
        """8-bit UTF-8 in headers (SMTPUTF8) is read as UTF-8."""
        raw = message("Subject: Grüße — ok\r\nFrom: Jörg <jörg@bücher.example>\r\n")
        parsed = parse_message(raw)
        self.assertEqual(parsed.subject, "Grüße — ok")
        self.assertEqual(parsed.from_, "Jörg <jörg@bücher.example>")

    def test_subject_missing_or_empty(self) -> None:
        """Missing, empty or blank Subject is C{(no subject)}."""
        for headers in ("", "Subject:\r\n", "Subject:    \r\n"):
            self.assertEqual(parse_message(message(headers)).subject, "(no subject)")

    def test_subject_with_specials(self) -> None:
        """Colons and hashes are kept."""
        raw = message("Subject: colons: and #hashes\r\n")
        self.assertEqual(parse_message(raw).subject, "colons: and #hashes")

    def test_message_id(self) -> None:
        """Message-ID loses its brackets; a missing one is C{""}."""
        raw = message("Message-ID: <plain-001@example.com>\r\n")
        self.assertEqual(parse_message(raw).message_id, "plain-001@example.com")
        self.assertEqual(parse_message(message()).message_id, "")

    def test_in_reply_to_last(self) -> None:
        """In-Reply-To keeps the last id, without brackets."""
        raw = message("In-Reply-To: <a@x> <b@y>\r\n")
        self.assertEqual(parse_message(raw).in_reply_to, "b@y")
        self.assertIsNone(parse_message(message()).in_reply_to)

    def test_references_chain(self) -> None:
        """References keeps the whole chain (aimx decision)."""
        raw = message("References: <root@x>\r\n <b@x>\r\n\t<c@x>\r\n")
        parsed = parse_message(raw)
        self.assertEqual(parsed.references, "root@x b@x c@x")
        self.assertIsNone(parse_message(message()).references)

    def test_list_id_and_auto_submitted(self) -> None:
        """List-ID and Auto-Submitted are raw and trimmed; blank is absent."""
        raw = message("List-ID:  <mylist.example.com> \r\nAuto-Submitted: auto-replied\r\n")
        parsed = parse_message(raw)
        self.assertEqual(parsed.list_id, "<mylist.example.com>")
        self.assertEqual(parsed.auto_submitted, "auto-replied")
        blank = parse_message(message("List-ID:\r\nAuto-Submitted: \r\n"))
        self.assertIsNone(blank.list_id)
        self.assertIsNone(blank.auto_submitted)


class DateTests(SynchronousTestCase):
    """Date rendering."""

    def date(self, value: str) -> str | None:
        """The C{date} parsed from a Date header of C{value}."""
        return parse_message(message(f"Date: {value}\r\n")).date

    def test_zero_offset(self) -> None:
        """A zero offset is written C{Z}."""
        self.assertEqual(self.date("Thu, 01 Jan 2025 12:00:00 +0000"), "2025-01-01T12:00:00Z")

    def test_sender_offset(self) -> None:
        """The sender's offset is kept."""
        self.assertEqual(
            self.date("Tue, 1 Jul 2003 10:52:37 +0200"), "2003-07-01T10:52:37+02:00"
        )

    def test_negative_offset(self) -> None:
        """A negative offset with minutes is kept."""
        self.assertEqual(
            self.date("Mon, 3 Mar 2025 08:01:02 -0530"), "2025-03-03T08:01:02-05:30"
        )

    def test_unknown_zone(self) -> None:
        """C{-0000} and C{GMT} are written C{Z}."""
        self.assertEqual(self.date("1 Jan 2025 12:00:00 -0000"), "2025-01-01T12:00:00Z")
        self.assertEqual(self.date("1 Jan 2025 12:00:00 GMT"), "2025-01-01T12:00:00Z")

    def test_leap_second(self) -> None:
        """A leap second is clamped rather than rejected."""
        self.assertEqual(self.date("31 Dec 2016 23:59:60 +0000"), "2016-12-31T23:59:59Z")

    def test_missing(self) -> None:
        """A missing Date is None (the caller uses the ingest time)."""
        self.assertIsNone(parse_message(message()).date)

    def test_unparseable(self) -> None:
        """Garbage, impossible dates and absurd offsets are None."""
        for value in ("not a date", "31 Feb 2025 10:00:00 +0000", "1 Jan 2025 99:00:00 +0000",
                      "1 Jan 2025 10:00:00 +9999", ""):
            self.assertIsNone(self.date(value), value)


class BodyTests(SynchronousTestCase):
    """Body selection."""

    def test_plain(self) -> None:
        """A plain message's body is its text, with LF line ends; no attachments."""
        parsed = parse_message(message(body="Just text.\r\nLine two.\r\n"))
        self.assertEqual(parsed.body, "Just text.\nLine two.\n")
        self.assertEqual(parsed.attachments, ())
        self.assertEqual(parsed.hidden_chars, 0)

    def test_line_ends(self) -> None:
        """CRLF and lone CR become LF in the body; the raw bytes are untouched."""
        raw = message(body="a\r\nb\rc\nd\r\n")
        parsed = parse_message(raw)
        self.assertEqual(parsed.body, "a\nb\nc\nd\n")
        self.assertEqual(parsed.body_sha256, hashlib.sha256(b"a\r\nb\rc\nd\r\n").hexdigest())

    def test_invisible_characters_removed(self) -> None:
        """Zero-width spaces, word joiners, BOMs inside text and bidi controls are
        removed and counted; ZWJ and ZWNJ stay (emoji, Persian, Indic scripts need
        them); a leading BOM is dropped without counting."""
        text = "\ufeffig\u200bnore\u2060 \u202eevil\u202c \u2066x\u2069 \U0001f469\u200d\U0001f4bb " \
               "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 in\ufeffside"
        entity = "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text
        parsed = parse_message(split_entity(entity))
        self.assertEqual(
            parsed.body,
            "ignore evil x \U0001f469\u200d\U0001f4bb \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 inside",
        )
        self.assertEqual(parsed.hidden_chars, 7)

    def test_plain_text_otherwise_untouched(self) -> None:
        """A plain part keeps its whitespace, markup-like text and trailing spaces."""
        text = "  <b>not html</b>  \n\n\n*x*\t\u00a0end  "
        parsed = parse_message(split_entity("Content-Type: text/plain\r\n\r\n" + text))
        self.assertEqual(parsed.body, text)

    def test_alternative_prefers_plain(self) -> None:
        """In multipart/alternative the plain part is the body."""
        raw = split_entity(multipart("alternative", PLAIN, HTML))
        parsed = parse_message(raw)
        self.assertEqual(parsed.body, "plain text body")
        self.assertEqual(parsed.attachments, ())

    def test_alternative_html_first(self) -> None:
        """The plain part wins even when the html part comes first."""
        parsed = parse_message(split_entity(multipart("alternative", HTML, PLAIN)))
        self.assertEqual(parsed.body, "plain text body")

    def test_html_only(self) -> None:
        """An HTML-only message becomes Markdown without tags."""
        parsed = parse_message(split_entity(HTML))
        self.assertIn("Hello", parsed.body)
        self.assertIn("World", parsed.body)
        self.assertNotIn("<", parsed.body)

    def test_alternative_without_plain(self) -> None:
        """An alternative without a plain part uses its html part."""
        parsed = parse_message(split_entity(multipart("alternative", HTML)))
        self.assertIn("World", parsed.body)
        self.assertNotIn("<p>", parsed.body)

    def test_invisible_html_dropped(self) -> None:
        """Head, style, script, template, comments, PIs and declarations go."""
        html = (
            '<?xml version="1.0"?><!DOCTYPE html><html><head><title>TITLE</title>'
            "<style>p{color:red}</style></head><body><![if !mso]>"
            "<script>alert(1)</script><template>TPL</template><!-- secret -->"
            "<p>Visible &amp; decoded snake_case *x*</p><o:p>office</o:p></body></html>"
        )
        body = parse_message(split_entity("Content-Type: text/html\r\n\r\n" + html)).body
        for hidden in ("TITLE", "color", "alert", "TPL", "secret", "xml", "mso", "DOCTYPE", "<"):
            self.assertNotIn(hidden, body)
        self.assertIn("Visible & decoded snake_case *x*", body)
        self.assertIn("office", body)

    def test_unclosed_head_keeps_body(self) -> None:
        """A head never closed (so it holds the body) does not hide the body."""
        html = "<html><head><title>T</title><body><p>Visible</p></body></html>"
        body = parse_message(split_entity("Content-Type: text/html\r\n\r\n" + html)).body
        self.assertIn("Visible", body)
        self.assertNotIn("T\n", body)

    def test_html_deeply_unclosed(self) -> None:
        """Thousands of unclosed tags fall back to the visible text."""
        html = "<style>hidden</style>" + "<font>" * 3000 + "deep text"
        body = parse_message(split_entity("Content-Type: text/html\r\n\r\n" + html)).body
        self.assertIn("deep text", body)
        self.assertNotIn("hidden", body)

    def test_html_cap(self) -> None:
        """HTML beyond 2 MiB is cut and the marker appended."""
        html = "<p>" + "x" * (2 * 1024 * 1024) + "END</p>"
        body = parse_message(split_entity("Content-Type: text/html\r\n\r\n" + html)).body
        self.assertNotIn("END", body)
        self.assertTrue(body.endswith("\n\n[...HTML body truncated at 2 MB for rendering...]"))

    def test_quoted_printable_latin1(self) -> None:
        """Bodies are transfer-decoded and charset-decoded."""
        entity = (
            "Content-Type: text/plain; charset=iso-8859-1\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=E9 =\r\nsoft"
        )
        self.assertEqual(parse_message(split_entity(entity)).body, "café soft")

    def test_base64_utf8(self) -> None:
        """A base64 body is decoded."""
        encoded = base64.b64encode("naïve ✓".encode()).decode()
        entity = (
            "Content-Type: text/plain; charset=UTF-8\r\n"
            f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n"
        )
        self.assertEqual(parse_message(split_entity(entity)).body, "naïve ✓")

    def test_unknown_charset(self) -> None:
        """An unknown charset falls back to UTF-8."""
        raw = b"Content-Type: text/plain; charset=x-klingon\r\n\r\ncaf\xc3\xa9"
        self.assertEqual(parse_message(raw).body, "café")

    def test_hostile_charsets(self) -> None:
        """Non-text codecs and surrogate-producing codecs do not leak."""
        for charset in ("base64", "rot13", "idna", "unicode-escape", "utf-7", "utf-16"):
            raw = b"Content-Type: text/plain; charset=%s\r\n\r\n\\ud800+2D3- x\xff" % (
                charset.encode()
            )
            body = parse_message(raw).body
            body.encode("utf-8")  # no lone surrogates

    def test_eight_bit_without_charset(self) -> None:
        """8-bit text without a charset is read as UTF-8."""
        self.assertEqual(parse_message(b"Subject: x\r\n\r\nna\xc3\xafve").body, "naïve")

    def test_every_inline_text_part(self) -> None:
        """Later inline text parts are body too, in order, one blank line apart
        (nothing that is text is dropped)."""
        second = "Content-Type: text/plain\r\n\r\nsecond\r\n"
        parsed = parse_message(split_entity(multipart("mixed", PLAIN, second)))
        self.assertEqual(parsed.body, "plain text body\n\nsecond\n")
        self.assertEqual(parsed.attachments, ())

    def test_text_image_text(self) -> None:
        """Apple Mail's text, image, text: both texts in the body, the image an
        attachment."""
        image = "Content-Type: image/jpeg\r\nContent-Disposition: inline\r\n\r\nJFIF"
        tail = "Content-Type: text/plain; charset=utf-8\r\n\r\nafter the image"
        parsed = parse_message(split_entity(multipart("mixed", PLAIN, image, tail)))
        self.assertEqual(parsed.body, "plain text body\n\nafter the image\n")
        self.assertEqual([a.content_type for a in parsed.attachments], ["image/jpeg"])

    def test_apple_alternative_of_mixed(self) -> None:
        """alternative(mixed(text, image, text), mixed(html, image, html)): the plain
        side whole; the images once each as attachments."""
        image = "Content-Type: image/png\r\n\r\nPNG"
        plain2 = "Content-Type: text/plain\r\n\r\nsecond plain"
        html2 = "Content-Type: text/html\r\n\r\n<p>second html</p>"
        plain_side = multipart("mixed", PLAIN, image, plain2, boundary="P")
        html_side = multipart("mixed", HTML, image, html2, boundary="H")
        parsed = parse_message(split_entity(multipart("alternative", plain_side, html_side)))
        self.assertEqual(parsed.body, "plain text body\n\nsecond plain\n")
        self.assertEqual([a.content_type for a in parsed.attachments], ["image/png"] * 2)

    def test_list_footer(self) -> None:
        """A mailing list's footer after an alternative is kept after the body."""
        footer = "Content-Type: text/plain\r\n\r\n--\r\nlist footer\r\n"
        alternative = multipart("alternative", PLAIN, HTML, boundary="ALT")
        parsed = parse_message(split_entity(multipart("mixed", alternative, footer)))
        self.assertEqual(parsed.body, "plain text body\n\n--\nlist footer\n")

    def test_html_part_after_plain(self) -> None:
        """A plain part then an HTML part in a mixed: both, the HTML converted."""
        parsed = parse_message(split_entity(multipart("mixed", PLAIN, HTML)))
        self.assertEqual(parsed.body, "plain text body\n\n# Hello\n\nWorld\n")

    def test_signed(self) -> None:
        """multipart/signed is walked like mixed: its text parts are the body,
        the signature an attachment."""
        signature = "Content-Type: application/pgp-signature\r\n\r\n-----BEGIN PGP-----"
        content = multipart("mixed", PLAIN, "Content-Type: text/plain\r\n\r\nmore",
                            boundary="IN")
        parsed = parse_message(split_entity(multipart("signed", content, signature)))
        self.assertEqual(parsed.body, "plain text body\n\nmore\n")
        self.assertEqual([a.content_type for a in parsed.attachments],
                         ["application/pgp-signature"])

    def test_digest_table_of_contents(self) -> None:
        """A digest's table of contents is the body; its messages are attachments."""
        toc = "Content-Type: text/plain\r\n\r\nToday's topics: 1. a 2. b"
        inner = "Content-Type: message/rfc822\r\n\r\nSubject: a\r\n\r\nmessage a\r\n"
        mixed = multipart("mixed", toc, multipart("digest", inner, inner, boundary="D"))
        parsed = parse_message(split_entity(mixed))
        self.assertEqual(parsed.body, "Today's topics: 1. a 2. b")
        self.assertEqual([a.content_type for a in parsed.attachments], ["message/rfc822"] * 2)

    def test_alternative_with_plain_and_html_in_one_child(self) -> None:
        """An alternative whose only child mixes plain and HTML keeps both."""
        parsed = parse_message(
            split_entity(multipart("alternative", multipart("mixed", PLAIN, HTML, boundary="M")))
        )
        self.assertEqual(parsed.body, "plain text body\n\n# Hello\n\nWorld\n")

    def test_empty_text_parts_skipped(self) -> None:
        """Blank text parts add no blank lines."""
        blank = "Content-Type: text/plain\r\n\r\n \r\n"
        parsed = parse_message(split_entity(multipart("mixed", blank, PLAIN, blank)))
        self.assertEqual(parsed.body, "plain text body")

    def test_every_text_part_once(self) -> None:
        """A corpus of random multipart trees (mixed, signed, related, digest,
        alternatives whose children carry the same words): every text part's
        words appear in the body exactly once, and every other leaf is an
        attachment."""
        rnd = random.Random(8621)
        for _ in range(300):
            counter = iter(range(10**6))
            entity, words, others = _random_entity(rnd, counter, 0)
            parsed = parse_message(split_entity(entity))
            for word in words:
                self.assertEqual(parsed.body.count(word), 1, (word, entity))
            self.assertEqual(len(parsed.attachments), others, entity)

    def test_named_text_part_is_attachment(self) -> None:
        """A later text part with a name is an attachment."""
        named = 'Content-Type: text/plain; name="log.txt"\r\n\r\nlog'
        parsed = parse_message(split_entity(multipart("mixed", PLAIN, named)))
        self.assertEqual(parsed.body, "plain text body")
        self.assertEqual(
            parsed.attachments, (Attachment("log.txt", "text/plain", b"log"),)
        )

    def test_related_html_with_inline_image(self) -> None:
        """multipart/related html is the body; its image is an attachment."""
        image = (
            'Content-Type: image/png\r\nContent-ID: <img1>\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo="
        )
        related = multipart("related", HTML, image, boundary="REL")
        parsed = parse_message(split_entity(multipart("alternative", PLAIN, related)))
        self.assertEqual(parsed.body, "plain text body")
        self.assertEqual(len(parsed.attachments), 1)
        self.assertEqual(parsed.attachments[0].content_type, "image/png")
        self.assertEqual(parsed.attachments[0].data, b"\x89PNG\r\n\x1a\n")

    def test_alternative_of_related_without_plain(self) -> None:
        """alternative(related(html, image)) uses the html part as body."""
        image = "Content-Type: image/gif\r\n\r\nGIF89a"
        related = multipart("related", HTML, image, boundary="REL")
        parsed = parse_message(split_entity(multipart("alternative", related)))
        self.assertIn("World", parsed.body)
        self.assertEqual([a.content_type for a in parsed.attachments], ["image/gif"])

    def test_text_attachment_only(self) -> None:
        """A message that is only an attachment has an empty body."""
        entity = (
            "Content-Type: text/plain\r\n"
            'Content-Disposition: attachment; filename="a.txt"\r\n\r\nx'
        )
        parsed = parse_message(split_entity(entity))
        self.assertEqual(parsed.body, "")
        self.assertEqual(parsed.attachments, (Attachment("a.txt", "text/plain", b"x"),))


def _random_entity(rnd: random.Random, counter, depth: int) -> tuple[str, list[str], int]:
    """A random MIME entity: its text, the words its text parts carry (each
    must be in the body once) and how many attachments it holds."""
    kind = rnd.choice(["plain", "html", "image", "pdf"] + (
        ["mixed", "signed", "alternative", "related"] * 2 if depth < 3 else []))
    word = f"w{next(counter)}x"
    if kind == "plain":
        return f"Content-Type: text/plain\r\n\r\nText {word}.", [word], 0
    if kind == "html":
        return f"Content-Type: text/html\r\n\r\n<p>Html <b>{word}</b>.</p>", [word], 0
    if kind == "image":
        return "Content-Type: image/gif\r\n\r\nGIF89a", [], 1
    if kind == "pdf":
        return 'Content-Type: application/pdf; name="a.pdf"\r\n\r\n%PDF', [], 1
    boundary = f"b{next(counter)}"
    if kind == "alternative":
        # The same words in a plain and an HTML rendering, as real alternatives are.
        plain = f"Content-Type: text/plain\r\n\r\nText {word}."
        html = f"Content-Type: text/html\r\n\r\n<p>{word}</p>"
        return multipart("alternative", plain, html, boundary=boundary), [word], 0
    if kind == "related":
        html = f"Content-Type: text/html\r\n\r\n<p>{word}</p>"
        return (multipart("related", html, "Content-Type: image/png\r\n\r\nPNG",
                          boundary=boundary), [word], 1)
    children = [_random_entity(rnd, counter, depth + 1) for _ in range(rnd.randint(1, 4))]
    if kind == "signed":
        children = children[:1] + [("Content-Type: application/pgp-signature\r\n\r\nsig",
                                    [], 1)]
    entity = multipart(kind, *(c[0] for c in children), boundary=boundary)
    return entity, [w for c in children for w in c[1]], sum(c[2] for c in children)


class AttachmentTests(SynchronousTestCase):
    """Attachments."""

    def attachment(self, name: str, ctype: str = "text/plain", body: str = "notes") -> str:
        """A part with C{Content-Disposition: attachment}."""
        return (
            f"Content-Type: {ctype}\r\n"
            f'Content-Disposition: attachment; filename="{name}"\r\n\r\n{body}'
        )

    def test_notes(self) -> None:
        """A text attachment keeps its name, type and content."""
        parsed = parse_message(
            split_entity(multipart("mixed", PLAIN, self.attachment("notes.txt")))
        )
        self.assertEqual(parsed.body, "plain text body")
        self.assertEqual(
            parsed.attachments, (Attachment("notes.txt", "text/plain", b"notes"),)
        )

    def test_order_and_duplicates(self) -> None:
        """Attachments come in MIME order; duplicate raw names are kept as is."""
        parts = [
            self.attachment("file.txt"),
            self.attachment("data.bin", "application/octet-stream"),
            self.attachment("report.pdf", "application/pdf"),
            self.attachment("report.pdf", "application/pdf"),
        ]
        parsed = parse_message(split_entity(multipart("mixed", PLAIN, *parts)))
        self.assertEqual(
            [a.filename_raw for a in parsed.attachments],
            ["file.txt", "data.bin", "report.pdf", "report.pdf"],
        )

    def test_binary_round_trip(self) -> None:
        """Base64 binary content round-trips byte for byte."""
        data = bytes(range(256)) * 300
        encoded = base64.encodebytes(data).decode().replace("\n", "\r\n")
        part = (
            'Content-Type: application/pdf; name="x.pdf"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n" + encoded
        )
        parsed = parse_message(split_entity(multipart("mixed", PLAIN, part)))
        self.assertEqual(parsed.attachments[0].data, data)
        self.assertEqual(parsed.attachments[0].filename_raw, "x.pdf")

    def test_name_from_content_type(self) -> None:
        """Without a disposition filename the Content-Type name is used."""
        part = 'Content-Type: application/zip; name="a.zip"\r\n\r\nPK'
        parsed = parse_message(split_entity(multipart("mixed", PLAIN, part)))
        self.assertEqual(parsed.attachments[0].filename_raw, "a.zip")

    def test_rfc2231_name(self) -> None:
        """RFC 2231 encoded and continued names are decoded."""
        part = (
            "Content-Type: application/pdf\r\nContent-Disposition: attachment;\r\n"
            " filename*0*=utf-8''r%C3%A9sum;\r\n filename*1*=%C3%A9.pdf\r\n\r\nx"
        )
        parsed = parse_message(split_entity(multipart("mixed", PLAIN, part)))
        self.assertEqual(parsed.attachments[0].filename_raw, "résumé.pdf")

    def test_rfc2047_name(self) -> None:
        """RFC 2047 encoded names (common, if non-standard) are decoded."""
        part = self.attachment("=?utf-8?b?w6kucGRm?=", "application/pdf")
        parsed = parse_message(split_entity(multipart("mixed", PLAIN, part)))
        self.assertEqual(parsed.attachments[0].filename_raw, "é.pdf")

    def raw_name(self, fields: bytes) -> str:
        """The raw name of a part with these header fields (bytes, 8-bit allowed)."""
        raw = (
            b'From: a@b\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n'
            b"--B\r\nContent-Type: text/plain\r\n\r\nbody\r\n--B\r\n"
            + fields + b"\r\n\r\nx\r\n--B--\r\n"
        )
        (attachment,) = parse_message(raw).attachments
        return attachment.filename_raw

    def test_utf8_name(self) -> None:
        """Raw UTF-8 in filename= and name= (RFC 6532) is read as UTF-8, not as
        replacement characters."""
        utf8 = "naïve café.txt".encode()
        self.assertEqual(
            self.raw_name(b'Content-Type: text/csv\r\nContent-Disposition: attachment; '
                          b'filename="' + utf8 + b'"'),
            "naïve café.txt",
        )
        self.assertEqual(self.raw_name(b'Content-Type: application/pdf; name="' + utf8 + b'"'),
                         "naïve café.txt")
        self.assertEqual(self.raw_name(b"Content-Type: application/pdf; name=" + "日本語.pdf".encode()),
                         "日本語.pdf")

    def test_rfc2231_with_language(self) -> None:
        """C{charset'lang'value} is decoded in its charset; the language is ignored."""
        self.assertEqual(
            self.raw_name(b"Content-Type: application/pdf\r\nContent-Disposition: attachment; "
                          b"filename*=utf-8'fr'r%C3%A9sum%C3%A9.pdf"),
            "résumé.pdf",
        )
        self.assertEqual(
            self.raw_name(b"Content-Type: application/pdf; name*=iso-8859-1'de'Gr%FC%DFe.pdf"),
            "Grüße.pdf",
        )

    def test_rfc2231_without_language(self) -> None:
        """C{charset''value}, and continuations mixing encoded and plain segments."""
        self.assertEqual(
            self.raw_name(b"Content-Type: application/pdf\r\nContent-Disposition: attachment; "
                          b"filename*=UTF-8''%E2%82%AC%20rates.pdf"),
            "€ rates.pdf",
        )
        self.assertEqual(
            self.raw_name(b"Content-Type: application/pdf\r\nContent-Disposition: attachment;\r\n"
                          b" filename*0*=utf-8''na%C3%AF;\r\n filename*1=\"ve caf\";\r\n"
                          b" filename*2*=%C3%A9.txt"),
            "naïve café.txt",
        )

    def test_rfc2231_preferred(self) -> None:
        """The RFC 2231 form wins over the plain fallback sent beside it (RFC 6266 §4.3)."""
        self.assertEqual(
            self.raw_name(b"Content-Type: application/pdf\r\nContent-Disposition: attachment; "
                          b'filename="fallback.pdf"; filename*=utf-8\'\'%C3%A9t%C3%A9.pdf'),
            "été.pdf",
        )

    def test_rfc2047_in_name(self) -> None:
        """An RFC 2047 encoded name= (what many clients send) is decoded."""
        self.assertEqual(
            self.raw_name(b'Content-Type: application/pdf; name="=?UTF-8?B?w6l0w6kucGRm?="'),
            "été.pdf",
        )
        self.assertEqual(
            self.raw_name(b'Content-Type: application/pdf; name="=?utf-8?q?na=C3=AFve?= '
                          b'=?utf-8?q?caf=C3=A9.txt?="'),
            "naïvecafé.txt",
        )

    def test_name_with_quoted_semicolon(self) -> None:
        """A quoted value may hold ';' and an escaped quote."""
        self.assertEqual(
            self.raw_name(b"Content-Type: application/pdf\r\nContent-Disposition: attachment; "
                          b'filename="a;b \\"c\\".pdf"; size=3'),
            'a;b "c".pdf',
        )

    def test_undecodable_name(self) -> None:
        """Bytes that are not UTF-8 fall back to a readable form (Windows-1252),
        never to U+FFFD runs."""
        self.assertEqual(
            self.raw_name(b'Content-Type: application/pdf; name="caf\xe9 \x93q\x94.txt"'),
            "café \u201cq\u201d.txt",
        )
        for fields in (b"Content-Type: application/pdf; name*=utf-8''%FF%FE%81.txt",
                       b'Content-Type: application/pdf; name="\xff\xfe\x81.txt"',
                       b"Content-Type: application/pdf; name*=x-unknown''%C3%A9%FF.txt"):
            name = self.raw_name(fields)
            self.assertNotIn("\ufffd", name, fields)
            self.assertTrue(name.endswith(".txt"), name)
            self.assertEqual(len(name), 7, name)

    def test_hostile_name_passed_raw(self) -> None:
        """Names are not sanitised here (the store does that)."""
        part = self.attachment("../../../etc/cron.d/evil")
        parsed = parse_message(split_entity(multipart("mixed", PLAIN, part)))
        self.assertEqual(parsed.attachments[0].filename_raw, "../../../etc/cron.d/evil")

    def test_unnamed(self) -> None:
        """A part without any name has an empty raw name."""
        part = "Content-Type: application/octet-stream\r\n\r\nxx"
        parsed = parse_message(split_entity(multipart("mixed", PLAIN, part)))
        self.assertEqual(parsed.attachments[0].filename_raw, "")

    def test_missing_content_type(self) -> None:
        """An attachment without Content-Type is application/octet-stream."""
        part = 'Content-Disposition: attachment; filename="a"\r\n\r\nxx'
        parsed = parse_message(split_entity(multipart("mixed", PLAIN, part)))
        self.assertEqual(parsed.attachments[0].content_type, "application/octet-stream")

    def test_non_inline_text(self) -> None:
        """text/csv is never inline."""
        part = "Content-Type: text/csv\r\n\r\na,b"
        parsed = parse_message(split_entity(multipart("mixed", PLAIN, part)))
        self.assertEqual(parsed.attachments, (Attachment("", "text/csv", b"a,b"),))

    def test_forwarded_message(self) -> None:
        """A message/rfc822 part is one attachment holding its raw bytes."""
        inner = (
            "Subject: inner\r\nX-Long: folded\r\n value\r\n"
            'Content-Type: multipart/mixed; boundary="IN"\r\n\r\n'
            "--IN\r\nContent-Type: text/plain\r\n\r\ninner body\r\n--IN--\r\n"
        )
        part = 'Content-Type: message/rfc822\r\n\r\n' + inner
        parsed = parse_message(split_entity(multipart("mixed", PLAIN, part)))
        self.assertEqual(parsed.body, "plain text body")
        (forwarded,) = parsed.attachments
        self.assertEqual(forwarded.content_type, "message/rfc822")
        self.assertEqual(forwarded.data, inner.encode())


MALFORMED = [
    b"x",
    b"\x00\x00\x00",
    b"Subject: no body",
    b"no headers at all\r\njust text\r\n",
    b": empty name\r\n\r\nbody",
    b"Subject: =?utf-8?b?!!!?= =?bogus?q?x?= =?utf-8?b?w?= =?utf-8?x?y?=\r\n\r\n",
    b"Subject: \xff\xfe\x80 =?utf-8?q?\xff?=\r\nFrom: \xff <\xfe@\xfd>\r\n\r\n\xff",
    b"From: <<<>>>, ,,, @@, \"unterminated\r\nTo: (((\r\nCc: a@\r\n\r\nx",
    b"Date: Mon, 99 Foo 99999 99:99:99 +99999\r\n\r\nx",
    b"Date: 0 0 0 0 0:\r\n\r\nx",
    b"Content-Type: multipart/mixed\r\n\r\nno boundary",
    b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
    b"--B\r\nContent-Type: text/plain\r\n\r\nnever closed",
    b'Content-Type: multipart/mixed; boundary="B"\r\n\r\nno parts at all',
    b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not*base64===x",
    b"Content-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
    b"begin 644 x\r\ngarbage\r\n",
    b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=ZZ=\r\n=",
    b"Content-Type: text/html; charset=\"\xff\"\r\n\r\n<p unclosed <b>&bogus;<<<>",
    b"Content-Type: application/pdf\r\n"
    b"Content-Disposition: attachment; filename*=idna''%FF%FE\r\n\r\nx",
    b"Content-Type: application/pdf\r\n"
    b"Content-Disposition: attachment; filename*=rot13''x; name*0*=zz\r\n\r\nx",
    b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"bm90IGEgbWVzc2FnZQ==",
    b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\nAction: failed\r\n",
    b"Content-Type: ////\r\nContent-Disposition: ;;;\r\n\r\nx",
    b"Content-Type: text/plain; charset*=''\r\nMessage-ID: <<<>\r\nReferences: > < <\r\n\r\nx",
    b"\r\n\r\nbody after blank headers",
    b"From: a@b\nSubject: LF only\n\nbody\n",
    b"Subject: bare\rcarriage\r\n\r\nx\rx",
]


class MalformedTests(SynchronousTestCase):
    """Malformed input never crashes the parser."""

    def assertStorable(self, raw: bytes) -> None:
        """C{raw} parses and renders to a file that reads back."""
        parsed = parse_message(raw)
        fields = {
            "from": parsed.from_,
            "to": parsed.to,
            "subject": parsed.subject,
            "date": parsed.date,
            "message_id": parsed.message_id,
            "references": parsed.references,
            "names": [a.filename_raw for a in parsed.attachments],
        }
        self.assertEqual(parse(render(fields, parsed.body))[0]["subject"], parsed.subject)

    def test_empty(self) -> None:
        """Empty or blank input is a message with no headers, body or attachments."""
        for raw in (b"", b"\r\n", b"  \r\n\t", b"\n\n\n"):
            parsed = parse_message(raw)
            self.assertEqual((parsed.body, parsed.attachments), ("", ()), raw)
            self.assertEqual((parsed.subject, parsed.from_), ("(no subject)", ""))
            self.assertStorable(raw)

    def test_moderately_deep(self) -> None:
        """Deep but parseable nesting still finds the body."""
        raw = b"".join(
            b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
            for i in range(100)
        ) + b"Content-Type: text/plain\r\n\r\ndeep"
        self.assertIn("deep", parse_message(raw).body)

    def test_corpus(self) -> None:
        """Each known-bad message parses and renders."""
        for raw in MALFORMED:
            self.assertStorable(raw)

    def test_fuzz(self) -> None:
        """Seeded random mutations of real-looking messages parse and render."""
        seeds = [
            split_entity(
                multipart("mixed", PLAIN, HTML, "Content-Type: image/png; name=a\r\n\r\nxx")
            ),
            split_entity(multipart("alternative", PLAIN, HTML)),
            message("Subject: =?utf-8?q?caf=C3=A9?=\r\nDate: Tue, 1 Jul 2003 10:52:37 +0200\r\n"),
        ] + MALFORMED
        alphabet = b"\x00\xff\r\n:;<>\"=?-_ \t@,()\\/*'%bBqQ" + bytes(range(32, 127))
        rng = random.Random(20250415)
        for _ in range(400):
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 12)):
                position = rng.randrange(len(data) + 1)
                action = rng.randrange(3)
                if action == 0:
                    count = rng.randint(1, 8)
                    data[position:position] = bytes(rng.choice(alphabet) for _ in range(count))
                elif action == 1:
                    del data[position : position + rng.randint(1, 8)]
                else:
                    data[position : position + 1] = bytes([rng.randrange(256)])
            if bytes(data).strip():
                self.assertStorable(bytes(data))


def stored_fields(parsed) -> dict:
    """Render C{parsed} as the store does (every frontmatter field, the
    attachments under their sanitised names) and read the file back.

    Fails on anything the store would fail on: a lone surrogate in the
    frontmatter or in a file name, more than L{MAX_ATTACHMENTS} attachments.
    """
    assert len(parsed.attachments) <= MAX_ATTACHMENTS, len(parsed.attachments)
    taken, tried, entries = {"x.md"}, {}, []
    for index, attachment in enumerate(parsed.attachments):
        name = filenames.sanitize_attachment_name(attachment.filename_raw, index)
        name = filenames.dedupe_attachment_name(name, taken, tried)
        taken.add(name)
        os.fsencode(name)
        attachment.filename_raw.encode("utf-8")
        entries.append({"filename": name, "content_type": attachment.content_type,
                        "size": len(attachment.data), "path": name})
    fields = inbound_fields(
        id="x", parsed=parsed, delivered_to="a@test.local", date=parsed.date,
        received_at="2025-01-01T00:00:00+00:00", received_from_ip="192.0.2.1",
        size_bytes=1, dkim="none", spf="none", dmarc="none", trusted="none",
        mailbox="alice", attachments=entries,
    )
    fields["problems"] = list(parsed.problems)
    return parse(render(fields, parsed.body))[0]


def attachment_part(name: str, body: str = "x", ctype: str = "application/octet-stream",
                    extra: str = "") -> str:
    """A part with a named attachment."""
    return (
        f"Content-Type: {ctype}\r\n{extra}"
        f'Content-Disposition: attachment; filename="{name}"\r\n\r\n{body}'
    )


class PartFailureTests(SynchronousTestCase):
    """A part that cannot be decoded is kept as received; the message is still stored."""

    def test_lone_surrogate_names(self) -> None:
        """RFC 2231 names whose charset yields a lone surrogate are stored as
        their bytes read as UTF-8: no surrogate, no replacement character."""
        for param, name in (("filename*=utf-7''+2AA-.pdf", "+2AA-.pdf"),
                            ("filename*=unicode-escape''%5Cud800.pdf", "\\ud800.pdf"),
                            ("filename*=raw-unicode-escape''%5Cudfff.pdf", "\\udfff.pdf"),
                            ("filename*0*=utf-7''+2AA;\r\n filename*1*=-.pdf", "+2AA-.pdf")):
            for header in ("Content-Disposition: attachment; ",
                           "Content-Type: application/pdf; "):
                part = (
                    "Content-Type: application/pdf\r\n" if "Type" not in header else ""
                ) + header + param.replace("filename", "name" if "Type" in header else
                                           "filename") + "\r\n\r\nx"
                parsed = parse_message(split_entity(multipart("mixed", PLAIN, part)))
                (attachment,) = parsed.attachments
                self.assertEqual(attachment.filename_raw, name, param)
                self.assertEqual(attachment.data, b"x")
                stored_fields(parsed)

    def test_decoder_raises(self) -> None:
        """A part whose transfer decoding raises is kept as its raw bytes, typed
        application/octet-stream (the bytes are still encoded); the rest is intact."""

        def broken(span):
            raise ValueError("decoder failure")

        self.patch(mimesplit, "_base64", broken)
        image = (
            'Content-Type: image/png; name="a.png"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo="
        )
        notes = attachment_part("notes.txt", "notes", "text/plain")
        parsed = parse_message(split_entity(multipart("mixed", PLAIN, image, notes)))
        self.assertEqual(parsed.body, "plain text body")
        self.assertEqual(parsed.attachments, (
            Attachment("a.png", "application/octet-stream", b"iVBORw0KGgo="),
            Attachment("notes.txt", "text/plain", b"notes"),
        ))
        self.assertEqual(parsed.problems, ("part 0 kept raw (ValueError)",))
        stored_fields(parsed)

    def test_stdlib_decoder_raises(self) -> None:
        """A uuencoded part whose (stdlib) decoding raises is kept as received."""

        def broken(part, span):
            raise LookupError("codec")

        self.patch(mimesplit, "_stdlib_payload", broken)
        part = (
            'Content-Type: application/zip; name="a.zip"\r\n'
            "Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 a\r\n#86)C\r\n`\r\nend"
        )
        parsed = parse_message(split_entity(multipart("mixed", PLAIN, part)))
        self.assertEqual(parsed.attachments, (
            Attachment("a.zip", "application/octet-stream", b"begin 644 a\r\n#86)C\r\n`\r\nend"),
        ))

    def test_own_type_when_unencoded(self) -> None:
        """A failed part with no transfer encoding keeps its own type and name."""

        def broken(part):
            raise RuntimeError("boom")

        self.patch(message_module, "_attachment", broken)
        csv = 'Content-Type: text/csv; name="t.csv"\r\n\r\na,b'
        parsed = parse_message(split_entity(multipart("mixed", PLAIN, csv)))
        self.assertEqual(parsed.attachments, (Attachment("t.csv", "text/csv", b"a,b"),))

    def test_body_part_fails(self) -> None:
        """A body part whose decoding raises is left out of the body and kept
        raw, in MIME order; the other body parts stay."""

        def broken(text):
            raise ValueError("converter failure")

        self.patch(message_module.htmltext, "convert", broken)
        parsed = parse_message(
            split_entity(multipart("mixed", HTML, attachment_part("a.bin"), PLAIN))
        )
        self.assertEqual(parsed.body, "plain text body")
        self.assertEqual(parsed.attachments, (
            Attachment("", "text/html",
                       b"<html><body><h1>Hello</h1><p>World</p></body></html>"),
            Attachment("a.bin", "application/octet-stream", b"x"),
        ))
        self.assertEqual(parsed.problems, ("body part kept raw (ValueError)",))

    def test_forwarded_message_not_serialisable(self) -> None:
        """A nested message the stdlib generator cannot write is written out
        from its parsed fields and text, as received."""

        def broken(msg):
            raise RecursionError("too deep")

        self.patch(message_module, "_message_bytes", broken)
        inner = (
            "Subject: inner\r\nX-Long: folded\r\n value\r\n"
            'Content-Type: multipart/mixed; boundary="IN"\r\n\r\n'
            "--IN\r\nContent-Type: text/plain\r\n\r\ninner body\r\n--IN--\r\n"
        )
        part = "Content-Type: message/rfc822\r\n\r\n" + inner
        parsed = parse_message(split_entity(multipart("mixed", PLAIN, part)))
        self.assertEqual(parsed.attachments, (Attachment("", "message/rfc822", inner.encode()),))
        self.assertEqual(parsed.problems, ("part 0 kept raw (RecursionError)",))

    def test_deep_forwarded_message(self) -> None:
        """Forwarded messages nested deeper than the stdlib generator can write
        are stored as one message/rfc822 attachment holding the innermost text."""
        raw = b"From: a@b.example\r\nSubject: deep\r\n" + (
            b"Content-Type: message/rfc822\r\n\r\n" * 400
        ) + b"innermost"
        parsed = parse_message(raw)
        self.assertEqual(parsed.subject, "deep")
        (attachment,) = parsed.attachments
        self.assertEqual(attachment.content_type, "message/rfc822")
        self.assertTrue(attachment.data.endswith(b"innermost"))
        stored_fields(parsed)


class WholeMessageTests(SynchronousTestCase):
    """A message whose MIME structure cannot be read is stored whole."""

    RAW = (
        b"From: Alice <alice@example.com>\r\nTo: bob@test.local\r\nSubject: kept\r\n"
        b"Message-ID: <whole@example.com>\r\nList-ID: <l.example>\r\n"
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nbody\r\n--B--\r\n"
    )

    def assertWhole(self, parsed, raw: bytes) -> None:
        """C{parsed} is C{raw} kept whole, identity read from the header block."""
        self.assertEqual(parsed.from_, "Alice <alice@example.com>")
        self.assertEqual(parsed.subject, "kept")
        self.assertEqual(parsed.message_id, "whole@example.com")
        self.assertEqual(parsed.list_id, "<l.example>")
        self.assertEqual(parsed.body, "")
        self.assertEqual(parsed.attachments, (Attachment("message.eml", "message/rfc822", raw),))
        stored_fields(parsed)

    def test_parse_raises(self) -> None:
        """Any exception from the MIME parse keeps the whole message."""

        def broken(raw):
            raise ValueError("parser failure")

        self.patch(mimesplit, "parse", broken)
        parsed = parse_message(self.RAW)
        self.assertWhole(parsed, self.RAW)
        self.assertEqual(parsed.problems, (
            "MIME structure unreadable (ValueError): the whole message kept as message.eml",
        ))

    def test_content_raises(self) -> None:
        """An exception while walking the tree keeps the whole message."""

        def broken(*args):
            raise RecursionError("walk")

        self.patch(message_module, "_entity", broken)
        self.assertWhole(parse_message(self.RAW), self.RAW)

    def test_stdlib_recursion(self) -> None:
        """Forwarded messages nested too deep for the stdlib parser: the whole
        message is kept, the identity read from the header block."""
        head = self.RAW[: self.RAW.index(b"Content-Type")]
        raw = head + b"Content-Type: message/rfc822\r\n\r\n" * 5000 + b"x"
        self.assertWhole(parse_message(raw), raw)

    def test_headers_unreadable_too(self) -> None:
        """When even the MIME parser cannot read the header block, the identity comes from
        DKIM's split of it, marked ambiguous (never trusted)."""

        def broken(raw):
            raise ValueError("parser failure")

        self.patch(mimesplit, "parse", broken)
        self.patch(mimesplit, "parse_headers", broken)
        parsed = parse_message(self.RAW)
        self.assertEqual((parsed.from_, parsed.subject, parsed.list_id),
                         ("Alice <alice@example.com>", "kept", None))
        self.assertTrue(parsed.identity.ambiguous)
        self.assertEqual(parsed.attachments[0].data, self.RAW)

    def test_too_deep_multipart(self) -> None:
        """Multiparts nested thousands deep are stored: the splitter keeps the
        parts it cannot give the stdlib as one leaf."""
        raw = b"Subject: deep\r\n" + b"".join(
            b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
            for i in range(3000)
        )
        parsed = parse_message(raw)
        self.assertEqual(parsed.subject, "deep")
        self.assertEqual(parsed.body, "")
        (attachment,) = parsed.attachments
        self.assertEqual(attachment.content_type, "multipart/mixed")
        self.assertTrue(attachment.data.startswith(b"Content-Type: multipart/mixed; boundary=b33"))
        stored_fields(parsed)


def many_parts(count: int, nl: str = "\r\n", text: bool = False) -> bytes:
    """A multipart/mixed of C{count} attachments named C{<i>.txt}, holding C{<i>}."""
    parts = [PLAIN] if text else []
    parts += [attachment_part(f"{i}.txt", str(i), "text/plain") for i in range(count)]
    return split_entity(multipart("mixed", *parts)).replace(b"\r\n", nl.encode())


class AttachmentCapTests(SynchronousTestCase):
    """At most L{MAX_ATTACHMENTS} attachments; past that the rest is one
    C{remainder.eml}, and the work stops there too."""

    def test_constant(self) -> None:
        """The cap is 1000 attachments."""
        self.assertEqual(MAX_ATTACHMENTS, 1000)

    def test_under_cap(self) -> None:
        """999 attachments are all kept as they are."""
        parsed = parse_message(many_parts(999))
        self.assertEqual(len(parsed.attachments), 999)
        self.assertEqual(parsed.attachments[-1], Attachment("998.txt", "text/plain", b"998"))
        self.assertEqual(parsed.problems, ())

    def test_at_cap(self) -> None:
        """The 1000th part starts the remainder: a message/rfc822 entity of the
        multipart's Content-Type field, a blank line and the raw rest."""
        raw = many_parts(1000)
        parsed = parse_message(raw)
        self.assertEqual(len(parsed.attachments), 1000)
        self.assertEqual(
            [a.filename_raw for a in parsed.attachments[:999]], [f"{i}.txt" for i in range(999)]
        )
        remainder = parsed.attachments[-1]
        self.assertEqual((remainder.filename_raw, remainder.content_type),
                         ("remainder.eml", "message/rfc822"))
        start = raw.index(b"--BOUND\r\nContent-Type: text/plain\r\n"
                          b'Content-Disposition: attachment; filename="999.txt"')
        self.assertEqual(
            remainder.data, b'Content-Type: multipart/mixed; boundary="BOUND"\r\n\r\n' + raw[start:]
        )
        self.assertEqual(parsed.problems, ("part 999 kept as received: more than 999 parts",))
        stored_fields(parsed)

    def test_remainder_readable(self) -> None:
        """The remainder parses as a multipart holding every part past the cap."""
        for nl in ("\r\n", "\n"):
            parsed = parse_message(many_parts(1500, nl, text=True))
            self.assertEqual(parsed.body, "plain text body")
            # The body part counts: 998 attachment parts, then the remainder.
            self.assertEqual(len(parsed.attachments), 999)
            self.assertEqual(parsed.attachments[997].filename_raw, "997.txt")
            nested = email.message_from_bytes(parsed.attachments[-1].data)
            names = [part.get_filename() for part in nested.get_payload()]
            self.assertEqual(names, [f"{i}.txt" for i in range(998, 1500)])
            self.assertEqual(nested.get_payload()[-1].get_payload(), "1499")

    def test_nested_remainder(self) -> None:
        """A cap reached inside a nested multipart ends every enclosing one: the
        remainder has the inner Content-Type and holds the outer rest too."""
        inner = multipart("mixed", *[attachment_part(f"{i}.bin") for i in range(1200)],
                          boundary="INNER")
        raw = split_entity(multipart("mixed", PLAIN, inner, attachment_part("last.bin"),
                                     boundary="OUTER"))
        parsed = parse_message(raw)
        self.assertEqual(parsed.body, "plain text body")
        # Counted: the body, the inner multipart and 997 of its parts.
        self.assertEqual(len(parsed.attachments), 998)
        self.assertEqual(parsed.attachments[-2].filename_raw, "996.bin")
        data = parsed.attachments[-1].data
        self.assertTrue(data.startswith(b'Content-Type: multipart/mixed; boundary="INNER"\r\n\r\n'
                                        b"--INNER\r\n"))
        self.assertTrue(data.endswith(b'filename="last.bin"\r\n\r\nx\r\n--OUTER--\r\n'))
        self.assertIn(b"--INNER--\r\n", data)

    def counting(self) -> dict:
        """Count header-block parses and stdlib feed parses from here on."""
        counts = {"headers": 0, "feedparse": 0}
        headers, feedparse = mimesplit._HEADERS, mimesplit.feedparse

        class Counting:
            @staticmethod
            def parsebytes(data):
                counts["headers"] += 1
                return headers.parsebytes(data)

        def counting_feedparse(raw):
            counts["feedparse"] += 1
            return feedparse(raw)

        self.patch(mimesplit, "_HEADERS", Counting)
        self.patch(mimesplit, "feedparse", counting_feedparse)
        return counts

    def test_work_bounded(self) -> None:
        """100 000 parts cost as many header parses as 1000 (counted, not timed)."""
        counts = self.counting()
        parsed = parse_message(many_parts(100_000))
        self.assertEqual(len(parsed.attachments), 1000)
        self.assertEqual(counts, {"headers": 1000, "feedparse": 0})

    def test_consecutive_delimiters(self) -> None:
        """Delimiter lines enclosing no part count too: their line matches are
        bounded by the cap, and the rest is the remainder."""
        lines = []

        def counting_readline(cursor):
            lines.append(1)
            return readline(cursor)

        readline = mimesplit._Cursor.readline
        self.patch(mimesplit._Cursor, "readline", counting_readline)
        raw = split_entity(multipart("mixed", PLAIN)).replace(
            b"--BOUND--", b"--BOUND\r\n" * 100_000 + b"--BOUND--"
        )
        parsed = parse_message(raw)
        self.assertLess(len(lines), 2 * MAX_ATTACHMENTS)
        self.assertEqual(parsed.body, "plain text body")
        self.assertEqual([a.filename_raw for a in parsed.attachments], ["remainder.eml"])

    def test_mixed_line_endings(self) -> None:
        """Mixed line endings over the cap are not given to the stdlib: they are
        split with the most common ending, and capped."""
        counts = self.counting()
        raw = many_parts(5000).replace(b"filename=\"7.txt\"\r\n\r\n7",
                                       b"filename=\"7.txt\"\r\n\r\n7\r7")
        parsed = parse_message(raw)
        self.assertEqual(counts["feedparse"], 0)
        self.assertLessEqual(counts["headers"], MAX_ATTACHMENTS)
        self.assertEqual(len(parsed.attachments), 1000)
        self.assertEqual(parsed.attachments[7].data, b"7\r7")
        self.assertEqual(parsed.attachments[-1].filename_raw, "remainder.eml")

    def test_mixed_line_endings_under_cap(self) -> None:
        """Under the cap, mixed line endings still go to the stdlib."""
        counts = self.counting()
        raw = many_parts(10).replace(b"\r\n\r\n7", b"\r\n\r\n7\r7")
        parsed = parse_message(raw)
        self.assertEqual(counts["feedparse"], 1)
        self.assertEqual(len(parsed.attachments), 10)

    def test_forwarded_message_with_many_parts(self) -> None:
        """A message/rfc822 part with more parts than the cap allows is not given
        to the stdlib: it is one attachment, its raw body."""
        counts = self.counting()
        inner = "Subject: inner\r\n" + multipart(
            "mixed", *[attachment_part(f"{i}.bin") for i in range(5000)], boundary="IN"
        )
        forwarded = 'Content-Type: message/rfc822; name="fw.eml"\r\n\r\n' + inner
        parsed = parse_message(split_entity(multipart("mixed", PLAIN, forwarded)))
        self.assertEqual(counts["feedparse"], 0)
        self.assertEqual(parsed.attachments, (
            Attachment("fw.eml", "message/rfc822", inner.encode()),
        ))

    def test_top_level_forwarded_with_many_parts(self) -> None:
        """A top-level message/rfc822 over the cap is one attachment, bounded."""
        counts = self.counting()
        inner = "Subject: inner\r\n" + multipart(
            "mixed", *[attachment_part(f"{i}.bin") for i in range(5000)], boundary="IN"
        )
        raw = message("Content-Type: message/rfc822\r\n", inner)
        parsed = parse_message(raw)
        self.assertEqual(counts["feedparse"], 0)
        self.assertEqual(parsed.from_, "Alice <alice@example.com>")
        self.assertEqual(parsed.attachments, (Attachment("", "message/rfc822", inner.encode()),))

    def test_declined_multipart_with_many_parts(self) -> None:
        """A multipart part the splitter declines (a From line among its headers)
        with more parts than allowed is one readable multipart attachment."""
        counts = self.counting()
        inner = multipart("mixed", *[attachment_part(f"{i}.bin") for i in range(2000)],
                          boundary="IN").replace("Content-Type:", "From x\r\nContent-Type:", 1)
        inner = "X-A: 1\r\n" + inner
        parsed = parse_message(split_entity(multipart("mixed", PLAIN, inner)))
        self.assertEqual(counts["feedparse"], 0)
        (attachment,) = parsed.attachments
        self.assertEqual(attachment.content_type, "multipart/mixed")
        nested = email.message_from_bytes(attachment.data)
        self.assertEqual(len(nested.get_payload()), 2000)


HOSTILE_CODECS = [
    "utf-7", "unicode-escape", "raw-unicode-escape", "utf-16", "utf-16-be", "utf-32",
    "idna", "punycode", "base64", "hex", "rot13", "zlib", "bz2", "uu", "quopri",
    "charmap", "undefined", "utf-8-sig", "x-unknown", "", "latin-1", "cp932", "shift_jis",
]
HOSTILE_VALUES = ["+2AA-", "%5Cud800", "%5Cudc80", "%FF%FE%00", "%E9", "%00%0D%0A", "x" * 300,
                  "..%2F..%2Fetc%2Fpasswd", "%E2%80%AE", "=?utf-8?q?=ED=A0=80?=", "%"]


class FuzzTests(SynchronousTestCase):
    """L{parse_message} never raises, and what it returns can always be stored."""

    def test_random_bytes(self) -> None:
        """Seeded random bytes, MIME-flavoured, parse and store."""
        rng = random.Random(20260501)
        pieces = [b"\r\n", b"\n", b"\r", b"--B", b"Content-Type: multipart/mixed; boundary=B",
                  b"Content-Type: message/rfc822", b": ", b"=?utf-8?b?", b"?=", b"\xff",
                  b"\x00", b"From ", b"Content-Transfer-Encoding: base64", b"\t"]
        for _ in range(300):
            raw = b"".join(
                rng.choice(pieces) if rng.random() < 0.5 else rng.randbytes(rng.randint(1, 9))
                for _ in range(rng.randint(0, 80))
            )
            stored_fields(parse_message(raw))

    def test_hostile_parameters(self) -> None:
        """RFC 2231 parameters in any codec, on any parameter, parse and store."""
        for codec in HOSTILE_CODECS:
            for value in HOSTILE_VALUES:
                encoded = f"{codec}''{value}"
                parts = [
                    f"Content-Type: application/pdf\r\n"
                    f"Content-Disposition: attachment; filename*={encoded}\r\n\r\nx",
                    f"Content-Type: image/png; name*={encoded}\r\n\r\nx",
                    f"Content-Type: text/plain; charset*={encoded}\r\n\r\nt\xe9xt",
                    f"Content-Type: text/html; charset*={encoded}\r\n\r\n<p>\xff</p>",
                    f"Content-Type: multipart/mixed; boundary*={encoded}\r\n\r\n"
                    f"--x\r\n\r\ny\r\n",
                    f"Content-Type: message/rfc822\r\n\r\n"
                    f"Content-Type: multipart/mixed; boundary*={encoded}\r\n\r\n"
                    f"--\xe9\r\n\r\ny\r\n",
                ]
                for part in parts:
                    raw = split_entity(multipart("mixed", PLAIN, part))
                    stored_fields(parse_message(raw))
                    stored_fields(parse_message(raw.replace(b"\r\n", b"\n")))
