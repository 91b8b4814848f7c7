"""Tests for the audit log: records (aimx.core.audit), files (aimx.store.audit) and the
writer (aimx.auditlog) on a task.Clock."""

import json
import os
import stat
from datetime import datetime, timedelta, timezone

from twisted.internet import defer, task
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from aimx.auditlog import DAY, AuditLog, Correspondents
from aimx.core import audit
from aimx.core.config import Config
from aimx.logs import event_line
from aimx.store import audit as files

T0 = datetime(2026, 3, 1, 23, 59, 59, 500000, tzinfo=timezone.utc)


class RecordTests(SynchronousTestCase):
    def test_line_bounded(self):
        """A line is one JSON object: None values left out, long texts and lists cut."""
        record = audit.stamped(audit.send(
            mailbox="support", caller_uid=65534, author="support@a.example",
            recipients=[f"r{i}@x.example" for i in range(150)], sha256="ab", decision="refused",
            rule="outbound.allow", reason="x" * 5000), T0)
        raw = audit.line(record)
        self.assertTrue(raw.endswith(b"\n") and raw.count(b"\n") == 1)
        back = json.loads(raw)
        self.assertEqual(list(back)[:3], ["time", "event", "mailbox"])
        self.assertEqual(back["time"], "2026-03-01T23:59:59.500000Z")
        self.assertEqual(len(back["recipients"]), audit.MAX_ITEMS + 1)
        self.assertEqual(back["recipients"][-1], "… 50 more")
        self.assertEqual(len(back["reason"]), audit.MAX_TEXT + 1)
        self.assertNotIn("hold_id", back)
        self.assertEqual(audit.day(T0), "2026-03-01.jsonl")

    def test_parse_line(self):
        """Only JSON objects with a time read back; over-long lines are skipped."""
        self.assertEqual(audit.parse_line(b'{"time": "t", "event": "send"}'),
                         {"time": "t", "event": "send"})
        for raw in (b"not json", b"[1]", b'{"event": "send"}',
                    b'{"time": "' + b"x" * audit.MAX_LINE + b'"}'):
            self.assertIsNone(audit.parse_line(raw))

    def test_filters_and_visibility(self):
        """mailbox, event and since filter; root sees all, others their mailboxes only,
        and never a record without a mailbox."""
        a = audit.stamped(audit.change(audit.HOOK, "created", mailbox="a", caller_uid=5), T0)
        b = audit.stamped(audit.change(audit.MAILBOX, "deleted", mailbox="b", caller_uid=0),
                          T0 + timedelta(hours=1))
        c = audit.stamped(audit.reloaded(2, 1), T0)
        self.assertTrue(audit.matches(a, mailbox="a", event="hook", since=T0))
        self.assertFalse(audit.matches(a, mailbox="b"))
        self.assertFalse(audit.matches(a, event="mailbox"))
        self.assertFalse(audit.matches(a, since=T0 + timedelta(seconds=1)))
        self.assertTrue(audit.matches(b, since=T0 + timedelta(seconds=1)))
        owns = {"a"}.__contains__
        self.assertEqual([audit.visible(r, 5, owns) for r in (a, b, c)], [True, False, False])
        self.assertEqual([audit.visible(r, 0, owns) for r in (a, b, c)], [True, True, True])

    def test_outcome(self):
        """All alike give their status; a mix is partial."""
        self.assertEqual(audit.outcome([{"status": "delivered"}] * 2), "delivered")
        self.assertEqual(audit.outcome([{"status": "deferred"}]), "deferred")
        self.assertEqual(audit.outcome([{"status": "delivered"}, {"status": "failed"}]),
                         "partial")

    def test_changes(self):
        """Between two configs: mailboxes created and deleted, then hooks."""
        from aimx.core.config import MailboxConfig, make_hook
        hook = make_hook("on_receive", ["/bin/true"], name="h")
        old = Config("a.example", mailboxes=[MailboxConfig("a", "a@a.example", "u", hooks=[hook]),
                                             MailboxConfig("b", "b@a.example", "u")])
        new = Config("a.example", mailboxes=[MailboxConfig("a", "a@a.example", "u"),
                                             MailboxConfig("c", "c@a.example", "v",
                                                           hooks=[hook])])
        self.assertEqual([(r["event"], r["action"], r["mailbox"], r.get("hook"))
                          for r in audit.changes(old, new, 0)],
                         [("mailbox", "created", "c", None), ("mailbox", "deleted", "b", None),
                          ("hook", "created", "c", "h"), ("hook", "deleted", "a", "h")])
        self.assertEqual(audit.changes(old, old, 0), [])

    def test_summary(self):
        """Each kind of record reads as one line of text."""
        refused = audit.stamped(audit.send(
            mailbox="support", caller_uid=65534, author="support@a.example",
            recipients=["eve@evil.example"], sha256="ab", decision="refused",
            rule="outbound.allow", reason="eve@evil.example is not allowed"), T0)
        self.assertEqual(audit.summary(refused),
                         "2026-03-01T23:59:59.500000Z send support refused to=eve@evil.example "
                         "caller_uid=65534: eve@evil.example is not allowed")
        inbound = {"time": "t", "event": "inbound", "mailbox": "support", "sender": "e@x",
                   "trusted": "true", "risk": "review", "risk_reasons": ["guard:tool-call"],
                   "hooks": [{"name": "n", "fired": False, "skipped": "review"},
                             {"name": "m", "fired": True}]}
        self.assertEqual(audit.summary(inbound),
                         "t inbound support from=e@x trusted=true risk=review (guard:tool-call) "
                         "hooks: n skipped (review), m fired")
        held = audit.stamped(audit.held(action="refused", mailbox="support", hold_id="h1",
                                        by="agent", caller_uid=65534, reason="approve: owner"),
                             T0)
        self.assertTrue(audit.summary(held).endswith("held support refused h1 by=agent: "
                                                     "approve: owner"))
        self.assertIn('hook="x"', audit.summary(audit.stamped(audit.change(
            audit.HOOK, "deleted", mailbox="a", caller_uid=0, hook="x"), T0)))


class FileTests(SynchronousTestCase):
    def setUp(self):
        self.dir = os.path.join(os.path.abspath(self.mktemp()), "audit")

    def put(self, day: str, *records: dict):
        files.append(self.dir, [(day, audit.line(r)) for r in records])

    def test_append_modes(self):
        """The directory is made 0700, each day file 0600, lines appended in order."""
        self.put("2026-03-01.jsonl", {"time": "a"}, {"time": "b"})
        self.put("2026-03-01.jsonl", {"time": "c"})
        self.assertEqual(stat.S_IMODE(os.stat(self.dir).st_mode), 0o700)
        path = os.path.join(self.dir, "2026-03-01.jsonl")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        with open(path) as f:
            self.assertEqual([json.loads(line)["time"] for line in f], ["a", "b", "c"])

    def test_symlink_refused(self):
        """A day file that is a symlink is not written through."""
        os.makedirs(self.dir)
        target = os.path.join(os.path.dirname(self.dir), "elsewhere")
        os.symlink(target, os.path.join(self.dir, "2026-03-01.jsonl"))
        with self.assertRaises(Exception):
            self.put("2026-03-01.jsonl", {"time": "a"})
        self.assertFalse(os.path.exists(target))

    def test_read_newest(self):
        """The last `limit` accepted records, oldest first, across days; damaged lines and
        other files skipped; days before first_day not read."""
        self.put("2026-03-01.jsonl", *({"time": f"1-{i}", "n": i} for i in range(3)))
        self.put("2026-03-02.jsonl", *({"time": f"2-{i}", "n": i} for i in range(3)))
        with open(os.path.join(self.dir, "2026-03-02.jsonl"), "ab") as f:
            f.write(b"garbage\n")
        with open(os.path.join(self.dir, "notes.txt"), "w") as f:
            f.write('{"time": "x"}\n')
        times = lambda records: [r["time"] for r in records]  # noqa: E731
        self.assertEqual(times(files.read(self.dir, lambda r: True, 4)),
                         ["1-2", "2-0", "2-1", "2-2"])
        self.assertEqual(times(files.read(self.dir, lambda r: r["n"] == 1, 10)), ["1-1", "2-1"])
        self.assertEqual(times(files.read(self.dir, lambda r: True, 10, "2026-03-02.jsonl")),
                         ["2-0", "2-1", "2-2"])
        self.assertEqual(files.read(self.dir, lambda r: True, 0), [])
        size = len(audit.line({"time": "2-2", "n": 2}))
        self.assertEqual(times(files.read(self.dir, lambda r: True, 10, max_bytes=2 * size)),
                         ["2-1", "2-2"])
        self.assertEqual(files.read(self.dir + "-none", lambda r: True, 5), [])

    def test_prune(self):
        """Day files before the oldest kept go; others stay."""
        for day in ("2026-01-01", "2026-02-28", "2026-03-01"):
            self.put(f"{day}.jsonl", {"time": day})
        self.assertEqual(files.prune(self.dir, "2026-02-28.jsonl"), ["2026-01-01.jsonl"])
        self.assertEqual(files.days(self.dir), ["2026-02-28.jsonl", "2026-03-01.jsonl"])


class LogTestCase(SynchronousTestCase):
    """An audit log on a task.Clock, its disk work held back until L{finish}."""

    def setUp(self):
        self.dir = os.path.join(os.path.abspath(self.mktemp()), "audit")
        self.config = Config("a.example", audit_dir=self.dir, audit_retention_days=2)
        self.clock = task.Clock()
        self.clock.advance(T0.timestamp())
        self.pending = []
        self.log = AuditLog(config=lambda: self.config, clock=self.clock,
                            run_in_thread=self.run_in_thread)

    def run_in_thread(self, f, *args):
        """Hold the disk work until L{finish}: the reactor never waits for it."""
        d = defer.Deferred()
        self.pending.append((d, f, args))
        return d

    def finish(self):
        while self.pending:
            d, f, args = self.pending.pop(0)
            defer.maybeDeferred(f, *args).chainDeferred(d)

    def read_all(self):
        d = defer.Deferred.fromCoroutine(self.log.read(lambda r: True, 100, None))
        self.finish()
        return self.successResultOf(d)


class AuditLogTests(LogTestCase):
    """The writer on a task.Clock, its disk work run at once or held back."""

    def test_one_writer_batches(self):
        """Records queued while a write runs go in the next one, in order, each stamped
        with the clock; the day file follows the clock across midnight."""
        self.log.record(audit.reloaded(1, 0))
        self.clock.advance(1)  # past midnight
        self.log.record(audit.reloaded(2, 0))
        self.log.record(audit.reloaded(3, 0))
        self.assertEqual(len(self.pending), 1)
        flushed = self.log.flushed()
        self.assertNoResult(flushed)
        self.finish()
        self.successResultOf(flushed)
        self.assertEqual(files.days(self.dir), ["2026-03-01.jsonl", "2026-03-02.jsonl"])
        self.assertEqual([(r["time"][:10], r["mailboxes"]) for r in self.read_all()],
                         [("2026-03-01", 1), ("2026-03-02", 2), ("2026-03-02", 3)])

    def test_failed_write_logged(self):
        """A write that fails is logged; the next records are written."""
        self.config = Config("a.example", audit_dir="/proc/no-such-dir/audit")
        self.log.record(audit.reloaded(1, 0))
        with capturedLogs() as events:
            self.finish()
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        [line] = [event_line(e, journal=True) for e in events]
        self.assertTrue(line.startswith("<3>aimx.audit: audit lines not written "
                                        "path=/proc/no-such-dir/audit lines=1 exception="), line)
        self.config = Config("a.example", audit_dir=self.dir)
        self.log.record(audit.reloaded(2, 0))
        self.finish()
        self.assertEqual([r["mailboxes"] for r in self.read_all()], [2])

    def test_retention_daily(self):
        """At start and then every day on the clock, files older than the retention go."""
        for day in ("2026-02-27", "2026-02-28", "2026-03-01"):
            files.append(self.dir, [(f"{day}.jsonl", audit.line({"time": day}))])
        self.log.startService()
        with capturedLogs() as events:
            self.finish()
        self.assertEqual(files.days(self.dir), ["2026-02-28.jsonl", "2026-03-01.jsonl"])
        self.assertEqual([event_line(e, journal=True) for e in events], [
            f"<6>aimx.audit: old audit days removed path={self.dir} files=1 retention_days=2"])
        self.clock.advance(DAY)
        self.finish()
        self.assertEqual(files.days(self.dir), ["2026-03-01.jsonl"])
        stopped = self.log.stopService()
        self.finish()
        self.successResultOf(stopped)


def sent(decision=audit.SENT, mailbox="support", **kw) -> dict:
    return audit.send(mailbox=mailbox, caller_uid=65534, author=f"{mailbox}@a.example",
                      recipients=["a@x.example", "b@x.example"], sha256="ab",
                      decision=decision, **kw)


def inbound(trusted: str, address: str = "Boss@T.example", mailbox="support") -> dict:
    return {"event": audit.INBOUND, "mailbox": mailbox, "from": f"Boss <{address}>",
            "from_address": address.lower(), "trusted": trusted}


class CorrespondenceTests(SynchronousTestCase):
    """What a record says a mailbox knows and sent (pure), and L{Correspondents}."""

    def test_known_from(self):
        """Known: the recipients a sent SEND or an approved hold reached, the From of
        trusted inbound mail; nothing from refused or held SENDs, untrusted mail,
        rejected holds or a cut list's tail."""
        self.assertEqual(audit.known_from(sent(delivered=["A@x.example"])),
                         ("support", ["a@x.example"]))
        self.assertIsNone(audit.known_from(sent()))
        self.assertIsNone(audit.known_from(sent(audit.REFUSED, delivered=["a@x.example"])))
        self.assertIsNone(audit.known_from(sent(audit.HELD_BACK, hold_id="h")))
        approved = audit.held(action=audit.APPROVED, mailbox="support", hold_id="h", by="root",
                              caller_uid=0, delivered=["c@x.example", "… 3 more"])
        self.assertEqual(audit.known_from(approved), ("support", ["c@x.example"]))
        rejected = audit.held(action=audit.REJECTED, mailbox="support", hold_id="h",
                              by="root", caller_uid=0)
        self.assertIsNone(audit.known_from(rejected))
        self.assertEqual(audit.known_from(inbound("true")), ("support", ["boss@t.example"]))
        for trust in ("false", "none"):
            self.assertIsNone(audit.known_from(inbound(trust)))
        self.assertIsNone(audit.known_from({"event": audit.INBOUND, "trusted": "true",
                                            "from_address": "x@y.example"}))

    def test_delivered(self):
        """Only the recipients whose status is delivered."""
        self.assertEqual(audit.delivered([
            {"rcpt": "a@x.example", "status": "delivered"},
            {"rcpt": "b@x.example", "status": "deferred"},
            {"rcpt": "c@x.example", "status": "failed"}]), ["a@x.example"])
        self.assertEqual(audit.delivered(None), [])

    def test_counts_send(self):
        """A sent SEND counts unless it never left; an approved hold counts; nothing else."""
        self.assertEqual(audit.counts_send(sent(outcome="delivered")), "support")
        self.assertEqual(audit.counts_send(sent(outcome="[TEMP] later")), "support")
        self.assertIsNone(audit.counts_send(json.loads(audit.line(audit.stamped(
            sent(outcome="[SIZE] too big", counted=False), T0)))))
        self.assertNotIn("counted", json.loads(audit.line(audit.stamped(sent(), T0))))
        self.assertIsNone(audit.counts_send(sent(audit.REFUSED)))
        self.assertEqual(audit.counts_send(audit.held(
            action=audit.APPROVED, mailbox="support", hold_id="h", by="root", caller_uid=0)),
            "support")

    def fold(self, *records, sends=None):
        c = Correspondents(sends)
        for at, record in records:
            c.add(json.loads(audit.line(audit.stamped(record, at))))
        return c

    def test_correspondents(self):
        """Addresses with their last time, a mailbox created anew knows nobody, sends
        kept only within the range given; what is older than the retention is not known."""
        day = timedelta(days=1)
        c = self.fold((T0 - 10 * day, sent(delivered=["a@x.example"])),
                      (T0 - 9 * day, inbound("true", "old@o.example", mailbox="gone")),
                      (T0 - 8 * day, audit.change(audit.MAILBOX, "created", mailbox="gone",
                                                  caller_uid=0)),
                      (T0 - 2 * day, sent(delivered=["b@x.example"])),
                      (T0 - day / 2, sent(outcome="delivered")),
                      (T0, inbound("true")),
                      sends=(T0 - day, T0))
        self.assertEqual(c.knows("support", {"a@x.example", "b@x.example", "boss@t.example",
                                             "z@x.example"}, T0 - 30 * day),
                         {"a@x.example", "b@x.example", "boss@t.example"})
        self.assertEqual(c.knows("support", {"a@x.example", "b@x.example"}, T0 - 5 * day),
                         {"b@x.example"})
        self.assertEqual(c.knows("gone", {"old@o.example"}, T0 - 30 * day), set())
        self.assertEqual(c.sends, {"support": [T0 - day / 2]})
        c.forget(T0 - 5 * day)
        self.assertEqual(set(c.known["support"]), {"b@x.example", "boss@t.example"})

    def test_update_keeps_later_resets(self):
        """What the daemon recorded while the files were read is taken in, after its
        resets (a mailbox created meanwhile forgets what the files said)."""
        read = self.fold((T0, sent(delivered=["a@x.example"])),
                         (T0, sent(mailbox="new", delivered=["n@x.example"])))
        live = self.fold((T0, audit.change(audit.MAILBOX, "created", mailbox="new",
                                                 caller_uid=0)),
                         (T0, inbound("true")))
        read.update(live)
        self.assertEqual({m: set(t) for m, t in read.known.items()},
                         {"support": {"a@x.example", "boss@t.example"}})


class AuditLogMemoryTests(LogTestCase):
    """The log's start-up read and what it answers before, during and after it."""

    def setUp(self):
        super().setUp()
        self.config = Config("a.example", audit_dir=self.dir, audit_retention_days=3)

    def write(self, at, record):
        files.append(self.dir, [(audit.day(at), audit.line(audit.stamped(record, at)))])

    def test_start_up_read(self):
        """Known recipients come from the day files within the retention (read in the
        thread; nobody known until then) and from each record as it is made; the sends
        of the day before the start are kept for the rate windows."""
        day = timedelta(days=1)
        self.write(T0 - 3 * day, sent(delivered=["old@x.example"]))
        self.write(T0 - 2 * day, sent(delivered=["a@x.example"]))
        self.write(T0 - day / 2, sent(delivered=["b@x.example"]))
        self.log.startService()
        ready = self.log.ready()
        self.assertNoResult(ready)
        self.log.record(inbound("true"))
        asked = {"old@x.example", "a@x.example", "b@x.example", "boss@t.example"}
        self.assertEqual(self.log.knows("support", asked), set())
        self.finish()
        self.successResultOf(ready)
        self.assertTrue(self.log.loaded)
        self.assertEqual(self.log.knows("support", asked),
                         {"a@x.example", "b@x.example", "boss@t.example"})
        self.assertEqual(self.log.sent_before_start(), {"support": [
            (T0 - day / 2).replace(microsecond=T0.microsecond)]})
        self.clock.advance(DAY)  # a@x.example's day passes out of the retention
        self.finish()
        self.assertEqual(self.log.knows("support", asked), {"b@x.example", "boss@t.example"})
        stopped = self.log.stopService()
        self.finish()
        self.successResultOf(stopped)

    def test_failed_read(self):
        """A read that fails is logged; only this run's records are known then."""
        os.makedirs(os.path.dirname(self.dir), exist_ok=True)
        with open(self.dir, "w") as f:
            f.write("not a directory")
        self.log.startService()
        with capturedLogs() as events:
            self.finish()
        self.flushLoggedErrors(OSError)
        self.assertIs(self.log.loaded, False)
        self.assertTrue(any("audit log not read" in event_line(e, journal=False) for e in events))
        self.log.record(inbound("true"))
        self.assertEqual(self.log.knows("support", {"boss@t.example"}), {"boss@t.example"})
