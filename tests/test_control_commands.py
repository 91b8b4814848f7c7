"""The control socket's wire API: chunked values and argument decoding (no protocol)."""

import ast
import json
import os

from twisted.protocols import amp
from twisted.trial.unittest import SynchronousTestCase

from aimx.control import commands
from aimx.control.commands import (
    CHUNK,
    MESSAGE_CAP,
    BigBytes,
    BigUnicode,
    Flag,
    Json,
    Text,
    decode_chunks,
    encode_chunks,
    socket_path,
)


def decode(argument, box, name=b"v"):
    objects = {}
    argument.fromBox(name, box, objects, None)
    return objects[name.decode()]


def encode(argument, value, name=b"v"):
    strings = {}
    argument.toBox(name, strings, {name.decode(): value}, None)
    return strings


class ChunkTests(SynchronousTestCase):
    def test_round_trips(self):
        """Values of 0, 1, 65535, 65536 and 3 chunks survive encode/decode."""
        for size in (0, 1, CHUNK, CHUNK + 1, 2 * CHUNK + 7):
            value = bytes(i % 251 for i in range(size))
            box = encode_chunks(b"message", value)
            self.assertTrue(all(len(v) <= CHUNK for v in box.values()))
            self.assertEqual(decode_chunks(b"message", box, limit=10**9, too_long=""), value)

    def test_layout(self):
        """The count goes under the name, the chunks under name.0, name.1, ..."""
        box = encode_chunks(b"m", b"x" * (CHUNK + 2))
        self.assertEqual(sorted(box), [b"m", b"m.0", b"m.1"])
        self.assertEqual(box[b"m"], b"2")
        self.assertEqual(encode_chunks(b"m", b""), {b"m": b"1", b"m.0": b""})

    def test_absent(self):
        """A missing name decodes to None (the argument decides if that is allowed)."""
        self.assertIsNone(decode_chunks(b"m", {}, limit=10, too_long=""))

    def assertMalformed(self, reason, f, *args, **kwargs):
        e = self.assertRaises(amp.RemoteAmpError, f, *args, **kwargs)
        self.assertEqual(e.errorCode, b"MALFORMED")
        self.assertIn(reason, e.description)
        return e

    def test_bad_counts(self):
        """Counts that are not decimal, zero, or beyond the limit's chunks are MALFORMED."""
        for count in (b"", b"x", b"-1", b"0", b"1.5", b"3"):
            self.assertMalformed(
                "invalid chunk count for m",
                decode_chunks, b"m", {b"m": count, b"m.0": b"", b"m.1": b"", b"m.2": b""},
                limit=10, too_long="",
            )

    def test_missing_chunk(self):
        """A count naming a chunk that is not in the box is MALFORMED."""
        self.assertMalformed(
            "missing chunk m.1", decode_chunks, b"m", {b"m": b"2", b"m.0": b"a"},
            limit=10**6, too_long="",
        )

    def test_over_limit(self):
        """25 MiB + 1 byte of message is refused with the spec's reason."""
        box = encode_chunks(b"message", b"a" * (MESSAGE_CAP + 1))
        argument = commands.Send.arguments[0][1]
        self.assertMalformed(
            "Content-Length 26214401 exceeds cap 26214400", decode, argument, box, b"message"
        )
        self.assertEqual(len(decode(argument, encode_chunks(b"message", b"a" * MESSAGE_CAP),
                                    b"message")), MESSAGE_CAP)

    def test_html_body_reason(self):
        """An oversized html_body names Html-Body-Length."""
        box = encode_chunks(b"html_body", b"a" * (MESSAGE_CAP + 1))
        argument = commands.Send.arguments[2][1]
        self.assertMalformed("Html-Body-Length 26214401 exceeds cap 26214400",
                             decode, argument, box, b"html_body")


class ArgumentTests(SynchronousTestCase):
    assertMalformed = ChunkTests.assertMalformed

    def test_missing_required(self):
        """A required argument that is absent is MALFORMED, not a KeyError."""
        for argument in (Text(), BigBytes(10), BigUnicode(10)):
            self.assertMalformed("missing required argument: name", decode, argument, {}, b"name")

    def test_optional_absent(self):
        """Optional arguments decode to None; a Flag to its default."""
        self.assertIsNone(decode(Text(optional=True), {}))
        self.assertIsNone(decode(BigBytes(10, optional=True), {}))
        self.assertIs(decode(Flag(), {}), False)
        self.assertIs(decode(Flag(default=True), {}), True)

    def test_empty_text(self):
        """An empty required string is MALFORMED `empty <Name> value`."""
        self.assertMalformed("empty Name value", decode, Text(), {b"name": b""}, b"name")
        self.assertMalformed("empty Mailbox value", decode, Text(), {b"mailbox": b""}, b"mailbox")
        self.assertEqual(decode(Text(allow_empty=True), {b"v": b""}), "")

    def test_bad_utf8(self):
        """Undecodable UTF-8 is MALFORMED."""
        self.assertMalformed("invalid UTF-8 in v", decode, Text(), {b"v": b"\xff"})
        self.assertMalformed("invalid UTF-8 in v", decode, BigUnicode(10),
                             encode_chunks(b"v", b"\xff"))

    def test_text_round_trip(self):
        """Unicode text, NUL and slashes included, round-trips."""
        for value in ("a/b", "\x00", "über", ".."):
            self.assertEqual(decode(Text(), encode(Text(), value)), value)

    def test_flag(self):
        """Flags are True/False on the wire; anything else is MALFORMED."""
        self.assertEqual(encode(Flag(), True), {b"v": b"True"})
        self.assertIs(decode(Flag(), {b"v": b"False"}), False)
        self.assertMalformed("invalid boolean for v", decode, Flag(), {b"v": b"yes"})

    def test_json(self):
        """JSON values round-trip past 64 KiB; bad JSON is MALFORMED."""
        rows = [{"name": "x" * 100, "n": i} for i in range(1000)]
        box = encode(Json(), rows)
        self.assertGreater(len(box), 2)
        self.assertEqual(decode(Json(), box), rows)
        self.assertMalformed("invalid JSON in v", decode, Json(), encode_chunks(b"v", b"{"))

    def test_commands_without_protocol(self):
        """makeArguments/parseArguments and responses work with proto=None (asyncio client)."""
        box = commands.HookCreate.makeArguments(
            {"mailbox": "a", "event": "on_receive", "body": '{"cmd":["/bin/true"]}'}, None
        )
        self.assertEqual(
            commands.HookCreate.parseArguments(box, None),
            {"mailbox": "a", "event": "on_receive", "name": None, "body": '{"cmd":["/bin/true"]}'},
        )
        reply = commands.Version.makeResponse(
            {"tag": "1", "git_hash": "h", "target": "t", "build_date": "d"}, None
        )
        self.assertEqual(commands.Version.parseResponse(reply, None)["tag"], "1")

    def test_request_box_command_first(self):
        """Request boxes go on the wire C{_command}, C{_ask}, then the arguments sorted."""
        box = commands.MailboxCreate.makeArguments({"name": "x", "owner": "y"}, None)
        self.assertIsInstance(box, commands.RequestBox)
        # Keys below "_" (digits, capitals) would come first in Twisted's sorted order.
        box.update({b"0": b"", b"A": b"a", b"_ask": b"1", b"_command": b"MAILBOX-CREATE"})
        [parsed] = amp.parseString(box.serialize())
        self.assertEqual(list(parsed), [b"_command", b"_ask", b"0", b"A", b"name", b"owner"])
        self.assertEqual(parsed, box)
        self.assertEqual(commands.serialize_box({b"b": b"2", b"a": b"1"}),
                         amp.AmpBox({b"a": b"1", b"b": b"2"}).serialize())

    def test_request_box_limits(self):
        """Keys and values past AMP's limits, and text, are refused as by Twisted."""
        self.assertRaises(amp.TooLong, commands.serialize_box, {b"k" * 256: b""})
        self.assertRaises(amp.TooLong, commands.serialize_box, {b"k": b"v" * 65536})
        self.assertRaises(TypeError, commands.serialize_box, {"k": b""})
        self.assertRaises(TypeError, commands.serialize_box, {b"k": ""})

    def test_every_command_sends_request_boxes(self):
        """Every command builds its boxes as L{commands.RequestBox}."""
        for command in (commands.Send, commands.MarkRead, commands.MarkUnread,
                        commands.MailboxCreate, commands.MailboxDelete, commands.MailboxList,
                        commands.MailboxShow, commands.HookCreate, commands.HookDelete,
                        commands.HookList, commands.Version):
            self.assertIs(command.commandType, commands.RequestBox)

    def test_command_names(self):
        """AMP command names are the AIMX verbs."""
        self.assertEqual(
            sorted(c.commandName for c in (
                commands.Send, commands.MarkRead, commands.MarkUnread, commands.MailboxCreate,
                commands.MailboxDelete, commands.MailboxList, commands.MailboxShow,
                commands.HookCreate, commands.HookDelete, commands.HookList, commands.Version,
            )),
            sorted([b"SEND", b"MARK-READ", b"MARK-UNREAD", b"MAILBOX-CREATE",
                    b"MAILBOX-DELETE", b"MAILBOX-LIST", b"MAILBOX-SHOW", b"HOOK-CREATE",
                    b"HOOK-DELETE", b"HOOK-LIST", b"VERSION"]),
        )

    def test_error_map(self):
        """Every command declares the spec's fifteen error codes and POLICY (issue 18)."""
        codes = {b"MAILBOX", b"DOMAIN", b"SIGN", b"DELIVERY", b"TEMP", b"MALFORMED",
                 b"PROTOCOL", b"NOTFOUND", b"IO", b"VALIDATION", b"NONEMPTY", b"ECONFLICT",
                 b"EACCES", b"ENOENT", b"BODY_TOO_LARGE", b"POLICY"}
        self.assertEqual(set(commands.ERRORS.values()), codes)
        self.assertEqual(set(commands.MailboxCreate.allErrors.values()), codes)

    def test_imports(self):
        """commands.py imports only twisted.protocols.amp and aimx.errors (plus stdlib)."""
        with open(commands.__file__) as f:
            tree = ast.parse(f.read())
        modules = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                modules.add(node.module + "." + node.names[0].name)
        self.assertEqual(
            {m for m in modules if m.split(".")[0] in ("twisted", "aimx")},
            {"twisted.protocols.amp", "aimx.errors"},
        )

    def test_socket_path(self):
        """The socket lives in AIMX_RUNTIME_DIR, default /run/aimx."""
        self.assertEqual(socket_path({}), "/run/aimx/aimx.sock")
        self.assertEqual(socket_path({"AIMX_RUNTIME_DIR": "/x"}), "/x/aimx.sock")


class _Peer:
    """Both ends of L{amp.Descriptor} in one object: descriptors sent are received."""

    def __init__(self):
        self._descriptors = {}
        self._getDescriptor = self._descriptors.pop

    def _sendFileDescriptor(self, fd):
        self._descriptors[len(self._descriptors)] = fd
        return len(self._descriptors) - 1


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


class AttachmentsArgumentTests(SynchronousTestCase):
    def setUp(self):
        self.fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(2)]

    def tearDown(self):
        for fd in self.fds:
            if is_open(fd):
                os.close(fd)

    def test_round_trip(self):
        """Descriptors and their paths come back in order; absent is an empty list."""
        peer, strings = _Peer(), {}
        commands.Attachments().toBox(b"attachments", strings,
                                     {"attachments": list(zip(self.fds, ["/a", "/b"]))}, peer)
        self.assertEqual(strings, {b"attachments": b'[[0, "/a"], [1, "/b"]]'})
        objects = {}
        commands.Attachments().fromBox(b"attachments", strings, objects, peer)
        self.assertEqual(objects, {"attachments": list(zip(self.fds, ["/a", "/b"]))})
        objects = {}
        commands.Attachments().fromBox(b"attachments", {}, objects, peer)
        self.assertEqual(objects, {"attachments": []})

    def test_missing_descriptor(self):
        """An ordinal whose descriptor never came is MALFORMED; those claimed are closed."""
        peer = _Peer()
        peer._sendFileDescriptor(self.fds[0])
        e = self.assertRaises(
            amp.RemoteAmpError, commands.Attachments().fromBox, b"attachments",
            {b"attachments": b'[[0, "/a"], [1, "/b"]]'}, {}, peer)
        self.assertEqual((e.errorCode, e.description),
                         (b"MALFORMED", "the descriptor of attachment /b did not arrive"))
        self.assertFalse(is_open(self.fds[0]))

    def test_shape(self):
        """Not JSON, not pairs, or more than MAX_ATTACHMENTS: MALFORMED, nothing claimed."""
        many = json.dumps([[i, "/x"] for i in range(commands.MAX_ATTACHMENTS + 1)]).encode()
        for raw in (b"{", b'[[0]]', b'[["0", "/a"]]', b'[[0, ""]]', many):
            e = self.assertRaises(amp.RemoteAmpError, commands.Attachments().fromBox,
                                  b"attachments", {b"attachments": raw}, {}, _Peer())
            self.assertEqual(e.errorCode, b"MALFORMED")
