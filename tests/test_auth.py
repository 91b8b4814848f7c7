"""The resolver's configuration (aimx.auth.resolver) without any DNS; aimx.auth against
a real loopback DNS is tested in tests.integration.test_auth.
"""

from twisted.trial.unittest import SynchronousTestCase

from aimx.auth.resolver import DnsTempError, Resolver, parse_nameservers
from aimx.auth.verify import verify_inbound
from aimx.core.authresults import UNAUTHENTICATED
from aimx.core.identity import from_headers
from aimx.errors import ConfigError
from aimx.loopback.keys import generate_key, sign_message
from aimx.testing.fakes import message


PRIVATE_PEM, KEY_TXT = generate_key()


def mail(from_="Alice <alice@example.com>", *, headers=(), body=b"Hello there.\r\n") -> bytes:
    """A small message with the given From and extra header lines on top."""
    return message(body, sender=from_, to="bob@aimx.test", subject="test",
                   date="Mon, 1 Jan 2024 00:00:00 +0000", top=headers)


def signed(raw: bytes, domain: str, selector: str = "sel") -> bytes:
    return sign_message(raw, private_pem=PRIVATE_PEM, selector=selector, domain=domain)


def author(address: str):
    return from_headers([("From", address)])


class ResolverConfigTests(SynchronousTestCase):
    def test_parse_nameservers(self):
        """host[:port] lists, IPv6 in brackets or bare, default port 53."""
        self.assertEqual(parse_nameservers("127.0.0.1:5353, [::1]:54,192.0.2.1,::1,[::2]"),
                         [("127.0.0.1", 5353), ("::1", 54), ("192.0.2.1", 53), ("::1", 53),
                          ("::2", 53)])
        self.assertEqual(parse_nameservers(""), [])

    def test_parse_invalid(self):
        """Hostnames, bad ports and junk are a ConfigError naming the entry."""
        for value in ("localhost:53", "127.0.0.1:0", "127.0.0.1:x", "[::1]x", "1.2.3.4:99999"):
            e = self.assertRaises(ConfigError, parse_nameservers, value)
            self.assertIn("AIMX_NAMESERVERS", str(e))

    def test_env_servers(self):
        """AIMX_NAMESERVERS makes a usable resolver without reading the system config."""
        r = Resolver.from_env({"AIMX_NAMESERVERS": "127.0.0.1:5353"}, resolv_conf="/nonexistent")
        self.assertTrue(r.usable)

    def test_system_config(self):
        """Without AIMX_NAMESERVERS the system resolv.conf is used."""
        conf = self.mktemp()
        with open(conf, "w") as f:
            f.write("nameserver 192.0.2.53\n")
        self.assertTrue(Resolver.from_env({}, resolv_conf=conf).usable)

    def test_unloadable_system_config(self):
        """An unloadable system config gives an unusable resolver whose lookups fail."""
        r = Resolver.from_env({"AIMX_NAMESERVERS": " "}, resolv_conf="/nonexistent")
        self.assertFalse(r.usable)
        self.assertRaises(DnsTempError, r.txt, "example.com")

    def test_unusable_all_none(self):
        """With no resolver at all every result is none."""
        r = Resolver.from_env({}, resolv_conf="/nonexistent")
        raw = signed(mail(), "example.com")
        self.assertEqual(
            verify_inbound(raw, peer_ip="192.0.2.1", mail_from="alice@example.com",
                           helo="mx.example.com", identity=author("alice@example.com"),
                           resolver=r),
            UNAUTHENTICATED)

    def test_spent_budget(self):
        """Past its deadline a resolver fails every lookup at once, as temporary."""
        r = Resolver.from_env({"AIMX_NAMESERVERS": "127.0.0.1:9"}).until(0)
        e = self.assertRaises(DnsTempError, r.txt, "example.com")
        self.assertIn("budget", str(e))
