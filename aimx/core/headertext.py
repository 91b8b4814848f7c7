"""Header field text as a reader sees it (L0, pure): 8-bit bytes, folding, encoded words.

Lenient by design: a hostile charset, a broken encoded word or stray bytes degrade to
replacement characters, never to an exception or a lone surrogate.
"""

import binascii
import re

_LINE_BREAKS = re.compile(r"[\r\n]+")
_SURROGATE = re.compile("[\ud800-\udfff]")


def scrub(text: str) -> str:
    """C{text} with each lone surrogate replaced by U+FFFD, so it encodes as UTF-8."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def clean(value: str) -> str:
    """A raw compat32 header value as text: 8-bit bytes read as UTF-8 (RFC 6532),
    unfolded (RFC 5322 §2.2.3), trimmed, without lone surrogates."""
    if not value.isascii():
        try:
            value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:
            # Not the parser's own text: a decoded RFC 2231 parameter may hold
            # lone surrogates (utf-7, unicode-escape).
            value = scrub(value)
    if "\n" in value or "\r" in value:
        value = _LINE_BREAKS.sub("", value)
    return value.strip()


_UTF8_COMPATIBLE = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


def decode_bytes(data: bytes, charset: str | None) -> str:
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


ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


def _word_bytes(encoding: str, text: str) -> bytes:
    """The octets of one RFC 2047 encoded word, decoded leniently."""
    data = text.encode("utf-8", "replace")
    if encoding in "qQ":
        return binascii.a2b_qp(data, header=True)
    data = _NOT_BASE64.sub(b"", data)
    if len(data) % 4 == 1:  # a lone trailing character holds no whole octet
        data = data[:-1]
    return binascii.a2b_base64(data + b"==")


_WORD = re.compile(r"[^ \t\r\n]+")
_ENCODED_RUN = re.compile(f"(?:{ENCODED_WORD.pattern})+")


def decode_words(text: str) -> str:
    """Decode RFC 2047 encoded words in unstructured text.

    Only a whole whitespace-delimited word is an encoded word (RFC 2047 §5):
    C{foo=?utf-8?q?bar?=} stays as written.  A word made of several encoded
    words written without a space between them is decoded too, as mail
    clients do.  Whitespace between adjacent encoded words is dropped (RFC 2047
    §6.2) and adjacent words in one charset are decoded together, so a
    character split across two words survives.
    """
    if "=?" not in text:
        return text
    pieces: list[str] = []
    charset: str | None = None  # the pending encoded words' charset
    data = b""
    end = 0
    for word in _WORD.finditer(text):
        gap = text[end : word.start()]
        end = word.end()
        if "=?" not in word[0] or _ENCODED_RUN.fullmatch(word[0]) is None:
            if charset is not None:
                pieces.append(decode_bytes(data, charset))
                charset = None
            pieces += (gap, word[0])
            continue
        if charset is None:
            pieces.append(gap)
        for match in ENCODED_WORD.finditer(word[0]):
            # RFC 2231 §5 allows a language suffix: charset*lang.
            word_charset = match[1].partition("*")[0].lower()
            octets = _word_bytes(match[2], match[3])
            if word_charset == charset:
                data += octets
                continue
            if charset is not None:
                pieces.append(decode_bytes(data, charset))
            charset, data = word_charset, octets
    if charset is not None:
        pieces.append(decode_bytes(data, charset))
    pieces.append(text[end:])
    return "".join(pieces)


# -- MIME parameters (RFC 2045 §5.1, RFC 2231) ---------------------------------

# One parameter after a ';': its name, then a quoted string (an unterminated one
# runs to the end) or a token.  Each alternative is linear.
_PARAM = re.compile(r';[ \t]*([^\s=;"]+)[ \t]*=[ \t]*("(?:[^"\\]|\\.)*"?|[^;]*)')
_QUOTED_PAIR = re.compile(r"\\(.)")
_SECTION = re.compile(r"\*(\d{1,3})(\*?)\Z")
_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")
#: The most RFC 2231 continuation sections read for one parameter.
MAX_SECTIONS = 256


def _unquote(value: str) -> str:
    value = value.strip()
    if value[:1] == '"':
        value = value[1:-1] if len(value) > 1 and value.endswith('"') else value[1:]
        value = _QUOTED_PAIR.sub(r"\1", value)
    return value


def _percent_decoded(value: str) -> bytes:
    return _PERCENT.sub(lambda m: bytes([int(m[1], 16)]), value.encode("latin-1"))


def decode_name(data: bytes, charset: str | None = None) -> str:
    """Bytes of a name as text, never with U+FFFD runs or lone surrogates.

    The declared charset first (when it decodes cleanly), then UTF-8 (RFC 6532),
    then Windows-1252 and Latin-1, which read any byte: a legacy 8-bit name comes
    out as the characters it most likely meant rather than as replacements.
    """
    if charset and charset.lower() not in _UTF8_COMPATIBLE:
        try:
            text = data.decode(charset)
        except Exception:  # an attacker picks the codec: unknown, non-text, ...
            pass
        else:
            if text.isascii() or not _SURROGATE.search(text):
                return text
    for codec in ("utf-8", "cp1252"):
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            pass
    return data.decode("latin-1")


def parameter(field: str, name: str) -> str | None:
    """A parameter of a raw Content-Type or Content-Disposition value, decoded.

    The field is read as received: 8-bit bytes (compat32 keeps them as surrogate
    escapes) are UTF-8 or a legacy charset (L{decode_name}), never replacement
    characters.  The RFC 2231 forms (C{name*=charset'lang'value} and the
    C{name*0}, C{name*1*}... sections) win over a plain C{name=} sent beside them
    (RFC 6266 §4.3); a plain value may hold RFC 2047 encoded words, which many
    clients send.

    @param field: the raw field value (folded or not).
    @param name: the parameter name, lowercase.
    @return: the value, or L{None} when the parameter is absent.
    """
    raw = field.encode("utf-8", "surrogateescape").decode("latin-1")  # one char per byte
    raw = _LINE_BREAKS.sub("", raw)
    plain: str | None = None
    extended: str | None = None
    sections: dict[int, tuple[str, bool]] = {}
    for match in _PARAM.finditer(raw):
        key = match[1].lower()
        if key == name:
            plain = match[2] if plain is None else plain
        elif key == name + "*":
            extended = match[2] if extended is None else extended
        elif key.startswith(name + "*"):
            section = _SECTION.match(key, len(name))
            if section is not None:
                sections.setdefault(int(section[1]), (match[2], bool(section[2])))
    if sections:
        data, charset = b"", None
        for index in range(min(len(sections), MAX_SECTIONS)):
            if index not in sections:
                break
            value, encoded = sections[index]
            value = _unquote(value)
            if encoded:
                if index == 0:
                    charset, value = _charset_prefix(value)
                data += _percent_decoded(value)
            else:
                data += value.encode("latin-1")
        return scrub(decode_name(data, charset))
    if extended is not None:
        charset, value = _charset_prefix(_unquote(extended))
        return scrub(decode_name(_percent_decoded(value), charset))
    if plain is not None:
        text = decode_name(_unquote(plain).encode("latin-1"))
        return scrub(decode_words(text).strip())
    return None


def _charset_prefix(value: str) -> tuple[str | None, str]:
    """RFC 2231 §4: C{charset'language'value}; no prefix -> no charset."""
    parts = value.split("'", 2)
    if len(parts) == 3:
        return parts[0] or None, parts[2]
    return None, value
