"""Client-side composition of outbound mail (L0, pure; docs/concepts.md, "Sending").

C{aimx send} and the MCP tools C{email_send}/C{email_reply} build the unsigned
RFC 5322 bytes they submit with SEND here; the daemon validates, renders,
signs and delivers them.

Header values that are not ASCII (a Subject, a display name) are written as
RFC 2047 encoded-words so the header block stays 7-bit; ASCII values are
written verbatim.  An address whose mailbox part is not ASCII stays UTF-8
(RFC 6532): no encoded-word may stand for an address.  Address fields are
parsed with L{aimx.core.identity} and re-written mailbox by mailbox; a value
that does not parse cleanly is submitted as given, so the daemon, which alone
decides, names what is wrong with it.  The body and the
submitted part headers (attachment file names) stay UTF-8: the daemon decodes
them and re-encodes the parts it emits.
"""

import base64
import mimetypes
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from email.header import Header
from email.utils import format_datetime

import attrs

from aimx.core.identity import parse_address_list

# Built-in table only, so a guess does not depend on the host's /etc/mime.types.
_TYPES = mimetypes.MimeTypes()
_OCTET_STREAM = "application/octet-stream"
_BASE64_LINE = 57  # input bytes per 76-character base64 line (RFC 2045 §6.8)


class ComposeError(ValueError):
    """A message the client refuses to submit; the text says why."""


@attrs.frozen
class Attachment:
    """A file to attach, as read by the client process.

    @ivar filename: the file's base name (escaped only when emitted).
    @ivar content_type: C{type/subtype} guessed from the extension.
    """

    filename: str
    content_type: str
    data: bytes


def guess_type(filename: str) -> str:
    """The content type for C{filename}'s extension, else C{application/octet-stream}.

    A compressed file (C{.gz}, C{.bz2}, ...) is sent as opaque bytes.
    """
    content_type, encoding = _TYPES.guess_type(filename, strict=False)
    return content_type if content_type and encoding is None else _OCTET_STREAM


def normalize_crlf(text: str) -> str:
    """C{text} with every CRLF, lone CR and lone LF turned into CRLF."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")


def compose(
    *,
    from_: str,
    to: str | Sequence[str],
    subject: str,
    body: str,
    now: datetime,
    cc: str | Sequence[str] = (),
    bcc: str | Sequence[str] = (),
    reply_to: str | None = None,
    references: str | None = None,
    attachments: Sequence[Attachment] = (),
    uuid4: Callable[[], uuid.UUID] = uuid.uuid4,
) -> bytes:
    """The unsigned message a client submits with SEND.

    @param from_: the From value (C{addr} or C{Name <addr>}).
    @param to: To values (a list, or one string); each may itself be a
        comma-separated list.  Likewise C{cc} and C{bcc} (the daemon delivers
        to Bcc and drops that header).
    @param now: the submission time (timezone-aware); written in UTC.
    @param reply_to: the Message-ID replied to; with it come C{In-Reply-To}
        and C{References} (C{references} when not blank, else the reply id).
        Without it C{references} is ignored.  CR and LF are dropped from both.
    @param uuid4: source of UUIDs for the Message-ID and the MIME boundary.
    @raise ComposeError: CR or LF in From, To, Cc, Bcc or Subject.
    """
    to, cc, bcc = ([v] if isinstance(v, str) else v for v in (to, cc, bcc))
    for name, values in (("From", [from_]), ("To", to), ("Cc", cc), ("Bcc", bcc),
                         ("Subject", [subject])):
        if any("\r" in value or "\n" in value for value in values):
            raise ComposeError(
                f"Header '{name}' contains CRLF characters. Possible header injection"
            )
    headers = [("From", _address(from_.strip())), ("To", _address_list(to))]
    headers += [(name, _address_list(v)) for name, v in (("Cc", cc), ("Bcc", bcc)) if _has(v)]
    headers += [
        ("Subject", _text("Subject", subject)),
        ("Date", format_datetime(now.astimezone(timezone.utc))),
        ("Message-ID", f"<{uuid4()}@{_domain(from_)}>"),
        *_threading(reply_to, references),
        ("MIME-Version", "1.0"),
    ]
    text = normalize_crlf(body) + "\r\n"
    if attachments:
        boundary = f"aimx-{uuid4().hex}"
        headers.append(("Content-Type", f'multipart/mixed; boundary="{boundary}"'))
        text = _mixed(boundary, text, attachments)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return (head + "\r\n" + text).encode("utf-8")


def _has(values: Iterable[str]) -> bool:
    return any(_address(value) for value in values)


def _address_list(values: Iterable[str]) -> str:
    return ", ".join(filter(None, map(_address, values)))


def _address(value: str) -> str:
    """An address field value with each mailbox re-written 7-bit where its display
    name needs it; C{""} when it names nobody; a value that does not parse cleanly
    is left as given."""
    parsed = parse_address_list(value.strip())
    if parsed.problems or parsed.comment or parsed.group:
        return value.strip()
    return ", ".join(m.wire() for m in parsed.mailboxes)


def _text(name: str, value: str) -> str:
    """An unstructured header value: verbatim when ASCII, else encoded-words."""
    if value.isascii():
        return value
    return Header(value, "utf-8", header_name=name).encode(linesep="\r\n")


def _domain(from_: str) -> str:
    """The domain of the From mailbox, else C{localhost}."""
    author = parse_address_list(from_).single
    return author.domain if author is not None else "localhost"


def _threading(reply_to: str | None, references: str | None) -> list[tuple[str, str]]:
    reply = _strip_crlf(reply_to).strip("<> \t")
    if not reply:
        return []
    reply = f"<{reply}>"
    return [("In-Reply-To", reply), ("References", _strip_crlf(references) or reply)]


def _strip_crlf(value: str | None) -> str:
    return (value or "").replace("\r", "").replace("\n", "").strip()


def _mixed(boundary: str, text: str, attachments: Sequence[Attachment]) -> str:
    """A C{multipart/mixed} body: the text part, then one base64 part per file."""
    parts = [f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}"]
    for attachment in attachments:
        name = _quote(attachment.filename)
        data = attachment.data
        lines = [
            base64.b64encode(data[i : i + _BASE64_LINE]).decode("ascii")
            for i in range(0, len(data), _BASE64_LINE)
        ]
        parts.append(
            f"--{boundary}\r\n"
            f'Content-Type: {attachment.content_type}; name="{name}"\r\n'
            f'Content-Disposition: attachment; filename="{name}"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n" + "\r\n".join(lines) + "\r\n"
        )
    return "".join(parts) + f"--{boundary}--\r\n"


def _quote(filename: str) -> str:
    """A quoted-string body: C{\\} and C{"} escaped, CR dropped, LF as a space."""
    return (
        filename.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", " ")
    )
