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
