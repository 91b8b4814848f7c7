"""The control socket on a real daemon: the UNIX socket, CRUD effects, shutdown, a second uid.

The daemon runs in-process; root's commands go through L{aimx.control.client}
on the real socket.  Commands of another uid (C{nobody}) come from a child
process that drops privileges before connecting (L{tests.integration.base.SecondUid}),
so C{SO_PEERCRED} is real; those tests need root.
"""

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys

from mcp.server.mcpserver.exceptions import ToolError
from twisted.internet import defer, reactor, threads
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher

from aimx.control import aioclient, client, commands, wire
from aimx.control.amp import ControlFactory, ControlSocket
from aimx.errors import ConfigError, MailboxError, NonEmptyError, TempError
from aimx.logs import event_line
from aimx.core import frontmatter
from aimx.mcp import tools
from aimx.store import configfile, held
from tests.integration.base import (
    IS_ROOT,
    NOBODY,
    REPO,
    DaemonTestCase,
    SecondUid,
    current_user,
    load_toml,
    stop_daemon,
)
from tests.integration.test_inbound import PLAIN, message

# Root may not create root-owned mailboxes through the socket (aimx decision).
OWNER = "nobody" if IS_ROOT else current_user()


class ControlTestCase(DaemonTestCase):
    def setUp(self):
        super().setUp()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    @property
    def socket_path(self) -> str:
        return os.path.join(self.runtime_dir, "aimx.sock")

    @property
    def config_path(self) -> str:
        return os.path.join(self.config_dir, "config.toml")

    def logged(self) -> str:
        return "\n".join(event_line(e, journal=True) for e in self.events)

    async def connect(self) -> client.ControlClient:
        connection = await client.connect(reactor, self.socket_path)
        self.addCleanup(connection.close)
        return connection

    async def call(self, command, **arguments):
        connection = await self.connect()
        return await connection.call(command, **arguments)

    def configured(self) -> set:
        return set(load_toml(self.config_path)["mailboxes"])



class SocketTests(ControlTestCase):
    @defer.inlineCallbacks
    def test_mode_and_removal(self):
        """The socket is mode 0666 while running and gone after stop (case 1)."""
        daemon = self.start_daemon()
        st = os.lstat(self.socket_path)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o666)
        self.assertIn(f"<6>aimx.control: listening path={self.socket_path} mode=0666",
                      self.logged())
        yield stop_daemon(daemon)
        self.assertFalse(os.path.lexists(self.socket_path))
        self.assertIn("<6>aimx.control: drained", self.logged())

    @defer.inlineCallbacks
    def test_stale_regular_file(self):
        """A stale regular file at the socket path is replaced (case 2, daemon case 9)."""
        with open(self.socket_path, "w") as f:
            f.write("stale")
        self.start_daemon()
        self.assertTrue(stat.S_ISSOCK(os.lstat(self.socket_path).st_mode))
        self.assertIn("tag", (yield defer.Deferred.fromCoroutine(self.call(commands.Version))))

    @defer.inlineCallbacks
    def test_stale_socket(self):
        """A socket file nobody listens on is replaced."""
        dead = socket.socket(socket.AF_UNIX)
        dead.bind(self.socket_path)
        dead.close()
        self.start_daemon()
        self.assertIn("tag", (yield defer.Deferred.fromCoroutine(self.call(commands.Version))))

    @defer.inlineCallbacks
    def test_live_socket_is_fatal(self):
        """A second listener on a live socket fails with the bind message; the first serves on."""
        daemon = self.start_daemon()
        other = ControlSocket(reactor, self.socket_path,
                              ControlFactory(None, clock=reactor), grace=1)
        e = self.assertRaises(ConfigError, other.startService)
        self.assertIn(f"Failed to bind UDS send socket at {self.socket_path}: ", str(e))
        self.assertTrue(daemon.control.running)
        self.assertIn("tag", (yield defer.Deferred.fromCoroutine(self.call(commands.Version))))

    def test_runtime_dir_created(self):
        """A missing runtime dir is created mode 0755 despite the daemon's umask 077."""
        self.runtime_dir = os.path.join(self.runtime_dir, "sub")
        self.start_daemon(self.options())
        self.assertEqual(stat.S_IMODE(os.stat(self.runtime_dir).st_mode), 0o755)

    @defer.inlineCallbacks
    def test_accept_logged(self):
        """Each connection logs the real peer uid and pid (case 4)."""
        self.start_daemon()
        yield defer.Deferred.fromCoroutine(self.call(commands.Version))
        self.assertIn(f"connection accepted peer_uid={os.getuid()} peer_pid={os.getpid()}",
                      self.logged())

    @defer.inlineCallbacks
    def test_version_matches_cli(self):
        """VERSION's tag is the version `aimx --version` prints after `aimx` (case 31)."""
        self.start_daemon()
        reply = yield defer.Deferred.fromCoroutine(self.call(commands.Version))
        out = subprocess.run([sys.executable, "-m", "aimx", "--version"], capture_output=True,
                             env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO, text=True)
        self.assertEqual(out.stdout.split()[:2], ["aimx", reply["tag"]])


class CrudTests(ControlTestCase):
    @defer.inlineCallbacks
    def test_create_routes_at_once(self):
        """A created mailbox receives mail on the next RCPT, no restart (case 13)."""
        self.start_daemon()
        reply = yield defer.Deferred.fromCoroutine(
            self.call(commands.MailboxCreate, name="eve", owner=OWNER))
        self.assertEqual(reply, {"address": "eve@test.local"})
        smtp = yield self.smtp(PLAIN, ["eve@test.local"])
        self.assertEqual(smtp[0], 250)
        self.assertEqual(len(self.inbox("eve")), 1)
        self.assertEqual(self.inbox("catchall"), [])

    @defer.inlineCallbacks
    def test_delete_routes_to_catchall(self):
        """A non-empty mailbox refuses deletion; once emptied it goes, mail to catchall (18)."""
        self.start_daemon()
        connection = yield defer.Deferred.fromCoroutine(self.connect())
        yield connection.call(commands.MailboxCreate, name="qux", owner=OWNER)
        yield self.smtp(message(message_id="q1@x"), ["qux@test.local"])
        [path] = self.inbox("qux")
        e = yield self.assertFailure(connection.call(commands.MailboxDelete, name="qux"),
                                     NonEmptyError)
        self.assertIn("qux", str(e))
        self.assertIn("1 files (1 in inbox, 0 in sent)", str(e))
        self.assertIn("qux", self.configured())
        os.unlink(path)
        yield connection.call(commands.MailboxDelete, name="qux")
        self.assertNotIn("qux", self.configured())
        self.assertTrue(os.path.isdir(os.path.join(self.data_dir, "inbox", "qux")))
        yield self.smtp(message(message_id="q2@x"), ["qux@test.local"])
        self.assertEqual(len(self.inbox("catchall")), 1)
        self.assertEqual(self.inbox("qux"), [])

    @defer.inlineCallbacks
    def test_concurrent_creates(self):
        """Creates on two connections at once both land (case 17)."""
        self.start_daemon()
        a = yield defer.Deferred.fromCoroutine(self.connect())
        b = yield defer.Deferred.fromCoroutine(self.connect())
        yield defer.gatherResults([
            a.call(commands.MailboxCreate, name="a", owner=OWNER),
            b.call(commands.MailboxCreate, name="b", owner=OWNER),
        ])
        self.assertTrue({"a", "b"} <= self.configured())
        rows = (yield a.call(commands.MailboxList))["mailboxes"]
        self.assertTrue({"a", "b"} <= {row["name"] for row in rows})

    @defer.inlineCallbacks
    def test_stop_with_50_in_flight(self):
        """A stop while 50 CRUD commands are in flight leaves config.toml valid and complete."""
        daemon = self.start_daemon()
        connections = []
        for _ in range(5):
            connections.append((yield defer.Deferred.fromCoroutine(self.connect())))
        outcomes = {}
        first = defer.Deferred()

        def record(result, name):
            outcomes[name] = result
            if not first.called:
                first.callback(None)

        calls = []
        for i in range(50):
            name = f"box{i:02d}"
            d = connections[i % 5].call(commands.MailboxCreate, name=name, owner=OWNER)
            calls.append(d.addBoth(record, name))
        yield first  # the daemon is working through the other 49 now
        self.assertGreater(daemon.control.factory.inflight, 0)
        yield stop_daemon(daemon)
        yield defer.gatherResults(calls)
        created = {name for name, result in outcomes.items() if result == {
            "address": f"{name}@test.local"}}
        self.assertTrue(created)
        config, _ = configfile.load(self.config_dir)
        self.assertEqual({mb.name for mb in config.mailboxes} - {"alice", "bob", "catchall"},
                         created)
        self.assertEqual([n for n in os.listdir(self.config_dir) if ".tmp." in n], [])

    @defer.inlineCallbacks
    def test_rewrite_keeps_mode_and_restart_loads(self):
        """Edits stay 0640 root-owned and keep comments; a restarted daemon loads the
        new hook (case 34)."""
        with open(self.config_path, "a") as f:
            f.write("# a comment the edit keeps\n")
        with open(self.config_path) as f:
            before = f.read()
        daemon = self.start_daemon()
        reply = yield defer.Deferred.fromCoroutine(self.call(
            commands.HookCreate, mailbox="alice", event="on_receive", name="kept",
            body='{"cmd": ["/bin/true"], "timeout_secs": 5}'))
        self.assertEqual(reply, {"name": "kept", "secret": None})
        st = os.stat(self.config_path)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o640)
        self.assertEqual(st.st_uid, os.geteuid())
        with open(self.config_path) as f:
            after = f.read()
        added = ('[[mailboxes.alice.hooks]]\nname = "kept"\nevent = "on_receive"\n'
                 'type = "cmd"\ncmd = ["/bin/true"]\ntimeout_secs = 5\n\n')
        self.assertEqual(after.replace(added, ""), before)
        self.assertEqual([n for n in os.listdir(self.config_dir) if ".tmp." in n], [])
        yield stop_daemon(daemon)
        restarted = self.start_daemon()
        [hook] = restarted.live.current.mailbox("alice").hooks
        self.assertEqual((hook.name, hook.timeout_secs), ("kept", 5))

    @defer.inlineCallbacks
    def test_reload_waits_for_mutation(self):
        """A SIGHUP reload waits for the config lock, then sees the mutation's file."""
        daemon = self.start_daemon()
        yield daemon.live.lock.acquire()
        reloaded = daemon.reload()
        self.assertNoResult(reloaded)
        self.assertNotIn("config reloaded", self.logged())
        daemon.live.lock.release()
        yield reloaded
        self.assertIn("<6>aimx.config: config reloaded", self.logged())

    @defer.inlineCallbacks
    def test_reload_after_mutation(self):
        """A hand edit after a socket create reloads on SIGHUP with both; a bad edit is refused."""
        daemon = self.start_daemon()
        yield defer.Deferred.fromCoroutine(
            self.call(commands.MailboxCreate, name="made", owner=OWNER))
        with open(self.config_path, "a") as f:
            f.write(f'\n[mailboxes.hand]\naddress = "hand@test.local"\nowner = "{OWNER}"\n')
        yield daemon.reload()
        self.assertIsNotNone(daemon.live.current.mailbox("made"))
        self.assertIsNotNone(daemon.live.current.mailbox("hand"))
        with open(self.config_path, "a") as f:
            f.write("not = = toml\n")
        yield daemon.reload()
        self.assertIn("<3>aimx.config: config reload failed, keeping the previous config",
                      self.logged())
        self.assertIsNotNone(daemon.live.current.mailbox("hand"))
        e = yield self.assertFailure(defer.Deferred.fromCoroutine(
            self.call(commands.MailboxCreate, name="made", owner=OWNER)), MailboxError)
        self.assertIn("already exists", str(e))


class LimitTests(ControlTestCase):
    """The socket's bounds on the real daemon, as each client shows them."""

    def setUp(self):
        super().setUp()
        self.start_daemon()

    async def hold(self, n: int) -> list:
        """C{n} connections of this uid, each served once and kept open."""
        held = []
        for _ in range(n):
            connection = await self.connect()
            await connection.call(commands.Version)
            held.append(connection)
        return held

    def in_thread(self, coroutine_function):
        """Run an asyncio coroutine function in a thread with its own loop."""
        return threads.deferToThread(asyncio.run, coroutine_function())

    async def test_per_uid_cap_in_every_client(self):
        """The 17th connection of a uid: TEMP with the reason in the CLI, MCP and both clients."""
        held = await self.hold(16)
        reason = "too many control connections (16 per user); retry later"
        e = await self.assertFailure(defer.Deferred.fromCoroutine(
            self.call(commands.MailboxList)), TempError)
        self.assertEqual(str(e), reason)
        path = self.socket_path

        async def aio():
            try:
                await aioclient.ControlClient(path).call(wire.MailboxList)
            except TempError as e:
                return str(e)

        self.assertEqual(await self.in_thread(aio), reason)

        async def mcp():
            try:
                await tools.Tools(aioclient.ControlClient(path)).mailbox_list()
            except ToolError as e:
                return str(e)

        self.assertEqual(await self.in_thread(mcp), f"[TEMP] {reason}")
        env = dict(os.environ, PYTHONPATH=REPO, AIMX_CONFIG_DIR=self.config_dir,
                   AIMX_RUNTIME_DIR=self.runtime_dir)
        result = await threads.deferToThread(
            subprocess.run, [sys.executable, "-m", "aimx", "mailboxes", "create", "eve",
                             "--owner", OWNER],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
        self.assertEqual((result.returncode, result.stderr), (1, f"Error: [TEMP] {reason}\n"))
        self.assertNotIn("eve", self.configured())
        self.assertIn(f'<5>aimx.control: connection refused peer_uid={os.getuid()} '
                      f'reason="{reason}"', self.logged())
        factory = self.daemon.control.factory
        closed = self.closed_until(lambda: factory.admitted == 15)
        held[0].close()
        await closed
        self.assertIn("tag", await self.call(commands.Version))

    def closed_until(self, condition) -> defer.Deferred:
        """Fires once the daemon has seen connections close until C{condition()} holds."""
        factory = self.daemon.control.factory
        done = defer.Deferred()
        seen = factory.connection_closed

        def connection_closed(proto):
            seen(proto)
            if condition() and not done.called:
                done.callback(None)

        self.patch(factory, "connection_closed", connection_closed)
        return done

    async def test_2mib_mailbox_create_dropped(self):
        """A 2 MiB MAILBOX-CREATE box on the real socket is dropped without a reply."""
        box = {b"_command": b"MAILBOX-CREATE", b"_ask": b"1", b"name": b"eve"}
        box.update({f"pad{i:02d}".encode(): b"p" * 65535 for i in range(33)})
        data = wire.serialize_box(box)
        path = self.socket_path

        def raw():
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(30)
                s.connect(path)
                try:
                    s.sendall(data)
                    return s.recv(65536)
                except (BrokenPipeError, ConnectionResetError):
                    return b""

        self.assertEqual(await threads.deferToThread(raw), b"")
        self.assertIn("command=MAILBOX-CREATE limit=", self.logged())
        self.assertNotIn("eve", self.configured())
        self.assertIn("tag", await self.call(commands.Version))


class SecondUidTests(SecondUid, ControlTestCase):
    """nobody against root's mailboxes, with the kernel's peer credentials."""

    async def root_hook(self):
        await self.call(commands.HookCreate, mailbox="alice", event="on_receive",
                        name="root_hook", body='{"cmd": ["/bin/true"]}')

    @defer.inlineCallbacks
    def test_cannot_touch_other_mailbox(self):
        """nobody cannot hook, delete, show, mark or list root's mailbox, or delete its hook."""
        yield defer.Deferred.fromCoroutine(self.root_hook())
        before = open(self.config_path).read()
        results = yield defer.Deferred.fromCoroutine(self.nobody_commands(
            ("HookCreate", {"mailbox": "alice", "event": "on_receive",
                            "body": '{"cmd": ["/bin/true"]}'}),
            ("MailboxDelete", {"name": "alice", "force": True}),
            ("MailboxDelete", {"name": "nonexistent"}),
            ("MailboxShow", {"name": "alice"}),
            ("MarkRead", {"mailbox": "alice", "id": "2026-01-01-nothing"}),
            ("HookDelete", {"name": "root_hook"}),
            ("MailboxList", {}),
            ("HookList", {}),
        ))
        self.assertEqual(results, [
            {"error": "EACCES", "reason": "not authorized"},
            {"error": "MAILBOX", "reason": "mailbox 'alice' does not exist"},
            {"error": "MAILBOX", "reason": "mailbox 'nonexistent' does not exist"},
            {"error": "MAILBOX", "reason": "mailbox 'alice' does not exist"},
            {"error": "EACCES", "reason": "not authorized"},
            {"error": "ENOENT", "reason": "hook 'root_hook' not found"},
            {"ok": {"mailboxes": []}},
            {"ok": {"hooks": []}},
        ])
        self.assertEqual(open(self.config_path).read(), before)
        self.assertIn(f"connection accepted peer_uid={NOBODY}", self.logged())

    @defer.inlineCallbacks
    def test_can_on_own_mailbox(self):
        """nobody creates a mailbox it owns, hooks it, marks its mail, and deletes it."""
        [created] = yield defer.Deferred.fromCoroutine(self.nobody_commands(
            ("MailboxCreate", {"name": "nobox", "owner": "root"})))
        self.assertEqual(created, {"ok": {"address": "nobox@test.local"}})
        for sub in ("inbox", "sent"):
            st = os.stat(os.path.join(self.data_dir, sub, "nobox"))
            self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode)), (NOBODY, 0o700))
        self.assertEqual(load_toml(self.config_path)["mailboxes"]["nobox"]["owner"], "nobody")
        yield self.smtp(PLAIN, ["nobox@test.local"])
        [path] = self.inbox("nobox")
        stem = os.path.basename(path)[:-3]
        results = yield defer.Deferred.fromCoroutine(self.nobody_commands(
            ("HookCreate", {"mailbox": "nobox", "event": "on_receive", "name": "mine",
                            "body": '{"cmd": ["/bin/true"]}'}),
            ("MarkRead", {"mailbox": "nobox", "id": stem}),
            ("MailboxList", {}),
            ("HookList", {}),
            ("HookDelete", {"name": "mine"}),
            ("MailboxDelete", {"name": "nobox", "force": True}),
        ))
        self.assertEqual(results[0], {"ok": {"name": "mine", "secret": None}})
        self.assertEqual(results[1], {"ok": {}})
        self.assertEqual([r["name"] for r in results[2]["ok"]["mailboxes"]], ["nobox"])
        self.assertEqual([r["name"] for r in results[3]["ok"]["hooks"]], ["mine"])
        self.assertEqual(results[4:], [{"ok": {}}, {"ok": {}}])
        self.assertNotIn("nobox", self.configured())

    @defer.inlineCallbacks
    def test_mark_cannot_escape_own_mailbox(self):
        """nobody's MARK through a symlinked bundle or a hard link never reaches root's files."""
        [created] = yield defer.Deferred.fromCoroutine(self.nobody_commands(
            ("MailboxCreate", {"name": "nobox"})))
        self.assertIn("ok", created)
        inbox = os.path.join(self.data_dir, "inbox", "nobox")
        victim_dir = os.path.abspath(self.mktemp())
        os.makedirs(victim_dir)
        os.chmod(victim_dir, 0o755)
        secret = b"+++\nread = false\n+++\nroot only\n"
        for name in ("evil.md", "hl.md"):
            with open(os.path.join(victim_dir, name), "wb") as f:
                f.write(secret)
            os.chmod(os.path.join(victim_dir, name), 0o600)
        # What the owner could do in its own directory (made here as root, then handed over).
        os.symlink(victim_dir, os.path.join(inbox, "evil"))
        os.lchown(os.path.join(inbox, "evil"), NOBODY, NOBODY)
        os.link(os.path.join(victim_dir, "hl.md"), os.path.join(inbox, "hl.md"))
        results = yield defer.Deferred.fromCoroutine(self.nobody_commands(
            ("MarkRead", {"mailbox": "nobox", "id": "evil"}),
            ("MarkRead", {"mailbox": "nobox", "id": "hl"}),
        ))
        self.assertEqual(results, [
            {"error": "NOTFOUND", "reason": "email 'evil' not found in inbox/nobox"},
            {"error": "NOTFOUND", "reason": "email 'hl' not found in inbox/nobox"},
        ])
        for name in ("evil.md", "hl.md"):
            path = os.path.join(victim_dir, name)
            with open(path, "rb") as f:
                self.assertEqual(f.read(), secret)
            st = os.stat(path)
            self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode)), (0, 0o600))
        self.assertEqual(sorted(os.listdir(victim_dir)), ["evil.md", "hl.md"])
        self.assertEqual(sorted(os.listdir(inbox)), ["evil", "hl.md"])

    @defer.inlineCallbacks
    def test_cannot_read_other_inbox(self):
        """Another owner's inbox directory is closed to nobody (security case 3)."""
        yield self.smtp(PLAIN, ["alice@test.local"])
        inbox = os.path.join(self.data_dir, "inbox", "alice")
        result = yield threads.deferToThread(
            subprocess.run, ["ls", inbox], user=NOBODY, group=NOBODY, extra_groups=[],
            capture_output=True, text=True, cwd="/",
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("Permission denied", result.stderr)


class SigtermTests(ControlTestCase):
    """`aimx serve` as a process: SIGTERM with CRUD commands in flight."""

    @defer.inlineCallbacks
    def test_sigterm_with_50_in_flight(self):
        """SIGTERM mid-burst: exit 0, socket gone, config.toml valid with every answered create."""
        proc = yield defer.Deferred.fromCoroutine(self.serve("--bind", "127.0.0.1:0"))
        connections = []
        for _ in range(5):
            connections.append((yield defer.Deferred.fromCoroutine(self.connect())))
        outcomes = {}
        first = defer.Deferred()

        def record(result, name):
            outcomes[name] = result
            if not first.called:
                first.callback(None)

        calls = [
            connections[i % 5].call(commands.MailboxCreate, name=f"box{i:02d}", owner=OWNER)
            .addBoth(record, f"box{i:02d}")
            for i in range(50)
        ]
        yield first
        proc.send_signal(signal.SIGTERM)
        yield defer.gatherResults(calls)
        self.assertEqual((yield threads.deferToThread(proc.wait, 60)), 0)
        self.assertFalse(os.path.lexists(self.socket_path))
        created = {name for name, result in outcomes.items()
                   if result == {"address": f"{name}@test.local"}}
        self.assertTrue(created)
        config, _ = configfile.load(self.config_dir)
        self.assertEqual({mb.name for mb in config.mailboxes} - {"alice", "bob", "catchall"},
                         created)


class ReusedNameTests(SecondUid, ControlTestCase):
    """A name deleted and created again by another uid (issue 18 review): nothing of
    the earlier mailbox passes to the new owner."""

    @defer.inlineCallbacks
    def test_holds_and_history_stay_behind(self):
        """root's alice, with a pending hold and a hook, is deleted; nobody creates alice:
        its HELD-LIST is empty, the old hold NOT-FOUND, its audit starts at its creation."""
        hold_id = "20260101-000000-deadbeef"
        md = frontmatter.render({"hold_id": hold_id, "mailbox": "alice", "state": "pending",
                                 "subject": "root's draft", "to": "x@example.com",
                                 "expires_at": "2999-01-01T00:00:00+00:00",
                                 "headers": []}, "ROOT-PRIVATE-DRAFT\n")
        held.hold(self.data_dir, "alice", hold_id, md, b"")
        yield defer.Deferred.fromCoroutine(self.call(
            commands.HookCreate, mailbox="alice", event="on_receive", name="old",
            body='{"cmd": ["/bin/true"]}'))
        yield defer.Deferred.fromCoroutine(self.call(commands.HookDelete, name="old"))
        yield defer.Deferred.fromCoroutine(self.call(
            commands.MailboxDelete, name="alice", force=True))
        self.assertEqual(held.pending(self.data_dir, "alice"), [])
        with open(os.path.join(self.data_dir, "held", "alice", "rejected",
                               hold_id + ".md")) as f:
            self.assertIn('reason = "mailbox deleted"', f.read())
        results = yield defer.Deferred.fromCoroutine(self.nobody_commands(
            ("MailboxCreate", {"name": "alice"}),
            ("HeldList", {}),
            ("HeldShow", {"id": hold_id}),
            ("AuditRead", {}),
        ))
        self.assertIn("ok", results[0])
        self.assertEqual(results[1:3], [
            {"ok": {"holds": []}},
            {"error": "NOTFOUND", "reason": f"held message '{hold_id}' not found"}])
        records = results[3]["ok"]["records"]
        self.assertEqual([(r["event"], r.get("action"), r["mailbox"]) for r in records],
                         [("mailbox", "created", "alice")])
        everything = yield defer.Deferred.fromCoroutine(self.call(commands.AuditRead))
        self.assertIn(("held", "rejected", "mailbox deleted"),
                      [(r["event"], r.get("action"), r.get("reason"))
                       for r in everything["records"]])
