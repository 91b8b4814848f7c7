"""An asyncio client of the control socket (L2, no reactor), used by the MCP process.

Commands are those of L{aimx.control.wire}, whose boxes this module reads and
writes over an asyncio UNIX connection; nothing here imports Twisted (the MCP
process never loads AMP's TLS dependencies).  A daemon error arrives as the
matching L{aimx.errors} class carrying the daemon's reason.

Descriptors (SEND's attachments) go as Twisted's AMP sends them: each with one
byte of the box's stream in its own C{sendmsg} (C{SCM_RIGHTS}), numbered by the
connection's count of descriptors sent (L{wire.Attachments}).
"""

import asyncio
import errno
import itertools
import socket

from aimx.control import wire
from aimx.control.wire import MalformedResponse
from aimx.errors import ConnectFailed, DaemonNotRunning

_DOWN = (errno.ENOENT, errno.ECONNREFUSED, errno.EACCES)


async def read_box(reader: asyncio.StreamReader, cap: int = wire.ANSWER_CAP) -> dict:
    """Read one box (L{wire.box_reader}).

    @param cap: the most bytes one box may take on the wire.
    @raise MalformedResponse: a key over 255 bytes, a box over C{cap}, or the
        connection closed before the box was complete.
    """
    steps = wire.box_reader(cap)
    try:
        wanted = next(steps)
        while True:
            wanted = steps.send(await reader.readexactly(wanted))
    except StopIteration as done:
        return done.value
    except asyncio.IncompleteReadError:
        raise MalformedResponse("connection closed without a reply") from None


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

    async def call(self, command: type[wire.Command], **arguments) -> dict:
        """Send C{command} and wait for its answer.

        @return: the parsed response.
        @raise aimx.errors.AimxError: the daemon's error, as its L{wire.ERRORS} class.
        @raise MalformedResponse: the reply is not an answer to this command.
        """
        async with self._lock:
            self._tag += 1
            tag = str(self._tag).encode("ascii")
            descriptors = wire.SentDescriptors(self._sent_fds)
            data = wire.request_bytes(command, arguments, tag, descriptors)
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
        return wire.read_answer(command, answer, tag)

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

    async def call(self, command: type[wire.Command], **arguments) -> dict:
        """Connect, send C{command}, return its response, disconnect (see L{Connection.call})."""
        connection = await connect(self.path)
        try:
            return await connection.call(command, **arguments)
        finally:
            await connection.close()
