"""An asyncio client of the control socket (L2, no reactor), used by the MCP process.

AMP boxes are read and written here (L{encode_box}, L{read_box}); arguments and
answers go through the shared C{Command} definitions of L{aimx.control.commands}
(C{makeArguments}/C{parseResponse} with no protocol object), so the wire API has
one definition.  A daemon error arrives as the matching L{aimx.errors} class
carrying the daemon's reason.

Descriptors (SEND's attachments) go as Twisted's AMP sends them: each with one
byte of the box's stream in its own C{sendmsg} (C{SCM_RIGHTS}), numbered by the
connection's count of descriptors sent (L{amp.Descriptor}'s ordinal).
"""

import asyncio
import errno
import itertools
import socket

from twisted.protocols import amp

from aimx.control.commands import ERRORS, RESPONSE_CAP, serialize_box
from aimx.errors import AimxError, ConnectFailed, DaemonNotRunning

#: Reading stops past this many buffered bytes: the largest answer value plus its
#: chunk keys and length prefixes.
BOX_CAP = RESPONSE_CAP + (1 << 20)
_CODES = {code: cls for cls, code in ERRORS.items()}
_DOWN = (errno.ENOENT, errno.ECONNREFUSED, errno.EACCES)


class MalformedResponse(AimxError):
    """The daemon's reply is not a valid answer to the command."""


def encode_box(box) -> bytes:
    """The wire bytes of a box: C{(2-byte length, key, 2-byte length, value)*}, then 0.

    C{_command} goes first, then C{_ask} (L{serialize_box}): the daemon sizes a
    box by its command.

    @raise amp.TooLong: a key over 255 bytes or a value over 65,535 bytes.
    """
    return serialize_box(amp.AmpBox(box))


async def read_box(reader: asyncio.StreamReader, cap: int = BOX_CAP) -> dict[bytes, bytes]:
    """Read one box.

    @param cap: the most bytes one box may take on the wire.
    @raise MalformedResponse: a key over 255 bytes, a box over C{cap}, or the
        connection closed before the box was complete.
    """
    box, size = {}, 0
    try:
        while True:
            length = int.from_bytes(await reader.readexactly(2))
            if length > amp.MAX_KEY_LENGTH:  # checked first: garbage must not make us wait
                raise MalformedResponse(f"not an AMP box (key of {length} bytes)")
            if not length:
                return box
            key = await reader.readexactly(length)
            length = int.from_bytes(await reader.readexactly(2))
            size += 4 + len(key) + length
            if size > cap:
                raise MalformedResponse(f"box larger than {cap} bytes")
            box[key] = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise MalformedResponse("connection closed without a reply") from None


class _Descriptors:
    """What L{amp.Descriptor} needs of a protocol to send: collects the descriptors of a
    box and numbers them with the connection's running count."""

    def __init__(self, counter):
        self._counter = counter
        self.fds: list[int] = []

    def _sendFileDescriptor(self, fd: int) -> int:
        self.fds.append(fd)
        return next(self._counter)


class Connection:
    """One open connection; commands are answered in order.

    @param sock: the connected socket, for the descriptors (the streams carry the rest).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 sock: socket.socket | None = None):
        self._reader = reader
        self._writer = writer
        self._sock = sock
        self._tag = 0
        self._lock = asyncio.Lock()
        self._sent_fds = itertools.count()

    async def call(self, command: type[amp.Command], **arguments) -> dict:
        """Send C{command} and wait for its answer.

        @return: the parsed response.
        @raise aimx.errors.AimxError: the daemon's error, as its L{ERRORS} class.
        @raise MalformedResponse: the reply is not an answer to this command.
        """
        async with self._lock:
            descriptors = _Descriptors(self._sent_fds)
            box = command.makeArguments(arguments, descriptors)
            self._tag += 1
            tag = str(self._tag).encode("ascii")
            box[b"_command"], box[b"_ask"] = command.commandName, tag
            data = encode_box(box)
            try:
                # The previous answer has been read, so nothing of ours is still
                # buffered: each descriptor goes with the next byte, in order.
                for i, fd in enumerate(descriptors.fds):
                    socket.send_fds(self._sock, [data[i:i + 1]], [fd])
                self._writer.write(data[len(descriptors.fds):])
                await self._writer.drain()
                answer = await read_box(self._reader)
            except ConnectionError as e:
                raise MalformedResponse(f"connection lost: {e}") from None
        if answer.get(b"_answer") == tag:
            try:
                return command.parseResponse(answer, None)
            except amp.RemoteAmpError as e:  # our argument types raise MALFORMED
                raise MalformedResponse(e.description) from None
        if answer.get(b"_error") != tag:
            raise MalformedResponse("the reply does not answer the command")
        code = answer.get(b"_error_code", b"")
        reason = answer.get(b"_error_description", b"").decode("utf-8", "replace")
        if code not in _CODES:
            raise MalformedResponse(f"{code.decode('ascii', 'replace')} {reason}")
        raise _CODES[code](reason)

    async def close(self) -> None:
        """Close the connection."""
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass


async def connect(path: str) -> Connection:
    """Connect to the daemon's control socket at C{path}.

    @raise DaemonNotRunning: no socket, nobody listening, or no access to it.
    @raise ConnectFailed: any other connection failure.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, path)
        reader, writer = await asyncio.open_unix_connection(sock=sock)
    except OSError as e:
        sock.close()
        if e.errno in _DOWN:
            raise DaemonNotRunning(f"aimx daemon not running ({e.strerror} at {path})") from None
        raise ConnectFailed(f"Failed to connect to aimx daemon at {path}: {e}") from None
    return Connection(reader, writer, sock)


class ControlClient:
    """The daemon at a socket path: one connection per command."""

    def __init__(self, path: str):
        self.path = path

    async def call(self, command: type[amp.Command], **arguments) -> dict:
        """Connect, send C{command}, return its response, disconnect (see L{Connection.call})."""
        connection = await connect(self.path)
        try:
            return await connection.call(command, **arguments)
        finally:
            await connection.close()
