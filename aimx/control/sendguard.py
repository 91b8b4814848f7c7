"""What the outbound policy needs from the daemon's memory and the index (L2).

L{SendGuard} keeps each mailbox's recent sends for the rolling windows of
L{aimx.core.outpolicy.decide}.  A mailbox's list starts, the first time a
policy with a rate asks for it, from its sent copies of the last day (the time
the daemon stored each, which starts its id; through the index), so a restart never resets a limit; from then on
every send the policy lets go is added at the moment of the decision (before
anything leaves, with no wait in between, so two SENDs at once cannot both take
the last place) and taken back when nothing left after all.  It also asks the
index which recipients a mailbox already knows (C{approval = "new-recipients"}).
"""

from datetime import datetime, timedelta

from twisted.internet import defer

from aimx.core import filenames, outpolicy
from aimx.errors import TempError
from aimx.logs import Logger

log = Logger(namespace="aimx.send")

#: The most sent copies read to start a mailbox's window (a day's worth).
SEED_MAX = 100_000


class SendGuard:
    """The daemon's side of the outbound policy's facts.

    @param index: the mail indexes (L{aimx.indexer.Indexer}); C{None}: no sent
        copies to start from and no recipient is known.
    """

    def __init__(self, index=None):
        self.index = index
        self._sent: dict[str, list[datetime]] = {}
        self._locks: dict[str, defer.DeferredLock] = {}

    async def prepare(self, mailbox: str, now: datetime) -> None:
        """Start C{mailbox}'s window from its sent copies unless it already has one.

        @raise TempError: the index cannot say (a limit must not lapse unseen).
        """
        if mailbox in self._sent:
            return
        async with self._locks.setdefault(mailbox, defer.DeferredLock()):
            if mailbox not in self._sent:
                self._sent[mailbox] = await self._seed(mailbox, now)

    async def _seed(self, mailbox: str, now: datetime) -> list[datetime]:
        if self.index is None:
            return []
        since = filenames.stem_time_prefix(now - timedelta(seconds=outpolicy.DAY))
        try:
            found = await self.index.query(
                mailbox, lambda index: index.sent_stems(since, SEED_MAX))
        except Exception as e:
            log.warn("recent sends not counted", mailbox=mailbox, error=e)
            raise TempError(
                f"cannot count the recent sends of mailbox {mailbox}: {e}; retry later"
            ) from None
        return [t for t in map(filenames.stem_time, found) if t is not None]

    def recent(self, mailbox: str, now: datetime) -> list[datetime]:
        """The mailbox's sends of the last day (after L{prepare}; older ones dropped)."""
        cutoff = now - timedelta(seconds=outpolicy.DAY)
        kept = [t for t in self._sent.get(mailbox, ()) if t > cutoff]
        if mailbox in self._sent:
            self._sent[mailbox] = kept
        return kept

    def record(self, mailbox: str, when: datetime) -> None:
        """A send was let go at C{when} (a mailbox without a window yet starts one
        from its sent copies later, which will hold this one)."""
        if mailbox in self._sent:
            self._sent[mailbox].append(when)

    def cancel(self, mailbox: str, when: datetime) -> None:
        """The send recorded at C{when} never left (refused before delivery)."""
        with_it = self._sent.get(mailbox)
        if with_it is not None and when in with_it:
            with_it.remove(when)

    async def known(self, mailbox: str, recipients) -> set[str]:
        """Which C{recipients} (lower-cased) C{mailbox} has sent to or had trusted mail from.

        An index that cannot answer knows nobody: the message is held, not sent.
        """
        wanted = {r.lower() for r in recipients}
        if self.index is None:
            return set()
        try:
            return await self.index.query(mailbox, lambda index: index.known(wanted))
        except Exception as e:
            log.warn("known recipients not read, every recipient counts as new",
                     mailbox=mailbox, error=e)
            return set()

