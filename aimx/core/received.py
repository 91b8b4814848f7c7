"""The inbound record (L0, frozen values): a received message and each copy stored.

The ingest chain (L{aimx.smtp.inbound}) builds them; hooks, logs and C{aimx ingest}
read them.  Nothing here does I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:  # types only: the mail store imports L{Stored} without the parsers
    from aimx.core.address import Envelope
    from aimx.core.authresults import AuthResults
    from aimx.core.config import MailboxConfig
    from aimx.core.message import ParsedMessage
    from aimx.core.trust import Verdict


@attrs.frozen
class Prepared:
    """A message parsed and authenticated once, shared by all its recipients.

    @ivar raw_sha256: hex SHA-256 of the message as received (the audit's).
    """

    envelope: Envelope
    parsed: ParsedMessage
    auth: AuthResults
    raw_sha256: str = ""


@attrs.frozen
class Stored:
    """The outcome of storing one message for one mailbox.

    @ivar id: the file stem, or C{None} when the message was a duplicate.
    @ivar path: the published C{.md}, or C{None} for a duplicate.
    @ivar attachments: how many attachments were written.
    @ivar warnings: non-fatal problems (ownership could not be set, ...).
    @ivar received_at: the frontmatter C{received_at} (also its C{date} when the
        message has none).
    @ivar written: a flat file's L{Written} (the index takes its row from it), or
        C{None}.
    """

    id: str | None
    path: str | None
    attachments: int = 0
    warnings: tuple[str, ...] = ()
    received_at: str = ""
    written: Written | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def duplicate(self) -> bool:
        return self.id is None


@attrs.frozen
class Written:
    """A message file as the store wrote it: what the index would read back from it.

    @ivar stat: the file's stat once published (the index trusts the rest while the
        file still has this signature).
    @ivar fields: the frontmatter values rendered (C{None} for a key left out).
    @ivar body: the body bytes after the frontmatter's blank line.
    """

    stat: object
    fields: dict
    body: bytes


@attrs.frozen
class Ingested:
    """One copy of a message handled for one recipient.

    @ivar rcpt: the envelope recipient as given.
    @ivar mailbox: the mailbox it was routed to, as the live config had it when stored.
    @ivar policy: that mailbox's effective trust policy.
    @ivar verdict: the trust verdict for that mailbox.
    @ivar parsed: the message as stored for it: a trusted copy without the fields
        its signature does not cover (L{Verdict.unsigned}).
    @ivar risk_reasons: why the copy was stored C{risk = "review"}
        (L{aimx.core.risk}); empty when it was not.
    """

    rcpt: str
    mailbox: MailboxConfig
    stored: Stored
    policy: str
    verdict: Verdict
    prepared: Prepared
    parsed: ParsedMessage
    risk_reasons: tuple[str, ...] = ()

    @property
    def trusted(self) -> str:
        return self.verdict.trusted
