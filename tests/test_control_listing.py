"""The MAILBOX-LIST and MAILBOX-SHOW rows, over a real data directory."""

import os

from twisted.trial.unittest import SynchronousTestCase

from aimx.control import listing
from aimx.core import frontmatter
from aimx.core.config import load_text
from aimx.store.passwd import Owner

CONFIG = (
    'domain = "d"\n[mailboxes.mine]\naddress = "mine@d"\nowner = "me"\n'
    '[mailboxes.theirs]\naddress = "theirs@d"\nowner = "other"\n'
)


def write(path: str, read: bool) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(frontmatter.render({"id": "x", "read": read}, "Hello\n"))


class RowsTests(SynchronousTestCase):
    def setUp(self):
        self.data = os.path.abspath(self.mktemp())
        self.me = os.geteuid() or 5000  # as root, act as an unprivileged uid
        self.config = load_text(CONFIG, "c")[0]
        me = self.me

        class Passwd:
            def owner(self, name):
                return Owner(name, {"me": me, "other": me + 1}.get(name), 0)

        self.passwd = Passwd()

    def test_rows(self):
        """Listing rows: configured and stray dirs, visibility by uid, the spec's keys."""
        stray = os.path.join(self.data, "inbox", "stray")
        os.makedirs(stray)
        os.chown(stray, self.me, -1)
        rows = listing.mailbox_rows(self.config, self.data, self.me, self.passwd)
        self.assertEqual([r["name"] for r in rows], ["mine", "stray"])
        self.assertEqual(list(rows[0]), ["name", "address", "inbox_path", "sent_path", "total",
                                         "unread", "sent_count", "registered"])
        self.assertEqual((rows[1]["address"], rows[1]["registered"]), (None, False))
        self.assertEqual(len(listing.mailbox_rows(self.config, self.data, 0, self.passwd)), 3)

    def test_counts(self):
        """A row counts inbox messages (and unread ones) and sent copies."""
        write(os.path.join(self.data, "inbox", "mine", "a.md"), read=True)
        write(os.path.join(self.data, "inbox", "mine", "b", "b.md"), read=False)
        write(os.path.join(self.data, "sent", "mine", "c.md"), read=False)
        [row] = listing.mailbox_rows(self.config, self.data, self.me, self.passwd)
        self.assertEqual((row["total"], row["unread"], row["sent_count"]), (2, 1, 1))

    def test_details(self):
        """MAILBOX-SHOW: effective settings, hooks and the counts, in the spec's keys."""
        write(os.path.join(self.data, "inbox", "mine", "a.md"), read=False)
        details = listing.mailbox_details(self.config, self.config.mailbox("mine"), self.data)
        self.assertEqual(details, {
            "name": "mine", "address": "mine@d", "owner": "me", "trust": "none",
            "trusted_senders": [], "hooks": [], "inbox_total": 1, "inbox_unread": 1,
            "sent_total": 0,
        })
