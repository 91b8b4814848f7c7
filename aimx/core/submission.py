"""A submitted outbound message, read and checked (L0, pure; docs/security.md, "Sending identity").

The daemon never trusts the client for who sends: the sender is the one mailbox of
the C{From:} field as L{aimx.core.identity} parses it, written as a plain address
(no comment, group, second mailbox, quoted local part or route), and must resolve to
a concrete mailbox of the configured domain; a C{Sender:} field is refused, and the
daemon re-writes the From it signs from the parsed values.
Every To, Cc and Bcc address is an envelope recipient (an aimx decision).
"""

import re

import attrs

from aimx.core.config import Config, MailboxConfig, ascii_lower, resolve_sender
from aimx.core.identity import Mailbox, parse_address_list
from aimx.errors import DomainError, MailboxError, MalformedError

HEADER_CAP = 65_536
MAX_RECIPIENTS = 100
#: Headers a message may carry once (RFC 5322 §3.6): the signature binds one of each.
SINGLE = frozenset({"from", "sender", "to", "cc", "bcc", "subject", "date", "message-id",
                    "in-reply-to", "references", "reply-to"})
NO_SEPARATOR = "outbound request body has no header/body separator (expected blank line)"


def split_message(message: bytes) -> tuple[bytes, bytes] | None:
    """The header block (without the blank line) and the body, or None without a blank line.

    The first empty line ends the header block, whatever its line ending (an earlier
    LF LF is not left inside the header block for a later CRLF CRLF); a message that
    I{starts} with a line ending has an empty header block.
    """
    end = _EMPTY_LINE.search(message)
    if end is None:
        return None
    return message[: end.start()], message[end.end() :]


_EMPTY_LINE = re.compile(rb"(?:^|\r?\n)\r?\n")


def header_lines(head: bytes) -> list[str]:
    """The physical lines of a header block, without their line endings."""
    text = head.decode("utf-8")
    return text.replace("\r\n", "\n").split("\n") if text else []


def scan_headers(message: bytes) -> dict[str, str]:
    """Lower-cased header name -> value: first occurrence, folds joined with one space.

    The header block is the lines before the first empty line (all of them when
    there is none); a block that is not UTF-8 yields nothing.

    @raise MalformedError: the block is over L{HEADER_CAP} (checked first, so a
        hostile submission costs nothing before it is refused).
    """
    split = split_message(message)
    head = message if split is None else split[0]
    if len(head) > HEADER_CAP:
        raise MalformedError("outbound request header block is too large")
    try:
        return unfold(header_lines(head))
    except UnicodeDecodeError:
        return {}


def unfold(lines: list[str]) -> dict[str, str]:
    """Header lines -> {lower-cased name: value}: the first occurrence of each name,
    its folds joined with one space (a repeat and its folds are skipped)."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        if line[:1] in (" ", "\t"):
            if current is not None:
                current.append(line.strip())
        elif ":" in line:
            name, value = line.split(":", 1)
            name = name.strip().lower()
            current = None if name in found else found.setdefault(name, [value.strip()])
        else:
            current = None
    return {name: " ".join(parts).strip() for name, parts in found.items()}


@attrs.frozen(kw_only=True)
class Submission:
    """The checked header facts of a SEND request.

    @ivar author: the parsed From mailbox; the signed From is written from it.
    @ivar sender: its address (the envelope MAIL FROM).
    @ivar headers: the first value of each header, by lower-cased name.
    @ivar to, cc, bcc: bare addresses of each list, in header order.
    """

    mailbox: MailboxConfig
    author: Mailbox
    sender: str
    headers: dict[str, str]
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def recipients(self) -> tuple[str, ...]:
        """Every envelope recipient: To, Cc, Bcc in order, each address once."""
        seen, out = set(), []
        for addr in self.to + self.cc + self.bcc:
            if ascii_lower(addr) not in seen:
                seen.add(ascii_lower(addr))
                out.append(addr)
        return tuple(out)


def check_sender(config: Config, headers: dict[str, str]) -> Submission:
    """The sender: From present, one plain address, our domain, a concrete mailbox.

    @raise MalformedError, DomainError, MailboxError: with the reason named.
    """
    raw = headers.get("from")
    if raw is None:
        raise MalformedError("missing required header: From")
    if "sender" in headers:
        raise MalformedError(
            "a Sender header is not allowed: mail goes out as the From mailbox itself")
    parsed = parse_address_list(raw)
    if parsed.group:
        raise MalformedError(f"From must be one mailbox, not a group: {raw}")
    if len(parsed.mailboxes) > 1:
        raise MalformedError(
            f"From must name exactly one mailbox, not {len(parsed.mailboxes)}: {raw}")
    if parsed.problems or not parsed.mailboxes:
        raise MalformedError(f"could not extract sender address from From: {raw}")
    if parsed.comment:
        raise MalformedError(f"From may not contain a comment: {raw}")
    author = parsed.mailboxes[0]
    if not author.plain:
        raise MalformedError(
            f"From must be a plain address (no quoted local part, literal or route): {raw}")
    sender = author.addr_spec
    domain = author.domain
    if ascii_lower(domain) != ascii_lower(config.domain):
        raise DomainError(
            f"sender domain '{domain}' does not match aimx domain '{config.domain}'"
        )
    mailbox = resolve_sender(config, sender)
    if mailbox is None:
        raise MailboxError(
            f"no mailbox matches From: {sender} (run `aimx mailboxes create <name>` "
            "to register one; catchall is inbound-only)"
        )
    return Submission(mailbox=mailbox, author=author, sender=sender, headers=headers)


def check_recipients(submission: Submission) -> Submission:
    """The recipients: To present; every To, Cc and Bcc entry an address."""
    if submission.header("to") is None:
        raise MalformedError("missing required header: To")
    lists = {}
    for name, label in (("to", "To"), ("cc", "Cc"), ("bcc", "Bcc")):
        raw = submission.header(name) or ""
        parsed = parse_address_list(raw)
        if parsed.problems:
            raise MalformedError(f"could not extract recipient address from {label}: {raw}")
        lists[name] = tuple(m.addr_spec for m in parsed.mailboxes)
    if not lists["to"]:
        raise MalformedError(
            f"could not extract recipient address from To: {submission.header('to')}"
        )
    checked = attrs.evolve(submission, **lists)
    if len(checked.recipients) > MAX_RECIPIENTS:
        raise MalformedError(
            f"{len(checked.recipients)} recipients; at most {MAX_RECIPIENTS} per message"
        )
    return checked


def check_header_block(message: bytes) -> tuple[list[str], bytes]:
    """The header lines and the body, or MALFORMED.

    @raise MalformedError: no blank line, a header block over 64 KiB, or one
        that is not UTF-8.
    """
    split = split_message(message)
    if split is None:
        raise MalformedError(NO_SEPARATOR)
    head, body = split
    if len(head) > HEADER_CAP:
        raise MalformedError("outbound request header block is too large")
    try:
        lines = header_lines(head)
    except UnicodeDecodeError:
        raise MalformedError(NO_SEPARATOR) from None
    seen: set[str] = set()
    for line in lines:
        if "\r" in line or "\0" in line:
            raise MalformedError("header lines may not contain a bare CR or NUL")
        name = line.split(":", 1)[0].strip().lower()
        if line[:1] not in (" ", "\t") and name in SINGLE:
            if name in seen:
                raise MalformedError(f"more than one {line.split(':', 1)[0].strip()} header")
            seen.add(name)
    return lines, body
