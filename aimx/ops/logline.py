"""The log line (L0, pure): one event as one line, and that line read back.

Every event the daemon logs is written as exactly one line (docs/logging.md)::

    2026-06-01T12:00:00.123+02:00 notice aimx.smtp: RCPT refused peer=203.0.113.9 rcpt=x@y
    <5>aimx.smtp: RCPT refused peer=203.0.113.9 rcpt=x@y          (to the journal)

The journal form starts with the syslog priority in angle brackets, which journald
strips and stores as the entry's priority (sd-daemon(3), "SD_ERR" and friends); it
has no time, the journal adds its own.  After C{namespace: } comes the message, a
constant text chosen by aimx, then C{key=value} fields.

Values come from the network and from local callers (addresses, HELO names, a
hook's stderr, an exception's text), so nothing in one may end the line, start a
field or look like a priority: a value is written bare only when it holds no space,
quote, backslash, C{=} or control character (the C0 and C1 controls, DEL, the Unicode
line and paragraph separators, the bidirectional overrides); otherwise it is quoted,
with C{\\\\} and C{\\"} and the controls escaped (C{\\n}, C{\\r}, C{\\t}, C{\\xNN},
C{\\uNNNN}).  A message holding any of those but the space is quoted the same way,
so an unquoted C{=} on a line always belongs to a field.  A value is cut in the
middle past L{MAX_VALUE} escaped characters (a traceback past L{MAX_TRACEBACK}), so
a line stays below journald's default C{LineMax=} of 48 KiB and is one journal entry.

L{read} parses a line back (its time, priority and fields) for C{aimx logs}; L{Filter}
is what C{--priority}, C{--since} and C{--mailbox} select; L{since} reads the
C{--since} forms.
"""

import datetime
import re
from collections.abc import Callable, Iterable, Iterator

import attrs

#: syslog priorities (RFC 5424 §6.2.1), by number.
PRIORITY_NAMES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
EMERG, ALERT, CRIT, ERR, WARNING, NOTICE, INFO, DEBUG = range(8)
#: Escaped characters of one value kept in a line (its middle is cut past this).
MAX_VALUE = 1024
#: Likewise for a folded traceback (its end, the exception, matters most).
MAX_TRACEBACK = 16384

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NOT_BARE = re.compile(r'[\s"\\=]|' + _UNSAFE.pattern)
_NOT_BARE_MESSAGE = re.compile(r'["\\=]|' + _UNSAFE.pattern)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\", '"': '\\"'}
_QUOTED_ESCAPES = re.compile(r'[\\"]|' + _UNSAFE.pattern)
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NOT_KEY = re.compile(r"[^A-Za-z0-9_]")
_NOT_NAMESPACE = re.compile(r"[^A-Za-z0-9_.-]")
#: A token: runs of quoted strings and of anything but space and quote.
_TOKEN = re.compile(r'(?:"(?:[^"\\]|\\.)*"?|[^\s"])+')
_FIELD = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|[^\s"]*)\Z')
_UNESCAPE = re.compile(r'\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|.)')
_FILE_LINE = re.compile(r"(\S+) (" + "|".join(PRIORITY_NAMES) + r") ([A-Za-z0-9_.-]+): ")
_JOURNAL_LINE = re.compile(r"<([0-7])>([A-Za-z0-9_.-]+): ")


def _escape_one(match: re.Match) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _escaped(text: str) -> str:
    return _QUOTED_ESCAPES.sub(_escape_one, text)


def _pieces(chars: Iterable[str], budget: int) -> list[str]:
    """C{chars} escaped one by one, as many as fit in C{budget} characters."""
    kept, used = [], 0
    for char in chars:
        piece = _escaped(char)
        if used + len(piece) > budget:
            break
        kept.append(piece)
        used += len(piece)
    return kept


def quote(text: str, limit: int = MAX_VALUE, *, message: bool = False) -> str:
    """C{text} as it goes into a line: bare when nothing in it needs quoting, else
    quoted and escaped, cut in the middle past C{limit} escaped characters.

    @param message: C{text} is the message, where inner spaces may stay bare.
    """
    unsafe = _NOT_BARE_MESSAGE if message else _NOT_BARE
    if text and len(text) <= limit and not unsafe.search(text) and text == text.strip():
        return text
    inner = _escaped(text)
    if len(inner) > limit:
        half = (limit - 3) // 2
        head = "".join(_pieces(text, half))
        tail = "".join(reversed(_pieces(reversed(text), half)))
        inner = f"{head}...{tail}"
    return f'"{inner}"'


def unquote(token: str) -> str:
    """The text a value token stands for (L{quote}'s inverse on its own output)."""
    if not token.startswith('"'):
        return token
    inner = token[1:-1] if len(token) > 1 and token.endswith('"') else token[1:]

    def one(match: re.Match) -> str:
        code = match.group(1)
        if code[0] in "xu" and len(code) > 1:
            return chr(int(code[1:], 16))
        return {"n": "\n", "r": "\r", "t": "\t"}.get(code, code)

    return _UNESCAPE.sub(one, inner)


def text_of(value) -> str:
    """A field value as text: C{true}/C{false}, numbers as Python writes them,
    sequences comma-separated, C{None} empty, anything else its C{str}."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ",".join(text_of(v) for v in value)
    return str(value)


def render(priority: int, namespace: str, message: str, fields: Iterable[tuple[str, object]],
           time: datetime.datetime | None = None) -> str:
    """One event as one line (no line end).

    @param priority: its syslog priority (L{ERR} ... L{DEBUG}).
    @param fields: C{(key, value)} pairs, in order; a value L{text_of} renders,
        a C{traceback} value may be longer (L{MAX_TRACEBACK}).
    @param time: when it happened, for a file; C{None}: the journal form, C{<N>} first.
    """
    namespace = _NOT_NAMESPACE.sub("_", namespace) or "-"
    parts = [f"{namespace}: {quote(message, message=True)}"]
    for key, value in fields:
        if not _KEY.match(key):
            key = "_" + _NOT_KEY.sub("_", key)
        limit = MAX_TRACEBACK if key == "traceback" else MAX_VALUE
        parts.append(f"{key}={quote(text_of(value), limit)}")
    line = " ".join(parts)
    if time is None:
        return f"<{priority}>{line}"
    stamp = time.isoformat(timespec="milliseconds")
    return f"{stamp} {PRIORITY_NAMES[priority]} {line}"


def fields(text: str) -> dict[str, str]:
    """The C{key=value} fields anywhere in C{text}, unquoted.

    Quotes are respected, so a field inside a quoted value is not one; text around
    the fields (a journal prefix, the message) is skipped.
    """
    return _split(text)[1]


def _split(text: str) -> tuple[str, dict[str, str]]:
    """C{text}'s message (what precedes its first field, unquoted) and its fields."""
    found, message_end = {}, None
    for token in _TOKEN.finditer(text):
        match = _FIELD.match(token.group())
        if match:
            found[match.group(1)] = unquote(match.group(2))
            if message_end is None:
                message_end = token.start()
    message = text[:message_end].strip()
    return (unquote(message) if message.startswith('"') else message), found


@attrs.frozen
class Line:
    """A log line read back.

    @ivar time: when it was logged; C{None} when the line does not say (the journal
        form, or not one of ours).
    @ivar priority: its syslog priority; C{None} when not one of ours.
    @ivar namespace: C{aimx.smtp} ...; C{""} when not one of ours.
    @ivar message: what it says before its fields (when not one of ours: all of
        the line before them).
    @ivar fields: its C{key=value} fields.
    """

    text: str
    time: datetime.datetime | None
    priority: int | None
    namespace: str
    message: str
    fields: dict


def read(text: str) -> Line:
    """Parse one line, either form; a line that is neither keeps only its fields."""
    match = _FILE_LINE.match(text)
    if match:
        try:
            time = datetime.datetime.fromisoformat(match.group(1))
        except ValueError:
            time = None
        if time is not None and time.tzinfo is not None:
            return Line(text, time, PRIORITY_NAMES.index(match.group(2)), match.group(3),
                        *_split(text[match.end():]))
    match = _JOURNAL_LINE.match(text)
    if match:
        return Line(text, None, int(match.group(1)), match.group(2),
                    *_split(text[match.end():]))
    return Line(text, None, None, "", *_split(text))


def priority(text: str) -> int:
    """A syslog priority as journalctl's C{-p} takes one: a name or 0-7.

    @raise ValueError: neither.
    """
    text = text.strip().lower()
    if text in PRIORITY_NAMES:
        return PRIORITY_NAMES.index(text)
    if text.isdigit() and int(text) < len(PRIORITY_NAMES):
        return int(text)
    raise ValueError(f"invalid priority {text!r}: expected 0-7 or one of "
                     f"{', '.join(PRIORITY_NAMES)}")


_UNITS = {"s": 1, "sec": 1, "second": 1, "seconds": 1, "m": 60, "min": 60, "minute": 60,
          "minutes": 60, "h": 3600, "hour": 3600, "hours": 3600, "d": 86400, "day": 86400,
          "days": 86400, "w": 604800, "week": 604800, "weeks": 604800}
_AGO = re.compile(r"(?:-\s*(\d+)\s*([a-z]+)|(\d+)\s*([a-z]+)\s+ago)\Z")


def since(text: str, now: datetime.datetime) -> datetime.datetime:
    """The time a C{--since} value names, in systemd.time(7)'s forms that aimx takes:
    C{now}, C{today}, C{yesterday}, a date (C{2026-06-01}, midnight), a date and
    time (C{2026-06-01 12:00[:00]}, C{T} allowed, optional C{Z} or C{+02:00}), and a
    time back from now (C{-1h}, C{30min ago}; units s, min/m, h, d, w).

    @param now: the current time, with its time zone (the local one): times without
        an offset are read in it.
    @raise ValueError: none of these.
    """
    word = " ".join(text.strip().lower().split())
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if word == "now":
        return now
    if word == "today":
        return midnight
    if word == "yesterday":
        return midnight - datetime.timedelta(days=1)
    ago = _AGO.match(word)
    if ago:
        count, unit = (ago.group(1), ago.group(2)) if ago.group(1) else ago.group(3, 4)
        if unit in _UNITS:
            return now - datetime.timedelta(seconds=int(count) * _UNITS[unit])
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}([ t]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(z|[+-]\d{2}:\d{2})?)?",
                    word):
        try:
            when = datetime.datetime.fromisoformat(word.upper().replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return when if when.tzinfo else when.replace(tzinfo=now.tzinfo)
    raise ValueError(
        f"invalid time {text!r}: expected YYYY-MM-DD[ HH:MM[:SS]], today, yesterday, "
        "now, -1h or '30min ago'"
    )


@attrs.frozen
class Filter:
    """What C{aimx logs} shows: lines at C{priority} or more urgent, logged at or
    after C{since}, with C{mailbox=NAME}; C{None} does not filter."""

    priority: int | None = None
    since: datetime.datetime | None = None
    mailbox: str | None = None

    def __bool__(self) -> bool:
        return not (self.priority is None and self.since is None and self.mailbox is None)

    def select(self, lines: Iterable[str]) -> Iterator[str]:
        """The lines that pass, in order (L{selector})."""
        keep = self.selector()
        return (text for text in lines if keep(text))

    def selector(self) -> Callable[[str], bool]:
        """A judge of consecutive lines: whether each passes.

        A line not in one of our forms (a continuation, another program's text,
        journalctl's own form) has the time and priority of the last line that was
        (I{info} and unknown before any), and that line's fields unless it has some.
        """
        current = Line("", None, INFO, "", "", {})

        def keep(text: str) -> bool:
            nonlocal current
            line = read(text)
            if line.priority is not None:
                current = line
            elif line.fields:
                current = attrs.evolve(line, time=current.time, priority=current.priority)
            return self.passes(current)

        return keep

    def passes(self, line: Line) -> bool:
        """Whether C{line} passes (its time unknown: only when C{since} is unset)."""
        level = INFO if line.priority is None else line.priority
        if self.priority is not None and level > self.priority:
            return False
        if self.since is not None and (line.time is None or line.time < self.since):
            return False
        return self.mailbox is None or line.fields.get("mailbox") == self.mailbox
