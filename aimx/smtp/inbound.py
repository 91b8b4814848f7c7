"""The ingest chain (L2): verify, decide trust, store per recipient, announce.

C{prepare} and C{store_for_rcpt} are blocking and Twisted-free; the daemon runs
them in threads (C{Inbound}), C{aimx ingest} calls them directly.  The reply rules
are those of spec/inbound.md §5.1: all stored -> 250, some -> 451 4.3.0, none -> 451.
"""

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from aimx.auth.verify import AuthResults, verify_inbound
from aimx.core import frontmatter, trust
from aimx.core.address import Envelope
from aimx.core.config import Config, MailboxConfig, resolve_mailbox
from aimx.core.message import ParsedMessage, parse_message
from aimx.core.threadid import thread_id
from aimx.errors import NoMailboxError, SmtpStatus
from aimx.store.mailstore import MailStore, Stored

ACCEPTED = SmtpStatus(250, "2.0.0", "OK message accepted")
PARTIAL = SmtpStatus(451, "4.3.0", "Temporary failure on partial accept; please retry")
FAILED = SmtpStatus(451, "4.3.0", "Temporary failure, please retry")

log = Logger(namespace="aimx.ingest")


@attrs.frozen
class Prepared:
    """A message parsed and verified once, shared by all its recipients."""

    envelope: Envelope
    parsed: ParsedMessage
    auth: AuthResults


@attrs.frozen
class Ingested:
    """One stored message: what hooks and logs need to know about it."""

    rcpt: str
    mailbox: MailboxConfig
    stored: Stored
    policy: str
    trusted: str
    allowlisted: bool
    prepared: Prepared


def prepare(envelope: Envelope, resolver) -> Prepared:
    """Parse and verify a message (blocking: DNS, RSA).

    @raise aimx.errors.IngestError: the bytes are not a message at all.
    """
    parsed = parse_message(envelope.raw)
    auth = verify_inbound(
        envelope.raw,
        peer_ip=envelope.peer_ip,
        mail_from=envelope.mail_from,
        helo=envelope.helo,
        from_addresses=parsed.from_addresses,
        resolver=resolver,
    )
    return Prepared(envelope, parsed, auth)


def route(config: Config, rcpt: str) -> MailboxConfig:
    """The mailbox C{rcpt} routes to.

    @raise aimx.errors.NoMailboxError: nothing routes C{rcpt}.
    """
    mailbox = resolve_mailbox(config, rcpt)
    if mailbox is None:
        raise NoMailboxError(f"no mailbox routes recipient {rcpt}")
    return mailbox


def store_for_rcpt(
    config: Config, store: MailStore, prepared: Prepared, rcpt: str, mailbox: MailboxConfig
) -> Ingested:
    """Decide trust and store one recipient's copy in its routed mailbox (blocking: disk)."""
    parsed, auth, envelope = prepared.parsed, prepared.auth, prepared.envelope
    policy = config.effective_trust(mailbox)
    trusted, allowlisted = trust.evaluate(
        policy,
        config.effective_trusted_senders(mailbox),
        parsed.from_,
        auth.dkim_aligned,
    )
    peer_ip = envelope.peer_ip
    fields = frontmatter.inbound_fields(
        id="",
        parsed=parsed,
        thread_id=thread_id(
            parsed.raw_message_id, parsed.raw_in_reply_to, parsed.raw_references
        ),
        delivered_to=rcpt,
        date=parsed.date,
        received_at="",
        received_from_ip=None if peer_ip in (None, "0.0.0.0", "::") else peer_ip,
        size_bytes=len(envelope.raw),
        dkim=auth.dkim,
        spf=auth.spf,
        dmarc=auth.dmarc,
        trusted=trusted,
        mailbox=mailbox.name,
        attachments=(),
    )
    stored = store.store_inbound(
        mailbox.name,
        mailbox.owner,
        parsed.subject,
        parsed.message_id,
        fields,
        parsed.body,
        parsed.attachments,
    )
    return Ingested(rcpt, mailbox, stored, policy, trusted, allowlisted, prepared)


class _MailboxLock(defer.DeferredLock):
    """A L{defer.DeferredLock} that leaves its map when released with nobody waiting.

    Keeps the per-mailbox lock map bounded by the mailboxes in use, whatever
    names control commands mention.
    """

    def __init__(self, locks: dict, name: str):
        super().__init__()
        self._map = locks
        self._name = name

    def release(self) -> None:
        super().release()
        if not self.locked and not self.waiting and self._map.get(self._name) is self:
            del self._map[self._name]


class Inbound:
    """Delivers an L{Envelope} to every recipient's mailbox.

    @param config: returns the live configuration snapshot.
    @param run_in_thread: C{f, *args -> Deferred}; C{threads.deferToThread} in the
        daemon, C{defer.maybeDeferred} in unit tests.
    @param listeners: callables given each L{Ingested} after it is published
        (hooks attach here); they must not block and their errors are logged.
    """

    def __init__(self, *, config, store: MailStore, resolver, run_in_thread):
        self.config = config
        self.store = store
        self.resolver = resolver
        self.run_in_thread = run_in_thread
        self.listeners = []
        self._locks: dict[str, _MailboxLock] = {}

    def lock(self, mailbox: str) -> defer.DeferredLock:
        """The lock serialising writes to one mailbox.

        The entry lives only while the lock is held or awaited: acquire it right
        away (no yield in between), it drops itself from the map on its last release.
        """
        lock = self._locks.get(mailbox)
        if lock is None:
            lock = self._locks[mailbox] = _MailboxLock(self._locks, mailbox)
        return lock

    def deliver(self, envelope: Envelope) -> defer.Deferred:
        """Ingest a message for each recipient; fires with the SMTP reply."""
        return defer.Deferred.fromCoroutine(self._deliver(envelope))

    async def _deliver(self, envelope: Envelope) -> SmtpStatus:
        config = self.config()
        try:
            prepared = await self.run_in_thread(prepare, envelope, self.resolver)
        except Exception:
            log.failure(
                "Failed to parse email rcpts={rcpts} size_bytes={size}",
                rcpts=list(envelope.rcpts),
                size=len(envelope.raw),
            )
            return FAILED
        succeeded = 0
        for rcpt in envelope.rcpts:
            try:
                ingested = await self._store(config, prepared, rcpt)
            except Exception as e:
                log.error(
                    "[{peer}] Ingest failed for {rcpt}: {error}",
                    peer=envelope.peer_ip,
                    rcpt=rcpt,
                    error=e,
                )
                continue
            succeeded += 1
            self._announce(ingested)
        failed = len(envelope.rcpts) - succeeded
        auth = prepared.auth
        log.info(
            "data delivery outcome peer={peer} from={mail_from} rcpts={rcpts} "
            "succeeded={succeeded} failed={failed} size={size} "
            "auth result dkim={dkim} spf={spf} dmarc={dmarc}",
            dkim=auth.dkim,
            spf=auth.spf,
            dmarc=auth.dmarc,
            peer=envelope.peer_ip,
            mail_from=envelope.mail_from,
            rcpts=list(envelope.rcpts),
            succeeded=succeeded,
            failed=failed,
            size=len(envelope.raw),
        )
        if not failed:
            return ACCEPTED
        return PARTIAL if succeeded else FAILED

    async def _store(self, config, prepared, rcpt) -> Ingested:
        mailbox = route(config, rcpt)
        lock = self.lock(mailbox.name)
        await lock.acquire()
        try:
            return await self.run_in_thread(
                store_for_rcpt, config, self.store, prepared, rcpt, mailbox
            )
        finally:
            lock.release()

    def _announce(self, ingested: Ingested):
        """Log one line per stored copy (with its trust evaluation), then notify."""
        stored, mailbox = ingested.stored, ingested.mailbox
        for warning in stored.warnings:
            log.warn(
                "{problem} mailbox={mailbox}",
                problem=warning,
                mailbox=ingested.mailbox.name,
            )
        if stored.duplicate:
            log.info(
                "duplicate message_id, skipping rcpt={rcpt} mailbox={mailbox} "
                "message_id={message_id}",
                rcpt=ingested.rcpt,
                mailbox=ingested.mailbox.name,
                message_id=ingested.prepared.parsed.message_id,
            )
            return
        log.info(
            "stored email id={id} path={path} mailbox={mailbox} attachments={n} "
            "trust eval policy={policy} sender={sender} dkim={dkim} "
            "sender_allowlisted={allowlisted} result={trusted}",
            id=stored.id,
            path=stored.path,
            mailbox=mailbox.name,
            n=stored.attachments,
            policy=ingested.policy,
            sender=trust.bare_lower(ingested.prepared.parsed.from_),
            dkim=ingested.prepared.auth.dkim,
            allowlisted=str(ingested.allowlisted).lower(),
            trusted=ingested.trusted,
        )
        for listener in self.listeners:
            try:
                listener(ingested)
            except Exception:
                log.failure("ingest listener failed for {id}", id=stored.id)
