"""The send path (L2): a checked submission -> MIME -> DKIM -> delivery -> sent copy -> hooks.

No queue and no retry (docs/concepts.md, "Sending"): the caller learns the result
of every recipient at once.  Recipients of our own domain are delivered locally,
through the daemon's inbound chain;
the others through the MX transport.  A send whose recipients were all deferred
leaves no sent copy (the caller retries); any other outcome is recorded under
C{sent/<mailbox>/}.  The after_send hooks run before the answer goes back.
"""

import datetime
import functools
import time
import uuid

import attrs
from twisted.internet import defer

from aimx.auth import dkim
from aimx.core import delivery, frontmatter
from aimx.core.address import Envelope, rcpt_verdict
from aimx.core.assemble import Assembled, Draft, assemble_draft
from aimx.core.config import Config
from aimx.core.delivery import DELIVERED, DEFERRED, FAILED, RcptResult
from aimx.core.message import parse_message
from aimx.core.submission import Submission
from aimx.errors import DeliveryError, SignError, SmtpStatus, TempError
from aimx.logs import Logger
from aimx.store import maildrop

log = Logger(namespace="aimx.send")

#: A local recipient the inbound chain could not take for an unexpected reason.
LOCAL_FAILED = SmtpStatus(451, "4.3.0", "Temporary failure, please retry")

#: Signed, and over-signed when absent, so nobody can add them later.
SIGNED_HEADERS = (
    "From", "Reply-To", "To", "Cc", "Subject", "Date", "Message-ID", "In-Reply-To",
    "References", "MIME-Version", "Content-Type",
)  # fmt: skip


@attrs.frozen
class Signer:
    """The DKIM key and selector, loaded once at start-up."""

    private_key_pem: bytes = attrs.field(repr=False)
    selector: str

    def sign(self, wire: bytes, domain: str) -> bytes:
        """C{wire} with its C{DKIM-Signature:} header prepended.

        @raise SignError: the signer's message.
        """
        try:
            header = dkim.sign(
                wire, private_key_pem=self.private_key_pem, selector=self.selector,
                domain=domain, headers=SIGNED_HEADERS,
            )
        except ValueError as e:
            raise SignError(str(e)) from None
        return header + wire


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class Outbox:
    """Sends checked submissions.

    @param store: writes the sent copies (L{aimx.store.mailstore.MailStore}).
    @param transport: C{plan(recipients)} and C{deliver(mail_from, plan, message)}
        (L{aimx.smtp.outbound.MxTransport}); unused with C{drop_dir}.
    @param local: delivers mail for our own domain: C{Envelope -> Deferred} firing
        with C{[(rcpt, SmtpStatus), ...]} (the daemon's
        L{aimx.smtp.inbound.Inbound.deliver_each}); without it those recipients go
        to the transport too.  Unused with C{drop_dir}.
    @param hooks: fires after_send (L{aimx.hooks.HookRunner}).
    @param drop_dir: C{AIMX_TEST_MAIL_DROP}: write messages there instead.
    """

    def __init__(self, *, store, transport, hooks, run_in_thread, signer: Signer,
                 local=None, drop_dir: str | None = None, now=_utcnow):
        self.store = store
        self.transport = transport
        self.local = local
        self.hooks = hooks
        self.run_in_thread = run_in_thread
        self.signer = signer
        self.drop_dir = drop_dir
        self.now = now

    async def send(self, config: Config, sub: Submission, draft: Draft) -> dict:
        """Everything after the submission checks and the outbound policy: the SEND answer.

        @param sub: a submission whose sender, caller and recipients are checked
            (and whose outbound policy let it go).
        @param draft: what to assemble (L{aimx.core.assemble.read_draft}).
        @return: C{message_id} and the C{deliveries}.
        @raise BodyTooLarge, SignError: nothing was sent.
        @raise DeliveryError, TempError: nobody got it (failed / all deferred).
        """
        message_id = sub.header("message-id") or ""
        synthesized = None
        if not message_id:
            message_id = synthesized = f"<{uuid.uuid4()}@{config.domain}>"
        assembled = await self.run_in_thread(functools.partial(
            assemble_draft, draft, signature=config.effective_signature,
            message_id=synthesized, from_=sub.author.wire(),
        ))
        signed = await self.run_in_thread(self.signer.sign, assembled.wire, config.domain)
        started = time.monotonic()
        results = await self._deliver(config, sub.sender, list(sub.recipients), signed,
                                      message_id)
        status = delivery.overall(results)
        log.info(
            "sent",
            message_id=message_id, mailbox=sub.mailbox.name, status=status,
            rcpts=len(results), duration_ms=int((time.monotonic() - started) * 1000),
        )
        if status == DEFERRED:
            path = await self._prepare_sent(sub)
        else:
            path = await self._record(config, sub, assembled, signed, status, results)
        await self.hooks.after_send(
            sub.mailbox, status, from_=sub.author.formatted(), to=", ".join(sub.to),
            subject=sub.header("subject") or "", message_id=message_id, filepath=path,
        )
        reason = delivery.summary(results)
        if status == DEFERRED:
            raise TempError(reason)
        if status == FAILED:
            raise DeliveryError(reason)
        return {"message_id": message_id, "deliveries": [attrs.asdict(r) for r in results]}

    async def send_notice(self, config: Config, draft: Draft, *, sender: str,
                          rcpts: list[str], message_id: str) -> list[RcptResult]:
        """A message of the daemon's own (an approval notification): assembled, signed
        and delivered as a send is, with no sent copy and no hooks (it is no mailbox's).

        @param draft: its headers (From, Message-ID included) and plain text.
        @param sender: the envelope sender.
        @return: one result per recipient, in their order.
        @raise BodyTooLarge, SignError: nothing was sent.
        """
        assembled = await self.run_in_thread(functools.partial(
            assemble_draft, draft, signature=""))
        signed = await self.run_in_thread(self.signer.sign, assembled.wire, config.domain)
        return await self._deliver(config, sender, rcpts, signed, message_id)

    async def _deliver(self, config: Config, sender: str, rcpts: list[str], signed: bytes,
                       message_id: str) -> list[RcptResult]:
        """One result per recipient, in the order given."""
        if self.drop_dir is not None:
            # The mail drop stands in for every delivery, local ones included.
            try:
                path = await self.run_in_thread(functools.partial(
                    maildrop.drop, self.drop_dir, signed, mail_from=sender,
                    rcpt_to=rcpts, message_id=message_id,
                ))
            except OSError as e:
                return [RcptResult(r, DEFERRED, f"mail drop: {e}") for r in rcpts]
            return [RcptResult(r, DELIVERED, f"written to {path}") for r in rcpts]
        local, remote = [], rcpts
        if self.local is not None:
            local, remote = delivery.split_local(rcpts, config.domain)
        parts = []
        if local:
            parts.append(defer.Deferred.fromCoroutine(
                self._deliver_local(config, sender, local, signed)))
        if remote:
            parts.append(defer.Deferred.fromCoroutine(
                self._deliver_remote(sender, remote, signed)))
        results = {}
        for part in await defer.gatherResults(parts, consumeErrors=True):
            results.update((result.rcpt, result) for result in part)
        return [results[rcpt] for rcpt in rcpts]

    async def _deliver_remote(self, sender: str, rcpts: list[str],
                              signed: bytes) -> list[RcptResult]:
        plan = await self.transport.plan(rcpts)
        if plan.missing:
            # A domain that cannot receive mail: nothing leaves (nothing half-sent).
            return delivery.held_back(plan)
        return await self.transport.deliver(sender, plan, signed)

    async def _deliver_local(self, config: Config, sender: str, rcpts: list[str],
                             signed: bytes) -> list[RcptResult]:
        """Our own domain's recipients, through the inbound chain (no MX lookup).

        A recipient that routes nowhere fails as the SMTP server's RCPT rule would
        refuse it, without being tried.  The others share one envelope with no
        client address: the message never crossed a network, so SPF gets no IP
        from the envelope (C{none}, as for C{aimx ingest}) and no
        C{received_from_ip} is stored; our DKIM signature, verified against the key
        we publish, is what can make it trusted.  HELO is our domain.
        """
        results, routable = [], []
        for rcpt in rcpts:
            refusal = rcpt_verdict(config, rcpt)
            if refusal is None:
                routable.append(rcpt)
            else:
                results.append(delivery.local_result(rcpt, refusal))
        if routable:
            envelope = Envelope(peer_ip=None, helo=config.domain, mail_from=sender,
                                rcpts=tuple(routable), raw=signed)
            try:
                replies = await self.local(envelope)
            except Exception:
                # As over SMTP, where any other failure of the chain is a 451.
                log.failure("local delivery crashed", sender=sender, rcpts=routable)
                replies = [(rcpt, LOCAL_FAILED) for rcpt in routable]
            results.extend(delivery.local_result(rcpt, status) for rcpt, status in replies)
        for result in results:
            log.info("local delivery", sender=sender, rcpt=result.rcpt,
                     status=result.status, details=result.details)
        return results

    async def _prepare_sent(self, sub: Submission) -> str:
        """No sent copy, but the hooks still run in C{sent/<mailbox>}; C{""} as the path."""
        try:
            _, warnings = await self.run_in_thread(
                self.store.prepare_sent, sub.mailbox.name, sub.mailbox.owner
            )
        except OSError as e:
            warnings = [f"failed to prepare the sent directory: {e}"]
        for warning in warnings:
            log.warn("sent copy warning", mailbox=sub.mailbox.name, problem=warning)
        return ""

    async def _record(self, config, sub, assembled: Assembled, signed, status, results) -> str:
        """Write the sent copy; a failure is logged and leaves no path."""
        now = self.now()
        head = signed[: signed.find(b"\r\n\r\n") + 4]
        parsed = parse_message(head)
        undelivered = [r for r in results if r.status != DELIVERED]
        fields = frontmatter.sent_fields(
            parsed=parsed,
            delivered_to=", ".join(sub.recipients),
            date=frontmatter.rfc3339_utc(now),
            size_bytes=len(signed),
            mailbox=sub.mailbox.name,
            outbound_format=assembled.format,
            delivery_status=status,
            deliveries=[attrs.asdict(r) for r in results],
            bcc=sub.bcc,
            delivered_at=frontmatter.rfc3339_utc(now) if status == DELIVERED else None,
            delivery_details=delivery.summary(undelivered) if undelivered else None,
        )
        if not sub.header("subject"):
            fields["subject"] = ""  # verbatim: a sent copy has no "(no subject)" stand-in
        try:
            stored = await self.run_in_thread(
                self.store.store_sent, sub.mailbox.name, sub.mailbox.owner,
                parsed.subject, fields, assembled.text, assembled.attachments,
            )
        except Exception as e:
            log.error("sent copy not written", mailbox=sub.mailbox.name, error=e)
            return ""
        for warning in stored.warnings:
            log.warn("sent copy warning", mailbox=sub.mailbox.name, problem=warning)
        return stored.path
