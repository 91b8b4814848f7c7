"""A blocking client of the control socket (L2: no reactor, no event loop), used by the CLI.

The commands of L{aimx.control.wire} over a plain UNIX socket: a call returns
when the daemon has answered.  The CLI's verbs that only talk to the daemon run
on it (L{aimx.cli.session.run_blocking}) and so never import Twisted: its
reactor, AMP and AMP's TLS dependencies are most of what made C{aimx mailboxes
list} take 20 times C{python -c pass} (bench/cli_start.py).  A daemon error
arrives as the matching L{aimx.errors} class carrying the daemon's reason.
Descriptors (SEND's attachments) go as Twisted's AMP sends them: each with one
byte of the box in its own C{sendmsg} (C{SCM_RIGHTS}, L{wire.Attachments}).
"""

import errno
import itertools
import socket

from aimx.control import wire
from aimx.control.wire import MalformedResponse
from aimx.errors import ConnectFailed, DaemonNotRunning

#: What C{connect} says for the errors that mean no daemon (the Twisted client's words).
_DOWN = {errno.ENOENT: "no socket", errno.ECONNREFUSED: "connection refused"}


class Connection:
    """One open connection; one command at a time."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._file = sock.makefile("rb")
        self._tag = 0
        self._sent_fds = itertools.count()

    def call(self, command: type[wire.Command], **arguments) -> dict:
        """Send C{command} and wait for its answer.

        @return: the parsed response.
        @raise aimx.errors.AimxError: the daemon's error, as its L{wire.ERRORS} class.
        @raise MalformedResponse: the reply is not an answer to this command, or
            the connection closed or broke before the answer was complete.
        """
        self._tag += 1
        tag = str(self._tag).encode("ascii")
        descriptors = wire.SentDescriptors(self._sent_fds)
        data = wire.request_bytes(command, arguments, tag, descriptors)
        try:
            for i, fd in enumerate(descriptors.fds):
                socket.send_fds(self._sock, [data[i:i + 1]], [fd])
            self._sock.sendall(data[len(descriptors.fds):])
            answer = self._read_box()
        except OSError as e:
            raise MalformedResponse(f"connection lost: {e}") from None
        return wire.read_answer(command, answer, tag)

    def _read_box(self) -> dict:
        steps = wire.box_reader()
        try:
            wanted = next(steps)
            while True:
                data = self._file.read(wanted)
                if len(data) < wanted:
                    raise MalformedResponse("connection closed without a reply")
                wanted = steps.send(data)
        except StopIteration as done:
            return done.value

    def close(self) -> None:
        """Close the connection."""
        self._file.close()
        self._sock.close()


def connect(path: str) -> Connection:
    """Connect to the daemon's control socket at C{path}.

    @raise DaemonNotRunning: no socket, or nobody listening on it.
    @raise ConnectFailed: any other connection failure (no access to it, ...).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as e:
        sock.close()
        if e.errno in _DOWN:
            raise DaemonNotRunning(
                f"aimx daemon not running ({_DOWN[e.errno]} at {path})") from None
        raise ConnectFailed(
            f"Failed to connect to aimx daemon at {path}: {e.strerror}") from None
    return Connection(sock)
