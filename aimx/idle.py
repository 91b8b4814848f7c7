"""Waiting for something to become idle (L2): the one "fire when the last one is
gone" list of Deferreds behind drains and C{idle()} calls, and L{Pending}, the
running work such a call waits for."""

from twisted.internet import defer


class IdleWaiters:
    """Deferreds waiting for an owner to have nothing open or running."""

    def __init__(self):
        self._waiting: list[defer.Deferred] = []

    def wait(self, idle: bool) -> defer.Deferred:
        """A Deferred that fires now when C{idle}, else at the next L{idle}."""
        if idle:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._waiting.append(waiter)
        return waiter

    def idle(self) -> None:
        """The owner is idle: fire every waiter."""
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(None)


class Pending:
    """The Deferreds an owner has running, and who waits for none to be left."""

    def __init__(self):
        self._running: set[defer.Deferred] = set()
        self._waiters = IdleWaiters()

    def __bool__(self) -> bool:
        return bool(self._running)

    def track(self, work: defer.Deferred) -> defer.Deferred:
        """Count C{work} as running until it fires; its result passes through."""
        self._running.add(work)
        work.addBoth(self._done, work)
        return work

    def idle(self) -> defer.Deferred:
        """Fires now when nothing runs, else when the last running work fires."""
        return self._waiters.wait(not self._running)

    def _done(self, result, work: defer.Deferred):
        self._running.discard(work)
        if not self._running:
            self._waiters.idle()
        return result
