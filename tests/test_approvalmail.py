"""Tests for aimx.core.approvalmail: the notification, the token, and reading a reply."""

import datetime

from twisted.trial.unittest import SynchronousTestCase

from aimx.core import approvalmail
from aimx.core.assemble import assemble_draft
from aimx.core.authresults import FAIL, PASS, AuthResults, DkimResult
from aimx.core.message import parse_message
from aimx.testing import fakes

NOTIFY = "ops@owner.example"
HOLD = "20260301-120000-00000001"
SECRET = "0123456789abcdef0123456789abcdef"
TOKEN = f"[aimx hold {HOLD} {SECRET}]"
NOW = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.timezone.utc)
SIGNED = frozenset({"from", "to", "subject", "date", "message-id", "in-reply-to",
                    "references", "content-type"})
FIELDS = {"mailbox": "support", "held_reason": "new recipients: new@customer.example",
          "from": "support@test.local", "to": "new@customer.example", "bcc": ["b@x.example"],
          "subject": "Offer", "expires_at": "2026-03-08T12:00:00Z", "html_size": 120,
          "attachments": [{"filename": "q1.txt", "size": 17, "content_type": "text/plain"}]}


def signed(domain="owner.example", result=PASS, aligned=True, headers=SIGNED) -> AuthResults:
    """What verification found: one signature of C{domain}."""
    return AuthResults(dkim="pass" if result == PASS else "fail", spf="none", dmarc="none",
                       signatures=(DkimResult(domain, "sel", "rsa-sha256", result, aligned,
                                              signed_headers=headers),))


def reply(body="approve\r\n", *, sender=NOTIFY, subject=f"Re: {TOKEN} Offer",
          headers=("In-Reply-To: <n1@test.local>",), **kw):
    return parse_message(fakes.message(body, sender=sender, to="postmaster@test.local",
                                       subject=subject, headers=headers, **kw))


class NotificationTests(SynchronousTestCase):
    def draft(self, fields=FIELDS, text="Hello **there**\nsecond line", **kw):
        return approvalmail.notification(
            fields, text, hold_id=HOLD, secret=SECRET, notify=NOTIFY, domain="test.local",
            now=NOW, message_id="<n1@test.local>", **kw)

    def test_headers(self):
        """From postmaster, to notify, the token first in the subject, plain text, and
        marked as an automatic message."""
        draft = self.draft()
        self.assertEqual(draft.header_lines, (
            "From: aimx <postmaster@test.local>", f"To: {NOTIFY}",
            f"Subject: {TOKEN}", " Offer", "Date: Sun, 01 Mar 2026 12:00:00 +0000",
            "Message-ID: <n1@test.local>", "Auto-Submitted: auto-generated"))
        self.assertTrue(draft.text_only)
        parsed = parse_message(assemble_draft(draft, signature="").wire)
        self.assertEqual(parsed.identity.subject, f"{TOKEN} Offer")
        self.assertTrue(approvalmail.carries_token(parsed))

    def test_body(self):
        """The body: the instructions, the token, the draft's fields, attachments by
        name and size, the HTML's size, and the text, each line marked."""
        body = self.draft().text
        for line in ('Reply with "approve" or "reject" as the first line of your reply; after',
                     f"The reply carries this token (in its subject, or quoted): {TOKEN}",
                     f"Hold:    {HOLD}", "Mailbox: support",
                     "Why:     new recipients: new@customer.example",
                     "To:      new@customer.example", "Bcc:     b@x.example",
                     "Expires: 2026-03-08T12:00:00Z", "  - q1.txt (17 bytes, text/plain)",
                     "It also has an HTML version of 120 bytes, not shown.",
                     "| Hello **there**", "| second line"):
            self.assertIn(line + "\n", body)
        self.assertNotIn("Cc:", body)

    def test_non_ascii_subject(self):
        """A non-ASCII subject is encoded after the token and reads back whole; folds and
        runs of spaces in it become single spaces."""
        draft = self.draft({**FIELDS, "subject": "Ünïcode\r\n  offer"})
        self.assertTrue(all(line.isascii() for line in draft.header_lines))
        parsed = parse_message(assemble_draft(draft, signature="").wire)
        self.assertEqual(parsed.identity.subject, f"{TOKEN} Ünïcode offer")

    def test_text_cut(self):
        """Past TEXT_CAP characters the text is cut, saying how much and where to look."""
        body = self.draft(text="a" * (approvalmail.TEXT_CAP + 5)).text
        self.assertIn(f"[... 5 more characters: aimx held show {HOLD}]", body)

    def test_note(self):
        """A note comes first."""
        self.assertTrue(self.draft(note="Approved, but not sent: later").text.startswith(
            "Approved, but not sent: later\n\nA message is held"))


class TokenTests(SynchronousTestCase):
    def test_digest(self):
        """The hold keeps the secret's SHA-256; only that secret matches it."""
        kept = approvalmail.digest(SECRET)
        self.assertEqual(len(kept), 64)
        self.assertTrue(approvalmail.matches(kept, SECRET))
        self.assertFalse(approvalmail.matches(kept, SECRET[::-1]))
        self.assertFalse(approvalmail.matches(None, SECRET))
        self.assertFalse(approvalmail.matches(SECRET, SECRET))

    def test_claims(self):
        """With notify set, postmaster's copy is a reply when no mailbox routes it, or when
        it carries a token (a postmaster mailbox or the catchall keeps the rest)."""
        bare = fakes.config(approval={"notify": NOTIFY})
        catchall = fakes.config(approval={"notify": NOTIFY},
                                mailboxes={"catchall": {"address": "*@test.local"}})
        plain = reply(subject="Hello")
        for config, rcpt, parsed, expected in (
            (bare, "postmaster@test.local", plain, True),
            (bare, "PostMaster@test.local", reply(), True),
            (catchall, "postmaster@test.local", plain, False),
            (catchall, "postmaster@test.local", reply(), True),
            (catchall, "postmaster@test.local", reply(f"see {TOKEN}\r\n", subject="x"), True),
            (catchall, "ops@test.local", reply(), False),
            (fakes.config(), "postmaster@test.local", reply(), False),
        ):
            self.assertEqual(approvalmail.claims(config, rcpt, parsed), expected, (rcpt,))


class ReadReplyTests(SynchronousTestCase):
    def read(self, parsed, auth=None):
        return approvalmail.read_reply(NOTIFY, parsed, signed() if auth is None else auth)

    def assertIgnored(self, parsed, problem, auth=None):
        got = self.read(parsed, auth)
        self.assertEqual((got.action, got.problem), (None, problem))

    def test_approve(self):
        """A signed reply from notify whose first line is approve (any case, a stop after
        it, quoted history below) approves the token's hold."""
        for body in ("approve\r\n", "  APPROVE.\r\n\r\nOn Sun, Mar 1, 2026 aimx wrote:\r\n"
                     "> A message is held\r\n> approve\r\n", "\r\nApprove!\r\n-- \r\nOps\r\n"):
            got = self.read(reply(body))
            self.assertEqual((got.action, got.hold_id, got.secret, got.author),
                             (approvalmail.APPROVE, HOLD, SECRET, NOTIFY), body)

    def test_reject(self):
        """reject, alone or with a reason after a space, colon or dash."""
        for body, reason in (("Reject\r\n", None), ("reject: not a customer\r\n",
                                                   "not a customer"),
                             ("reject - spam  spam\r\n", "spam spam")):
            got = self.read(reply(body))
            self.assertEqual((got.action, got.reason), (approvalmail.REJECT, reason))

    def test_first_line_decides(self):
        """Anything else first is ignored, even with approve further down."""
        for body in ("Looks fine, approve\r\n", "approved\r\n", "approve it\r\n",
                     "rejected\r\n", "yes\r\napprove\r\n", "\r\n", "> approve\r\n"):
            self.assertIgnored(reply(body), "its first line is neither approve nor reject")

    def test_token_in_body(self):
        """Without a token in the subject, the quoted notification's one will do."""
        got = self.read(reply(f"approve\r\n\r\n> The token: {TOKEN}\r\n", subject="Re: hi"))
        self.assertEqual((got.action, got.hold_id), (approvalmail.APPROVE, HOLD))

    def test_tokens(self):
        """No token, or two different ones, decide nothing."""
        other = f"[aimx hold {HOLD} {'f' * 32}]"
        self.assertIgnored(reply(subject="Re: Offer"), "no token")
        self.assertIgnored(reply(subject=f"{TOKEN} {other}"), "more than one token")
        self.assertIgnored(reply(f"approve\r\n{TOKEN}\r\n{other}\r\n", subject="Re"),
                           "more than one token")
        self.assertIgnored(reply(subject=f"Re: [aimx hold {HOLD} {SECRET[:-1]}]"), "no token")
        late = "x" * approvalmail.BODY_SEARCH_CAP + TOKEN
        self.assertIgnored(reply(f"approve\r\n{late}\r\n", subject="Re"), "no token")
        self.assertFalse(approvalmail.carries_token(reply(late, subject="Re")))

    def test_author(self):
        """Only the notify address itself (case aside), as one plain From mailbox."""
        self.assertEqual(self.read(reply(sender="OPS@Owner.Example")).action,
                         approvalmail.APPROVE)
        self.assertIgnored(reply(sender="eve@owner.example"),
                           f"from eve@owner.example, not {NOTIFY}")
        self.assertIgnored(reply(sender=f"{NOTIFY}, eve@x.example"),
                           f"not authenticated as {NOTIFY}: more than one address in From")
        self.assertIgnored(reply(headers=(f"From: {NOTIFY}",)),
                           f"not authenticated as {NOTIFY}: two From headers")

    def test_dkim_decides(self):
        """An aligned DKIM pass covering the subject is needed: unsigned, failed, another
        domain's or one leaving the subject out is ignored; SPF and DMARC passing via
        SPF are not enough."""
        spf_only = AuthResults(dkim="none", spf="pass", dmarc="pass",
                               from_domain="owner.example")
        for auth, why in (
            (spf_only, "no valid DKIM signature"),
            (signed(result=FAIL), "DKIM signature of owner.example did not verify"),
            (signed("other.example", aligned=False), "no DKIM signature aligned with "
                                                     "owner.example"),
            (signed(headers=SIGNED - {"subject"}), "signature does not cover the Subject "
                                                   "header"),
        ):
            self.assertIgnored(reply(), f"not authenticated as {NOTIFY}: {why}", auth)

    def test_automatic(self):
        """An automatic message (an out-of-office echoing the subject) is ignored."""
        self.assertIgnored(reply(headers=("Auto-Submitted: auto-replied",)),
                           "an automatic message (Auto-Submitted: auto-replied)")
        self.assertEqual(self.read(reply(headers=("Auto-Submitted: no",))).action,
                         approvalmail.APPROVE)
