"""The control socket's wire API (L2, without Twisted): commands, value types, boxes.

The one description of every command: its AMP name, its arguments and its answer,
each field a name and a value type.  The clients that run without a reactor use it
as it is (L{aimx.control.blockingclient} for the CLI, L{aimx.control.aioclient} for
the MCP process), so neither imports Twisted; L{aimx.control.commands} turns each
command into the AMP command the daemon answers and the Twisted client sends.
Nothing here imports more than the standard library's C{json} and L{aimx.errors}.

A value type decodes without any protocol object and turns a bad value into
L{MalformedError}: the daemon answers it C{MALFORMED} (a plain exception while
parsing arguments would make AMP answer C{UNKNOWN} and drop the connection).
Open files travel beside the bytes (L{Attachments}): a value type that carries
them is given the connection's descriptors (C{fds}: C{send(fd) -> ordinal} on
the sending side, C{take(ordinal) -> fd} on the receiving one, AMP's own
numbering); the others ignore it.  Values longer than AMP's 65,535-byte limit travel
chunked: C{name} holds the chunk count and C{name.0}, C{name.1}, ... the chunks
(L{encode_chunks}, L{decode_chunks}).

A box on the wire is AMP's: for each key, a 2-byte length and the key, a 2-byte
length and the value; then two zero bytes.  L{request_bytes} writes a request,
L{box_reader} reads any box (sans I/O: each client does its own reading), and
L{read_answer} turns an answer into the command's values or the daemon's error.
"""

import json
import os

from aimx import errors
from aimx.errors import AimxError, MalformedError

SOCKET_NAME = "aimx.sock"
#: AMP's limits: a key of at most 255 bytes, a value of at most 65,535.
MAX_KEY_LENGTH = 0xFF
CHUNK = 0xFFFF
MESSAGE_CAP = 25 * 1024 * 1024
HOOK_BODY_CAP = 1024 * 1024
RESPONSE_CAP = 64 * 1024 * 1024
#: Files one SEND may attach (each a descriptor the daemon holds while it runs).
MAX_ATTACHMENTS = 64
#: The most bytes a client reads for one answer: the largest value plus its chunk
#: keys and length prefixes.
ANSWER_CAP = RESPONSE_CAP + (1 << 20)

ERRORS = {
    cls: cls.code.encode("ascii")
    for cls in (
        errors.MailboxError,
        errors.DomainError,
        errors.SignError,
        errors.DeliveryError,
        errors.TempError,
        errors.MalformedError,
        errors.ProtocolError,
        errors.NotFoundError,
        errors.IOFailure,
        errors.ValidationError,
        errors.NonEmptyError,
        errors.ConflictError,
        errors.AccessDenied,
        errors.NoEntry,
        errors.BodyTooLarge,
        errors.PolicyError,
    )
}
_CODES = {code: cls for cls, code in ERRORS.items()}

# The reserved keys of a box (AMP's).
COMMAND, ASK, ANSWER, ERROR = b"_command", b"_ask", b"_answer", b"_error"
ERROR_CODE, ERROR_DESCRIPTION = b"_error_code", b"_error_description"


class MalformedResponse(AimxError):
    """The daemon's reply is not a valid answer to the command."""


class TooLong(ValueError):
    """A key over 255 bytes or a value over 65,535 bytes: AMP cannot carry it."""


def socket_path(environ=os.environ) -> str:
    """C{$AIMX_RUNTIME_DIR/aimx.sock} (default runtime dir C{/run/aimx})."""
    return os.path.join(environ.get("AIMX_RUNTIME_DIR") or "/run/aimx", SOCKET_NAME)


# -- chunked values -----------------------------------------------------------------


def encode_chunks(name: bytes, value: bytes) -> dict[bytes, bytes]:
    """The box entries carrying C{value} under C{name} (no length check here).

    @return: C{{name: b"<n>", name.0: chunk, ...}}; an empty value is one empty chunk.
    """
    chunks = [value[i : i + CHUNK] for i in range(0, len(value), CHUNK)] or [b""]
    box = {name: str(len(chunks)).encode("ascii")}
    for i, chunk in enumerate(chunks):
        box[name + b"." + str(i).encode("ascii")] = chunk
    return box


def decode_chunks(name: bytes, box, *, limit: int, too_long: str) -> bytes | None:
    """Reassemble a chunked value from a box.

    @param too_long: the over-limit reason, formatted with C{n} (the length) and
        C{cap}.
    @return: the value, or C{None} when C{name} is absent.
    @raise MalformedError: a bad count, a missing chunk or a value longer than C{limit}.
    """
    count = box.get(name)
    if count is None:
        return None
    label = name.decode("ascii")
    most = -(-limit // CHUNK) + 1
    if not (count.isdigit() and 1 <= int(count) <= most):
        raise MalformedError(
            f"invalid chunk count for {label}: {count.decode('ascii', 'replace')}")
    parts = []
    for i in range(int(count)):
        chunk = box.get(name + b"." + str(i).encode("ascii"))
        if chunk is None:
            raise MalformedError(f"missing chunk {label}.{i}")
        parts.append(chunk)
    value = b"".join(parts)
    if len(value) > limit:
        raise MalformedError(too_long.format(n=len(value), cap=limit))
    return value


# -- value types --------------------------------------------------------------------


class Value:
    """A field's type: how its value is written into a box and read back.

    @ivar optional: whether the field may be absent (it then reads as C{None} or
        the type's default).
    """

    optional = False

    def decode(self, name: bytes, box, fds=None):
        """The Python value under C{name}, or C{None} when absent.

        @param fds: the connection's descriptors received (L{Attachments}).
        @raise MalformedError: the value does not decode.
        """
        raise NotImplementedError

    def encode(self, name: bytes, value, fds=None) -> dict[bytes, bytes]:
        """The box entries for C{value}.

        @param fds: the connection's descriptors to send (L{Attachments}).
        """
        raise NotImplementedError


def decode_value(name: bytes, kind: Value, box, fds=None):
    """The value of field C{name} in C{box}.

    @raise MalformedError: a required field is absent or the value does not decode.
    """
    value = kind.decode(name, box, fds)
    if value is None and not kind.optional:
        raise MalformedError(f"missing required argument: {name.decode('ascii')}")
    return value


def encode_value(name: bytes, kind: Value, value, fds=None) -> dict[bytes, bytes]:
    """The box entries of field C{name}; none for C{None} (an absent optional field)."""
    return {} if value is None else kind.encode(name, value, fds)


def _utf8(name: bytes, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedError(f"invalid UTF-8 in {name.decode('ascii')}") from None


class Text(Value):
    """A UTF-8 string of at most 65,535 bytes.

    @param allow_empty: when false, C{""} is refused as C{empty <Name> value}.
    """

    def __init__(self, optional: bool = False, allow_empty: bool = False):
        self.optional = optional
        self.allow_empty = allow_empty

    def decode(self, name, box, fds=None):
        raw = box.get(name)
        if raw is None:
            return None
        if not raw and not self.allow_empty:
            raise MalformedError(f"empty {name.decode('ascii').capitalize()} value")
        return _utf8(name, raw)

    def encode(self, name, value, fds=None):
        return {name: value.encode("utf-8")}


class Flag(Value):
    """A boolean (C{True}/C{False} on the wire) that is C{default} when absent."""

    optional = True

    def __init__(self, default: bool | None = False):
        self.default = default

    def decode(self, name, box, fds=None):
        raw = box.get(name)
        if raw is None:
            return self.default
        if raw not in (b"True", b"False"):
            raise MalformedError(f"invalid boolean for {name.decode('ascii')}")
        return raw == b"True"

    def encode(self, name, value, fds=None):
        return {name: b"True" if value else b"False"}


class Number(Value):
    """A non-negative integer of at most C{most}, C{default} when absent."""

    optional = True

    def __init__(self, default: int, most: int = 2**32 - 1):
        self.default = default
        self.most = most

    def decode(self, name, box, fds=None):
        raw = box.get(name)
        if raw is None:
            return self.default
        if not (raw.isdigit() and len(raw) <= 10 and int(raw) <= self.most):
            raise MalformedError(f"invalid {name.decode('ascii')}: expected a whole number "
                                 f"from 0 to {self.most}")
        return int(raw)

    def encode(self, name, value, fds=None):
        return {name: str(int(value)).encode("ascii")}


class BigBytes(Value):
    """Bytes of any length up to C{limit}, chunked past 65,535 bytes."""

    def __init__(self, limit: int, too_long: str = "", optional: bool = False):
        self.optional = optional
        self.limit = limit
        self.too_long = too_long or "{name} length {n} exceeds cap {cap}"

    def decode(self, name, box, fds=None):
        return decode_chunks(
            name,
            box,
            limit=self.limit,
            too_long=self.too_long.replace("{name}", name.decode("ascii")),
        )

    def encode(self, name, value, fds=None):
        return encode_chunks(name, value)


class BigUnicode(BigBytes):
    """L{BigBytes} carrying UTF-8 text."""

    def decode(self, name, box, fds=None):
        raw = super().decode(name, box, fds)
        return None if raw is None else _utf8(name, raw)

    def encode(self, name, value, fds=None):
        return super().encode(name, value.encode("utf-8"), fds)


class Json(BigUnicode):
    """A JSON document carried as L{BigUnicode} (listings and show replies)."""

    def __init__(self, limit: int = RESPONSE_CAP, optional: bool = False):
        super().__init__(limit, optional=optional)

    def decode(self, name, box, fds=None):
        text = super().decode(name, box, fds)
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError as e:
            raise MalformedError(f"invalid JSON in {name.decode('ascii')}: {e}") from None

    def encode(self, name, value, fds=None):
        return super().encode(name, json.dumps(value, ensure_ascii=False), fds)


class Attachments(Value):
    """Open files passed with the box, as C{[(fd, path), ...]} (empty when absent).

    Each descriptor travels as C{SCM_RIGHTS} ancillary data over the UNIX socket,
    one with each of the first bytes of the box (as Twisted's AMP sends them);
    the box carries its ordinal, the connection's count of descriptors sent.  On
    the wire: a JSON array of C{[ordinal, path]}.  A decode that fails closes the
    descriptors it had claimed.
    """

    optional = True

    def decode(self, name, box, fds=None):
        label = name.decode("ascii")
        raw = box.get(name)
        if raw is None:
            return []
        try:
            entries = json.loads(raw)
        except ValueError:
            raise MalformedError(f"invalid JSON in {label}") from None
        if not (isinstance(entries, list) and len(entries) <= MAX_ATTACHMENTS and all(
                isinstance(e, list) and len(e) == 2 and type(e[0]) is int
                and isinstance(e[1], str) and e[1] for e in entries)):
            raise MalformedError(f"invalid {label}: expected at most {MAX_ATTACHMENTS} "
                                 "[descriptor, path] pairs")
        claimed = []
        try:
            for ordinal, path in entries:
                try:
                    fd = fds.take(ordinal)
                except (KeyError, AttributeError):
                    raise MalformedError(
                        f"the descriptor of attachment {path} did not arrive") from None
                claimed.append((fd, path))
        except BaseException:
            for fd, _ in claimed:
                os.close(fd)
            raise
        return claimed

    def encode(self, name, value, fds=None):
        if not value:
            return {}
        return {name: json.dumps([[fds.send(fd), path] for fd, path in value],
                                 ensure_ascii=False).encode("utf-8")}


class SentDescriptors:
    """The descriptors of one request, as a client sends them: numbered by the
    connection's running count (C{counter}), kept in C{fds} in that order."""

    def __init__(self, counter):
        self._counter = counter
        self.fds: list[int] = []

    def send(self, fd: int) -> int:
        self.fds.append(fd)
        return next(self._counter)


# -- boxes --------------------------------------------------------------------------

#: The keys a request box starts with, in this order.
_FIRST = (COMMAND, ASK)


def serialize_box(box) -> bytes:
    """A box's wire bytes: C{_command}, C{_ask}, then the other keys sorted.

    The daemon lets only SEND boxes grow past a small size, so it must know the
    command before the arguments arrive.  Twisted's C{AmpBox.serialize} sorts
    every key, which is an implementation detail and would put a key below
    C{_} (a digit or a capital) before C{_command}; requests use this order.

    @raise TooLong: a key over 255 bytes or a value over 65,535 bytes.
    @raise TypeError: a key or value that is not bytes.
    """
    keys = [k for k in _FIRST if k in box] + sorted(k for k in box if k not in _FIRST)
    out = []
    for key in keys:
        value = box[key]
        if not isinstance(key, bytes) or not isinstance(value, bytes):
            raise TypeError(f"AMP keys and values are bytes: {key!r}")
        if len(key) > MAX_KEY_LENGTH:
            raise TooLong(f"key of {len(key)} bytes")
        if len(value) > CHUNK:
            raise TooLong(f"value of {len(value)} bytes under {key!r}")
        out += (len(key).to_bytes(2, "big"), key, len(value).to_bytes(2, "big"), value)
    out.append(b"\0\0")
    return b"".join(out)


def box_reader(cap: int = ANSWER_CAP):
    """Read one box, sans I/O: a generator that yields how many bytes it needs next,
    is sent exactly those bytes, and returns the box.

    @param cap: the most bytes the box may take on the wire.
    @raise MalformedResponse: a key over 255 bytes (checked first: garbage must
        not make a client wait for more of it) or a box over C{cap}.
    """
    box, size = {}, 0
    while True:
        length = int.from_bytes((yield 2), "big")
        if length > MAX_KEY_LENGTH:
            raise MalformedResponse(f"not an AMP box (key of {length} bytes)")
        if not length:
            return box
        key = yield length
        length = int.from_bytes((yield 2), "big")
        size += 4 + len(key) + length
        if size > cap:
            raise MalformedResponse(f"box larger than {cap} bytes")
        box[key] = yield length


# -- commands -----------------------------------------------------------------------


class Command:
    """A command of the control socket: C{commandName}, C{arguments} and
    C{response} as in Twisted's C{amp.Command} (lists of C{(name, Value)})."""

    commandName = b""
    arguments: list[tuple[bytes, Value]] = []
    response: list[tuple[bytes, Value]] = []

    @classmethod
    def request(cls, arguments: dict, fds: SentDescriptors | None = None) -> dict[bytes, bytes]:
        """The box entries of these arguments (no C{_command}, no C{_ask}).

        @param fds: where the descriptors of the arguments go (L{Attachments}).
        @raise TypeError: an argument the command does not take.
        """
        known = {name.decode("ascii") for name, _ in cls.arguments}
        unknown = sorted(set(arguments) - known)
        if unknown:
            raise TypeError(f"{cls.__name__} takes no argument {unknown[0]!r}")
        box = {}
        for name, kind in cls.arguments:
            box.update(encode_value(name, kind, arguments.get(name.decode("ascii")), fds))
        return box

    @classmethod
    def answer(cls, box) -> dict:
        """The values of an answer box.

        @raise MalformedError: a value is missing or does not decode.
        """
        return {name.decode("ascii"): decode_value(name, kind, box)
                for name, kind in cls.response}


def request_bytes(command: type[Command], arguments: dict, tag: bytes,
                  fds: SentDescriptors | None = None) -> bytes:
    """The wire bytes of one request: C{_command} first, then C{_ask}, the arguments.

    @param fds: collects the descriptors to send with the first bytes, in order.
    """
    box = {COMMAND: command.commandName, ASK: tag}
    box.update(command.request(arguments, fds))
    return serialize_box(box)


def read_answer(command: type[Command], box, tag: bytes) -> dict:
    """The values of C{command}'s answer C{box} to the request tagged C{tag}.

    @raise aimx.errors.AimxError: the daemon's error, as its L{ERRORS} class.
    @raise MalformedResponse: the box does not answer the request.
    """
    if box.get(ANSWER) == tag:
        try:
            return command.answer(box)
        except MalformedError as e:
            raise MalformedResponse(str(e)) from None
    if box.get(ERROR) != tag:
        raise MalformedResponse("the reply does not answer the command")
    code = box.get(ERROR_CODE, b"")
    reason = box.get(ERROR_DESCRIPTION, b"").decode("utf-8", "replace")
    if code not in _CODES:
        raise MalformedResponse(f"{code.decode('ascii', 'replace')} {reason}")
    raise _CODES[code](reason)


#: SEND's answer when both body modes are asked for (the CLI and MCP say the same).
EXCLUSIVE = "AIMX/1 SEND: --text-only and --html-body are mutually exclusive"


class Send(Command):
    """Submit outbound mail; answers once delivery and the after_send hooks are done.

    C{deliveries} lists C{{"rcpt", "status", "details"}} per envelope recipient
    (an aimx extension: a partial send answers OK and names who is deferred).
    C{attachments} are files the client opened (L{Attachments}, decoded last so
    that no other argument can fail after its descriptors are claimed).  A
    message the outbound policy holds for approval answers C{held} (its hold
    id) and no C{deliveries}.
    """

    commandName = b"SEND"
    arguments = [
        (b"message", BigBytes(MESSAGE_CAP, "Content-Length {n} exceeds cap {cap}")),
        (b"text_only", Flag()),
        (
            b"html_body",
            BigBytes(MESSAGE_CAP, "Html-Body-Length {n} exceeds cap {cap}", optional=True),
        ),
        (b"attachments", Attachments()),
    ]
    response = [
        (b"message_id", Text()),
        (b"deliveries", Json(optional=True)),
        (b"held", Text(optional=True)),
    ]


class HeldList(Command):
    """Messages held for approval that the caller may see (of C{mailbox} only, when given)."""

    commandName = b"HELD-LIST"
    arguments = [(b"mailbox", Text(optional=True))]
    response = [(b"holds", Json())]


class HeldShow(Command):
    """One held message: C{{"hold": row, "file": its Markdown file}}."""

    commandName = b"HELD-SHOW"
    arguments = [(b"id", Text())]
    response = [(b"hold", Json())]


class HeldApprove(Command):
    """Deliver a held message; answers as SEND does."""

    commandName = b"HELD-APPROVE"
    arguments = [(b"id", Text())]
    response = [(b"message_id", Text()), (b"deliveries", Json(optional=True))]


class HeldReject(Command):
    """Reject a held message (C{reason} is kept with it)."""

    commandName = b"HELD-REJECT"
    arguments = [(b"id", Text()), (b"reason", Text(optional=True, allow_empty=True))]


class AuditRead(Command):
    """The last C{limit} audit records the caller may read, oldest first (docs/guardrails.md):
    root all, anyone else those of the mailboxes it owns.  C{since} is an RFC 3339 date or
    date-time; C{event} one of inbound, send, held, mailbox, hook, config."""

    commandName = b"AUDIT-READ"
    arguments = [
        (b"mailbox", Text(optional=True)),
        (b"since", Text(optional=True)),
        (b"event", Text(optional=True)),
        (b"limit", Number(1000, most=10_000)),
    ]
    response = [(b"records", Json())]


class MarkRead(Command):
    """Set C{read = true} and C{read_at} on an inbox email."""

    commandName = b"MARK-READ"
    arguments = [(b"mailbox", Text()), (b"id", Text())]


class MarkUnread(Command):
    """Set C{read = false} and drop C{read_at} on an inbox email."""

    commandName = b"MARK-UNREAD"
    arguments = [(b"mailbox", Text()), (b"id", Text())]


class MailboxCreate(Command):
    """Create a mailbox; C{owner} is honoured for root only."""

    commandName = b"MAILBOX-CREATE"
    arguments = [(b"name", Text()), (b"owner", Text(optional=True, allow_empty=True))]
    response = [(b"address", Text())]


class MailboxDelete(Command):
    """Unregister a mailbox; C{force} first empties its directories."""

    commandName = b"MAILBOX-DELETE"
    arguments = [(b"name", Text()), (b"force", Flag())]


class MailboxList(Command):
    """The mailboxes the caller may see, as a JSON array of rows."""

    commandName = b"MAILBOX-LIST"
    response = [(b"mailboxes", Json())]


class MailboxShow(Command):
    """One mailbox's settings, hooks and counts, as a JSON object."""

    commandName = b"MAILBOX-SHOW"
    arguments = [(b"name", Text())]
    response = [(b"mailbox", Json())]


class HookCreate(Command):
    """Add a hook; C{body} is a JSON object of the hook's fields (docs/configuration.md, "Hooks")."""

    commandName = b"HOOK-CREATE"
    arguments = [
        (b"mailbox", Text()),
        (b"event", Text()),
        (b"name", Text(optional=True, allow_empty=True)),
        (b"body", BigUnicode(HOOK_BODY_CAP)),
    ]
    # A webhook made without a secret: the one generated, answered this once.
    response = [(b"name", Text()), (b"secret", Text(optional=True))]


class HookDelete(Command):
    """Remove a hook by its effective name."""

    commandName = b"HOOK-DELETE"
    arguments = [(b"name", Text())]


class HookList(Command):
    """The hooks the caller may see, as a JSON array of rows."""

    commandName = b"HOOK-LIST"
    response = [(b"hooks", Json())]


class HookEnable(Command):
    """Clear a hook's C{disabled} flag (set when its webhook receiver answered 410)."""

    commandName = b"HOOK-ENABLE"
    arguments = [(b"name", Text())]


class HookStatus(Command):
    """The webhook deliveries not yet made (pending, failing, dead-lettered), per hook."""

    commandName = b"HOOK-STATUS"
    arguments = [(b"name", Text(optional=True))]
    response = [(b"hooks", Json())]


class HookRetry(Command):
    """Queue a webhook's dead-lettered deliveries again; answers how many."""

    commandName = b"HOOK-RETRY"
    arguments = [(b"name", Text())]
    response = [(b"requeued", Number(0))]


class MailList(Command):
    """A page of a mailbox folder from the index, newest first: C{emails} rows."""

    commandName = b"MAIL-LIST"
    arguments = [
        (b"mailbox", Text()),
        (b"folder", Text(optional=True)),
        (b"limit", Number(50)),
        (b"offset", Number(0)),
        (b"unread", Flag()),
    ]
    response = [(b"emails", Json())]


class MailSearch(Command):
    """Full-text search of a mailbox (both folders by default), newest first."""

    commandName = b"MAIL-SEARCH"
    arguments = [
        (b"mailbox", Text()),
        (b"query", Text(allow_empty=True)),
        (b"folder", Text(optional=True)),
        (b"sender", Text(optional=True, allow_empty=True)),
        (b"since", Text(optional=True)),
        (b"until", Text(optional=True)),
        (b"unread", Flag(None)),
        (b"trusted", Flag(None)),
        (b"limit", Number(20)),
    ]
    response = [(b"emails", Json())]


class MailThread(Command):
    """The conversation of a message (C{id}) or a C{thread_id}, oldest first."""

    commandName = b"MAIL-THREAD"
    arguments = [
        (b"mailbox", Text()),
        (b"id", Text(optional=True)),
        (b"thread_id", Text(optional=True)),
        (b"limit", Number(50)),
    ]
    response = [(b"emails", Json())]


class IndexRebuild(Command):
    """Rebuild the index of one mailbox (or of every mailbox the caller may see)."""

    commandName = b"INDEX-REBUILD"
    arguments = [(b"mailbox", Text(optional=True))]
    response = [(b"mailboxes", Json())]


class IndexStatus(Command):
    """Each named (or visible) mailbox's index: C{ready}, C{building} (done/total) or C{none}."""

    commandName = b"INDEX-STATUS"
    arguments = [(b"mailbox", Text(optional=True))]
    response = [(b"indexes", Json())]


class Version(Command):
    """The daemon's version; needs no authorisation."""

    commandName = b"VERSION"
    response = [
        (b"tag", Text()),
        (b"git_hash", Text()),
        (b"target", Text()),
        (b"build_date", Text()),
    ]


#: Every command, in the order above.
COMMANDS = (Send, HeldList, HeldShow, HeldApprove, HeldReject, AuditRead, MarkRead, MarkUnread,
            MailboxCreate, MailboxDelete, MailboxList, MailboxShow, HookCreate, HookDelete,
            HookList, HookEnable, HookStatus, HookRetry, MailList, MailSearch, MailThread, IndexRebuild, IndexStatus, Version)
