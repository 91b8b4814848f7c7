"""aimx.host.addresses: the host's interface addresses from C{ip -j address show}."""

import json

from twisted.trial.unittest import SynchronousTestCase

from aimx.host import addresses
from aimx.host.programs import Completed
from aimx.testing.fakes import FakeRunner

LISTING = json.dumps([
    {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1"},
                                   {"family": "inet6", "local": "::1"}]},
    {"ifname": "eth0", "addr_info": [
        {"family": "inet", "local": "192.0.2.2", "prefixlen": 24},
        {"family": "inet", "local": "192.0.2.3", "label": "eth0:1"},
        {"family": "inet6", "local": "FE80::1%eth0"},
        {"family": "inet6", "local": "2001:db8:0:0::2"}]},
    {"ifname": "ppp0", "addr_info": [{"family": "inet", "local": "198.51.100.1",
                                      "address": "198.51.100.254"}]},
    {"ifname": "down0", "addr_info": []},
    {"ifname": "down1"},
])


class ParseTests(SynchronousTestCase):
    def test_every_local_address(self):
        """Every interface's local addresses, secondary ones included, normalised,
        each once; a point-to-point peer is not ours."""
        self.assertEqual(addresses.parse(LISTING + "\n"), (
            "127.0.0.1", "::1", "192.0.2.2", "192.0.2.3", "fe80::1", "2001:db8::2",
            "198.51.100.1"))

    def test_unreadable(self):
        """Anything but the listing is refused with a reason."""
        for text in ("", "{", '{"a": 1}', '[{"addr_info": [{"local": "not-an-ip"}]}]', "[1]"):
            with self.assertRaises(addresses.Unreadable, msg=text):
                addresses.parse(text)


class InterfaceAddressesTests(SynchronousTestCase):
    def test_runs_ip(self):
        """C{ip -j address show} through the runner."""
        runner = FakeRunner(default=Completed(0, LISTING))
        self.assertIn("192.0.2.3", addresses.interface_addresses(runner))
        self.assertEqual(runner.calls, [["ip", "-j", "address", "show"]])

    def test_ip_fails(self):
        """A missing or failing C{ip} is Unreadable, with its exit status."""
        runner = FakeRunner(default=Completed(127, "", "ip: not found"))
        with self.assertRaisesRegex(addresses.Unreadable, "exited 127: ip: not found"):
            addresses.interface_addresses(runner)
