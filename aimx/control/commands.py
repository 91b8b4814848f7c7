"""The control socket's commands as AMP commands (L2), for the daemon and the Twisted client.

Each command here is its L{aimx.control.wire} description turned into a
C{twisted.protocols.amp.Command}: the same name and fields, the value types
wrapped so that a value that does not decode is answered C{MALFORMED} (AMP
answers only a C{RemoteAmpError} with its own code), the error codes of
L{wire.ERRORS}, and request boxes that put C{_command} first (L{RequestBox}).
Nothing is described here a second time (tests/test_control_commands.py ties
both modules together).  Imports only C{twisted.protocols.amp} and
L{aimx.control.wire} (and L{aimx.errors}).
"""

from twisted.protocols import amp

from aimx.control import wire
from aimx.errors import MalformedError


class RequestBox(amp.AmpBox):
    """The box every command of ours is sent in: C{_command} first (L{wire.serialize_box})."""

    def serialize(self):
        return wire.serialize_box(self)


class Descriptors:
    """An AMP protocol's file descriptors as L{wire.Attachments} numbers them: AMP's
    own L{amp.Descriptor} (C{SCM_RIGHTS}, counted per connection)."""

    _descriptor = amp.Descriptor()

    def __init__(self, proto):
        self.proto = proto

    def send(self, fd: int) -> int:
        return int(self._descriptor.toStringProto(fd, self.proto))

    def take(self, ordinal: int) -> int:
        return self._descriptor.fromStringProto(str(ordinal).encode("ascii"), self.proto)


class Field(amp.Argument):
    """A L{wire.Value} as an AMP argument; a value that does not decode is C{MALFORMED}."""

    def __init__(self, kind: wire.Value):
        super().__init__(kind.optional)
        self.kind = kind

    def fromBox(self, name, strings, objects, proto):
        try:
            objects[name.decode("ascii")] = wire.decode_value(name, self.kind, strings,
                                                              Descriptors(proto))
        except MalformedError as e:
            raise amp.RemoteAmpError(b"MALFORMED", str(e)) from None

    def toBox(self, name, strings, objects, proto):
        strings.update(wire.encode_value(name, self.kind, objects.get(name.decode("ascii")),
                                         Descriptors(proto)))


class _Command(amp.Command):
    errors = wire.ERRORS
    # Both clients build their requests through this (callRemote, makeArguments).
    commandType = RequestBox


def _amp(command: type[wire.Command]) -> type[amp.Command]:
    """The AMP command of a wire command."""
    return type(_Command)(command.__name__, (_Command,), {
        "__doc__": command.__doc__,
        "__module__": __name__,
        "commandName": command.commandName,
        "arguments": [(name, Field(kind)) for name, kind in command.arguments],
        "response": [(name, Field(kind)) for name, kind in command.response],
    })


Send = _amp(wire.Send)
AuditRead = _amp(wire.AuditRead)
HeldList = _amp(wire.HeldList)
HeldShow = _amp(wire.HeldShow)
HeldApprove = _amp(wire.HeldApprove)
HeldReject = _amp(wire.HeldReject)
MarkRead = _amp(wire.MarkRead)
MarkUnread = _amp(wire.MarkUnread)
MailboxCreate = _amp(wire.MailboxCreate)
MailboxDelete = _amp(wire.MailboxDelete)
MailboxList = _amp(wire.MailboxList)
MailboxShow = _amp(wire.MailboxShow)
HookCreate = _amp(wire.HookCreate)
HookDelete = _amp(wire.HookDelete)
HookList = _amp(wire.HookList)
HookEnable = _amp(wire.HookEnable)
HookStatus = _amp(wire.HookStatus)
HookRetry = _amp(wire.HookRetry)
MailList = _amp(wire.MailList)
MailSearch = _amp(wire.MailSearch)
MailThread = _amp(wire.MailThread)
IndexRebuild = _amp(wire.IndexRebuild)
IndexStatus = _amp(wire.IndexStatus)
Version = _amp(wire.Version)
