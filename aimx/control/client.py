"""The Twisted client of the control socket (L2), for code running on a reactor.

L{connect} opens one AMP connection to C{<runtime_dir>/aimx.sock}; a missing
socket or a refused connection is L{DaemonNotRunning}.  Commands are those of
L{aimx.control.commands} (the AMP form); a daemon error arrives as the matching
L{aimx.errors} class carrying the daemon's reason.  C{aimx doctor} asks the
daemon's version through it; the other CLI verbs use
L{aimx.control.blockingclient}.
"""

import errno

from twisted.internet import endpoints, error, protocol
from twisted.protocols import amp

from aimx.control.wire import MalformedResponse
from aimx.errors import ConnectFailed, DaemonNotRunning

#: What AMP raises for a reply that is not an answer, or none.
_NOT_AN_ANSWER = (amp.RemoteAmpError, amp.UnknownRemoteError, amp.UnhandledCommand,
                  amp.TooLong, error.ConnectionDone, error.ConnectionLost)


class ControlClient:
    """One connection to the daemon."""

    def __init__(self, proto: amp.AMP):
        self.protocol = proto

    def call(self, command, **arguments):
        """Send C{command}; fires with its response dict or fails with its error.

        A daemon error arrives as its L{aimx.errors} class; a reply that is not an
        answer, or the connection closing first, as L{MalformedResponse} (as with
        the other clients).
        """
        return self.protocol.callRemote(command, **arguments).addErrback(_not_an_answer)

    def close(self) -> None:
        """Close the connection (a no-op when the daemon already closed it)."""
        if self.protocol.transport is not None:
            self.protocol.transport.loseConnection()


def _not_an_answer(failure):
    e = failure.trap(*_NOT_AN_ANSWER)
    if e in (error.ConnectionDone, error.ConnectionLost):
        raise MalformedResponse("connection closed without a reply")
    raise MalformedResponse(str(failure.value))


async def connect(reactor, path: str) -> ControlClient:
    """Connect to the daemon's control socket.

    @raise DaemonNotRunning: no socket at C{path}, or nobody listening on it.
    @raise ConnectFailed: any other connection failure.
    """
    endpoint = endpoints.UNIXClientEndpoint(reactor, path)
    try:
        proto = await endpoint.connect(protocol.Factory.forProtocol(amp.AMP))
    except error.ConnectionRefusedError:
        raise DaemonNotRunning(f"aimx daemon not running (connection refused at {path})") from None
    except error.ConnectError as e:
        if e.osError == errno.ENOENT:
            raise DaemonNotRunning(f"aimx daemon not running (no socket at {path})") from None
        raise ConnectFailed(f"Failed to connect to aimx daemon at {path}: {e.args[0]}") from None
    return ControlClient(proto)
