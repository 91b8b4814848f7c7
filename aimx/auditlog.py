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

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.seconds(), timezone.utc)

    def record(self, record: dict) -> None:
        """Add one record (a builder's value from L{aimx.core.audit}); returns at once."""
        when = self.now()
        self._queue.append((audit.day(when), audit.line(audit.stamped(record, when))))
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

    def prune(self) -> defer.Deferred:
        """Remove the day files older than the retention (the reactor's clock says today)."""
        config = self.config()
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
        self._stopped = self._loop.start(DAY, now=True)

    def stopService(self):
        """Stop pruning; fires once the queued lines are written."""
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        return defer.gatherResults([self._stopped, self.flushed()])
