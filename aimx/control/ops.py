"""The bodies of the control commands (L2): authorise, lock, touch disk, swap config.

L{Control} is independent of AMP: each method takes the L{Caller} (the peer's
credentials) and the command's arguments and returns the reply values or raises
the wire errors (docs/troubleshooting.md, "Error codes"), checking in a fixed
order.  Mutations: the per-mailbox lock (shared with ingest), then the
config lock, re-read the live config, write config.toml atomically, swap.
Blocking disk work goes through C{run_in_thread}.  Every SEND decision and every
mailbox or hook change is recorded in the audit log (docs/guardrails.md, "Audit").
"""

import datetime
import hashlib
import os
import stat

import attrs
from twisted.internet import defer

from aimx.control.approvals import Approvals
from aimx.control.wire import EXCLUSIVE, MESSAGE_CAP
from aimx.control.listing import (
    email_row,
    mailbox_details,
    mailbox_rows,
    visible_mailboxes,
)
from aimx.control.sendguard import SendGuard
from aimx.core import audit, configedit, mailquery, outpolicy, submission, webhook
from aimx.core.assemble import (
    ATTACHMENT_LINE,
    ATTACHMENT_LINE_BYTES,
    attachment_wire_size,
    check_size,
    read_draft,
)
from aimx.core.authz import ACCEPT, REJECT, ROOT_BYPASS, Decision, authorize, visible
from aimx.core.config import MailboxConfig
from aimx.core.filenames import is_valid_id
from aimx.ops.version import version_fields
from aimx.errors import (
    AccessDenied,
    AimxError,
    BodyTooLarge,
    ConfigError,
    IOFailure,
    MailboxError,
    MalformedError,
    NoEntry,
    NonEmptyError,
    NotFoundError,
    PolicyError,
    SignError,
    TempError,
    ValidationError,
)
from aimx.logs import Logger
from aimx.store import configfile, descriptors, webhookfiles
from aimx.store.mailboxdirs import count_entries, create_dirs, mailbox_dirs, remove_dirs, wipe
from aimx.store.mailstore import mark_id
from aimx.store.mailindex import FOLDERS
from aimx.store.passwd import Passwd

log = Logger(namespace="aimx.control")
hook_log = Logger(namespace="aimx.hook")
send_log = Logger(namespace="aimx.send")

NOT_AUTHORIZED = "not authorized"
#: The most rows one MAIL-LIST, MAIL-SEARCH or MAIL-THREAD answers.
ROWS_MAX = 200
#: The most records one AUDIT-READ answers.
AUDIT_ROWS_MAX = 10_000


@attrs.frozen
class Caller:
    """Who sent a command, from the kernel (C{SO_PEERCRED}).

    @ivar error: why the credentials are unavailable (then C{uid} is C{None}).
    """

    uid: int | None
    pid: int | None = None
    error: str | None = None


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class Control:
    """The daemon side of every control command.

    @param live: the live config holder (C{.current}, C{.lock} = the config lock).
    @param config_dir: where config.toml is rewritten.
    @param data_dir: the storage root (fixed at start-up, as for ingest).
    @param mailbox_lock: C{name -> DeferredLock}, shared with ingest.
    @param run_in_thread: C{f, *args -> Deferred}.
    @param passwd: owner and username lookups.
    @param now: the current time (aware UTC) for C{read_at}.
    @param outbox: sends mail (L{aimx.outbox.Outbox}); None where SEND is not served.
    @param index: the mail indexes (L{aimx.indexer.Indexer}); None: counts are read
        from the files and the MAIL-* commands are not served.
    @param webhooks: the webhook deliveries (L{aimx.webhooks.Webhooks}); None:
        HOOK-STATUS and HOOK-RETRY are not served.
    @param random: C{n -> n random bytes}, for generated webhook secrets.
    @param audit: the audit log (L{aimx.auditlog.AuditLog}); None: nothing is
        recorded and AUDIT-READ is not served.
    """

    def __init__(
        self,
        *,
        live,
        config_dir: str,
        data_dir: str,
        mailbox_lock,
        run_in_thread,
        passwd: Passwd = Passwd(),
        now=_utcnow,
        outbox=None,
        index=None,
        webhooks=None,
        random=os.urandom,
        audit=None,
    ):
        self.live = live
        self.config_dir = config_dir
        self.data_dir = data_dir
        self.mailbox_lock = mailbox_lock
        self.run_in_thread = run_in_thread
        self.passwd = passwd
        self.now = now
        self.outbox = outbox
        self.index = index
        self.webhooks = webhooks
        self.random = random
        self.audit = audit
        self.guard = SendGuard(audit)
        self.approvals = Approvals(
            live=live, data_dir=data_dir, outbox=outbox, guard=self.guard, passwd=passwd,
            run_in_thread=run_in_thread, now=now, audit=self._record)

    def _record(self, record: dict) -> None:
        """Hand one record to the audit log, when there is one."""
        if self.audit is not None:
            self.audit.record(record)

    # -- helpers ---------------------------------------------------------------

    def _authorize(self, verb: str, caller: Caller, mailbox: MailboxConfig | None) -> Decision:
        owner_uid = None if mailbox is None else self.passwd.owner(mailbox.owner).uid
        username = self.passwd.username(caller.uid)
        decision = authorize(caller.uid, username, mailbox, owner_uid)
        self._log_decision(verb, caller, username, mailbox and mailbox.name, decision)
        return decision

    def _log_decision(self, verb, caller, username, mailbox, decision: Decision):
        emit = {ACCEPT: log.debug, ROOT_BYPASS: log.info}.get(decision.decision, log.notice)
        why = {"reason": decision.reason} if decision.reason else {}
        emit(
            "authorization",
            verb=verb,
            caller_uid=caller.uid,
            caller_username=username,
            mailbox=mailbox,
            decision=decision.decision,
            **why,
        )

    def _recheck(self, verb: str, caller: Caller, name: str) -> MailboxConfig | None:
        """Under the mailbox lock: the mailbox in the I{current} config, if still allowed.

        The check before the lock may have seen a mailbox that a concurrent
        delete + create has since replaced (possibly with another owner).

        @return: the current mailbox, or C{None} when it is gone or no longer
            the caller's (the refusal is logged).
        """
        mailbox = self.live.current.mailbox(name)
        if mailbox is None:
            return None
        owner_uid = self.passwd.owner(mailbox.owner).uid
        username = self.passwd.username(caller.uid)
        decision = authorize(caller.uid, username, mailbox, owner_uid)
        if not decision.allowed:
            self._log_decision(verb, caller, username, name, decision)
            return None
        return mailbox

    async def _commit(self, new) -> None:
        """Validate as config load would, write config.toml atomically, then swap."""
        try:
            await self.run_in_thread(configfile.write_atomic, self.config_dir, new)
        except ConfigError as e:
            raise ValidationError(f"refusing to write an invalid config: {e}") from None
        except OSError as e:
            path = configfile.config_path(self.config_dir)
            raise IOFailure(f"failed to write {path}: {e}") from None
        self.live.current = new

    # -- send ------------------------------------------------------------------

    async def send(self, caller: Caller, message: bytes, text_only: bool,
                   html_body: bytes | None, attachments=()) -> dict:
        """SEND: check in L{aimx.core.submission}'s order, let the outbound policy decide
        (docs/guardrails.md), then hand to the outbox.

        @param attachments: C{(fd, path)} of the files the client opened; read
            here only once the policy allows them, never closed here (the
            responder owns them).
        """
        if text_only and html_body is not None:
            raise MalformedError(EXCLUSIVE)
        if self.outbox is None:
            raise TempError("this daemon was started without outbound mail")
        config = self.live.current
        # Parsing a (64 KiB at most) header block is linear but not free: not on the reactor.
        sub, digest = await self.run_in_thread(lambda: (
            submission.check_sender(config, submission.scan_headers(message)),
            hashlib.sha256(message).hexdigest()))

        def record(decision: str, **values) -> None:
            self._record(audit.send(
                mailbox=sub.mailbox.name, caller_uid=caller.uid, author=sub.sender,
                recipients=sub.recipients, sha256=digest, decision=decision, **values))

        if not self._authorize("SEND", caller, sub.mailbox).allowed:
            record(audit.REFUSED, rule="authorization", reason=NOT_AUTHORIZED)
            raise AccessDenied(NOT_AUTHORIZED)
        sub = submission.check_recipients(sub)
        draft = await self.run_in_thread(_read_draft, message, text_only, html_body)
        mailbox = sub.mailbox
        policy = config.effective_outbound(mailbox)
        files = roots = ()
        home = None
        if attachments:
            files = await self.run_in_thread(
                lambda: [descriptors.inspect(fd, given) for fd, given in attachments])
            home = self.passwd.home(mailbox.owner)
            roots = await self.run_in_thread(descriptors.real_roots, (
                policy.attachment_roots if policy is not None
                and policy.attachment_roots is not None
                else outpolicy.default_roots(home)))
            for root in roots:
                why = outpolicy.root_refusal(root, home)
                if why is not None:
                    send_log.warn("attachment root refused", mailbox=mailbox.name,
                                  root=root.path, reason=why)
        if outpolicy.window_start(self.now(), policy) is not None:
            await self.guard.prepare(mailbox.name, self.now())
        known = ()
        if policy is not None and policy.approval == outpolicy.NEW_RECIPIENTS:
            known = self.guard.known(mailbox.name, sub.recipients)
        # From here to the record, no wait: two SENDs cannot both take the last place.
        now = self.now()
        decision = outpolicy.decide(
            mailbox.name, policy, sub.recipients, now=now,
            recent=self.guard.recent(mailbox.name, now), known=known, files=files,
            roots=roots, home=home, raw_attachments=draft.raw_attachments > 0)
        self._log_send(caller, mailbox.name, decision)
        if decision.verdict == outpolicy.REFUSE:
            record(audit.REFUSED, rule=decision.rule, reason=decision.reason)
            raise PolicyError(decision.reason)
        if decision.verdict == outpolicy.HOLD:
            try:
                draft = await self._attach(draft, attachments, len(message))
                check_size(draft, config.effective_signature)  # refused now, not at approval
                answer = await self.approvals.hold(config, sub, draft, decision.reason,
                                                   caller.uid)
            except AimxError as e:
                record(audit.REFUSED, rule=decision.rule, reason=f"[{e.code}] {e}")
                raise
            record(audit.HELD_BACK, rule=decision.rule, reason=decision.reason,
                   hold_id=answer["held"], message_id=answer["message_id"])
            return answer
        self.guard.record(mailbox.name, now)
        try:
            draft = await self._attach(draft, attachments, len(message))
            answer = await self.outbox.send(config, sub, draft)
        except AimxError as e:
            left = not isinstance(e, (MalformedError, BodyTooLarge, SignError, IOFailure))
            if not left:
                self.guard.cancel(mailbox.name, now)  # nothing left: it does not count
            record(audit.SENT, outcome=f"[{e.code}] {e}", counted=left)
            raise
        # The recipients delivered to are known from now on (docs/guardrails.md).
        record(audit.SENT, message_id=answer.get("message_id"),
               outcome=audit.outcome(answer.get("deliveries")),
               delivered=audit.delivered(answer.get("deliveries")))
        return answer

    def _log_send(self, caller: Caller, mailbox: str, decision) -> None:
        # A refusal (a rate, a recipient or attachment rule) is a notice.
        emit = send_log.notice if decision.verdict == outpolicy.REFUSE else send_log.info
        why = {"rule": decision.rule, "reason": decision.reason} if decision.rule else {}
        emit("policy", mailbox=mailbox, caller_uid=caller.uid, verdict=decision.verdict, **why)

    async def _attach(self, draft, attachments, used: int):
        """The draft with the attached files read in, all of it within SEND's cap.

        @param used: the submitted message's size, counted against the cap.
        @raise MalformedError: the files would make the message larger than the cap.
        """
        read = []
        left = MESSAGE_CAP - used
        for fd, given in attachments:
            limit = max(0, left // ATTACHMENT_LINE * ATTACHMENT_LINE_BYTES)
            try:
                part = await self.run_in_thread(descriptors.read_attached, fd, given, limit)
            except ValueError:
                raise MalformedError(
                    f"attachment {given} makes the message larger than {MESSAGE_CAP} bytes "
                    "once encoded; attach less or link to the files instead") from None
            except OSError as e:
                raise IOFailure(f"cannot read attachment {given}: {e.strerror}") from None
            left -= attachment_wire_size(len(part.data))
            read.append(part)
        if not read:
            return draft
        return attrs.evolve(draft, attachments=draft.attachments + tuple(read))

    # -- held mail (docs/guardrails.md) -----------------------------------------

    async def held_list(self, caller: Caller, mailbox: str | None) -> list[dict]:
        """HELD-LIST: pending holds of the mailboxes the caller may see."""
        return await self.approvals.rows(caller.uid, mailbox)

    async def held_show(self, caller: Caller, hold_id: str) -> dict:
        """HELD-SHOW: one hold's row and file."""
        return await self.approvals.show(caller.uid, hold_id)

    async def held_approve(self, caller: Caller, hold_id: str) -> dict:
        """HELD-APPROVE: deliver a held message (root or an approver, never its owner)."""
        return await self.approvals.approve(caller.uid, hold_id)

    async def held_reject(self, caller: Caller, hold_id: str, reason: str | None) -> None:
        """HELD-REJECT: move a held message to C{rejected/} (same rule as approving)."""
        await self.approvals.reject(caller.uid, hold_id, reason)

    # -- mailboxes -------------------------------------------------------------

    async def mailbox_create(self, caller: Caller, name: str, owner: str | None) -> str:
        """MAILBOX-CREATE; root names the owner, anyone else owns it.

        Role names (L{configedit.ROLE_NAMES}) are root's alone; the check runs
        right after the name rule, before the owner is resolved.

        @return: the new address.
        """
        if owner is not None:
            configedit.check_owner_argument(owner)
        configedit.check_mailbox_name(name)
        username = self.passwd.username(caller.uid)
        try:
            configedit.check_role_name(name, by_root=caller.uid == 0)
        except ValidationError as e:
            self._log_decision("MAILBOX-CREATE", caller, username, name, Decision(REJECT, str(e)))
            raise
        if caller.uid == 0:
            if owner is None:
                raise ValidationError("MAILBOX-CREATE requires an Owner: header")
        else:
            owner = username
            if owner is None:
                raise ValidationError(f"uid {caller.uid} has no passwd entry")
            configedit.check_caller_owner(owner)
        configedit.check_new_owner(name, owner)
        decision = Decision(ROOT_BYPASS if caller.uid == 0 else ACCEPT)
        self._log_decision("MAILBOX-CREATE", caller, username, name, decision)
        async with self.mailbox_lock(name), self.live.lock:
            new = configedit.add_mailbox(self.live.current, name, owner)
            # Holds an earlier mailbox of this name left never pass to the new owner.
            if await self.approvals.retire(name, username or f"uid {caller.uid}", caller.uid):
                raise TempError(f"a held message of an earlier mailbox '{name}' is being "
                                "decided on; retry later")
            ids = self.passwd.owner(owner)
            if ids.uid is None:
                raise ValidationError(f"unknown owner '{owner}'")
            created = await self.run_in_thread(create_dirs, self.data_dir, name, ids)
            try:
                await self._commit(new)
            except IOFailure:
                await self.run_in_thread(remove_dirs, created)
                raise
        address = new.mailbox(name).address
        self._record(audit.change(audit.MAILBOX, "created", mailbox=name, caller_uid=caller.uid,
                                  owner=owner, address=address))
        return address

    async def mailbox_delete(self, caller: Caller, name: str, force: bool) -> None:
        """MAILBOX-DELETE; absent and not-owned answer alike."""
        configedit.check_mailbox_name(name)
        async with self.mailbox_lock(name), self.live.lock:
            config = self.live.current
            mailbox = config.mailbox(name)
            decision = self._authorize("MAILBOX-DELETE", caller, mailbox)
            if mailbox is None or not decision.allowed:
                raise MailboxError(f"mailbox '{name}' does not exist")
            if mailbox.is_catchall(config.domain):
                raise ValidationError(f"mailbox '{name}' is the catchall and cannot be deleted")
            inbox, sent = mailbox_dirs(self.data_dir, name)
            if force:
                try:
                    await self.run_in_thread(wipe, inbox)
                    await self.run_in_thread(wipe, sent)
                except OSError as e:
                    raise IOFailure(f"failed to wipe mailbox '{name}': {e}") from None
            in_inbox = await self.run_in_thread(count_entries, inbox)
            in_sent = await self.run_in_thread(count_entries, sent)
            if in_inbox + in_sent:
                raise NonEmptyError(
                    f"mailbox '{name}' has {in_inbox + in_sent} files ({in_inbox} in inbox, "
                    f"{in_sent} in sent); archive or remove them first"
                )
            await self._commit(configedit.remove_mailbox(config, name))
        self._record(audit.change(audit.MAILBOX, "deleted", mailbox=name, caller_uid=caller.uid,
                                  owner=mailbox.owner, force=force))
        # Its pending holds are rejected (one being decided on is, at the latest, when
        # the name is created again: mailbox_create).
        left = await self.approvals.retire(name, self.passwd.username(caller.uid)
                                           or f"uid {caller.uid}", caller.uid)
        if left:
            log.info("holds left pending", mailbox=name, hold_ids=left)
        if self.index is not None:
            await self.index.forget(name)

    async def _index_counts(self, names) -> dict:
        """The index's counts of these mailboxes (those it has; the rest: none)."""
        if self.index is None:
            return {}
        found = await defer.gatherResults(
            [defer.Deferred.fromCoroutine(self._counts(name)) for name in names])
        return {name: (c.total, c.unread, c.sent)
                for name, c in zip(names, found) if c is not None}

    async def _counts(self, name: str):
        """One mailbox's counts from the index; C{None} (read the files) when it has none."""
        try:
            return await self.index.counts(name)
        except Exception:
            log.failure("index counts failed", mailbox=name)
            return None

    async def mailbox_list(self, caller: Caller) -> list[dict]:
        """MAILBOX-LIST: configured mailboxes and inbox dirs the caller may see."""
        config = self.live.current
        try:
            counts = {}
            if self.index is not None:
                names = [name for name, _ in await self.run_in_thread(
                    visible_mailboxes, config, self.data_dir, caller.uid, self.passwd)]
                counts = await self._index_counts(names)
            return await self.run_in_thread(
                mailbox_rows, config, self.data_dir, caller.uid, self.passwd, counts
            )
        except OSError as e:
            raise IOFailure(f"failed to serialize mailbox list: {e}") from None

    async def mailbox_show(self, caller: Caller, name: str) -> dict:
        """MAILBOX-SHOW: settings, hooks and counts of one owned mailbox."""
        config = self.live.current
        mailbox = config.mailbox(name)
        decision = self._authorize("MAILBOX-SHOW", caller, mailbox)
        if mailbox is None or not decision.allowed:
            raise MailboxError(f"mailbox '{name}' does not exist")
        counts = (await self._index_counts([name])).get(name)
        return await self.run_in_thread(mailbox_details, config, mailbox, self.data_dir, counts)

    # -- hooks -----------------------------------------------------------------

    async def hook_create(
        self, caller: Caller, mailbox: str, event: str, name: str | None, body: str
    ) -> dict:
        """HOOK-CREATE.  A webhook's secret (given, else generated) is stored root-only
        before config.toml names the hook (docs/hooks.md, "Webhooks").

        @return: C{name}, the hook's effective name, and C{secret} when one was
            generated (the only time it is shown).
        """
        config = self.live.current
        target = config.mailbox(mailbox)
        if target is None:
            raise NoEntry(f"mailbox '{mailbox}' does not exist")
        decision = self._authorize("HOOK-CREATE", caller, target)
        if decision.no_such_mailbox:
            raise NoEntry(f"mailbox '{mailbox}' does not exist")
        if not decision.allowed:
            raise AccessDenied(NOT_AUTHORIZED)
        configedit.check_hook_target(config, target)
        hook = configedit.parse_hook_request(event, name, body)
        if hook.allow_private and caller.uid != 0:
            # The daemon reaches what its owner may not (a firewall's uid rules).
            raise AccessDenied("allow_private is for root only")
        answer = {"name": hook.name}
        key = None
        if hook.type == "webhook":
            key = configedit.request_secret(body)
            if key is None:
                key = self.random(webhook.SECRET_BYTES)
                answer["secret"] = webhook.make_secret(key)
        async with self.mailbox_lock(mailbox), self.live.lock:
            current = self._recheck("HOOK-CREATE", caller, mailbox)
            if current is None:
                raise NoEntry(f"mailbox '{mailbox}' does not exist")
            configedit.check_hook_target(self.live.current, current)
            new = configedit.add_hook(self.live.current, mailbox, hook)
            if key is not None:
                try:
                    await self.run_in_thread(
                        webhookfiles.write_secret, self.config_dir, hook.name, key)
                except OSError as e:
                    raise IOFailure(f"failed to store the webhook secret: {e.strerror}") from None
            try:
                await self._commit(new)
            except (IOFailure, ValidationError):
                if key is not None:
                    await self.run_in_thread(
                        webhookfiles.remove_secret, self.config_dir, hook.name)
                raise
        hook_log.info(
            "hook created",
            verb="HOOK-CREATE",
            mailbox=mailbox,
            hook_name=hook.name,
            caller_uid=caller.uid,
        )
        self._record(audit.hook_created(hook, mailbox=mailbox, caller_uid=caller.uid))
        return answer

    async def hook_delete(self, caller: Caller, name: str) -> None:
        """HOOK-DELETE; a hook the caller may not touch is "not found"."""
        mailbox = configedit.find_hook(self.live.current, name)
        if mailbox is None or not self._authorize("HOOK-DELETE", caller, mailbox).allowed:
            raise NoEntry(f"hook '{name}' not found")
        async with self.mailbox_lock(mailbox.name), self.live.lock:
            current = configedit.find_hook(self.live.current, name)
            if current is None or current.name != mailbox.name:
                raise NoEntry(f"hook '{name}' not found")
            if self._recheck("HOOK-DELETE", caller, mailbox.name) is None:
                raise NoEntry(f"hook '{name}' not found")
            gone = next(h for h in current.hooks if h.name == name)
            await self._commit(configedit.remove_hook(self.live.current, mailbox.name, name))
            if gone.type == "webhook" and gone.secret_file is None:
                await self.run_in_thread(webhookfiles.remove_secret, self.config_dir, name)
            dropped = {}
            if gone.type == "webhook" and self.webhooks is not None:
                # Its queued deliveries go with it: a later hook of that name, perhaps
                # another owner's, gets none of them (docs/hooks.md, "Webhooks").
                dropped["dropped"] = await self.webhooks.purge(name)
        hook_log.info(
            "hook deleted",
            verb="HOOK-DELETE",
            mailbox=mailbox.name,
            hook_name=name,
            caller_uid=caller.uid,
            **dropped,
        )
        self._record(audit.change(audit.HOOK, "deleted", mailbox=mailbox.name,
                                  caller_uid=caller.uid, hook=name, **dropped))

    async def hook_enable(self, caller: Caller, name: str) -> None:
        """HOOK-ENABLE: clear C{disabled}; a hook the caller may not touch is "not found"."""
        mailbox = configedit.find_hook(self.live.current, name)
        if mailbox is None or not self._authorize("HOOK-ENABLE", caller, mailbox).allowed:
            raise NoEntry(f"hook '{name}' not found")
        async with self.mailbox_lock(mailbox.name), self.live.lock:
            await self._commit(configedit.set_disabled(self.live.current, name, False))
        hook_log.info("hook enabled", verb="HOOK-ENABLE", hook_name=name,
                      caller_uid=caller.uid)
        self._record(audit.change(audit.HOOK, "enabled", mailbox=mailbox.name,
                                  caller_uid=caller.uid, hook=name))

    async def hook_disable(self, name: str) -> None:
        """Set C{disabled} on a hook (a webhook whose receiver answered 410)."""
        mailbox = configedit.find_hook(self.live.current, name)
        if mailbox is None:
            return
        async with self.mailbox_lock(mailbox.name), self.live.lock:
            if configedit.find_hook(self.live.current, name) is None:
                return
            await self._commit(configedit.set_disabled(self.live.current, name, True))
        self._record(audit.change(audit.HOOK, "disabled", mailbox=mailbox.name,
                                  caller_uid=None, hook=name, reason="410 Gone"))

    def _webhook_names(self, caller: Caller, name: str | None) -> set[str]:
        """The webhooks the caller may see (C{name} only, when given)."""
        names = {row["name"] for row in self.hook_list(caller) if row.get("type") == "webhook"}
        if name is not None:
            if name not in names:
                raise NoEntry(f"hook '{name}' not found")
            names = {name}
        return names

    def hook_status(self, caller: Caller, name: str | None) -> list[dict]:
        """HOOK-STATUS: per visible webhook, its pending, failing and dead deliveries."""
        if self.webhooks is None:
            raise TempError("this daemon was started without webhook delivery")
        return self.webhooks.status(self._webhook_names(caller, name))

    async def hook_retry(self, caller: Caller, name: str) -> int:
        """HOOK-RETRY: queue the hook's dead-lettered deliveries again."""
        if self.webhooks is None:
            raise TempError("this daemon was started without webhook delivery")
        self._webhook_names(caller, name)
        count = await self.webhooks.retry(name)
        hook_log.info("hook retried", verb="HOOK-RETRY", hook_name=name, requeued=count,
                      caller_uid=caller.uid)
        mailbox = configedit.find_hook(self.live.current, name)
        self._record(audit.change(audit.HOOK, "retried", caller_uid=caller.uid, hook=name,
                                  requeued=count,
                                  mailbox=mailbox.name if mailbox is not None else None))
        return count

    def hook_list(self, caller: Caller) -> list[dict]:
        """HOOK-LIST: hooks of the mailboxes the caller owns (all for root)."""
        return configedit.hook_rows(
            self.live.current,
            lambda mb: visible(caller.uid, self.passwd.owner(mb.owner).uid),
        )

    # -- read state ------------------------------------------------------------

    async def mark(self, caller: Caller, mailbox: str, email_id: str, read: bool) -> None:
        """MARK-READ / MARK-UNREAD on an inbox email."""
        verb = "MARK-READ" if read else "MARK-UNREAD"
        if not is_valid_id(email_id):
            raise NotFoundError(f"email id '{email_id}' contains invalid characters")
        target = self.live.current.mailbox(mailbox)
        if target is None:
            raise NoEntry(f"mailbox '{mailbox}' does not exist")
        decision = self._authorize(verb, caller, target)
        if decision.no_such_mailbox:
            raise NoEntry(f"mailbox '{mailbox}' does not exist")
        if not decision.allowed:
            raise AccessDenied(NOT_AUTHORIZED)
        async with self.mailbox_lock(mailbox):
            target = self._recheck(verb, caller, mailbox)
            if target is None:
                raise NoEntry(f"mailbox '{mailbox}' does not exist")
            owner = self.passwd.owner(target.owner)
            inbox, _ = mailbox_dirs(self.data_dir, mailbox)
            path, refused = await self.run_in_thread(
                mark_id, inbox, email_id, read, self.now(), owner
            )
            if refused:
                log.notice("email path refused", verb=verb, mailbox=mailbox, id=email_id,
                           reason="symlink_or_escape")
            if path is None:
                raise NotFoundError(f"email '{email_id}' not found in inbox/{mailbox}")
        if self.index is not None:
            self.index.note(mailbox, "inbox", email_id)

    # -- reading mail (the index) ----------------------------------------------

    async def _readable(self, verb: str, caller: Caller, name: str) -> None:
        """The caller may read mailbox C{name}: its owner (or root), or, for a directory
        no mailbox is configured for, the directory's owner (as MAILBOX-LIST shows).

        @raise MailboxError: C{mailbox '<name>' does not exist}, absent and not the
            caller's alike.
        """
        if self.index is None:
            raise IOFailure("the mail index is not available")
        mailbox = self.live.current.mailbox(name)
        if mailbox is not None:
            if self._authorize(verb, caller, mailbox).allowed:
                return
        elif is_valid_id(name) and not name.startswith("."):
            owner = await self.run_in_thread(_dir_owner, self.data_dir, name)
            if owner is not None and visible(caller.uid, owner):
                return
        raise MailboxError(f"mailbox '{name}' does not exist")

    async def mail_list(self, caller: Caller, mailbox: str, folder: str | None, limit: int,
                        offset: int, unread: bool) -> list[dict]:
        """MAIL-LIST: a page of a folder, newest first, from the index."""
        folder = _folder(folder, all_=False)
        await self._readable("MAIL-LIST", caller, mailbox)
        limit = min(limit, ROWS_MAX)
        entries = await self.index.query(
            mailbox, lambda index: index.page(folder, limit, offset, unread))
        return [email_row(entry) for entry in entries]

    async def mail_search(self, caller: Caller, mailbox: str, query: str, folder: str | None,
                          sender: str | None, since: str | None, until: str | None,
                          unread: bool | None, trusted: bool | None, limit: int) -> list[dict]:
        """MAIL-SEARCH: messages matching a query and filters, newest first, with snippets."""
        folder = _folder(folder, all_=True)
        try:
            terms = mailquery.parse_query(query)
            low = None if since is None else mailquery.parse_bound("since", since, False)
            high = None if until is None else mailquery.parse_bound("until", until, True)
        except mailquery.QueryError as e:
            raise MalformedError(str(e)) from None
        await self._readable("MAIL-SEARCH", caller, mailbox)
        limit = min(limit, ROWS_MAX)
        entries = await self.index.query(mailbox, lambda index: index.search(
            terms, folder=folder, sender=sender, since=low, until=high, unread=unread,
            trusted=trusted, limit=limit))
        return [email_row(entry, snippet=True) for entry in entries]

    async def mail_thread(self, caller: Caller, mailbox: str, email_id: str | None,
                          thread_id: str | None, limit: int) -> list[dict]:
        """MAIL-THREAD: a conversation across inbox and sent, oldest first."""
        if (email_id is None) == (thread_id is None):
            raise MalformedError("give exactly one of id and thread_id")
        if email_id is not None and not is_valid_id(email_id):
            raise NotFoundError(f"email id '{email_id}' contains invalid characters")
        await self._readable("MAIL-THREAD", caller, mailbox)
        limit = min(limit, ROWS_MAX)
        entries = await self.index.query(mailbox, lambda index: index.thread(
            email_id=email_id, thread_id=thread_id, limit=limit))
        if entries is None:
            if email_id is not None:
                raise NotFoundError(f"email '{email_id}' not found in mailbox '{mailbox}'")
            raise NotFoundError(f"thread '{thread_id}' not found in mailbox '{mailbox}'")
        return [email_row(entry, text=True) for entry in entries]

    async def _indexed_names(self, verb: str, caller: Caller, mailbox: str | None) -> list[str]:
        if mailbox is not None:
            await self._readable(verb, caller, mailbox)
            return [mailbox]
        if self.index is None:
            raise IOFailure("the mail index is not available")
        return [name for name, _ in await self.run_in_thread(
            visible_mailboxes, self.live.current, self.data_dir, caller.uid, self.passwd)]

    async def index_rebuild(self, caller: Caller, mailbox: str | None) -> list[str]:
        """INDEX-REBUILD: start rebuilding one (or every visible) mailbox's index."""
        names = await self._indexed_names("INDEX-REBUILD", caller, mailbox)
        for name in names:
            self.index.rebuild(name)
        return names

    async def index_status(self, caller: Caller, mailbox: str | None) -> list[dict]:
        """INDEX-STATUS: each (or every visible) mailbox's index state and build progress."""
        names = await self._indexed_names("INDEX-STATUS", caller, mailbox)
        return [self.index.status(name) for name in names]

    # -- the audit log (docs/guardrails.md) -------------------------------------

    async def audit_read(self, caller: Caller, mailbox: str | None, since: str | None,
                         event: str | None, limit: int) -> list[dict]:
        """AUDIT-READ: the last C{limit} records the caller may read, oldest first.

        Root reads every record; anyone else the records of the mailboxes it owns
        (in the live config) since each was last created, whatever C{mailbox} names.
        """
        if self.audit is None:
            raise IOFailure("this daemon keeps no audit log")
        if event is not None and event not in audit.EVENTS:
            raise MalformedError(f"invalid event '{event}': expected one of "
                                 + ", ".join(audit.EVENTS))
        start = None
        if since is not None:
            try:
                micros = mailquery.parse_bound("since", since, False)
            except mailquery.QueryError as e:
                raise MalformedError(str(e)) from None
            start = datetime.datetime.fromtimestamp(micros / 1e6, datetime.timezone.utc)
        uid = caller.uid
        if uid != 0:
            await self.audit.ready()
        owned = {mb.name: self.audit.created(mb.name) for mb in self.live.current.mailboxes
                 if visible(uid, self.passwd.owner(mb.owner).uid)}

        def keep(record: dict) -> bool:
            return (audit.visible(record, uid, owned)
                    and audit.matches(record, mailbox=mailbox, since=start, event=event))

        return await self.audit.read(keep, min(limit, AUDIT_ROWS_MAX), start)

    # -- misc ------------------------------------------------------------------

    def version(self) -> dict[str, str]:
        """VERSION."""
        return version_fields()


def _read_draft(message: bytes, text_only: bool, html_body: bytes | None):
    """The header block checked and the body read (blocking: a thread's work)."""
    lines, body = submission.check_header_block(message)
    return read_draft(lines, body, text_only=text_only, html_body=html_body)


def _folder(folder: str | None, all_: bool) -> str | None:
    """C{inbox} (the default), C{sent}, or with C{all_} C{all} (the default then: C{None})."""
    if folder is None:
        return None if all_ else "inbox"
    if folder in FOLDERS:
        return folder
    if all_ and folder == "all":
        return None
    choices = '"inbox", "sent" or "all"' if all_ else '"inbox" or "sent"'
    raise MalformedError(f"invalid folder '{folder}': expected {choices}")


def _dir_owner(data_dir: str, name: str) -> int | None:
    """The uid owning C{inbox/<name>} when it is a real directory (blocking)."""
    try:
        st = os.lstat(os.path.join(data_dir, "inbox", name))
    except OSError:
        return None
    return st.st_uid if stat.S_ISDIR(st.st_mode) else None
