"""The clients without a reactor over a real UNIX socket: connecting, command round
trips, error mapping, for the asyncio client (the MCP process) and the blocking one
(the CLI).

A small asyncio UNIX server stands in for the daemon: it parses each request
with the daemon's AMP commands (L{aimx.control.commands}) and answers with
scripted boxes; the blocking client calls it from a worker thread.  The box
format is tested in tests.test_control_commands.
"""

import asyncio
import os
import socket
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from aimx.control import aioclient, blockingclient, commands, wire
from aimx.errors import ConnectFailed, DaemonNotRunning, MailboxError


class ScriptedDaemon:
    """Answers each request box with C{reply(request)}: a box, raw bytes, or C{None}
    (hang up)."""

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
                writer.write(answer if isinstance(answer, bytes) else wire.serialize_box(answer))
                await writer.drain()
        except aioclient.MalformedResponse:
            pass  # the client hung up
        writer.close()


def answer(request, **values) -> dict:
    return {b"_answer": request[b"_ask"], **{k.encode(): v for k, v in values.items()}}


def error(request, code: bytes, reason: bytes) -> dict:
    return {b"_error": request[b"_ask"], b"_error_code": code, b"_error_description": reason}


class ClientTestCase(SynchronousTestCase):
    def setUp(self):
        directory = tempfile.mkdtemp(prefix="aimx-aio-")
        self.addCleanup(os.rmdir, directory)
        self.path = os.path.join(directory, "aimx.sock")

    async def session(self, calls):
        """Run C{[(command, arguments), ...]} on one connection of the client under
        test; the answers."""
        connection = await aioclient.connect(self.path)
        try:
            return [await connection.call(command, **arguments) for command, arguments in calls]
        finally:
            await connection.close()

    def call(self, reply, command, **arguments):
        """Run one call against a fake daemon; the result (the daemon in C{self.daemon})."""

        async def go():
            async with ScriptedDaemon(self.path, reply) as daemon:
                try:
                    [result] = await self.session([(command, arguments)])
                    return result
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

    down = ("No such file or directory", "Connection refused")

    def test_no_socket(self):
        """No socket file: the daemon is not running."""
        e = self.assertRaises(DaemonNotRunning, self.connect, self.path)
        self.assertEqual(str(e), f"aimx daemon not running ({self.down[0]} at {self.path})")

    def test_refused(self):
        """A socket file nobody listens on: the daemon is not running."""
        s = socket.socket(socket.AF_UNIX)
        s.bind(self.path)
        s.close()
        self.addCleanup(os.unlink, self.path)
        e = self.assertRaises(DaemonNotRunning, self.connect, self.path)
        self.assertEqual(str(e), f"aimx daemon not running ({self.down[1]} at {self.path})")

    def test_other_failure(self):
        """Any other failure names the socket: `Failed to connect to aimx daemon at …`."""
        with open(self.path, "w"):
            pass
        self.addCleanup(os.unlink, self.path)
        e = self.assertRaises(ConnectFailed, self.connect, self.path + "/x")
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
            return {b"_answer": request[b"_ask"], **box}

        result = self.call(reply, wire.Send, message=message, text_only=True)
        self.assertEqual(result, {"message_id": "<id@x>", "held": None,
                                  "deliveries": [{"rcpt": "a@b", "status": "delivered"}]})
        [request] = self.daemon.requests
        self.assertEqual((request[b"_command"], request[b"message"]), (b"SEND", b"4"))

    def test_command_first_on_the_wire(self):
        """Every request box starts with C{_command}, then C{_ask} (read in wire order)."""
        reply = lambda request: answer(request, address=b"x@y")
        self.call(reply, wire.MailboxCreate, name="x", owner="y")
        [request] = self.daemon.requests
        self.assertEqual(list(request), [b"_command", b"_ask", b"name", b"owner"])

    def test_daemon_error(self):
        """An error box becomes the command's error class with the daemon's reason."""
        reply = lambda request: error(request, b"MAILBOX", "mailbox 'é' exists".encode())
        e = self.assertRaises(MailboxError, self.call, reply, wire.MailboxCreate, name="é")
        self.assertEqual((e.code, str(e)), ("MAILBOX", "mailbox 'é' exists"))

    def test_unknown_code(self):
        """A code outside the error table (UNHANDLED, UNKNOWN) is a malformed response."""
        reply = lambda request: error(request, b"UNHANDLED", b"no such command")
        e = self.assertRaises(wire.MalformedResponse, self.call, reply, wire.Version)
        self.assertEqual(str(e), "UNHANDLED no such command")

    def test_hang_up(self):
        """The daemon closing without an answer is a malformed response."""
        e = self.assertRaises(wire.MalformedResponse, self.call, lambda r: None,
                              wire.Version)
        self.assertIn("without a reply", str(e))

    def test_not_amp(self):
        """Bytes that are not an AMP box are a malformed response, without waiting for more."""
        e = self.assertRaises(wire.MalformedResponse, self.call,
                              lambda r: b"HTTP/1.0 400 Bad Request\r\n\r\n", wire.Version)
        self.assertEqual(str(e), "not an AMP box (key of 18516 bytes)")

    def test_bad_answer(self):
        """An answer lacking a response key is a malformed response."""
        reply = lambda request: answer(request, tag=b"1")
        e = self.assertRaises(wire.MalformedResponse, self.call, reply, wire.Version)
        self.assertIn("missing required argument", str(e))

    def test_wrong_tag(self):
        """An answer to another question is not taken for this one."""
        reply = lambda request: {b"_answer": b"99", b"address": b"x"}
        self.assertRaises(wire.MalformedResponse, self.call, reply, wire.MailboxCreate,
                          name="x")

    def test_sequential_on_one_connection(self):
        """Several commands on one connection each get their own answer."""

        def reply(request):
            return answer(request, hooks=b"1", **{"hooks.0": request[b"_ask"]})

        async def go():
            async with ScriptedDaemon(self.path, reply):
                return await self.session([(wire.HookList, {})] * 3)

        self.addCleanup(lambda: os.path.exists(self.path) and os.unlink(self.path))
        self.assertEqual(asyncio.run(go()), [{"hooks": 1}, {"hooks": 2}, {"hooks": 3}])


class BlockingConnectTests(ConnectTests):
    """The blocking client says what the CLI always said."""

    def connect(self, path):
        return blockingclient.connect(path)

    down = ("no socket", "connection refused")


class BlockingCallTests(CallTests):
    """The same round trips through the blocking client, called from a worker thread."""

    async def session(self, calls):
        def work():
            connection = blockingclient.connect(self.path)
            try:
                return [connection.call(command, **arguments) for command, arguments in calls]
            finally:
                connection.close()

        return await asyncio.get_running_loop().run_in_executor(None, work)
