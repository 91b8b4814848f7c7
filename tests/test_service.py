"""The daemon's options and its SMTP listener service (aimx.service), on a memory reactor."""

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import capturedLogs
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from aimx import service
from aimx.errors import ConfigError
from aimx.logs import event_line
from aimx.testing.fakes import FakeReactor


class OptionsTests(SynchronousTestCase):
    def parse(self, *argv: str) -> service.Options:
        options = service.Options()
        options.parseOptions(list(argv))
        return options

    def test_default_bind(self):
        """Without --bind the daemon listens on 0.0.0.0:25."""
        options = self.parse()
        self.assertEqual(options["bind"], ["0.0.0.0:25"])
        self.assertEqual([b.description for b in options.binds], ["tcp:25:interface=0.0.0.0"])

    def test_several_binds(self):
        """--bind may be given several times (and as --bind=VALUE); order is kept."""
        options = self.parse("--bind", "127.0.0.1:2525", "--bind=[::1]:2525",
                             "--bind", "systemd:domain=INET6:index=0")
        self.assertEqual(options["bind"],
                         ["127.0.0.1:2525", "[::1]:2525", "systemd:domain=INET6:index=0"])
        self.assertEqual(
            [b.description for b in options.binds],
            ["tcp:2525:interface=127.0.0.1", r"tcp:2525:interface=\:\:1",
             "systemd:domain=INET6:index=0"],
        )

    def test_bad_bind(self):
        """A value outside the grammar is a usage error naming it."""
        e = self.assertRaises(usage.UsageError, self.parse, "--bind", "127.0.0.1:25",
                              "--bind", "unix:/tmp/smtp")
        self.assertIn("--bind 'unix:/tmp/smtp': unix: endpoints cannot take SMTP", str(e))

    def test_help(self):
        """The help text states the grammar and the default."""
        text = str(service.Options())
        self.assertIn("--bind=", text)
        self.assertIn("systemd:domain=INET6:index=0", text)
        self.assertIn("[0.0.0.0:25]", text)


class _Sessions(Factory):
    protocol = Protocol
    tls_options = None

    def __init__(self):
        self.sessions = set()
        self.drained = []

    def drain(self, grace):
        self.drained.append(grace)
        return defer.succeed(None)


class SmtpListenerTests(SynchronousTestCase):
    def listener(self, *binds: str):
        options = service.Options()
        options.parseOptions([arg for value in binds for arg in ("--bind", value)])
        self.reactor = FakeReactor()
        # Port 2 is in use.
        self.reactor.refused[2] = CannotListenError("", 2, OSError(98, "Address already in use"))
        self.factory = _Sessions()
        return service.SmtpListener(self.reactor, self.factory, options.binds)

    def test_every_bind_listens(self):
        """Each --bind listens, in order, and each bound address is logged."""
        listener = self.listener("127.0.0.1:0", "tcp:1:interface=127.0.0.1", "[::1]:3")
        with capturedLogs() as events:
            listener.startService()
        self.assertEqual([(p, i) for p, _, _, i in self.reactor.tcpServers],
                         [(0, "127.0.0.1"), (1, "127.0.0.1"), (3, "::1")])
        self.assertEqual(listener.ports, self.reactor.ports)
        self.assertEqual(
            [event_line(e, journal=True) for e in events],
            ["<6>aimx.smtp: listening address=127.0.0.1:40000 tls=disabled",
             "<6>aimx.smtp: listening address=127.0.0.1:40001 tls=disabled",
             "<6>aimx.smtp: listening address=[::1]:40003 tls=disabled"],
        )

    def test_first_failure_is_fatal(self):
        """The first bind that fails is fatal with its --bind value, and unbinds the others."""
        listener = self.listener("127.0.0.1:1", "[::1]:2", "127.0.0.1:3")
        e = self.assertRaises(ConfigError, listener.startService)
        self.assertEqual(str(e), "Failed to bind to [::1]:2: [Errno 98] Address already in use")
        self.assertEqual(len(self.reactor.tcpServers), 1)  # the third was never tried
        self.assertTrue(self.reactor.ports[0].stopped)
        self.assertEqual(listener.ports, [])
        self.assertFalse(listener.running)
        self.successResultOf(listener.stopService())
        self.assertEqual(self.factory.drained, [])

    def test_systemd_without_socket(self):
        """A systemd bind in a process systemd did not start fails like any bind."""
        listener = self.listener("systemd:domain=INET6:index=0")
        e = self.assertRaises(ConfigError, listener.startService)
        self.assertTrue(str(e).startswith(
            "Failed to bind to systemd:domain=INET6:index=0: systemd passed no socket"), str(e))

    def test_stop_drains(self):
        """Stop closes every listening port, then drains the sessions."""
        listener = self.listener("127.0.0.1:0", "127.0.0.1:1")
        listener.startService()
        with capturedLogs() as events:
            self.successResultOf(listener.stopService())
        self.assertTrue(all(p.stopped for p in self.reactor.ports))
        self.assertEqual(self.factory.drained, [service.DRAIN_SECONDS])
        self.assertEqual([event_line(e, journal=True) for e in events],
                         ["<6>aimx.smtp: listener shutting down connections=0",
                          "<6>aimx.smtp: listener shut down"])

