"""SEND's outbound policy in the daemon (L{aimx.control.ops.Control.send} with
L{aimx.control.sendguard.SendGuard}): the rolling windows on an injected clock, the
window started from the index, the attachment roots' default; with a recording
outbox, a fake index and fake passwd entries."""

import datetime
import os

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from aimx.control.ops import Caller, Control
from aimx.errors import BodyTooLarge, PolicyError, TempError
from aimx.service import LiveConfig
from aimx.testing import fakes
from aimx.testing.fakes import FakeIndex, FakeNow, FakeOutbox, FakePasswd

ALICE = 2001
START = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.timezone.utc)


class SendPolicyTests(TestCase):
    def setUp(self):
        self.home = os.path.realpath(self.mktemp())
        os.makedirs(self.home)
        self.now = FakeNow(START)
        self.outbox = FakeOutbox()
        self.index = FakeIndex()
        self.configure({"max_per_hour": 2})

    def configure(self, outbound, homes=None):
        config = fakes.config(data_dir=self.home, mailboxes={
            "alice": {"owner": "alice", "outbound": outbound}})
        self.control = Control(
            live=LiveConfig(config), config_dir=self.home, data_dir=self.home,
            mailbox_lock=lambda name: defer.DeferredLock(),
            run_in_thread=lambda f, *a: defer.maybeDeferred(f, *a),
            passwd=FakePasswd({"alice": ALICE}, homes={"alice": self.home} if homes is None
                              else homes),
            now=self.now, outbox=self.outbox, index=self.index)

    def send(self, attachments=(), to="x@example.com"):
        message = fakes.message(sender="alice@test.local", to=to, message_id=None)
        return defer.Deferred.fromCoroutine(
            self.control.send(Caller(uid=ALICE), message, False, None, list(attachments)))

    def refused(self, **kw):
        return self.failureResultOf(self.send(**kw), PolicyError).getErrorMessage()

    def test_rolling_hour(self):
        """Two an hour: the third is refused until the first is an hour old."""
        self.successResultOf(self.send())
        self.now.advance(600)
        self.successResultOf(self.send())
        self.assertIn("the next may go at 2026-03-01T13:00:00Z", self.refused())
        self.now.advance(2999)
        self.assertIn("(outbound.max_per_hour)", self.refused())
        self.now.advance(1)
        self.successResultOf(self.send())
        self.assertEqual(len(self.outbox.drafts), 3)

    def test_window_starts_from_the_index(self):
        """The sent copies of the last day count (a restart resets nothing); asked once."""
        self.index.stems = ["2026-03-01-115000-a", "2026-03-01-113000-b",
                            "2026-02-28-115900-old", "notes"]
        self.assertIn("has sent 2 messages in the last hour", self.refused())
        self.assertEqual(self.outbox.drafts, [])
        self.refused()
        self.assertEqual(self.index.asked, ["alice"])

    def test_index_failure_refuses(self):
        """A window that cannot be started refuses (TEMP) rather than letting a limit lapse."""
        self.index.error = OSError("disk gone")
        self.failureResultOf(self.send(), TempError)
        self.assertEqual(self.outbox.drafts, [])

    def test_last_place_taken_at_the_decision(self):
        """With one place left, a second SEND while the first is still delivering is
        refused: the first counted from the moment it was let go."""
        self.configure({"max_per_hour": 1})
        self.outbox.answer = defer.Deferred()
        first = self.send()
        self.assertNoResult(first)
        self.assertIn("(outbound.max_per_hour)", self.refused())
        self.outbox.answer.callback(None)
        self.successResultOf(first)

    def test_what_never_left_does_not_count(self):
        """A send refused after the decision (a body over the cap) leaves its place."""
        self.configure({"max_per_hour": 1})
        self.outbox.answer = BodyTooLarge("too large")
        self.failureResultOf(self.send(), BodyTooLarge)
        self.outbox.answer = None
        self.successResultOf(self.send())

    def test_default_root_is_the_owners_home(self):
        """Without attachment_roots, files come from the owner's home (no dot-paths); an
        owner without a home attaches nothing."""
        inside = os.path.join(self.home, "report.txt")
        with open(inside, "w") as f:
            f.write("numbers")
        outside = os.path.realpath(self.mktemp())
        with open(outside, "w") as f:
            f.write("x")
        fds = [os.open(p, os.O_RDONLY) for p in (inside, outside)]
        for fd in fds:
            self.addCleanup(os.close, fd)
        self.configure({"max_recipients": 5})
        self.successResultOf(self.send([(fds[0], inside)]))
        [draft] = self.outbox.drafts
        self.assertEqual([(a.filename_raw, a.data) for a in draft.attachments],
                         [("report.txt", b"numbers")])
        self.assertIn(f"outside the attachment roots of mailbox alice ({self.home})",
                      self.refused(attachments=[(fds[1], outside)]))
        self.configure({"max_recipients": 5}, homes={})
        self.assertIn("(none)", self.refused(attachments=[(fds[0], inside)]))
