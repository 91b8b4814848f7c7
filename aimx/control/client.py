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

from aimx.errors import ConnectFailed, DaemonNotRunning


class ControlClient:
    """One connection to the daemon."""

    def __init__(self, proto: amp.AMP):
        self.protocol = proto

    def call(self, command, **arguments):
        """Send C{command}; fires with its response dict or fails with its error."""
        return self.protocol.callRemote(command, **arguments)

    def close(self) -> None:
        """Close the connection (a no-op when the daemon already closed it)."""
        if self.protocol.transport is not None:
            self.protocol.transport.loseConnection()


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
