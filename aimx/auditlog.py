"""The audit log (L2): records stamped on the reactor's clock, written by one writer
in a thread, read back for AUDIT-READ, old days pruned daily.

docs/guardrails.md, "Audit".  L{AuditLog.record} never blocks and never fails:
it stamps the record, queues its line and, unless a write is already running,
starts one in the thread pool that appends everything queued (one write and one
fdatasync per day file: L{aimx.store.audit.append}).  So lines reach the disk in
the order they were recorded, a burst costs one sync, and the reactor never
waits on the disk; nothing a caller is answered waits for the line either (a
crash can lose the lines of its last moment).  A write that fails is logged and
its lines dropped.  Every C{audit_retention_days} the files of older days go, at
start and then daily.

The log also keeps, in memory, what its records say each mailbox knows
(L{Correspondents}: the addresses it delivered to, the trusted senders it stored)
and, for the rate windows, when it sent: read at start from the day files within
the retention, in a thread (L{AuditLog.ready} fires when done), and updated by
L{AuditLog.record} from each line as it will be written.  These rest on the
root-only audit files, never on the mailbox's own, which its owner can write
(docs/guardrails.md, "Approval").
"""

from datetime import datetime, timedelta, timezone

from twisted.application import service
from twisted.internet import defer, task

from aimx.core import audit
from aimx.idle import IdleWaiters
from aimx.logs import Logger
from aimx.store import audit as files

log = Logger(namespace="aimx.audit")

DAY = 86400
#: The most known addresses kept per mailbox; past it, new ones stay new (held).
MAX_KNOWN = 100_000


class Correspondents:
    """Per mailbox, whom the audit records say it knows and when it sent.

    @param sends: C{(start, end)}: the send times kept are those in this range
        (the start-up read: the last day before the daemon started; the sends after
        it are counted at their decision, L{aimx.control.sendguard}); C{None}: none.
    """

    def __init__(self, sends: tuple[datetime, datetime] | None = None):
        #: mailbox -> address -> the last time a record made it known.
        self.known: dict[str, dict[str, datetime]] = {}
        #: mailbox -> the times of its sends (oldest first).
        self.sends: dict[str, list[datetime]] = {}
        #: mailboxes created or deleted since this began (what came before is void).
        self.reset: set[str] = set()
        self._range = sends

    def add(self, record: dict) -> None:
        """Take in one record (as read back: L{aimx.core.audit.parse_line})."""
        at = audit.when(record)
        if at is None:
            return
        gone = audit.forgets(record)
        if gone is not None:
            self.known.pop(gone, None)
            self.reset.add(gone)
            return
        found = audit.known_from(record)
        if found is not None:
            mailbox, addresses = found
            table = self.known.setdefault(mailbox, {})
            for address in addresses:
                if address in table or len(table) < MAX_KNOWN:
                    table[address] = max(at, table.get(address, at))
        counted = audit.counts_send(record)
        if counted is not None and self._range is not None and (
                self._range[0] < at <= self._range[1]):
            self.sends.setdefault(counted, []).append(at)

    def update(self, later: "Correspondents") -> None:
        """Take in what C{later} (this daemon's own records, kept while this was
        read) knows: its resets first, then its addresses."""
        for mailbox in later.reset:
            self.known.pop(mailbox, None)
        for mailbox, table in later.known.items():
            mine = self.known.setdefault(mailbox, {})
            for address, at in table.items():
                if address in mine or len(mine) < MAX_KNOWN:
                    mine[address] = max(at, mine.get(address, at))

    def knows(self, mailbox: str, addresses, since: datetime) -> set[str]:
        """Which of C{addresses} (lower-cased) C{mailbox} knows from records after C{since}."""
        table = self.known.get(mailbox, {})
        return {a for a in addresses if a in table and table[a] > since}

    def forget(self, before: datetime) -> None:
        """Drop what is older than C{before} (the retention)."""
        for mailbox, table in self.known.items():
            for address in [a for a, at in table.items() if at <= before]:
                del table[address]


class AuditLog(service.Service):
    """The audit log of a daemon.

    @param config: returns the live configuration (C{effective_audit_dir},
        C{audit_retention_days}), read at each write, read and prune.
    @param clock: stamps records and schedules the pruning (the reactor).
    @param run_in_thread: C{f, *args -> Deferred} for the disk.
    """

    def __init__(self, *, config, clock, run_in_thread):
        self.config = config
        self.clock = clock
        self.run_in_thread = run_in_thread
        self._queue: list[tuple[str, bytes]] = []
        self._writing = False
        self._idle = IdleWaiters()
        self._loop = task.LoopingCall(self.prune)
        self._loop.clock = clock
        self._stopped = defer.succeed(None)
        self.correspondents = Correspondents()
        #: C{None} until the start-up read ends, then whether it read the files.
        self.loaded: bool | None = None
        self._ready = IdleWaiters()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.seconds(), timezone.utc)

    def record(self, record: dict) -> None:
        """Add one record (a builder's value from L{aimx.core.audit}); returns at once."""
        when = self.now()
        data = audit.line(audit.stamped(record, when))
        self._queue.append((audit.day(when), data))
        # What the line will say (lists cut as written), so a restart reads the same.
        self.correspondents.add(audit.parse_line(data.rstrip(b"\n")) or {})
        if not self._writing:
            self._write()

    def _write(self) -> None:
        batch, self._queue = self._queue, []
        self._writing = True
        directory = self.config().effective_audit_dir
        d = self.run_in_thread(files.append, directory, batch)
        d.addErrback(lambda f: log.failure("audit lines not written", f, path=directory,
                                           lines=len(batch)))
        d.addBoth(self._written)

    def _written(self, _):
        self._writing = False
        if self._queue:
            self._write()
        else:
            self._idle.idle()

    def flushed(self) -> defer.Deferred:
        """Fires once every record so far is on disk (or its write has failed)."""
        return self._idle.wait(not self._writing and not self._queue)

    async def read(self, keep, limit: int, since: datetime | None) -> list[dict]:
        """The last C{limit} records C{keep} accepts (of days from C{since} on), oldest
        first; records not yet written are waited for."""
        await self.flushed()
        first = None if since is None else audit.day(since)
        return await self.run_in_thread(
            files.read, self.config().effective_audit_dir, keep, limit, first)

    def ready(self) -> defer.Deferred:
        """Fires once the start-up read has ended (L{loaded} says how)."""
        return self._ready.wait(self.loaded is not None)

    def knows(self, mailbox: str, addresses) -> set[str]:
        """Which of C{addresses} (lower-cased) C{mailbox} delivered to or stored trusted
        mail from within the retention; nobody until the start-up read has ended."""
        if self.loaded is None:
            return set()
        return self.correspondents.knows(mailbox, addresses, self._retained())

    def sent_before_start(self) -> dict[str, list[datetime]]:
        """Each mailbox's sends of the day before the daemon started (after L{ready})."""
        return {name: list(times) for name, times in self.correspondents.sends.items()}

    def _retained(self) -> datetime:
        """The oldest moment the retention keeps (the first second of its first day)."""
        first = self.now() - timedelta(days=self.config().audit_retention_days - 1)
        return first.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
            microseconds=1)

    def _load(self) -> defer.Deferred:
        config, now = self.config(), self.now()
        loading = Correspondents(sends=(now - timedelta(seconds=DAY), now))
        d = self.run_in_thread(files.replay, config.effective_audit_dir,
                               audit.day(self._retained() + timedelta(microseconds=1)),
                               loading.add)

        def done(_):
            loading.update(self.correspondents)
            self.correspondents = loading
            self.loaded = True

        def failed(f):
            log.failure("audit log not read: no recipient is known from before this start, "
                        "and sends with a rate limit are refused", f,
                        path=config.effective_audit_dir)
            self.loaded = False

        d.addCallbacks(done, failed)
        d.addBoth(lambda _: self._ready.idle())
        return d

    def prune(self) -> defer.Deferred:
        """Remove the day files older than the retention (the reactor's clock says today)."""
        config = self.config()
        self.correspondents.forget(self._retained())
        oldest = audit.day(self.now() - timedelta(days=config.audit_retention_days - 1))
        d = self.run_in_thread(files.prune, config.effective_audit_dir, oldest)

        def done(removed):
            if removed:
                log.info("old audit days removed", path=config.effective_audit_dir,
                         files=len(removed), retention_days=config.audit_retention_days)

        d.addCallback(done)
        d.addErrback(lambda f: log.failure("old audit days not removed", f,
                                           path=config.effective_audit_dir))
        return d

    def startService(self):
        super().startService()
        self._load()
        self._stopped = self._loop.start(DAY, now=True)

    def stopService(self):
        """Stop pruning; fires once the queued lines are written."""
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        return defer.gatherResults([self._stopped, self.flushed(), self.ready()])
