"""Tests for L{aimx.core.frontmatter}."""

import threading
import tomllib
import types
from datetime import datetime, timedelta, timezone

from twisted.trial.unittest import SynchronousTestCase

from aimx.core import frontmatter
from aimx.core.frontmatter import (
    CLOSING_TRIES,
    INBOUND_ORDER,
    KEY_ORDER,
    inbound_fields,
    mark_read,
    mark_unread,
    parse,
    render,
    rfc3339_utc,
    rfc3339_utc_z,
    split,
    with_defaults,
)
from aimx.core.message import parse_message

RECEIVED = datetime(2025, 4, 15, 12, 30, 23, 512345, tzinfo=timezone.utc)

GOLDEN = [
    "id", "message_id", "thread_id", "from", "to", "delivered_to", "subject", "date",
    "received_at", "received_from_ip", "size_bytes", "body_sha256", "dkim", "spf", "dmarc",
    "trusted", "mailbox", "read",
]  # fmt: skip

EXAMPLE_MESSAGE = (
    "From: Alice Example <alice@example.org>\r\n"
    "To: support@agent.example.com\r\n"
    "Cc: Bob <bob@example.org>\r\n"
    "Subject: Invoice #42 =?utf-8?q?=E2=80=94?= March\r\n"
    "Date: Tue, 15 Apr 2025 14:30:22 +0200\r\n"
    "Message-ID: <CAF42abc@mail.example.org>\r\n"
    "In-Reply-To: <root-1@agent.example.com>\r\n"
    "References: <root-1@agent.example.com>\r\n"
    'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n'
    "--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    "Hi, please find the March invoice attached.\r\n"
    "--XX\r\nContent-Type: application/pdf\r\n"
    'Content-Disposition: attachment; filename="invoice.pdf"\r\n'
    "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--XX--\r\n"
).encode()

EXAMPLE_FILE = """\
+++
id = "2025-04-15-123023-invoice-42-march"
message_id = "CAF42abc@mail.example.org"
thread_id = "2c35f29958d09013"
from = "Alice Example <alice@example.org>"
to = "support@agent.example.com"
cc = "Bob <bob@example.org>"
delivered_to = "support@agent.example.com"
subject = "Invoice #42 — March"
date = "2025-04-15T14:30:22+02:00"
received_at = "2025-04-15T12:30:23.512345+00:00"
received_from_ip = "203.0.113.42"
size_bytes = 61874
body_sha256 = "95be703c28587f63095f3ab6dc3fe3f068d2ad7c1744c4bccf90f7634902095d"
in_reply_to = "root-1@agent.example.com"
references = "root-1@agent.example.com"
dkim = "pass"
spf = "pass"
dmarc = "pass"
trusted = "true"
mailbox = "support"
read = false

[[attachments]]
filename = "invoice.pdf"
content_type = "application/pdf"
size = 45230
path = "invoice.pdf"
+++

Hi, please find the March invoice attached.
""".encode()


def ingest(raw: bytes, received_from_ip: str | None = None, attachments=()) -> bytes:
    """Render C{raw} as the ingest pipeline does, with unsigned results."""
    parsed = parse_message(raw)
    fields = inbound_fields(
        id="2025-04-15-123023-x",
        parsed=parsed,
        delivered_to="alice@test.local",
        date=parsed.date or rfc3339_utc(RECEIVED),
        received_at=rfc3339_utc(RECEIVED),
        received_from_ip=received_from_ip,
        size_bytes=len(raw),
        dkim="none",
        spf="none",
        dmarc="none",
        trusted="none",
        mailbox="alice",
        attachments=list(attachments),
    )
    return render(fields, parsed.body)


def keys(data: bytes) -> list[str]:
    """The frontmatter keys of a file, in document order."""
    return list(parse(data)[0])


def parse_rfc3339(value: str) -> datetime:
    """Parse an RFC 3339 timestamp with C{Z} or an offset."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class RenderTests(SynchronousTestCase):
    """Rendering inbound files (docs/concepts.md, "Message files")."""

    def test_complete_example(self) -> None:
        """The §7 example renders byte for byte."""
        parsed = parse_message(EXAMPLE_MESSAGE)
        fields = inbound_fields(
            id="2025-04-15-123023-invoice-42-march",
            parsed=parsed,
            delivered_to="support@agent.example.com",
            date=parsed.date,
            received_at=rfc3339_utc(RECEIVED),
            received_from_ip="203.0.113.42",
            size_bytes=61874,
            dkim="pass",
            spf="pass",
            dmarc="pass",
            trusted="true",
            mailbox="support",
            attachments=[
                {"path": "invoice.pdf", "size": 45230, "content_type": "application/pdf",
                 "filename": "invoice.pdf"},
            ],
        )  # fmt: skip
        self.assertEqual(render(fields, parsed.body), EXAMPLE_FILE)

    def test_layout(self) -> None:
        """The file is +++, TOML, +++, an empty line, the body, a final LF."""
        data = ingest(b"From: a@b\r\nSubject: Test\r\n\r\nThe body text.")
        self.assertTrue(data.startswith(b"+++\n"))
        self.assertIn(b"\n+++\n\nThe body text.", data)
        self.assertTrue(data.endswith(b"The body text.\n"))
        fields, body = parse(data)
        self.assertEqual(body, b"The body text.\n")
        self.assertEqual(fields["subject"], "Test")

    def test_golden_order(self) -> None:
        """A minimal file has exactly the golden keys in order."""
        data = ingest(b"From: a@b\r\n\r\nx", received_from_ip="203.0.113.50")
        self.assertEqual(keys(data), GOLDEN)
        self.assertEqual(parse(data)[0]["received_from_ip"], "203.0.113.50")

    def test_always_present(self) -> None:
        """A header-poor mail still has every required key and the defaults."""
        fields = parse(ingest(b"X-Nothing: here\r\n\r\nx"))[0]
        self.assertEqual(set(GOLDEN) - {"received_from_ip"}, set(fields))
        checked = ("message_id", "from", "to", "dkim", "spf", "dmarc", "trusted", "read")
        self.assertEqual(
            [fields[k] for k in checked], ["", "", "", "none", "none", "none", "none", False]
        )
        self.assertEqual(fields["size_bytes"], len(b"X-Nothing: here\r\n\r\nx"))

    def test_optional_absent(self) -> None:
        """Optional keys are left out when there is nothing to say."""
        fields = parse(ingest(b"From: a@b\r\n\r\nx"))[0]
        for key in ("cc", "reply_to", "list_id", "auto_submitted", "in_reply_to",
                    "references", "labels", "attachments", "read_at", "received_from_ip"):
            self.assertNotIn(key, fields)  # fmt: skip

    def test_hidden_text(self) -> None:
        """hidden_text = true when anything hidden was removed from the body,
        after trusted, trust_reason and unsigned_headers, then risk and risk_reasons;
        all absent otherwise."""
        raw = b"From: a@b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHi\xe2\x80\x8b there"
        parsed = parse_message(raw)
        self.assertGreater(parsed.hidden_chars, 0)
        fields = inbound_fields(
            id="x", parsed=parsed, delivered_to="a@b", date=None, received_at="t",
            received_from_ip=None, size_bytes=1, dkim="none", spf="none", dmarc="none",
            trusted="false", trust_reason="no signature", unsigned_headers=["Reply-To"],
            risk_reasons=["guard:tool-call", "hidden_text"], mailbox="m", attachments=(),
        )  # fmt: skip
        order = keys(render(fields, parsed.body))
        self.assertEqual(
            order[order.index("trusted"):order.index("mailbox") + 1],
            ["trusted", "trust_reason", "unsigned_headers", "hidden_text", "risk",
             "risk_reasons", "mailbox"],
        )
        written = parse(render(fields, parsed.body))[0]
        self.assertIs(written["hidden_text"], True)
        self.assertEqual((written["risk"], written["risk_reasons"]),
                         ("review", ["guard:tool-call", "hidden_text"]))
        for key in ("hidden_text", "risk", "risk_reasons"):
            self.assertNotIn(key, keys(ingest(b"From: a@b\r\n\r\nx")))

    def test_unspecified_peer(self) -> None:
        """The unspecified address (C{aimx ingest}) leaves out received_from_ip."""
        for address in ("0.0.0.0", "::"):
            self.assertNotIn("received_from_ip", keys(ingest(b"From: a@b\r\n\r\nx", address)))
        self.assertIn("received_from_ip", keys(ingest(b"From: a@b\r\n\r\nx", "2001:db8::1")))

    def test_list_headers(self) -> None:
        """List-ID and Auto-Submitted are recorded raw."""
        fields = parse(
            ingest(b"List-ID: <mylist.example.com>\r\nAuto-Submitted: auto-replied\r\n\r\nx")
        )[0]
        self.assertEqual(fields["list_id"], "<mylist.example.com>")
        self.assertEqual(fields["auto_submitted"], "auto-replied")

    def test_message_id(self) -> None:
        """message_id has no brackets."""
        fields = parse(ingest(b"Message-ID: <plain-001@example.com>\r\n\r\nx"))[0]
        self.assertEqual(fields["message_id"], "plain-001@example.com")

    def test_dates(self) -> None:
        """Dates keep the sender's offset; no Date falls back to received_at."""
        for header, expected in (
            ("Thu, 01 Jan 2025 12:00:00 +0000", "2025-01-01T12:00:00Z"),
            ("Tue, 1 Jul 2003 10:52:37 +0200", "2003-07-01T10:52:37+02:00"),
        ):
            data = ingest(f"Date: {header}\r\n\r\nx".encode())
            self.assertEqual(parse(data)[0]["date"], expected)
        fields = parse(ingest(b"From: a@b\r\n\r\nx"))[0]
        self.assertLess(
            abs(parse_rfc3339(fields["date"]) - parse_rfc3339(fields["received_at"])),
            timedelta(seconds=1),
        )
        self.assertEqual(fields["received_at"], "2025-04-15T12:30:23.512345+00:00")

    def test_thread_id(self) -> None:
        """Replies to one parent share its thread id."""
        replies = (
            f"Message-ID: <r{n}@x>\r\nIn-Reply-To: <parent@example.com>\r\n\r\nx".encode()
            for n in (1, 2)
        )
        ids = {parse(ingest(raw))[0]["thread_id"] for raw in replies}
        self.assertEqual(ids, {"ee9cd2a3ead6d5cc"})

    def test_no_subject(self) -> None:
        """A missing Subject is written C{(no subject)}."""
        self.assertEqual(parse(ingest(b"From: a@b\r\n\r\nx"))[0]["subject"], "(no subject)")

    def test_injection(self) -> None:
        """A value holding a delimiter line round-trips and ends nothing early."""
        value = "x\n+++\ninjected: true"
        data = render({"from": value, "subject": "colons: and #hashes"}, "body\n")
        fields, body = parse(data)
        self.assertEqual(fields, {"from": value, "subject": "colons: and #hashes"})
        self.assertEqual(body, b"body\n")

    def test_attachments_last(self) -> None:
        """Attachment tables follow C{read} after a blank line, keys in order."""
        attachments = [
            {"path": "a.txt", "size": 3, "content_type": "text/plain", "filename": "a.txt"},
            {"filename": "b.bin", "content_type": "application/octet-stream", "size": 1,
             "path": "b.bin"},
        ]  # fmt: skip
        data = ingest(b"From: a@b\r\n\r\nx", attachments=attachments)
        text = split(data)[0]
        self.assertIn('read = false\n\n[[attachments]]\nfilename = "a.txt"\n'
                      'content_type = "text/plain"\nsize = 3\npath = "a.txt"\n\n'
                      '[[attachments]]\nfilename = "b.bin"\n', text)  # fmt: skip
        fields = parse(data)[0]
        self.assertEqual(list(fields)[-2:], ["read", "attachments"])
        self.assertEqual(
            [list(a) for a in fields["attachments"]],
            [["filename", "content_type", "size", "path"]] * 2,
        )

    def test_body_newline(self) -> None:
        """A final newline is added only when missing; CRLF bodies are kept."""
        self.assertTrue(render({}, "a\n").endswith(b"+++\n\na\n"))
        self.assertTrue(render({}, "a\r\nb\r\n").endswith(b"+++\n\na\r\nb\r\n"))
        self.assertEqual(render({}, ""), b"+++\n+++\n\n\n")

    def test_none_and_empty_lists_omitted(self) -> None:
        """None values and empty lists are left out."""
        data = render({"id": "x", "cc": None, "labels": [], "attachments": []}, "")
        self.assertEqual(keys(data), ["id"])

    def test_canonical_order(self) -> None:
        """Keys are written in canonical order whatever the dict order."""
        data = render({"read": False, "mailbox": "m", "id": "x", "read_at": "t"}, "")
        self.assertEqual(keys(data), ["id", "mailbox", "read", "read_at"])

    def test_unknown_keys_after_known(self) -> None:
        """Unknown keys keep their order after the known scalar keys."""
        data = render(
            {"zz": 1, "id": "x", "custom": {"a": 1}, "aa": "y", "read": True,
             "attachments": [{"filename": "f", "content_type": "t", "size": 1, "path": "f"}]},
            "",
        )  # fmt: skip
        text = split(data)[0]
        self.assertLess(text.index("read = true"), text.index("zz = 1"))
        self.assertLess(text.index("zz = 1"), text.index('aa = "y"'))
        self.assertEqual(parse(data)[0]["custom"], {"a": 1})
        self.assertEqual(len(parse(data)[0]["attachments"]), 1)

    def test_sent_copy_order(self) -> None:
        """A delivered sent copy has the §6 key order (case 13)."""
        expected = [
            "id", "message_id", "thread_id", "from", "to", "delivered_to", "subject", "date",
            "size_bytes", "dkim", "spf", "dmarc", "trusted", "mailbox", "read", "outbound",
            "outbound_format", "delivery_status", "delivered_at", "delivery",
        ]  # fmt: skip
        fields = dict.fromkeys(reversed(expected), "v")
        fields["outbound"] = True
        fields["delivery"] = [{"rcpt": "a@b", "status": "delivered", "details": "250 OK"}]
        data = render(fields, "body")
        self.assertEqual(keys(data), expected)
        self.assertIn('\n[[delivery]]\nrcpt = "a@b"\n', split(data)[0])

    def test_sent_copy_optional_order(self) -> None:
        """Optional sent-copy keys slot into the canonical order."""
        order = [k for k in KEY_ORDER if k not in ("read_at", "attachments", "delivery")]
        fields = dict.fromkeys(reversed(order), "v")
        self.assertEqual(keys(render(fields, "")), order)

    def test_inbound_order_is_canonical_prefix(self) -> None:
        """Inbound keys come first in the canonical order."""
        self.assertEqual(KEY_ORDER[: len(INBOUND_ORDER) - 1], INBOUND_ORDER[:-1])


class SplitTests(SynchronousTestCase):
    """Reading files back."""

    def test_split_exact_rest(self) -> None:
        """split returns the TOML text and every byte after the closing line."""
        self.assertEqual(
            split(b'+++\na = "+++"\n+++\n\nbody\n+++\n'),
            ('a = "+++"\n', b"\nbody\n+++\n"),
        )

    def test_substring_not_delimiter(self) -> None:
        """A C{+++} inside a line does not end the frontmatter."""
        fields, body = parse(b'+++\nx = "a +++ b"\ny = 1 # +++\n+++\n\nbody')
        self.assertEqual(fields, {"x": "a +++ b", "y": 1})
        self.assertEqual(body, b"body")

    def test_multiline_string_with_delimiter(self) -> None:
        """A C{+++} line inside a multi-line string (AIMX style) is skipped."""
        data = b'+++\nfrom = """a\n+++\nb"""\nread = false\n+++\n\nbody\n'
        fields, body = parse(data)
        self.assertEqual(fields, {"from": "a\n+++\nb", "read": False})
        self.assertEqual(body, b"body\n")

    def test_crlf_delimiters(self) -> None:
        """Delimiter lines may end in CRLF."""
        self.assertEqual(parse(b"+++\r\na = 1\r\n+++\r\n\nx"), ({"a": 1}, b"x"))

    def test_empty_frontmatter_at_eof(self) -> None:
        """A closing line at the end of the file is accepted."""
        self.assertEqual(parse(b"+++\n+++"), ({}, b""))

    def test_malformed(self) -> None:
        """Missing delimiters, bad TOML or bad UTF-8 raise ValueError."""
        for data in (
            b"",
            b"no frontmatter",
            b" +++\na = 1\n+++\n",
            b"++++\na = 1\n+++\n",
            b"+++\na = 1\n",
            b"+++\na = 1\n++++\n",
            b"+++\na = \n+++\n\nbody",
            b'+++\na = "\xff"\n+++\n',
        ):
            self.assertRaises(ValueError, parse, data)
            self.assertRaises(ValueError, split, data)

    def count_parses(self) -> list[int]:
        """Make frontmatter's TOML parser record the length of each text it is given."""
        seen: list[int] = []
        me = threading.get_ident()

        def loads(text):
            if threading.get_ident() == me:  # other threads' parses are not this test's
                seen.append(len(text))
            return tomllib.loads(text)

        self.patch(frontmatter, "tomllib",
                   types.SimpleNamespace(loads=loads, TOMLDecodeError=tomllib.TOMLDecodeError))
        return seen

    def test_delimiters_in_string_up_to_the_limit(self) -> None:
        """A multi-line string may hold C{CLOSING_TRIES - 1} C{+++} lines; one more is refused."""
        inside = b"+++\n" * (CLOSING_TRIES - 1)
        data = b'+++\nfrom = """a\n' + inside + b'b"""\n+++\n\nbody\n'
        fields, body = parse(data)
        self.assertEqual(fields["from"], "a\n" + "+++\n" * (CLOSING_TRIES - 1) + "b")
        self.assertEqual(body, b"body\n")
        data = b'+++\nfrom = """a\n' + inside + b'+++\nb"""\n+++\n\nbody\n'
        e = self.assertRaises(ValueError, parse, data)
        self.assertIn(f"first {CLOSING_TRIES} +++ lines", str(e))

    def test_planted_delimiters_linear(self) -> None:
        """A file of 100 000 C{+++} lines costs at most C{CLOSING_TRIES} parses of its prefix."""
        seen = self.count_parses()
        data = b'+++\na = """\n' + b"+++\n" * 100_000
        for f in (parse, split, mark_unread):
            del seen[:]
            self.assertRaises(ValueError, f, data)
            self.assertEqual(len(seen), CLOSING_TRIES)
            self.assertLessEqual(sum(seen), CLOSING_TRIES * len(data))
        self.assertRaises(ValueError, mark_read, data, RECEIVED)

    def test_first_closing_line_one_parse(self) -> None:
        """Frontmatter as aimx writes it is parsed once, whatever follows in the body."""
        seen = self.count_parses()
        data = render({"id": "x", "read": False}, "+++\n" * 1000)
        self.assertEqual(parse(data)[0], {"id": "x", "read": False})
        self.assertEqual(len(seen), 1)

    def test_sent_defaults(self) -> None:
        """A sent copy without outbound_format reads as C{text} (case 15)."""
        fields = with_defaults(parse(b"+++\noutbound = true\n+++\n\n")[0])
        self.assertEqual(fields["outbound_format"], "text")

    def test_read_defaults(self) -> None:
        """Missing keys of older files get the §2.2 defaults; others are kept."""
        fields = with_defaults({"id": "x", "dkim": "pass"})
        self.assertEqual(
            fields,
            {"id": "x", "thread_id": "", "delivered_to": "", "received_at": "",
             "size_bytes": 0, "dkim": "pass", "spf": "none", "dmarc": "none", "trusted": "none"},
        )  # fmt: skip


class MarkReadTests(SynchronousTestCase):
    """Mark-read and mark-unread rewrites."""

    BODY = b"\nBody with\r\nCRLF and a\n+++\nline, kept exactly.\n\n"

    def stored(self) -> bytes:
        """A stored file whose body has CRLF and a C{+++} line."""
        fields = {
            "id": "x",
            "from": "a +++ b",
            "mailbox": "m",
            "read": False,
            "attachments": [{"filename": "f", "content_type": "t", "size": 1, "path": "f"}],
        }
        text = split(render(fields, ""))[0]
        return b"+++\n" + text.encode() + b"+++\n" + self.BODY

    def test_mark_read(self) -> None:
        """read becomes true, read_at follows it, the body is byte-identical."""
        now = datetime(2025, 4, 15, 13, 0, 0, 123456, tzinfo=timezone.utc)
        data = mark_read(self.stored(), now)
        text, rest = split(data)
        self.assertEqual(rest, self.BODY)
        self.assertIn('read = true\nread_at = "2025-04-15T13:00:00.123456Z"\n', text)
        fields = parse(data)[0]
        self.assertEqual(list(fields), ["id", "from", "mailbox", "read", "read_at", "attachments"])
        self.assertEqual(parse_rfc3339(fields["read_at"]), now)

    def test_mark_read_again(self) -> None:
        """Marking read again replaces read_at with the newer time."""
        first = mark_read(self.stored(), RECEIVED)
        second = mark_read(first, RECEIVED + timedelta(minutes=5))
        self.assertGreater(
            parse_rfc3339(parse(second)[0]["read_at"]), parse_rfc3339(parse(first)[0]["read_at"])
        )
        self.assertEqual(split(second)[1], self.BODY)

    def test_mark_unread(self) -> None:
        """Unread sets read false and removes read_at entirely."""
        data = mark_unread(mark_read(self.stored(), RECEIVED))
        self.assertEqual(data, self.stored())
        self.assertNotIn(b"read_at", data)
        self.assertIs(parse(data)[0]["read"], False)

    def test_unknown_keys_preserved(self) -> None:
        """Unknown keys, tables and TOML datetimes survive a rewrite."""
        data = (
            b"+++\nread = false\nid = \"x\"\nx_custom = 1979-05-27T07:32:00Z\n"
            b"labels = [\"a\"]\n[extra]\nk = \"v\"\n+++\n\nbody"
        )
        fields = parse(mark_read(data, RECEIVED))[0]
        self.assertEqual(
            list(fields), ["id", "read", "read_at", "labels", "x_custom", "extra"]
        )
        self.assertEqual(fields["extra"], {"k": "v"})
        self.assertEqual(fields["x_custom"], datetime(1979, 5, 27, 7, 32, tzinfo=timezone.utc))
        self.assertTrue(mark_read(data, RECEIVED).endswith(b"+++\n\nbody"))

    def test_malformed(self) -> None:
        """A file without frontmatter cannot be marked."""
        self.assertRaises(ValueError, mark_read, b"just text", RECEIVED)
        self.assertRaises(ValueError, mark_unread, b"+++\nread = \n+++\n")


class AttachmentDirTests(SynchronousTestCase):
    """Attachment paths made absolute for readers (with_attachment_dir)."""

    def test_absolute(self) -> None:
        """Plain names gain the bundle directory; the body and the other keys stay."""
        data = MarkReadTests().stored()
        out = frontmatter.with_attachment_dir(data, "/data/inbox/m/x")
        self.assertEqual(split(out)[1], MarkReadTests.BODY)
        fields = parse(out)[0]
        self.assertEqual(fields["attachments"][0]["path"], "/data/inbox/m/x/f")
        self.assertEqual(fields["from"], "a +++ b")
        # Absolute paths are not plain names: a second pass changes nothing.
        self.assertIs(frontmatter.with_attachment_dir(out, "/data/inbox/m/x"), out)

    def test_unchanged(self) -> None:
        """No attachments, no frontmatter, or paths that are not plain names: the bytes as given."""
        plain = render({"id": "x", "read": False}, "body")
        self.assertIs(frontmatter.with_attachment_dir(plain, "/d"), plain)
        for text in (b"just text", b"+++\nread = \n+++\n", b"+++\n\xff = 1\n+++\n"):
            self.assertIs(frontmatter.with_attachment_dir(text, "/d"), text)
        for name in ("../../etc/passwd", "a/b", "..", ".", "", "/etc/passwd"):
            data = render({"id": "x", "attachments": [
                {"filename": "f", "content_type": "t", "size": 1, "path": name}]}, "body")
            self.assertIs(frontmatter.with_attachment_dir(data, "/d"), data, name)


class TimestampTests(SynchronousTestCase):
    """Timestamp formats."""

    def test_rfc3339_utc(self) -> None:
        """UTC with C{+00:00}, microseconds only when non-zero."""
        self.assertEqual(rfc3339_utc(RECEIVED), "2025-04-15T12:30:23.512345+00:00")
        self.assertEqual(
            rfc3339_utc(RECEIVED.replace(microsecond=0)), "2025-04-15T12:30:23+00:00"
        )

    def test_rfc3339_utc_converts(self) -> None:
        """Other zones are converted; naive times are taken as UTC."""
        local = RECEIVED.astimezone(timezone(timedelta(hours=-7)))
        self.assertEqual(rfc3339_utc(local), rfc3339_utc(RECEIVED))
        self.assertEqual(rfc3339_utc(RECEIVED.replace(tzinfo=None)), rfc3339_utc(RECEIVED))

    def test_read_at(self) -> None:
        """read_at uses C{Z}."""
        self.assertEqual(rfc3339_utc_z(RECEIVED), "2025-04-15T12:30:23.512345Z")
        self.assertEqual(
            rfc3339_utc_z(datetime(2025, 4, 15, 13, tzinfo=timezone.utc)), "2025-04-15T13:00:00Z"
        )
