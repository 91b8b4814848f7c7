"""The worker pool's rules on a clock and fake processes (aimx.smtp.preppool): which
worker gets a message, what an answer, a silence, an exit and a stop do.  The real
processes are tests/integration/test_workers.py's."""

import pickle

from twisted.internet import defer, error, task
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from aimx.smtp import prepare, preppool


class FakeTransport:
    def __init__(self, pid: int):
        self.pid = pid
        self.frames: list = []
        self.reader = prepare.FrameReader()
        self.signals: list[str] = []
        self.stdin_closed = False

    def write(self, data: bytes) -> None:
        self.frames += [pickle.loads(p) for p in self.reader.feed(data)]

    def closeStdin(self) -> None:
        self.stdin_closed = True

    def signalProcess(self, signal: str) -> None:
        self.signals.append(signal)


class FakeReactor(task.Clock):
    """A clock whose spawnProcess connects the protocol to a L{FakeTransport}."""

    def __init__(self):
        super().__init__()
        self.spawned = []

    def spawnProcess(self, proto, executable, args, env=None, childFDs=None):
        proto.makeConnection(FakeTransport(1000 + len(self.spawned)))
        self.spawned.append(proto)
        return proto.transport


class NoForkReactor(FakeReactor):
    def spawnProcess(self, *args, **kw):
        raise OSError(11, "Resource temporarily unavailable")


class PoolTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = FakeReactor()
        self.prepared_here = []
        self.pool = preppool.PreparePool(self.reactor, size=2, threads=4, environ={},
                                         fallback=self.fallback)
        self.pool.startService()

    def fallback(self, *request):
        self.prepared_here.append(request)
        return defer.succeed(("here", request[0]))

    def prepare(self, raw=b"m", budget=1.0) -> defer.Deferred:
        return self.pool.prepare(raw, peer_ip="192.0.2.1", mail_from="a@x", helo="h",
                                 budget=budget)

    def answer(self, worker, seq, result=("parsed", "auth", "sha"), problem=None):
        worker.outReceived(prepare.frame((seq, result, problem)))

    def end(self, worker):
        worker.processEnded(Failure(error.ProcessTerminated(1)))

    def test_least_busy_worker(self):
        """A message goes to the worker with the fewest in hand."""
        first, second = self.reactor.spawned
        self.prepare(b"a"), self.prepare(b"b"), self.prepare(b"c")
        self.assertEqual([[f[1] for f in w.transport.frames] for w in (first, second)],
                         [[b"a", b"c"], [b"b"]])

    def test_answer(self):
        """An answer fires its message's Deferred and cancels its deadline; an error
        answer fails it."""
        d, e = self.prepare(), self.prepare()
        first, second = self.reactor.spawned
        self.answer(first, 1)
        self.answer(second, 2, None, "ValueError: bad")
        self.assertEqual(self.successResultOf(d), ("parsed", "auth", "sha"))
        self.assertEqual(str(self.failureResultOf(e, preppool.PrepareFailed).value),
                         "ValueError: bad")
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_overdue(self):
        """A message unanswered past its budget and the grace fails, and the worker is
        killed; what else it held is prepared in the daemon, and another is started."""
        stuck = self.prepare(b"stuck", budget=2.0)
        self.prepare(b"other", budget=100.0)  # the second worker's, not yet due
        waiting = self.prepare(b"third", budget=5.0)  # the first worker's second one
        worker = self.reactor.spawned[0]
        self.reactor.advance(2.0 + preppool.OVERDUE_AFTER_BUDGET - 0.001)
        self.assertNoResult(stuck)
        self.reactor.advance(0.001)
        self.failureResultOf(stuck, preppool.PrepareFailed)
        self.assertEqual(worker.transport.signals, ["KILL"])
        self.assertNoResult(waiting)  # its own deadline is not yet due: it is killed first
        self.end(worker)
        self.assertEqual(self.successResultOf(waiting), ("here", b"third"))
        self.assertEqual([r[0] for r in self.prepared_here], [b"third"])
        self.reactor.advance(preppool.RESTART_DELAYS[0])
        self.assertEqual(len(self.reactor.spawned), 3)
        # only the second worker's message still has a deadline
        self.assertEqual([c.getTime() for c in self.reactor.getDelayedCalls()],
                         [100.0 + preppool.OVERDUE_AFTER_BUDGET])

    def test_restart_back_off(self):
        """Exits in a row are restarted after 1, 2, 4... s; an answer resets that."""
        delays = []
        for _ in range(3):
            worker = self.pool.workers[0]
            self.end(worker)
            [call] = self.reactor.getDelayedCalls()
            delays.append(call.getTime() - self.reactor.seconds())
            self.reactor.advance(delays[-1])
        self.assertEqual(delays, list(preppool.RESTART_DELAYS[:3]))
        d = self.prepare()
        worker = next(w for w in self.pool.workers if w.pending)
        self.answer(worker, 1)
        self.successResultOf(d)
        self.end(self.pool.workers[0])
        [call] = self.reactor.getDelayedCalls()
        self.assertEqual(call.getTime() - self.reactor.seconds(), preppool.RESTART_DELAYS[0])

    def test_big_or_none_running(self):
        """Over the size limit, or with no worker running, the daemon prepares."""
        self.prepare(b"x" * (preppool.IN_PROCESS_ABOVE + 1))
        for worker in list(self.pool.workers):
            self.end(worker)
        self.prepare(b"small")
        self.assertEqual([len(r[0]) for r in self.prepared_here],
                         [preppool.IN_PROCESS_ABOVE + 1, 5])

    def test_stop(self):
        """Stopping closes the workers' input and waits for them; one that does not
        exit within the grace is killed; nothing is started again."""
        first, second = self.reactor.spawned
        stopped = self.pool.stopService()
        self.assertEqual((first.transport.stdin_closed, second.transport.stdin_closed),
                         (True, True))
        self.end(first)
        self.assertNoResult(stopped)
        self.reactor.advance(preppool.STOP_GRACE)
        self.assertEqual((first.transport.signals, second.transport.signals), ([], ["KILL"]))
        self.end(second)
        self.successResultOf(stopped)
        self.assertEqual((self.reactor.getDelayedCalls(), len(self.reactor.spawned)), ([], 2))
        self.prepare(b"late")
        self.assertEqual(self.prepared_here[-1][0], b"late")

    def test_no_fork(self):
        """A worker that cannot be started leaves the daemon preparing, logs why and is
        tried again after the back-off; the service starts all the same."""
        reactor = NoForkReactor()
        pool = preppool.PreparePool(reactor, size=1, threads=4, environ={},
                                    fallback=self.fallback)
        pool.startService()
        self.assertEqual(self.successResultOf(pool.prepare(
            b"m", peer_ip=None, mail_from=None, helo=None, budget=1.0)), ("here", b"m"))
        [call] = reactor.getDelayedCalls()
        self.assertEqual(call.getTime(), preppool.RESTART_DELAYS[0])
        reactor.advance(preppool.RESTART_DELAYS[0])
        [call] = reactor.getDelayedCalls()
        self.assertEqual(call.getTime() - reactor.seconds(), preppool.RESTART_DELAYS[1])
        self.successResultOf(pool.stopService())
        self.assertEqual(reactor.getDelayedCalls(), [])
