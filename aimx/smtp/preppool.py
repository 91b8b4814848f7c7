"""The worker processes that parse and authenticate inbound mail (L2; docs/design.md,
"Worker processes").

One Python process runs on one core; parsing (HTML to Markdown above all) and DKIM
are most of an inbound message's CPU.  The pool hands that work to worker processes
(L{aimx.smtp.prepworker}) so that it runs on the other cores, while the daemon keeps
SMTP, storage, hooks and control.  The pool is part of the daemon: started and
stopped with it, with nothing queued of its own (a request is written to a worker at
once; the SMTP connection caps bound how many are in flight).

Nothing is lost to a worker: a message above L{IN_PROCESS_ABOVE} bytes, one that
arrives while no worker runs, and every request a worker had in hand when it
exited or broke its framing are prepared in the daemon instead (C{fallback}).  A
worker that exits is started again after a back-off.  A message a worker has not
answered L{OVERDUE_AFTER_BUDGET} seconds past its authentication budget fails (the
sender is answered 451) and the worker is stopped: what holds a worker up cannot
hold up the daemon's threads.
"""

import sys

from twisted.application import service
from twisted.internet import defer, error, protocol

from aimx.logs import Logger
from aimx.smtp.prepare import FrameReader, frame, load_answer

log = Logger(namespace="aimx.inbound")

#: Messages larger than this are prepared in the daemon: a copy through a pipe each
#: way would double their memory, and their parsing is rare enough to stay.
IN_PROCESS_ABOVE = 1 << 20
#: Seconds before a worker that exited is started again (doubling, up to the last).
RESTART_DELAYS = (1, 2, 4, 8, 16, 30)
#: Seconds a stopping worker is given to finish before it is killed.
STOP_GRACE = 5
#: Seconds a worker may take over one message beyond its authentication budget; past
#: them the message is answered 451 and the worker, stuck on it, is stopped.
OVERDUE_AFTER_BUDGET = 60


class PrepareFailed(Exception):
    """The worker's L{aimx.smtp.prepare.prepare} raised (its text says what)."""


def default_size(cpus: int | None) -> int:
    """Workers for a machine of C{cpus} cores: one core stays with the daemon, at most
    four workers; none on a single core."""
    return max(0, min(4, (cpus or 1) - 1))


class _Worker(protocol.ProcessProtocol):
    def __init__(self, pool: "PreparePool"):
        self.pool = pool
        #: seq -> (request, its Deferred, its deadline's call)
        self.pending: dict[int, tuple[tuple, defer.Deferred, object]] = {}
        self.reader = FrameReader()
        self.running = False
        self.broken = False
        self.ended = defer.Deferred()

    def connectionMade(self):
        self.running = True

    def send(self, seq: int, request: tuple, d: defer.Deferred, overdue) -> None:
        self.pending[seq] = (request, d, overdue)
        self.transport.write(frame((seq, *request)))

    def overdue(self, seq: int) -> None:
        """No answer for C{seq} in time: it fails, and the worker is stopped (its
        other messages are then prepared in the daemon)."""
        request, d, _ = self.pending.pop(seq)
        log.error("worker process did not answer in time, stopping it",
                  pid=self.transport.pid, size_bytes=len(request[0]))
        self._kill()
        d.errback(PrepareFailed("the worker process did not answer in time"))

    def outReceived(self, data: bytes):
        if self.broken:
            return
        try:
            for payload in self.reader.feed(data):
                seq, result, problem = load_answer(payload)
                request, d, overdue = self.pending.pop(seq)
                overdue.cancel()
                self.pool.answered()
                if problem is None:
                    d.callback(result)
                else:
                    d.errback(PrepareFailed(problem))
        except Exception as e:  # a worker speaking nonsense (FrameError, say) is ended
            self.broken = True
            log.error("worker process sent a bad answer, stopping it",
                      pid=self.transport.pid, error=e)
            self._kill()

    def _kill(self):
        try:
            self.transport.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass

    def processEnded(self, reason):
        self.running = False
        pending, self.pending = self.pending, {}
        for _, _, overdue in pending.values():
            overdue.cancel()
        self.pool.worker_ended(self, reason, [(r, d) for r, d, _ in pending.values()])
        self.ended.callback(None)


class PreparePool(service.Service):
    """C{size} worker processes, each working on up to C{threads} messages at once.

    @param reactor: spawns the processes and keeps the restart timers.
    @param environ: the workers' environment (their resolver reads
        C{AIMX_NAMESERVERS} from it, as the daemon's does).
    @param fallback: C{(raw, peer_ip, mail_from, helo, budget) -> Deferred} preparing
        in the daemon (L{aimx.smtp.inbound.Inbound}'s threads).
    @param argv: the worker's command line (tests give a stand-in).
    """

    def __init__(self, reactor, *, size: int, threads: int, environ, fallback,
                 in_process_above: int = IN_PROCESS_ABOVE, argv=None):
        self.reactor = reactor
        self.size = size
        self.threads = threads
        self.environ = dict(environ)
        self.fallback = fallback
        self.in_process_above = in_process_above
        self.argv = argv or [sys.executable, "-m", "aimx.smtp.prepworker", str(threads)]
        self.workers: list[_Worker] = []
        self.stopping = False
        self._seq = 0
        self._failures = 0
        self._restarts: list = []

    def startService(self):
        super().startService()
        self.stopping = False
        for _ in range(self.size):
            self._spawn()

    def _spawn(self):
        worker = _Worker(self)
        try:
            self.reactor.spawnProcess(worker, self.argv[0], self.argv, env=self.environ,
                                      childFDs={0: "w", 1: "r", 2: 2})
        except OSError as e:  # no fork (memory, process limits): the daemon prepares
            log.error("worker process not started", error=e)
            self._later()
            return
        self.workers.append(worker)
        log.info("worker process started", pid=worker.transport.pid)

    def prepare(self, raw: bytes, *, peer_ip, mail_from, helo, budget: float) -> defer.Deferred:
        """C{(parsed, auth, raw_sha256)} for one message, from a worker when one runs."""
        request = (raw, peer_ip, mail_from, helo, budget)
        ready = [w for w in self.workers if w.running and not w.broken]
        if self.stopping or not ready or len(raw) > self.in_process_above:
            return self.fallback(*request)
        worker = min(ready, key=lambda w: len(w.pending))
        self._seq += 1
        d = defer.Deferred()
        overdue = self.reactor.callLater(budget + OVERDUE_AFTER_BUDGET, worker.overdue, self._seq)
        worker.send(self._seq, request, d, overdue)
        return d

    def answered(self):
        self._failures = 0

    def worker_ended(self, worker: _Worker, reason, pending: list) -> None:
        """A worker exited: its requests are prepared in the daemon; it is started
        again unless the pool is stopping."""
        self.workers.remove(worker)
        for request, d in pending:
            self.fallback(*request).chainDeferred(d)
        if self.stopping:
            return
        log.warn("worker process exited, starting another", pid=worker.transport.pid,
                 status=reason.value, pending=len(pending),
                 restart_seconds=self._later())

    def _later(self) -> int:
        """Start a worker after the back-off; return its seconds."""
        delay = RESTART_DELAYS[min(self._failures, len(RESTART_DELAYS) - 1)]
        self._failures += 1
        self._restarts.append(self.reactor.callLater(delay, self._restart))
        return delay

    def _restart(self):
        self._restarts = [c for c in self._restarts if c.active()]
        if not self.stopping:
            self._spawn()

    def stopService(self):
        """Let the workers finish what they hold, then end them (input closed; killed
        after L{STOP_GRACE} seconds)."""
        super().stopService()
        self.stopping = True
        for call in self._restarts:
            if call.active():
                call.cancel()
        self._restarts = []
        ended = []
        for worker in list(self.workers):
            worker.transport.closeStdin()
            kill = self.reactor.callLater(STOP_GRACE, worker._kill)
            ended.append(worker.ended.addCallback(lambda _, k=kill: k.active() and k.cancel()))
        return defer.DeferredList(ended)
