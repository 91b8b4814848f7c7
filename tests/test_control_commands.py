"""The control socket's wire API: value types, chunks, boxes, and the AMP commands made
from it (no protocol)."""

import ast
import inspect
import itertools
import json
import os

from twisted.protocols import amp
from twisted.trial.unittest import SynchronousTestCase

from aimx.control import commands, wire
from aimx.control.wire import (
    CHUNK,
    MESSAGE_CAP,
    BigBytes,
    BigUnicode,
    Flag,
    Json,
    MalformedResponse,
    Number,
    Text,
    decode_chunks,
    encode_chunks,
    socket_path,
)
from aimx.errors import MailboxError, MalformedError


def decode(kind, box, name=b"v"):
    return wire.decode_value(name, kind, box)


def encode(kind, value, name=b"v"):
    return wire.encode_value(name, kind, value)


def feed(data: bytes, cap: int = wire.ANSWER_CAP):
    """Read one box out of C{data} with L{wire.box_reader}; C{None} when it runs out."""
    steps = wire.box_reader(cap)
    try:
        wanted = next(steps)
        while True:
            if len(data) < wanted:
                return None
            chunk, data = data[:wanted], data[wanted:]
            wanted = steps.send(chunk)
    except StopIteration as done:
        return done.value


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
        e = self.assertRaises(MalformedError, f, *args, **kwargs)
        self.assertEqual(e.code, "MALFORMED")
        self.assertIn(reason, str(e))
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
        kind = dict(wire.Send.arguments)[b"message"]
        self.assertMalformed(
            "Content-Length 26214401 exceeds cap 26214400", decode, kind, box, b"message"
        )
        self.assertEqual(len(decode(kind, encode_chunks(b"message", b"a" * MESSAGE_CAP),
                                    b"message")), MESSAGE_CAP)

    def test_html_body_reason(self):
        """An oversized html_body names Html-Body-Length."""
        box = encode_chunks(b"html_body", b"a" * (MESSAGE_CAP + 1))
        kind = dict(wire.Send.arguments)[b"html_body"]
        self.assertMalformed("Html-Body-Length 26214401 exceeds cap 26214400",
                             decode, kind, box, b"html_body")


class ValueTests(SynchronousTestCase):
    assertMalformed = ChunkTests.assertMalformed

    def test_missing_required(self):
        """A required argument that is absent is MALFORMED, not a KeyError."""
        for kind in (Text(), BigBytes(10), BigUnicode(10)):
            self.assertMalformed("missing required argument: name", decode, kind, {}, b"name")

    def test_optional_absent(self):
        """Optional arguments decode to None; a Flag or a Number to its default."""
        self.assertIsNone(decode(Text(optional=True), {}))
        self.assertIsNone(decode(BigBytes(10, optional=True), {}))
        self.assertIs(decode(Flag(), {}), False)
        self.assertIs(decode(Flag(default=True), {}), True)
        self.assertIsNone(decode(Flag(None), {}))
        self.assertEqual(decode(Number(50), {}), 50)
        self.assertEqual(encode(Text(optional=True), None), {})

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

    def test_number(self):
        """Numbers are decimal and bounded; a sign, a fraction or more than most is MALFORMED."""
        self.assertEqual(decode(Number(0, most=200), encode(Number(0), 200)), 200)
        for raw in (b"201", b"-1", b"1.0", b"", b"99999999999"):
            self.assertMalformed("invalid v: expected a whole number from 0 to 200",
                                 decode, Number(0, most=200), {b"v": raw})

    def test_json(self):
        """JSON values round-trip past 64 KiB; bad JSON is MALFORMED."""
        rows = [{"name": "x" * 100, "n": i} for i in range(1000)]
        box = encode(Json(), rows)
        self.assertGreater(len(box), 2)
        self.assertEqual(decode(Json(), box), rows)
        self.assertMalformed("invalid JSON in v", decode, Json(), encode_chunks(b"v", b"{"))


class BoxTests(SynchronousTestCase):
    def test_request_command_first(self):
        """Requests go on the wire C{_command}, C{_ask}, then the arguments sorted;
        Twisted's parser reads them back."""
        data = wire.request_bytes(wire.MailboxCreate, {"name": "x", "owner": "y"}, b"7")
        [parsed] = amp.parseString(data)
        self.assertEqual(list(parsed), [b"_command", b"_ask", b"name", b"owner"])
        self.assertEqual(parsed, {b"_command": b"MAILBOX-CREATE", b"_ask": b"7",
                                  b"name": b"x", b"owner": b"y"})
        # Keys below "_" (digits, capitals) would come first in Twisted's sorted order.
        box = {b"0": b"", b"A": b"a", b"_ask": b"1", b"_command": b"C"}
        self.assertEqual(list(amp.parseString(wire.serialize_box(box))[0]),
                         [b"_command", b"_ask", b"0", b"A"])
        self.assertEqual(wire.serialize_box({b"b": b"2", b"a": b"1"}),
                         amp.AmpBox({b"a": b"1", b"b": b"2"}).serialize())

    def test_request_limits(self):
        """Keys and values past AMP's limits, and text, are refused."""
        self.assertRaises(wire.TooLong, wire.serialize_box, {b"k" * 256: b""})
        self.assertRaises(wire.TooLong, wire.serialize_box, {b"k": b"v" * 65536})
        self.assertRaises(TypeError, wire.serialize_box, {"k": b""})
        self.assertRaises(TypeError, wire.serialize_box, {b"k": ""})

    def test_unknown_argument(self):
        """An argument the command does not take is refused before anything is sent."""
        e = self.assertRaises(TypeError, wire.MailboxList.request, {"name": "x"})
        self.assertEqual(str(e), "MailboxList takes no argument 'name'")

    def test_reader_reads_twisted_boxes(self):
        """box_reader reads what Twisted serialised, a value of the maximum length included,
        and stops at the end of the first box."""
        box = amp.AmpBox({b"a": b"x" * 65535, b"b": b""})
        self.assertEqual(feed(box.serialize() + amp.AmpBox(c=b"2").serialize()), dict(box))

    def test_reader_garbage(self):
        """Bytes that are not AMP (a key over 255 bytes) are refused before more is read."""
        e = self.assertRaises(MalformedResponse, feed, b"HTTP/1.0 400 Bad Request\r\n\r\n")
        self.assertEqual(str(e), "not an AMP box (key of 18516 bytes)")

    def test_reader_cap(self):
        """A box larger than the cap is refused before its value is read."""
        data = amp.AmpBox(a=b"x" * 1000).serialize()
        e = self.assertRaises(MalformedResponse, feed, data[:8], 500)
        self.assertEqual(str(e), "box larger than 500 bytes")


class AnswerTests(SynchronousTestCase):
    def test_answer(self):
        """An answer to the request's tag gives the command's values."""
        box = {b"_answer": b"3", **wire.encode_value(b"mailboxes", Json(), [{"name": "a"}])}
        self.assertEqual(wire.read_answer(wire.MailboxList, box, b"3"),
                         {"mailboxes": [{"name": "a"}]})

    def test_error(self):
        """An error box becomes the daemon's error class, carrying its reason."""
        box = {b"_error": b"3", b"_error_code": b"MAILBOX",
               b"_error_description": "mailbox 'é' does not exist".encode()}
        e = self.assertRaises(MailboxError, wire.read_answer, wire.MailboxList, box, b"3")
        self.assertEqual(str(e), "mailbox 'é' does not exist")

    def test_not_an_answer(self):
        """Another tag, an unknown code or a value that does not decode: a malformed
        response."""
        for box, reason in (
            ({b"_answer": b"4", b"mailboxes": b"1", b"mailboxes.0": b"[]"},
             "the reply does not answer the command"),
            ({b"_error": b"3", b"_error_code": b"UNKNOWN", b"_error_description": b"boom"},
             "UNKNOWN boom"),
            ({b"_answer": b"3"}, "missing required argument: mailboxes"),
            ({b"_answer": b"3", b"mailboxes": b"1", b"mailboxes.0": b"["},
             "invalid JSON in mailboxes"),
        ):
            e = self.assertRaises(MalformedResponse, wire.read_answer, wire.MailboxList, box,
                                  b"3")
            self.assertIn(reason, str(e))


def _fields(pairs):
    return [(name, field.kind) for name, field in pairs]


class AmpCommandTests(SynchronousTestCase):
    """commands.py's AMP commands are the wire's commands: one description."""

    def test_every_wire_command_has_its_amp_command(self):
        """Each wire command has the AMP command of the same name, fields and value types;
        commands.py has no other command."""
        for command in wire.COMMANDS:
            made = getattr(commands, command.__name__)
            self.assertTrue(issubclass(made, amp.Command), command)
            self.assertEqual(made.commandName, command.commandName)
            self.assertEqual(_fields(made.arguments), command.arguments)
            self.assertEqual(_fields(made.response), command.response)
            self.assertEqual(made.__doc__, command.__doc__)
        made = {name for name, value in vars(commands).items()
                if inspect.isclass(value) and issubclass(value, amp.Command)
                and value is not commands._Command and value.__module__ == commands.__name__}
        self.assertEqual(made, {c.__name__ for c in wire.COMMANDS})
        declared = {name for name, value in vars(wire).items()
                    if inspect.isclass(value) and issubclass(value, wire.Command)
                    and value is not wire.Command}
        self.assertEqual(declared, {c.__name__ for c in wire.COMMANDS})

    def test_wire_request_parsed_by_amp(self):
        """What a Twisted-free client sends, the daemon's AMP command reads, values and
        defaults alike; an absent optional is None or the default on both sides."""
        arguments = {"mailbox": "box", "query": "a \"b c\"", "sender": "", "unread": True,
                     "limit": 200}
        box = wire.MailSearch.request(arguments)
        self.assertEqual(commands.MailSearch.parseArguments(box, None), {
            **arguments, "folder": None, "since": None, "until": None, "trusted": None})

    def test_amp_answer_read_by_wire(self):
        """What the daemon's AMP command answers, a Twisted-free client reads."""
        values = {"tag": "1", "git_hash": "h", "target": "t", "build_date": "d"}
        box = commands.Version.makeResponse(values, None)
        box[b"_answer"] = b"1"
        self.assertEqual(wire.read_answer(wire.Version, box, b"1"), values)
        rows = [{"id": "x" * 70_000}]
        box = commands.MailList.makeResponse({"emails": rows}, None)
        self.assertEqual(wire.MailList.answer(box), {"emails": rows})

    def test_malformed_is_an_amp_error(self):
        """A value the AMP command cannot decode is a MALFORMED RemoteAmpError, which AMP
        answers with that code instead of UNKNOWN and a dropped connection."""
        e = self.assertRaises(amp.RemoteAmpError, commands.MailList.parseArguments,
                              {b"mailbox": b"", b"limit": b"x"}, None)
        self.assertEqual((e.errorCode, e.description), (b"MALFORMED", "empty Mailbox value"))
        box = encode_chunks(b"message", b"a" * (MESSAGE_CAP + 1))
        e = self.assertRaises(amp.RemoteAmpError, commands.Send.parseArguments, box, None)
        self.assertIn("Content-Length 26214401 exceeds cap 26214400", e.description)

    def test_request_box(self):
        """Every AMP command builds its requests as L{commands.RequestBox}: C{_command} first."""
        for command in wire.COMMANDS:
            self.assertIs(getattr(commands, command.__name__).commandType, commands.RequestBox)
        box = commands.MailboxCreate.makeArguments({"name": "x", "owner": "y"}, None)
        box.update({b"0": b"", b"_ask": b"1", b"_command": b"MAILBOX-CREATE"})
        self.assertEqual(list(amp.parseString(box.serialize())[0])[:2], [b"_command", b"_ask"])

    def test_command_names(self):
        """Command names are the AIMX verbs."""
        self.assertEqual(
            sorted(c.commandName for c in wire.COMMANDS),
            sorted([b"SEND", b"HELD-LIST", b"HELD-SHOW", b"HELD-APPROVE", b"HELD-REJECT",
                    b"AUDIT-READ", b"MARK-READ", b"MARK-UNREAD", b"MAILBOX-CREATE",
                    b"MAILBOX-DELETE", b"MAILBOX-LIST", b"MAILBOX-SHOW", b"HOOK-CREATE",
                    b"HOOK-DELETE", b"HOOK-LIST", b"HOOK-ENABLE", b"HOOK-STATUS", b"HOOK-RETRY",
                    b"MAIL-LIST", b"MAIL-SEARCH", b"MAIL-THREAD",
                    b"INDEX-REBUILD", b"INDEX-STATUS", b"VERSION"]),
        )

    def test_error_map(self):
        """Every command declares the fifteen error codes of the control socket and POLICY."""
        codes = {b"MAILBOX", b"DOMAIN", b"SIGN", b"DELIVERY", b"TEMP", b"MALFORMED",
                 b"PROTOCOL", b"NOTFOUND", b"IO", b"VALIDATION", b"NONEMPTY", b"ECONFLICT",
                 b"EACCES", b"ENOENT", b"BODY_TOO_LARGE", b"POLICY"}
        self.assertEqual(set(wire.ERRORS.values()), codes)
        for command in wire.COMMANDS:
            self.assertEqual(set(getattr(commands, command.__name__).allErrors.values()), codes)


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


class AttachmentsTests(SynchronousTestCase):
    """SEND's open files: the box carries ordinals and paths, AMP the descriptors."""

    def setUp(self):
        self.fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(2)]

    def tearDown(self):
        for fd in self.fds:
            if is_open(fd):
                os.close(fd)

    def test_round_trip(self):
        """A client numbers the descriptors with its connection's count; the daemon's AMP
        command takes them back in order with their paths; absent is an empty list."""
        files = list(zip(self.fds, ["/a", "/b"]))
        sent = wire.SentDescriptors(itertools.count(5))
        box = wire.Send.request({"message": b"m", "attachments": files}, sent)
        self.assertEqual(box[b"attachments"], b'[[5, "/a"], [6, "/b"]]')
        self.assertEqual(sent.fds, self.fds)
        peer, amp_box = _Peer(), {}
        commands.Field(wire.Attachments()).toBox(b"attachments", amp_box,
                                                 {"attachments": files}, peer)
        self.assertEqual(amp_box, {b"attachments": b'[[0, "/a"], [1, "/b"]]'})
        message = {b"message": b"1", b"message.0": b"m"}
        self.assertEqual(commands.Send.parseArguments({**message, **amp_box}, peer)
                         ["attachments"], files)
        self.assertEqual(commands.Send.parseArguments(message, peer)["attachments"], [])
        self.assertEqual(wire.Send.request({"message": b"m", "attachments": []}), message)

    def test_missing_descriptor(self):
        """An ordinal whose descriptor never came is MALFORMED; those claimed are closed."""
        peer = _Peer()
        peer._sendFileDescriptor(self.fds[0])
        e = self.assertRaises(
            amp.RemoteAmpError, commands.Field(wire.Attachments()).fromBox, b"attachments",
            {b"attachments": b'[[0, "/a"], [1, "/b"]]'}, {}, peer)
        self.assertEqual((e.errorCode, e.description),
                         (b"MALFORMED", "the descriptor of attachment /b did not arrive"))
        self.assertFalse(is_open(self.fds[0]))

    def test_shape(self):
        """Not JSON, not pairs, or more than MAX_ATTACHMENTS: MALFORMED, nothing claimed."""
        many = json.dumps([[i, "/x"] for i in range(wire.MAX_ATTACHMENTS + 1)]).encode()
        for raw in (b"{", b'[[0]]', b'[["0", "/a"]]', b'[[0, ""]]', many):
            e = self.assertRaises(MalformedError, wire.decode_value, b"attachments",
                                  wire.Attachments(), {b"attachments": raw}, None)
            self.assertIn("attachments", str(e))


class ImportTests(SynchronousTestCase):
    def imported(self, module):
        with open(module.__file__) as f:
            tree = ast.parse(f.read())
        modules = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                modules |= {f"{node.module}.{alias.name}" for alias in node.names}
        return modules

    def test_wire(self):
        """wire.py imports no Twisted: of aimx, only aimx.errors (the clients without a
        reactor build on it)."""
        self.assertEqual({m for m in self.imported(wire) if m.split(".")[0] in ("twisted", "aimx")},
                         {"aimx.errors", "aimx.errors.AimxError", "aimx.errors.MalformedError"})

    def test_commands(self):
        """commands.py imports only twisted.protocols.amp, the wire and aimx.errors."""
        self.assertEqual(
            {m for m in self.imported(commands) if m.split(".")[0] in ("twisted", "aimx")},
            {"twisted.protocols.amp", "aimx.control.wire", "aimx.errors.MalformedError"},
        )

    def test_socket_path(self):
        """The socket lives in AIMX_RUNTIME_DIR, default /run/aimx."""
        self.assertEqual(socket_path({}), "/run/aimx/aimx.sock")
        self.assertEqual(socket_path({"AIMX_RUNTIME_DIR": "/x"}), "/x/aimx.sock")
