"""Held mail in the daemon (L{aimx.control.approvals} through L{aimx.control.ops.Control}):
holding, who may list, approve and reject, and expiry on the reactor clock; with a
recording outbox, an audit log, fake passwd entries and a real data directory."""

import datetime
import os

from twisted.internet import defer, task
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from aimx.control.approvals import MAX_PENDING, Expiry
from aimx.control.ops import Caller, Control
from aimx.core import approvalmail, audit, frontmatter
from aimx.core.address import Envelope
from aimx.core.authresults import AuthResults
from aimx.core.message import parse_message
from aimx.logs import event_line
from aimx.ops import logline
from aimx.core.received import Prepared
from aimx.errors import (
    AccessDenied,
    BodyTooLarge,
    MailboxError,
    NotFoundError,
    PolicyError,
    SignError,
    TempError,
)
from aimx.service import LiveConfig
from aimx.testing import fakes
from aimx.testing.fakes import FakeNow, FakeOutbox, FakePasswd
from tests.test_approvalmail import signed

ROOT, ALICE, BOB, OPS = 0, 2001, 2002, 2003
START = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.timezone.utc)


class ApprovalTestCase(TestCase):
    def setUp(self):
        self.data = os.path.realpath(self.mktemp())
        os.makedirs(self.data)
        self.now = FakeNow(START)
        self.outbox = FakeOutbox()
        self.configure()

    def configure(self, approval="new-recipients", **top):
        config = fakes.config(data_dir=self.data, approval={"approvers": "ops", **top},
                              mailboxes={"alice": {"owner": "alice", "outbound": {
                                  "approval": approval, "max_per_hour": 3}},
                                  "bob": {"owner": "bob"}})
        self.live = LiveConfig(config)
        # The audit log knows friend@x.example: alice delivered to it a week ago.
        self.audit = fakes.audit_log(self, self.live, fakes.clock_at(START), [(
            START - datetime.timedelta(days=7), audit.send(
                mailbox="alice", caller_uid=ALICE, author="alice@test.local",
                recipients=["friend@x.example"], sha256="0" * 64, decision=audit.SENT,
                delivered=["friend@x.example"]))])
        tokens = iter(f"{n:08x}" for n in range(1, 10_000))
        self.control = Control(
            live=self.live, config_dir=self.data, data_dir=self.data,
            mailbox_lock=lambda name: defer.DeferredLock(),
            run_in_thread=lambda f, *a: defer.maybeDeferred(f, *a),
            passwd=FakePasswd({"alice": ALICE, "bob": BOB, "ops": OPS},
                              groups={"ops": ["ops", "alice"]}),
            now=self.now, outbox=self.outbox, audit=self.audit)
        self.control.approvals.token = lambda: next(tokens)

    def send(self, to="new@y.example", uid=ALICE, **kw):
        message = fakes.message(sender="alice@test.local", to=to, message_id=None, **kw)
        return self.successResultOf(defer.Deferred.fromCoroutine(
            self.control.send(Caller(uid=uid), message, False, None, [])))

    def call(self, method, uid, *args):
        return defer.Deferred.fromCoroutine(getattr(self.control, method)(Caller(uid=uid), *args))

    def held_dir(self, *parts):
        return os.path.join(self.data, "held", "alice", *parts)


class HoldTests(ApprovalTestCase):
    def test_new_recipient_held(self):
        """A new recipient holds the message: nothing sent, its id and message id answered."""
        reply = self.send()
        self.assertEqual(reply["held"], "20260301-120000-00000001")
        self.assertTrue(reply["message_id"].endswith("@test.local>"))
        self.assertEqual(self.outbox.drafts, [])
        self.assertEqual(sorted(os.listdir(self.held_dir())),
                         ["20260301-120000-00000001.md", "20260301-120000-00000001.parts"])
        with open(self.held_dir("20260301-120000-00000001.md"), "rb") as f:
            fields, _ = frontmatter.parse(f.read())
        self.assertEqual((fields["held_reason"], fields["message_id"], fields["caller_uid"]),
                         ("new recipients: new@y.example", reply["message_id"], ALICE))

    def test_known_recipient_sent(self):
        """A recipient the audit log knows goes at once."""
        self.assertNotIn("held", self.send(to="Friend@x.example"))
        self.assertEqual(len(self.outbox.drafts), 1)

    def test_always(self):
        """approval = always holds even known recipients."""
        self.configure(approval="always")
        self.assertIn("held", self.send(to="friend@x.example"))

    def test_too_large_refused_not_held(self):
        """A message that could never be sent is refused now, not at approval."""
        message = fakes.message("a" * (5 * 1024 * 1024 + 1), sender="alice@test.local",
                                to="new@y.example")
        d = defer.Deferred.fromCoroutine(
            self.control.send(Caller(uid=ALICE), message, False, None, []))
        self.failureResultOf(d, BodyTooLarge)
        self.assertFalse(os.path.exists(self.held_dir()))

    def test_pending_cap(self):
        """A mailbox has at most MAX_PENDING holds waiting; then POLICY."""
        for _ in range(MAX_PENDING):
            self.send()
        d = defer.Deferred.fromCoroutine(self.control.send(
            Caller(uid=ALICE), fakes.message(sender="alice@test.local", to="new@y.example"),
            False, None, []))
        self.assertIn("already has 100 messages waiting", self.failureResultOf(
            d, PolicyError).getErrorMessage())


class DecideTests(ApprovalTestCase):
    def setUp(self):
        super().setUp()
        self.hold_id = self.send()["held"]

    def test_owner_never_decides(self):
        """The owner (an approver too here) may list and show, never approve or reject."""
        [row] = self.successResultOf(self.call("held_list", ALICE, None))
        self.assertEqual((row["hold_id"], row["to"]), (self.hold_id, "new@y.example"))
        shown = self.successResultOf(self.call("held_show", ALICE, self.hold_id))
        self.assertIn("held_reason = ", shown["file"])
        for method, args in (("held_approve", ()), ("held_reject", ("no",))):
            failure = self.failureResultOf(self.call(method, ALICE, self.hold_id, *args),
                                           AccessDenied)
            self.assertEqual(failure.getErrorMessage(), "not authorized: the mailbox's owner "
                             "never approves or rejects its own mail")
        self.assertEqual(self.outbox.drafts, [])

    def test_strangers(self):
        """Another owner sees nothing: the hold is not found, the mailbox does not exist."""
        self.assertEqual(self.successResultOf(self.call("held_list", BOB, None)), [])
        self.failureResultOf(self.call("held_list", BOB, "alice"), MailboxError)
        for method in ("held_show", "held_approve"):
            self.failureResultOf(self.call(method, BOB, self.hold_id), NotFoundError)
        self.failureResultOf(self.call("held_show", ROOT, "../../etc"), NotFoundError)
        self.failureResultOf(self.call("held_list", ROOT, "../inbox"), MailboxError)

    def test_root_approves(self):
        """Root approves: the outbox gets the draft as held; the hold is gone; it counts
        in the rate window."""
        reply = self.successResultOf(self.call("held_approve", ROOT, self.hold_id))
        self.assertEqual(reply["message_id"], "<m@test.local>")
        [draft] = self.outbox.drafts
        self.assertIn("To: new@y.example", draft.header_lines)
        self.assertEqual(draft.text, "Hi\n")
        self.assertEqual(os.listdir(self.held_dir()), [])
        self.failureResultOf(self.call("held_approve", ROOT, self.hold_id), NotFoundError)
        self.assertEqual(len(self.control.guard.recent("alice", self.now())), 1)

    def test_approver_rejects(self):
        """A member of the approvers group rejects, with a reason; it moves to rejected/."""
        self.successResultOf(self.call("held_reject", OPS, self.hold_id, "wrong customer"))
        self.assertEqual(self.outbox.drafts, [])
        with open(self.held_dir("rejected", self.hold_id + ".md"), "rb") as f:
            fields, _ = frontmatter.parse(f.read())
        self.assertEqual((fields["state"], fields["decided_by"], fields["decision_reason"]),
                         ("rejected", "ops", "wrong customer"))
        self.assertEqual(self.successResultOf(self.call("held_list", ROOT, None)), [])

    def test_temporary_failure_keeps_it(self):
        """A delivery that cannot happen now leaves the hold pending, to approve again."""
        self.outbox.answer = TempError("all deferred")
        self.failureResultOf(self.call("held_approve", ROOT, self.hold_id), TempError)
        self.assertEqual(len(os.listdir(self.held_dir())), 2)
        self.assertEqual(self.control.guard.recent("alice", self.now()), [])
        self.outbox.answer = None
        self.successResultOf(self.call("held_approve", ROOT, self.hold_id))

    def test_one_decision_at_a_time(self):
        """While an approval delivers, a second approval or a rejection waits its turn."""
        self.outbox.answer = defer.Deferred()
        first = self.call("held_approve", ROOT, self.hold_id)
        self.assertNoResult(first)
        self.failureResultOf(self.call("held_reject", OPS, self.hold_id, None), TempError)
        self.outbox.answer.callback(None)
        self.successResultOf(first)


class ExpiryTests(ApprovalTestCase):
    def test_expired_on_the_reactor_clock(self):
        """Holds past expire_days move to rejected/ when the hourly look comes round."""
        self.configure(expire_days=1)
        old = self.send()["held"]
        self.now.advance(3600)
        young = self.send()["held"]
        clock = task.Clock()
        expiry = Expiry(self.control.approvals, clock)
        expiry.startService()
        self.addCleanup(expiry.stopService)
        self.assertEqual(len(os.listdir(self.held_dir())), 4)
        self.now.advance(86400 - 3600)
        clock.advance(3600)
        self.assertEqual(sorted(os.listdir(self.held_dir("rejected"))),
                         [old + ".md", old + ".parts"])
        with open(self.held_dir("rejected", old + ".md"), "rb") as f:
            fields, _ = frontmatter.parse(f.read())
        self.assertEqual((fields["state"], fields["decided_by"]), ("expired", "aimx"))
        self.now.advance(3600)
        clock.advance(3600)
        self.assertEqual(len(os.listdir(self.held_dir("rejected"))), 4)
        self.assertIn(young + ".md", os.listdir(self.held_dir("rejected")))

    def test_stop_waits_for_a_look(self):
        """Stopping waits for a look in progress (its thread work must not outlive it)."""
        running = defer.Deferred()

        class Slow:
            async def expire(self):
                await running

        expiry = Expiry(Slow(), task.Clock())
        expiry.startService()
        stopped = expiry.stopService()
        self.assertNoResult(stopped)
        running.callback(None)
        self.successResultOf(stopped)


class AuditTests(ApprovalTestCase):
    """Each SEND decision and each decision on a hold is an audit record, with who."""

    def setUp(self):
        super().setUp()
        self.records = []
        self.control.audit = self  # the audit log's one method: record

    def record(self, record):
        self.records.append(record)

    def test_decisions_recorded(self):
        """Held, sent, refused by a rule and by authorisation; the owner's refused approval,
        root's approval with its outcome, an approver's rejection with its reason, expiry."""
        first = self.send()["held"]
        self.send(to="friend@x.example")
        self.failureResultOf(self.call("held_approve", ALICE, first), AccessDenied)
        self.successResultOf(self.call("held_approve", ROOT, first))
        second = self.send()["held"]
        self.successResultOf(self.call("held_reject", OPS, second, "wrong customer"))
        self.send(to="friend@x.example")
        self.failureResultOf(defer.Deferred.fromCoroutine(self.control.send(
            Caller(uid=ALICE), fakes.message(sender="alice@test.local", to="friend@x.example"),
            False, None, [])), PolicyError)
        self.failureResultOf(defer.Deferred.fromCoroutine(self.control.send(
            Caller(uid=BOB), fakes.message(sender="alice@test.local", to="friend@x.example"),
            False, None, [])), AccessDenied)
        self.configure(expire_days=1)
        self.control.audit = self
        third = self.send()["held"]
        self.now.advance(86400)
        self.successResultOf(defer.Deferred.fromCoroutine(self.control.approvals.expire()))
        rows = [(r["event"], r.get("decision") or r.get("action"), r.get("rule"),
                 r.get("hold_id"), r["caller_uid"], r.get("by"), r.get("outcome"),
                 r.get("reason")) for r in self.records]
        self.assertEqual(rows, [
            ("send", "held", "outbound.approval", first, ALICE, None, None,
             "new recipients: new@y.example"),
            ("send", "sent", None, None, ALICE, None, "delivered", None),
            ("held", "refused", None, first, ALICE, "alice", None,
             "approve: the mailbox's owner never approves or rejects its own mail"),
            ("held", "approved", None, first, ROOT, "root", "delivered", None),
            ("send", "held", "outbound.approval", second, ALICE, None, None,
             "new recipients: new@y.example"),
            ("held", "rejected", None, second, OPS, "ops", None, "wrong customer"),
            ("send", "sent", None, None, ALICE, None, "delivered", None),
            ("send", "refused", "outbound.max_per_hour", None, ALICE, None, None,
             self.records[7]["reason"]),
            ("send", "refused", "authorization", None, BOB, None, None, "not authorized"),
            ("send", "held", "outbound.approval", third, ALICE, None, None,
             "new recipients: new@y.example"),
            ("held", "expired", None, third, None, "aimx", None, "not decided in time"),
        ])
        self.assertIn("(outbound.max_per_hour)", self.records[7]["reason"])
        self.assertEqual(len(self.records[0]["sha256"]), 64)
        self.assertEqual(self.records[0]["recipients"], ["new@y.example"])


NOTIFY = "ops@owner.example"


class ByMailTests(ApprovalTestCase):
    """[approval] notify: each hold is announced; a reply the core accepts decides it."""

    def setUp(self):
        super().setUp()
        self.configure(notify=NOTIFY)
        secrets = iter(f"{n:032x}" for n in range(1, 10_000))
        self.control.approvals.secret = lambda: next(secrets)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.hold_id = self.send()["held"]

    def logged(self) -> str:
        return "\n".join(event_line(e, journal=True) for e in self.events)

    def lines(self, message: str) -> list[logline.Line]:
        """The logged events saying C{message}, read back from their lines."""
        lines = [logline.read(event_line(e, journal=True)) for e in self.events]
        return [line for line in lines if line.message == message]

    def problems(self) -> list[str]:
        return [line.fields["problem"] for line in self.lines("mail reply ignored")]

    def reply(self, body="approve", secret=f"{1:032x}", sender=NOTIFY, auth=None):
        """Hand the daemon a reply as the inbound chain would; fires when it is done."""
        raw = fakes.message(body + "\r\n", sender=sender, to="postmaster@test.local",
                            subject=f"Re: [aimx hold {self.hold_id} {secret}] Test")
        prepared = Prepared(Envelope(None, None, sender, ("postmaster@test.local",), raw),
                            parse_message(raw), signed() if auth is None else auth)
        self.control.approvals.on_reply(prepared)
        return self.successResultOf(self.control.approvals.idle())

    def kept_digest(self):
        with open(self.held_dir(self.hold_id + ".md"), "rb") as f:
            return frontmatter.parse(f.read())[0].get("token_sha256")

    def test_notified(self):
        """The hold is announced to notify from postmaster with the token; the hold keeps
        only the token's digest."""
        [(draft, sender, rcpts)] = self.outbox.notices
        self.assertEqual((sender, rcpts), ("postmaster@test.local", [NOTIFY]))
        token = f"[aimx hold {self.hold_id} {1:032x}]"
        self.assertIn(f"Subject: {token}", draft.header_lines)
        self.assertEqual(self.kept_digest(), approvalmail.digest(f"{1:032x}"))
        [line] = self.lines("notification")
        self.assertEqual(
            (line.namespace, line.fields["hold_id"], line.fields["notify"],
             line.fields["status"]),
            ("aimx.held", "20260301-120000-00000001", "ops@owner.example", "delivered"))

    def test_notice_failure_keeps_the_hold(self):
        """A notification that cannot go is logged; the hold waits as any other."""
        self.outbox.notice_answer = SignError("no key")
        other = self.send()["held"]
        [line] = self.lines("notification not sent")
        self.assertEqual((line.priority, line.fields["hold_id"], line.fields["notify"],
                          line.fields["error"]), (3, other, "ops@owner.example", "no key"))
        self.outbox.notice_answer, self.outbox.notice_status = None, "failed"
        self.send()
        failed = [line for line in self.lines("notification")
                  if line.fields["status"] == "failed"]
        self.assertEqual([(line.priority, line.fields["details"]) for line in failed],
                         [(4, "fake")])
        self.assertEqual(len(self.successResultOf(self.call("held_list", ROOT, None))), 3)

    def test_approve(self):
        """approve delivers the held message and the hold is gone, decided by mail."""
        self.reply("approve")
        [draft] = self.outbox.drafts
        self.assertIn("To: new@y.example", draft.header_lines)
        self.assertEqual(os.listdir(self.held_dir()), [])
        [line] = self.lines("settled")
        self.assertEqual(
            {k: line.fields[k] for k in ("state", "hold_id", "mailbox", "by")},
            {"state": "approved", "hold_id": self.hold_id, "mailbox": "alice",
             "by": f"mail from {NOTIFY}"})

    def test_reject(self):
        """reject with a reason moves it to rejected/, by mail from notify."""
        self.reply("reject: not a customer")
        self.assertEqual(self.outbox.drafts, [])
        with open(self.held_dir("rejected", self.hold_id + ".md"), "rb") as f:
            fields, _ = frontmatter.parse(f.read())
        self.assertEqual((fields["state"], fields["decided_by"], fields["decision_reason"]),
                         ("rejected", f"mail from {NOTIFY}", "not a customer"))
        self.assertNotIn("token_sha256", fields)

    def test_ignored(self):
        """A wrong secret, another author or an unsigned reply decides nothing, and says
        why in the log (a warning when it claims to be from notify)."""
        self.reply(secret="f" * 32)
        self.reply(sender="eve@owner.example")
        self.reply(auth=AuthResults(dkim="none", spf="pass", dmarc="pass"))
        self.assertEqual(self.outbox.drafts, [])
        self.assertEqual(len(os.listdir(self.held_dir())), 2)
        logged = self.logged()
        ignored = self.lines("mail reply ignored")
        self.assertEqual(
            {k: ignored[0].fields[k] for k in ("sender", "hold_id", "message_id", "problem")},
            {"sender": NOTIFY, "hold_id": self.hold_id, "message_id": "m1@example.com",
             "problem": "the token is not the hold's (wrong, spent or renewed)"})
        problems = " | ".join(self.problems())
        self.assertIn("from eve@owner.example, not ops@owner.example", problems)
        self.assertIn("not authenticated as ops@owner.example: no valid DKIM signature",
                      problems)
        self.assertNotIn("f" * 32, logged)
        self.assertNotIn(f"{1:032x}", logged)
        self.assertEqual({line.priority for line in ignored}, {6, 4})

    def test_no_such_hold(self):
        """A token of a hold no longer pending decides nothing."""
        self.successResultOf(self.call("held_reject", ROOT, self.hold_id, None))
        self.reply("approve")
        self.assertIn("no such hold is pending", " | ".join(self.problems()))

    def test_deferred_approval_renews_the_token(self):
        """An approval that can only be deferred spends the token and announces the hold
        again with a new one: the old reply is refused, the new token approves."""
        self.outbox.answer = TempError("all deferred")
        self.reply("approve")
        self.assertEqual(len(os.listdir(self.held_dir())), 2)
        [_, (again, _, _)] = self.outbox.notices
        self.assertIn(f"Subject: [aimx hold {self.hold_id} {2:032x}]", again.header_lines)
        self.assertTrue(again.text.startswith("Approved, but not sent: all deferred\n"))
        self.assertEqual(self.kept_digest(), approvalmail.digest(f"{2:032x}"))
        self.outbox.answer = None
        self.reply("approve")
        self.assertEqual(len(os.listdir(self.held_dir())), 2)
        self.assertIn("the token is not the hold's", " | ".join(self.problems()))
        self.reply("approve", secret=f"{2:032x}")
        self.assertEqual(os.listdir(self.held_dir()), [])

    def test_busy(self):
        """A reply while the hold is being decided on waits for nothing and acts not."""
        self.outbox.answer = defer.Deferred()
        first = self.call("held_approve", ROOT, self.hold_id)
        self.reply("reject")
        self.assertIn("the hold is being decided on", " | ".join(self.problems()))
        self.outbox.answer.callback(None)
        self.successResultOf(first)

    def test_audited(self):
        """An approval by mail is audited with who (the notify address), and so is a
        reply that names a pending hold but decides nothing (a forged one)."""
        records = []
        self.control.approvals.audit = records.append
        self.reply(auth=AuthResults(dkim="none", spf="pass", dmarc="pass"))
        self.reply("approve")
        self.assertEqual(
            [(r["action"], r["hold_id"], r["by"], r["caller_uid"], r["reason"])
             for r in records],
            [("refused", self.hold_id, f"mail from {NOTIFY}", None,
              f"mail reply ignored: not authenticated as {NOTIFY}: no valid DKIM signature"),
             ("approved", self.hold_id, f"mail from {NOTIFY}", None, None)])
