"""IdleWaiters, the one "fire when idle" list, and Pending, the work it waits for
(aimx/idle.py)."""

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from aimx.idle import IdleWaiters, Pending


class IdleWaitersTests(SynchronousTestCase):
    def test_idle_now(self):
        """Waiting on an idle owner fires at once."""
        self.assertIsNone(self.successResultOf(IdleWaiters().wait(True)))

    def test_fires_every_waiter_once(self):
        """Every waiter fires at the next idle, and only then; later waits start afresh."""
        waiters = IdleWaiters()
        first, second = waiters.wait(False), waiters.wait(False)
        self.assertNoResult(first)
        waiters.idle()
        self.successResultOf(first)
        self.successResultOf(second)
        third = waiters.wait(False)
        self.assertNoResult(third)
        waiters.idle()
        self.successResultOf(third)


class PendingTests(SynchronousTestCase):
    def test_idle_when_nothing_runs(self):
        """Nothing tracked: idle at once, and falsy."""
        pending = Pending()
        self.assertFalse(pending)
        self.successResultOf(pending.idle())

    def test_idle_after_the_last(self):
        """idle() waits for every tracked Deferred, successes and failures alike, and
        each one's result passes through untouched."""
        pending = Pending()
        first, second = defer.Deferred(), defer.Deferred()
        self.assertIs(pending.track(first), first)
        pending.track(second)
        waiting = pending.idle()
        first.callback("kept")
        self.assertTrue(pending)
        self.assertNoResult(waiting)
        second.errback(RuntimeError("boom"))
        self.successResultOf(waiting)
        self.assertFalse(pending)
        self.assertEqual(self.successResultOf(first), "kept")
        self.failureResultOf(second, RuntimeError)
