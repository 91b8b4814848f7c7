"""aimx's logger (L2): events whose values cannot forge or garble a log line.

Every value a log event carries may have come from the network or a local caller
(a header, an address, a HELO name, a file name), so text values are stored in the
event with control characters escaped: NUL, CR and LF, ESC (terminal sequences), the
other C0 and C1 controls, DEL, the Unicode line and paragraph separators and the
bidirectional overrides become visible C{\\xNN} / C{\\uNNNN} escapes (C{\\r}, C{\\n},
C{\\t} for the usual three).  An exception value is logged as its escaped text.
Format strings are aimx's own and are left as they are.
"""

import copy
import re

from twisted.logger import Logger as _TwistedLogger

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(match: re.Match) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """C{text} with every control, line-separator and bidi-override character escaped."""
    return _UNSAFE.sub(_escape_one, text)


def safe(value):
    """A log field value made safe to print (see the module docstring)."""
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, BaseException):
        return escape(str(value))
    return value


class _EscapedText(Exception):
    """Stands in for an exception whose text needed escaping, in a logged failure."""

    def __str__(self) -> str:
        return self.args[0]


def _safe_failure(failure):
    """The failure with its exception text escaped (its type and traceback kept, so
    C{check()} still matches); unchanged when nothing needs escaping."""
    text = str(failure.value)
    if not _UNSAFE.search(text):
        return failure
    escaped = copy.copy(failure)
    escaped.value = _EscapedText(escape(text))
    return escaped


class Logger(_TwistedLogger):
    """C{twisted.logger.Logger} whose event values are L{safe}, and whose failures carry
    an escaped exception text; other C{log_*} keys are Twisted's own and pass unchanged."""

    def emit(self, level, format=None, **kwargs):
        fields = {key: value if key.startswith("log_") else safe(value)
                  for key, value in kwargs.items()}
        if fields.get("log_failure") is not None:
            fields["log_failure"] = _safe_failure(fields["log_failure"])
        super().emit(level, format, **fields)
