"""SEND's outbound policy in the daemon (L{aimx.control.ops.Control.send} with
L{aimx.control.sendguard.SendGuard}): the rolling windows on an injected clock, the
window started from the audit log, known recipients from it, the attachment
roots' default; with a recording outbox, a real audit log and fake passwd entries."""

import datetime
import os

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from aimx.auditlog import AuditLog
from aimx.control.ops import Caller, Control
from aimx.core import audit
from aimx.errors import BodyTooLarge, PolicyError, TempError
from aimx.service import LiveConfig
from aimx.store import audit as files
from aimx.testing import fakes
from aimx.testing.fakes import FakeOutbox, FakePasswd

ALICE = 2001
START = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.timezone.utc)


class SendPolicyTests(TestCase):
    def setUp(self):
        self.home = os.path.realpath(self.mktemp())
        os.makedirs(self.home)
        self.clock = fakes.clock_at(START)
        self.outbox = FakeOutbox()
        self.history = []
        self.configure({"max_per_hour": 2})

    def now(self):
        return datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.timezone.utc)

    def configure(self, outbound, homes=None, audit_log=None):
        """A daemon's Control (and audit log, started from C{self.history})."""
        config = fakes.config(data_dir=self.home, mailboxes={
            "alice": {"owner": "alice", "outbound": outbound}})
        live = LiveConfig(config)
        self.audit = audit_log or fakes.audit_log(self, live, self.clock, self.history)
        self.control = Control(
            live=live, config_dir=self.home, data_dir=self.home,
            mailbox_lock=lambda name: defer.DeferredLock(),
            run_in_thread=lambda f, *a: defer.maybeDeferred(f, *a),
            passwd=FakePasswd({"alice": ALICE}, homes={"alice": self.home} if homes is None
                              else homes),
            now=self.now, outbox=self.outbox, audit=self.audit)

    def send(self, attachments=(), to="x@example.com"):
        message = fakes.message(sender="alice@test.local", to=to, message_id=None)
        return defer.Deferred.fromCoroutine(
            self.control.send(Caller(uid=ALICE), message, False, None, list(attachments)))

    def refused(self, **kw):
        return self.failureResultOf(self.send(**kw), PolicyError).getErrorMessage()

    def test_rolling_hour(self):
        """Two an hour: the third is refused until the first is an hour old."""
        self.successResultOf(self.send())
        self.clock.advance(600)
        self.successResultOf(self.send())
        self.assertIn("the next may go at 2026-03-01T13:00:00Z", self.refused())
        self.clock.advance(2999)
        self.assertIn("(outbound.max_per_hour)", self.refused())
        self.clock.advance(1)
        self.successResultOf(self.send())
        self.assertEqual(len(self.outbox.drafts), 3)

    def sent(self, at, mailbox="alice", **kw):
        """A SEND record of C{mailbox} at C{at} in the audit log before the start."""
        self.history.append((at, audit.send(
            mailbox=mailbox, caller_uid=ALICE, author=f"{mailbox}@test.local",
            recipients=["x@example.com"], sha256="0" * 64, decision=audit.SENT, **kw)))

    def test_window_starts_from_the_audit_log(self):
        """The sends the audit log recorded in the day before the start count (a restart
        resets nothing): not older ones, other mailboxes', or those that never left."""
        hour = datetime.timedelta(hours=1)
        self.sent(START - hour / 6)
        self.sent(START - hour * 5 / 6)
        self.sent(START - 25 * hour)
        self.sent(START - hour / 3, mailbox="bob")
        self.sent(START - hour / 4, counted=False)
        self.configure({"max_per_hour": 2})
        self.assertIn("has sent 2 messages in the last hour", self.refused())
        self.assertEqual(self.outbox.drafts, [])
        self.clock.advance(600)
        self.successResultOf(self.send())
        self.assertIn("has sent 2 messages in the last hour", self.refused())

    def test_send_waits_for_the_audit_log(self):
        """A SEND under a rate waits while the audit log is read, then counts what it read."""
        self.sent(START - datetime.timedelta(minutes=10))
        self.sent(START - datetime.timedelta(minutes=5))
        lines = [(audit.day(at), audit.line(audit.stamped(r, at))) for at, r in self.history]
        config = fakes.config(data_dir=self.home)
        files.append(config.effective_audit_dir, lines)
        reading = defer.Deferred()
        slow = AuditLog(config=lambda: config, clock=self.clock,
                        run_in_thread=lambda f, *a: reading.addCallback(lambda _: f(*a)))
        slow.startService()
        self.addCleanup(slow.stopService)
        self.configure({"max_per_hour": 2}, audit_log=slow)
        pending = self.send()
        self.assertNoResult(pending)
        reading.callback(None)
        self.failureResultOf(pending, PolicyError)
        self.assertEqual(self.outbox.drafts, [])

    def test_unread_audit_log_refuses(self):
        """A window that cannot be started refuses (TEMP) rather than letting a limit lapse."""
        with open(fakes.config(data_dir=self.home).effective_audit_dir, "w") as f:
            f.write("not a directory")
        self.configure({"max_per_hour": 2})
        self.failureResultOf(self.send(), TempError)
        self.assertEqual(self.outbox.drafts, [])
        self.flushLoggedErrors(NotADirectoryError)

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
