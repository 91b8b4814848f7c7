"""DKIM without the cryptography (L0, pure): RFC 6376 and RFC 8463.

Everything a verifier and a signer decide before and after the public-key
operation lives here: tag lists (§3.2), DKIM-Signature fields (§3.5), key
records (§3.6.1), header and body canonicalisation (§3.4), the choice of the
signed header fields (§5.4.2), the signature field's own hash input (§3.7) and
the folded field a signer writes.  L{aimx.auth.dkim} adds key lookups and the
RSA and Ed25519 operations (through C{cryptography}) and the per-message policy.

The header block is the one split of L{aimx.core.headerblock}, so DKIM hashes
exactly the fields the identity parse reads.  The body is never copied whole nor
handed to one regular expression or join: it is read in slices of about
L{SLICE} bytes, cut anywhere but between a CR and its LF, and each
canonicalisation is a generator of pieces that are hashed one at a time, so a
25 MiB body lets other threads run between slices.

dkimpy is the oracle of tests/test_dkim.py; this reads signatures, keys and
messages as it does (its tag-list rules, its 10-hour clock leeway for t= and x=,
its "one From more than h= lists" rule), except where RFC 6376 says otherwise:
a signature whose h= lacks From is not valid (§6.1.1); a key record's s= is a
colon-separated list and its h= (hash algorithms) and t=s flag are honoured
(§3.6.1); k= must match a= (§6.1.2 step 7); only the b= tag's value is emptied
in the signature's own field, and its simple canonicalisation drops only the final
CRLF (§3.7).  Ed25519 keys work (RFC 8463; dkimpy needs PyNaCl for them).
"""

import base64
import hashlib
import re

import attrs

from aimx.core import headerblock

#: Bytes of body handled per step (regular expressions, copies, hash updates).
SLICE = 1 << 20

#: Leeway for a signer's clock: t= up to this far in the future and x= this far in
#: the past are accepted (dkimpy's value).
CLOCK_LEEWAY = 36000

#: The algorithms a signature may name (RFC 8301 §3.1 and RFC 8463 §3); rsa-sha1 is
#: read but never valid.
ALGORITHMS = ("rsa-sha256", "ed25519-sha256", "rsa-sha1")

#: RFC 6376 §5.4.1: the fields a signer should sign, in dkimpy's order.
SHOULD_SIGN = (
    b"from", b"sender", b"reply-to", b"subject", b"date", b"message-id", b"to", b"cc",
    b"mime-version", b"content-type", b"content-transfer-encoding", b"content-id",
    b"content-description", b"resent-date", b"resent-from", b"resent-sender",
    b"resent-to", b"resent-cc", b"resent-message-id", b"in-reply-to", b"references",
    b"list-id", b"list-help", b"list-unsubscribe", b"list-subscribe", b"list-post",
    b"list-owner", b"list-archive",
)  # fmt: skip
#: RFC 6376 §5.4.1: fields a signer should not sign (dkimpy refuses them).
SHOULD_NOT_SIGN = frozenset({
    b"return-path", b"received", b"comments", b"keywords", b"bcc", b"resent-bcc",
    b"dkim-signature",
})  # fmt: skip

_TAG_NAME = re.compile(rb"[A-Za-z]\w*")
_WHITESPACE = re.compile(rb"\s+")
_H_SEPARATOR = re.compile(rb"\s*:\s*")
# d= and s=: printable ASCII without whitespace or the specials dkimpy refuses in d=.
_DOMAIN = re.compile(rb"[!-~]+")
_DOMAIN_SPECIALS = re.compile(rb"[()<>\[\]:;@\\,]")
_LENGTH = re.compile(rb"\d{1,76}")
_DIGITS = re.compile(rb"\d+")
_WSP_TO_COMPRESS = re.compile(rb"\t[\t ]*| [\t ]+")
_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")
_CRLFS_REVERSED = re.compile(rb"(?:\n\r)*")


class DkimError(ValueError):
    """Something DKIM cannot use; the message is a short reason (it becomes
    L{aimx.core.authresults.DkimResult.why})."""


class TagListError(DkimError):
    """Not a tag list (§3.2)."""


class SignatureError(DkimError):
    """A DKIM-Signature field that cannot be valid (§3.5, §6.1.1)."""


class KeyRecordError(DkimError):
    """A key record that cannot be used (§3.6.1, §6.1.2)."""


def parse_tag_list(value: bytes) -> dict[bytes, bytes]:
    """A tag list (RFC 6376 §3.2): C{{name: value}}, names and values stripped of
    surrounding whitespace (folds included), a final C{;} allowed.

    Read as dkimpy reads it: a name starts with a letter; an empty tag-spec before
    the last, a spec without C{=} or a repeated name is an error.

    @raise TagListError: it is not a tag list.
    """
    tags: dict[bytes, bytes] = {}
    specs = value.strip().split(b";")
    if not specs[-1]:
        specs.pop()
    for spec in specs:
        name, equals, tag_value = spec.partition(b"=")
        name = name.strip()
        if not equals or _TAG_NAME.match(name) is None:
            raise TagListError(f"not a tag: {spec[:20]!r}")
        if name in tags:
            raise TagListError(f"tag {name[:20]!r} repeated")
        tags[name] = tag_value.strip()
    return tags


def _b64(value: bytes, what: str) -> bytes:
    try:
        return base64.b64decode(_WHITESPACE.sub(b"", value), validate=True)
    except ValueError:
        raise SignatureError(f"{what} is not base64") from None


@attrs.frozen
class Signature:
    """A DKIM-Signature field whose tags are all usable (§3.5).

    @ivar algorithm: C{a=}: one of L{ALGORITHMS}.
    @ivar header_canon: C{"simple"} or C{"relaxed"}; so is C{body_canon}.
    @ivar domain: C{d=} as written (ASCII).
    @ivar selector: C{s=} as written (ASCII).
    @ivar identity: C{i=}, or None.
    @ivar signed: the names of C{h=}, lower-cased, in order.
    @ivar body_hash: C{bh=}, decoded; C{signature} is C{b=}, decoded.
    @ivar length: C{l=}, or None.
    @ivar timestamp: C{t=}, or None; C{expires} is C{x=}, or None.
    """

    algorithm: str
    header_canon: str
    body_canon: str
    domain: str
    selector: str
    identity: str | None
    signed: tuple[bytes, ...]
    body_hash: bytes = attrs.field(repr=False)
    signature: bytes = attrs.field(repr=False)
    length: int | None = None
    timestamp: int | None = None
    expires: int | None = None

    @property
    def key_name(self) -> str:
        """Where the key record is (§3.6.2.1)."""
        return f"{self.selector}._domainkey.{self.domain}"


def _canonicalisations(value: bytes) -> tuple[str, str]:
    parts = value.split(b"/")
    if len(parts) == 1:
        parts.append(b"simple")
    if len(parts) != 2 or not all(p in (b"simple", b"relaxed") for p in parts):
        raise SignatureError("c= is not a known canonicalisation")
    return parts[0].decode(), parts[1].decode()


def _name(tags: dict, tag: bytes) -> str:
    value = tags[tag]
    if _DOMAIN.fullmatch(value) is None or _DOMAIN_SPECIALS.search(value):
        raise SignatureError(f"{tag.decode()}= is not a domain name")
    return value.decode("ascii")


def parse_signature(tags: dict[bytes, bytes], *, now: float) -> Signature:
    """The signature a DKIM-Signature field's tags describe, checked (§3.5, §6.1.1).

    The checks are dkimpy's, in its order, with its leeway of L{CLOCK_LEEWAY}
    seconds for C{t=} in the future and C{x=} in the past; and h= must name From
    (§6.1.1).

    @param tags: the field's value read by L{parse_tag_list}.
    @param now: the time (seconds since the epoch) expiry is checked against.
    @raise SignatureError: the first problem found.
    """
    for tag in (b"v", b"a", b"b", b"bh", b"d", b"h", b"s"):
        if tag not in tags:
            raise SignatureError(f"missing {tag.decode()}=")
    if tags[b"a"] not in (a.encode() for a in ALGORITHMS):
        raise SignatureError("unknown a=")
    signature = _b64(tags[b"b"], "b=")
    body_hash = _b64(tags[b"bh"], "bh=")
    if not signature or not body_hash:
        raise SignatureError("empty b= or bh=")
    domain = _name(tags, b"d")
    identity = tags.get(b"i")
    if identity is not None:
        # §3.5 i=: its domain is d= or a subdomain of it (dkimpy's test of the suffix).
        d = tags[b"d"].lower()
        i = identity.lower()
        if not (i.endswith(d) and len(i) > len(d) and i[-len(d) - 1] in b"@."):
            raise SignatureError("i= is not within d=")
    length = tags.get(b"l")
    if length is not None and _LENGTH.fullmatch(length) is None:
        raise SignatureError("l= is not a number")
    if b"q" in tags and tags[b"q"] != b"dns/txt":
        raise SignatureError("q= is not dns/txt")
    timestamp = _time(tags, b"t")
    if timestamp is not None and timestamp > now + CLOCK_LEEWAY:
        raise SignatureError("t= is in the future")
    if tags[b"v"] != b"1":
        raise SignatureError("v= is not 1")
    expires = _time(tags, b"x")
    if expires is not None:
        if expires < now - CLOCK_LEEWAY:
            raise SignatureError("expired (x=)")
        if timestamp and expires < timestamp:
            raise SignatureError("x= is before t=")
    header_canon, body_canon = _canonicalisations(tags.get(b"c", b"simple/simple"))
    signed = tuple(name.lower() for name in _H_SEPARATOR.split(tags[b"h"]))
    if b"from" not in signed:
        raise SignatureError("h= does not sign From (RFC 6376 §6.1.1)")
    return Signature(
        algorithm=tags[b"a"].decode(), header_canon=header_canon, body_canon=body_canon,
        domain=domain, selector=_name(tags, b"s"),
        identity=None if identity is None else identity.decode("ascii", "replace"),
        signed=signed, body_hash=body_hash, signature=signature,
        length=None if length is None else int(length), timestamp=timestamp,
        expires=expires,
    )


def _time(tags: dict, tag: bytes) -> int | None:
    value = tags.get(tag)
    if value is None:
        return None
    if _DIGITS.fullmatch(value) is None:
        raise SignatureError(f"{tag.decode()}= is not a number")
    return int(value)


@attrs.frozen
class KeyRecord:
    """A usable public key record (§3.6.1).

    @ivar key_type: C{"rsa"} or C{"ed25519"}.
    @ivar public_key: C{p=} decoded: DER (SubjectPublicKeyInfo or PKCS#1
        RSAPublicKey) for RSA, the 32 raw bytes for Ed25519 (RFC 8463 §4).
    @ivar strict: the C{t=s} flag: i= must be in d= itself, not a subdomain.
    @ivar testing: the C{t=y} flag (recorded, not acted on).
    """

    key_type: str
    public_key: bytes = attrs.field(repr=False)
    strict: bool = False
    testing: bool = False


def _colon_list(value: bytes) -> set[bytes]:
    return {item.strip() for item in value.split(b":")}


def parse_key_record(record: bytes) -> KeyRecord:
    """The key a TXT record publishes (§3.6.1).

    @param record: the record's strings, joined.
    @raise KeyRecordError: no record, not a tag list, another version, an unknown
        k=, a service type (s=) or hash list (h=) that excludes email or sha256, no
        p=, an empty p= (revoked) or one that is not base64.
    """
    if not record:
        raise KeyRecordError("no key record")
    try:
        tags = parse_tag_list(record)
    except TagListError:
        raise KeyRecordError("key record is not a tag list") from None
    if tags.get(b"v", b"DKIM1") != b"DKIM1":
        raise KeyRecordError("key record v= is not DKIM1")
    key_type = tags.get(b"k", b"rsa")
    if key_type not in (b"rsa", b"ed25519"):
        raise KeyRecordError("unknown key type (k=)")
    if b"s" in tags and not _colon_list(tags[b"s"]) & {b"email", b"*"}:
        raise KeyRecordError("key is not for email (s=)")
    if b"h" in tags and b"sha256" not in _colon_list(tags[b"h"]):
        raise KeyRecordError("key does not allow sha256 (h=)")
    if b"p" not in tags:
        raise KeyRecordError("key record has no p=")
    if not _WHITESPACE.sub(b"", tags[b"p"]):
        raise KeyRecordError("key revoked (empty p=)")
    try:  # as dkimpy reads it: bytes outside base64 (a stray quote) are skipped
        public_key = base64.b64decode(tags[b"p"])
    except ValueError:
        raise KeyRecordError("key p= is not base64") from None
    flags = _colon_list(tags.get(b"t", b""))
    return KeyRecord(key_type=key_type.decode(), public_key=public_key,
                     strict=b"s" in flags, testing=b"y" in flags)


def key_problem(signature: Signature, key: KeyRecord) -> str | None:
    """Why C{key} cannot check C{signature} (§6.1.2 step 7, §3.6.1 t=s), or None."""
    if signature.algorithm.split("-")[0] != key.key_type:
        return "key type does not match a="
    if key.strict and signature.identity is not None:
        domain = signature.identity.rpartition("@")[2]
        if domain.lower().rstrip(".") != signature.domain.lower().rstrip("."):
            return "i= is a subdomain of d= but the key says t=s"
    return None


@attrs.frozen
class Message:
    """A message as DKIM reads it: header fields and where the body starts.

    @ivar fields: C{((name, value), ...)} from L{headerblock.split}: each value
        keeps its leading space and folds and ends in CRLF.
    """

    fields: tuple[tuple[bytes, bytes], ...]
    raw: bytes = attrs.field(repr=False)
    body_start: int
    _positions: dict = attrs.field(repr=False, eq=False)

    def body(self, slice_size: int = SLICE):
        """The body in pieces (see L{body_pieces})."""
        return body_pieces(self.raw, self.body_start, slice_size)

    def positions(self, name: bytes) -> tuple[int, ...]:
        """Where the fields called C{name} (lower case) are, top to bottom."""
        return self._positions.get(name, ())


def read_message(raw: bytes) -> Message:
    """Split C{raw} as DKIM reads it.

    @raise headerblock.HeaderBlockError: the header block cannot be read
        unambiguously (such a message has no valid signature).
    """
    fields, after = headerblock.split(raw)
    fields = tuple((name, value) for name, value in fields)
    positions: dict[bytes, list[int]] = {}
    for i, (name, _) in enumerate(fields):
        positions.setdefault(name.lower(), []).append(i)
    return Message(fields=fields, raw=raw, body_start=after,
                   positions={k: tuple(v) for k, v in positions.items()})


def _cuts(data: bytes, start: int, end: int, size: int):
    """C{(a, b)} spans of about C{size} bytes covering C{data[start:end]}, never
    ending between a CR and its LF."""
    a = start
    while a < end:
        b = min(a + size, end)
        if b < end and data[b - 1] == 0x0D and data[b] == 0x0A:
            b = b - 1 if b - 1 > a else b + 1
        yield a, b
        a = b


def body_pieces(raw: bytes, start: int, slice_size: int = SLICE):
    """C{raw[start:]} with every line end as CRLF (a bare LF becomes CRLF, as
    dkimpy reads it), in pieces of about C{slice_size} bytes: views of C{raw}
    where nothing changes."""
    view = memoryview(raw)
    for a, b in _cuts(raw, start, len(raw), slice_size):
        lfs = raw.count(b"\n", a, b)
        if lfs and lfs != raw.count(b"\r\n", a, b):
            yield raw[a:b].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        else:
            yield view[a:b]


def _relaxed_lines(pieces):
    """§3.4.4 a: WSP before a CRLF removed, other runs of WSP made one SP, a piece at
    a time; a run that reaches the end of a piece waits for what follows it."""
    pending = False  # a run of WSP ended the previous piece
    for piece in pieces:
        data = bytes(piece)
        if pending:
            rest = data.lstrip(b" \t")
            if not rest:
                continue
            if not rest.startswith(b"\r\n"):
                yield b" "
            pending = False
            data = rest
        kept = data.rstrip(b" \t")
        pending = len(kept) < len(data)
        if b"\t" in kept or b"  " in kept or b" \r\n" in kept:
            yield from _rewritten(kept)
        else:
            yield kept
    if pending:
        yield b" "


#: Bytes given to one regular expression rewriting whitespace (dense whitespace
#: costs some 30 ns a byte there, against about 1 for a copy or a hash).
_REWRITE = SLICE // 4


def _rewritten(data: bytes):
    """C{data} with §3.4.4 a applied, in parts that each end with a byte other than
    WSP or CR, so that no run of WSP and no WSP before a CRLF crosses a part."""
    start = 0
    while start < len(data):
        end = start + _REWRITE
        if end < len(data):
            cut = start + len(data[start:end].rstrip(b" \t\r"))
            end = cut if cut > start else len(data)
        yield _WSP_TO_COMPRESS.sub(b" ", _TRAILING_WSP.sub(b"\r\n", data[start:end]))
        start = end


def _trailing_crlfs(piece) -> int:
    """How many CRLFs end C{piece}."""
    if len(piece) < 2 or piece[-2:] != b"\r\n":
        return 0
    window = bytes(piece[-256:])
    stripped = window.rstrip(b"\r\n")
    if not stripped and len(window) < len(piece):
        window = bytes(piece)
        stripped = window.rstrip(b"\r\n")
    tail = window[len(stripped):]  # only CRs and LFs
    if 2 * tail.count(b"\r\n") == len(tail):
        return len(tail) // 2
    return _CRLFS_REVERSED.match(tail[::-1]).end() // 2


def _crlfs(count: int, slice_size: int):
    per = max(1, slice_size // 2)
    while count > 0:
        yield b"\r\n" * min(count, per)
        count -= per


def canonical_body(pieces, canon: str, slice_size: int = SLICE):
    """The canonical body (§3.4.3 simple, §3.4.4 relaxed) of a body given as pieces
    with CRLF line ends (L{body_pieces}), as pieces.

    Trailing empty lines become one CRLF; a CRLF is added when the body does not
    end with one; an empty body is CRLF (simple) or nothing (relaxed).

    @param canon: C{"simple"} or C{"relaxed"}.
    """
    relaxed = canon == "relaxed"
    held = 0  # CRLFs seen at the end so far: dropped unless more content follows
    content = False
    for piece in _relaxed_lines(pieces) if relaxed else pieces:
        ending = _trailing_crlfs(piece)
        if 2 * ending == len(piece):
            held += ending
            continue
        if held:
            yield from _crlfs(held, slice_size)
        yield piece[: len(piece) - 2 * ending] if ending else piece
        content = True
        held = ending
    if content or not relaxed:
        yield b"\r\n"


def body_hash(pieces, canon: str, length: int | None = None,
              slice_size: int = SLICE) -> tuple[bytes, int]:
    """SHA-256 of the canonical body, or of its first C{length} bytes (l=).

    @return: C{(digest, length of the whole canonical body)}.
    """
    digest = hashlib.sha256()
    total = 0
    for piece in canonical_body(pieces, canon, slice_size):
        if length is None:
            digest.update(piece)
        elif total < length:
            digest.update(piece[: length - total])
        total += len(piece)
    return digest.digest(), total


def simple_header(name: bytes, value: bytes) -> bytes:
    """§3.4.1: the field as it is."""
    return name + b":" + value


def relaxed_header(name: bytes, value: bytes) -> bytes:
    """§3.4.2: name lower-cased, value unfolded, runs of WSP made one SP, whitespace
    at both ends removed; ends in CRLF."""
    value = value.replace(b"\r\n", b"")
    if b"\t" in value or b"  " in value:
        value = _WSP_TO_COMPRESS.sub(b" ", value)
    return name.lower().rstrip() + b":" + value.strip() + b"\r\n"


def without_b_value(value: bytes) -> bytes:
    """A DKIM-Signature value with the value of its b= tag, and the whitespace around
    it, removed (§3.7): C{"...; b="}, no final CRLF when b= is the last tag."""
    start = 0
    while start <= len(value):
        end = value.find(b";", start)
        if end == -1:
            end = len(value)
        equals = value.find(b"=", start, end)
        if equals != -1 and value[start:equals].strip() == b"b":
            return value[: equals + 1] + value[end:]
        start = end + 1
    return value


def select_fields(message: Message, names) -> list[tuple[bytes, bytes]]:
    """The fields C{names} (lower case, in order) cover (§5.4.2): each name takes the
    bottom-most instance not taken yet; a name with none left covers nothing."""
    taken: dict[bytes, int] = {}
    chosen = []
    for name in names:
        positions = message.positions(name)
        used = taken.get(name, 0)
        if used < len(positions):
            chosen.append(message.fields[positions[-1 - used]])
            taken[name] = used + 1
    return chosen


def header_input(message: Message, names, signature_field: tuple[bytes, bytes],
                 canon: str) -> bytes:
    """What the header hash covers (§3.7 step 2): the selected fields, then the
    signature's own field with its b= value removed and without a final CRLF,
    all canonicalised with C{canon}."""
    canonical = relaxed_header if canon == "relaxed" else simple_header
    name, value = signature_field
    own = canonical(name, without_b_value(value))
    if own.endswith(b"\r\n"):
        own = own[:-2]
    return b"".join(canonical(n, v) for n, v in select_fields(message, names)) + own


def verified_names(signature: Signature) -> tuple[bytes, ...]:
    """The names a verifier selects fields by: h=, and one From more when h= has
    From (as dkimpy does, its bug 644046), so that a From added above the signed
    ones breaks the signature."""
    return signature.signed + ((b"from",) if b"from" in signature.signed else ())


def signed_names(message: Message, headers=None) -> tuple[bytes, ...]:
    """The h= list a signer uses, lower-cased.

    @param headers: names (str or bytes) to sign, in order; None for the §5.4.1 set
        present in the message, in header order, with From once more (dkimpy's
        default).
    @raise ValueError: From is not signed, or a field that should not be is.
    """
    if headers is None:
        names = [n.lower() for n, _ in message.fields if n.lower() in SHOULD_SIGN]
        names += [n for n in names if n == b"from"]
    else:
        names = [(h.encode("ascii") if isinstance(h, str) else bytes(h)).lower()
                 for h in headers]
    if b"from" not in names:
        raise ValueError("the From header field must be signed")
    refused = sorted(set(names) & SHOULD_NOT_SIGN)
    if refused:
        raise ValueError(f"the {refused[0].decode()} header field should not be signed")
    return tuple(names)


#: Width of the lines of a signature field we write (RFC 5322 §2.1.1: SHOULD 78).
WIDTH = 78


class _Folder:
    """Lays out a header field value in lines of at most L{WIDTH} characters."""

    def __init__(self, column: int):
        self.parts: list[bytes] = []
        self.column = column

    def _fold(self):
        self.parts.append(b"\r\n ")
        self.column = 1

    def word(self, text: bytes, glue: bytes = b" "):
        """C{text} on one line, after C{glue} or at the start of a new line."""
        if self.column + len(glue) + len(text) > WIDTH and self.column > 1:
            self._fold()
            if 1 + len(text) > WIDTH:
                return self.letters(text)
        else:
            self.parts.append(glue)
            self.column += len(glue)
        self.parts.append(text)
        self.column += len(text)

    def letters(self, text: bytes):
        """C{text} (base64) broken wherever a line is full."""
        while text:
            room = WIDTH - self.column
            if room <= 0:
                self._fold()
                continue
            self.parts.append(text[:room])
            self.column += len(text[:room])
            text = text[room:]

    def value(self) -> bytes:
        return b"".join(self.parts)


def signature_value(*, algorithm: str, domain: str, selector: str, timestamp: int,
                    names, body_hash: bytes, signature: bytes = b"") -> bytes:
    """The value of the DKIM-Signature field a signer writes (relaxed/relaxed),
    folded with CRLF: C{" v=1; a=...; b=<signature>"}.

    With C{signature} empty it ends in C{"b="}: what the header hash covers.  The
    layout before b= does not depend on the signature, so the field written is the
    one hashed, b= aside.  Folds go between tags, after the colons of h= and inside
    base64 values, where RFC 6376 §3.5 allows whitespace.
    """
    folder = _Folder(len(b"DKIM-Signature:"))
    for tag in (b"v=1", b"a=" + algorithm.encode(), b"c=relaxed/relaxed",
                b"d=" + domain.encode(), b"i=@" + domain.encode(), b"q=dns/txt",
                b"s=" + selector.encode(), b"t=%d" % timestamp):
        folder.word(tag + b";")
    names = list(names)
    for i, name in enumerate(names):
        last = i == len(names) - 1
        text = name + (b";" if last else b":")
        folder.word(b"h=" + text if i == 0 else text, b" " if i == 0 else b"")
    folder.word(b"bh=" + base64.b64encode(body_hash) + b";")
    folder.word(b"b=")
    folder.letters(base64.b64encode(signature))
    return folder.value()
