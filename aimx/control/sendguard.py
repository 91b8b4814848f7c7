"""What the outbound policy needs from the daemon's memory and the audit log (L2).

L{SendGuard} keeps each mailbox's recent sends for the rolling windows of
L{aimx.core.outpolicy.decide}.  They start from the audit log's SEND and approval
records of the day before the daemon started (L{aimx.auditlog.AuditLog}: root's
files, which the mailbox owner can neither write nor delete), so a restart never
resets a limit; a SEND under a rate waits for that read.  From then on every send
the policy lets go is added at the moment of the decision (before anything
leaves, with no wait in between, so two SENDs at once cannot both take the last
place) and taken back when nothing left after all.  Which recipients a mailbox
already knows (C{approval = "new-recipients"}) is the audit log's answer too.
"""

from datetime import datetime, timedelta

from aimx.core import outpolicy
from aimx.errors import TempError


class SendGuard:
    """The daemon's side of the outbound policy's facts.

    @param audit: the audit log (L{aimx.auditlog.AuditLog}); C{None}: no sends
        before this start and no recipient is known.
    """

    def __init__(self, audit=None):
        self.audit = audit
        self._sent: dict[str, list[datetime]] = {}
        self._seeded = audit is None

    async def prepare(self, mailbox: str, now: datetime) -> None:
        """Wait until the sends from before this start are counted.

        @raise TempError: the audit log could not be read (a limit must not lapse
            unseen).
        """
        if self._seeded:
            return
        await self.audit.ready()
        if not self.audit.loaded:
            raise TempError(f"cannot count the recent sends of mailbox {mailbox}: the "
                            "audit log could not be read; see the daemon's log")
        if not self._seeded:
            self._seeded = True
            for name, times in self.audit.sent_before_start().items():
                self._sent[name] = sorted(times + self._sent.get(name, []))

    def recent(self, mailbox: str, now: datetime) -> list[datetime]:
        """The mailbox's sends of the last day (after L{prepare}; older ones dropped)."""
        cutoff = now - timedelta(seconds=outpolicy.DAY)
        kept = [t for t in self._sent.get(mailbox, ()) if t > cutoff]
        if mailbox in self._sent:
            self._sent[mailbox] = kept
        return kept

    def record(self, mailbox: str, when: datetime) -> None:
        """A send was let go at C{when}."""
        self._sent.setdefault(mailbox, []).append(when)

    def cancel(self, mailbox: str, when: datetime) -> None:
        """The send recorded at C{when} never left (refused before delivery)."""
        with_it = self._sent.get(mailbox)
        if with_it is not None and when in with_it:
            with_it.remove(when)

    def known(self, mailbox: str, recipients) -> set[str]:
        """Which C{recipients} (lower-cased) C{mailbox} has delivered to or had trusted
        mail from, by the audit log; nobody while it is still being read: the
        message is held, not sent."""
        if self.audit is None:
            return set()
        return self.audit.knows(mailbox, {r.lower() for r in recipients})
