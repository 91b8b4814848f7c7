"""Waiting for something to become idle (L2): the one "fire when the last one is
gone" list of Deferreds behind drains and C{idle()} calls."""

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
