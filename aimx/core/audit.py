"""The audit log's records (L0, pure): what each line says, who may read it, its text.

docs/guardrails.md, "Audit": one JSON object per line in C{<audit_dir>/YYYY-MM-DD.jsonl}
for every inbound verdict (L{inbound}), every SEND decision (L{send}), every
change to a held message (L{held}) and every mailbox or hook change (L{change};
L{changes} for root's direct edit of config.toml while no daemon runs), plus
configuration reloads (L{reloaded}).  The builders here take the values the
daemon decided with; L{aimx.auditlog} stamps the time (L{stamped}) and writes
the line (L{line}); readers filter with L{matches} and L{visible} (which starts a
mailbox's history at its L{created} record).  What a record
says about a mailbox's correspondents (the recipients it delivered to, the
trusted senders it stored) and its sends is L{known_from}, L{counts_send} and
L{forgets}: the outbound policy's facts rest on these root-only records, never
on the mailbox's files, which its owner can write (docs/guardrails.md).
"""

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # types only
    from aimx.core.hookspec import Planned
    from aimx.core.received import Ingested

INBOUND, SEND, HELD, MAILBOX, HOOK, CONFIG = "inbound", "send", "held", "mailbox", "hook", "config"
EVENTS = (INBOUND, SEND, HELD, MAILBOX, HOOK, CONFIG)
#: SEND decisions.
SENT, REFUSED, HELD_BACK = "sent", "refused", "held"
#: Held-message actions.
APPROVED, REJECTED, EXPIRED, DECISION_REFUSED = "approved", "rejected", "expired", "refused"
#: The longest text value kept, and the most items of a list (the rest are counted).
MAX_TEXT = 1024
MAX_ITEMS = 100
#: A line longer than this is not read back (a file edited by hand, a damaged one).
MAX_LINE = 256 * 1024


def inbound(ingested: "Ingested", planned: Sequence["Planned"], sender: str) -> dict:
    """One stored copy's verdict: trust, risk, and each hook fired or why not.

    @param sender: the address the hook rate counts (L{aimx.hooks}).
    """
    envelope, verdict = ingested.prepared.envelope, ingested.verdict
    auth = ingested.prepared.auth
    author = ingested.parsed.identity.author
    return {
        "event": INBOUND,
        "mailbox": ingested.mailbox.name,
        "id": ingested.stored.id,
        "message_id": ingested.parsed.message_id,
        "sha256": ingested.prepared.raw_sha256,
        "from": ingested.parsed.from_,
        "from_address": author.address if author is not None else None,
        "sender": sender,
        "mail_from": envelope.mail_from,
        "rcpt": ingested.rcpt,
        "peer": envelope.peer_ip,
        "dkim": auth.dkim,
        "spf": auth.spf,
        "dmarc": auth.dmarc,
        "trusted": verdict.trusted,
        "trust_reason": verdict.reason,
        "risk": "review" if ingested.risk_reasons else None,
        "risk_reasons": list(ingested.risk_reasons),
        "hooks": [{"name": p.hook.name, "fired": p.skipped is None,
                   **({"skipped": p.skipped} if p.skipped else {})} for p in planned],
    }


def send(*, mailbox: str, caller_uid: int | None, author: str, recipients: Sequence[str],
         sha256: str, decision: str, rule: str = "", reason: str = "",
         hold_id: str | None = None, message_id: str | None = None,
         outcome: str | None = None, delivered: Sequence[str] = (),
         counted: bool = True) -> dict:
    """One SEND's fate: L{SENT} (with its C{outcome}), L{REFUSED} (the rule and the
    reason the caller was told) or L{HELD_BACK} (the hold id).

    @param sha256: of the submitted message, as the client sent it.
    @param delivered: the recipients it reached (L{delivered}).
    @param counted: C{False} for a send that never left (it gives its place in the
        rate windows back; written as C{"counted": false}).
    """
    return {
        "event": SEND, "mailbox": mailbox, "caller_uid": caller_uid, "from": author,
        "recipients": list(recipients), "sha256": sha256, "decision": decision,
        "rule": rule or None, "reason": reason or None, "hold_id": hold_id,
        "message_id": message_id, "outcome": outcome, "delivered": list(delivered) or None,
        "counted": None if counted else False,
    }


def held(*, action: str, mailbox: str, hold_id: str, by: str, caller_uid: int | None,
         reason: str | None = None, message_id: str | None = None,
         outcome: str | None = None, delivered: Sequence[str] = ()) -> dict:
    """A held message approved (and its delivery's C{outcome}), rejected, expired, or a
    decision refused (the caller may not decide: C{reason} says why).

    @param by: who decided (a user name, C{aimx} for expiry, or what an approval by
        mail names).
    @param delivered: the recipients an approved message reached (L{delivered}).
    """
    return {
        "event": HELD, "mailbox": mailbox, "hold_id": hold_id, "action": action, "by": by,
        "caller_uid": caller_uid, "reason": reason, "message_id": message_id,
        "outcome": outcome, "delivered": list(delivered) or None,
    }


def change(what: str, action: str, *, mailbox: str, caller_uid: int | None,
           **details: Any) -> dict:
    """A mailbox (C{what} = L{MAILBOX}) or hook (L{HOOK}) created or deleted, a hook
    enabled, disabled (a webhook's 410, C{caller_uid} C{None}) or its dead letters
    retried, by whom.

    @param details: what changed (the owner, the hook's name, event and argv, ...).
    """
    return {"event": what, "action": action, "mailbox": mailbox, "caller_uid": caller_uid,
            **details}


def hook_created(hook, *, mailbox: str, caller_uid: int | None) -> dict:
    """A hook created: its name, event and flags, and its argv or (a webhook) its URL
    and URL flags; never a webhook's secret nor where it is kept."""
    if hook.type == "webhook":
        what = {"type": "webhook", "url": hook.url, "allow_insecure": hook.allow_insecure,
                "allow_private": hook.allow_private}
    else:
        what = {"cmd": list(hook.cmd)}
    return change(HOOK, "created", mailbox=mailbox, caller_uid=caller_uid, hook=hook.name,
                  hook_event=hook.event, **what, fire_on_untrusted=hook.fire_on_untrusted,
                  fire_on_review=hook.fire_on_review)


def changes(old, new, caller_uid: int | None) -> list[dict]:
    """The L{change} records between two configs (root's direct edit, no daemon up):
    mailboxes created or deleted, then hooks created or deleted."""
    out = []
    for mb in new.mailboxes:
        if old.mailbox(mb.name) is None:
            out.append(change(MAILBOX, "created", mailbox=mb.name, caller_uid=caller_uid,
                              owner=mb.owner, address=mb.address))
    for mb in old.mailboxes:
        if new.mailbox(mb.name) is None:
            out.append(change(MAILBOX, "deleted", mailbox=mb.name, caller_uid=caller_uid,
                              owner=mb.owner))
    for mb in new.mailboxes:
        before = old.mailbox(mb.name)
        names = {h.name for h in before.hooks} if before is not None else set()
        out += [hook_created(h, mailbox=mb.name, caller_uid=caller_uid)
                for h in mb.hooks if h.name not in names]
    for mb in old.mailboxes:
        after = new.mailbox(mb.name)
        if after is None:
            continue
        names = {h.name for h in after.hooks}
        out += [change(HOOK, "deleted", mailbox=mb.name, caller_uid=caller_uid, hook=h.name)
                for h in mb.hooks if h.name not in names]
    return out


def reloaded(mailboxes: int, hooks: int) -> dict:
    """config.toml re-read on SIGHUP (root's alone to read: it names no mailbox)."""
    return {"event": CONFIG, "action": "reloaded", "mailboxes": mailboxes, "hooks": hooks}


def outcome(deliveries: Sequence[Mapping[str, Any]] | None) -> str:
    """One word for a send's per-recipient statuses: C{delivered} (all), C{deferred} or
    C{failed} (all of them so), else C{partial}."""
    statuses = {d.get("status") for d in deliveries or ()}
    if len(statuses) == 1:
        return str(statuses.pop())
    return "partial" if statuses else "delivered"


def delivered(deliveries: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """The recipients a send's per-recipient statuses say were delivered to."""
    return [d["rcpt"] for d in deliveries or ()
            if d.get("status") == "delivered" and isinstance(d.get("rcpt"), str)]


def known_from(record: Mapping[str, Any]) -> tuple[str, list[str]] | None:
    """The mailbox a record makes addresses known to, and those addresses (lower-cased).

    Known: the recipients a SEND let go (L{SENT}) or an approved hold was delivered
    to, and the From address of mail stored with C{trusted = "true"}.
    """
    mailbox, event = record.get("mailbox"), record.get("event")
    if not isinstance(mailbox, str):
        return None
    if event == INBOUND and record.get("trusted") == "true":
        found = [record.get("from_address")]
    elif (event == SEND and record.get("decision") == SENT) or (
            event == HELD and record.get("action") == APPROVED):
        found = record.get("delivered")
        if not isinstance(found, list):
            return None
    else:
        return None
    # A list cut by L{line} ends in "… N more", which is no address.
    return mailbox, [a.lower() for a in found if isinstance(a, str) and "@" in a]


def counts_send(record: Mapping[str, Any]) -> str | None:
    """The mailbox whose rate windows a record counts a message for, or C{None}: a
    SEND let go (unless it never left) or a held message approved."""
    mailbox, event = record.get("mailbox"), record.get("event")
    if not isinstance(mailbox, str):
        return None
    if event == SEND and record.get("decision") == SENT and record.get("counted") is not False:
        return mailbox
    if event == HELD and record.get("action") == APPROVED:
        return mailbox
    return None


def forgets(record: Mapping[str, Any]) -> str | None:
    """The mailbox whose correspondents a record forgets (created or deleted: a new
    mailbox of an old name knows nobody)."""
    mailbox = record.get("mailbox")
    if record.get("event") == MAILBOX and record.get("action") in ("created", "deleted") and (
            isinstance(mailbox, str)):
        return mailbox
    return None


def stamped(record: Mapping[str, Any], when: datetime) -> dict:
    """The record with its C{time} first (RFC 3339, UTC, microseconds, C{Z})."""
    return {"time": rfc3339(when), **record}


def rfc3339(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def day(when: datetime) -> str:
    """The file a record of C{when} goes in: C{YYYY-MM-DD.jsonl} (UTC)."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d") + ".jsonl"


def line(record: Mapping[str, Any]) -> bytes:
    """The record as one JSON line: C{None} values left out, texts cut at L{MAX_TEXT}
    characters and lists at L{MAX_ITEMS} items (with the count of the rest)."""
    return (json.dumps(_bounded(record), ensure_ascii=False, separators=(",", ":"))
            + "\n").encode("utf-8")


def _bounded(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT else value[:MAX_TEXT] + "…"
    if isinstance(value, Mapping):
        return {k: _bounded(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        kept = [_bounded(v) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            kept.append(f"… {len(value) - MAX_ITEMS} more")
        return kept
    return value


def parse_line(raw: bytes) -> dict | None:
    """A line read back, or C{None} when it is not a record (too long, not JSON, no time)."""
    if len(raw) > MAX_LINE:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("time"), str):
        return None
    return record


def when(record: Mapping[str, Any]) -> datetime | None:
    """The record's time, or C{None} when it does not read."""
    try:
        return datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
    except (KeyError, ValueError, AttributeError):
        return None


def matches(record: Mapping[str, Any], *, mailbox: str | None = None,
            since: datetime | None = None, event: str | None = None) -> bool:
    """Whether a record passes the reader's filters (each C{None}: any)."""
    if mailbox is not None and record.get("mailbox") != mailbox:
        return False
    if event is not None and record.get("event") != event:
        return False
    if since is not None:
        at = when(record)
        if at is None or at < since:
            return False
    return True


def created(record: Mapping[str, Any]) -> str | None:
    """The mailbox a record says was created: its owner's records start there."""
    mailbox = record.get("mailbox")
    if record.get("event") == MAILBOX and record.get("action") == "created" and (
            isinstance(mailbox, str)):
        return mailbox
    return None


def visible(record: Mapping[str, Any], uid: int,
            owned: Mapping[str, datetime | None]) -> bool:
    """Root reads every record; anyone else those of the mailboxes it owns now, from
    the latest record of the mailbox's creation on: the records before it are an
    earlier owner's of the same name (a deleted mailbox's history never passes on).

    @param owned: each mailbox the reader owns now, with when it was last created
        (C{None}: no record says, every record of it is the reader's).
    """
    if uid == 0:
        return True
    mailbox = record.get("mailbox")
    if not isinstance(mailbox, str) or mailbox not in owned:
        return False
    start = owned[mailbox]
    if start is None:
        return True
    at = when(record)
    # At the very moment of the creation only the creation itself is the owner's.
    return at is not None and (at > start or (at == start and created(record) == mailbox))


def summary(record: Mapping[str, Any]) -> str:
    """One line of text for C{aimx audit}: time, event, mailbox, then what happened."""
    head = f"{record.get('time', '?')} {record.get('event', '?')} {record.get('mailbox', '-')}"
    event = record.get("event")
    if event == INBOUND:
        hooks = ", ".join(
            f"{h.get('name')} {'fired' if h.get('fired') else 'skipped (' + str(h.get('skipped')) + ')'}"
            for h in record.get("hooks") or ())
        risk = record.get("risk") or "none"
        if record.get("risk_reasons"):
            risk += " (" + ", ".join(record["risk_reasons"]) + ")"
        return (f"{head} from={record.get('sender') or record.get('from') or '-'} "
                f"trusted={record.get('trusted')} risk={risk} hooks: {hooks or 'none'}")
    if event == SEND:
        to = ", ".join(record.get("recipients") or ())
        text = f"{head} {record.get('decision')} to={to or '-'} caller_uid={record.get('caller_uid')}"
        if record.get("decision") == REFUSED:
            return f"{text}: {record.get('reason') or record.get('rule')}"
        if record.get("decision") == HELD_BACK:
            return f"{text} hold_id={record.get('hold_id')}: {record.get('reason')}"
        return f"{text} {record.get('message_id')} {record.get('outcome')}"
    if event == HELD:
        text = f"{head} {record.get('action')} {record.get('hold_id')} by={record.get('by')}"
        extra = record.get("reason") or record.get("outcome")
        return f"{text}: {extra}" if extra else text
    details = {k: v for k, v in record.items() if k not in ("time", "event", "mailbox")}
    return f"{head} " + " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}"
                                 for k, v in details.items())
