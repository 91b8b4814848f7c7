"""IdleWaiters: the one "fire when idle" list (aimx/idle.py)."""

from twisted.trial.unittest import SynchronousTestCase

from aimx.idle import IdleWaiters


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
