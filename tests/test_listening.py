"""Listening on endpoints at start-up (aimx.listening), on a memory reactor."""

import os
import socket

from twisted.internet import defer, endpoints
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactor, RaisingMemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from aimx import listening
from aimx.ops import bind

FACTORY = Factory.forProtocol(Protocol)


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

    def test_not_a_socket(self):
        """A descriptor that is no socket at all is refused, not adopted."""
        read, write = os.pipe()
        self.addCleanup(os.close, read)
        self.addCleanup(os.close, write)
        endpoint = endpoints.AdoptedStreamServerEndpoint(MemoryReactor(), read, socket.AF_INET)
        e = self.assertRaises(listening.ListenError, listening.listen, endpoint, FACTORY)
        self.assertIn(f"inherited descriptor {read} is not a socket", str(e))
