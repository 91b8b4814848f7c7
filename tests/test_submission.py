"""The checks of a SEND submission (docs/security.md, "Sending identity")."""

from twisted.trial.unittest import TestCase

from aimx.core.config import Config, MailboxConfig
from aimx.core.submission import (
    NO_SEPARATOR,
    check_header_block,
    check_recipients,
    check_sender,
    scan_headers,
)
from aimx.errors import DomainError, MailboxError, MalformedError

DOMAIN = "agent.example.com"
CONFIG = Config(
    domain=DOMAIN,
    mailboxes=[
        MailboxConfig(name="alice", address=f"alice@{DOMAIN}", owner="alice"),
        MailboxConfig(name="support", address=f"help@{DOMAIN}", owner="bob"),
        MailboxConfig(name="catchall", address=f"*@{DOMAIN}", owner="aimx-catchall"),
    ],
)


def sender(from_: str):
    return check_sender(CONFIG, scan_headers(f"From: {from_}\r\nTo: r@example.com\r\n\r\nx".encode()))


class ScanTests(TestCase):
    def test_first_occurrence_and_folding(self):
        headers = scan_headers(
            b"Subject: one\r\n two\r\nsubject: later\r\nTO:  a@x  \r\n\r\nBody: no\r\n"
        )
        self.assertEqual(headers, {"subject": "one two", "to": "a@x"})

    def test_lf_only_and_no_blank_line(self):
        self.assertEqual(scan_headers(b"From: a@b\nTo: c@d\n\nx")["to"], "c@d")
        self.assertEqual(scan_headers(b"From: a@b\r\nTo: c@d")["to"], "c@d")

    def test_non_utf8_headers_find_nothing(self):
        self.assertEqual(scan_headers(b"From: \xff@b\r\n\r\nx"), {})


class SenderTests(TestCase):
    def test_missing_from(self):
        e = self.assertRaises(MalformedError, check_sender, CONFIG, {"to": "x@y"})
        self.assertEqual(str(e), "missing required header: From")

    def test_no_address(self):
        e = self.assertRaises(MalformedError, sender, "no-at-sign")
        self.assertEqual(str(e), "could not extract sender address from From: no-at-sign")

    def test_other_domain(self):
        e = self.assertRaises(DomainError, sender, "alice@other.org")
        self.assertEqual(
            str(e), f"sender domain 'other.org' does not match aimx domain '{DOMAIN}'"
        )

    def test_domain_and_local_part_case_insensitive(self):
        self.assertEqual(sender("ALICE@AGENT.EXAMPLE.COM").mailbox.name, "alice")
        self.assertEqual(sender("Alice <alice@agent.example.com>").mailbox.name, "alice")

    def test_resolves_by_address_not_name(self):
        self.assertEqual(sender(f"help@{DOMAIN}").mailbox.name, "support")
        self.assertRaises(MailboxError, sender, f"support@{DOMAIN}")

    def test_one_plain_mailbox_only(self):
        """Comments, groups, several mailboxes, odd forms and Sender are refused, each
        with its reason; the scan-for-'<' forgeries of the issue never authorise."""
        cases = [
            ("ceo@agent.example.com (<alice@agent.example.com>)", "may not contain a comment"),
            ("alice@agent.example.com (me)", "may not contain a comment"),
            ("Team: alice@agent.example.com;", "not a group"),
            ("alice@agent.example.com, ceo@agent.example.com", "exactly one mailbox, not 2"),
            ('"alice"@agent.example.com', "plain address"),
            ("<@relay.example:alice@agent.example.com>", "plain address"),
            ('"<alice@agent.example.com>"@evil.example', "plain address"),
            ("alice@agent.example.com>", "could not extract sender address"),
        ]
        for from_, reason in cases:
            e = self.assertRaises(MalformedError, sender, from_)
            self.assertIn(reason, str(e), from_)
        e = self.assertRaises(MalformedError, check_sender, CONFIG, scan_headers(
            b"From: alice@agent.example.com\r\nSender: ceo@agent.example.com\r\n\r\nx"))
        self.assertIn("Sender header is not allowed", str(e))

    def test_parsed_author_kept(self):
        """The parsed display name and address travel with the submission."""
        sub = sender('"Alice, A." <Alice@Agent.Example.com>')
        self.assertEqual((sub.author.display_name, sub.sender), ("Alice, A.", "Alice@Agent.Example.com"))
        self.assertEqual(sub.author.wire(), '"Alice, A." <Alice@Agent.Example.com>')

    def test_unknown_catchall_tag_wildcard_refused(self):
        for addr in ("bogus", "catchall", "alice+tag", "*"):
            e = self.assertRaises(MailboxError, sender, f"{addr}@{DOMAIN}")
            self.assertIn(f"{addr}@{DOMAIN}", str(e))
            self.assertIn("aimx mailboxes create", str(e))


class RecipientTests(TestCase):
    def check(self, headers: bytes):
        sub = check_sender(CONFIG, scan_headers(b"From: alice@agent.example.com\r\n" + headers))
        return check_recipients(sub)

    def test_missing_to(self):
        e = self.assertRaises(MalformedError, self.check, b"Subject: x\r\n\r\n")
        self.assertEqual(str(e), "missing required header: To")

    def test_every_list_is_delivered_once(self):
        sub = self.check(
            b"To: Bob <bob@gmail.com>, a@x.com\r\nCc: c@y.com, A@X.COM\r\nBcc: d@z.com\r\n\r\n"
        )
        self.assertEqual(sub.to, ("bob@gmail.com", "a@x.com"))
        self.assertEqual(sub.bcc, ("d@z.com",))
        self.assertEqual(sub.recipients, ("bob@gmail.com", "a@x.com", "c@y.com", "d@z.com"))

    def test_bad_entry_names_the_header(self):
        e = self.assertRaises(MalformedError, self.check, b"To: a@x\r\nCc: a@x, nobody\r\n\r\n")
        self.assertEqual(str(e), "could not extract recipient address from Cc: a@x, nobody")
        e = self.assertRaises(MalformedError, self.check, b"To: ,\r\n\r\n")
        self.assertIn("from To", str(e))

    def test_quoted_commas_and_groups(self):
        """A quoted comma does not split; group members are recipients."""
        sub = self.check(b'To: "Doe, J" <j@x.com>, Team: a@y.com, b@y.com;\r\n\r\n')
        self.assertEqual(sub.to, ("j@x.com", "a@y.com", "b@y.com"))


class HeaderBlockTests(TestCase):
    def test_no_separator(self):
        e = self.assertRaises(MalformedError, check_header_block, b"From: a@b\r\nTo: c@d\r\n")
        self.assertEqual(str(e), NO_SEPARATOR)

    def test_too_large(self):
        message = b"X-Big: " + b"a" * 65_536 + b"\r\n\r\nbody"
        e = self.assertRaises(MalformedError, check_header_block, message)
        self.assertEqual(str(e), "outbound request header block is too large")

    def test_first_empty_line_ends_the_block(self):
        """An LF LF before a CRLF CRLF ends the header block: nothing after it is a header
        (review: a From placed after it would be authorised but never signed)."""
        message = (b"To: victim@example.com\n\nFrom: Alice <alice@agent.example.com>\r\n"
                   b"Subject: hi\r\n\r\nbody")
        lines, body = check_header_block(message)
        self.assertEqual(lines, ["To: victim@example.com"])
        e = self.assertRaises(MalformedError, check_sender, CONFIG, scan_headers(message))
        self.assertEqual(str(e), "missing required header: From")

    def test_lines_and_body(self):
        lines, body = check_header_block(b"A: 1\r\n b\r\nC: 2\r\n\r\nbody\r\n")
        self.assertEqual((lines, body), (["A: 1", " b", "C: 2"], b"body\r\n"))


class HostileTests(TestCase):
    def test_folded_header_flood_refused_at_once(self):
        """A 25 MiB header block of folds is refused by size, before any scanning."""
        message = b"From: alice@agent.example.com\nX: y\n" + b" a\n" * (8 * 1024 * 1024)
        e = self.assertRaises(MalformedError, scan_headers, message)
        self.assertEqual(str(e), "outbound request header block is too large")

    def test_many_folds_within_cap(self):
        headers = scan_headers(b"X: a\n" + b" b\n" * 20_000 + b"\nbody")
        self.assertEqual(headers["x"], "a" + " b" * 20_000)

    def test_duplicate_from_refused(self):
        """Two From lines: the signature would bind the one nobody authorised."""
        e = self.assertRaises(MalformedError, check_header_block,
                              b"From: alice@d\r\nFrom: ceo@d\r\nTo: a@b\r\n\r\nx")
        self.assertEqual(str(e), "more than one From header")

    def test_bare_cr_refused(self):
        e = self.assertRaises(MalformedError, check_header_block,
                              b"From: a@d\r\nX: a\rFrom: cfo@d\r\n\r\nx")
        self.assertEqual(str(e), "header lines may not contain a bare CR or NUL")

    def test_recipient_cap(self):
        to = ", ".join(f"r{i}@example.com" for i in range(101)).encode()
        sub = check_sender(CONFIG, scan_headers(b"From: alice@agent.example.com\r\nTo: " + to
                                               + b"\r\n\r\n"))
        e = self.assertRaises(MalformedError, check_recipients, sub)
        self.assertEqual(str(e), "101 recipients; at most 100 per message")
