"""Tests for the pure SMTP envelope helpers in aimx.core.address."""

from twisted.trial.unittest import SynchronousTestCase

from aimx.core.address import client_address


class ClientAddressTests(SynchronousTestCase):
    def test_ipv4_unchanged(self):
        """An IPv4 address is its own key."""
        self.assertEqual(client_address("203.0.113.9"), "203.0.113.9")

    def test_ipv4_mapped_becomes_ipv4(self):
        """An IPv4-mapped IPv6 address counts as the IPv4 address it carries."""
        self.assertEqual(client_address("::ffff:203.0.113.9"), "203.0.113.9")
        self.assertEqual(client_address("::FFFF:cb00:7109"), "203.0.113.9")

    def test_ipv6_canonical(self):
        """Spellings of one IPv6 address give one key."""
        self.assertEqual(client_address("2001:0DB8:0:0::1"), "2001:db8::1")

    def test_not_an_address(self):
        """Text that is no IP address (a UNIX peer, C{?}) is kept as it is."""
        self.assertEqual(client_address("?"), "?")
        self.assertEqual(client_address(""), "")
