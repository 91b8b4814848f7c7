"""Raw message bytes to a L{ParsedMessage}: header values, body text, attachments (L0, pure).

Rules from spec inbound.md §7.2 (header values), §7.3 (body selection, RFC 8621
§4.1.4) and §7.4 (attachments).  The MIME tree is the stdlib's C{compat32}
one (several times faster than C{email.policy.default}), built over the raw
bytes by L{aimx.core.mimesplit} so that big bodies are neither copied whole nor
decoded in one piece.  Header values are decoded here, leniently: 8-bit header
bytes are read as UTF-8, and bad charsets, encoded words, base64 or dates
degrade to replacement characters or absent values, never to an exception.
Only input that is not a message at all (empty, or nested too deep for the
parser) raises L{IngestError}.
"""

import binascii
import re
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from email.generator import BytesGenerator
from email.message import Message
from email.policy import Compat32
from email.utils import getaddresses, parsedate_tz
from io import BytesIO

import attrs

from aimx.core import mimesplit
from aimx.core.htmltext import html_to_markdown
from aimx.core.threadid import message_ids
from aimx.errors import IngestError


@attrs.frozen
class Attachment:
    """One attachment as found in the message, before its name is sanitised.

    @ivar filename_raw: the decoded C{filename}/C{name} parameter, or C{""}.
    @ivar content_type: C{type/subtype}; C{application/octet-stream} when
        the part has no Content-Type.
    @ivar data: the transfer-decoded bytes (a nested message: its raw bytes).
    """

    filename_raw: str
    content_type: str
    data: bytes


@attrs.frozen(kw_only=True)
class ParsedMessage:
    """What ingest needs from a message; strings are clean UTF-8 text.

    Address values are formatted C{Name <addr>} or C{addr} and joined with
    C{", "}.  Optional values are L{None} when absent or empty.

    @ivar from_: the first From mailbox, or C{""}.
    @ivar to: every To mailbox, or C{""}.
    @ivar cc: every Cc mailbox.
    @ivar reply_to: every Reply-To mailbox.
    @ivar subject: the decoded Subject, or C{"(no subject)"}.
    @ivar date: the Date header as RFC 3339 with the sender's offset (C{Z}
        for zero); L{None} when missing or unparseable.
    @ivar message_id: the Message-ID without brackets, or C{""}.
    @ivar in_reply_to: the last In-Reply-To id, without brackets.
    @ivar references: the References ids, without brackets, space-separated.
    @ivar raw_message_id: the Message-ID header value (unfolded), for
        L{aimx.core.threadid.thread_id}.
    @ivar raw_in_reply_to: the In-Reply-To header value (unfolded).
    @ivar raw_references: the References header value (unfolded).
    @ivar list_id: the List-ID value, trimmed, brackets kept.
    @ivar auto_submitted: the Auto-Submitted value, trimmed.
    @ivar from_addresses: the bare address of every From mailbox of every
        From header (DMARC evaluates all of them).
    @ivar body: the body text (HTML converted to Markdown), or C{""}.
    @ivar attachments: the attachments in MIME order.
    """

    from_: str
    to: str
    cc: str | None
    reply_to: str | None
    subject: str
    date: str | None
    message_id: str
    in_reply_to: str | None
    references: str | None
    raw_message_id: str | None
    raw_in_reply_to: str | None
    raw_references: str | None
    list_id: str | None
    auto_submitted: str | None
    from_addresses: tuple[str, ...]
    body: str
    attachments: tuple[Attachment, ...]


_WANTED = frozenset(
    {
        "from",
        "to",
        "cc",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "list-id",
        "auto-submitted",
    }
)


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse a message as received.

    @param raw: the message bytes exactly as received.
    @return: the extracted values.
    @raise IngestError: when C{raw} is empty or blank, or its MIME nesting
        is too deep to parse.
    """
    if not raw or raw.isspace():
        raise IngestError("cannot parse an empty message")
    try:
        msg = mimesplit.parse(raw)
        body, attachments = _content(msg)
    except RecursionError:
        raise IngestError("cannot parse a message nested this deeply") from None
    return _with_headers(msg.raw_items(), body, attachments)


def _with_headers(
    items: Iterable[tuple[str, str]], body: str, attachments: tuple[Attachment, ...]
) -> ParsedMessage:
    """Build the L{ParsedMessage} from raw C{(name, value)} header pairs."""
    headers: dict[str, list[str]] = {}
    for name, value in items:
        key = name.lower()
        if key in _WANTED:
            headers.setdefault(key, []).append(_clean(value))

    def first(key: str) -> str | None:
        values = headers.get(key)
        return values[0] if values else None

    senders = _mailboxes(headers.get("from", ()))
    subject = _decode_words(first("subject") or "").strip()
    date = first("date")
    raw_message_id = first("message-id")
    raw_in_reply_to = first("in-reply-to")
    raw_references = first("references")
    own_ids = message_ids(raw_message_id)
    parent_ids = message_ids(raw_in_reply_to)
    return ParsedMessage(
        from_=_format(senders[:1]),
        to=_format(_mailboxes(headers.get("to", ()))),
        cc=_format(_mailboxes(headers.get("cc", ()))) or None,
        reply_to=_format(_mailboxes(headers.get("reply-to", ()))) or None,
        subject=subject or "(no subject)",
        date=_rfc3339(date) if date else None,
        message_id=own_ids[0] if own_ids else "",
        in_reply_to=parent_ids[-1] if parent_ids else None,
        references=" ".join(message_ids(raw_references)) or None,
        raw_message_id=raw_message_id,
        raw_in_reply_to=raw_in_reply_to,
        raw_references=raw_references,
        list_id=first("list-id") or None,
        auto_submitted=first("auto-submitted") or None,
        from_addresses=tuple(address for _, address in senders),
        body=body,
        attachments=attachments,
    )


# -- header values ---------------------------------------------------------

_LINE_BREAKS = re.compile(r"[\r\n]+")


def _clean(value: str) -> str:
    """A raw compat32 header value as text: 8-bit bytes read as UTF-8
    (RFC 6532), unfolded (RFC 5322 §2.2.3), trimmed."""
    if not value.isascii():
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if "\n" in value or "\r" in value:
        value = _LINE_BREAKS.sub("", value)
    return value.strip()


_UTF8_COMPATIBLE = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


def _decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode with the declared charset, falling back to UTF-8; never raises
    and never returns lone surrogates."""
    if charset and charset.lower() not in _UTF8_COMPATIBLE:
        try:
            text = data.decode(charset, "replace")
        except Exception:
            # An attacker picks the charset name: unknown names, non-text
            # codecs and codecs without a "replace" mode all fail differently.
            pass
        else:
            # Codecs such as utf-7 or unicode-escape can produce lone surrogates.
            return text.encode("utf-8", "replace").decode("utf-8")
    return data.decode("utf-8", "replace")


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


def _word_bytes(encoding: str, text: str) -> bytes:
    """The octets of one RFC 2047 encoded word, decoded leniently."""
    data = text.encode("utf-8")
    if encoding in "qQ":
        return binascii.a2b_qp(data, header=True)
    data = _NOT_BASE64.sub(b"", data)
    if len(data) % 4 == 1:  # a lone trailing character holds no whole octet
        data = data[:-1]
    return binascii.a2b_base64(data + b"==")


def _decode_words(text: str) -> str:
    """Decode RFC 2047 encoded words in unstructured text.

    Whitespace between adjacent encoded words is dropped (RFC 2047 §6.2) and
    adjacent words in one charset are decoded together, so a character split
    across two words survives.
    """
    if "=?" not in text:
        return text
    pieces: list[str] = []
    charset: str | None = None
    data = b""
    end = 0
    for match in _ENCODED_WORD.finditer(text):
        gap = text[end : match.start()]
        # RFC 2231 §5 allows a language suffix: charset*lang.
        word_charset = match[1].partition("*")[0].lower()
        word = _word_bytes(match[2], match[3])
        end = match.end()
        if charset is not None and not gap.strip():
            if word_charset == charset:
                data += word
                continue
            gap = ""
        if charset is not None:
            pieces.append(_decode_bytes(data, charset))
        pieces.append(gap)
        charset, data = word_charset, word
    if charset is not None:
        pieces.append(_decode_bytes(data, charset))
    pieces.append(text[end:])
    return "".join(pieces)


def _mailboxes(values: Iterable[str]) -> list[tuple[str, str]]:
    """C{(display name, address)} of every mailbox that has an address; the
    names are RFC 2047-decoded after the list is split, so an encoded comma
    does not split a name."""
    try:
        pairs = getaddresses(list(values))
    except RecursionError:  # the parser recurses once per nested comment
        return []
    return [
        (_decode_words(name).strip(), address.strip())
        for name, address in pairs
        if address.strip()
    ]


def _format(mailboxes: list[tuple[str, str]]) -> str:
    """C{Name <addr>} (the name is not re-quoted) or C{addr}, C{", "}-joined."""
    return ", ".join(f"{name} <{addr}>" if name else addr for name, addr in mailboxes)


def _rfc3339(value: str) -> str | None:
    """A Date header as RFC 3339 keeping the sender's offset; C{Z} for a zero
    offset (C{+0000}, C{-0000}, C{GMT}); L{None} when unparseable."""
    try:
        parts = parsedate_tz(value)
        if parts is None:
            return None
        offset = parts[9] or 0
        year, month, day, hour, minute, second = parts[:6]
        when = datetime(
            year,
            month,
            day,
            hour,
            minute,
            min(second, 59),  # a leap second (RFC 5322 §3.3) has no datetime
            tzinfo=timezone(timedelta(seconds=offset)),
        )
    except (ValueError, TypeError, OverflowError, IndexError):
        return None
    text = when.isoformat()
    return text[:-6] + "Z" if offset == 0 else text


# -- body and attachments --------------------------------------------------

_BODY_TYPES = ("text/plain", "text/html")
_MEDIA = ("image", "audio", "video")


def _content(msg: Message) -> tuple[str, tuple[Attachment, ...]]:
    """The body text and the attachments of a parsed message."""
    text: list[Message] = []
    leaves: list[Message] = []
    _walk([msg], "mixed", False, text, [], leaves)
    body_part = next((p for p in text if p.get_content_type() in _BODY_TYPES), None)
    body = "" if body_part is None else _body_text(body_part)
    return body, tuple(_attachment(part) for part in leaves)


def _walk(
    parts: list[Message],
    multipart_type: str,
    in_alternative: bool,
    text: list[Message] | None,
    html: list[Message] | None,
    attachments: list[Message],
) -> None:
    """RFC 8621 §4.1.4 parseStructure, with the attachment rule of
    inbound.md §7.4: every leaf but an inline text/plain or text/html one."""
    text_length = -1 if text is None else len(text)
    html_length = -1 if html is None else len(html)
    for index, part in enumerate(parts):
        ctype = part.get_content_type()
        maintype, _, subtype = ctype.partition("/")
        if maintype == "multipart" and part.is_multipart():
            _walk(
                part.get_payload(),
                subtype,
                in_alternative or subtype == "alternative",
                text,
                html,
                attachments,
            )
            continue
        media = maintype in _MEDIA
        inline = (
            (media or ctype in _BODY_TYPES)
            and part.get_content_disposition() != "attachment"
            and (
                index == 0
                or (multipart_type != "related" and (media or not _filename(part)))
            )
        )
        if not (inline and ctype in _BODY_TYPES):
            attachments.append(part)
        if not inline:
            continue
        if multipart_type == "alternative":
            if ctype == "text/plain" and text is not None:
                text.append(part)
            elif ctype == "text/html" and html is not None:
                html.append(part)
            continue
        if in_alternative:
            if ctype == "text/plain":
                html = None
            elif ctype == "text/html":
                text = None
        if text is not None:
            text.append(part)
        if html is not None:
            html.append(part)
    if multipart_type == "alternative" and text is not None and html is not None:
        # An alternative without a plain part: its html part is the text body.
        if text_length == len(text) and html_length != len(html):
            text.extend(html[html_length:])
        if html_length == len(html) and text_length != len(text):
            html.extend(text[text_length:])


def _filename(part: Message) -> str:
    """The part's C{filename}/C{name} parameter, RFC 2231 and 2047 decoded."""
    try:
        name = part.get_filename()
    except Exception:
        # RFC 2231 values name their own charset; a hostile one can make
        # the codec machinery fail in many ways.  Treat it as unnamed.
        return ""
    return _decode_words(_clean(name)) if name else ""


_HTML_LIMIT = 2 * 1024 * 1024
_HTML_TRUNCATED = "\n\n[...HTML body truncated at 2 MB for rendering...]"


def _body_text(part: Message) -> str:
    """A body part's text; HTML (at most 2 MiB of it) as Markdown."""
    data = mimesplit.payload(part)
    charset = part.get_content_charset()
    if part.get_content_type() != "text/html":
        return _decode_bytes(data, charset)
    markdown = html_to_markdown(_decode_bytes(data[:_HTML_LIMIT], charset))
    return markdown + _HTML_TRUNCATED if len(data) > _HTML_LIMIT else markdown


def _attachment(part: Message) -> Attachment:
    """The attachment a leaf part holds."""
    if part.is_multipart():
        # message/rfc822 and other message/* parts, parsed into messages.
        data = b"".join(_message_bytes(m) for m in part.get_payload())
    else:
        data = mimesplit.payload(part)
    return Attachment(
        filename_raw=_filename(part),
        content_type=(
            _clean(part.get_content_type())
            if "content-type" in part
            else "application/octet-stream"
        ),
        data=data,
    )


class _RawHeaders(Compat32):
    """compat32 that writes header values back as received, not re-folded."""

    def fold_binary(self, name: str, value: str) -> bytes:
        return f"{name}: {value}{self.linesep}".encode("ascii", "surrogateescape")


class _RawGenerator(BytesGenerator):
    """Writes a parsed message back as close to the received bytes as
    compat32 allows (line endings become CRLF)."""

    def _dispatch(self, msg: Message) -> None:
        # The stock handlers of some types read a leaf's text through
        # get_payload(), which decodes 8-bit text with the part's own
        # (attacker-chosen) charset parameter and can raise; every leaf is
        # written from its raw text instead.
        if msg.is_multipart():
            super()._dispatch(msg)
        else:
            self._handle_text(msg)


_RAW_HEADERS = _RawHeaders(linesep="\r\n")


def _message_bytes(msg: Message) -> bytes:
    """A nested message as bytes."""
    out = BytesIO()
    _RawGenerator(out, mangle_from_=False, policy=_RAW_HEADERS).flatten(msg)
    return out.getvalue()
