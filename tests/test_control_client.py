"""The Twisted control-socket client (the CLI's): what it writes on the wire."""

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from aimx.control import client, commands


class WireOrderTests(SynchronousTestCase):
    def sent(self, command, **arguments) -> list:
        """The boxes L{client.ControlClient.call} writes, each as a dict in wire order."""
        proto = amp.AMP()
        transport = StringTransport()
        proto.makeConnection(transport)
        self.addCleanup(proto.connectionLost, Failure(ConnectionDone()))
        client.ControlClient(proto).call(command, **arguments).addErrback(lambda f: None)
        return amp.parseString(transport.value())

    def test_command_first(self):
        """Every request starts with C{_command}, then C{_ask}, before any argument."""
        [box] = self.sent(commands.MailboxCreate, name="x", owner="y")
        self.assertEqual(list(box), [b"_command", b"_ask", b"name", b"owner"])
        self.assertEqual(box[b"_command"], b"MAILBOX-CREATE")

    def test_send_command_before_message(self):
        """A large SEND names its command before the first chunk of the message."""
        [box] = self.sent(commands.Send, message=b"m" * 200_000, text_only=True)
        keys = list(box)
        self.assertEqual(keys[:2], [b"_command", b"_ask"])
        self.assertEqual(box[b"_command"], b"SEND")
        self.assertEqual(keys[2:], sorted(keys[2:]))
