"""The control socket's AMP responders, authorisation and limits, over iosim.

The daemon side (L{ControlProtocol} + L{Control}) runs against scratch config and
data directories, fake passwd entries (alice 2001, bob 2002) and a task.Clock;
the peer uid is injected per connection.  Tests that create directories owned
by alice or bob need root (for chown).
"""

import datetime
import json
import os
import tomllib

import attrs
from twisted.internet import defer, protocol, task
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import TestCase

import aimx
from aimx.control import commands, wire
from aimx.control.amp import (
    BUFFER_BUDGET,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_UID,
    MAX_DESCRIPTORS,
    MAX_OTHER_BOX,
    MAX_REFUSED,
    ControlFactory,
    peer_credentials,
)
from aimx.control.ops import Caller, Control
from aimx.core import configedit, frontmatter
from aimx.errors import (
    AccessDenied,
    ConflictError,
    IOFailure,
    MailboxError,
    MalformedError,
    NoEntry,
    NonEmptyError,
    NotFoundError,
    ProtocolError,
    TempError,
    ValidationError,
)
from aimx.logs import event_line
from aimx.service import LiveConfig
from aimx.smtp.inbound import Inbound
from aimx.store import configfile
from aimx.testing import fakes
from aimx.testing.fakes import FakePasswd
from tests.test_control_commands import is_open

ROOT, ALICE, BOB = 0, 2001, 2002
JOHN = 2003
USERS = {"root": 0, "alice": ALICE, "bob": BOB, "aimx-catchall": 999, "John.Doe": JOHN}
NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
IS_ROOT = os.geteuid() == 0

#: alice and bob own their mailboxes; the catchall is aimx-catchall's.
MAILBOXES = {"alice": {"owner": "alice"}, "bob": {"owner": "bob"}}


def root_only(f):
    """Skip unless root: the test chowns directories to the fake users."""
    if not IS_ROOT:
        f.skip = "needs root to chown to the test users"
    return f


class RawClient(protocol.Protocol):
    """A client that sends raw bytes and keeps the replies."""

    received = b""

    def dataReceived(self, data):
        self.received += data

    def replies(self) -> list:
        return amp.parseString(self.received)


class Connection:
    def __init__(self, test, client, server, pump):
        self.test, self.client, self.server, self.pump = test, client, server, pump

    def send(self, command, **arguments) -> list:
        """callRemote; the outcome (value or Failure) lands in the returned list.

        Capturing it at once keeps AMP's own "unhandled" errback from seeing it.
        """
        outcome = []
        self.client.callRemote(command, **arguments).addBoth(outcome.append)
        return outcome

    def send_raw(self, command: bytes, arguments=None) -> list:
        """Send a command by name with raw byte values (bypassing argument encoding)."""
        outcome = []
        self.client.callRemoteString(command, **(arguments or {})).addBoth(outcome.append)
        return outcome

    def result(self, outcome: list):
        self.pump.flush()
        self.test.assertEqual(len(outcome), 1, "no answer")
        return outcome[0]

    @property
    def closed(self) -> bool:
        return self.server.transport is None

    def write(self, data: bytes):
        """Raw bytes from the client, delivered."""
        self.client.transport.write(data)
        self.pump.flush()

    def close(self):
        """The client hangs up."""
        self.client.transport.loseConnection()
        self.pump.flush()

    def call(self, command, **arguments):
        result = self.result(self.send(command, **arguments))
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def refused(self, error, command, **arguments) -> str:
        result = self.result(self.send(command, **arguments))
        self.test.assertIsInstance(result, Failure)
        self.test.assertIsInstance(result.value, error)
        return str(result.value)


class ControlTestCase(TestCase):
    def setUp(self):
        root = os.path.abspath(self.mktemp())
        self.config_dir = os.path.join(root, "etc")
        self.data_dir = os.path.join(root, "data")
        os.makedirs(self.config_dir)
        for sub in ("inbox", "sent"):
            os.makedirs(os.path.join(self.data_dir, sub))
        with open(self.config_path, "w") as f:
            f.write(fakes.config_text(data_dir=self.data_dir, mailboxes=MAILBOXES,
                                      catchall=True, owner="aimx-catchall"))
        config, _ = configfile.load(self.config_dir)
        for mb in ("alice", "bob", "catchall"):
            for sub in ("inbox", "sent"):
                path = os.path.join(self.data_dir, sub, mb)
                os.mkdir(path, 0o700)
                if IS_ROOT:
                    uid = USERS[config.mailbox(mb).owner]
                    os.chown(path, uid, uid)
        self.live = LiveConfig(config)
        self.clock = task.Clock()
        self.locks = {}
        self.control = Control(
            live=self.live,
            config_dir=self.config_dir,
            data_dir=self.data_dir,
            mailbox_lock=lambda name: self.locks.setdefault(name, defer.DeferredLock()),
            run_in_thread=self.run_in_thread,
            passwd=FakePasswd(USERS),
            now=lambda: NOW,
        )
        self.factory = ControlFactory(self.control, clock=self.clock)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def run_in_thread(self, f, *args):
        return defer.maybeDeferred(f, *args)

    def start_audit(self) -> None:
        """Give the daemon a running audit log (its start-up read done: owners read it)."""
        self.control.audit = fakes.audit_log(self, self.live, self.clock)

    @property
    def config_path(self):
        return os.path.join(self.config_dir, "config.toml")

    def connect(self, uid, pid=42, raw=False) -> Connection:
        """A connection from C{uid}; C{raw}: the client only records what it receives."""
        self.factory.credentials = lambda transport: Caller(uid=uid, pid=pid)
        client, server, pump = iosim.connectedServerAndClient(
            lambda: self.factory.buildProtocol(None), RawClient if raw else amp.AMP
        )
        return Connection(self, client, server, pump)

    def config_text(self) -> str:
        with open(self.config_path) as f:
            return f.read()

    def config_toml(self) -> dict:
        return tomllib.loads(self.config_text())

    def logged(self) -> str:
        return "\n".join(event_line(e, journal=True) for e in self.events)

    def inbox_file(self, mailbox, stem, body="Hi\n"):
        path = os.path.join(self.data_dir, "inbox", mailbox, stem + ".md")
        with open(path, "wb") as f:
            f.write(frontmatter.render({"id": stem, "subject": "s", "read": False}, body))
        return path


class ConnectionTests(ControlTestCase):
    def test_accept_logged(self):
        """Each connection logs its peer uid and pid (case 4)."""
        self.connect(ALICE, pid=4242)
        self.assertIn("<6>aimx.control: connection accepted peer_uid=2001 peer_pid=4242", self.logged())

    def test_version_any_uid(self):
        """VERSION answers every uid with its four fields (case 31)."""
        for uid in (ROOT, ALICE, 12345):
            reply = self.connect(uid).call(commands.Version)
            self.assertEqual(sorted(reply), ["build_date", "git_hash", "tag", "target"])
            self.assertEqual(reply["tag"], aimx.__version__)

    def test_no_peer_credentials(self):
        """Without SO_PEERCRED every command is EACCES and the reason is logged."""
        self.factory.credentials = peer_credentials  # iosim transports have no socket
        client, server, pump = iosim.connectedServerAndClient(
            lambda: self.factory.buildProtocol(None), amp.AMP
        )
        conn = Connection(self, client, server, pump)
        reason = conn.refused(AccessDenied, commands.Version)
        self.assertTrue(reason.startswith("peer cred unavailable: "))
        conn.refused(AccessDenied, commands.MailboxList)
        self.assertIn("<4>aimx.control: peer credentials unavailable reason=", self.logged())

    def test_unknown_command(self):
        """An unknown command is UNHANDLED; the connection stays usable (case 32)."""
        conn = self.connect(ALICE)

        class Nope(amp.Command):
            commandName = b"NOPE"

        result = conn.result(conn.send(Nope))
        self.assertIsInstance(result.value, amp.UnhandledCommand)
        self.assertIn("tag", conn.call(commands.Version))

    def test_send_exclusive_flags(self):
        """--text-only with --html-body is MALFORMED before anything else (outbound case 7)."""
        conn = self.connect(ALICE)
        reason = conn.refused(MalformedError, commands.Send, message=b"x", text_only=True,
                              html_body=b"<p>x</p>")
        self.assertEqual(reason, "AIMX/1 SEND: --text-only and --html-body are mutually exclusive")

    def test_oversize_message(self):
        """25 MiB + 1 is MALFORMED, a missing chunk too; the connection survives (case 33)."""
        conn = self.connect(ALICE)
        reason = conn.refused(MalformedError, commands.Send,
                              message=b"a" * (wire.MESSAGE_CAP + 1))
        self.assertIn("exceeds cap 26214400", reason)
        result = conn.result(conn.send_raw(b"SEND", {"message": b"2", "message.0": b"x"}))
        self.assertIn("missing chunk message.1", str(result.value))
        self.assertIn("tag", conn.call(commands.Version))

    def test_bad_arguments_keep_connection(self):
        """Missing or empty arguments are MALFORMED answers, not UNKNOWN (no disconnect)."""
        conn = self.connect(ROOT)
        failure = conn.result(conn.send_raw(b"MAILBOX-CREATE"))
        self.assertEqual(failure.value.errorCode, b"MALFORMED")
        self.assertIn("missing required argument: name", str(failure.value))
        reason = conn.refused(MalformedError, commands.MailboxCreate, name="", owner="alice")
        self.assertEqual(reason, "empty Name value")
        failure = conn.result(conn.send_raw(b"MAILBOX-CREATE", {"name": b"\xff"}))
        self.assertEqual(failure.value.errorCode, b"MALFORMED")
        self.assertIn("tag", conn.call(commands.Version))
        self.assertEqual(len(self.config_toml()["mailboxes"]), 3)

    def test_malformed_box(self):
        """A box without _command closes the connection and changes nothing."""
        conn = self.connect(ROOT)
        before = self.config_text()
        conn.client.transport.write(amp.AmpBox({b"name": b"x"}).serialize())
        conn.pump.flush()
        self.assertTrue(conn.closed)
        self.assertEqual(self.config_text(), before)
        self.assertIn('<5>aimx.control: connection dropped peer_uid=0 '
                      'reason="malformed box (not a command)"', self.logged())

    def test_box_too_large(self):
        """A box buffering more than the cap is dropped with its connection."""
        self.factory.max_box = 200_000
        conn = self.connect(ROOT)
        result = conn.result(conn.send(commands.Send, message=b"a" * 300_000))
        self.assertIsInstance(result, Failure)
        self.assertTrue(conn.closed)
        self.assertIn('reason="box too large" limit=200000', self.logged())

    def test_request_timeout(self):
        """No complete box within the timeout: closed without a reply (case 3)."""
        conn = self.connect(ALICE)
        conn.client.transport.write(b"\x00\x04_ask\x00\x01")  # a partial box
        conn.pump.flush()
        self.clock.advance(29)
        conn.pump.flush()
        self.assertFalse(conn.closed)
        self.clock.advance(1)
        conn.pump.flush()
        self.assertTrue(conn.closed)
        self.assertIn("<6>aimx.control: request timed out, connection dropped peer_uid=2001 timeout_s=30", self.logged())

    def test_timeout_restarts_after_answer(self):
        """Each answer restarts the timer."""
        conn = self.connect(ROOT)
        self.clock.advance(20)
        self.assertIn("tag", conn.call(commands.Version))
        self.clock.advance(20)
        conn.pump.flush()
        self.assertFalse(conn.closed)
        self.clock.advance(10)
        conn.pump.flush()
        self.assertTrue(conn.closed)

    def test_timeout_suspended_while_running(self):
        """A command running longer than the timeout keeps its connection."""
        running = defer.Deferred()
        self.control.mailbox_list = lambda caller: running
        conn = self.connect(ROOT)
        outcome = conn.send(commands.MailboxList)
        conn.pump.flush()
        self.clock.advance(100)
        conn.pump.flush()
        self.assertFalse(conn.closed)
        running.callback([])
        self.assertEqual(conn.result(outcome), {"mailboxes": []})
        self.clock.advance(30)
        conn.pump.flush()
        self.assertTrue(conn.closed)

    def test_unexpected_error_is_io(self):
        """A crash inside a command is answered IO, logged, and the connection survives."""
        self.control.hook_list = lambda caller: 1 / 0
        conn = self.connect(ROOT)
        reason = conn.refused(IOFailure, commands.HookList)
        self.assertIn("internal error: division by zero", reason)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertIn("tag", conn.call(commands.Version))

    def test_long_reason_truncated(self):
        """An error reason longer than one AMP value is cut to fit."""
        conn = self.connect(ROOT)
        body = json.dumps({"cmd": ["x" * 70_000]})
        reason = conn.refused(ValidationError, commands.HookCreate, mailbox="alice",
                              event="on_receive", body=body)
        self.assertTrue(reason.startswith("hook has non-absolute `cmd[0]` 'xxx"))
        self.assertLessEqual(len(reason.encode()), amp.MAX_VALUE_LENGTH)


class MarkTests(ControlTestCase):
    def test_authorisation(self):
        """Owner and root pass authz (NOTFOUND for a missing id); bob is EACCES (case 6)."""
        for uid, error in ((ALICE, NotFoundError), (BOB, AccessDenied), (ROOT, NotFoundError)):
            reason = self.connect(uid).refused(error, commands.MarkRead, mailbox="alice",
                                               id="2026-01-01-nothing")
            if error is AccessDenied:
                self.assertEqual(reason, "not authorized")
            else:
                self.assertEqual(reason, "email '2026-01-01-nothing' not found in inbox/alice")

    def test_mark_read_unread(self):
        """MARK-READ sets read/read_at, body unchanged, 0600; MARK-UNREAD undoes (case 7)."""
        path = self.inbox_file("alice", "2026-01-01-000000-hi", body="Body +++\n+++\nstays\n")
        with open(path, "rb") as f:
            _, body = frontmatter.parse(f.read())
        conn = self.connect(ALICE)
        conn.call(commands.MarkRead, mailbox="alice", id="2026-01-01-000000-hi")
        with open(path, "rb") as f:
            fields, after = frontmatter.parse(f.read())
        self.assertEqual((fields["read"], fields["read_at"]), (True, "2026-01-02T03:04:05Z"))
        self.assertEqual(after, body)
        st = os.stat(path)
        self.assertEqual(st.st_mode & 0o777, 0o600)
        if IS_ROOT:
            self.assertEqual((st.st_uid, st.st_gid), (ALICE, ALICE))
        conn.call(commands.MarkUnread, mailbox="alice", id="2026-01-01-000000-hi")
        with open(path, "rb") as f:
            fields, _ = frontmatter.parse(f.read())
        self.assertIs(fields["read"], False)
        self.assertNotIn("read_at", fields)

    def test_bundle(self):
        """A bundle's <id>/<id>.md is marked."""
        os.makedirs(os.path.join(self.data_dir, "inbox", "alice", "b"))
        path = self.inbox_file("alice", "b/b")
        self.connect(ROOT).call(commands.MarkRead, mailbox="alice", id="b")
        with open(path, "rb") as f:
            self.assertIs(frontmatter.parse(f.read())[0]["read"], True)

    def test_bad_ids_and_mailboxes(self):
        """Bad ids are NOTFOUND before anything; an unknown mailbox is ENOENT (case 8)."""
        conn = self.connect(ALICE)
        for bad in ("../x", "../../etc/passwd", "a/b", "a\\b", "a\x00", ".."):
            reason = conn.refused(NotFoundError, commands.MarkRead, mailbox="bob", id=bad)
            self.assertEqual(reason, f"email id '{bad}' contains invalid characters")
        reason = conn.refused(NoEntry, commands.MarkUnread, mailbox="ghost", id="x")
        self.assertEqual(reason, "mailbox 'ghost' does not exist")
        self.assertEqual(conn.refused(MalformedError, commands.MarkRead, mailbox="", id="x"),
                         "empty Mailbox value")
        self.assertEqual(conn.refused(MalformedError, commands.MarkRead, mailbox="a", id=""),
                         "empty Id value")

    def test_orphan_owner_hidden(self):
        """A mailbox whose owner does not resolve is ENOENT for non-root callers."""
        self.live.current = attrs.evolve(
            self.live.current,
            mailboxes=[attrs.evolve(mb, owner="ghostuser") if mb.name == "bob"
                       else mb for mb in self.live.current.mailboxes],
        )
        self.connect(BOB).refused(NoEntry, commands.MarkRead, mailbox="bob", id="x")

    def test_symlink(self):
        """A symlinked email is NOTFOUND, the target untouched, the probe logged (case 9)."""
        outside = os.path.abspath(self.mktemp())
        with open(outside, "wb") as f:
            f.write(b"+++\nread = false\n+++\nsecret\n")
        os.symlink(outside, os.path.join(self.data_dir, "inbox", "alice", "evil.md"))
        self.connect(ALICE).refused(NotFoundError, commands.MarkRead, mailbox="alice", id="evil")
        with open(outside, "rb") as f:
            self.assertEqual(f.read(), b"+++\nread = false\n+++\nsecret\n")
        self.assertIn("<5>aimx.control: email path refused verb=MARK-READ mailbox=alice "
                      "id=evil reason=symlink_or_escape", self.logged())

    def test_symlinked_bundle_dir(self):
        """<id>/ replaced by a symlink to a directory outside: NOTFOUND, nothing outside changes."""
        outside = os.path.abspath(self.mktemp())
        os.makedirs(outside)
        secret = os.path.join(outside, "evil.md")
        with open(secret, "wb") as f:
            f.write(b"+++\nread = false\n+++\nsecret\n")
        os.chmod(secret, 0o600)
        os.symlink(outside, os.path.join(self.data_dir, "inbox", "alice", "evil"))
        reason = self.connect(ALICE).refused(NotFoundError, commands.MarkRead, mailbox="alice",
                                             id="evil")
        self.assertEqual(reason, "email 'evil' not found in inbox/alice")
        with open(secret, "rb") as f:
            self.assertEqual(f.read(), b"+++\nread = false\n+++\nsecret\n")
        self.assertEqual(os.listdir(outside), ["evil.md"])
        self.assertEqual(os.stat(secret).st_uid, os.geteuid())
        self.assertIn("<5>aimx.control: email path refused verb=MARK-READ mailbox=alice "
                      "id=evil reason=symlink_or_escape", self.logged())

    def test_hard_link(self):
        """A hard-linked <id>.md (st_nlink 2) is NOTFOUND and both names keep their bytes."""
        outside = os.path.abspath(self.mktemp())
        with open(outside, "wb") as f:
            f.write(b"+++\nread = false\n+++\nsecret\n")
        os.link(outside, os.path.join(self.data_dir, "inbox", "alice", "hl.md"))
        self.connect(ALICE).refused(NotFoundError, commands.MarkRead, mailbox="alice", id="hl")
        with open(outside, "rb") as f:
            self.assertEqual(f.read(), b"+++\nread = false\n+++\nsecret\n")
        self.assertEqual(os.stat(outside).st_nlink, 2)

    def test_inbox_dir_missing(self):
        """A missing mailbox directory is NOTFOUND for the id, not an internal error."""
        os.rmdir(os.path.join(self.data_dir, "inbox", "alice"))
        self.connect(ALICE).refused(NotFoundError, commands.MarkRead, mailbox="alice", id="x")

    def hold(self, name):
        """Acquire the mailbox lock as a concurrent writer would."""
        lock = self.locks.setdefault(name, defer.DeferredLock())
        lock.acquire()
        return lock

    def give_alice_to_bob(self):
        """What a root delete + re-create of `alice` for bob does to the live config."""
        self.live.current = attrs.evolve(
            self.live.current,
            mailboxes=[attrs.evolve(mb, owner="bob", hooks=()) if mb.name == "alice"
                       else mb for mb in self.live.current.mailboxes],
        )

    def test_recheck_under_lock(self):
        """Authz is redone under the lock: an owner change while waiting refuses alice."""
        path = self.inbox_file("alice", "m1")
        with open(path, "rb") as f:
            before = f.read()
        lock = self.hold("alice")
        conn = self.connect(ALICE)
        outcome = conn.send(commands.MarkRead, mailbox="alice", id="m1")
        conn.pump.flush()
        self.assertEqual(outcome, [])
        self.give_alice_to_bob()
        lock.release()
        result = conn.result(outcome)
        self.assertIsInstance(result, Failure)
        self.assertIsInstance(result.value, NoEntry)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), before)

    @root_only
    def test_recheck_uses_current_owner(self):
        """Root's MARK chowns to the owner in the config current under the lock."""
        path = self.inbox_file("alice", "m2")
        lock = self.hold("alice")
        conn = self.connect(ROOT)
        outcome = conn.send(commands.MarkRead, mailbox="alice", id="m2")
        conn.pump.flush()
        self.give_alice_to_bob()
        lock.release()
        self.assertEqual(conn.result(outcome), {})
        self.assertEqual(os.stat(path).st_uid, BOB)


class MailboxCreateTests(ControlTestCase):
    @root_only
    def test_owner_forced(self):
        """A non-root caller owns what it creates, whatever owner it asks for (case 10)."""
        reply = self.connect(ALICE).call(commands.MailboxCreate, name="alicemade", owner="bob")
        self.assertEqual(reply, {"address": "alicemade@test.local"})
        for sub in ("inbox", "sent"):
            st = os.stat(os.path.join(self.data_dir, sub, "alicemade"))
            self.assertEqual((st.st_uid, st.st_gid, st.st_mode & 0o777), (ALICE, ALICE, 0o700))
        self.assertEqual(self.config_toml()["mailboxes"]["alicemade"],
                         {"address": "alicemade@test.local", "owner": "alice"})
        self.assertEqual(self.live.current.mailbox("alicemade").owner, "alice")

    @root_only
    def test_root_names_owner(self):
        """Root creates for a named owner; without one it is VALIDATION (case 11)."""
        conn = self.connect(ROOT)
        conn.call(commands.MailboxCreate, name="freshmbx", owner="alice")
        self.assertEqual(os.stat(os.path.join(self.data_dir, "inbox", "freshmbx")).st_uid, ALICE)
        reason = conn.refused(ValidationError, commands.MailboxCreate, name="other")
        self.assertEqual(reason, "MAILBOX-CREATE requires an Owner: header")
        self.assertIn("unknown owner 'nosuch'", conn.refused(
            ValidationError, commands.MailboxCreate, name="other", owner="nosuch"))
        self.assertIn("can only be configured by hand", conn.refused(
            ValidationError, commands.MailboxCreate, name="other", owner="root"))

    def test_bad_names(self):
        """Reserved and malformed names and owners are refused; nothing on disk (case 12)."""
        before = self.config_text()
        listing = sorted(os.listdir(os.path.join(self.data_dir, "inbox")))
        conn = self.connect(ALICE)
        for name in ("catchall", "aimx-catchall"):
            self.assertIn("reserved", conn.refused(ValidationError, commands.MailboxCreate,
                                                   name=name))
        for name in ("..", "a/b", ".x", "Foo", "a\x00b", "../etc"):
            conn.refused(ValidationError, commands.MailboxCreate, name=name)
        self.assertEqual(conn.refused(MalformedError, commands.MailboxCreate, name=""),
                         "empty Name value")
        self.assertIn('invalid Owner value: "bad owner"', conn.refused(
            MalformedError, commands.MailboxCreate, name="ok", owner="bad owner"))
        self.assertEqual(self.config_text(), before)
        self.assertEqual(sorted(os.listdir(os.path.join(self.data_dir, "inbox"))), listing)

    def test_role_name_non_root(self):
        """A non-root caller cannot create a role address: VALIDATION naming why; logged."""
        before = self.config_text()
        listing = sorted(os.listdir(os.path.join(self.data_dir, "inbox")))
        conn = self.connect(ALICE)
        self.assertEqual(
            conn.refused(ValidationError, commands.MailboxCreate, name="postmaster"),
            "mailbox name 'postmaster' is a role address (RFC 2142); only root can create it",
        )
        for name in ("abuse", "hostmaster", "webmaster", "security", "noc"):
            self.assertIn("is a role address (RFC 2142); only root can create it",
                          conn.refused(ValidationError, commands.MailboxCreate, name=name))
        for name in ("mailer-daemon", "root", "admin"):
            self.assertEqual(
                conn.refused(ValidationError, commands.MailboxCreate, name=name, owner="alice"),
                f"mailbox name '{name}' is a role address (system name); only root can "
                "create it",
            )
        # Upper case never gets this far: the name rule refuses it first, for everyone.
        self.assertIn("invalid character 'P'", conn.refused(
            ValidationError, commands.MailboxCreate, name="Postmaster"))
        self.assertEqual(self.config_text(), before)
        self.assertEqual(sorted(os.listdir(os.path.join(self.data_dir, "inbox"))), listing)
        self.assertIsNone(self.live.current.mailbox("postmaster"))
        self.assertIn("<5>aimx.control: authorization verb=MAILBOX-CREATE caller_uid=2001 "
                      "caller_username=alice mailbox=postmaster decision=reject "
                      "reason=\"mailbox name 'postmaster' is a role address", self.logged())

    @root_only
    def test_role_name_root(self):
        """Root creates a role mailbox for any owner; a near-miss is anyone's."""
        conn = self.connect(ROOT)
        self.assertEqual(conn.call(commands.MailboxCreate, name="postmaster", owner="alice"),
                         {"address": "postmaster@test.local"})
        conn.call(commands.MailboxCreate, name="abuse", owner="bob")
        self.assertEqual(self.config_toml()["mailboxes"]["postmaster"],
                         {"address": "postmaster@test.local", "owner": "alice"})
        self.assertEqual(self.live.current.mailbox("abuse").owner, "bob")
        self.assertEqual(self.connect(ALICE).call(commands.MailboxCreate, name="admins"),
                         {"address": "admins@test.local"})

    def test_existing_role_mailbox(self):
        """A role mailbox already in config.toml follows its ownership like any other."""
        self.live.current = configedit.add_mailbox(self.live.current, "postmaster", "alice")
        alice = self.connect(ALICE)
        self.assertEqual(alice.call(commands.MailboxShow, name="postmaster")["mailbox"]["name"],
                         "postmaster")
        alice.call(commands.HookCreate, mailbox="postmaster", event="on_receive",
                   name="pm_hook", body='{"cmd": ["/bin/true"]}')
        self.assertEqual([h["name"] for h in
                          self.config_toml()["mailboxes"]["postmaster"]["hooks"]], ["pm_hook"])
        self.assertEqual(self.connect(BOB).refused(
            MailboxError, commands.MailboxShow, name="postmaster"),
            "mailbox 'postmaster' does not exist")
        alice.call(commands.MailboxDelete, name="postmaster")
        self.assertNotIn("postmaster", self.config_toml()["mailboxes"])

    def test_invalid_caller_username(self):
        """A caller whose username breaks the owner rule is VALIDATION; nothing written."""
        before = self.config_text()
        listing = sorted(os.listdir(os.path.join(self.data_dir, "inbox")))
        reason = self.connect(JOHN).refused(ValidationError, commands.MailboxCreate, name="jd")
        self.assertIn("owner 'John.Doe' is not a valid mailbox owner", reason)
        self.assertEqual(self.config_text(), before)
        self.assertEqual(sorted(os.listdir(os.path.join(self.data_dir, "inbox"))), listing)
        self.assertIsNone(self.live.current.mailbox("jd"))

    def test_commit_validates(self):
        """A rewrite that config load would refuse is VALIDATION; file and live unchanged."""
        self.live.current = attrs.evolve(
            self.live.current,
            mailboxes=[attrs.evolve(mb, owner="Bad.Owner") if mb.name == "bob"
                       else mb for mb in self.live.current.mailboxes],
        )
        live = self.live.current
        before = self.config_text()
        reason = self.connect(ROOT).refused(ValidationError, commands.HookCreate,
                                            mailbox="alice", event="on_receive", name="h",
                                            body='{"cmd": ["/bin/true"]}')
        self.assertIn("refusing to write an invalid config", reason)
        self.assertIn("invalid owner 'Bad.Owner'", reason)
        self.assertEqual(self.config_text(), before)
        self.assertIs(self.live.current, live)

    def test_unknown_caller(self):
        """A non-root uid without a passwd entry cannot create."""
        reason = self.connect(4242).refused(ValidationError, commands.MailboxCreate, name="x")
        self.assertEqual(reason, "uid 4242 has no passwd entry")

    @root_only
    def test_duplicate(self):
        """Creating a configured name is MAILBOX `already exists` (case 14)."""
        conn = self.connect(ALICE)
        conn.call(commands.MailboxCreate, name="eve")
        self.assertEqual(conn.refused(MailboxError, commands.MailboxCreate, name="eve"),
                         "mailbox 'eve' already exists")
        self.assertEqual(self.connect(BOB).refused(MailboxError, commands.MailboxCreate,
                                                   name="alice"),
                         "mailbox 'alice' already exists")

    @root_only
    def test_conflict(self):
        """A pre-existing dir of another uid is ECONFLICT, untouched, not configured (case 15)."""
        inbox = os.path.join(self.data_dir, "inbox", "zed")
        os.mkdir(inbox)
        os.chmod(inbox, 0o750)
        os.chown(inbox, BOB, BOB)
        with open(os.path.join(inbox, "keep"), "w") as f:
            f.write("x")
        reason = self.connect(ALICE).refused(ConflictError, commands.MailboxCreate, name="zed")
        self.assertIn(f"already exists with owner {BOB}:{BOB}, expected {ALICE}:{ALICE}", reason)
        st = os.stat(inbox)
        self.assertEqual((st.st_uid, st.st_mode & 0o777), (BOB, 0o750))
        self.assertEqual(os.listdir(inbox), ["keep"])
        self.assertNotIn("zed", self.config_toml()["mailboxes"])
        self.assertFalse(os.path.exists(os.path.join(self.data_dir, "sent", "zed")))

    @root_only
    def test_adopt_after_delete(self):
        """create -> delete -> create works: matching dirs are adopted."""
        conn = self.connect(ALICE)
        conn.call(commands.MailboxCreate, name="eve")
        conn.call(commands.MailboxDelete, name="eve")
        conn.call(commands.MailboxCreate, name="eve")
        self.assertIn("eve", self.config_toml()["mailboxes"])

    @root_only
    def test_write_failure(self):
        """A failed config rewrite is IO; live config unchanged, new dirs removed (case 16)."""
        os.mkdir(os.path.join(self.config_dir, f".config.toml.tmp.{os.getpid()}"))
        before = self.config_text()
        conn = self.connect(ALICE)
        reason = conn.refused(IOFailure, commands.MailboxCreate, name="eve")
        self.assertIn(f"failed to write {self.config_path}: ", reason)
        self.assertEqual(self.config_text(), before)
        self.assertNotIn("eve", [r["name"] for r in conn.call(commands.MailboxList)["mailboxes"]])
        for sub in ("inbox", "sent"):
            self.assertFalse(os.path.exists(os.path.join(self.data_dir, sub, "eve")))

    @root_only
    def test_concurrent(self):
        """Two creates in flight at once both land in config.toml and the list (case 17)."""
        self.run_in_thread = lambda f, *args: task.deferLater(self.clock, 1, f, *args)
        self.control.run_in_thread = self.run_in_thread
        a, b = self.connect(ROOT), self.connect(ROOT)
        da = a.send(commands.MailboxCreate, name="a", owner="alice")
        db = b.send(commands.MailboxCreate, name="b", owner="bob")
        for _ in range(10):
            a.pump.flush()
            b.pump.flush()
            self.clock.advance(1)
        a.pump.flush()
        b.pump.flush()
        self.assertEqual(da, [{"address": "a@test.local"}])
        self.assertEqual(db, [{"address": "b@test.local"}])
        self.assertTrue({"a", "b"} <= set(self.config_toml()["mailboxes"]))
        conn = self.connect(ROOT)
        listing = conn.send(commands.MailboxList)
        conn.pump.flush()
        self.clock.advance(1)
        names = [r["name"] for r in conn.result(listing)["mailboxes"]]
        self.assertTrue({"a", "b"} <= set(names))


class MailboxDeleteTests(ControlTestCase):
    def test_nonempty_then_empty(self):
        """Files block a delete (NONEMPTY with counts); once empty it goes (case 18)."""
        path = self.inbox_file("bob", "2026-01-01-000000-x")
        conn = self.connect(BOB)
        reason = conn.refused(NonEmptyError, commands.MailboxDelete, name="bob")
        self.assertEqual(reason, "mailbox 'bob' has 1 files (1 in inbox, 0 in sent); "
                                 "archive or remove them first")
        self.assertIn("bob", self.config_toml()["mailboxes"])
        os.unlink(path)
        conn.call(commands.MailboxDelete, name="bob")
        self.assertNotIn("bob", self.config_toml()["mailboxes"])
        self.assertIsNone(self.live.current.mailbox("bob"))
        self.assertTrue(os.path.isdir(os.path.join(self.data_dir, "inbox", "bob")))

    def test_force(self):
        """force empties both dirs (bundles, dotfiles) and unregisters (case 19)."""
        self.inbox_file("bob", "m1")
        os.makedirs(os.path.join(self.data_dir, "inbox", "bob", "b1"))
        with open(os.path.join(self.data_dir, "sent", "bob", ".x"), "w"):
            pass
        self.connect(BOB).call(commands.MailboxDelete, name="bob", force=True)
        self.assertEqual(os.listdir(os.path.join(self.data_dir, "inbox", "bob")), [])
        self.assertEqual(os.listdir(os.path.join(self.data_dir, "sent", "bob")), [])
        self.assertNotIn("bob", self.config_toml()["mailboxes"])

    def test_not_owned_looks_absent(self):
        """Another's mailbox and a missing one answer byte-identically (case 20)."""
        conn = self.connect(BOB)
        self.inbox_file("alice", "m1")
        theirs = conn.refused(MailboxError, commands.MailboxDelete, name="alice", force=True)
        missing = conn.refused(MailboxError, commands.MailboxDelete,
                               name="definitely-not-a-mailbox")
        self.assertEqual(theirs, "mailbox 'alice' does not exist")
        self.assertEqual(missing, "mailbox 'definitely-not-a-mailbox' does not exist")
        self.assertEqual(os.listdir(os.path.join(self.data_dir, "inbox", "alice")), ["m1.md"])
        self.assertIn("alice", self.config_toml()["mailboxes"])
        self.assertIn("decision=reject reason=\"caller 'bob' is not the owner of mailbox "
                      "'alice'", self.logged())

    def test_catchall(self):
        """The catchall cannot be deleted, with or without force (case 21)."""
        before = self.config_text()
        for force in (False, True):
            self.assertIn("reserved", self.connect(ROOT).refused(
                ValidationError, commands.MailboxDelete, name="catchall", force=force))
        self.assertEqual(self.config_text(), before)

    def test_catchall_by_address(self):
        """A catchall under another name is refused too (after authorisation)."""
        self.live.current = attrs.evolve(
            self.live.current,
            mailboxes=[attrs.evolve(mb, name="fallback") if mb.name == "catchall"
                       else mb for mb in self.live.current.mailboxes],
        )
        reason = self.connect(ROOT).refused(ValidationError, commands.MailboxDelete,
                                            name="fallback")
        self.assertIn("is the catchall", reason)

    def test_bad_names(self):
        """Names with / or .. are VALIDATION and nothing is removed."""
        for name in ("../alice", "a/b", ".."):
            self.connect(ROOT).refused(ValidationError, commands.MailboxDelete, name=name)
        self.assertEqual(len(self.config_toml()["mailboxes"]), 3)


class ListingTests(ControlTestCase):
    def test_filtered(self):
        """alice sees only alice; root sees all; the row keys are the spec's (case 22)."""
        self.inbox_file("alice", "m1")
        rows = self.connect(ALICE).call(commands.MailboxList)["mailboxes"]
        self.assertEqual([r["name"] for r in rows], ["alice"])
        self.assertEqual(rows[0], {
            "name": "alice", "address": "alice@test.local",
            "inbox_path": os.path.join(self.data_dir, "inbox", "alice"),
            "sent_path": os.path.join(self.data_dir, "sent", "alice"),
            "total": 1, "unread": 1, "sent_count": 0, "registered": True,
        })
        rows = self.connect(ROOT).call(commands.MailboxList)["mailboxes"]
        self.assertEqual([r["name"] for r in rows], ["alice", "bob", "catchall"])
        self.assertEqual(self.connect(12345).call(commands.MailboxList), {"mailboxes": []})

    @root_only
    def test_stray_dir(self):
        """An unregistered dir owned by alice is listed for her, address null (case 23)."""
        path = os.path.join(self.data_dir, "inbox", "orphan")
        os.mkdir(path)
        os.chown(path, ALICE, ALICE)
        rows = self.connect(ALICE).call(commands.MailboxList)["mailboxes"]
        orphan = [r for r in rows if r["name"] == "orphan"]
        self.assertEqual((orphan[0]["address"], orphan[0]["registered"]), (None, False))
        names = [r["name"] for r in self.connect(BOB).call(commands.MailboxList)["mailboxes"]]
        self.assertEqual(names, ["bob"])

    def test_large_listing(self):
        """A listing larger than one AMP value arrives whole (chunked)."""
        for i in range(800):
            os.mkdir(os.path.join(self.data_dir, "inbox", f"stray-{i:04d}-" + "x" * 40))
        rows = self.connect(ROOT).call(commands.MailboxList)["mailboxes"]
        self.assertEqual(len(rows), 803)
        self.assertGreater(len(json.dumps(rows)), amp.MAX_VALUE_LENGTH)

    def test_show(self):
        """Show gives the effective settings, hooks and counts to the owner only."""
        self.inbox_file("alice", "m1")
        conn = self.connect(ALICE)
        conn.call(commands.HookCreate, mailbox="alice", event="on_receive", name="h",
                  body='{"cmd": ["/bin/true"]}')
        shown = conn.call(commands.MailboxShow, name="alice")["mailbox"]
        self.assertEqual(
            (shown["owner"], shown["trust"], shown["trusted_senders"], shown["inbox_total"],
             shown["inbox_unread"], shown["sent_total"], [h["name"] for h in shown["hooks"]]),
            ("alice", "none", [], 1, 1, 0, ["h"]),
        )
        for name in ("alice", "ghost"):
            self.assertEqual(self.connect(BOB).refused(MailboxError, commands.MailboxShow,
                                                       name=name),
                             f"mailbox '{name}' does not exist")


class HookTests(ControlTestCase):
    BODY = '{"cmd": ["/bin/true"]}'

    def test_create_authorisation(self):
        """Owner and root may hook a mailbox; bob is EACCES (case 24)."""
        reply = self.connect(ALICE).call(commands.HookCreate, mailbox="alice",
                                         event="on_receive", name="alice_owner_ok",
                                         body=self.BODY)
        self.assertEqual(reply, {"name": "alice_owner_ok", "secret": None})
        self.assertEqual(self.connect(BOB).refused(
            AccessDenied, commands.HookCreate, mailbox="alice", event="on_receive",
            name="bob_try", body=self.BODY), "not authorized")
        self.connect(ROOT).call(commands.HookCreate, mailbox="alice", event="after_send",
                                name="root_ok", body=self.BODY)
        names = [h["name"] for h in self.config_toml()["mailboxes"]["alice"]["hooks"]]
        self.assertEqual(names, ["alice_owner_ok", "root_ok"])
        self.assertIn("<6>aimx.hook: hook created verb=HOOK-CREATE mailbox=alice "
                      "hook_name=alice_owner_ok caller_uid=2001", self.logged())
        self.assertEqual([h.name for h in self.live.current.mailbox("alice").hooks],
                         ["alice_owner_ok", "root_ok"])

    def test_absent_and_catchall(self):
        """ENOENT for a missing mailbox; MAILBOX for the catchall (case 25)."""
        self.assertEqual(self.connect(BOB).refused(
            NoEntry, commands.HookCreate, mailbox="ghost", event="on_receive", body=self.BODY),
            "mailbox 'ghost' does not exist")
        reason = self.connect(ROOT).refused(MailboxError, commands.HookCreate,
                                            mailbox="catchall", event="on_receive",
                                            body=self.BODY)
        self.assertIn("hooks on the catchall are forbidden", reason)

    def test_bad_requests(self):
        """Every bad hook request gets its error and config.toml is unchanged (case 26)."""
        before = self.config_text()
        conn = self.connect(ALICE)

        def refused(error, body=self.BODY, event="on_receive", name=None):
            return conn.refused(error, commands.HookCreate, mailbox="alice", event=event,
                                name=name, body=body)

        self.assertIn("non-absolute", refused(ValidationError, '{"cmd": ["echo"]}'))
        self.assertIn("empty", refused(ValidationError, '{"cmd": []}'))
        self.assertIn("invalid event 'on_send'", refused(ValidationError, event="on_send"))
        refused(ValidationError, name="-bad")
        self.assertIn("exceeds the max of 600",
                      refused(ValidationError, '{"cmd": ["/bin/true"], "timeout_secs": 601}'))
        refused(ValidationError, '{"cmd": ["/bin/true"], "timeout_secs": 0}')
        self.assertIn("`on_receive` only", refused(
            ValidationError, '{"cmd": ["/bin/true"], "fire_on_untrusted": true}',
            event="after_send"))
        reason = refused(ProtocolError, '{"cmd": ["/bin/true"], "template": "x"}')
        self.assertIn("template", reason)
        self.assertIn("docs/hooks.md", reason)
        self.assertIn("stdin", refused(ProtocolError, '{"cmd": ["/bin/true"], "stdin": "email"}'))
        self.assertIn("invalid HOOK-CREATE body",
                      refused(ProtocolError, '{"cmd": ["/bin/true"], "foo": 1}'))
        self.assertIn("invalid HOOK-CREATE body", refused(ProtocolError, "not json"))
        self.assertEqual(self.config_text(), before)

    def test_anonymous(self):
        """An anonymous hook answers its derived name and is stored without one (case 27)."""
        reply = self.connect(ALICE).call(commands.HookCreate, mailbox="alice",
                                         event="on_receive",
                                         body='{"cmd": ["/bin/echo", "via-daemon"]}')
        self.assertRegex(reply["name"], "^[0-9a-f]{12}$")
        text = self.config_text()
        self.assertIn("via-daemon", text)
        self.assertNotIn("name =", text)

    def test_duplicate_name(self):
        """The same explicit name on another mailbox is VALIDATION (case 28)."""
        self.connect(ALICE).call(commands.HookCreate, mailbox="alice", event="on_receive",
                                 name="dup", body=self.BODY)
        before = self.config_text()
        reason = self.connect(BOB).refused(ValidationError, commands.HookCreate, mailbox="bob",
                                           event="on_receive", name="dup", body=self.BODY)
        self.assertIn("duplicate hook name 'dup'", reason)
        self.assertEqual(self.config_text(), before)

    def test_delete(self):
        """bob cannot see alice's hook (ENOENT); alice deletes it; unknown is ENOENT (case 29)."""
        self.connect(ALICE).call(commands.HookCreate, mailbox="alice", event="on_receive",
                                 name="alice_owned_hook", body=self.BODY)
        reason = self.connect(BOB).refused(NoEntry, commands.HookDelete, name="alice_owned_hook")
        self.assertEqual(reason, "hook 'alice_owned_hook' not found")
        self.assertIn("alice_owned_hook", self.config_text())
        self.connect(ALICE).call(commands.HookDelete, name="alice_owned_hook")
        self.assertNotIn("alice_owned_hook", self.config_text())
        self.assertEqual(self.connect(ROOT).refused(NoEntry, commands.HookDelete,
                                                    name="nonexistent"),
                         "hook 'nonexistent' not found")
        self.assertIn("hook deleted", self.logged())

    def hold(self, name):
        lock = self.locks.setdefault(name, defer.DeferredLock())
        lock.acquire()
        return lock

    def give_alice_to_bob(self):
        self.live.current = attrs.evolve(
            self.live.current,
            mailboxes=[attrs.evolve(mb, owner="bob", hooks=()) if mb.name == "alice"
                       else mb for mb in self.live.current.mailboxes],
        )

    def test_create_recheck_under_lock(self):
        """HOOK-CREATE re-authorises under the lock: a re-created mailbox of bob is refused."""
        lock = self.hold("alice")
        conn = self.connect(ALICE)
        outcome = conn.send(commands.HookCreate, mailbox="alice", event="on_receive",
                            name="sneaky", body=self.BODY)
        conn.pump.flush()
        self.assertEqual(outcome, [])
        before = self.config_text()
        self.give_alice_to_bob()
        lock.release()
        result = conn.result(outcome)
        self.assertIsInstance(result, Failure)
        self.assertIsInstance(result.value, NoEntry)
        self.assertEqual(self.config_text(), before)
        self.assertEqual(self.live.current.mailbox("alice").hooks, ())

    def test_delete_recheck_under_lock(self):
        """HOOK-DELETE re-finds and re-authorises under the lock."""
        self.connect(ALICE).call(commands.HookCreate, mailbox="alice", event="on_receive",
                                 name="keep_me", body=self.BODY)
        lock = self.hold("alice")
        conn = self.connect(ALICE)
        outcome = conn.send(commands.HookDelete, name="keep_me")
        conn.pump.flush()
        self.assertEqual(outcome, [])
        self.live.current = attrs.evolve(
            self.live.current,
            mailboxes=[attrs.evolve(mb, owner="bob") if mb.name == "alice"
                       else mb for mb in self.live.current.mailboxes],
        )
        before = self.config_text()
        lock.release()
        result = conn.result(outcome)
        self.assertIsInstance(result, Failure)
        self.assertIsInstance(result.value, NoEntry)
        self.assertEqual(str(result.value), "hook 'keep_me' not found")
        self.assertEqual(self.config_text(), before)
        self.assertEqual([h.name for h in self.live.current.mailbox("alice").hooks], ["keep_me"])

    def test_list(self):
        """HOOK-LIST shows only the caller's mailboxes' hooks, sorted (case 30)."""
        root = self.connect(ROOT)
        for mailbox, event, name in (("bob", "on_receive", "b1"), ("alice", "on_receive", "a2"),
                                     ("alice", "after_send", "a9")):
            root.call(commands.HookCreate, mailbox=mailbox, event=event, name=name,
                      body=self.BODY)
        rows = self.connect(ALICE).call(commands.HookList)["hooks"]
        self.assertEqual([r["name"] for r in rows], ["a9", "a2"])
        self.assertEqual(sorted(rows[0]), sorted(["name", "mailbox", "event", "cmd",
                                                  "fire_on_untrusted", "fire_on_review",
                                                  "timeout_secs"]))
        self.assertEqual(len(root.call(commands.HookList)["hooks"]), 3)
        self.assertEqual(self.connect(12345).call(commands.HookList), {"hooks": []})


CONTRIB = os.path.join(os.path.dirname(__file__), os.pardir, "contrib", "config.toml")


def comment_lines(text: str) -> list[str]:
    """Every line holding a comment (no value in contrib/config.toml has a C{#})."""
    return [line for line in text.splitlines() if "#" in line]


class AuditReadTests(ControlTestCase):
    """Changes are recorded; AUDIT-READ answers root everything, an owner its own."""

    BODY = '{"cmd": ["/bin/true"], "fire_on_review": true}'

    def setUp(self):
        super().setUp()
        self.clock.advance(NOW.timestamp())
        self.start_audit()

    def read(self, uid, **arguments) -> list[dict]:
        return self.connect(uid).call(commands.AuditRead, **arguments)["records"]

    def test_changes_and_visibility(self):
        """Hook changes record who made them; root reads all, alice only alice's (even
        when she names bob's mailbox), bob only bob's; event and since filter."""
        self.connect(ALICE).call(commands.HookCreate, mailbox="alice", event="on_receive",
                                 name="a1", body=self.BODY)
        self.clock.advance(3600)
        self.connect(ROOT).call(commands.HookCreate, mailbox="bob", event="on_receive",
                                name="b1", body=self.BODY)
        self.connect(ROOT).call(commands.HookDelete, name="a1")
        everything = self.read(ROOT)
        self.assertEqual(
            [(r["event"], r["action"], r["mailbox"], r.get("hook"), r["caller_uid"])
             for r in everything],
            [("hook", "created", "alice", "a1", ALICE), ("hook", "created", "bob", "b1", ROOT),
             ("hook", "deleted", "alice", "a1", ROOT)])
        self.assertEqual(everything[0]["time"], "2026-01-02T03:04:05.000000Z")
        self.assertEqual((everything[0]["fire_on_review"], everything[0]["cmd"]),
                         (True, ["/bin/true"]))
        self.assertEqual([r["mailbox"] for r in self.read(ALICE)], ["alice", "alice"])
        self.assertEqual(self.read(ALICE, mailbox="bob"), [])
        self.assertEqual([r["hook"] for r in self.read(BOB)], ["b1"])
        self.assertEqual(len(self.read(12345)), 0)
        self.assertEqual(len(self.read(ROOT, event="hook", since="2026-01-02T04:00:00Z")), 2)
        self.assertEqual(len(self.read(ROOT, limit=1)), 1)
        self.assertEqual(self.read(ROOT, event="mailbox"), [])

    @root_only
    def test_name_created_again(self):
        """bob, owning a name alice's mailbox had, reads its records from his creation on."""
        self.connect(ALICE).call(commands.HookCreate, mailbox="alice", event="on_receive",
                                 name="a1", body=self.BODY)
        self.clock.advance(1)
        self.connect(ALICE).call(commands.MailboxDelete, name="alice", force=False)
        for sub in ("inbox", "sent"):  # the directories alice's files were in go too
            os.rmdir(os.path.join(self.data_dir, sub, "alice"))
        self.clock.advance(1)
        self.connect(BOB).call(commands.MailboxCreate, name="alice", owner=None)
        self.assertEqual([(r["event"], r["action"], r["caller_uid"]) for r in self.read(BOB)
                          if r["mailbox"] == "alice"], [("mailbox", "created", BOB)])
        self.assertEqual(len([r for r in self.read(ROOT) if r["mailbox"] == "alice"]), 3)

    def test_bad_arguments(self):
        """An unknown event or a since that is not RFC 3339 is MALFORMED; without an audit
        log the command says so."""
        conn = self.connect(ROOT)
        self.assertIn("invalid event 'sends'", conn.refused(
            MalformedError, commands.AuditRead, event="sends"))
        self.assertIn("since: 'yesterday' is not an RFC 3339 date",
                      conn.refused(MalformedError, commands.AuditRead, since="yesterday"))
        self.control.audit = None
        self.assertEqual(conn.refused(IOFailure, commands.AuditRead),
                         "this daemon keeps no audit log")


class FormatPreservingTests(ControlTestCase):
    """Socket edits change config.toml in place (README "Later decisions": config writes)."""

    def setUp(self):
        super().setUp()
        with open(CONTRIB) as f:
            self.original = f.read()
        with open(self.config_path, "w") as f:
            f.write(self.original)
        self.live.current, _ = configfile.load(self.config_dir)

    @root_only
    def test_contrib_round_trip(self):
        """Create a mailbox, add a hook, delete it, delete the mailbox: every comment
        and every untouched table stays byte for byte, and the file ends as it began."""
        conn = self.connect(ALICE)
        steps = [
            lambda: conn.call(commands.MailboxCreate, name="eve"),
            lambda: conn.call(commands.HookCreate, mailbox="eve", event="on_receive",
                              name="eve_log", body=json.dumps({"cmd": ["/bin/true"]})),
            lambda: conn.call(commands.HookDelete, name="eve_log"),
        ]
        for step in steps:
            step()
            text = self.config_text()
            self.assertTrue(text.startswith(self.original), text)
            self.assertEqual(comment_lines(text), comment_lines(self.original))
            self.assertEqual(configfile.load(self.config_dir)[0], self.live.current)
            self.assertEqual(os.stat(self.config_path).st_mode & 0o777, 0o640)
        conn.call(commands.MailboxDelete, name="eve", force=False)
        self.assertEqual(self.config_text(), self.original)
        self.assertEqual(configfile.load(self.config_dir)[0], self.live.current)
        self.assertEqual(os.listdir(self.config_dir), ["config.toml"])

    def test_unloadable_file_not_overwritten(self):
        """A hand edit that broke config.toml is not replaced by the daemon's copy:
        the edit is refused with the file named and the file stays as it is."""
        with open(self.config_path, "a") as f:
            f.write('trust = "verfied"\n')
        before = self.config_text()
        reason = self.connect(ROOT).refused(ValidationError, commands.HookCreate,
                                            mailbox="support", event="on_receive",
                                            name="h", body=json.dumps({"cmd": ["/bin/true"]}))
        self.assertTrue(reason.startswith(
            f"refusing to write an invalid config: {self.config_path}: the file does not "
            "load, so it is not edited: "), reason)
        self.assertEqual(self.config_text(), before)


class DrainTests(ControlTestCase):
    def run_in_thread(self, f, *args):
        return task.deferLater(self.clock, 5, f, *args)

    @root_only
    def test_inflight_finish(self):
        """A drain waits for running commands, delivers their answers, then closes."""
        conn = self.connect(ROOT)
        idle = self.connect(ROOT)
        d = conn.send(commands.MailboxCreate, name="eve", owner="alice")
        conn.pump.flush()
        drained = self.factory.drain(30)
        self.assertNoResult(drained)
        for _ in range(4):
            self.clock.advance(5)
            conn.pump.flush()
            idle.pump.flush()
        self.assertEqual(d, [{"address": "eve@test.local"}])
        self.successResultOf(drained)
        self.assertTrue(conn.closed)
        self.assertTrue(idle.closed)
        self.assertIn("eve", self.config_toml()["mailboxes"])

    def test_grace_expires(self):
        """Commands still running when the grace ends are cut off."""
        conn = self.connect(ROOT)
        self.control.mailbox_list = lambda caller: defer.Deferred()
        d = conn.send(commands.MailboxList)
        conn.pump.flush()
        drained = self.factory.drain(30)
        self.clock.advance(30)
        conn.pump.flush()
        self.successResultOf(drained)
        self.assertIsInstance(d[0], Failure)
        self.assertIn("drain grace expired", self.logged())


class LockMapTests(ControlTestCase):
    """The daemon's per-mailbox lock map (Inbound.lock) stays bounded (finding 4)."""

    def setUp(self):
        super().setUp()
        self.inbound = Inbound(config=self.live, store=None, resolver=None,
                               run_in_thread=self.run_in_thread)
        self.control.mailbox_lock = self.inbound.lock

    def test_unknown_names_dropped(self):
        """MAILBOX-CREATE/DELETE of names that never become mailboxes leave no lock behind."""
        conn = self.connect(ROOT)
        for i in range(20):
            conn.refused(MailboxError, commands.MailboxDelete, name=f"ghost{i}")
            conn.refused(ValidationError, commands.MailboxCreate, name=f"ghost{i}",
                         owner="nosuchuser")
        self.connect(BOB).refused(MailboxError, commands.MailboxDelete, name="alice")
        self.assertEqual(self.inbound._locks, {})

    def test_contended_lock_kept_until_last_release(self):
        """The entry stays while held or awaited and goes with the last release."""
        first = self.inbound.lock("x")
        first.acquire()
        waiting = self.inbound.lock("x").acquire()
        self.assertIs(self.inbound.lock("x"), first)
        first.release()
        self.assertTrue(waiting.called)
        self.assertIs(self.inbound._locks["x"], first)
        first.release()
        self.assertEqual(self.inbound._locks, {})
        again = self.inbound.lock("x")
        self.assertIsNot(again, first)
        again.acquire()
        again.release()
        self.assertEqual(self.inbound._locks, {})


def request(command: bytes, ask: bytes | None = b"1", **values) -> dict:
    """A request box, C{_command} first as our clients send it."""
    box = {b"_command": command}
    if ask is not None:
        box[b"_ask"] = ask
    box.update({k.encode(): v for k, v in values.items()})
    return box


def padded(box: dict, size: int) -> bytes:
    """C{box} plus C{pad<n>} values so that its wire form is exactly C{size} bytes."""
    box = dict(box)
    i = 0
    while True:
        room = size - len(wire.serialize_box(box)) - 4 - len(f"pad{i:04d}")
        if room < 0:
            raise ValueError("box already larger than size")
        box[f"pad{i:04d}".encode()] = b"p" * min(room, amp.MAX_VALUE_LENGTH)
        if room <= amp.MAX_VALUE_LENGTH:
            data = wire.serialize_box(box)
            assert len(data) == size, (len(data), size)
            return data
        i += 1


def send_box_size(message: bytes, ask: bytes = b"1") -> int:
    """The wire size of a SEND of C{message} as our clients send it."""
    box = commands.Send.makeArguments({"message": message}, None)
    box[b"_command"], box[b"_ask"] = b"SEND", ask
    return len(box.serialize())


class ConnectionLimitTests(ControlTestCase):
    """At most 64 admitted connections, 16 per peer uid; the rest get TEMP and are closed."""

    def test_defaults(self):
        """The limits are those of the brief: 64, 16 per uid, 64 refused waiting."""
        self.assertEqual((MAX_CONNECTIONS, MAX_CONNECTIONS_PER_UID, MAX_REFUSED), (64, 16, 64))
        self.assertEqual((self.factory.max_connections, self.factory.max_per_uid,
                          self.factory.max_refused), (64, 16, 64))

    def test_per_uid(self):
        """The 17th connection of one uid gets TEMP and is closed; others and bob go on."""
        alice = [self.connect(ALICE) for _ in range(16)]
        for conn in alice:
            self.assertIn("tag", conn.call(commands.Version))
        extra = self.connect(ALICE)
        reason = extra.refused(TempError, commands.MailboxList)
        self.assertEqual(reason, "too many control connections (16 per user); retry later")
        self.assertTrue(extra.closed)
        self.assertIn('<5>aimx.control: connection refused peer_uid=2001 reason="too many '
                      'control connections (16 per user); retry later"', self.logged())
        self.assertIn("tag", alice[-1].call(commands.Version))
        self.assertIn("tag", self.connect(BOB).call(commands.Version))
        alice[0].close()
        self.assertIn("tag", self.connect(ALICE).call(commands.Version))

    def test_root_too(self):
        """Root is capped like everyone else."""
        for _ in range(16):
            self.connect(ROOT).call(commands.Version)
        reason = self.connect(ROOT).refused(TempError, commands.Version)
        self.assertEqual(reason, "too many control connections (16 per user); retry later")

    def test_total(self):
        """The 65th connection gets TEMP whatever its uid; one closing makes room."""
        held = [self.connect(uid) for uid in (ROOT, ALICE, BOB, JOHN) for _ in range(16)]
        self.assertEqual(len(held), 64)
        extra = self.connect(12345)
        reason = extra.refused(TempError, commands.Version)
        self.assertEqual(reason, "too many control connections (64 in total); retry later")
        self.assertTrue(extra.closed)
        self.assertIn('<5>aimx.control: connection refused peer_uid=12345 reason="too many '
                      'control connections (64 in total)', self.logged())
        held[0].close()
        self.assertIn("tag", self.connect(12345).call(commands.Version))

    def test_refused_box_not_buffered(self):
        """A refused connection's box is read without being kept or counted, then answered."""
        self.factory.max_per_uid = 1
        self.connect(ALICE)
        extra = self.connect(ALICE, raw=True)
        data = amp.AmpBox(commands.Send.makeArguments({"message": b"m" * 3_000_000}, None))
        data.update(request(b"SEND", ask=b"7"))
        data = wire.serialize_box(data)
        extra.write(data[:-100])
        self.assertEqual(self.factory.buffered, 0)
        kept = extra.server._currentBox
        self.assertLess(sum(len(k) + len(v) for k, v in kept.items()), 100)
        extra.write(data[-100:])
        self.assertEqual(extra.client.replies(), [{
            b"_error": b"7", b"_error_code": b"TEMP",
            b"_error_description": b"too many control connections (1 per user); retry later",
        }])
        self.assertTrue(extra.closed)
        self.assertEqual(self.factory.buffered, 0)

    def test_only_first_command_answered(self):
        """A refused connection answers one command, then is closed; nothing ran."""
        self.factory.max_per_uid = 1
        self.connect(ROOT)
        extra = self.connect(ROOT)
        first = extra.send(commands.MailboxCreate, name="eve", owner="alice")
        second = extra.send(commands.MailboxCreate, name="zed", owner="alice")
        extra.pump.flush()
        self.assertIsInstance(first[0].value, TempError)
        self.assertEqual(len(second), 1)
        self.assertNotIsInstance(second[0], dict)
        self.assertEqual(len(self.config_toml()["mailboxes"]), 3)

    def test_refused_without_ask(self):
        """A refused connection whose box asks for no answer is dropped with a warning."""
        self.factory.max_per_uid = 1
        self.connect(ALICE)
        extra = self.connect(ALICE, raw=True)
        extra.write(wire.serialize_box(request(b"VERSION", ask=None)))
        self.assertTrue(extra.closed)
        self.assertIn('<5>aimx.control: connection dropped peer_uid=2001 reason="refused box '
                      'asks no answer" refusal="too many control connections (1 per user); '
                      'retry later"', self.logged())

    def test_refused_waiting_bounded(self):
        """Past the bound of refused connections waiting for a box, one is closed at once."""
        self.factory.max_per_uid, self.factory.max_refused = 1, 2
        self.connect(ALICE)
        waiting = [self.connect(ALICE) for _ in range(2)]
        extra = self.connect(ALICE)
        extra.pump.flush()
        self.assertTrue(extra.closed)
        self.assertFalse(any(conn.closed for conn in waiting))
        self.assertIn('<5>aimx.control: connection refused and closed at once peer_uid=2001 '
                      'reason="too many control connections (1 per user); retry later" '
                      'refused_waiting=2', self.logged())
        waiting[0].refused(TempError, commands.Version)
        self.connect(ALICE).refused(TempError, commands.Version)

    def test_refused_times_out(self):
        """A refused connection that sends nothing is closed by the request timeout."""
        self.factory.max_per_uid = 1
        self.connect(ALICE)
        extra = self.connect(ALICE)
        self.clock.advance(30)
        extra.pump.flush()
        self.assertTrue(extra.closed)
        self.assertEqual(self.factory.refused, 0)

    def test_counts_return_to_zero(self):
        """Closed connections, admitted or refused, give their places back."""
        self.factory.max_per_uid = 2
        conns = [self.connect(ALICE) for _ in range(3)]
        conns[2].refused(TempError, commands.Version)
        for conn in conns[:2]:
            conn.close()
        self.assertEqual((self.factory.admitted, dict(+self.factory.per_uid),
                          self.factory.refused), (0, {}, 0))


class BudgetTests(ControlTestCase):
    """The bytes of boxes being received or running are counted against one budget."""

    def setUp(self):
        super().setUp()
        self.running = []

        def send(caller, message, text_only, html_body, attachments):
            d = defer.Deferred()
            self.running.append(d)
            return d

        self.control.send = send

    def finish(self, conn, outcome):
        self.running.pop(0).callback({"message_id": "<x@test.local>"})
        return conn.result(outcome)

    def test_default(self):
        """The budget is 256 MiB."""
        self.assertEqual((BUFFER_BUDGET, self.factory.budget), (256 << 20, 256 << 20))

    def test_counted_until_answered(self):
        """A box counts from its first byte until its command is answered."""
        conn = self.connect(ALICE)
        message = b"m" * 100_000
        outcome = conn.send(commands.Send, message=message)
        conn.pump.flush()
        self.assertEqual(self.factory.buffered, send_box_size(message))
        self.assertEqual(self.finish(conn, outcome), {"message_id": "<x@test.local>",
                                                      "deliveries": None, "held": None})
        self.assertEqual(self.factory.buffered, 0)

    def test_partial_box_released_on_close(self):
        """The bytes of an unfinished box are released when its connection closes."""
        conn = self.connect(ALICE, raw=True)
        conn.write(wire.serialize_box(request(b"SEND", message=b"1",
                                                  **{"message.0": b"m" * 50_000}))[:-2])
        self.assertGreater(self.factory.buffered, 50_000)
        conn.close()
        self.assertEqual(self.factory.buffered, 0)

    def test_running_command_keeps_its_bytes(self):
        """A command whose client left still holds its box's bytes until it finishes."""
        conn = self.connect(ALICE)
        conn.send(commands.Send, message=b"m" * 100_000)
        conn.pump.flush()
        conn.close()
        self.assertEqual(self.factory.buffered, send_box_size(b"m" * 100_000))
        self.running.pop().callback({"message_id": "<x@test.local>"})
        self.assertEqual(self.factory.buffered, 0)

    def test_budget_limit(self):
        """Boxes filling the budget exactly are served; one byte more is TEMP, others unhurt."""
        message = b"m" * 200_000
        size = send_box_size(message)
        self.factory.budget = 2 * size
        a, b = self.connect(ALICE), self.connect(BOB)
        first, second = a.send(commands.Send, message=message), b.send(commands.Send,
                                                                        message=message)
        a.pump.flush()
        b.pump.flush()
        self.assertEqual((self.factory.buffered, len(self.running)), (2 * size, 2))
        c = self.connect(ROOT)
        reason = c.refused(TempError, commands.Send, message=message)
        self.assertEqual(reason, "control socket busy: too many request bytes buffered; "
                                 "retry later")
        self.assertTrue(c.closed)
        self.assertIn(f"<5>aimx.control: box refused, request bytes over the budget "
                      f"peer_uid=0 budget={2 * size}", self.logged())
        self.assertEqual(self.factory.buffered, 2 * size)
        self.assertFalse(a.closed or b.closed)
        self.assertIn("message_id", self.finish(a, first))
        self.assertIn("message_id", self.finish(b, second))
        self.assertEqual(self.factory.buffered, 0)
        d = self.connect(ROOT)
        outcome = d.send(commands.Send, message=message)
        d.pump.flush()
        self.assertIn("message_id", self.finish(d, outcome))

    def test_over_budget_small_box(self):
        """Even a VERSION is refused while the budget is spent."""
        self.factory.budget = send_box_size(b"m" * 1000) + 10
        a = self.connect(ALICE)
        a.send(commands.Send, message=b"m" * 1000)
        a.pump.flush()
        reason = self.connect(BOB).refused(TempError, commands.Version)
        self.assertIn("control socket busy", reason)

    def test_over_budget_without_ask(self):
        """A box over the budget that asks for no answer is dropped with a warning."""
        self.factory.budget = 1000
        conn = self.connect(ALICE, raw=True)
        conn.write(padded(request(b"VERSION", ask=None), 2000))
        self.assertTrue(conn.closed)
        self.assertIn('reason="refused box asks no answer" refusal="control socket busy',
                      self.logged())
        self.assertEqual(self.factory.buffered, 0)


class BoxSizeTests(ControlTestCase):
    """Only SEND boxes may grow past MAX_OTHER_BOX; any box past MAX_BOX is dropped."""

    def test_other_box_limit(self):
        """A non-SEND box of exactly the limit is served; one byte more drops the connection."""
        self.assertEqual(MAX_OTHER_BOX, wire.HOOK_BODY_CAP + 256 * 1024)
        conn = self.connect(ALICE, raw=True)
        conn.write(padded(request(b"VERSION"), MAX_OTHER_BOX))
        [answer] = conn.client.replies()
        self.assertEqual((answer[b"_answer"], answer[b"tag"]), (b"1", aimx.__version__.encode()))
        self.assertFalse(conn.closed)
        conn = self.connect(ALICE, raw=True)
        conn.write(padded(request(b"VERSION"), MAX_OTHER_BOX + 1))
        self.assertTrue(conn.closed)
        self.assertEqual(conn.client.received, b"")
        self.assertIn(f'<5>aimx.control: connection dropped peer_uid=2001 reason="box too '
                      f'large for its command (only SEND may be)" command=VERSION '
                      f'limit={MAX_OTHER_BOX}', self.logged())
        self.assertEqual(self.factory.buffered, 0)

    def test_largest_hook_create_fits(self):
        """The largest valid HOOK-CREATE box fits under the limit."""
        box = commands.HookCreate.makeArguments(
            {"mailbox": "m" * 65535, "event": "e" * 65535, "name": "n" * 65535,
             "body": "b" * wire.HOOK_BODY_CAP}, None)
        box.update(request(b"HOOK-CREATE", ask=b"ffffffff"))
        self.assertLess(len(box.serialize()), MAX_OTHER_BOX)

    def test_mailbox_create_2mib_dropped(self):
        """A 2 MiB MAILBOX-CREATE-shaped box is dropped; nothing is created."""
        conn = self.connect(ROOT)
        pads = {f"pad{i}": b"p" * 65535 for i in range(33)}
        result = conn.result(conn.send_raw(b"MAILBOX-CREATE", {"name": b"eve", **pads}))
        self.assertIsInstance(result, Failure)
        self.assertTrue(conn.closed)
        self.assertIn("command=MAILBOX-CREATE limit=", self.logged())
        self.assertEqual(len(self.config_toml()["mailboxes"]), 3)
        self.assertEqual(self.factory.buffered, 0)

    def test_command_not_yet_known(self):
        """A box whose _command has not arrived by the limit is dropped, even a SEND."""
        conn = self.connect(ALICE, raw=True)
        # Twisted sorts keys: capitals come before _ask and _command.
        box = amp.AmpBox({f"A{i:03d}".encode(): b"a" * 65535 for i in range(25)})
        box.update(request(b"SEND", message=b"1", **{"message.0": b"x"}))
        conn.write(box.serialize())
        self.assertTrue(conn.closed)
        self.assertIn(f'<5>aimx.control: connection dropped peer_uid=2001 reason="box too '
                      f'large before its _command (only SEND may be)" limit={MAX_OTHER_BOX}',
                      self.logged())

    def test_send_25_mib(self):
        """A SEND of a full 25 MiB message through the Twisted client is served."""
        self.control.send = lambda caller, message, *rest: defer.succeed(
            {"message_id": f"<{len(message)}@test.local>"})
        conn = self.connect(ALICE)
        reply = conn.call(commands.Send, message=b"m" * wire.MESSAGE_CAP)
        self.assertEqual(reply["message_id"], f"<{wire.MESSAGE_CAP}@test.local>")
        self.assertEqual(self.factory.buffered, 0)

    def test_not_a_command(self):
        """A client box that is an answer or an error, not a command, drops the connection."""
        for box in ({b"_answer": b"1", b"_command": b"VERSION", b"_ask": b"1"},
                    {b"_error": b"1", b"_command": b"VERSION", b"_ask": b"1"}):
            conn = self.connect(ALICE, raw=True)
            conn.write(wire.serialize_box(box))
            self.assertTrue(conn.closed)
        self.assertIn('reason="malformed box (not a command)"', self.logged())


class DescriptorTests(ControlTestCase):
    """SEND's attachments arrive as descriptors; what a peer can make the daemon hold."""

    def received(self, conn, n: int) -> list[int]:
        fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(n)]
        for fd in fds:
            os.set_inheritable(fd, True)
            conn.server.fileDescriptorReceived(fd)
        return fds

    def test_cap(self):
        """MAX_DESCRIPTORS are held (close-on-exec); one more drops the connection and
        closes them all."""
        conn = self.connect(ALICE)
        held = self.received(conn, MAX_DESCRIPTORS)
        self.assertTrue(all(is_open(fd) and not os.get_inheritable(fd) for fd in held))
        [extra] = self.received(conn, 1)
        conn.pump.flush()
        self.assertTrue(conn.closed)
        self.assertFalse(any(map(is_open, held + [extra])))
        self.assertIn(f'<5>aimx.control: connection dropped peer_uid=2001 reason="too many '
                      f'descriptors held" limit={MAX_DESCRIPTORS}', self.logged())

    def test_unclaimed_closed_with_the_connection(self):
        """Descriptors no command claimed are closed when the peer goes."""
        conn = self.connect(ALICE)
        fds = self.received(conn, 3)
        conn.close()
        self.assertFalse(any(map(is_open, fds)))

    def test_claimed_closed_when_answered(self):
        """The SEND responder closes the descriptors it was given, whatever the answer."""
        conn = self.connect(ALICE)
        seen = []

        def send(caller, message, text_only, html_body, attachments):
            seen.extend(fd for fd, _ in attachments)
            self.assertTrue(all(map(is_open, seen)))
            return defer.fail(MalformedError("no"))

        self.control.send = send
        fds = self.received(conn, 2)
        box = {b"message": b"1", b"message.0": b"x",
               b"attachments": b'[[0, "/a"], [1, "/b"]]'}
        result = conn.result(conn.send_raw(b"SEND", {k.decode(): v for k, v in box.items()}))
        self.assertEqual(result.value.errorCode, b"MALFORMED")
        self.assertEqual(seen, fds)
        self.assertFalse(any(map(is_open, fds)))
        self.assertFalse(conn.closed)
