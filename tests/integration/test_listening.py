"""Adopting inherited sockets (aimx.listening): real listening and bound sockets on
loopback, checked before Twisted wraps them (the rest is in tests.test_listening).
"""

import os
import socket

from twisted.internet import endpoints
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from aimx import listening
from tests.test_listening import FACTORY


def _listening_socket(family, address) -> socket.socket:
    s = socket.socket(family)
    s.bind(address)
    s.listen()
    return s


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
