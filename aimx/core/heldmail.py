"""A message held for approval, as its files hold it (L0, pure): docs/guardrails.md.

A hold is two files under C{<data_dir>/held/<mailbox>/}: C{<hold-id>.md}, Markdown
like a sent copy (the frontmatter says who it is from and to, why it waits and
until when; the body is the message's text), and C{<hold-id>.parts}, the bytes
of its HTML alternative and its attachments one after the other, in the order
the frontmatter's C{[[attachments]]} rows (and C{html_size}) give.  Together
they keep everything needed to compose and sign the message at approval
(L{draft}); listing reads only the first file's frontmatter.
"""

import hashlib
import re
from datetime import datetime, timedelta, timezone

from aimx.core import frontmatter
from aimx.core.assemble import Draft
from aimx.core.message import Attachment
from aimx.core.submission import Submission

#: C{YYYYMMDD-HHMMSS-<8 hex>}: when it was held, then 32 random bits.
_HOLD_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{8}")
PENDING, APPROVED, REJECTED, EXPIRED = "pending", "approved", "rejected", "expired"


class Damaged(ValueError):
    """The hold's files do not agree (a part missing, cut or changed)."""


def is_hold_id(text: str) -> bool:
    """Whether C{text} can name a hold (checked before any file is looked up)."""
    return _HOLD_ID.fullmatch(text) is not None


def new_hold_id(now: datetime, token: str) -> str:
    """A hold id: the UTC time, then C{token} (8 random hex digits)."""
    return f"{now.astimezone(timezone.utc):%Y%m%d-%H%M%S}-{token}"


def render(draft: Draft, sub: Submission, *, hold_id: str, reason: str, now: datetime,
           expire_days: int, caller_uid: int | None,
           token_sha256: str | None = None) -> tuple[bytes, bytes]:
    """The two files of a new hold.

    @param draft: the message as it would have been assembled (its files read in).
    @param reason: why it waits (L{aimx.core.outpolicy.SendDecision.reason}).
    @param token_sha256: the digest of its mail-approval token
        (L{aimx.core.approvalmail.digest}), when it is announced by mail.
    @return: the C{.md} file and the C{.parts} file.
    """
    parts = [] if draft.html_body is None else [draft.html_body]
    rows = []
    for attachment in draft.attachments:
        parts.append(attachment.data)
        rows.append({"filename": attachment.filename_raw,
                     "content_type": attachment.content_type,
                     "size": len(attachment.data),
                     "sha256": hashlib.sha256(attachment.data).hexdigest()})
    fields = {
        "hold_id": hold_id,
        "mailbox": sub.mailbox.name,
        "state": PENDING,
        "held_reason": reason,
        "held_at": frontmatter.rfc3339_utc(now),
        "expires_at": frontmatter.rfc3339_utc(now + timedelta(days=expire_days)),
        "caller_uid": caller_uid,
        "token_sha256": token_sha256,
        "message_id": sub.header("message-id"),
        "from": sub.author.formatted(),
        "to": ", ".join(sub.to),
        "cc": ", ".join(sub.cc) or None,
        "bcc": list(sub.bcc),
        "subject": sub.header("subject") or "",
        "text_only": draft.text_only,
        "html_size": None if draft.html_body is None else len(draft.html_body),
        "html_sha256": None if draft.html_body is None
        else hashlib.sha256(draft.html_body).hexdigest(),
        "headers": list(draft.header_lines),
        "attachments": rows,
    }
    return frontmatter.render(fields, draft.text), b"".join(parts)


def draft(fields: dict, body: bytes, parts: bytes) -> Draft:
    """The message a hold keeps, ready to assemble (L{aimx.core.assemble.assemble_draft}).

    @raise Damaged: the parts are not those the frontmatter lists.
    """
    offset = 0

    def take(size, digest) -> bytes:
        nonlocal offset
        if not isinstance(size, int) or size < 0:
            raise Damaged("a part has no size")
        data = parts[offset : offset + size]
        offset += size
        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            raise Damaged("a part is missing or changed")
        return data

    html = None
    if fields.get("html_size") is not None:
        html = take(fields["html_size"], fields.get("html_sha256"))
    attachments = tuple(
        Attachment(str(row.get("filename", "")), str(row.get("content_type", "")),
                   take(row.get("size"), row.get("sha256")))
        for row in fields.get("attachments") or ())
    if offset != len(parts):
        raise Damaged("the parts file is longer than its parts")
    headers = fields.get("headers")
    if not (isinstance(headers, list) and all(isinstance(h, str) for h in headers)):
        raise Damaged("the hold has no header lines")
    return Draft(headers, body.decode("utf-8"), attachments,
                 fields.get("text_only") is True, html)


def decided(data: bytes, state: str, *, by: str, at: datetime, reason: str | None) -> bytes:
    """The C{.md} file of a hold once decided: its fields with C{state}, who and when.

    @param by: who decided (a user name, C{uid <n>}, or C{aimx} for an expiry).
    """
    fields, body = frontmatter.parse(data)
    fields.update(state=state, decided_by=by, decided_at=frontmatter.rfc3339_utc(at),
                  decision_reason=reason)
    return frontmatter.render(fields, body.decode("utf-8"))


def with_token(data: bytes, token_sha256: str | None) -> bytes:
    """The C{.md} file of a pending hold with its mail-approval token replaced
    (C{None}: spent, none left)."""
    fields, body = frontmatter.parse(data)
    fields["token_sha256"] = token_sha256
    return frontmatter.render(fields, body.decode("utf-8"))


def expired(fields: dict, now: datetime) -> bool:
    """Whether a pending hold's C{expires_at} has come (an unreadable one: yes)."""
    try:
        when = datetime.fromisoformat(str(fields.get("expires_at")))
    except ValueError:
        return True
    return when.tzinfo is None or when <= now


#: What a listing shows of a hold, in this order.
ROW_KEYS = ("hold_id", "mailbox", "state", "from", "to", "cc", "subject", "held_reason",
            "held_at", "expires_at")


def row(fields: dict) -> dict:
    """A hold's listing row (L{ROW_KEYS}; missing values empty) plus its attachment count."""
    out = {key: fields.get(key) or "" for key in ROW_KEYS}
    out["bcc"] = [b for b in fields.get("bcc") or () if isinstance(b, str)]
    out["attachments"] = len(fields.get("attachments") or ())
    return out
