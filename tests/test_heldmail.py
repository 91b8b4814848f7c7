"""A held message's files (L{aimx.core.heldmail}) and their store (L{aimx.store.held})."""

import os
import stat
from datetime import datetime, timedelta, timezone

from twisted.trial.unittest import SynchronousTestCase

from aimx.core import frontmatter, heldmail
from aimx.core.assemble import Draft
from aimx.core.authz import ACCEPT, REJECT, ROOT_BYPASS, may_decide
from aimx.core.message import Attachment
from aimx.core.submission import check_recipients, check_sender, scan_headers
from aimx.store import held
from aimx.testing import fakes

NOW = datetime(2026, 3, 1, 12, 0, 5, tzinfo=timezone.utc)
HOLD = "20260301-120005-0a1b2c3d"


def submission(headers=("Cc: c@x.example", "Bcc: d@x.example")):
    raw = fakes.message(sender="Alice <alice@test.local>", to="b@x.example", subject="Hi",
                        message_id="m1@test.local", headers=headers)
    return check_recipients(check_sender(fakes.config(), scan_headers(raw)))


DRAFT = Draft(("From: Alice <alice@test.local>", "To: b@x.example", "Subject: Hi"),
              "**Hello**\n", (Attachment("a.txt", "text/plain", b"one"),
                              Attachment("b.bin", "application/octet-stream", b"\0two")),
              False, b"<p>Hello</p>")


def render(draft=DRAFT):
    return heldmail.render(draft, submission(), hold_id=HOLD, reason="new recipients: b",
                           now=NOW, expire_days=7, caller_uid=2001)


class HeldMailTests(SynchronousTestCase):
    def test_ids(self):
        """A hold id is the UTC second and 8 hex digits; nothing else names a hold."""
        later = NOW.astimezone(timezone(timedelta(hours=2)))
        self.assertEqual(heldmail.new_hold_id(later, "0a1b2c3d"), HOLD)
        for bad in ("../x", "20260301-120005-0A1B2C3D", "20260301-120005", HOLD + ".md"):
            self.assertFalse(heldmail.is_hold_id(bad))
        self.assertTrue(heldmail.is_hold_id(HOLD))

    def test_round_trip(self):
        """The files keep what assembling needs: the same draft comes back."""
        md, parts = render()
        self.assertEqual(parts, b"<p>Hello</p>one\0two")
        fields, body = frontmatter.parse(md)
        self.assertEqual(
            {k: fields[k] for k in ("hold_id", "mailbox", "state", "held_reason", "held_at",
                                    "expires_at", "from", "to", "cc", "bcc", "subject")},
            {"hold_id": HOLD, "mailbox": "alice", "state": "pending",
             "held_reason": "new recipients: b", "held_at": "2026-03-01T12:00:05+00:00",
             "expires_at": "2026-03-08T12:00:05+00:00", "from": "Alice <alice@test.local>",
             "to": "b@x.example", "cc": "c@x.example", "bcc": ["d@x.example"],
             "subject": "Hi"})
        self.assertEqual(body, b"**Hello**\n")
        self.assertEqual(heldmail.draft(fields, body, parts),
                         Draft(DRAFT.header_lines, DRAFT.text, DRAFT.attachments, False,
                               DRAFT.html_body))

    def test_damaged(self):
        """A part cut, changed or added is refused."""
        md, parts = render()
        fields, body = frontmatter.parse(md)
        for bad in (parts[:-1], parts[:-1] + b"X", parts + b"!"):
            self.assertRaises(heldmail.Damaged, heldmail.draft, fields, body, bad)

    def test_decided_and_expiry(self):
        """A decision adds state, who, when and why; expiry compares expires_at."""
        md, _ = render()
        fields, body = frontmatter.parse(heldmail.decided(
            md, heldmail.REJECTED, by="ops", at=NOW, reason="not to them"))
        self.assertEqual((fields["state"], fields["decided_by"], fields["decided_at"],
                          fields["decision_reason"], body),
                         ("rejected", "ops", "2026-03-01T12:00:05+00:00", "not to them",
                          b"**Hello**\n"))
        self.assertFalse(heldmail.expired(fields, NOW + timedelta(days=7, seconds=-1)))
        self.assertTrue(heldmail.expired(fields, NOW + timedelta(days=7)))
        self.assertTrue(heldmail.expired({}, NOW))


class MayDecideTests(SynchronousTestCase):
    def test_rule(self):
        """Root or an approver, never the owner (root included); nobody else."""
        self.assertEqual(may_decide(0, 2001, False).decision, ROOT_BYPASS)
        self.assertEqual(may_decide(3000, 2001, True).decision, ACCEPT)
        self.assertEqual(may_decide(2001, 2001, True).decision, REJECT)
        self.assertEqual(may_decide(0, 0, True).decision, REJECT)
        self.assertEqual(may_decide(3000, 2001, False).decision, REJECT)
        self.assertEqual(may_decide(0, None, False).decision, ROOT_BYPASS)


class StoreTests(SynchronousTestCase):
    def setUp(self):
        self.data = os.path.abspath(self.mktemp())
        os.makedirs(self.data)
        self.md, self.parts = render()

    def test_hold_and_read(self):
        """A hold is two 0600 files in a 0700 directory; found, listed and read back."""
        path = held.hold(self.data, "alice", HOLD, self.md, self.parts)
        self.assertEqual(path, os.path.join(self.data, "held", "alice", HOLD + ".md"))
        for name in (HOLD + ".md", HOLD + ".parts"):
            mode = os.stat(os.path.join(self.data, "held", "alice", name)).st_mode
            self.assertEqual(stat.S_IMODE(mode), 0o600)
        for directory in ("held", "held/alice"):
            mode = os.stat(os.path.join(self.data, directory)).st_mode
            self.assertEqual(stat.S_IMODE(mode), 0o700)
        self.assertEqual(held.find(self.data, HOLD), "alice")
        self.assertIsNone(held.find(self.data, "20260301-120005-ffffffff"))
        self.assertEqual(held.count(self.data, "alice"), 1)
        [(hold_id, fields)] = held.pending(self.data, "alice")
        self.assertEqual((hold_id, fields["held_reason"]), (HOLD, "new recipients: b"))
        self.assertEqual(held.read(self.data, "alice", HOLD), (self.md, self.parts))
        self.assertEqual(held.mailboxes(self.data), ["alice"])

    def test_settle_approved(self):
        """Approved: both files go."""
        held.hold(self.data, "alice", HOLD, self.md, self.parts)
        held.settle(self.data, "alice", HOLD, None)
        self.assertEqual(os.listdir(os.path.join(self.data, "held", "alice")), [])
        self.assertIsNone(held.read(self.data, "alice", HOLD))

    def test_settle_rejected(self):
        """Rejected or expired: both move to rejected/, the .md as decided."""
        held.hold(self.data, "alice", HOLD, self.md, self.parts)
        decided = heldmail.decided(self.md, heldmail.EXPIRED, by="aimx", at=NOW, reason=None)
        held.settle(self.data, "alice", HOLD, decided)
        directory = os.path.join(self.data, "held", "alice")
        self.assertEqual(os.listdir(directory), ["rejected"])
        self.assertEqual(sorted(os.listdir(os.path.join(directory, "rejected"))),
                         [HOLD + ".md", HOLD + ".parts"])
        with open(os.path.join(directory, "rejected", HOLD + ".md"), "rb") as f:
            self.assertEqual(f.read(), decided)
        self.assertEqual(held.pending(self.data, "alice"), [])

    def test_missing_parts(self):
        """A .md without its parts is damaged, not half-read."""
        held.hold(self.data, "alice", HOLD, self.md, self.parts)
        os.unlink(os.path.join(self.data, "held", "alice", HOLD + ".parts"))
        self.assertRaises(heldmail.Damaged, held.read, self.data, "alice", HOLD)

    def test_links_not_followed(self):
        """A symlink planted as a hold file is not read."""
        held.hold(self.data, "alice", HOLD, self.md, self.parts)
        target = os.path.join(self.data, "held", "alice", HOLD + ".md")
        os.unlink(target)
        os.symlink("/etc/passwd", target)
        self.assertIsNone(held.read(self.data, "alice", HOLD))

    def test_bad_names(self):
        """No mailbox name leaves held/."""
        self.assertRaises(ValueError, held.hold, self.data, "../x", HOLD, b"", b"")
        self.assertEqual(held.pending(self.data, "nobody"), [])
