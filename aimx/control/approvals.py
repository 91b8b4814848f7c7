"""Messages held for a person's approval (L2): keep, list, show, approve, reject, expire.

A SEND the outbound policy holds (L{aimx.core.outpolicy.HOLD}) is kept by
L{Approvals.hold} instead of leaving; the files are L{aimx.store.held}'s, their
format L{aimx.core.heldmail}'s.  Root and the members of the C{[approval]
approvers} group approve or reject it, never the mailbox's owner (the agent runs
as the owner: L{aimx.core.authz.may_decide}); the owner may list and read its
own.  An approved message is delivered exactly as a normal send (the outbox:
sent copy, after_send hooks) and counts in the mailbox's rate window; one
rejected, or not decided within C{[approval] expire_days} (L{Expiry}, on the
reactor clock), moves to C{rejected/}.  Each change is logged with who made it,
and recorded in the audit log (docs/guardrails.md, "Audit"), as is a decision
refused to someone who may not make it.

With C{[approval] notify} set, each hold is announced to that address and a
reply from it decides the hold (L{aimx.core.approvalmail}; docs/guardrails.md,
"Approving by mail"): the inbound chain hands such mail to L{Approvals.on_reply}.
Notifications and replies are worked on in the background (L{Approvals.idle}):
neither holds up the SEND answer nor the SMTP reply.
"""

import secrets
import uuid

from twisted.application import service
from twisted.internet import defer, task

from aimx.core import audit as records
from aimx.core import approvalmail, frontmatter, heldmail, submission
from aimx.core.assemble import Draft
from aimx.core.authz import may_decide, visible
from aimx.core.config import MailboxConfig
from aimx.core.delivery import DELIVERED
from aimx.errors import (
    AccessDenied,
    AimxError,
    DeliveryError,
    IOFailure,
    MailboxError,
    NotFoundError,
    PolicyError,
    TempError,
)
from aimx.idle import Pending
from aimx.logs import Logger
from aimx.store import held

log = Logger(namespace="aimx.held")

#: Holds one mailbox may have waiting; past it a SEND that would be held is refused.
MAX_PENDING = 100
#: Seconds between two looks for expired holds.
EXPIRY_INTERVAL = 3600


class Approvals:
    """The held messages of every mailbox.

    @param live: the live config holder (C{.current}).
    @param outbox: sends an approved message (L{aimx.outbox.Outbox}).
    @param guard: the rate windows (L{aimx.control.sendguard.SendGuard}).
    @param passwd: owner, user name and group lookups.
    @param now: the wall clock (aware UTC), for C{held_at} and C{expires_at}.
    @param token: C{() -> 8 hex digits}, the random end of a hold id.
    @param secret: C{() -> 32 hex digits}, the secret of a mail-approval token.
    @param audit: C{record -> None}, given each decision (L{aimx.core.audit.held}).
    """

    def __init__(self, *, live, data_dir: str, outbox, guard, passwd, run_in_thread, now,
                 token=lambda: secrets.token_hex(4),
                 secret=lambda: secrets.token_hex(approvalmail.SECRET_BYTES),
                 audit=lambda record: None):
        self.live = live
        self.data_dir = data_dir
        self.outbox = outbox
        self.guard = guard
        self.passwd = passwd
        self.run_in_thread = run_in_thread
        self.now = now
        self.token = token
        self.secret = secret
        self.audit = audit
        self._busy: set[str] = set()
        self._locks: dict[str, defer.DeferredLock] = {}
        self._work = Pending()

    # -- who -------------------------------------------------------------------

    def _owner_uid(self, mailbox: MailboxConfig | None) -> int | None:
        return None if mailbox is None else self.passwd.owner(mailbox.owner).uid

    def _approver(self, uid: int) -> bool:
        group = self.live.current.approval.approvers
        return group is not None and self.passwd.in_group(uid, group)

    def _sees(self, uid: int, mailbox: str) -> bool:
        """Root, an approver, or the owner of the (still configured) mailbox."""
        owner = self._owner_uid(self.live.current.mailbox(mailbox))
        return uid == 0 or self._approver(uid) or visible(uid, owner)

    def _who(self, uid: int) -> str:
        return self.passwd.username(uid) or f"uid {uid}"

    # -- keeping ---------------------------------------------------------------

    async def hold(self, config, sub: submission.Submission, draft: Draft, reason: str,
                   caller_uid: int | None) -> dict:
        """Keep a message the policy holds; nothing leaves.

        @return: the SEND answer: C{message_id} and C{held} (the hold id).
        @raise PolicyError: the mailbox already has L{MAX_PENDING} holds waiting.
        """
        mailbox = sub.mailbox.name
        message_id = sub.header("message-id")
        if not message_id:
            # Synthesized now, so the message approved later has the id the caller got.
            message_id = f"<{uuid.uuid4()}@{config.domain}>"
            draft = Draft((f"Message-ID: {message_id}", *draft.header_lines), draft.text,
                          draft.attachments, draft.text_only, draft.html_body,
                          draft.raw_attachments)
            sub = submission.Submission(
                mailbox=sub.mailbox, author=sub.author, sender=sub.sender,
                headers={**sub.headers, "message-id": message_id},
                to=sub.to, cc=sub.cc, bcc=sub.bcc)
        now = self.now()
        hold_id = heldmail.new_hold_id(now, self.token())
        secret = None if config.approval.notify is None else self.secret()
        md, parts = heldmail.render(draft, sub, hold_id=hold_id, reason=reason, now=now,
                                    expire_days=config.approval.expire_days,
                                    caller_uid=caller_uid, token_sha256=None if secret is None
                                    else approvalmail.digest(secret))
        async with self._locks.setdefault(mailbox, defer.DeferredLock()):
            if await self.run_in_thread(held.count, self.data_dir, mailbox) >= MAX_PENDING:
                raise PolicyError(
                    f"mailbox {mailbox} already has {MAX_PENDING} messages waiting for "
                    "approval (outbound.approval)")
            try:
                await self.run_in_thread(held.hold, self.data_dir, mailbox, hold_id, md, parts)
            except OSError as e:
                raise IOFailure(f"cannot keep the message for approval: {e}") from None
        log.info("held", hold_id=hold_id, mailbox=mailbox, caller_uid=caller_uid,
                 reason=reason)
        if secret is not None:
            self._background(self._notify(config, hold_id, md, secret), "a notification")
        return {"message_id": message_id, "held": hold_id}

    # -- reading ---------------------------------------------------------------

    async def rows(self, uid: int, mailbox: str | None) -> list[dict]:
        """The pending holds the caller may see (of C{mailbox} only, when given).

        @raise MailboxError: C{mailbox} is given and not the caller's to see.
        """
        if mailbox is not None and not (held.valid_name(mailbox) and self._sees(uid, mailbox)):
            raise MailboxError(f"mailbox '{mailbox}' does not exist")
        names = [mailbox] if mailbox is not None else await self.run_in_thread(
            held.mailboxes, self.data_dir)
        out = []
        for name in names:
            if not self._sees(uid, name):
                continue
            for hold_id, fields in await self.run_in_thread(held.pending, self.data_dir, name):
                out.append(heldmail.row({**fields, "hold_id": hold_id, "mailbox": name}))
        return out

    async def _find(self, uid: int, hold_id: str) -> str:
        """The mailbox of a pending hold the caller may see.

        @raise NotFoundError: no such hold, or not the caller's to see.
        """
        mailbox = None
        if heldmail.is_hold_id(hold_id):
            mailbox = await self.run_in_thread(held.find, self.data_dir, hold_id)
        if mailbox is None or not self._sees(uid, mailbox):
            raise NotFoundError(f"held message '{hold_id}' not found")
        return mailbox

    async def _read(self, mailbox: str, hold_id: str) -> tuple[bytes, bytes]:
        try:
            files = await self.run_in_thread(held.read, self.data_dir, mailbox, hold_id)
        except heldmail.Damaged as e:
            raise IOFailure(f"held message '{hold_id}' is damaged: {e}") from None
        if files is None:
            raise NotFoundError(f"held message '{hold_id}' not found")
        return files

    async def show(self, uid: int, hold_id: str) -> dict:
        """A hold the caller may see: its listing row and its C{.md} file's text."""
        mailbox = await self._find(uid, hold_id)
        md, _ = await self._read(mailbox, hold_id)
        try:
            fields, _ = frontmatter.parse(md)
        except ValueError:
            fields = {}
        return {"hold": heldmail.row({**fields, "hold_id": hold_id, "mailbox": mailbox}),
                "file": md.decode("utf-8", "replace")}

    # -- deciding --------------------------------------------------------------

    async def _deciding(self, uid: int, hold_id: str, verb: str) -> str:
        """Find the hold and check the caller may decide on it; mark it busy.

        @raise NotFoundError, AccessDenied, TempError: with the reason.
        """
        mailbox = await self._find(uid, hold_id)
        owner = self._owner_uid(self.live.current.mailbox(mailbox))
        decision = may_decide(uid, owner, self._approver(uid))
        if not decision.allowed:
            log.notice("decision refused", verb=verb, hold_id=hold_id, mailbox=mailbox,
                       caller_uid=uid, reason=decision.reason)
            self.audit(records.held(action=records.DECISION_REFUSED, mailbox=mailbox,
                                    hold_id=hold_id, by=self._who(uid), caller_uid=uid,
                                    reason=f"{verb}: {decision.reason}"))
            raise AccessDenied(f"not authorized: {decision.reason}")
        if hold_id in self._busy:
            raise TempError(f"held message '{hold_id}' is being decided on; retry later")
        self._busy.add(hold_id)
        return mailbox

    async def approve(self, uid: int, hold_id: str) -> dict:
        """Deliver a held message as a normal send would (sent copy, after_send hooks).

        A permanent failure still settles it (its sent copy says so); a temporary
        one leaves it pending, to be approved again.

        @return: the SEND answer of the delivery.
        """
        mailbox = await self._deciding(uid, hold_id, "approve")
        try:
            return await self._approve(mailbox, hold_id, self._who(uid), uid)
        finally:
            self._busy.discard(hold_id)

    async def _approve(self, mailbox: str, hold_id: str, by: str, uid: int | None) -> dict:
        """L{approve} once the decision is allowed and the hold marked busy.

        @param by: who approves, as the log and the audit say it.
        """
        md, parts = await self._read(mailbox, hold_id)
        try:
            fields, body = frontmatter.parse(md)
            draft = heldmail.draft(fields, body, parts)
        except ValueError as e:
            raise IOFailure(f"held message '{hold_id}' is damaged: {e}") from None
        config = self.live.current
        sub = submission.check_recipients(submission.check_sender(
            config, submission.unfold(list(draft.header_lines))))
        if sub.mailbox.name != mailbox:
            raise MailboxError(f"held message '{hold_id}' is no longer from mailbox "
                               f"'{mailbox}'")
        now = self.now()
        self.guard.record(mailbox, now)
        try:
            answer = await self.outbox.send(config, sub, draft)
        except DeliveryError as e:
            await self._settle(mailbox, hold_id, None, heldmail.APPROVED, by, uid,
                               message_id=sub.header("message-id"),
                               outcome=f"[{e.code}] {e}")
            raise
        except BaseException:
            self.guard.cancel(mailbox, now)
            raise
        await self._settle(mailbox, hold_id, None, heldmail.APPROVED, by, uid,
                           message_id=answer.get("message_id"),
                           outcome=records.outcome(answer.get("deliveries")),
                           delivered=records.delivered(answer.get("deliveries")))
        return answer

    async def reject(self, uid: int, hold_id: str, reason: str | None) -> None:
        """Move a held message to C{rejected/}, saying who rejected it and why."""
        mailbox = await self._deciding(uid, hold_id, "reject")
        try:
            await self._reject(mailbox, hold_id, self._who(uid), uid, reason)
        finally:
            self._busy.discard(hold_id)

    async def _reject(self, mailbox: str, hold_id: str, by: str, uid: int | None,
                      reason: str | None) -> None:
        """L{reject} once the decision is allowed and the hold marked busy."""
        md, _ = await self._read(mailbox, hold_id)
        decided = heldmail.decided(md, heldmail.REJECTED, by=by, at=self.now(),
                                   reason=reason or None)
        await self._settle(mailbox, hold_id, decided, heldmail.REJECTED, by, uid,
                           reason=reason or None)

    async def expire(self) -> int:
        """Move every pending hold past its C{expires_at} to C{rejected/}.

        @return: how many expired.
        """
        now = self.now()
        expired = 0
        for mailbox in await self.run_in_thread(held.mailboxes, self.data_dir):
            for hold_id, fields in await self.run_in_thread(held.pending, self.data_dir,
                                                            mailbox):
                if hold_id in self._busy or not heldmail.expired(fields, now):
                    continue
                files = await self.run_in_thread(held.read, self.data_dir, mailbox, hold_id)
                if files is None:
                    continue
                try:
                    decided = heldmail.decided(files[0], heldmail.EXPIRED, by="aimx", at=now,
                                               reason="not decided in time")
                except ValueError:
                    decided = files[0]
                await self._settle(mailbox, hold_id, decided, heldmail.EXPIRED, "aimx", None,
                                   reason="not decided in time")
                expired += 1
        return expired

    async def _settle(self, mailbox: str, hold_id: str, decided: bytes | None, state: str,
                      by: str, uid: int | None, **outcome) -> None:
        """The one place a hold stops being pending: the files, the log, the audit.

        @param by: who decided (a user name, C{aimx}, C{mail from <notify>}).
        @param outcome: C{reason}, C{message_id}, C{outcome}, C{delivered} for the audit
            record.
        """
        await self.run_in_thread(held.settle, self.data_dir, mailbox, hold_id, decided)
        log.info("settled", state=state, hold_id=hold_id, mailbox=mailbox, by=by,
                 caller_uid=uid)
        self.audit(records.held(action=state, mailbox=mailbox, hold_id=hold_id, by=by,
                                caller_uid=uid, **outcome))

    # -- by mail (docs/guardrails.md, "Approving by mail") ---------------------

    def idle(self) -> defer.Deferred:
        """Fires once no notification or reply is being worked on."""
        return self._work.idle()

    def _background(self, work, what: str) -> None:
        done = defer.Deferred.fromCoroutine(work)
        done.addErrback(lambda failure: log.failure("background work failed", failure,
                                                    what=what))
        self._work.track(done)

    async def _notify(self, config, hold_id: str, md: bytes, secret: str,
                      note: str | None = None) -> None:
        """Announce a hold to C{[approval] notify}; a failure is logged, the hold stays."""
        notify = config.approval.notify
        fields, body = frontmatter.parse(md)
        message_id = f"<{uuid.uuid4()}@{config.domain}>"
        draft = approvalmail.notification(
            fields, body.decode("utf-8"), hold_id=hold_id, secret=secret, notify=notify,
            domain=config.domain, now=self.now(), message_id=message_id, note=note)
        try:
            [result] = await self.outbox.send_notice(
                config, draft, sender=approvalmail.sender(config.domain), rcpts=[notify],
                message_id=message_id)
        except AimxError as e:
            log.error("notification not sent", hold_id=hold_id, notify=notify, error=str(e))
            return
        emit = log.info if result.status == DELIVERED else log.warn
        emit("notification", hold_id=hold_id, notify=notify, status=result.status,
             details=result.details)

    def on_reply(self, prepared) -> None:
        """A message to the approval address that carries a token: the inbound chain
        hands it here (it is stored nowhere) once its SMTP reply is decided."""
        self._background(self._on_reply(prepared), "an approval reply")

    async def _on_reply(self, prepared) -> None:
        config = self.live.current
        notify = config.approval.notify
        parsed = prepared.parsed
        reply = (approvalmail.read_reply(notify, parsed, prepared.auth) if notify is not None
                 else approvalmail.Reply(None, "no [approval] notify is set"))
        problem = reply.problem
        if problem is None:
            problem = await self._by_mail(config, reply)
        if problem is None:
            return
        # A reply from the notify address itself that fails is worth a warning.
        emit = log.warn if reply.author == (notify or "").lower() else log.info
        emit("mail reply ignored", sender=reply.author or "?", hold_id=reply.hold_id or "?",
             message_id=parsed.message_id, problem=problem)
        mailbox = None
        if reply.hold_id:
            mailbox = await self.run_in_thread(held.find, self.data_dir, reply.hold_id)
        if mailbox is not None:
            self.audit(records.held(action=records.DECISION_REFUSED, mailbox=mailbox,
                                    hold_id=reply.hold_id,
                                    by=f"mail from {reply.author or '?'}", caller_uid=None,
                                    reason=f"mail reply ignored: {problem}"))

    async def _by_mail(self, config, reply: approvalmail.Reply) -> str | None:
        """Decide a hold as a reply L{approvalmail.read_reply} accepted says.

        The token is spent before anything is done, so no copy of the reply acts
        twice; an approval that could only be deferred announces the hold again
        with a new token.

        @return: why nothing was decided, or C{None}.
        """
        hold_id = reply.hold_id
        mailbox = await self.run_in_thread(held.find, self.data_dir, hold_id)
        if mailbox is None:
            return "no such hold is pending"
        if hold_id in self._busy:
            return "the hold is being decided on"
        self._busy.add(hold_id)
        by = f"mail from {config.approval.notify}"
        try:
            md, _ = await self._read(mailbox, hold_id)
            try:
                fields, _ = frontmatter.parse(md)
            except ValueError:
                fields = {}
            if not approvalmail.matches(fields.get("token_sha256"), reply.secret):
                return "the token is not the hold's (wrong, spent or renewed)"
            await self.run_in_thread(held.rewrite, self.data_dir, mailbox, hold_id,
                                     heldmail.with_token(md, None))
            if reply.action == approvalmail.REJECT:
                await self._reject(mailbox, hold_id, by, None, reply.reason)
                return None
            try:
                await self._approve(mailbox, hold_id, by, None)
            except TempError as e:
                await self._renew(config, mailbox, hold_id, f"Approved, but not sent: {e}")
                return f"approved, not sent: {e}"
            except DeliveryError as e:
                log.warn("approved, not delivered", hold_id=hold_id, by=by, error=str(e))
            return None
        except AimxError as e:
            return f"[{e.code}] {e}"
        finally:
            self._busy.discard(hold_id)

    async def _renew(self, config, mailbox: str, hold_id: str, note: str) -> None:
        """A new token for a hold still pending, announced with C{note}."""
        md, _ = await self._read(mailbox, hold_id)
        secret = self.secret()
        md = heldmail.with_token(md, approvalmail.digest(secret))
        if await self.run_in_thread(held.rewrite, self.data_dir, mailbox, hold_id, md):
            self._background(self._notify(config, hold_id, md, secret, note), "a notification")


class Expiry(service.Service):
    """Looks for expired holds at start and every L{EXPIRY_INTERVAL} seconds of C{clock}."""

    def __init__(self, approvals: Approvals, clock, interval: float = EXPIRY_INTERVAL):
        self.approvals = approvals
        self._stopped = defer.succeed(None)
        self.loop = task.LoopingCall(self._expire)
        self.loop.clock = clock
        self.interval = interval

    def startService(self):
        super().startService()
        self._stopped = self.loop.start(self.interval, now=True)

    def stopService(self):
        """Stop looking; fires once a look in progress is done."""
        super().stopService()
        if self.loop.running:
            self.loop.stop()
        return self._stopped

    async def _expire_now(self):
        try:
            await self.approvals.expire()
        except Exception:
            log.failure("looking for expired holds failed")

    def _expire(self):
        return defer.Deferred.fromCoroutine(self._expire_now())
