"""What a hook fire is made of (L0, pure): selection, gates, environment, log fields.

docs/hooks.md: the hooks of a mailbox that run for an event and why the others do
not (the order, the trust gate, the review gate of docs/guardrails.md, the
per-sender rate, the fire-time argv check, the catchall refusal: L{plan}), the
child's environment ("Environment") and the fields of the event logged after a
fire ("What the log says").  Spawning the process is L{aimx.hooks}' job.
"""

import os.path
from collections.abc import Mapping, Sequence
from datetime import datetime

import attrs

from aimx.core.config import HookConfig, MailboxConfig
from aimx.core.events import AFTER_SEND
from aimx.core.frontmatter import rfc3339_utc
from aimx.core.risk import REVIEW
from aimx.core.trust import hook_fires


#: Why a hook of an event does not fire (L{Planned.skipped}, the audit's words).
TRUST = "trust"
RISK = "review"
RATE = "rate"
CATCHALL = "catchall"
ARGV = "argv"
HOUR = 3600


@attrs.frozen
class HookEvent:
    """One event the hooks of a mailbox fire for: what each of them is told.

    @ivar event: L{aimx.core.events.ON_RECEIVE} or L{AFTER_SEND}.
    @ivar mailbox: the routed (on_receive) or sending (after_send) mailbox.
    @ivar filepath: the stored C{.md}, also the stdin source; C{""} when nothing was
        persisted (a deferred send).
    @ivar id: the file stem, C{""} when nothing was persisted.
    @ivar message_id: without C{<>} for on_receive, with them for after_send.
    @ivar date: RFC 3339: the message's date (on_receive), the fire time (after_send).
    @ivar trusted: the stored C{trusted} value; L{None} for after_send (no gate).
    @ivar send_status: the overall send result; L{None} for on_receive.
    @ivar risk: the stored C{risk} value (C{"review"}) or L{None}.
    """

    event: str
    mailbox: MailboxConfig
    filepath: str
    id: str
    from_: str
    to: str
    subject: str
    message_id: str
    date: str
    trusted: str | None = None
    send_status: str | None = None
    risk: str | None = None


def sent(
    mailbox: MailboxConfig,
    status: str,
    *,
    from_: str,
    to: str,
    subject: str,
    message_id: str,
    filepath: str,
    now: datetime,
) -> HookEvent:
    """The after_send event of one send attempt.

    @param status: C{delivered}, C{failed}, C{deferred} (or C{partial}, README).
    @param from_: the raw C{From:} header of the submission.
    @param to: the raw C{To:} header.
    @param message_id: the outbound Message-ID with C{<>}.
    @param filepath: the sent copy, C{""} when none was written.
    @param now: the fire time (C{AIMX_DATE}).
    """
    stem = os.path.splitext(os.path.basename(filepath))[0]
    return HookEvent(
        AFTER_SEND, mailbox, filepath, stem, from_, to, subject, message_id,
        rfc3339_utc(now), send_status=status,
    )


def hooks_for(event: HookEvent) -> tuple[HookConfig, ...]:
    """The mailbox's hooks for this event, in config order."""
    return tuple(hook for hook in event.mailbox.hooks if hook.event == event.event)


def refuses_catchall(event: HookEvent, domain: str) -> bool:
    """Whether the mailbox is the catchall yet has hooks: fire none of them."""
    return bool(event.mailbox.hooks) and event.mailbox.is_catchall(domain)


def gated(event: HookEvent, hook: HookConfig) -> str | None:
    """The gate that holds this hook back, L{TRUST} or L{RISK}, else C{None}.

    after_send has no gate; on_receive needs C{trusted = "true"} unless the hook
    sets C{fire_on_untrusted}, and no C{risk = "review"} unless it sets
    C{fire_on_review} (docs/guardrails.md, "Risk").
    """
    if event.trusted is None:
        return None
    if not hook_fires(event.trusted, hook.fire_on_untrusted):
        return TRUST
    if event.risk == REVIEW and not hook.fire_on_review:
        return RISK
    return None


@attrs.frozen
class Planned:
    """One hook of an event and whether it fires.

    @ivar skipped: why not (L{TRUST}, L{RISK}, L{RATE}, L{CATCHALL}, L{ARGV}), or
        C{None}: it fires.
    """

    hook: HookConfig
    skipped: str | None = None


def plan(event: HookEvent, domain: str) -> tuple[Planned, ...]:
    """The event's hooks in config order, each with why it does not fire (if so)."""
    hooks = hooks_for(event)
    if refuses_catchall(event, domain):
        return tuple(Planned(hook, CATCHALL) for hook in hooks)
    return tuple(Planned(hook, gated(event, hook) or (ARGV if argv_error(hook) else None))
                 for hook in hooks)


def fires(planned: Sequence[Planned]) -> bool:
    """Whether any hook of the plan would fire."""
    return any(p.skipped is None for p in planned)


def over_rate(planned: Sequence[Planned]) -> tuple[Planned, ...]:
    """The plan with every hook that would fire held back by the sender's rate."""
    return tuple(attrs.evolve(p, skipped=RATE) if p.skipped is None else p for p in planned)


def rate_allows(fired: Sequence[float], now: float, per_hour: int) -> bool:
    """Whether a sender whose mail fired hooks at C{fired} may fire them again at C{now}:
    fewer than C{per_hour} in the rolling hour before it (docs/guardrails.md, "Hook rate")."""
    return sum(1 for t in fired if t > now - HOUR) < per_hour


def argv_error(hook: HookConfig) -> str | None:
    """Why C{cmd} cannot be exec'd as it stands (re-checked at fire time); a webhook
    has no C{cmd}."""
    if hook.type == "webhook":
        return None
    if not hook.cmd or not hook.cmd[0].strip():
        return "empty cmd"
    if not hook.cmd[0].startswith("/"):
        return f"cmd[0] '{hook.cmd[0]}' is not an absolute path"
    return None


def argv(cmd: tuple[str, ...], drop: tuple[int, int] | None, unshare: str | None) -> list[str]:
    """What the daemon execs for C{cmd}: C{cmd} itself, or, to run it as another user,
    util-linux unshare, which (creating no namespace) clears the supplementary
    groups, sets the gid, then the uid, and only then execs C{cmd} (docs/design.md,
    "Hooks").

    @param drop: the uid and primary gid to run as; L{None} keeps the daemon's ids.
    @param unshare: the path of unshare; only read with C{drop}.
    """
    if drop is None:
        return list(cmd)
    uid, gid = drop
    return [unshare, f"--setgid={gid}", f"--setuid={uid}", "--", *cmd]


def environment(event: HookEvent, hook: HookConfig, daemon_env: Mapping[str, str],
                home: str | None = None) -> dict:
    """The child's whole environment: C{PATH}, C{HOME}, then the C{AIMX_*} values.

    Values are passed verbatim, except that NUL (which an environment cannot carry)
    is dropped; the stored file on stdin keeps it, escaped.

    @param daemon_env: the daemon's environment; only C{PATH} and C{HOME} are copied.
    @param home: the owner's home when the hook runs as an owner other than the
        daemon's user: it replaces the daemon's C{HOME} (root's, under systemd), so
        an agent started by the hook finds its own configuration.
    """
    env = {key: daemon_env[key] for key in ("PATH", "HOME") if key in daemon_env}
    if home:
        env["HOME"] = home
    values = {
        "AIMX_HOOK_NAME": hook.name,
        "AIMX_EVENT": event.event,
        "AIMX_MAILBOX": event.mailbox.name,
        "AIMX_FROM": event.from_,
        "AIMX_TO": event.to,
        "AIMX_SUBJECT": event.subject,
        "AIMX_FILEPATH": event.filepath,
        "AIMX_MESSAGE_ID": event.message_id,
        "AIMX_ID": event.id,
        "AIMX_DATE": event.date,
    }
    if event.send_status is not None:
        values["AIMX_SEND_STATUS"] = event.send_status
    env.update((key, value.replace("\0", "")) for key, value in values.items())
    return env


def result_fields(
    event: HookEvent,
    hook: HookConfig,
    *,
    sandbox: str,
    exit_code: int,
    duration_ms: int,
    timed_out: bool,
    stderr: bytes,
) -> dict:
    """The fields of the event logged after every fire, in order.

    The message is identified by C{email_id}, or by C{message_id} when nothing was
    persisted (a deferred send); C{stderr_tail} is the captured stderr, lossily
    decoded (the log line quotes it and cuts a long one in the middle).

    @param sandbox: C{setuid}, or C{-} when nothing was spawned.
    """
    if not event.id and event.message_id:
        ident = {"message_id": event.message_id}
    else:
        ident = {"email_id": event.id}
    return {
        "hook_name": hook.name,
        "event": event.event,
        "mailbox": event.mailbox.name,
        "owner": event.mailbox.owner,
        "sandbox": sandbox,
        **ident,
        "exit_code": exit_code,
        "duration_ms": duration_ms,
        "timed_out": timed_out,
        "stderr_tail": stderr.decode("utf-8", "replace"),
    }
