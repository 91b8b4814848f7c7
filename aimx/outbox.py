"""The send path (L2): a checked submission -> MIME -> DKIM -> delivery -> sent copy -> hooks.

spec/outbound.md §1: no queue and no retry; the caller learns the result of
every recipient at once.  A send whose recipients were all deferred leaves no
sent copy (the caller retries); any other outcome is recorded under
C{sent/<mailbox>/}.  The after_send hooks run before the answer goes back.
"""

import datetime
import functools
import time
import uuid

import attrs

from aimx.auth import dkim
from aimx.core import delivery, frontmatter
from aimx.core.assemble import Assembled, assemble
from aimx.core.config import Config
from aimx.core.delivery import DELIVERED, DEFERRED, FAILED, RcptResult
from aimx.core.message import parse_message
from aimx.core.submission import Submission, check_header_block
from aimx.errors import DeliveryError, SignError, TempError
from aimx.logs import Logger
from aimx.store import maildrop

log = Logger(namespace="aimx::send")

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
    @param hooks: fires after_send (L{aimx.hooks.HookRunner}).
    @param drop_dir: C{AIMX_TEST_MAIL_DROP}: write messages there instead.
    """

    def __init__(self, *, store, transport, hooks, run_in_thread, signer: Signer,
                 drop_dir: str | None = None, now=_utcnow):
        self.store = store
        self.transport = transport
        self.hooks = hooks
        self.run_in_thread = run_in_thread
        self.signer = signer
        self.drop_dir = drop_dir
        self.now = now

    async def send(self, config: Config, sub: Submission, message: bytes, *,
                   text_only: bool, html_body: bytes | None) -> dict:
        """Steps 8–11 of §3 and everything after: the SEND answer.

        @param sub: a submission whose sender, caller and recipients are checked.
        @return: C{message_id} and the C{deliveries}.
        @raise MalformedError, BodyTooLarge, SignError: nothing was sent.
        @raise DeliveryError, TempError: nobody got it (failed / all deferred).
        """
        lines, body = check_header_block(message)
        message_id = sub.header("message-id") or ""
        synthesized = None
        if not message_id:
            message_id = synthesized = f"<{uuid.uuid4()}@{config.domain}>"
        assembled = await self.run_in_thread(functools.partial(
            assemble, lines, body, text_only=text_only, html_body=html_body,
            signature=config.effective_signature, message_id=synthesized,
            from_=sub.author.wire(),
        ))
        signed = await self.run_in_thread(self.signer.sign, assembled.wire, config.domain)
        started = time.monotonic()
        results = await self._deliver(sub, signed, message_id)
        status = delivery.overall(results)
        log.info(
            "[send] message_id={message_id} mailbox={mailbox} status={status} "
            "rcpts={rcpts} duration_ms={ms}",
            message_id=message_id, mailbox=sub.mailbox.name, status=status,
            rcpts=len(results), ms=int((time.monotonic() - started) * 1000),
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

    async def _deliver(self, sub: Submission, signed: bytes, message_id: str):
        rcpts = list(sub.recipients)
        if self.drop_dir is not None:
            try:
                path = await self.run_in_thread(functools.partial(
                    maildrop.drop, self.drop_dir, signed, mail_from=sub.sender,
                    rcpt_to=rcpts, message_id=message_id,
                ))
            except OSError as e:
                return [RcptResult(r, DEFERRED, f"mail drop: {e}") for r in rcpts]
            return [RcptResult(r, DELIVERED, f"written to {path}") for r in rcpts]
        plan = await self.transport.plan(rcpts)
        if plan.missing:
            # A domain that cannot receive mail: nothing leaves (nothing half-sent).
            return delivery.held_back(plan)
        return await self.transport.deliver(sub.sender, plan, signed)

    async def _prepare_sent(self, sub: Submission) -> str:
        """No sent copy, but the hooks still run in C{sent/<mailbox>}; C{""} as the path."""
        try:
            _, warnings = await self.run_in_thread(
                self.store.prepare_sent, sub.mailbox.name, sub.mailbox.owner
            )
        except OSError as e:
            warnings = [f"failed to prepare the sent directory: {e}"]
        for warning in warnings:
            log.warn("[send] {problem}", problem=warning)
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
            log.error("[send] failed to write the sent copy for {mailbox}: {error}",
                      mailbox=sub.mailbox.name, error=e)
            return ""
        for warning in stored.warnings:
            log.warn("[send] {problem}", problem=warning)
        return stored.path
