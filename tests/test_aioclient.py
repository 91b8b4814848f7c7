"""The asyncio control-socket client's box reading (the format is tested in
tests.test_control_commands; round trips over a real UNIX socket are in
tests.integration.test_aioclient)."""

import asyncio

from twisted.protocols import amp
from twisted.trial.unittest import SynchronousTestCase

from aimx.control import aioclient, wire


class CodecTests(SynchronousTestCase):
    def test_read_twisted_box(self):
        """read_box reads a box Twisted serialised, value of the maximum length included."""
        box = amp.AmpBox({b"a": b"x" * 65535, b"b": b""})

        async def go():
            reader = asyncio.StreamReader()
            reader.feed_data(box.serialize() + amp.AmpBox(c=b"2").serialize())
            reader.feed_eof()
            return [await aioclient.read_box(reader), await aioclient.read_box(reader)]

        self.assertEqual(asyncio.run(go()), [dict(box), {b"c": b"2"}])

    def feed(self, data: bytes, cap: int = wire.ANSWER_CAP):
        async def go():
            reader = asyncio.StreamReader()
            reader.feed_data(data)
            reader.feed_eof()
            return await aioclient.read_box(reader, cap)

        return asyncio.run(go())

    def test_truncated(self):
        """A box cut short is a malformed response, not a hang."""
        data = amp.AmpBox(a=b"value").serialize()
        e = self.assertRaises(aioclient.MalformedResponse, self.feed, data[:-4])
        self.assertEqual(str(e), "connection closed without a reply")

    def test_garbage(self):
        """Bytes that are not AMP (a key over 255 bytes) are refused at once, even with
        the connection still open."""

        async def go():
            reader = asyncio.StreamReader()
            reader.feed_data(b"HTTP/1.0 400 Bad Request\r\n\r\n")
            return await asyncio.wait_for(aioclient.read_box(reader), 10)

        e = self.assertRaises(aioclient.MalformedResponse, asyncio.run, go())
        self.assertEqual(str(e), "not an AMP box (key of 18516 bytes)")

    def test_cap(self):
        """A box larger than the cap is refused before it is buffered."""
        data = amp.AmpBox(a=b"x" * 1000).serialize()
        e = self.assertRaises(aioclient.MalformedResponse, self.feed, data, 500)
        self.assertIn("larger than 500 bytes", str(e))
