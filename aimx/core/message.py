"""Raw message bytes to a L{ParsedMessage}: header values, body text, attachments (L0, pure).

Header values, which leaves are inline (RFC 8621 §4.1.4) and attachments, as
docs/concepts.md ("Message files") says:
the body is every inline text part in order, HTML converted to Markdown without
its hidden content (L{aimx.core.htmltext}), with LF line ends.  The MIME tree is the stdlib's C{compat32}
one (several times faster than C{email.policy.default}), built over the raw
bytes by L{aimx.core.mimesplit} so that big bodies are neither copied whole nor
decoded in one piece.  The identity fields (From, To, Subject, ...) are parsed
once by L{aimx.core.identity}, each from its bottom instance; a repeated
top-level MIME field is likewise read from its bottom instance.  Decoding is
lenient: bad charsets, encoded words, base64 or dates degrade to replacement
characters or absent values.

Content never poisons a message: L{parse_message} never raises, and no text it
returns holds a lone surrogate (the frontmatter is UTF-8, file names go through
C{os.fsencode}).  A part whose decoding raises anyway is kept as received
(L{_raw_attachment}); when the MIME structure itself cannot be read (for
instance nesting too deep for the stdlib), the identity comes from the header
block alone, the body is empty and the whole message is one attachment,
C{message.eml}; an empty message is stored with no body.  At most
L{MAX_ATTACHMENTS} attachments come out: L{aimx.core.mimesplit} stops building
parts at its cap and keeps the rest as one last part, C{remainder.eml}.
"""

import hashlib
import re
from email.generator import BytesGenerator
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import Compat32
from io import BytesIO

import attrs

from aimx.core import headerblock, htmltext, identity, mimesplit
from aimx.core.headertext import clean, decode_bytes, parameter, scrub
from aimx.core.identity import Identity

#: The most attachments one message yields: the MIME splitter's part cap, the
#: last of them being C{remainder.eml} when the message has more parts.
MAX_ATTACHMENTS = mimesplit.MAX_PARTS
#: The attachment holding a message whose MIME structure could not be read.
WHOLE_MESSAGE_NAME = "message.eml"


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

    The header values are those of L{identity} (each field's bottom instance);
    the properties give them as the frontmatter stores them: address fields
    formatted so that they parse back (L{aimx.core.identity.Mailbox.formatted}),
    optional values L{None} when absent or empty.

    @ivar identity: the parsed identity fields.
    @ivar list_id: the List-ID value, trimmed, brackets kept.
    @ivar auto_submitted: the Auto-Submitted value, trimmed.
    @ivar body: the body text (HTML converted to Markdown), or C{""}.
    @ivar attachments: the attachments in MIME order.
    @ivar body_sha256: hex SHA-256 of the bytes after the header block, as received.
    @ivar problems: what could not be read and was kept raw instead, one line
        each (no message content), for the log.
    @ivar hidden_chars: how many characters of text were left out of the body
        because a reader never sees them (hidden HTML, invisible characters;
        L{aimx.core.htmltext}); 0 when nothing was removed.
    """

    identity: Identity
    list_id: str | None = None
    auto_submitted: str | None = None
    body: str = ""
    attachments: tuple[Attachment, ...] = ()
    body_sha256: str = hashlib.sha256(b"").hexdigest()
    problems: tuple[str, ...] = ()
    hidden_chars: int = 0

    @property
    def from_(self) -> str:
        """Every From mailbox, or C{""}."""
        return self.identity.from_.formatted()

    @property
    def to(self) -> str:
        return self.identity.to.formatted()

    @property
    def cc(self) -> str | None:
        return self.identity.cc.formatted() or None

    @property
    def reply_to(self) -> str | None:
        return self.identity.reply_to.formatted() or None

    @property
    def subject(self) -> str:
        """The decoded Subject, or C{"(no subject)"}."""
        return self.identity.subject or "(no subject)"

    @property
    def date(self) -> str | None:
        return self.identity.date

    @property
    def message_id(self) -> str:
        return self.identity.message_id

    @property
    def in_reply_to(self) -> str | None:
        return self.identity.in_reply_to

    @property
    def references(self) -> str | None:
        return " ".join(self.identity.references) or None

    @property
    def thread_id(self) -> str:
        return self.identity.thread_id


_HEADER_END = re.compile(rb"\r?\n\r?\n")


def body_offset(raw: bytes) -> int:
    """Where the body starts: after the first empty line, else at the end."""
    end = _HEADER_END.search(raw)
    return len(raw) if end is None else end.end()


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse a message as received; never raises.

    @param raw: the message bytes exactly as received.
    @return: the extracted values.
    """
    body_sha256 = hashlib.sha256(memoryview(raw)[body_offset(raw):]).hexdigest()
    if raw.isspace() or not raw:
        return ParsedMessage(identity=identity.from_headers(()), body_sha256=body_sha256)
    problems: list[str] = []
    hidden = 0
    failure = None
    try:
        msg = mimesplit.parse(raw)
    except Exception as e:  # RecursionError from nesting too deep for the stdlib, ...
        msg, failure = None, e
    ident, head = _identity(raw, msg)
    if msg is not None:
        try:
            if any(name in identity.MIME_FIELDS for name, _ in ident.repeated):
                msg = mimesplit.parse(_bottom_mime_fields(raw))
            body, attachments, hidden = _content(msg, problems)
        except Exception as e:
            failure = e
    if failure is not None:
        problems = [
            f"MIME structure unreadable ({type(failure).__name__}): "
            f"the whole message kept as {WHOLE_MESSAGE_NAME}"
        ]
        body, attachments, hidden = "", (Attachment(WHOLE_MESSAGE_NAME, "message/rfc822", raw),), 0
    fields = {name.lower(): value for name, value in head}  # bottom instances
    return ParsedMessage(
        identity=ident,
        list_id=clean(fields.get("list-id", "")) or None,
        auto_submitted=clean(fields.get("auto-submitted", "")) or None,
        body=body,
        attachments=attachments,
        body_sha256=body_sha256,
        problems=tuple(problems),
        hidden_chars=hidden,
    )


def _identity(raw: bytes, msg: Message | None) -> tuple[Identity, list[tuple[str, str]]]:
    """The identity and the top-level header fields as the MIME parser read them.

    The identity is read from DKIM's split of the header block (what a signature
    covers), and marked ambiguous when the MIME parser reads that block differently
    (a bare CR, a misplaced C{From } line...): then the body and headers shown could
    differ from what was signed, and nothing may be trusted.  When the MIME tree could
    not be built the header block is parsed alone; no fields at all if even that fails.
    """
    try:
        head = list((mimesplit.parse_headers(raw) if msg is None else msg).raw_items())
    except Exception:
        head = []
    try:
        fields = headerblock.as_text(headerblock.split(raw)[0])
    except headerblock.HeaderBlockError:
        return identity.from_headers(head, ambiguous=True), head
    return identity.from_headers(
        fields, ambiguous=not headerblock.same_fields(fields, head)), head


def _bottom_mime_fields(raw: bytes) -> bytes:
    """C{raw} with only the bottom instance of each repeated top-level MIME field,
    so the body is read as the DKIM-covered instance describes it (RFC 6376 §5.4.2)."""
    offset = body_offset(raw)
    policy = _RAW_HEADERS.clone(linesep="\r\n" if b"\r\n" in raw[:offset] else "\n")
    head = BytesHeaderParser(policy=policy).parsebytes(raw[:offset])
    bottom = {name.lower(): (name, value) for name, value in head.raw_items()}
    for key in identity.MIME_FIELDS:
        if key in bottom:
            del head[key]
            head[bottom[key][0]] = bottom[key][1]  # the raw value, stored as given
    out = BytesIO()
    _RawGenerator(out, mangle_from_=False, policy=policy).flatten(head)
    return out.getvalue() + raw[offset:]


# -- body and attachments --------------------------------------------------

_BODY_TYPES = ("text/plain", "text/html")
_MEDIA = ("image", "audio", "video")


def _content(
    msg: Message, problems: list[str]
) -> tuple[str, tuple[Attachment, ...], int]:
    """The body text, the attachments and the count of hidden characters left
    out of the body; a part that fails to decode is kept as received."""
    body_parts: list[Message] = []
    attachments: list[Message] = []
    leaves: list[Message] = []
    _entity(msg, 0, "mixed", body_parts, attachments, leaves)
    texts: list[str] = []
    hidden = 0
    failed = set()
    for part in body_parts:
        try:
            text, removed = _body_text(part)
        except Exception as e:
            problems.append(f"body part kept raw ({type(e).__name__})")
            failed.add(id(part))
            continue
        hidden += removed
        if text.strip():
            texts.append(text)
    wanted = {id(part) for part in attachments}
    result: list[Attachment] = []
    for part in leaves:
        if id(part) in failed:
            result.append(_raw_attachment(part))
        elif id(part) in wanted:
            result.append(_decoded_or_raw(part, len(result), problems))
    return _joined(texts), tuple(result), hidden


def _joined(texts: list[str]) -> str:
    """Body texts one blank line apart; a single text as it is."""
    if len(texts) == 1:
        return texts[0]
    return "".join(text.strip("\n") + "\n\n" for text in texts)[:-1]


def _decoded_or_raw(part: Message, index: int, problems: list[str]) -> Attachment:
    """The attachment a leaf holds, or the leaf as received when decoding fails."""
    span = part._payload
    if isinstance(span, mimesplit.Span) and span.head is not None:
        problems.append(
            f"part {index} kept as received: more than {mimesplit.MAX_PARTS - 1} parts"
        )
    try:
        return _attachment(part)
    except Exception as e:
        problems.append(f"part {index} kept raw ({type(e).__name__})")
        return _raw_attachment(part)


def _entity(
    part: Message,
    index: int,
    multipart_type: str,
    body: list[Message],
    attachments: list[Message],
    leaves: list[Message],
) -> None:
    """Sort one entity's leaves: inline text parts to C{body}, every other leaf
    to C{attachments}, every leaf to C{leaves}, in MIME order.

    A leaf is inline by RFC 8621 §4.1.4: no C{attachment}
    disposition, a text/plain, text/html or media type, and either first in its
    multipart or, outside C{multipart/related}, media or unnamed.  Every inline
    text/plain or text/html leaf is body (docs/concepts.md),
    whatever multipart holds it (mixed, signed, related, digest...), except that
    of a C{multipart/alternative} only one child is: L{_alternative}.
    @param index: the entity's position in its multipart (0 for the message).
    @param multipart_type: the subtype of the multipart holding it.
    """
    ctype = part.get_content_type()
    maintype, _, subtype = ctype.partition("/")
    if maintype == "multipart" and part.is_multipart():
        children = part.get_payload()
        if subtype != "alternative":
            for i, child in enumerate(children):
                _entity(child, i, subtype, body, attachments, leaves)
            return
        options: list[list[Message]] = []
        for i, child in enumerate(children):
            options.append([])
            _entity(child, i, subtype, options[-1], attachments, leaves)
        body.extend(_alternative(options))
        return
    leaves.append(part)
    media = maintype in _MEDIA
    inline = (
        (media or ctype in _BODY_TYPES)
        and part.get_content_disposition() != "attachment"
        and (index == 0 or (multipart_type != "related" and (media or not _filename(part))))
    )
    if inline and ctype in _BODY_TYPES:
        body.append(part)
    else:
        attachments.append(part)


def _alternative(options: list[list[Message]]) -> list[Message]:
    """The body parts of the child of a C{multipart/alternative} that is read:
    the first whose text is all plain, else the last that has any (RFC 2046
    §5.1.4: the last is the richest).  The others' text parts are renderings
    of the same content, neither body nor attachments."""
    for parts in options:
        if parts and all(p.get_content_type() == "text/plain" for p in parts):
            return parts
    for parts in reversed(options):
        if parts:
            return parts
    return []


def _filename(part: Message) -> str:
    """The part's C{filename} (Content-Disposition) or C{name} (Content-Type)
    parameter, read from the raw field: RFC 2231, RFC 2047 and raw UTF-8 decoded
    (L{aimx.core.headertext.parameter}); C{""} when it has none or it cannot be
    read.  A field longer than L{mimesplit.MAX_PARAM_FIELD} has no parameters,
    as for the stdlib's reading of it."""
    try:
        for field, param in (("content-disposition", "filename"), ("content-type", "name")):
            value = _raw_field(part, field)
            if value is None or len(value) > mimesplit.MAX_PARAM_FIELD:
                continue
            name = parameter(value, param)
            if name:
                return name
        return ""
    except Exception:
        # Hostile values must never take the message down.  Treat it as unnamed.
        return ""


def _raw_field(part: Message, name: str) -> str | None:
    """The first C{name} field of a part as received (8-bit bytes as surrogate
    escapes), or L{None}.  C{get()} would give a C{Header} whose 8-bit bytes are
    already replacement characters."""
    for key, value in part.raw_items():
        if key.lower() == name:
            return value if isinstance(value, str) else str(value)
    return None


_HTML_LIMIT = 2 * 1024 * 1024
_HTML_TRUNCATED = "\n\n[...HTML body truncated at 2 MB for rendering...]"


def _body_text(part: Message) -> tuple[str, int]:
    """A body part's text with LF line ends, and the count of hidden characters
    removed: plain text loses only invisible characters
    (L{htmltext.strip_invisible}); HTML (at most 2 MiB of it) becomes Markdown
    without its hidden content (L{htmltext.convert})."""
    data = mimesplit.payload(part)
    charset = part.get_content_charset()
    if part.get_content_type() != "text/html":
        text = decode_bytes(data, charset)
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        return htmltext.strip_invisible(text)
    converted = htmltext.convert(decode_bytes(data[:_HTML_LIMIT], charset))
    markdown = converted.markdown
    if len(data) > _HTML_LIMIT:
        markdown = markdown.rstrip("\n") + _HTML_TRUNCATED
    return markdown, converted.hidden


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
            scrub(clean(part.get_content_type()))
            if "content-type" in part
            else "application/octet-stream"
        ),
        data=data,
    )


_UNENCODED = frozenset({"", "7bit", "8bit", "binary"})


def _raw_attachment(part: Message) -> Attachment:
    """A part that could not be decoded, kept as received; never raises.

    Its bytes are its body with the transfer encoding not undone (a nested
    message: written out without the stdlib generator); its type is its own
    when that can be read and the bytes are not transfer-encoded, else
    C{application/octet-stream}; its name is its own when readable.
    """
    # Not get_payload(): it decodes a str payload with the part's own charset.
    if isinstance(part._payload, list):
        data = b"".join(_raw_entity(m) for m in part._payload if isinstance(m, Message))
    else:
        data = mimesplit.raw_payload(part)
    content_type = "application/octet-stream"
    try:
        cte = str(part.get("content-transfer-encoding", "")).strip().lower()
        if "content-type" in part and cte in _UNENCODED:
            content_type = scrub(clean(part.get_content_type())) or content_type
    except Exception:
        pass
    return Attachment(filename_raw=_filename(part), content_type=content_type, data=data)


def _text_bytes(text: str) -> bytes:
    """Parser text back to its bytes (surrogate escapes are the 8-bit bytes)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def _raw_entity(msg: Message) -> bytes:
    """A parsed entity written back without the stdlib generator: header fields
    and leaf bodies as received, multipart delimiters rebuilt.  Never raises and
    never recurses (an explicit stack), however deep the tree."""
    out: list[bytes] = []
    stack: list[Message | bytes] = [msg]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            out.append(item)
            continue
        for name, value in item.raw_items():
            out.append(_text_bytes(f"{name}: {value}\r\n"))
        out.append(b"\r\n")
        payload = item._payload
        if not isinstance(payload, list):
            out.append(mimesplit.raw_payload(item))
            continue
        pieces: list[Message | bytes] = [m for m in payload if isinstance(m, Message)]
        if item.get_content_maintype() == "multipart":
            try:
                boundary = item.get_boundary() or ""
            except Exception:
                boundary = ""
            delimiter = _text_bytes("--" + boundary)
            pieces = []
            if item.preamble:
                pieces.append(_text_bytes(item.preamble) + b"\r\n")
            for sub in payload:
                if isinstance(sub, Message):
                    pieces += [delimiter + b"\r\n", sub, b"\r\n"]
            pieces.append(delimiter + b"--\r\n")
            if item.epilogue:
                pieces.append(_text_bytes(item.epilogue))
        stack.extend(reversed(pieces))
    return b"".join(out)


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
