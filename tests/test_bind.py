"""The --bind grammar and the readiness log line (aimx.ops.bind)."""

from twisted.internet import endpoints
from twisted.trial.unittest import SynchronousTestCase

from aimx.ops import bind


class HostPortTests(SynchronousTestCase):
    def description(self, value: str) -> str:
        return bind.parse(value).description

    def test_ipv4(self):
        """HOST:PORT is a tcp endpoint on that interface, the value kept as written."""
        self.assertEqual(bind.parse("127.0.0.1:2525"),
                         bind.Bind(text="127.0.0.1:2525", description="tcp:2525:interface=127.0.0.1"))

    def test_default(self):
        """No --bind is 0.0.0.0:25; an empty host is every IPv4 interface, as before."""
        self.assertEqual(bind.parse_all([]), (bind.parse("0.0.0.0:25"),))
        self.assertEqual(self.description(":25"), "tcp:25:interface=0.0.0.0")

    def test_ipv6_brackets(self):
        """[::1]:25 escapes the address's colons for Twisted's endpoint syntax."""
        self.assertEqual(self.description("[::1]:25"), r"tcp:25:interface=\:\:1")
        self.assertEqual(self.description("[fe80::1%lo]:0"), r"tcp:0:interface=fe80\:\:1%lo")

    def test_ipv6_bare(self):
        """An unbracketed IPv6 HOST:PORT splits at the last colon, as it always did."""
        self.assertEqual(self.description("::1:25"), r"tcp:25:interface=\:\:1")

    def test_hostname(self):
        """A name is handed to the reactor as the interface, as before."""
        self.assertEqual(self.description("localhost:25"), "tcp:25:interface=localhost")

    def test_twisted_reads_it_back(self):
        """Twisted's own parser reads the escaped interface back unchanged."""
        for value, host in (("[::1]:25", "::1"), ("[a=b]:1", "a=b"), ("x\\y:1", "x\\y")):
            args, kw = endpoints._parse(self.description(value))
            self.assertEqual((args, kw), (["tcp", value.rpartition(":")[2]], {"interface": host}))

    def test_errors(self):
        """Malformed values are refused with the value and the reason."""
        for value, reason in (
            ("", "must be HOST:PORT ([::1]:25 for IPv6) or an endpoint (tcp:, tcp6:, systemd:)"),
            ("localhost", "must be HOST:PORT"),
            ("h:", "port must be a number 0-65535, not ''"),
            ("h:70000", "port must be a number 0-65535, not '70000'"),
            ("h:2x", "port must be a number"),
            ("h:٢٥", "port must be a number"),
            ("[::1]", "needs a port after the brackets ([::1]:25)"),
            ("[::1:25", "unbalanced brackets"),
        ):
            e = self.assertRaises(bind.BindError, bind.parse, value)
            self.assertTrue(str(e).startswith(f"--bind {value!r}: "), str(e))
            self.assertIn(reason, str(e))


class EndpointTests(SynchronousTestCase):
    def test_tcp(self):
        """tcp: and tcp6: strings pass through as written."""
        for value in ("tcp:25", r"tcp:25:interface=\:\:1", "tcp:0:interface=127.0.0.1:backlog=5",
                      "tcp6:25", r"tcp6:25:interface=\:\:1"):
            self.assertEqual(bind.parse(value), bind.Bind(text=value, description=value))

    def test_prefix_case(self):
        """The prefix is matched in any case and written as Twisted spells it."""
        self.assertEqual(bind.parse("TCP:25:interface=10.0.0.1").description,
                         "tcp:25:interface=10.0.0.1")
        self.assertEqual(bind.parse("SystemD:domain=INET:index=0").description,
                         "systemd:domain=INET:index=0")

    def test_systemd(self):
        """systemd: takes a domain and one of index= or name=."""
        for value in ("systemd:domain=INET:index=0", "systemd:domain=INET6:index=1",
                      "systemd:domain=INET6:name=aimx.socket"):
            self.assertEqual(bind.parse(value).description, value)

    def test_split_as_twisted(self):
        """Our tokeniser splits a description exactly as Twisted's does."""
        for text in (r"tcp:25:interface=\:\:1:backlog=5", "a:b=c=d:e", r"x:\=y=z\\:w",
                     "systemd:domain=INET:index=0", "tcp::"):
            self.assertEqual(bind._split(text), endpoints._parse(text))

    def test_refused_types(self):
        """unix: and ssl: cannot carry inbound SMTP; the error says why."""
        e = self.assertRaises(bind.BindError, bind.parse, "unix:/run/aimx/smtp.sock")
        self.assertIn("no client address", str(e))
        e = self.assertRaises(bind.BindError, bind.parse, "ssl:465")
        self.assertIn("STARTTLS", str(e))

    def test_errors(self):
        """Endpoint strings outside the grammar are usage errors, not bind-time tracebacks."""
        for value, reason in (
            ("tcp:", "port must be a number 0-65535, not ''"),
            ("tcp:65536", "port must be a number 0-65535"),
            ("tcp:25:127.0.0.1", "takes one port"),
            ("tcp:25:interfce=lo", "unknown parameter interfce="),
            ("tcp:25:backlog=0", "backlog= must be a positive number"),
            ("tcp:25:interface=a:interface=b", "interface= given twice"),
            ("tcp:25\\", "ends in a lone backslash"),
            ("systemd:domain=UNIX:index=0", "needs domain=INET or domain=INET6"),
            ("systemd:index=0", "needs domain=INET or domain=INET6"),
            ("systemd:domain=INET", "needs one of index=N or name=NAME"),
            ("systemd:domain=INET:index=0:name=x", "needs one of index=N or name=NAME"),
            ("systemd:domain=INET:index=x", "index= must be a number"),
            ("systemd:domain=INET:name=", "name= is empty"),
            ("systemd:0:domain=INET", "takes keywords only"),
            ("systemd:domain=INET:fd=3", "unknown parameter fd="),
        ):
            e = self.assertRaises(bind.BindError, bind.parse, value)
            self.assertTrue(str(e).startswith(f"--bind {value!r}: {reason}"), str(e))

    def test_several(self):
        """Several values keep their order; the first bad one is the error."""
        binds = bind.parse_all(["127.0.0.1:25", "[::1]:25", "systemd:domain=INET6:index=0"])
        self.assertEqual([b.text for b in binds],
                         ["127.0.0.1:25", "[::1]:25", "systemd:domain=INET6:index=0"])
        e = self.assertRaises(bind.BindError, bind.parse_all, ["127.0.0.1:25", "nope", "x:y"])
        self.assertIn("'nope'", str(e))


class LoggedAddressTests(SynchronousTestCase):
    def test_address_text(self):
        """An IPv6 host is bracketed, so the text is a --bind value again."""
        self.assertEqual(bind.address_text("127.0.0.1", 25), "127.0.0.1:25")
        self.assertEqual(bind.address_text("::1", 2525), "[::1]:2525")
        self.assertEqual(bind.split_address("[::1]:2525"), ("::1", 2525))
        self.assertEqual(bind.split_address("127.0.0.1:25"), ("127.0.0.1", 25))

    def test_read_back(self):
        """The listening lines of a log, either form, in order; other lines are ignored."""
        log = (
            "2026-01-01T00:00:00.000+00:00 info aimx.smtp: listening address=127.0.0.1:40001 "
            "tls=disabled\n"
            "<6>aimx.smtp: listening address=[::1]:40002 tls=disabled\n"
            "<6>aimx.control: listening path=/run/aimx/aimx.sock mode=0666\n"
            '<5>aimx.smtp: RCPT refused rcpt="x listening address=1.2.3.4:5"\n'
            "listening address=1.2.3.4:6\n"
        )
        self.assertEqual(bind.logged_addresses(log), ["127.0.0.1:40001", "[::1]:40002"])
