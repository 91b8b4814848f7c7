"""Approving held mail by mail (L0, pure): the notification, and what a reply says.

docs/guardrails.md, "Approving by mail".  With C{[approval] notify} set, each hold
is announced to that address from C{postmaster@<domain>} (L{notification}), its
subject carrying the hold's token: C{[aimx hold <hold-id> <secret>]}, the secret
128 random bits of which the hold keeps only the SHA-256 (L{digest}, compared in
constant time by L{matches}).  Mail to the approval address
(L{aimx.core.config.is_approval_address}) that carries a token (L{carries_token})
is the daemon's, never a mailbox's; L{read_reply} says whether it decides the
hold: an author that is exactly the notify address with an aligned DKIM signature
that passes (the trust verdict of L{aimx.core.trust}; SPF never counts), one token,
and a first line of new text that is C{approve} or C{reject [reason]}.
"""

import hashlib
import hmac
import re
from datetime import datetime
from email.header import Header
from email.utils import format_datetime

import attrs

from aimx.core import replytext, trust
from aimx.core.assemble import Draft
from aimx.core.authresults import AuthResults
from aimx.core.config import APPROVAL_LOCAL, Config, is_approval_address, resolve_mailbox
from aimx.core.message import ParsedMessage

APPROVE, REJECT = "approve", "reject"
#: Random bytes of a token's secret (128 bits).
SECRET_BYTES = 16
#: The longest held text a notification shows (characters).
TEXT_CAP = 64 * 1024
#: The longest original subject a notification's subject repeats (characters).
SUBJECT_CAP = 200
#: The longest reason a rejecting reply gives (characters).
REASON_CAP = 500
#: How much of a body is searched for a token (characters): the quoted
#: notification's comes early, and the search runs on the reactor.
BODY_SEARCH_CAP = 1024 * 1024
_TOKEN = re.compile(r"\[aimx hold (\d{8}-\d{6}-[0-9a-f]{8}) ([0-9a-f]{32})\]")
_APPROVE = re.compile(r"approve[.!]?", re.ASCII | re.IGNORECASE)
_REJECT = re.compile(r"reject(?:[.!]?|[.!]?[\s:,;-]+(?P<reason>.*))", re.ASCII | re.IGNORECASE)


def digest(secret: str) -> str:
    """What a hold keeps of its token's secret: its SHA-256, hex."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def matches(kept: object, secret: str) -> bool:
    """Whether C{secret} is the one whose L{digest} the hold kept (constant time)."""
    return isinstance(kept, str) and hmac.compare_digest(kept, digest(secret))


def token(hold_id: str, secret: str) -> str:
    """The token as the subject carries it."""
    return f"[aimx hold {hold_id} {secret}]"


def carries_token(parsed: ParsedMessage) -> bool:
    """Whether a message's subject or body (its first L{BODY_SEARCH_CAP} characters)
    holds something shaped like a token."""
    return bool(_TOKEN.search(parsed.identity.subject)
                or _TOKEN.search(parsed.body, 0, BODY_SEARCH_CAP))


def claims(config: Config, rcpt: str, parsed: ParsedMessage) -> bool:
    """Whether C{rcpt}'s copy of a message is an approval reply, stored in no mailbox:
    C{rcpt} is the approval address and either no mailbox routes it or the message
    carries a token (so a C{postmaster} mailbox or the catchall keeps the rest)."""
    return is_approval_address(config, rcpt) and (
        resolve_mailbox(config, rcpt) is None or carries_token(parsed))


def retry_policy(config: Config) -> tuple[str, tuple[str, ...]]:
    """The trust policy an approval reply is read under, as L{aimx.core.trust.must_retry}
    takes it: a temporary DNS failure on the notify domain's key asks for a retry."""
    return "verified", (trust.literal(config.approval.notify or ""),)


def sender(domain: str) -> str:
    """The address notifications come from and replies go to."""
    return f"{APPROVAL_LOCAL}@{domain}"


def notification(fields: dict, text: str, *, hold_id: str, secret: str, notify: str,
                 domain: str, now: datetime, message_id: str, note: str | None = None) -> Draft:
    """The notification of a hold, ready to assemble and sign (plain text only).

    @param fields: the hold's frontmatter (L{aimx.core.heldmail.render}).
    @param text: the held message's text; past L{TEXT_CAP} it is cut, saying so.
    @param message_id: the notification's own C{<id@domain>}.
    @param note: a line to put first (why the hold is announced again).
    """
    original = " ".join(str(fields.get("subject") or "").split())[:SUBJECT_CAP]
    subject = Header(token(hold_id, secret), "us-ascii", header_name="Subject")
    if original:
        subject.append(original, "us-ascii" if original.isascii() else "utf-8")
    folded = subject.encode(linesep="\n").split("\n")
    header_lines = (
        f"From: aimx <{sender(domain)}>",
        f"To: {notify}",
        f"Subject: {folded[0]}", *folded[1:],
        f"Date: {format_datetime(now)}",
        f"Message-ID: {message_id}",
        # RFC 3834 §5: an automatic message; auto-responders leave it alone.
        "Auto-Submitted: auto-generated",
    )
    body = _body(fields, text, hold_id, secret)
    if note:
        body = " ".join(note.split()) + "\n\n" + body
    return Draft(header_lines, body, text_only=True)


def _body(fields: dict, text: str, hold_id: str, secret: str) -> str:
    rows = [("Hold", hold_id), ("Mailbox", fields.get("mailbox")),
            ("Why", fields.get("held_reason")), ("From", fields.get("from")),
            ("To", fields.get("to")), ("Cc", fields.get("cc")),
            ("Bcc", ", ".join(fields.get("bcc") or ())),
            ("Subject", fields.get("subject")), ("Expires", fields.get("expires_at"))]
    lines = [
        "A message is held for your approval.",
        "",
        'Reply with "approve" or "reject" as the first line of your reply; after',
        '"reject" you may give a reason ("reject: not a customer").  Anything else',
        "is ignored.  Undecided, it is rejected when it expires.",
        f"The reply carries this token (in its subject, or quoted): {token(hold_id, secret)}",
        "",
        *(f"{name + ':':<9}{' '.join(str(value).split())}" for name, value in rows if value),
    ]
    attachments = [row for row in fields.get("attachments") or () if isinstance(row, dict)]
    if attachments:
        lines += ["", "Attachments:"]
        lines += [f"  - {' '.join(str(a.get('filename', '')).split())} "
                  f"({a.get('size', '?')} bytes, {a.get('content_type', '')})"
                  for a in attachments]
    if fields.get("html_size"):
        lines += ["", f"It also has an HTML version of {fields['html_size']} bytes, not shown."]
    shown = text[:TEXT_CAP]
    lines += ["", "The held message's text, each line after '| ':", ""]
    lines += [f"| {line}" for line in shown.split("\n")]
    if len(text) > len(shown):
        lines.append(f"[... {len(text) - len(shown)} more characters: aimx held show "
                     f"{hold_id}]")
    return "\n".join(lines) + "\n"


@attrs.frozen
class Reply:
    """What a message to the approval address says.

    @ivar action: L{APPROVE} or L{REJECT}; C{None} when it decides nothing.
    @ivar problem: why it decides nothing (for the log), else C{None}.
    @ivar author: its From address as parsed (lower-cased), or C{""}.
    @ivar hold_id: the hold its one token names (also when it decides nothing), or C{""}.
    @ivar secret: its token's secret, only when it decides.
    @ivar reason: the reason a rejecting reply gives, or C{None}.
    """

    action: str | None
    problem: str | None = None
    author: str = ""
    hold_id: str = ""
    secret: str = attrs.field(default="", repr=False)
    reason: str | None = None


def read_reply(notify: str, parsed: ParsedMessage, auth: AuthResults) -> Reply:
    """Whether a message decides a hold, and how (the token still to be checked
    against the hold's L{digest}).

    @param notify: C{[approval] notify}.
    """
    identity = parsed.identity
    author = identity.author.address if identity.author is not None else ""
    found = (set(_TOKEN.findall(identity.subject))
             or set(_TOKEN.findall(parsed.body, 0, BODY_SEARCH_CAP)))
    hold_id, secret = next(iter(found)) if len(found) == 1 else ("", "")

    def ignored(problem: str) -> Reply:
        return Reply(None, problem, author, hold_id)

    if parsed.auto_submitted and parsed.auto_submitted.lower() != "no":
        return ignored(f"an automatic message (Auto-Submitted: {parsed.auto_submitted})")
    if identity.problem() is None and author != notify.lower():
        return ignored(f"from {author}, not {notify}")
    verdict = trust.evaluate("verified", (trust.literal(notify),), identity, auth)
    if verdict.trusted != "true":
        return ignored(f"not authenticated as {notify}: {verdict.reason}")
    if len(found) != 1:
        return ignored("no token" if not found else "more than one token")
    reply = bool(identity.in_reply_to or identity.references)
    first = next((line.strip() for line in replytext.new_text(parsed.body, reply=reply)
                  .split("\n") if line.strip()), "")
    if _APPROVE.fullmatch(first):
        return Reply(APPROVE, None, author, hold_id, secret)
    rejected = _REJECT.fullmatch(first)
    if rejected:
        reason = " ".join((rejected.group("reason") or "").split())[:REASON_CAP] or None
        return Reply(REJECT, None, author, hold_id, secret, reason)
    return ignored("its first line is neither approve nor reject")
