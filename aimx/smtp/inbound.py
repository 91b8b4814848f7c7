"""The ingest chain (L2): parse, authenticate, decide, store per recipient, announce.

One chain for the SMTP server and C{aimx ingest}.  Parsing and storage run through
C{run_in_thread}; DNS and authentication through C{run_dns}, a separate bounded pool,
so slow name servers never hold up storage or control commands (docs/design.md, "Bound
everything an outsider controls").  The reply rules (docs/troubleshooting.md, "Mail
does not arrive"): all stored -> 250, some -> 451 4.3.0, none -> 451, plus
C{451 4.4.3} with nothing stored when a temporary DNS failure hit a lookup that decides
trust for an allow-listed author.  Listeners (hooks) hear of the stored copies once the
reply is decided.  A copy for the approval address that is an approval reply
(L{aimx.core.approvalmail.claims}) is stored nowhere: it goes to C{approval_replies}.
"""

import attrs
from twisted.internet import defer

from aimx.auth.verify import BUDGET
from aimx.core import approvalmail, frontmatter, guards, identity, risk, trust
from aimx.core.address import Envelope
from aimx.core.config import Config, MailboxConfig, ascii_lower, resolve_mailbox
from aimx.core.received import Ingested, Prepared
from aimx.errors import NoMailboxError, SmtpStatus
from aimx.logs import Logger
from aimx.smtp import prepare
from aimx.store.mailstore import MailStore

ACCEPTED = SmtpStatus(250, "2.0.0", "OK message accepted")
PARTIAL = SmtpStatus(451, "4.3.0", "Temporary failure on partial accept; please retry")
FAILED = SmtpStatus(451, "4.3.0", "Temporary failure, please retry")
AUTH_TEMPFAIL = SmtpStatus(451, "4.4.3", "Temporary DNS failure verifying the sender; "
                                         "please retry")

#: Times a recipient is routed again when its mailbox changed while waiting for the lock.
_REROUTES = 3

log = Logger(namespace="aimx.inbound")
trust_log = Logger(namespace="aimx.trust")


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
    """Decide trust and risk and store one recipient's copy in its routed mailbox
    (blocking: disk, and the mailbox's content guards run here, in the worker thread).

    @param config: the live configuration, read under the mailbox lock.
    @param mailbox: C{rcpt}'s mailbox in that configuration (its owner is used).
    """
    parsed, auth, envelope = prepared.parsed, prepared.auth, prepared.envelope
    policy = config.effective_trust(mailbox)
    verdict = trust.evaluate(
        policy, config.effective_trusted_senders(mailbox), parsed.identity, auth
    )
    if verdict.unsigned:
        parsed = attrs.evolve(parsed, identity=parsed.identity.without(verdict.unsigned))
    hits = guards.evaluate(mailbox.effective_guards, {
        "subject": parsed.subject, "body": parsed.body, "from": parsed.from_})
    reasons = risk.reasons(hits=hits, hidden_chars=parsed.hidden_chars,
                           identity=parsed.identity, trusted=verdict.trusted)
    peer_ip = envelope.peer_ip
    fields = frontmatter.inbound_fields(
        id="",
        parsed=parsed,
        delivered_to=rcpt,
        date=parsed.date,
        received_at="",
        received_from_ip=None if peer_ip in (None, "0.0.0.0", "::") else peer_ip,
        size_bytes=len(envelope.raw),
        dkim=auth.dkim,
        spf=auth.spf,
        dmarc=auth.dmarc,
        trusted=verdict.trusted,
        trust_reason=verdict.reason if verdict.trusted == "false" else None,
        unsigned_headers=[identity.display_name(n) for n in verdict.unsigned],
        risk_reasons=reasons,
        mailbox=mailbox.name,
        attachments=(),
    )
    stored = store.store_inbound(
        mailbox.name, mailbox.owner, parsed.subject, fields, parsed.body, parsed.attachments
    )
    return Ingested(rcpt, mailbox, stored, policy, verdict, prepared, parsed, reasons)


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
    @param run_in_thread: C{f, *args -> Deferred} for parsing and storage;
        C{threads.deferToThread} in the daemon, C{defer.maybeDeferred} in unit tests.
    @param run_dns: likewise for authentication (DNS); the daemon gives it a pool
        of its own.  Defaults to C{run_in_thread}.
    @param budget: seconds one message's authentication may take.
    @param prepare: C{(raw, peer_ip, mail_from, helo, budget) -> Deferred} firing with
        C{(parsed, auth, raw_sha256)}: the worker processes
        (L{aimx.smtp.preppool.PreparePool.prepare}); by default L{prepare_here}.
    @ivar listeners: callables given each stored L{Ingested} once the reply is
        decided (hooks attach here); they must not block and their errors are logged.
    @ivar approval_replies: C{Prepared -> None}, given a message once its reply is
        decided when some recipient's copy is an approval reply (those copies are
        not stored); must not block.  C{None}: every copy goes to its mailbox.
    """

    def __init__(self, *, config, store: MailStore, resolver, run_in_thread, run_dns=None,
                 budget: float = BUDGET, prepare=None):
        self.config = config
        self.store = store
        self.resolver = resolver
        self.run_in_thread = run_in_thread
        self.run_dns = run_dns or run_in_thread
        self.budget = budget
        self.prepare = prepare or self.prepare_here
        self.listeners = []
        self.approval_replies = None
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
        d = defer.Deferred.fromCoroutine(self._deliver(envelope))
        return d.addCallback(lambda outcome: outcome[0])

    def deliver_each(self, envelope: Envelope) -> defer.Deferred:
        """Ingest as L{deliver} does; fires with each recipient's own reply.

        For SEND's local recipients (docs/concepts.md, "Sending"), which
        need to know who was stored when only some were: C{250} for a stored copy (or
        a duplicate of one), C{451 4.3.0} where storing failed, and the whole
        message's reply to everyone when it was not stored at all.

        @return: a Deferred firing with C{[(rcpt, SmtpStatus), ...]} in envelope order.
        """
        d = defer.Deferred.fromCoroutine(self._deliver(envelope))
        return d.addCallback(lambda outcome: outcome[1])

    def prepare_here(self, raw: bytes, peer_ip, mail_from, helo, budget: float):
        """L{prepare.prepare} in the daemon: parsing in the thread pool,
        authentication in the DNS pool."""
        return defer.Deferred.fromCoroutine(self._prepare_here(raw, peer_ip, mail_from, helo,
                                                                budget))

    async def _prepare_here(self, raw, peer_ip, mail_from, helo, budget):
        parsed, digest = await self.run_in_thread(prepare.parse, raw)
        auth = await self.run_dns(
            lambda: prepare.authenticate(raw, parsed, peer_ip=peer_ip, mail_from=mail_from,
                                         helo=helo, resolver=self.resolver, budget=budget))
        return parsed, auth, digest

    async def _prepare(self, envelope: Envelope) -> Prepared:
        parsed, auth, digest = await self.prepare(
            envelope.raw, peer_ip=envelope.peer_ip, mail_from=envelope.mail_from,
            helo=envelope.helo, budget=self.budget)
        return Prepared(envelope, parsed, auth, digest)

    async def _deliver(self, envelope: Envelope) -> tuple[SmtpStatus, list]:
        """The message's reply and each recipient's, in envelope order."""
        try:
            prepared = await self._prepare(envelope)
        except Exception:
            log.failure("message not parsed or authenticated", peer=envelope.peer_ip,
                        rcpts=envelope.rcpts, size_bytes=len(envelope.raw))
            return FAILED, [(rcpt, FAILED) for rcpt in envelope.rcpts]
        parsed, auth = prepared.parsed, prepared.auth
        log.info(
            "received email", peer=envelope.peer_ip, rcpts=envelope.rcpts,
            size_bytes=len(envelope.raw), sender=parsed.from_, message_id=parsed.message_id,
            dkim=auth.dkim, spf=auth.spf, dmarc=auth.dmarc,
        )
        for problem in parsed.problems:
            log.warn("message content kept as received", problem=problem,
                     rcpts=envelope.rcpts, message_id=parsed.message_id)
        if parsed.hidden_chars:
            log.info("hidden text removed from the body", hidden_chars=parsed.hidden_chars,
                     rcpts=envelope.rcpts, message_id=parsed.message_id)
        config = self.config()
        routed = [resolve_mailbox(config, rcpt) for rcpt in envelope.rcpts]
        claimed = {ascii_lower(rcpt) for rcpt in envelope.rcpts
                   if self.approval_replies is not None
                   and approvalmail.claims(config, rcpt, parsed)}
        if trust.must_retry(auth, parsed.identity, [
            (config.effective_trust(mb), config.effective_trusted_senders(mb))
            for mb in routed if mb is not None
        ] + ([approvalmail.retry_policy(config)] if claimed else [])):
            log.warn(
                "temporary DNS failure authenticating an allow-listed sender, answering 451",
                peer=envelope.peer_ip, sender=parsed.from_, message_id=parsed.message_id,
                reply="451 4.4.3",
            )
            return AUTH_TEMPFAIL, [(rcpt, AUTH_TEMPFAIL) for rcpt in envelope.rcpts]
        stored: list[Ingested] = []
        failed = 0
        replies: dict[str, SmtpStatus] = {}
        for rcpt in envelope.rcpts:
            if ascii_lower(rcpt) in replies:
                continue  # the same recipient twice is one delivery
            replies[ascii_lower(rcpt)] = ACCEPTED
            if ascii_lower(rcpt) in claimed:
                continue
            try:
                stored.append(await self._store(prepared, rcpt))
            except Exception as e:
                replies[ascii_lower(rcpt)] = FAILED
                failed += 1
                log.error("not stored", peer=envelope.peer_ip, rcpt=rcpt,
                          message_id=parsed.message_id, error=e)
        log.info(
            "data delivery outcome",
            peer=envelope.peer_ip,
            mail_from=envelope.mail_from,
            rcpts=envelope.rcpts,
            succeeded=len(stored),
            failed=failed,
            size_bytes=len(envelope.raw),
        )
        status = ACCEPTED if not failed else PARTIAL if stored else FAILED
        if claimed:
            try:
                self.approval_replies(prepared)
            except Exception:
                log.failure("approval reply hand-over failed")
        for ingested in stored:
            self._announce(ingested)
        return status, [(rcpt, replies[ascii_lower(rcpt)]) for rcpt in envelope.rcpts]

    async def _store(self, prepared: Prepared, rcpt: str) -> Ingested:
        """Store under the mailbox lock, routed and owned as the I{live} config says
        right before writing (a mailbox may be deleted or re-created meanwhile)."""
        mailbox = route(self.config(), rcpt)
        for _ in range(_REROUTES):
            lock = self.lock(mailbox.name)
            await lock.acquire()
            try:
                config = self.config()
                current = route(config, rcpt)
                if current.name == mailbox.name:
                    return await self.run_in_thread(
                        store_for_rcpt, config, self.store, prepared, rcpt, current
                    )
            finally:
                lock.release()
            mailbox = current
        raise NoMailboxError(f"routing of {rcpt} kept changing; not stored")

    def _announce(self, ingested: Ingested):
        """Log one line per stored copy (with its trust evaluation), then notify."""
        stored, mailbox, verdict = ingested.stored, ingested.mailbox, ingested.verdict
        for warning in stored.warnings:
            log.warn("storage warning", problem=warning, mailbox=mailbox.name)
        if stored.duplicate:
            log.info(
                "duplicate message skipped",
                rcpt=ingested.rcpt,
                mailbox=mailbox.name,
                message_id=ingested.prepared.parsed.message_id,
            )
            return
        why = {} if verdict.reason is None else {"reason": verdict.reason}
        # A message that failed its mailbox's trust check is worth a notice.
        (trust_log.notice if verdict.trusted == "false" else trust_log.info)(
            "trust eval",
            mailbox=mailbox.name,
            policy=ingested.policy,
            sender=verdict.sender,
            dkim=ingested.prepared.auth.dkim,
            sender_allowlisted=verdict.allowlisted,
            result=verdict.trusted,
            **why,
        )
        log.info(
            "stored email",
            id=stored.id,
            path=stored.path,
            mailbox=mailbox.name,
            attachments=stored.attachments,
        )
        if ingested.risk_reasons:
            # A guard's match or another sign of mail built to steer an agent
            # (docs/guardrails.md, "Risk"): worth a notice, as a failed trust check.
            log.notice("stored for review", id=stored.id, mailbox=mailbox.name,
                       risk_reasons=ingested.risk_reasons)
        for listener in self.listeners:
            try:
                listener(ingested)
            except Exception:
                log.failure("ingest listener failed", id=stored.id, mailbox=mailbox.name)
