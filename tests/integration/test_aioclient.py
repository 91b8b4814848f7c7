"""The asyncio control-socket client over a real UNIX socket: connecting, command round
trips, error mapping.

A small asyncio UNIX server stands in for the daemon: it parses each request
with the shared command definitions and answers with scripted boxes. The box
codec is tested in tests.test_aioclient.
"""

import asyncio
import os
import socket
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from aimx.control import aioclient, commands
from aimx.errors import DaemonNotRunning, MailboxError


class ScriptedDaemon:
    """Answers each request box with C{reply(request) -> dict | None} (None: hang up)."""

    def __init__(self, path: str, reply):
        self.path = path
        self.reply = reply
        self.requests = []

    async def __aenter__(self):
        self.server = await asyncio.start_unix_server(self.serve, self.path)
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()

    async def serve(self, reader, writer):
        try:
            while True:
                request = await aioclient.read_box(reader)
                self.requests.append(request)
                answer = self.reply(request)
                if answer is None:
                    break
                writer.write(aioclient.encode_box(answer))
                await writer.drain()
        except aioclient.MalformedResponse:
            pass  # the client hung up
        writer.close()


def answer(request, **values) -> dict:
    return {b"_answer": request[b"_ask"], **values}


def error(request, code: bytes, reason: bytes) -> dict:
    return {b"_error": request[b"_ask"], b"_error_code": code, b"_error_description": reason}


class ClientTestCase(SynchronousTestCase):
    def setUp(self):
        directory = tempfile.mkdtemp(prefix="aimx-aio-")
        self.addCleanup(os.rmdir, directory)
        self.path = os.path.join(directory, "aimx.sock")

    def call(self, reply, command, **arguments):
        """Run one L{aioclient.ControlClient.call} against a fake daemon; return (result, daemon)."""

        async def go():
            async with ScriptedDaemon(self.path, reply) as daemon:
                try:
                    return await aioclient.ControlClient(self.path).call(command, **arguments)
                finally:
                    self.daemon = daemon

        try:
            return asyncio.run(go())
        finally:
            if os.path.exists(self.path):
                os.unlink(self.path)


class ConnectTests(ClientTestCase):
    def connect(self, path):
        return asyncio.run(aioclient.connect(path))

    def test_no_socket(self):
        """No socket file: the daemon is not running."""
        e = self.assertRaises(DaemonNotRunning, self.connect, self.path)
        self.assertIn(self.path, str(e))

    def test_refused(self):
        """A socket file nobody listens on: the daemon is not running."""
        s = socket.socket(socket.AF_UNIX)
        s.bind(self.path)
        s.close()
        self.addCleanup(os.unlink, self.path)
        self.assertRaises(DaemonNotRunning, self.connect, self.path)

    def test_other_failure(self):
        """Any other failure names the socket: `Failed to connect to aimx daemon at …`."""
        with open(self.path, "w"):
            pass
        self.addCleanup(os.unlink, self.path)
        e = self.assertRaises(aioclient.ConnectFailed, self.connect, self.path + "/x")
        self.assertTrue(str(e).startswith(f"Failed to connect to aimx daemon at {self.path}/x: "))


class CallTests(ClientTestCase):
    def test_chunked_round_trip(self):
        """A SEND larger than one AMP value goes chunked; the answer is parsed."""
        message = b"M" * 200_000

        def reply(request):
            parsed = commands.Send.parseArguments(request, None)
            self.assertEqual((parsed["message"], parsed["text_only"], parsed["html_body"]),
                             (message, True, None))
            box = commands.Send.makeResponse(
                {"message_id": "<id@x>", "deliveries": [{"rcpt": "a@b", "status": "delivered"}]},
                None,
            )
            return answer(request, **{k.decode(): v for k, v in box.items()})

        result = self.call(reply, commands.Send, message=message, text_only=True)
        self.assertEqual(result, {"message_id": "<id@x>", "held": None,
                                  "deliveries": [{"rcpt": "a@b", "status": "delivered"}]})
        [request] = self.daemon.requests
        self.assertEqual((request[b"_command"], request[b"message"]), (b"SEND", b"4"))

    def test_command_first_on_the_wire(self):
        """Every request box starts with C{_command}, then C{_ask} (read in wire order)."""
        reply = lambda request: answer(request, address=b"x@y")
        self.call(reply, commands.MailboxCreate, name="x", owner="y")
        [request] = self.daemon.requests
        self.assertEqual(list(request), [b"_command", b"_ask", b"name", b"owner"])

    def test_daemon_error(self):
        """An error box becomes the command's error class with the daemon's reason."""
        reply = lambda request: error(request, b"MAILBOX", "mailbox 'é' exists".encode())
        e = self.assertRaises(MailboxError, self.call, reply, commands.MailboxCreate, name="é")
        self.assertEqual((e.code, str(e)), ("MAILBOX", "mailbox 'é' exists"))

    def test_unknown_code(self):
        """A code outside the error table (UNHANDLED, UNKNOWN) is a malformed response."""
        reply = lambda request: error(request, b"UNHANDLED", b"no such command")
        e = self.assertRaises(aioclient.MalformedResponse, self.call, reply, commands.Version)
        self.assertEqual(str(e), "UNHANDLED no such command")

    def test_hang_up(self):
        """The daemon closing without an answer is a malformed response."""
        e = self.assertRaises(aioclient.MalformedResponse, self.call, lambda r: None,
                              commands.Version)
        self.assertIn("without a reply", str(e))

    def test_bad_answer(self):
        """An answer lacking a response key is a malformed response."""
        reply = lambda request: answer(request, tag=b"1")
        e = self.assertRaises(aioclient.MalformedResponse, self.call, reply, commands.Version)
        self.assertIn("missing required argument", str(e))

    def test_wrong_tag(self):
        """An answer to another question is not taken for this one."""
        reply = lambda request: {b"_answer": b"99", b"address": b"x"}
        self.assertRaises(aioclient.MalformedResponse, self.call, reply, commands.MailboxCreate,
                          name="x")

    def test_sequential_on_one_connection(self):
        """Several commands on one connection each get their own answer."""

        def reply(request):
            return answer(request, hooks=b"1", **{"hooks.0": request[b"_ask"]})

        async def go():
            async with ScriptedDaemon(self.path, reply):
                connection = await aioclient.connect(self.path)
                try:
                    return [await connection.call(commands.HookList) for _ in range(3)]
                finally:
                    await connection.close()

        self.addCleanup(lambda: os.path.exists(self.path) and os.unlink(self.path))
        self.assertEqual(asyncio.run(go()), [{"hooks": 1}, {"hooks": 2}, {"hooks": 3}])
