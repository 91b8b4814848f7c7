"""Tests for aimx.smtp.outbound without the network: the sender's socket options and the
bound on concurrent lookups (delivery over loopback is in tests.integration.test_smtp_outbound).
"""

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from aimx.smtp.outbound import MxTransport

HELO = "agent.example.com"
SENDER = "alice@agent.example.com"
MESSAGE = (
    b"From: alice@agent.example.com\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\n"
    b"Hello.\r\n.leading dot\r\n..two dots\r\n\r\nBye.\r\n"
)


class NoDelayTests(TestCase):
    def test_nagle_off(self):
        """The sender turns Nagle off: the message's last piece must not wait for an ACK."""
        from twisted.internet import error
        from twisted.internet.testing import StringTransport
        from twisted.python import failure

        from aimx.smtp.outbound import _SenderFactory

        class Transport(StringTransport):
            nodelay = False

            def setTcpNoDelay(self, enabled):
                self.nodelay = enabled

        factory = _SenderFactory(host="mx", helo=HELO, tls=None, timeout=5, mail_from=SENDER,
                                 rcpts=["b@example.com"], data=MESSAGE)
        transport = Transport()
        sender = factory.buildProtocol(None)
        sender.makeConnection(transport)
        self.assertTrue(transport.nodelay)
        sender.setTimeout(None)
        sender.connectionLost(failure.Failure(error.ConnectionDone()))


class BoundsTests(TestCase):
    def test_lookups_bounded(self):
        """However many domains a send has, at most MAX_LOOKUPS lookups run at once."""
        from twisted.internet import defer

        from aimx.smtp import outbound

        waiting: list[defer.Deferred] = []
        peak = []

        def run_in_thread(f, *args):
            d = defer.Deferred()
            waiting.append(d)
            peak.append(len([w for w in waiting if not w.called]))
            return d

        transport = MxTransport(reactor=reactor, resolver=None, run_in_thread=run_in_thread,
                                helo=HELO)
        planned = transport.plan([f"r@d{i}.example" for i in range(20)])
        while not planned.called:
            [d] = [w for w in waiting if not w.called][:1]
            d.callback(outbound.Route(domain="x", rcpts=()))
        self.assertEqual(max(peak), outbound.MAX_LOOKUPS)
        self.assertEqual(len(waiting), 20)
