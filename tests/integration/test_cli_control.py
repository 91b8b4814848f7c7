"""`aimx mailboxes` / `aimx hooks` as processes against a real daemon (docs/cli.md).

The daemon runs in-process; the CLI runs as a subprocess (as the test user, or
as nobody through L{tests.integration.asuser} when the tests run as root).
Output is piped, so it must carry no colour escapes.
"""

import os
import pty
import subprocess
import sys
import tempfile

from twisted.internet import defer, threads

from aimx.testing.fakes import hook_table
from tests.integration.base import base_config, load_toml
from tests.integration.base import IS_ROOT, REPO, SecondUid
from tests.integration.test_control import OWNER, ControlTestCase

SUPPORT = {"support": {
    "owner": OWNER, "trust": "verified", "trusted_senders": ["*@example.org", "boss@gmail.com"],
    "hooks": [hook_table("on_receive", ["/bin/echo", "urgent"], name="inbound_urgent"),
              hook_table("after_send", ["/usr/local/bin/notify", "sent"],
                         name="outbound_notify")],
}}

REFUSED = "Error: refusing to delete without --yes (stdin is not a terminal)\n"


def run_at_terminal(argv, typed: str, **kwargs) -> subprocess.CompletedProcess:
    """Run C{argv} with a pseudo-terminal as stdin, C{typed} already typed on it.

    stdout and stderr stay pipes, so the output is still plain text.
    """
    master, slave = pty.openpty()
    try:
        os.write(master, typed.encode())
        return subprocess.run(argv, stdin=slave, capture_output=True, text=True, **kwargs)
    finally:
        os.close(slave)
        os.close(master)


class CliTestCase(ControlTestCase):
    def aimx(self, *args, stdin="", runtime_dir=None, tty=False, program=("-m", "aimx")):
        """Run `python -m aimx ARGS` in a thread; fires with the CompletedProcess.

        @param tty: stdin is a terminal on which C{stdin} is typed (else a pipe).
        @param program: what the interpreter runs instead of C{-m aimx}.
        """
        env = dict(os.environ, PYTHONPATH=REPO, AIMX_CONFIG_DIR=self.config_dir,
                   AIMX_RUNTIME_DIR=runtime_dir or self.runtime_dir)
        env.pop("NO_COLOR", None)
        argv = [sys.executable, *program, *args]
        options = dict(env=env, cwd=REPO, timeout=60)
        if tty:
            d = threads.deferToThread(run_at_terminal, argv, stdin, **options)
        else:
            d = threads.deferToThread(subprocess.run, argv, input=stdin, capture_output=True,
                                      text=True, **options)
        return d.addCallback(self.plain)

    def as_nobody_cli(self, *args, runtime_dir=None):
        d = self.as_nobody("cli", *args, runtime_dir=runtime_dir)
        return d.addCallback(lambda r: self.plain(subprocess.CompletedProcess(
            r.args, r.returncode, r.stdout.decode(), r.stderr.decode())))

    def plain(self, result):
        self.assertNotIn("\x1b", result.stdout + result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        return result

    def no_daemon_dir(self) -> str:
        path = tempfile.mkdtemp(prefix="aimx-none-")
        os.chmod(path, 0o755)
        self.addCleanup(os.rmdir, path)
        return path


class MailboxCliTests(CliTestCase):
    def setUp(self):
        super().setUp()
        self.write_config(base_config(self.data_dir, mailboxes=SUPPORT))
        self.start_daemon()

    @defer.inlineCallbacks
    def test_create(self):
        """Create through the daemon: one success line, no restart hint (cli case 14)."""
        result = yield self.aimx("mailboxes", "create", "eve", "--owner", OWNER)
        self.assertEqual((result.returncode, result.stdout),
                         (0, f"Mailbox 'eve' created (owner: {OWNER}).\n"))
        self.assertNotIn("Restart the daemon", result.stdout + result.stderr)
        self.assertIn("eve", self.configured())
        again = yield self.aimx("mailboxes", "create", "eve", "--owner", OWNER)
        self.assertEqual(again.returncode, 1)
        self.assertEqual(again.stderr, "Error: [MAILBOX] mailbox 'eve' already exists\n")

    @defer.inlineCallbacks
    def test_bad_name(self):
        """A bad name is refused before the daemon is asked."""
        result = yield self.aimx("mailboxes", "create", "a/b", "--owner", OWNER)
        self.assertEqual(result.returncode, 1)
        self.assertIn("Mailbox name contains invalid character '/'", result.stderr)

    @defer.inlineCallbacks
    def test_list_and_alias(self):
        """`mailboxes list` and `mailbox list` print the same table (cli case 5)."""
        yield self.smtp(b"Subject: x\r\nFrom: a@example.com\r\n\r\nhi\r\n", ["alice@test.local"])
        long_form = yield self.aimx("mailboxes", "list")
        alias = yield self.aimx("mailbox", "list")
        self.assertEqual(long_form.stdout, alias.stdout)
        lines = long_form.stdout.splitlines()
        self.assertEqual(lines[0].split(), ["MAILBOX", "INBOX", "UNREAD", "SENT"])
        self.assertIn(["alice", "1", "1", "0"], [line.split() for line in lines])

    @defer.inlineCallbacks
    def test_delete_nonempty(self):
        """A mailbox with mail is refused (NONEMPTY), then deleted once empty (cli case 16)."""
        yield self.aimx("mailboxes", "create", "qux", "--owner", OWNER)
        yield self.smtp(b"Subject: x\r\nFrom: a@example.com\r\n\r\nhi\r\n", ["qux@test.local"])
        result = yield self.aimx("mailboxes", "delete", "--yes", "qux")
        self.assertEqual(result.returncode, 1)
        self.assertIn("NONEMPTY", result.stderr)
        self.assertIn("qux", result.stderr)
        self.assertIn("qux", self.configured())
        for path in self.inbox("qux"):
            os.unlink(path)
        result = yield self.aimx("mailboxes", "delete", "--yes", "qux")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("Mailbox 'qux' deleted.", result.stdout)
        self.assertNotIn("qux", self.configured())

    @defer.inlineCallbacks
    def test_force_delete_declined(self):
        """At a terminal --force asks with counts; `n` cancels with exit 0 (cli case 17)."""
        yield self.aimx("mailboxes", "create", "yon", "--owner", OWNER)
        yield self.smtp(b"Subject: x\r\nFrom: a@example.com\r\n\r\nhi\r\n", ["yon@test.local"])
        result = yield self.aimx("mailboxes", "delete", "--force", "yon", stdin="n\n", tty=True)
        self.assertEqual(result.returncode, 0)
        self.assertIn("inbox/yon/: 1 file\n", result.stdout)
        self.assertIn("sent/yon/:  0 files", result.stdout)
        self.assertIn("Cancelled.", result.stdout)
        self.assertIn("yon", self.configured())

    @defer.inlineCallbacks
    def test_delete_not_a_terminal(self):
        """Piped stdin and no --yes: refused with exit 2 whatever is piped; nothing deleted."""
        yield self.aimx("mailboxes", "create", "yon", "--owner", OWNER)
        for extra in ([], ["--force"]):
            result = yield self.aimx("mailboxes", "delete", *extra, "yon", stdin="y\n")
            self.assertEqual((result.returncode, result.stdout, result.stderr), (2, "", REFUSED))
        self.assertIn("yon", self.configured())

    @defer.inlineCallbacks
    def test_force_delete_confirmed(self):
        """--force with `y` at a terminal wipes and unregisters."""
        yield self.aimx("mailboxes", "create", "yon", "--owner", OWNER)
        yield self.smtp(b"Subject: x\r\nFrom: a@example.com\r\n\r\nhi\r\n", ["yon@test.local"])
        result = yield self.aimx("mailboxes", "delete", "--force", "yon", stdin="y\n", tty=True)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(self.inbox("yon"), [])
        self.assertNotIn("yon", self.configured())

    @defer.inlineCallbacks
    def test_delete_catchall(self):
        """--force on the catchall is refused before any I/O (cli case 18)."""
        result = yield self.aimx("mailboxes", "delete", "--force", "--yes", "catchall")
        self.assertEqual(result.returncode, 1)
        self.assertIn("catchall", result.stderr)
        plain = yield self.aimx("mailboxes", "delete", "--yes", "catchall")
        self.assertIn("[VALIDATION]", plain.stderr)
        self.assertIn("catchall", self.configured())

    @defer.inlineCallbacks
    def test_show(self):
        """show prints address, trust, senders, hooks by event and counts (cli case 19)."""
        result = yield self.aimx("mailboxes", "show", "support")
        self.assertEqual(result.returncode, 0, result.stderr)
        for text in ("support@test.local", "verified", "*@example.org", "boss@gmail.com",
                     "inbound_urgent", "outbound_notify", "on_receive", "after_send",
                     "inbox: 0 (0 unread)", "sent:  0"):
            self.assertIn(text, result.stdout)
        ghost = yield self.aimx("mailboxes", "show", "ghost")
        self.assertEqual((ghost.returncode, ghost.stderr),
                         (1, "Error: mailbox 'ghost' does not exist\n"))


class HookCliTests(CliTestCase):
    def setUp(self):
        super().setUp()
        self.start_daemon()

    @defer.inlineCallbacks
    def test_create_live(self):
        """An anonymous hook is created live and stored without a name (cli case 22)."""
        result = yield self.aimx("hooks", "create", "--mailbox", "alice", "--event",
                                 "on_receive", "--cmd", '["/bin/echo","hi"]')
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("Hook created", result.stdout)
        self.assertIn("(live via daemon)", result.stdout)
        self.assertNotIn("Hint:", result.stdout)
        self.assertEqual(result.stderr, "")
        # alice has the default policy (trust = "none"): say that it will not fire.
        self.assertIn("Note: mailbox 'alice' has trust = \"none\", so no mail to it is trusted "
                      "and this hook will not fire.", result.stdout)
        [hook] = load_toml(self.config_path)["mailboxes"]["alice"]["hooks"]
        self.assertNotIn("name", hook)
        self.assertEqual(hook["cmd"], ["/bin/echo", "hi"])

    @defer.inlineCallbacks
    def test_create_missing_program(self):
        """A single program path that does not exist yet: created, with a warning."""
        result = yield self.aimx("hooks", "create", "--mailbox", "alice", "--event",
                                 "after_send", "--cmd", "/nonexistent/aimx-hook")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stderr, (
            "Warning: hook program /nonexistent/aimx-hook does not exist; the hook is created "
            "but fails until the program is installed.\n"))
        [hook] = load_toml(self.config_path)["mailboxes"]["alice"]["hooks"]
        self.assertEqual(hook["cmd"], ["/nonexistent/aimx-hook"])

    @defer.inlineCallbacks
    def test_timeout(self):
        """--timeout-secs 5 is stored and listed; 700 is refused (cli case 23)."""
        result = yield self.aimx("hooks", "create", "--mailbox", "alice", "--event",
                                 "on_receive", "--cmd", '["/bin/true"]', "--name", "t5",
                                 "--timeout-secs", "5")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(load_toml(self.config_path)["mailboxes"]["alice"]["hooks"][0]
                         ["timeout_secs"], 5)
        listing = yield self.aimx("hooks", "list")
        self.assertRegex(listing.stdout, r"t5 +alice +on_receive +5 ")
        result = yield self.aimx("hooks", "create", "--mailbox", "alice", "--event",
                                 "on_receive", "--cmd", '["/bin/true"]', "--timeout-secs", "700")
        self.assertEqual(result.returncode, 1)
        self.assertIn("600", result.stderr)

    @defer.inlineCallbacks
    def test_bad_name_and_event(self):
        """A bad --name is exit 1 with the rule; a bad --event a usage error (cli case 24)."""
        result = yield self.aimx("hooks", "create", "--mailbox", "alice", "--event",
                                 "on_receive", "--cmd", '["/bin/true"]', "--name", "bad name!")
        self.assertEqual(result.returncode, 1)
        self.assertIn("must match [a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}", result.stderr)
        result = yield self.aimx("hooks", "create", "--mailbox", "alice", "--event", "nope",
                                 "--cmd", '["/bin/true"]')
        self.assertEqual(result.returncode, 2)
        self.assertIn("nope", result.stderr)

    @defer.inlineCallbacks
    def test_delete(self):
        """Unknown hooks are `not found`; `hook list` works; a hook is deleted live (case 25)."""
        result = yield self.aimx("hooks", "delete", "does_not_exist", "--yes")
        self.assertEqual((result.returncode, result.stderr),
                         (1, "Error: hook 'does_not_exist' not found\n"))
        yield self.aimx("hooks", "create", "--mailbox", "alice", "--event", "on_receive",
                        "--cmd", '["/bin/true"]', "--name", "gone")
        listing = yield self.aimx("hook", "list")
        self.assertIn("gone", listing.stdout)
        declined = yield self.aimx("hooks", "delete", "gone", stdin="\n", tty=True)
        self.assertEqual(declined.returncode, 0)
        self.assertIn("About to delete hook:", declined.stdout)
        self.assertIn("Cancelled.", declined.stdout)
        piped = yield self.aimx("hooks", "delete", "gone", stdin="y\n")
        self.assertEqual((piped.returncode, piped.stdout, piped.stderr), (2, "", REFUSED))
        result = yield self.aimx("hooks", "delete", "gone", "--yes")
        self.assertEqual(result.stdout, "Hook deleted: gone (live via daemon)\n")
        listing = yield self.aimx("hook", "list")
        self.assertEqual(listing.stdout, "No hooks configured.\n")


class DaemonDownTests(CliTestCase):
    """No daemon: root edits config.toml directly; anyone else is told to start it."""

    @defer.inlineCallbacks
    def test_root_hook_fallback(self):
        """Root with the daemon down creates the hook in config.toml, with a Note (case 21)."""
        if not IS_ROOT:
            raise self.skipTest("the direct-edit fallback is root's")
        result = yield self.aimx("hooks", "create", "--mailbox", "alice", "--event",
                                 "on_receive", "--cmd", '["/bin/echo","hi"]', "--name",
                                 "alice_greeter")
        self.assertEqual(result.returncode, 0, result.stderr)
        for text in ("Hook created", "alice_greeter", "Note:"):
            self.assertIn(text, result.stdout)
        listing = yield self.aimx("hooks", "list")
        self.assertRegex(listing.stdout, r"alice_greeter +alice +on_receive")

    @defer.inlineCallbacks
    def test_root_mailbox_fallback(self):
        """Root with the daemon down creates and deletes mailboxes directly, hinting a restart."""
        if not IS_ROOT:
            raise self.skipTest("the direct-edit fallback is root's")
        os.makedirs(os.path.join(self.data_dir, "inbox"))
        os.makedirs(os.path.join(self.data_dir, "sent"))
        result = yield self.aimx("mailboxes", "create", "eve", "--owner", "nobody")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("Note: aimx daemon not running; the change takes effect when it starts.",
                      result.stdout)
        self.assertEqual(os.stat(os.path.join(self.data_dir, "inbox", "eve")).st_uid, 65534)
        self.assertIn("eve", self.configured())
        result = yield self.aimx("mailboxes", "delete", "eve", "--yes")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotIn("eve", self.configured())
        self.assertFalse(os.path.exists(os.path.join(self.data_dir, "inbox", "eve")))

    @defer.inlineCallbacks
    def test_non_root_told_to_start_daemon(self):
        """A non-root create without a daemon exits 2 and edits nothing (cli case 13)."""
        before = open(self.config_path).read()
        args = ("mailboxes", "create", "eve")
        if IS_ROOT:
            result = yield self.as_nobody_cli(*args, runtime_dir=self.no_daemon_dir())
        else:
            result = yield self.aimx(*args)
        self.assertEqual(result.returncode, 2)
        self.assertIn("aimx daemon not running (no socket at ", result.stderr)
        self.assertIn("daemon must be running", result.stderr)
        self.assertIn("aimx serve", result.stderr)
        self.assertIn("sudo", result.stderr)
        self.assertEqual(open(self.config_path).read(), before)

    @defer.inlineCallbacks
    def test_non_root_hooks_told_to_start_daemon(self):
        """A non-root `hooks list` without a daemon: not running, how to start it; no authz."""
        if IS_ROOT:
            runtime_dir = self.no_daemon_dir()
            result = yield self.as_nobody_cli("hooks", "list", runtime_dir=runtime_dir)
        else:
            runtime_dir = self.runtime_dir
            result = yield self.aimx("hooks", "list")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr, (
            f"Error: aimx daemon not running (no socket at {runtime_dir}/aimx.sock). Start the "
            f"aimx that uses {runtime_dir} (`aimx serve --runtime-dir {runtime_dir}` with its "
            "--config-dir); if it was `make demo`, run that again and use the "
            "AIMX_RUNTIME_DIR it prints. The daemon must be running for non-root hook "
            "commands; with sudo, aimx uses config.toml directly instead.\n"))


class NonRootCliTests(SecondUid, CliTestCase):
    """The CLI as nobody against the running daemon (root only)."""

    @defer.inlineCallbacks
    def test_owner_ignored(self):
        """--owner of someone else warns and the caller owns the mailbox (cli case 15)."""
        result = yield self.as_nobody_cli("mailboxes", "create", "x", "--owner", "bob")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("--owner ignored for non-root callers; mailbox will be owned by `nobody`",
                      result.stderr)
        self.assertEqual(load_toml(self.config_path)["mailboxes"]["x"]["owner"], "nobody")
        listing = yield self.as_nobody_cli("mailboxes", "list")
        self.assertEqual([line.split()[0] for line in listing.stdout.splitlines()[1:]], ["x"])

    @defer.inlineCallbacks
    def test_all_needs_root(self):
        """`mailboxes list --all` as non-root is not authorized (cli case 20)."""
        result = yield self.as_nobody_cli("mailboxes", "list", "--all")
        self.assertEqual(result.returncode, 1)
        self.assertIn("not authorized: --all requires root (run with sudo)", result.stderr)

    @defer.inlineCallbacks
    def test_foreign_mailbox(self):
        """nobody cannot hook or delete root's mailbox through the CLI."""
        hook = yield self.as_nobody_cli("hooks", "create", "--mailbox", "alice", "--event",
                                        "on_receive", "--cmd", '["/bin/true"]')
        self.assertEqual(hook.returncode, 1)
        self.assertIn("not authorized", hook.stderr)
        delete = yield self.as_nobody_cli("mailboxes", "delete", "alice", "--yes")
        self.assertEqual(delete.returncode, 1)
        self.assertEqual(delete.stderr, "Error: mailbox 'alice' does not exist\n")
        self.assertIn("alice", self.configured())
