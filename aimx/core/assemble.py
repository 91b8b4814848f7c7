"""The outgoing MIME message, built from a submission (L0, pure; docs/concepts.md, "Sending").

The client sends headers plus a Markdown or plain body (a C{multipart/mixed}
when it attaches files); the daemon appends the signature, renders Markdown to
HTML and emits a 7-bit-safe message with CRLF line endings, ready to sign.
"""

import base64
import binascii
import quopri
import re
import urllib.parse
import uuid

import attrs

from aimx.core import markdown
from aimx.core.message import Attachment
from aimx.core.submission import unfold
from aimx.errors import BodyTooLarge, MalformedError

MARKDOWN, TEXT, HTML = "markdown", "text", "html"
MAX_PARTS = 1000
TOO_LARGE = (
    "markdown body exceeds 5 MiB; use --html-body for pre-rendered large documents "
    "or --attachment for sending the document as a file"
)
_REPLACED = {"content-type", "content-transfer-encoding", "mime-version", "bcc"}
_QP_UNSAFE = re.compile(rb"[^\x21-\x3c\x3e-\x7e ]| (?=\r?$)")
_LINE_END = re.compile(r"\r\n|\r|\n")


@attrs.frozen
class Assembled:
    """The message to sign, and what the sent copy keeps of it.

    @ivar wire: the unsigned message, CRLF line endings.
    @ivar text: the text body with the signature, LF line endings.
    @ivar format: L{MARKDOWN}, L{TEXT} or L{HTML}.
    """

    wire: bytes
    text: str
    format: str
    attachments: tuple[Attachment, ...] = ()


def new_boundary() -> str:
    return "aimx-" + uuid.uuid4().hex


def content_params(value: str) -> tuple[str, dict[str, str]]:
    """C{type/sub; k="v"; ...} -> (lower-cased type, {lower-cased name: value}).

    A C{;} inside quotes does not split; a quoted-pair C{\\x} stands for C{x}.
    """
    pieces, current, quoted, escaped = [], [], False, False
    for char in value:
        if escaped:
            current.append(char)
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    pieces.append("".join(current))
    params = {}
    for piece in pieces[1:]:
        name, sep, val = piece.partition("=")
        if sep:
            params.setdefault(name.strip().lower(), val.strip())
    return pieces[0].strip().lower(), params


def _decode(data: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding == "base64":
        return binascii.a2b_base64(data, strict_mode=False)
    if encoding == "quoted-printable":
        return quopri.decodestring(data)
    return data


def _lf(text: str) -> str:
    return _LINE_END.sub("\n", text)


def parse_body(header_lines: list[str], body: bytes) -> tuple[str, tuple[Attachment, ...]]:
    """The body text (LF) and the attachments of a submission."""
    headers = unfold(header_lines)
    ctype, params = content_params(headers.get("content-type", ""))
    boundary = params.get("boundary")
    if not ctype.startswith("multipart/") or not boundary:
        return _lf(body.decode("utf-8", "replace")), ()
    parts = _split_parts(body, boundary.encode("utf-8", "replace"))
    if not parts:
        return "", ()
    text = _lf(_part_payload(*parts[0]).decode("utf-8", "replace"))
    attachments = []
    for fields, payload in parts[1:]:
        ptype, pparams = content_params(fields.get("content-type", ""))
        _, dparams = content_params(fields.get("content-disposition", ""))
        name = dparams.get("filename") or pparams.get("name") or "attachment"
        attachments.append(
            Attachment(name, ptype or "application/octet-stream", _part_payload(fields, payload))
        )
    return text, tuple(attachments)


def _split_parts(body: bytes, boundary: bytes) -> list[tuple[dict[str, str], bytes]]:
    delimiter = b"--" + boundary
    chunks: list[list[bytes]] = []
    for line in body.splitlines(keepends=True):
        if line.startswith(delimiter):
            if line[len(delimiter) :].startswith(b"--"):
                break
            if len(chunks) == MAX_PARTS:
                raise MalformedError(f"more than {MAX_PARTS} MIME parts")
            chunks.append([])
        elif chunks:
            chunks[-1].append(line)
    parts = []
    for lines in chunks:
        raw = b"".join(lines)
        if raw.endswith(b"\r\n"):
            raw = raw[:-2]
        elif raw.endswith(b"\n"):
            raw = raw[:-1]
        split = re.search(rb"\r?\n\r?\n", raw)
        if raw.startswith((b"\r\n", b"\n")):
            head, payload = b"", raw.split(b"\n", 1)[1]
        elif split is None:
            head, payload = raw, b""
        else:
            head, payload = raw[: split.start()], raw[split.end() :]
        lines_ = head.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
        parts.append((unfold(lines_), payload))
    return parts


def _part_payload(fields: dict[str, str], payload: bytes) -> bytes:
    return _decode(payload, fields.get("content-transfer-encoding", ""))


def with_signature(body: str, signature: str) -> str:
    """The body, then a blank line and the signature (none when it is C{""})."""
    if not signature:
        return body
    return body.rstrip("\r\n") + "\n\n" + _lf(signature)


def crlf(text: str) -> bytes:
    """UTF-8 with every line ending CRLF."""
    return _LINE_END.sub("\r\n", text).encode("utf-8")


def qp_encode(data: bytes) -> bytes:
    """Quoted-printable for CRLF text: soft breaks keep lines within 76 columns."""
    out = []
    for line in data.split(b"\r\n"):
        line = _QP_UNSAFE.sub(lambda m: b"=%02X" % m[0][0], line)
        start = 0
        while len(line) - start > 76:
            cut = start + 75
            if line[cut - 1] == 0x3D:  # never split an =XX escape
                cut -= 1
            elif line[cut - 2] == 0x3D:
                cut -= 2
            out.append(line[start:cut] + b"=")
            start = cut
        out.append(line[start:])
    return b"\r\n".join(out)


def text_entity(text: str, subtype: str) -> tuple[bytes, bytes]:
    """A text body as (C{Content-Type}/C{Content-Transfer-Encoding} lines, payload)."""
    data = crlf(text)
    if data.isascii() and all(len(line) <= 998 for line in data.split(b"\r\n")):
        encoding, payload = b"7bit", data
    else:
        encoding, payload = b"quoted-printable", qp_encode(data)
    head = (
        b"Content-Type: text/" + subtype.encode() + b"; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: " + encoding + b"\r\n"
    )
    return head, payload


_MIME_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")


def _param(key: str, filename: str) -> str:
    """C{key="name"} (an RFC 2045 quoted string), or RFC 2231 C{key*=utf-8''…} for non-ASCII."""
    name = filename.replace("\r", "").replace("\n", " ")
    if not name.isascii():
        return f"{key}*=utf-8''{urllib.parse.quote(name, safe='')}"
    return f'{key}="' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: Base64 as L{attachment_entity} writes it: lines of 76 characters (57 bytes) and CRLF.
ATTACHMENT_LINE_BYTES, ATTACHMENT_LINE = 57, 78


def attachment_wire_size(size: int) -> int:
    """About how many bytes an attachment of C{size} bytes takes in the message."""
    return -(-size // ATTACHMENT_LINE_BYTES) * ATTACHMENT_LINE


def attachment_entity(part: Attachment) -> tuple[bytes, bytes]:
    """A base64 attachment part whose headers are 7-bit whatever its name and type."""
    ctype = part.content_type if _MIME_TYPE.fullmatch(part.content_type) else (
        "application/octet-stream")
    head = (
        f"Content-Type: {ctype}; {_param('name', part.filename_raw)}\r\n"
        f"Content-Disposition: attachment; {_param('filename', part.filename_raw)}\r\n"
        "Content-Transfer-Encoding: base64\r\n"
    ).encode("ascii")
    return head, base64.encodebytes(part.data).replace(b"\n", b"\r\n").rstrip(b"\r\n")


def multipart(subtype: str, entities, boundary: str) -> tuple[bytes, bytes]:
    """Entities joined as one C{multipart/<subtype>} entity."""
    b = boundary.encode("ascii")
    body = b"".join(b"--" + b + b"\r\n" + head + b"\r\n" + payload + b"\r\n"
                    for head, payload in entities)
    head = f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n'.encode("ascii")
    return head, body + b"--" + b + b"--\r\n"


@attrs.frozen
class Draft:
    """A submission read into what assembling it needs (and what a hold keeps).

    @ivar header_lines: the submitted header block's physical lines.
    @ivar text: the body text (LF), before the signature.
    @ivar attachments: the submitted MIME's own attachment parts, then the files
        the client passed as descriptors.
    @ivar text_only: send C{text} verbatim, no Markdown.
    @ivar html_body: the HTML alternative, when the client gave one.
    @ivar raw_attachments: how many of C{attachments} came inside the MIME.
    """

    header_lines: tuple[str, ...] = attrs.field(converter=tuple)
    text: str
    attachments: tuple[Attachment, ...] = attrs.field(default=(), converter=tuple)
    text_only: bool = False
    html_body: bytes | None = None
    raw_attachments: int = 0


def read_draft(header_lines: list[str], body: bytes, *, text_only: bool,
               html_body: bytes | None) -> Draft:
    """A submission's body text and its own attachment parts, as a L{Draft}."""
    text, attachments = parse_body(header_lines, body)
    return Draft(header_lines, text, attachments, text_only, html_body, len(attachments))


def check_size(draft: Draft, signature: str) -> None:
    """@raise BodyTooLarge: a Markdown body with the signature over 5 MiB."""
    if draft.html_body is None and not draft.text_only:
        if len(with_signature(draft.text, signature).encode("utf-8")) > markdown.MARKDOWN_CAP:
            raise BodyTooLarge(TOO_LARGE)


def assemble(header_lines: list[str], body: bytes, *, text_only: bool,
             html_body: bytes | None, **kw) -> Assembled:
    """A submission (header lines and raw body) as a signed-ready MIME message;
    L{assemble_draft} with its keywords."""
    return assemble_draft(
        read_draft(header_lines, body, text_only=text_only, html_body=html_body), **kw)


def assemble_draft(
    draft: Draft,
    *,
    signature: str,
    message_id: str | None = None,
    from_: str | None = None,
    boundary=new_boundary,
) -> Assembled:
    """A L{Draft} as a signed-ready MIME message.

    @param message_id: a synthesized id to insert as the first header.
    @param from_: the From value to write in place of the submitted one: the
        authorised identity, re-written from its parsed values.
    @raise BodyTooLarge: the Markdown source with the signature is over 5 MiB.
    """
    check_size(draft, signature)
    text = with_signature(draft.text, signature)
    if draft.html_body is not None:
        mode, html = HTML, draft.html_body.decode("utf-8", "replace")
    elif draft.text_only:
        mode, html = TEXT, None
    else:
        mode, html = MARKDOWN, markdown.render(text)
    entity = text_entity(text, "plain")
    if html is not None:
        entity = multipart("alternative", [entity, text_entity(html, "html")], boundary())
    if draft.attachments:
        entity = multipart(
            "mixed", [entity, *map(attachment_entity, draft.attachments)], boundary()
        )
    head = _headers(draft.header_lines, message_id, from_) + b"MIME-Version: 1.0\r\n" + entity[0]
    payload = entity[1] if entity[1].endswith(b"\r\n") else entity[1] + b"\r\n"
    return Assembled(head + b"\r\n" + payload, text, mode, draft.attachments)


def _headers(lines: list[str], message_id: str | None, from_: str | None) -> bytes:
    kept = [f"Message-ID: {message_id}"] if message_id else []
    replaced = _REPLACED | {"from"} if from_ is not None else _REPLACED
    dropping = False
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not dropping:
                kept.append(line)
            continue
        name = line.split(":", 1)[0].strip().lower()
        dropping = name in replaced
        if name == "from" and from_ is not None:
            kept.append(f"From: {from_}")
        if not dropping:
            kept.append(line)
    return "".join(line + "\r\n" for line in kept).encode("utf-8")
