"""Listening on endpoints at start-up (aimx.listening), on a memory reactor."""

import os
import socket

from twisted.internet import defer, endpoints
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactor, RaisingMemoryReactor
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from aimx import listening
from aimx.ops import bind

FACTORY = Factory.forProtocol(Protocol)


def _listening_socket(family, address) -> socket.socket:
    s = socket.socket(family)
    s.bind(address)
    s.listen()
    return s


class ListenTests(SynchronousTestCase):
    def test_tcp(self):
        """A tcp description listens at once on the reactor, with its interface."""
        reactor = MemoryReactor()
        port = listening.listen(
            listening.endpoint(reactor, bind.parse("[::1]:2525")), FACTORY
        )
        self.assertIsNotNone(port.getHost())
        [(number, factory, _, interface)] = reactor.tcpServers
        self.assertEqual((number, factory, interface), (2525, FACTORY, "::1"))

    def test_socket_error_text(self):
        """A refused bind is a ListenError carrying the socket error's text."""
        refused = CannotListenError("127.0.0.1", 25, OSError(98, "Address already in use"))
        reactor = RaisingMemoryReactor(listenException=refused)
        e = self.assertRaises(listening.ListenError, listening.listen,
                              listening.endpoint(reactor, bind.parse("127.0.0.1:25")), FACTORY)
        self.assertEqual(str(e), "[Errno 98] Address already in use")

    def test_not_synchronous(self):
        """An endpoint whose listen has not fired is refused, not waited for."""

        class Later:
            def listen(self, factory):
                return defer.Deferred()

        e = self.assertRaises(listening.ListenError, listening.listen, Later(), FACTORY)
        self.assertIn("does not listen synchronously", str(e))

    def test_systemd_missing(self):
        """No socket passed at that index (this process was not socket-activated)."""
        e = self.assertRaises(listening.ListenError, listening.endpoint, MemoryReactor(),
                              bind.parse("systemd:domain=INET:index=0"))
        self.assertIn("systemd passed no socket at that index", str(e))
        e = self.assertRaises(listening.ListenError, listening.endpoint, MemoryReactor(),
                              bind.parse("systemd:domain=INET:name=aimx.socket"))
        self.assertIn("systemd passed no socket named 'aimx.socket'", str(e))


class InheritedSocketTests(SynchronousTestCase):
    """The checks on a descriptor adopted from systemd, before Twisted wraps it."""

    def adopt(self, fd: int, family) -> tuple[MemoryReactor, object]:
        reactor = MemoryReactor()
        endpoint = endpoints.AdoptedStreamServerEndpoint(reactor, fd, family)
        return reactor, endpoint

    def dup(self, s: socket.socket, adopted: bool = False) -> int:
        """A copy of C{s}'s descriptor, closed at clean-up unless adoption closes it."""
        fd = os.dup(s.fileno())
        if not adopted:
            self.addCleanup(os.close, fd)
        return fd

    def test_adopted(self):
        """A listening socket of the declared family is adopted (and its copy closed)."""
        s = _listening_socket(socket.AF_INET, ("127.0.0.1", 0))
        self.addCleanup(s.close)
        fd = self.dup(s, adopted=True)
        reactor, endpoint = self.adopt(fd, socket.AF_INET)
        listening.listen(endpoint, FACTORY)
        self.assertEqual(reactor.adoptedPorts, [(fd, socket.AF_INET, FACTORY)])

    def test_wrong_family(self):
        """An IPv6 socket declared INET is refused with the domain to say instead."""
        try:
            s = _listening_socket(socket.AF_INET6, ("::1", 0))
        except OSError as e:
            raise SkipTest(f"no IPv6 loopback: {e}")
        self.addCleanup(s.close)
        reactor, endpoint = self.adopt(self.dup(s), socket.AF_INET)
        e = self.assertRaises(listening.ListenError, listening.listen, endpoint, FACTORY)
        self.assertIn("is AF_INET6, not AF_INET: say domain=INET6", str(e))
        self.assertEqual(reactor.adoptedPorts, [])

    def test_not_listening(self):
        """A bound socket that does not listen is refused."""
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.addCleanup(s.close)
        reactor, endpoint = self.adopt(self.dup(s), socket.AF_INET)
        e = self.assertRaises(listening.ListenError, listening.listen, endpoint, FACTORY)
        self.assertIn("is not a listening stream socket", str(e))

    def test_not_a_socket(self):
        """A descriptor that is no socket at all is refused, not adopted."""
        read, write = os.pipe()
        self.addCleanup(os.close, read)
        self.addCleanup(os.close, write)
        reactor, endpoint = self.adopt(read, socket.AF_INET)
        e = self.assertRaises(listening.ListenError, listening.listen, endpoint, FACTORY)
        self.assertIn(f"inherited descriptor {read} is not a socket", str(e))

