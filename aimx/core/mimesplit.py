"""Raw message bytes to the stdlib's C{compat32} MIME tree, without copying bodies (L0, pure).

The stdlib feed parser turns the whole message into text lines: a 25 MiB message
peaks at about 7x its size, and decoding a base64 attachment is one C call over
all of it, holding the GIL for as long.  L{parse} builds the same tree from the
bytes: part boundaries are found with C{bytes.find} and the feed parser's own
boundary pattern, only each part's header block goes to the stdlib, and a leaf's
body stays a L{Span} of the raw bytes, decoded by L{payload} in slices of about
1 MiB.  Each rule below is the feed parser's (C{email/feedparser.py}); a part
it cannot follow exactly (C{message/*}, a multipart without a usable boundary,
C{From } lines among the headers, nesting deeper than L{_MAX_DEPTH}) is given
to the stdlib alone, and so is the whole message when its line endings are mixed.

A tree holds at most L{MAX_PARTS} parts, so that the work, not only the output,
is bounded (docs/design.md, "Bound everything an outsider controls"): the cursor counts
every delimiter line that opens a part (consecutive ones included: each costs a
line match), and once L{MAX_PARTS} - 1 are counted, everything from the next
delimiter line to the end of the message becomes one last leaf, the remainder
(a C{message/rfc822} part named C{remainder.eml} whose bytes are the enclosing
multipart's Content-Type field, a blank line and the raw rest), and every
enclosing multipart ends there.  The stdlib has no such cap, so it is only given
an entity holding fewer delimiter-looking lines (a CR or LF then C{--}, counted
with C{bytes.count}) than the parts still allowed, which bounds the parts it can
build.  An entity over that budget is not parsed further: a declined part
becomes one leaf of its header fields and raw body (with its Content-Type field
in front when it is a multipart, so the bytes stay a readable entity), and a
whole message with mixed line endings is split with its most common line ending
instead (a lone CR or LF then stays inside its line, where the stdlib would break
the line).  Under the cap the tree is the stdlib's.
"""

import binascii
import copy
import functools
import io
import re
from email.message import Message
from email.parser import BytesFeedParser, BytesHeaderParser
from email.policy import compat32

import attrs

# Work on big bodies is cut into slices of about this size, so that no single
# C call holds the GIL (and stalls the reactor thread) for long.
_SLICE = 1 << 20
_MAX_DEPTH = 32
#: The most parts the multiparts of one tree hold, all levels together and the
#: remainder included (a part the stdlib parses counts its delimiter-looking lines).
MAX_PARTS = 1000
#: The file name of the leaf holding the parts past the cap.
REMAINDER_NAME = "remainder.eml"
# Lines that feedparser.headerRE accepts (a header, a continuation or a Unix From
# line), as many as follow each other; the last may lack its line end.
_HEADER_LINES = re.compile(rb"(?:(?:From |[\x21-\x39\x3b-\x7e]*:|[\t ])[^\n]*(?:\n|\Z))*")
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_UUENCODE = frozenset({"x-uuencode", "uuencode", "uue", "x-uue"})
#: A Content-Type or Content-Disposition longer than this is read without parameters.
MAX_PARAM_FIELD = 8192


class BoundedMessage(Message):
    """compat32's C{Message} whose parameters (boundary, charset, filename...) are read
    only from a field of at most L{MAX_PARAM_FIELD} characters: the stdlib's parameter
    parser takes quadratic time (80 000 parameters in one field: seconds), so a longer
    field is read as having none."""

    def _get_params_preserve(self, failobj, header):
        value = self.get(header)
        if isinstance(value, str) and len(value) > MAX_PARAM_FIELD:
            return []  # the field is there, with no parameter read
        return super()._get_params_preserve(failobj, header)


POLICY = compat32.clone(message_factory=BoundedMessage)
_HEADERS = BytesHeaderParser(policy=POLICY)


@attrs.frozen(eq=False)
class Span:
    """A leaf's body: C{raw[start:end]}, not yet copied or decoded.

    @ivar nl: the message's line ending.
    @ivar head: L{None} for a body to be transfer-decoded; else bytes written
        before C{raw[start:end]}, which are then taken as they are (the
        remainder past L{MAX_PARTS}, a part the stdlib was not given).
    """

    raw: bytes = attrs.field(repr=False)
    start: int
    end: int
    nl: bytes
    head: bytes | None = None


class _Declined(Exception):
    """The splitter cannot reproduce the feed parser here."""


def feedparse(raw: bytes) -> Message:
    """The stdlib feed parser's tree of C{raw}, fed in slices.

    The parser splits what it is fed into lines in one C call, so a big message
    fed whole would hold the GIL for that long.
    """
    parser = BytesFeedParser(policy=POLICY)
    for start in range(0, len(raw), 1 << 16):
        parser.feed(raw[start : start + (1 << 16)])
    return parser.close()


def parse(raw: bytes) -> Message:
    """The tree L{feedparse} gives, with leaf bodies as L{Span} payloads, cut
    after L{MAX_PARTS} - 1 parts.

    Read leaves through L{payload}.  C{message/*} parts keep the stdlib's nested
    message, for L{email.generator}.
    """
    crs, lfs, crlfs = _line_endings(raw)
    nl = b"\n" if not crs else b"\r\n" if crs == lfs == crlfs else None
    if nl is not None:
        try:
            return _entity(_Cursor(raw, nl), False, 0)
        except _Declined:
            pass
    if _delimiter_lines(raw, 0, len(raw), MAX_PARTS - 1) < MAX_PARTS:
        return feedparse(raw)
    # Too many parts for the stdlib, which has no cap.
    if nl is None:
        nl = b"\r\n" if crlfs >= lfs - crlfs else b"\n"
        try:
            return _entity(_Cursor(raw, nl), False, 0)
        except _Declined:
            pass
    return _leaf(_Cursor(raw, nl), 0, len(raw), False)


def parse_headers(raw: bytes) -> Message:
    """The top-level header fields as the feed parser reads them, without the body.

    Only the lines that could be header lines are given to the stdlib: it stops
    at the first line that cannot, which is in that block, so its fields are
    those of L{feedparse}.
    """
    return _HEADERS.parsebytes(raw[: _HEADER_LINES.match(raw).end()])


def payload(part: Message) -> bytes:
    """A leaf's transfer-decoded bytes, as C{part.get_payload(decode=True)}; a
    L{Span} with a head is taken as it is."""
    # Not get_payload(): it decodes a str payload with the part's own (hostile) charset.
    span = part._payload
    if not isinstance(span, Span):
        return part.get_payload(decode=True) or b""
    if span.head is not None:
        return span.head + span.raw[span.start : span.end]
    cte = str(part.get("content-transfer-encoding", "")).lower()
    if cte == "base64":
        data = _base64(span)
    elif cte == "quoted-printable":
        # a2b_qp keeps no state from one line to the next.
        out = io.BytesIO()
        for piece in _lines(span):
            out.write(binascii.a2b_qp(piece))
        data = out.getvalue()
    elif cte in _UUENCODE:
        data = None
    else:
        return span.raw[span.start : span.end]
    return _stdlib_payload(part, span) if data is None else data


def _stdlib_payload(part: Message, span: Span) -> bytes:
    """The stdlib's own decoding, for anything unusual (bad base64, uuencode)."""
    part = copy.copy(part)
    part.set_payload(span.raw[span.start : span.end].decode("ascii", "surrogateescape"))
    return part.get_payload(decode=True) or b""


def raw_payload(part: Message) -> bytes:
    """A leaf's body as received, its transfer encoding not undone; never raises.

    C{b""} for a part whose payload is a list (C{message/*}, multipart).
    """
    span = part._payload
    if isinstance(span, Span):
        return (span.head or b"") + span.raw[span.start : span.end]
    if isinstance(span, bytes):
        return span
    if isinstance(span, str):
        # The feed parser's text is the bytes read as ASCII with surrogate escapes.
        try:
            return span.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return span.encode("utf-8", "replace")
    return b""


def _line_endings(raw: bytes) -> tuple[int, int, int]:
    """How many CRs, LFs and CRLFs C{raw} holds.  Every line ends in CRLF when
    the three are equal, in LF when there is no CR; otherwise the endings are
    mixed (the feed parser also breaks lines at a lone CR)."""
    crs = lfs = crlfs = 0
    for start in range(0, len(raw), _SLICE):
        stop = start + _SLICE
        crs += raw.count(b"\r", start, stop)
        lfs += raw.count(b"\n", start, stop)
        crlfs += raw.count(b"\r\n", start, stop + 1)
    return crs, lfs, crlfs


def _delimiter_lines(raw: bytes, start: int, stop: int, limit: int) -> int:
    """How many lines of C{raw[start:stop]} might be delimiters, more than
    C{limit} or at most C{limit}: lines starting with C{--} after a CR or an LF
    (or at C{start}), counted a slice at a time, stopping once over C{limit}."""
    count = int(raw.startswith(b"--", start, stop))
    for begin in range(start, stop, _SLICE):
        if count > limit:
            break
        # Each occurrence starting in this slice, and only those: a needle is 3 bytes.
        end = min(begin + _SLICE + 2, stop)
        count += raw.count(b"\n--", begin, end) + raw.count(b"\r--", begin, end)
    return count


class _Cursor:
    """A position in the message (always a line start) and the boundary
    patterns of the enclosing multiparts, like the feed parser's C{BufferedSubFile}
    with its stack of end-of-file matchers."""

    def __init__(self, raw: bytes, nl: bytes):
        self.raw = raw
        self.nl = nl
        self.pos = 0
        self.stack: list[re.Pattern] = []
        # Parts counted so far (see L{MAX_PARTS}); never more than MAX_PARTS - 1.
        self.parts = 0

    @property
    def budget(self) -> int:
        """How many more parts may be counted before the remainder."""
        return MAX_PARTS - 1 - self.parts

    def line_end(self, start: int) -> int:
        end = self.raw.find(self.nl, start)
        return len(self.raw) if end == -1 else end + len(self.nl)

    def matches(self, start: int, end: int, patterns) -> bool:
        return self.raw.startswith(b"--", start) and any(
            pattern.match(self.raw, start, end) for pattern in patterns
        )

    def readline(self) -> tuple[int, int] | None:
        """The next line, consumed; L{None} at the end of the current entity."""
        start = self.pos
        if start >= len(self.raw):
            return None
        end = self.line_end(start)
        if self.matches(start, end, self.stack):
            return None
        self.pos = end
        return start, end

    def find_line(self, patterns, stop: int | None = None) -> tuple[int, int] | None:
        """The first line from here on (starting before C{stop}) that one of
        C{patterns} matches.

        One regular expression over the text finds it (a Python-level check of each
        line starting C{--} cost seconds on a message of such lines), searched in
        windows of about L{_SLICE} that end at a line end, so the GIL is given up
        between them.
        """
        if not patterns:
            return None
        raw, regex = self.raw, _delimiters(tuple(p.pattern for p in patterns))
        stop = len(raw) if stop is None else stop
        start = self.pos
        while start < stop:
            end = raw.find(b"\n", min(start + _SLICE, stop))
            end = stop if end == -1 or end >= stop else end + 1
            found = regex.search(raw, start, end)
            if found is not None:
                return found.start(), self.line_end(found.start())
            start = end
        return None

    def skip_entity(self) -> None:
        """Move to the line that ends the current entity, or to the end."""
        found = self.find_line(self.stack)
        self.pos = len(self.raw) if found is None else found[0]


_SEPARATOR = re.compile(rb"^\(\?P<sep>(.*)\)\(\?P<end>--\)\?", re.S)


@functools.lru_cache(maxsize=64)
def _delimiters(patterns: tuple[bytes, ...]) -> re.Pattern:
    """One expression for the delimiter lines of L{_multipart}'s patterns (given by
    their source): a line that is C{--boundary}, maybe C{--}, maybe blanks."""
    separators = b"|".join(_SEPARATOR.match(p).group(1) for p in patterns)
    return re.compile(rb"^(?:" + separators + rb")(?:--)?[ \t]*\r?$", re.M)


def _entity(cur: _Cursor, digest: bool, depth: int) -> Message:
    """One message or part from the cursor on (C{FeedParser._parsegen})."""
    if depth > _MAX_DEPTH:
        raise _Declined()
    raw, start, nl = cur.raw, cur.pos, cur.nl
    # The headers end at the first line headerRE rejects: a blank line (dropped)
    # or the first body line; or at a line that ends the entity.
    end = _HEADER_LINES.match(raw, start).end()
    found = cur.find_line(cur.stack, end)
    if found is not None:
        end = cur.pos = found[0]
    else:
        cur.pos = end + len(nl) if raw.startswith(nl, end) else end
    if raw.find(b"\nFrom ", start, end) != -1:
        raise _Declined()  # the parser may push it back into the body
    msg = _HEADERS.parsebytes(raw[start:end])
    if digest:
        msg.set_default_type("message/rfc822")
    maintype = msg.get_content_maintype()
    if maintype == "message":
        raise _Declined()
    if maintype == "multipart":
        _multipart(cur, msg, depth)
    else:
        body_start = cur.pos
        cur.skip_entity()
        msg.set_payload(Span(raw, body_start, cur.pos, cur.nl))
    return msg


def _multipart(cur: _Cursor, msg: Message, depth: int) -> None:
    """A multipart's parts, up to its close delimiter (or the end of its entity)."""
    boundary = msg.get_boundary()
    if boundary is None:
        raise _Declined()
    try:
        separator = ("--" + boundary).encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        raise _Declined() from None
    pattern = re.compile(
        rb"(?P<sep>"
        + re.escape(separator)
        + rb")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"
    )
    raw, outer = cur.raw, cur.stack
    digest = msg.get_content_type() == "multipart/digest"
    parts: list[Message] = []
    closed = False
    while (found := cur.find_line([*outer, pattern])) is not None:
        start, end = found
        cur.pos = start
        if cur.matches(start, end, outer):
            break
        cur.pos = end
        if pattern.match(raw, start, end)["end"]:
            closed = True
            break
        # Delimiters that follow each other enclose no part; each one counts.
        while cur.budget > 0:
            cur.parts += 1
            line = cur.readline()
            if line is None or not pattern.match(raw, *line):
                break
            start = line[0]
        else:
            parts.append(_remainder(cur, msg, start))
            break
        if line is not None:
            cur.pos = line[0]
        cur.stack = [*outer, pattern]
        parts.append(_part(cur, digest, depth + 1))
        cur.stack = outer
    else:
        cur.pos = len(raw)
    if not parts:
        raise _Declined()  # no first delimiter: the stdlib keeps the text as payload
    if closed:
        cur.skip_entity()  # the epilogue
    msg.set_payload(parts)


def _part(cur: _Cursor, digest: bool, depth: int) -> Message:
    """One part of a multipart; the feed parser drops the line ending before the
    next delimiter, which belongs to it (RFC 2046 §5.1.1)."""
    start, stack, counted = cur.pos, cur.stack, cur.parts
    try:
        part = _entity(cur, digest, depth)
    except _Declined:
        cur.pos, cur.stack, cur.parts = start, stack, counted
        cur.skip_entity()
        if cur.pos > start and not cur.raw.endswith(cur.nl, start, cur.pos):
            raise
        delimiters = _delimiter_lines(cur.raw, start, cur.pos, cur.budget)
        if delimiters <= cur.budget:
            cur.parts += delimiters
            return _alone(cur.raw[start : cur.pos], cur.nl, digest)
        part = _leaf(cur, start, cur.pos, digest)
    span = part.get_payload()
    if isinstance(span, Span) and span.raw.endswith(span.nl, span.start, span.end):
        part.set_payload(attrs.evolve(span, end=span.end - len(span.nl)))
    return part


def _alone(entity: bytes, nl: bytes, digest: bool) -> Message:
    """The stdlib's tree of one part, parsed as the only part of a multipart, so
    that its last line ending is dropped as in place; C{entity} is empty or ends
    with C{nl}."""
    boundary = b"=_aimx"
    while b"--" + boundary in entity:
        boundary += b"_"
    subtype = b"digest" if digest else b"mixed"
    wrapper = feedparse(
        b"Content-Type: multipart/%s; boundary=\"%s\"%s%s--%s%s%s--%s--%s"
        % (subtype, boundary, nl, nl, boundary, nl, entity, boundary, nl)
    )
    return wrapper.get_payload(0)


def _leaf(cur: _Cursor, start: int, stop: int, digest: bool) -> Message:
    """The entity C{raw[start:stop]} as one leaf, not parsed further: its header
    fields, and its body as a L{Span}; a multipart's body gets its Content-Type
    field in front, so that the bytes are a readable entity."""
    raw, nl = cur.raw, cur.nl
    end = _HEADER_LINES.match(raw, start, stop).end()
    msg = _HEADERS.parsebytes(raw[start:end])
    if digest:
        msg.set_default_type("message/rfc822")
    body = end + len(nl) if raw.startswith(nl, end, stop) else end
    head = _content_type_field(msg, nl) if msg.get_content_maintype() == "multipart" else None
    msg.set_payload(Span(raw, body, stop, nl, head))
    return msg


def _remainder(cur: _Cursor, multipart: Message, start: int) -> Message:
    """The leaf holding everything from the delimiter line at C{start} on: the
    parts past L{MAX_PARTS}, as a C{message/rfc822} entity of the enclosing
    multipart's Content-Type field, a blank line and the raw rest."""
    cur.pos = len(cur.raw)
    part = Message()
    part["Content-Type"] = "message/rfc822"
    part["Content-Disposition"] = f'attachment; filename="{REMAINDER_NAME}"'
    head = _content_type_field(multipart, cur.nl)
    part.set_payload(Span(cur.raw, start, len(cur.raw), cur.nl, head))
    return part


def _content_type_field(msg: Message, nl: bytes) -> bytes:
    """C{msg}'s Content-Type field as received (the instance its boundary was
    read from), then a blank line."""
    value = msg.get("content-type", "")
    try:
        value = value.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:  # only the parser's own text is expected here
        value = value.encode("utf-8", "replace")
    return b"Content-Type: " + value + nl + nl


def _lines(span: Span):
    """The span in pieces of about L{_SLICE}, each ending at a line end."""
    raw, start = span.raw, span.start
    while start < span.end:
        stop = raw.find(span.nl, min(start + _SLICE, span.end), span.end)
        stop = span.end if stop == -1 else stop + len(span.nl)
        yield raw[start:stop]
        start = stop


def _base64(span: Span) -> bytes | None:
    """Base64 decoded a slice at a time, or L{None} unless the stdlib's strict
    first attempt (C{email._encoded_words.decode_b}) would succeed."""
    out = io.BytesIO()
    carry = b""
    digits = padding = 0
    for piece in _lines(span):
        if padding:
            return None  # "=" before the last line
        piece = carry + piece.replace(span.nl, b"")
        if piece.translate(None, _BASE64_ALPHABET):
            data = piece.rstrip(b"=")
            padding = len(piece) - len(data)
            if not padding or data.translate(None, _BASE64_ALPHABET):
                return None
            piece = data
        whole = len(piece) - len(piece) % 4
        digits += len(piece) - len(carry)
        out.write(binascii.a2b_base64(piece[:whole]))
        carry = piece[whole:]
    # decode_b pads to a multiple of four; strict decoding then wants one "="
    # after three digits or two after two.
    padding += -(digits + padding) % 4
    if (len(carry), padding) not in ((0, 0), (2, 2), (3, 1)):
        return None
    if carry:
        out.write(binascii.a2b_base64(carry + b"=" * padding))
    return out.getvalue()
