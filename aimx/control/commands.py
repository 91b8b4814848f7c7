"""The control socket's wire API (L2, shared): AMP commands, argument types, error map.

Imported by the daemon, the CLI and the MCP process, so it imports only
C{twisted.protocols.amp} and L{aimx.errors}.  Every argument type decodes
without a protocol object (C{proto} may be C{None}) and turns a bad value into an
C{MALFORMED} error answer: a plain exception while parsing arguments would make
AMP answer C{UNKNOWN} and drop the connection.

Values longer than AMP's 65,535-byte limit travel chunked: C{name} holds the
chunk count and C{name.0}, C{name.1}, ... the chunks (L{encode_chunks},
L{decode_chunks}).
"""

import json
import math
import os

from twisted.protocols import amp

from aimx import errors

SOCKET_NAME = "aimx.sock"
CHUNK = amp.MAX_VALUE_LENGTH
MESSAGE_CAP = 25 * 1024 * 1024
HOOK_BODY_CAP = 1024 * 1024
RESPONSE_CAP = 64 * 1024 * 1024
#: Files one SEND may attach (each a descriptor the daemon holds while it runs).
MAX_ATTACHMENTS = 64

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


def socket_path(environ=os.environ) -> str:
    """C{$AIMX_RUNTIME_DIR/aimx.sock} (default runtime dir C{/run/aimx})."""
    return os.path.join(environ.get("AIMX_RUNTIME_DIR") or "/run/aimx", SOCKET_NAME)


def malformed(reason: str) -> amp.RemoteAmpError:
    """The error an argument decoder raises: answered as C{MALFORMED <reason>}."""
    return amp.RemoteAmpError(b"MALFORMED", reason)


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
    @raise amp.RemoteAmpError: C{MALFORMED}, for a bad count, a missing chunk or
        a value longer than C{limit}.
    """
    count = box.get(name)
    if count is None:
        return None
    label = name.decode("ascii")
    most = math.ceil(limit / CHUNK) + 1
    if not (count.isdigit() and 1 <= int(count) <= most):
        raise malformed(f"invalid chunk count for {label}: {count.decode('ascii', 'replace')}")
    parts = []
    for i in range(int(count)):
        chunk = box.get(name + b"." + str(i).encode("ascii"))
        if chunk is None:
            raise malformed(f"missing chunk {label}.{i}")
        parts.append(chunk)
    value = b"".join(parts)
    if len(value) > limit:
        raise malformed(too_long.format(n=len(value), cap=limit))
    return value


class _Value(amp.Argument):
    """Base for our argument types: presence and MALFORMED handling, no protocol use."""

    def fromBox(self, name, strings, objects, proto):
        value = self.decode(name, strings)
        if value is None and not self.optional:
            raise malformed(f"missing required argument: {name.decode('ascii')}")
        objects[name.decode("ascii")] = value

    def toBox(self, name, strings, objects, proto):
        value = objects.get(name.decode("ascii"))
        if value is not None:
            strings.update(self.encode(name, value))

    def decode(self, name: bytes, box):
        """The Python value under C{name}, or C{None} when absent."""
        raise NotImplementedError

    def encode(self, name: bytes, value) -> dict[bytes, bytes]:
        """The box entries for C{value}."""
        raise NotImplementedError


def _utf8(name: bytes, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise malformed(f"invalid UTF-8 in {name.decode('ascii')}") from None


class Text(_Value):
    """A UTF-8 string of at most 65,535 bytes.

    @param allow_empty: when false, C{""} is refused as C{empty <Name> value}.
    """

    def __init__(self, optional: bool = False, allow_empty: bool = False):
        super().__init__(optional)
        self.allow_empty = allow_empty

    def decode(self, name, box):
        raw = box.get(name)
        if raw is None:
            return None
        if not raw and not self.allow_empty:
            raise malformed(f"empty {name.decode('ascii').capitalize()} value")
        return _utf8(name, raw)

    def encode(self, name, value):
        return {name: value.encode("utf-8")}


class Flag(_Value):
    """A boolean (C{True}/C{False} on the wire) that is C{default} when absent."""

    def __init__(self, default: bool = False):
        super().__init__(optional=True)
        self.default = default

    def decode(self, name, box):
        raw = box.get(name)
        if raw is None:
            return self.default
        if raw not in (b"True", b"False"):
            raise malformed(f"invalid boolean for {name.decode('ascii')}")
        return raw == b"True"

    def encode(self, name, value):
        return {name: b"True" if value else b"False"}


class Number(_Value):
    """A non-negative integer of at most C{most}, C{default} when absent."""

    def __init__(self, default: int, most: int = 2**32 - 1):
        super().__init__(optional=True)
        self.default = default
        self.most = most

    def decode(self, name, box):
        raw = box.get(name)
        if raw is None:
            return self.default
        if not (raw.isdigit() and len(raw) <= 10 and int(raw) <= self.most):
            raise malformed(f"invalid {name.decode('ascii')}: expected a whole number "
                            f"from 0 to {self.most}")
        return int(raw)

    def encode(self, name, value):
        return {name: str(int(value)).encode("ascii")}


class BigBytes(_Value):
    """Bytes of any length up to C{limit}, chunked past 65,535 bytes."""

    def __init__(self, limit: int, too_long: str = "", optional: bool = False):
        super().__init__(optional)
        self.limit = limit
        self.too_long = too_long or "{name} length {n} exceeds cap {cap}"

    def decode(self, name, box):
        return decode_chunks(
            name,
            box,
            limit=self.limit,
            too_long=self.too_long.replace("{name}", name.decode("ascii")),
        )

    def encode(self, name, value):
        return encode_chunks(name, value)


class BigUnicode(BigBytes):
    """L{BigBytes} carrying UTF-8 text."""

    def decode(self, name, box):
        raw = super().decode(name, box)
        return None if raw is None else _utf8(name, raw)

    def encode(self, name, value):
        return super().encode(name, value.encode("utf-8"))


class Json(BigUnicode):
    """A JSON document carried as L{BigUnicode} (listings and show replies)."""

    def __init__(self, limit: int = RESPONSE_CAP, optional: bool = False):
        super().__init__(limit, optional=optional)

    def decode(self, name, box):
        text = super().decode(name, box)
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError as e:
            raise malformed(f"invalid JSON in {name.decode('ascii')}: {e}") from None

    def encode(self, name, value):
        return super().encode(name, json.dumps(value, ensure_ascii=False))


class Attachments(amp.Argument):
    """Open files passed with the box, as C{[(fd, path), ...]} (empty when absent).

    Each descriptor travels as C{SCM_RIGHTS} ancillary data over the UNIX socket
    through AMP's own L{amp.Descriptor} (the box carries its ordinal, the
    connection's count of descriptors sent), so the sender needs a protocol with
    C{_sendFileDescriptor} and the receiver one that collected them
    (C{fileDescriptorReceived}).  On the wire: a JSON array of C{[ordinal, path]}.
    A decode that fails closes the descriptors it had claimed.
    """

    def __init__(self):
        super().__init__(optional=True)
        self.descriptor = amp.Descriptor()

    def toBox(self, name, strings, objects, proto):
        items = objects.get(name.decode("ascii")) or ()
        if items:
            strings[name] = json.dumps([
                [int(self.descriptor.toStringProto(fd, proto)), path] for fd, path in items
            ], ensure_ascii=False).encode("utf-8")

    def fromBox(self, name, strings, objects, proto):
        key = name.decode("ascii")
        objects[key] = []
        raw = strings.get(name)
        if raw is None:
            return
        try:
            entries = json.loads(raw)
        except ValueError:
            raise malformed(f"invalid JSON in {key}") from None
        if not (isinstance(entries, list) and len(entries) <= MAX_ATTACHMENTS and all(
                isinstance(e, list) and len(e) == 2 and type(e[0]) is int
                and isinstance(e[1], str) and e[1] for e in entries)):
            raise malformed(f"invalid {key}: expected at most {MAX_ATTACHMENTS} "
                            "[descriptor, path] pairs")
        claimed = []
        try:
            for ordinal, path in entries:
                try:
                    fd = self.descriptor.fromStringProto(str(ordinal).encode("ascii"), proto)
                except (KeyError, AttributeError):
                    raise malformed(f"the descriptor of attachment {path} did not arrive")
                claimed.append((fd, path))
        except BaseException:
            for fd, _ in claimed:
                os.close(fd)
            raise
        objects[key] = claimed


#: The keys a request box starts with, in this order.
_FIRST = (amp.COMMAND, amp.ASK)


def serialize_box(box) -> bytes:
    """A box's wire bytes: C{_command}, C{_ask}, then the other keys sorted.

    The daemon lets only SEND boxes grow past a small size, so it must know the
    command before the arguments arrive.  Twisted's C{AmpBox.serialize} sorts
    every key, which is an implementation detail and would put a key below
    C{_} (a digit or a capital) before C{_command}; requests use this order
    instead (L{RequestBox}).

    @raise amp.TooLong: a key over 255 bytes or a value over 65,535 bytes.
    @raise TypeError: a key or value that is not bytes.
    """
    keys = [k for k in _FIRST if k in box] + sorted(k for k in box if k not in _FIRST)
    out = []
    for key in keys:
        value = box[key]
        if not isinstance(key, bytes) or not isinstance(value, bytes):
            raise TypeError(f"AMP keys and values are bytes: {key!r}")
        if len(key) > amp.MAX_KEY_LENGTH:
            raise amp.TooLong(True, True, key, None)
        if len(value) > amp.MAX_VALUE_LENGTH:
            raise amp.TooLong(False, True, value, key)
        out += (len(key).to_bytes(2, "big"), key, len(value).to_bytes(2, "big"), value)
    out.append(b"\0\0")
    return b"".join(out)


class RequestBox(amp.AmpBox):
    """The box every command of ours is sent in: C{_command} first (L{serialize_box})."""

    def serialize(self):
        return serialize_box(self)


class _Command(amp.Command):
    errors = ERRORS
    # Both clients build their requests through this (callRemote, makeArguments).
    commandType = RequestBox


#: SEND's answer when both body modes are asked for (the CLI and MCP say the same).
EXCLUSIVE = "AIMX/1 SEND: --text-only and --html-body are mutually exclusive"


class Send(_Command):
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


class HeldList(_Command):
    """Messages held for approval that the caller may see (of C{mailbox} only, when given)."""

    commandName = b"HELD-LIST"
    arguments = [(b"mailbox", Text(optional=True))]
    response = [(b"holds", Json())]


class HeldShow(_Command):
    """One held message: C{{"hold": row, "file": its Markdown file}}."""

    commandName = b"HELD-SHOW"
    arguments = [(b"id", Text())]
    response = [(b"hold", Json())]


class HeldApprove(_Command):
    """Deliver a held message; answers as SEND does."""

    commandName = b"HELD-APPROVE"
    arguments = [(b"id", Text())]
    response = [(b"message_id", Text()), (b"deliveries", Json(optional=True))]


class HeldReject(_Command):
    """Reject a held message (C{reason} is kept with it)."""

    commandName = b"HELD-REJECT"
    arguments = [(b"id", Text()), (b"reason", Text(optional=True, allow_empty=True))]


class AuditRead(_Command):
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


class MarkRead(_Command):
    """Set C{read = true} and C{read_at} on an inbox email."""

    commandName = b"MARK-READ"
    arguments = [(b"mailbox", Text()), (b"id", Text())]


class MarkUnread(_Command):
    """Set C{read = false} and drop C{read_at} on an inbox email."""

    commandName = b"MARK-UNREAD"
    arguments = [(b"mailbox", Text()), (b"id", Text())]


class MailboxCreate(_Command):
    """Create a mailbox; C{owner} is honoured for root only."""

    commandName = b"MAILBOX-CREATE"
    arguments = [(b"name", Text()), (b"owner", Text(optional=True, allow_empty=True))]
    response = [(b"address", Text())]


class MailboxDelete(_Command):
    """Unregister a mailbox; C{force} first empties its directories."""

    commandName = b"MAILBOX-DELETE"
    arguments = [(b"name", Text()), (b"force", Flag())]


class MailboxList(_Command):
    """The mailboxes the caller may see, as a JSON array of rows."""

    commandName = b"MAILBOX-LIST"
    response = [(b"mailboxes", Json())]


class MailboxShow(_Command):
    """One mailbox's settings, hooks and counts, as a JSON object."""

    commandName = b"MAILBOX-SHOW"
    arguments = [(b"name", Text())]
    response = [(b"mailbox", Json())]


class HookCreate(_Command):
    """Add a hook; C{body} is a JSON object of the hook's fields (docs/configuration.md, "Hooks")."""

    commandName = b"HOOK-CREATE"
    arguments = [
        (b"mailbox", Text()),
        (b"event", Text()),
        (b"name", Text(optional=True, allow_empty=True)),
        (b"body", BigUnicode(HOOK_BODY_CAP)),
    ]
    response = [(b"name", Text())]


class HookDelete(_Command):
    """Remove a hook by its effective name."""

    commandName = b"HOOK-DELETE"
    arguments = [(b"name", Text())]


class HookList(_Command):
    """The hooks the caller may see, as a JSON array of rows."""

    commandName = b"HOOK-LIST"
    response = [(b"hooks", Json())]


class MailList(_Command):
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


class MailSearch(_Command):
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


class MailThread(_Command):
    """The conversation of a message (C{id}) or a C{thread_id}, oldest first."""

    commandName = b"MAIL-THREAD"
    arguments = [
        (b"mailbox", Text()),
        (b"id", Text(optional=True)),
        (b"thread_id", Text(optional=True)),
        (b"limit", Number(50)),
    ]
    response = [(b"emails", Json())]


class IndexRebuild(_Command):
    """Rebuild the index of one mailbox (or of every mailbox the caller may see)."""

    commandName = b"INDEX-REBUILD"
    arguments = [(b"mailbox", Text(optional=True))]
    response = [(b"mailboxes", Json())]


class IndexStatus(_Command):
    """Each named (or visible) mailbox's index: C{ready}, C{building} (done/total) or C{none}."""

    commandName = b"INDEX-STATUS"
    arguments = [(b"mailbox", Text(optional=True))]
    response = [(b"indexes", Json())]


class Version(_Command):
    """The daemon's version; needs no authorisation."""

    commandName = b"VERSION"
    response = [
        (b"tag", Text()),
        (b"git_hash", Text()),
        (b"target", Text()),
        (b"build_date", Text()),
    ]
