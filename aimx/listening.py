"""Listening on Twisted endpoints at start-up (L2): the SMTP C{--bind} endpoints and
the control socket.

Start-up is synchronous (docs/cli.md, "aimx serve": a failed bind is fatal and nothing
after it runs), and every endpoint aimx builds listens synchronously: TCP and UNIX
endpoints call the reactor's C{listenTCP}/C{listenUNIX} inside C{defer.execute},
and a socket adopted from systemd is wrapped at once.  L{listen} therefore takes
the result of the already-fired Deferred and raises L{ListenError} with a one-line
reason when there is none.

A socket adopted from systemd is checked before Twisted wraps it: Twisted trusts
the C{domain=} it is told, and an IPv6 socket read as IPv4 would give every
session a garbled client address (so wrong SPF results), not an error.
"""

import socket

from twisted.internet import endpoints, error
from twisted.python.failure import Failure

from aimx.ops.bind import Bind


class ListenError(Exception):
    """An endpoint could not listen; the message is the reason, in one line."""


def endpoint(reactor, bind: Bind):
    """The server endpoint of one C{--bind} value.

    @raise ListenError: systemd passed no socket at that index or with that name.
    """
    try:
        return endpoints.serverFromString(reactor, bind.description)
    except IndexError:
        raise ListenError("systemd passed no socket at that index (LISTEN_FDS, "
                          "LISTEN_PID: is the socket unit running?)") from None
    except KeyError as e:
        raise ListenError(f"systemd passed no socket named {e.args[0]!r} "
                          "(LISTEN_FDNAMES)") from None


def _check_inherited(adopted: endpoints.AdoptedStreamServerEndpoint) -> None:
    """The inherited descriptor is a listening stream socket of the family it claims."""
    fd = adopted.fileno
    try:
        # Without family/type arguments the socket module reads them from the descriptor.
        sock = socket.socket(fileno=fd)
    except OSError as e:
        raise ListenError(f"inherited descriptor {fd} is not a socket ({e.strerror})") from None
    try:
        family, kind = sock.family, sock.type
        accepting = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    finally:
        sock.detach()  # the descriptor stays open for the endpoint
    if family != adopted.addressFamily:
        expected = socket.AddressFamily(adopted.addressFamily).name
        raise ListenError(
            f"the socket systemd passed (descriptor {fd}) is {family.name}, not {expected}: "
            f"say domain={family.name.removeprefix('AF_')}"
        )
    if kind != socket.SOCK_STREAM or not accepting:
        raise ListenError(f"the socket systemd passed (descriptor {fd}) is not a "
                          "listening stream socket (ListenStream= in the socket unit)")


def listen(server_endpoint, factory):
    """Listen on C{server_endpoint} now.

    @return: the L{twisted.internet.interfaces.IListeningPort}.
    @raise ListenError: the reason it cannot listen (the socket error's text).
    """
    if isinstance(server_endpoint, endpoints.AdoptedStreamServerEndpoint):
        _check_inherited(server_endpoint)
    outcome = []
    server_endpoint.listen(factory).addBoth(outcome.append)
    if not outcome:  # not one of the endpoints aimx builds
        raise ListenError(f"{server_endpoint!r} does not listen synchronously")
    [result] = outcome
    if not isinstance(result, Failure):
        return result
    if result.check(error.CannotListenError):
        raise ListenError(str(result.value.socketError)) from None
    if result.check(OSError):
        raise ListenError(str(result.value)) from None
    result.raiseException()
