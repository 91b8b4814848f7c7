"""The header block of a message as DKIM reads it (L0, pure).

RFC 6376 §5.4.2: a verifier hashes header fields as they occur, bottom-up per name.
This is the one split of the header block both DKIM (L{aimx.core.dkim}) and the
identity parse read, so that what aimx stores for a trusted message is what its
signature covered.  Lines end at LF (a CR before it is dropped); the block ends at
the first empty line.  Stricter than dkimpy's split where a difference could be
used to show one thing and sign another: an mbox C{From } line is allowed only as
the very first line, and a continuation line needs a field before it.  Linear in the
block: continuations are collected and joined once.
"""

import re

#: Header fields DKIM and the identity parse will read; more is refused (RFC 5322
#: sets no limit; real mail has a few dozen).
MAX_FIELDS = 1000

_FIELD_NAME = re.compile(rb"([\x21-\x7e]+?):")


class HeaderBlockError(ValueError):
    """The header block cannot be read unambiguously."""


def split(message: bytes) -> tuple[list[list[bytes]], int]:
    """The header fields and where the header block ends.

    @param message: the message bytes as received.
    @return: C{[[name, value + CRLF], ...]} (the value keeps its leading space and
        its folds, each line ending CRLF) and the offset just past the empty line
        (the length of C{message} when there is none).
    @raise HeaderBlockError: a line that is neither a field nor a continuation, a
        C{From } line after the first line, a continuation without a field, or more
        than L{MAX_FIELDS} fields.
    """
    fields: list[list] = []
    pos, size = 0, len(message)
    while pos < size:
        newline = message.find(b"\n", pos)
        if newline == -1:
            line, after = message[pos:], size
        else:
            line, after = message[pos:newline], newline + 1
            if line.endswith(b"\r"):
                line = line[:-1]
        if not line:
            return _joined(fields), after
        if line[0] in (0x09, 0x20):
            if not fields:
                raise HeaderBlockError("a continuation line before any header field")
            fields[-1][1].append(line)
        else:
            match = _FIELD_NAME.match(line)
            if match is not None:
                if len(fields) == MAX_FIELDS:
                    raise HeaderBlockError(f"more than {MAX_FIELDS} header fields")
                fields.append([match.group(1), [line[match.end():]]])
            elif not (pos == 0 and line.startswith(b"From ")):
                raise HeaderBlockError(f"not a header field: {line[:40]!r}")
        pos = after
    return _joined(fields), size


def _joined(fields: list[list]) -> list[list[bytes]]:
    return [[name, b"\r\n".join(lines) + b"\r\n"] for name, lines in fields]


def as_text(fields: list[list[bytes]]) -> list[tuple[str, str]]:
    """C{(name, value)} text pairs as the stdlib's compat32 parser gives them: bytes
    read as ASCII with surrogate escapes, the value without its leading whitespace
    and final line end."""
    return [
        (name.decode("ascii", "surrogateescape"),
         value.decode("ascii", "surrogateescape").lstrip(" \t").removesuffix("\r\n"))
        for name, value in fields
    ]


_LINE_ENDS = re.compile(r"[\r\n]")


def same_fields(a, b) -> bool:
    """Whether two C{(name, value)} lists hold the same fields, folds and line
    ends aside: a check that two parsers read one header block alike."""
    if len(a) != len(b):
        return False
    return all(
        na.lower() == nb.lower()
        and _LINE_ENDS.sub("", va).strip(" \t") == _LINE_ENDS.sub("", vb).strip(" \t")
        for (na, va), (nb, vb) in zip(a, b)
    )
