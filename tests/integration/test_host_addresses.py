"""aimx.host.addresses against this machine's own C{ip addr} (the real program)."""

import ipaddress
import shutil
import subprocess

from twisted.trial.unittest import SkipTest, TestCase

from aimx.host import addresses


class ThisHostTests(TestCase):
    def test_matches_ip_addr(self):
        """The addresses read are those the plain C{ip -o addr} lists, loopback included."""
        if shutil.which("ip") is None:
            raise SkipTest("no ip program on this host")
        shown = set()
        for line in subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True,
                                   check=True).stdout.splitlines():
            words = line.split()
            family = words.index("inet") if "inet" in words else words.index("inet6")
            shown.add(str(ipaddress.ip_address(words[family + 1].split("/")[0])))
        found = addresses.interface_addresses()
        self.assertEqual(set(found), shown)
        self.assertIn("127.0.0.1", found)
