"""The outbound policy and the one decision every SEND goes through (L0, pure).

docs/guardrails.md: a mailbox's C{[mailboxes.<name>.outbound]} table and the
top-level C{[outbound]} default (a mailbox's key replaces the default's key of the
same name, lists included: L{effective}).  L{decide} turns a send's facts (its
recipients, the files it attaches, the mailbox's recent sends, the recipients it
already knows) into one L{SendDecision}: send, refuse (naming the rule) or hold
for a person's approval.  The daemon gathers the facts (L{aimx.control.ops}) and
acts on the value; nothing else decides.
"""

import posixpath
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta, timezone

import attrs

from aimx.core.trust import glob_match

#: The keys of an C{[outbound]} table, in the order docs/guardrails.md lists them.
KEYS = ("allow", "deny", "max_recipients", "max_per_hour", "max_per_day", "approval",
        "attachment_roots", "allow_raw_attachments")
NEVER, NEW_RECIPIENTS, ALWAYS = "never", "new-recipients", "always"
APPROVAL_MODES = (NEVER, NEW_RECIPIENTS, ALWAYS)
HOUR, DAY = 3600, 86400

SEND, REFUSE, HOLD = "send", "refuse", "hold"


@attrs.frozen
class OutboundPolicy:
    """One C{[outbound]} table as written: C{None} is a key the table does not set.

    @ivar allow: recipient patterns (as C{trusted_senders}); unset: anyone.
    @ivar deny: recipient patterns refused even when allowed.
    @ivar max_recipients: To+Cc+Bcc addresses per message.
    @ivar max_per_hour: messages in any rolling hour; C{max_per_day} in any 24 h.
    @ivar approval: L{NEVER} (when unset), L{NEW_RECIPIENTS} or L{ALWAYS}.
    @ivar attachment_roots: absolute directories attachments may come from; unset:
        the owner's home.
    @ivar allow_raw_attachments: a raw SEND may carry its own attachment parts.
    """

    allow: tuple[str, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(tuple))
    deny: tuple[str, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(tuple))
    max_recipients: int | None = None
    max_per_hour: int | None = None
    max_per_day: int | None = None
    approval: str | None = None
    attachment_roots: tuple[str, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(tuple))
    allow_raw_attachments: bool | None = None


def effective(default: OutboundPolicy | None,
              mailbox: OutboundPolicy | None) -> OutboundPolicy | None:
    """The policy a mailbox sends under: its own keys over the default's, no merging.

    @return: C{None} when neither table exists (no policy: only the attachment
        rules apply, with their defaults).
    """
    if default is None or mailbox is None:
        return mailbox if default is None else default
    own = {key: value for key in KEYS if (value := getattr(mailbox, key)) is not None}
    return attrs.evolve(default, **own)


@attrs.frozen
class SendDecision:
    """What happens to one SEND (L{decide}); the audit records this value.

    @ivar verdict: L{SEND}, L{REFUSE} or L{HOLD}.
    @ivar rule: the config key that refused or held (C{outbound.deny}, ...), else C{""}.
    @ivar reason: the sentence the caller is told (refusals end with the rule).
    """

    verdict: str
    rule: str = ""
    reason: str = ""


@attrs.frozen
class AttachedFile:
    """What the daemon found out about one attached descriptor, before reading it.

    @ivar given: the path the caller named.
    @ivar real: the descriptor's real path (C{/proc/self/fd/N}), or C{None} when
        it has none any more (deleted, moved, not a file of a directory).
    @ivar regular: it is a regular file.
    """

    given: str
    real: str | None
    regular: bool


def default_roots(home: str | None) -> tuple[str, ...]:
    """The attachment roots of a policy without C{attachment_roots}: the owner's home."""
    return () if home is None else (home,)


@attrs.frozen
class Root:
    """One attachment root as configured, and its real path (resolved by root).

    @ivar path: the configured path.
    @ivar real: C{os.path.realpath} of it when the SEND was checked.
    """

    path: str
    real: str


def root_refusal(root: Root, home: str | None) -> str | None:
    """Why a configured root is no root, or C{None}.

    A root whose path holds a symbolic link is none: whoever can write where the
    link is (the agent, in its own home) could point the root anywhere it reads
    (docs/guardrails.md, "Attachments").  Nor is a root in a dot-directory of the
    owner's home (C{~/.ssh}): the dot rule holds for the root's own path too.
    """
    path = posixpath.normpath(root.path)
    if posixpath.normpath(root.real) != path:
        return (f"attachment root {root.path} is not a real path (it leads to "
                f"{root.real}: a symbolic link is on the way), so it is no root")
    below = _below(home, path) if home is not None else None
    hidden = next((part for part in below or () if part.startswith(".")), None)
    if hidden is not None:
        return (f"attachment root {root.path} is in a dot-directory ({hidden}) of the "
                "owner's home, so it is no root")
    return None


def attachment_refusal(mailbox: str, file: AttachedFile, roots: Sequence[Root],
                       home: str | None = None) -> str | None:
    """Why C{file} may not be attached, or C{None}.

    It must be a regular file, its real path strictly inside one of C{roots} that
    L{root_refusal} accepts (compared with the configured path, which is then its
    real path), and no component below that root may start with a dot.

    @param home: the owner's home (L{root_refusal}).
    """
    rule = "(outbound.attachment_roots)"
    if not file.regular:
        return f"attachment {file.given} is not a regular file {rule}"
    if file.real is None:
        return f"attachment {file.given} was moved or deleted after it was opened {rule}"
    shown = file.given if file.real == file.given else f"{file.given} (really {file.real})"
    refused = [(root, root_refusal(root, home)) for root in roots]
    for root, why in refused:
        below = None if why is not None else _below(root.path, file.real)
        if below is None:
            continue
        hidden = next((part for part in below if part.startswith(".")), None)
        if hidden is not None:
            return (f"attachment {shown} is a dot-file or in a dot-directory ({hidden}), "
                    f"which mailbox {mailbox} never attaches {rule}")
        return None
    for root, why in refused:
        if why is not None and (_below(root.real, file.real) is not None
                                or _below(root.path, file.real) is not None):
            return f"attachment {shown} is refused: {why} {rule}"
    where = ", ".join(root.path for root in roots) if roots else "none"
    return (f"attachment {shown} is outside the attachment roots of mailbox {mailbox} "
            f"({where}) {rule}")


def _below(root: str, path: str) -> list[str] | None:
    """The components of C{path} below C{root}, or C{None} when it is not strictly inside."""
    root, path = posixpath.normpath(root), posixpath.normpath(path)
    if not (root.startswith("/") and path.startswith("/")):
        return None
    prefix = root if root.endswith("/") else root + "/"
    if not path.startswith(prefix) or path == root:
        return None
    return path[len(prefix):].split("/")


def decide(
    mailbox: str,
    policy: OutboundPolicy | None,
    recipients: Sequence[str],
    *,
    now: datetime,
    recent: Sequence[datetime] = (),
    known: Collection[str] = (),
    files: Sequence[AttachedFile] = (),
    roots: Sequence[Root] = (),
    home: str | None = None,
    raw_attachments: bool = False,
) -> SendDecision:
    """The fate of one SEND from C{mailbox}, after authorisation, before anything leaves.

    Refusals in this order: a denied or not-allowed recipient, too many
    recipients, attachment parts in a raw submission, an attached file outside
    the roots, the hourly then the daily rate; then the approval rule may hold it.

    @param recipients: every envelope address (To, Cc, Bcc), each once.
    @param recent: when this mailbox's sends of the last day went (any order).
    @param known: recipients (lower-cased) this mailbox has sent to or has had
        trusted mail from; read only with C{approval = "new-recipients"}.
    @param files: the attached descriptors; checked with or without a policy.
    @param roots: the attachment roots (L{default_roots} when the policy sets none),
        with their real paths.
    @param home: the owner's home (L{root_refusal}).
    @param raw_attachments: the submitted MIME already holds attachment parts.
    """
    if policy is not None:
        refusal = _recipient_refusal(mailbox, policy, recipients)
        if refusal is not None:
            return refusal
        if raw_attachments and not policy.allow_raw_attachments:
            return SendDecision(REFUSE, "outbound.allow_raw_attachments", (
                f"the message holds attachment parts of its own; mailbox {mailbox} takes "
                "attachments only as files (outbound.allow_raw_attachments)"))
    for file in files:
        reason = attachment_refusal(mailbox, file, roots, home)
        if reason is not None:
            return SendDecision(REFUSE, "outbound.attachment_roots", reason)
    if policy is None:
        return SendDecision(SEND)
    for key, limit, window, label in (
        ("max_per_hour", policy.max_per_hour, HOUR, "hour"),
        ("max_per_day", policy.max_per_day, DAY, "24 hours"),
    ):
        if limit is None:
            continue
        inside = sorted(t for t in recent if t > now - timedelta(seconds=window))
        if len(inside) >= limit:
            free = inside[len(inside) - limit] + timedelta(seconds=window)
            return SendDecision(REFUSE, f"outbound.{key}", (
                f"mailbox {mailbox} has sent {len(inside)} messages in the last {label}, "
                f"its limit; the next may go at {_utc(free)} (outbound.{key})"))
    approval = policy.approval or NEVER
    if approval == ALWAYS:
        return SendDecision(HOLD, "outbound.approval", "every message waits for approval")
    if approval == NEW_RECIPIENTS:
        new = [r for r in recipients if r.lower() not in known]
        if new:
            return SendDecision(HOLD, "outbound.approval",
                                "new recipients: " + ", ".join(new))
    return SendDecision(SEND)


def _recipient_refusal(mailbox: str, policy: OutboundPolicy,
                       recipients: Sequence[str]) -> SendDecision | None:
    for rcpt in recipients:
        if any(glob_match(p, rcpt) for p in policy.deny or ()):
            return SendDecision(REFUSE, "outbound.deny",
                                f"{rcpt} is not allowed for mailbox {mailbox} (outbound.deny)")
        if policy.allow is not None and not any(glob_match(p, rcpt) for p in policy.allow):
            return SendDecision(REFUSE, "outbound.allow",
                                f"{rcpt} is not allowed for mailbox {mailbox} (outbound.allow)")
    if policy.max_recipients is not None and len(recipients) > policy.max_recipients:
        return SendDecision(REFUSE, "outbound.max_recipients", (
            f"{len(recipients)} recipients; mailbox {mailbox} may send to at most "
            f"{policy.max_recipients} per message (outbound.max_recipients)"))
    return None


def window_start(now: datetime, policy: OutboundPolicy | None) -> datetime | None:
    """How far back L{decide} needs the mailbox's sends, or C{None} (no rate limit)."""
    if policy is None or (policy.max_per_hour is None and policy.max_per_day is None):
        return None
    return now - timedelta(seconds=DAY if policy.max_per_day is not None else HOUR)


def _utc(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
