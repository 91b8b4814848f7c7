"""The mailbox and hook verbs of the CLI against a fake daemon connection (docs/cli.md)."""

import argparse
import io
import json
import os
import shutil
import tempfile
import tomllib

import attrs
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from aimx.cli import arguments, hooks, mailboxes, session
from aimx.cli.session import CliError, Session, execute
from aimx.cli.term import Terminal, clip, cmd_text, colour_enabled
from aimx.control import wire
from aimx.ops import units
from aimx.errors import (
    ConnectFailed,
    DaemonNotRunning,
    MailboxError,
    NoEntry,
    ValidationError,
)
from aimx.host import initsystem
from aimx.store import audit as auditfiles
from aimx.store import configfile
from aimx.testing import fakes
from aimx.testing.fakes import TTY, FakeControlClient, FakePasswd

USERS = {"root": 0, "alice": 2001, "bob": 2002}
SOCKET = "/run/aimx/aimx.sock"
#: How to start the daemon on a host without the aimx service (L{session.start_advice}).
START = "Start it with `sudo aimx serve`, or install it as a service with `sudo aimx setup`."
DOWN = f"aimx daemon not running (no socket at {SOCKET}). {START}"
REFUSED = "Error: refusing to delete without --yes (stdin is not a terminal)\n"
NOTE_NONE = (
    "Note: mailbox 'alice' has trust = \"none\", so no mail to it is trusted and this hook "
    "will not fire. To run it, set trust = \"verified\" and trusted_senders for the mailbox "
    "in config.toml (as root), or re-create the hook with --fire-on-untrusted to run it for "
    "all mail.\n"
)


def show_reply(trust="none", senders=(), owner="alice", name="alice"):
    """A MAILBOX-SHOW answer with the effective trust settings."""
    return {"mailbox": {
        "name": name, "address": f"{name}@test.local", "owner": owner, "trust": trust,
        "trusted_senders": list(senders), "hooks": [], "inbox_total": 0, "inbox_unread": 0,
        "sent_total": 0,
    }}


class VerbTestCase(SynchronousTestCase):
    def setUp(self):
        self.config_dir = os.path.abspath(self.mktemp())
        os.makedirs(self.config_dir)
        # A host without an init system or an installed service (deterministic advice).
        host = os.path.abspath(self.mktemp())
        os.makedirs(host)
        self.host = initsystem.System(root=host)

    def write_config(self, text=None, **top):
        """config.toml: C{text}, else alice (owned by alice) and the C{top} keys."""
        data_dir = os.path.join(self.config_dir, "data")
        for sub in ("inbox", "sent"):
            os.makedirs(os.path.join(data_dir, sub), exist_ok=True)
        with open(configfile.config_path(self.config_dir), "w") as f:
            f.write(text or fakes.config_text(
                data_dir=data_dir, mailboxes={"alice": {"owner": "alice"}}, **top))

    def run_verb(self, verb, argv, *, euid=0, replies=None, stdin="", environ=None,
                 down=False, data_dir=None, tty=False):
        """Run a verb; returns (exit code, stdout, stderr, the fake client).

        @param data_dir: the C{--data-dir} override.
        @param tty: stdin is a terminal (else it is not, as when piped).
        """
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers(dest="verb")
        common = argparse.ArgumentParser(add_help=False)
        arguments.mailboxes(sub, common)
        arguments.hooks(sub, common)
        args = parser.parse_args(argv)
        args.config_dir, args.data_dir = self.config_dir, data_dir
        fake = FakeControlClient(replies or {})
        out, err = io.StringIO(), io.StringIO()
        if down:
            connect = lambda: defer.fail(  # noqa: E731
                DaemonNotRunning(f"aimx daemon not running (no socket at {SOCKET})"))
        else:
            connect = lambda: defer.succeed(fake)  # noqa: E731
        stdin = (TTY if tty else io.StringIO)(stdin)
        session = Session(args, connect=connect, euid=euid,
                          term=Terminal(out, err, stdin, {}),
                          environ=environ or {}, passwd=FakePasswd(USERS), system=self.host)
        code = self.successResultOf(defer.Deferred.fromCoroutine(execute(verb, args, session)))
        return code, out.getvalue(), err.getvalue(), fake


class TerminalTests(SynchronousTestCase):
    def test_colour_rules(self):
        """Colour needs a TTY and no NO_COLOR; CLICOLOR=0 and TERM=dumb turn it off."""
        self.assertTrue(colour_enabled(TTY(), {}))
        self.assertFalse(colour_enabled(io.StringIO(), {}))
        self.assertFalse(colour_enabled(TTY(), {"NO_COLOR": "1"}))
        self.assertFalse(colour_enabled(TTY(), {"CLICOLOR": "0"}))
        self.assertFalse(colour_enabled(TTY(), {"TERM": "dumb"}))
        self.assertTrue(colour_enabled(io.StringIO(), {"CLICOLOR_FORCE": "1"}))
        self.assertFalse(colour_enabled(TTY(), {"NO_COLOR": "", "CLICOLOR_FORCE": "1"}))

    def test_styles(self):
        """Styled text carries escapes only when colour is on; Error: is red and bold."""
        err = io.StringIO()
        Terminal(TTY(), err, None, {}).error("boom")
        self.assertEqual(err.getvalue(), "\x1b[31;1mError:\x1b[0m boom\n")
        err = io.StringIO()
        Terminal(TTY(), err, None, {"NO_COLOR": "1"}).error("boom")
        self.assertEqual(err.getvalue(), "Error: boom\n")

    def test_confirm(self):
        """Only y or Y confirms; `yes` and end of input do not."""
        for answer, expected in (("y\n", True), (" Y \n", True), ("yes\n", False), ("", False),
                                 ("\n", False)):
            term = Terminal(io.StringIO(), io.StringIO(), io.StringIO(answer), {})
            self.assertIs(term.confirm("? "), expected)

    def test_interactive(self):
        """Prompts need stdin to be a terminal; a pipe or a closed stream is not one."""
        self.assertTrue(Terminal(io.StringIO(), io.StringIO(), TTY(), {}).interactive)
        self.assertFalse(Terminal(io.StringIO(), io.StringIO(), io.StringIO(), {}).interactive)
        closed = io.StringIO()
        closed.close()
        self.assertFalse(Terminal(io.StringIO(), io.StringIO(), closed, {}).interactive)

    def test_clip(self):
        """Long text is cut with an ellipsis; argv renders as compact JSON."""
        self.assertEqual(clip("abcdef", 4), "abc…")
        self.assertEqual(clip("abc", 4), "abc")
        self.assertEqual(cmd_text(["/bin/echo", "hi"]), '["/bin/echo","hi"]')
        self.assertEqual(len(cmd_text(["/x" * 50])), 60)


class MailboxVerbTests(VerbTestCase):
    def test_create_root(self):
        """Root names the owner; success is one line."""
        code, out, err, fake = self.run_verb(
            mailboxes.create, ["mailboxes", "create", "eve", "--owner", "bob"],
            replies={wire.MailboxCreate: {"address": "eve@test.local"}})
        self.assertEqual((code, out, err), (0, "Mailbox 'eve' created (owner: bob).\n", ""))
        self.assertEqual(fake.calls, [(wire.MailboxCreate, {"name": "eve", "owner": "bob"})])

    def test_create_non_root_owner_ignored(self):
        """A non-root --owner of someone else warns; the caller owns it (cli case 15)."""
        code, out, err, _ = self.run_verb(
            mailboxes.create, ["mailboxes", "create", "x", "--owner", "bob"], euid=2001,
            replies={wire.MailboxCreate: {"address": "x@test.local"}})
        self.assertEqual(code, 0)
        self.assertEqual(err, "Warning: --owner ignored for non-root callers; mailbox will be "
                              "owned by `alice`\n")
        self.assertEqual(out, "Mailbox 'x' created (owner: alice).\n")

    def test_create_empty_owner(self):
        """--owner "" is refused."""
        code, _, err, _ = self.run_verb(mailboxes.create,
                                        ["mailboxes", "create", "x", "--owner", ""], euid=2001)
        self.assertEqual((code, err), (1, "Error: --owner value cannot be empty\n"))

    def test_create_fallback_invalid_owner(self):
        """Root fallback refuses an --owner breaking the owner rule; nothing written."""
        self.write_config()
        path = configfile.config_path(self.config_dir)
        with open(path) as f:
            before = f.read()
        for owner in ("John.Doe", "x" * 33):
            code, _, err, _ = self.run_verb(
                mailboxes.create, ["mailboxes", "create", "jd", "--owner", owner], down=True)
            self.assertEqual(code, 1)
            self.assertIn(f"invalid owner '{owner}'", err)
        with open(path) as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(os.listdir(os.path.join(self.config_dir, "data", "inbox")), [])

    def test_direct_write_validated(self):
        """A direct config rewrite that load would refuse is an error; the file is kept."""
        self.write_config()
        path = configfile.config_path(self.config_dir)
        with open(path) as f:
            before = f.read()
        config, _ = configfile.load(self.config_dir)
        bad = attrs.evolve(config, mailboxes=[attrs.evolve(config.mailbox("alice"),
                                                           owner="Bad.Owner")])
        args = argparse.Namespace(config_dir=self.config_dir, data_dir=None)
        session = Session(args, connect=None, euid=0,
                          term=Terminal(io.StringIO(), io.StringIO(), io.StringIO(), {}),
                          environ={}, passwd=FakePasswd(USERS))
        e = self.assertRaises(CliError, session.write_config, bad)
        self.assertIn("refusing to write an invalid config", str(e))
        with open(path) as f:
            self.assertEqual(f.read(), before)

    def test_create_daemon_down_non_root(self):
        """Non-root without a daemon: not running, how to start it, exit 2 (cli case 13)."""
        for verb, argv in ((mailboxes.create, ["mailboxes", "create", "eve"]),
                           (mailboxes.list_, ["mailboxes", "list"]),
                           (mailboxes.show, ["mailboxes", "show", "eve"]),
                           (mailboxes.delete, ["mailboxes", "delete", "eve", "--yes"])):
            code, _, err, _ = self.run_verb(verb, argv, euid=2001, down=True)
            self.assertEqual((code, err), (2, (
                f"Error: {DOWN} The daemon must be running for non-root mailbox commands; "
                "with sudo, aimx uses config.toml directly instead.\n")), argv)

    def test_create_role_name_non_root(self):
        """A non-root role name is refused with its reason, daemon up or down; never sent."""
        for down in (False, True):
            code, out, err, fake = self.run_verb(
                mailboxes.create, ["mailboxes", "create", "postmaster"], euid=2001, down=down,
                replies={wire.MailboxCreate: {"address": "postmaster@test.local"}})
            self.assertEqual((code, out, err), (
                1, "", "Error: mailbox name 'postmaster' is a role address (RFC 2142); only "
                "root can create it\n"))
            self.assertEqual(fake.calls, [])

    def test_create_role_name_daemon_refusal(self):
        """Should the daemon refuse a role name, the CLI prints `Error: [VALIDATION] <reason>`."""
        reason = "mailbox name 'abuse' is a role address (RFC 2142); only root can create it"
        code, _, err, _ = self.run_verb(
            mailboxes.create, ["mailboxes", "create", "abuse", "--owner", "bob"],
            replies={wire.MailboxCreate: ValidationError(reason)})
        self.assertEqual((code, err), (1, f"Error: [VALIDATION] {reason}\n"))

    def test_create_role_name_root(self):
        """Root sends a role name to the daemon like any other name."""
        code, out, _, fake = self.run_verb(
            mailboxes.create, ["mailboxes", "create", "postmaster", "--owner", "bob"],
            replies={wire.MailboxCreate: {"address": "postmaster@test.local"}})
        self.assertEqual((code, out), (0, "Mailbox 'postmaster' created (owner: bob).\n"))
        self.assertEqual(fake.calls, [(wire.MailboxCreate,
                                       {"name": "postmaster", "owner": "bob"})])

    def test_create_role_name_root_direct(self):
        """Root's direct edit (daemon down) creates a role mailbox too."""
        self.write_config()
        code, out, _, _ = self.run_verb(
            mailboxes.create, ["mailboxes", "create", "abuse", "--owner", "bob"], down=True)
        self.assertEqual(code, 0)
        self.assertIn("Mailbox 'abuse' created (owner: bob).", out)
        config, _ = configfile.load(self.config_dir)
        self.assertEqual(config.mailbox("abuse").owner, "bob")

    if os.geteuid() != 0:
        test_create_role_name_root_direct.skip = "needs root to chown to the test users"

    def test_owner_prompt(self):
        """Root without --owner is asked; blank takes the default, unknown users retry."""
        self.write_config()
        code, out, err, fake = self.run_verb(
            mailboxes.create, ["mailboxes", "create", "alice2"], stdin="nosuch\nbob\n",
            replies={wire.MailboxCreate: {"address": "alice2@test.local"}})
        self.assertEqual(code, 0)
        self.assertIn("Which Linux user should own `alice2@test.local`? "
                      "[(no default, explicit input required)]: ", out)
        self.assertIn("Warning: user 'nosuch' does not exist", err)
        self.assertEqual(fake.calls[0][1]["owner"], "bob")
        code, out, _, fake = self.run_verb(
            mailboxes.create, ["mailboxes", "create", "bob"], stdin="\n",
            replies={wire.MailboxCreate: {"address": "bob@test.local"}})
        self.assertIn("[bob]: ", out)
        self.assertEqual(fake.calls[0][1]["owner"], "bob")

    def test_owner_noninteractive(self):
        """AIMX_NONINTERACTIVE takes the default silently, or fails without one."""
        self.write_config()
        code, out, _, fake = self.run_verb(
            mailboxes.create, ["mailboxes", "create", "bob"], environ={"AIMX_NONINTERACTIVE": "1"},
            replies={wire.MailboxCreate: {"address": "bob@test.local"}})
        self.assertEqual((code, fake.calls[0][1]["owner"]), (0, "bob"))
        self.assertNotIn("Which", out)
        code, _, err, _ = self.run_verb(mailboxes.create, ["mailboxes", "create", "zed"],
                                        environ={"AIMX_NONINTERACTIVE": "yes"})
        self.assertEqual(code, 1)
        self.assertIn("pass --owner", err)

    def test_daemon_error(self):
        """A daemon refusal prints `Error: [CODE] reason` and exits 1."""
        code, _, err, _ = self.run_verb(
            mailboxes.create, ["mailboxes", "create", "eve", "--owner", "bob"],
            replies={wire.MailboxCreate: MailboxError("mailbox 'eve' already exists")})
        self.assertEqual((code, err), (1, "Error: [MAILBOX] mailbox 'eve' already exists\n"))

    def test_bad_reply(self):
        """An answer the CLI does not understand is a malformed-response error."""
        code, _, err, _ = self.run_verb(
            mailboxes.list_, ["mailboxes", "list"],
            replies={wire.MailboxList: wire.MalformedResponse("garbage")})
        self.assertEqual(code, 1)
        self.assertIn("malformed response from aimx daemon", err)

    def test_connect_failure(self):
        """A socket that cannot be connected for other reasons exits 2 with the reason."""
        args = argparse.Namespace(config_dir=self.config_dir, data_dir=None, all=False)
        err = io.StringIO()
        session = Session(
            args, connect=lambda: defer.fail(ConnectFailed("Failed to connect to aimx "
                                                                  "daemon at /x: denied")),
            euid=0, term=Terminal(io.StringIO(), err, None, {}), environ={},
            passwd=FakePasswd(USERS))
        code = self.successResultOf(defer.Deferred.fromCoroutine(
            execute(mailboxes.list_, args, session)))
        self.assertEqual((code, err.getvalue()),
                         (2, "Error: Failed to connect to aimx daemon at /x: denied\n"))

    def test_list(self):
        """The table: aligned columns with the unread counts, unregistered rows marked;
        an empty listing says so; --json prints the rows as one document."""
        rows = [
            {"name": "alice", "total": 1234, "unread": 5, "sent_count": 1, "registered": True},
            {"name": "stray", "total": 0, "unread": 0, "sent_count": 0, "registered": False},
        ]
        _, out, _, _ = self.run_verb(mailboxes.list_, ["mailboxes", "list"],
                                     replies={wire.MailboxList: {"mailboxes": rows}})
        self.assertEqual(out, "MAILBOX  INBOX  UNREAD  SENT\n"
                              "alice     1234       5     1\n"
                              "stray        0       0     0  (unregistered)\n")
        _, out, _, _ = self.run_verb(mailboxes.list_, ["mailboxes", "list", "--json"],
                                     replies={wire.MailboxList: {"mailboxes": rows}})
        self.assertEqual(json.loads(out), rows)
        _, out, _, _ = self.run_verb(mailboxes.list_, ["mailboxes", "list"],
                                     replies={wire.MailboxList: {"mailboxes": []}})
        self.assertEqual(out, "No mailboxes configured.\n")

    def test_list_all_non_root(self):
        """--all is root's (cli case 20)."""
        code, _, err, fake = self.run_verb(mailboxes.list_, ["mailboxes", "list", "--all"],
                                           euid=2001)
        self.assertEqual((code, err),
                         (1, "Error: not authorized: --all requires root (run with sudo)\n"))
        self.assertEqual(fake.calls, [])

    def test_list_daemon_down(self):
        """Without a daemon a readable config is listed locally; else the hint, exit 2."""
        code, _, err, _ = self.run_verb(mailboxes.list_, ["mailboxes", "list"], euid=2001,
                                        down=True)
        self.assertEqual(code, 2)
        self.write_config()
        code, out, _, _ = self.run_verb(mailboxes.list_, ["mailboxes", "list"], down=True)
        self.assertEqual((code, out.splitlines()[1].split()), (0, ["alice", "0", "0", "0"]))

    def test_show(self):
        """show renders settings, hooks grouped by event, and counts."""
        details = {
            "name": "support", "address": "support@test.local", "owner": "alice",
            "trust": "verified", "trusted_senders": ["*@example.org"],
            "hooks": [
                {"name": "n2", "event": "after_send", "cmd": ["/bin/x"],
                 "fire_on_untrusted": False},
                {"name": "n1", "event": "on_receive", "cmd": ["/bin/y"],
                 "fire_on_untrusted": True},
            ],
            "inbox_total": 2, "inbox_unread": 1, "sent_total": 4,
        }
        _, out, _, _ = self.run_verb(mailboxes.show, ["mailboxes", "show", "support"],
                                     replies={wire.MailboxShow: {"mailbox": details}})
        self.assertEqual(out, (
            "Mailbox: support\n  Address: support@test.local\n  Trust:   verified\n"
            "  Trusted senders:\n    - *@example.org\n\nHooks\n  on_receive\n"
            '    - n1  cmd: ["/bin/y"]   [fire_on_untrusted=true]\n  after_send\n'
            '    - n2  cmd: ["/bin/x"]\n\nMessages\n  inbox: 2 (1 unread)\n  sent:  4\n'
        ))

    def test_delete_prompt(self):
        """At a terminal a delete without --yes asks; declining is `Cancelled.`, exit 0."""
        code, out, _, fake = self.run_verb(mailboxes.delete, ["mailboxes", "delete", "eve"],
                                           stdin="yes\n", tty=True)
        self.assertEqual((code, fake.calls), (0, []))
        self.assertEqual(out, "Delete mailbox 'eve' and all its emails? [y/N] Cancelled.\n")

    def test_delete_not_a_terminal(self):
        """Without --yes and without a terminal to ask on, a delete is refused, exit 2."""
        for extra in ([], ["--force"]):
            code, out, err, fake = self.run_verb(
                mailboxes.delete, ["mailboxes", "delete", "eve", *extra], stdin="y\n",
                replies={wire.MailboxDelete: {}})
            self.assertEqual((code, out, err, fake.calls), (2, "", REFUSED, []))

    def test_delete_not_a_terminal_yes(self):
        """--yes needs no terminal."""
        code, out, _, fake = self.run_verb(
            mailboxes.delete, ["mailboxes", "delete", "eve", "--yes"],
            replies={wire.MailboxDelete: {}})
        self.assertEqual(code, 0)
        self.assertEqual(fake.calls, [(wire.MailboxDelete, {"name": "eve", "force": False})])

    def test_delete_force_counts(self):
        """--force lists the files to go: `1 file`, not `1 files` (cli case 17); `n` cancels."""
        self.write_config()
        inbox = os.path.join(self.config_dir, "data", "inbox", "alice")
        os.makedirs(inbox)
        open(os.path.join(inbox, "2026-01-01-000000-x.md"), "w").close()
        code, out, _, fake = self.run_verb(
            mailboxes.delete, ["mailboxes", "delete", "alice", "--force"], stdin="n\n",
            tty=True)
        self.assertEqual((code, fake.calls), (0, []))
        self.assertEqual(out, (
            "DESTRUCTIVE: About to permanently delete mailbox 'alice':\n"
            "  inbox/alice/: 1 file\n  sent/alice/:  0 files\nContinue? [y/N] Cancelled.\n"))

    def test_delete_force_unknown_counts(self):
        """--force without a readable config shows `? files`."""
        _, out, _, _ = self.run_verb(mailboxes.delete,
                                     ["mailboxes", "delete", "eve", "--force"], euid=2001,
                                     tty=True)
        self.assertIn("inbox/eve/: ? files", out)

    def test_delete(self):
        """A confirmed delete sends force and notes the remaining directories."""
        code, out, _, fake = self.run_verb(
            mailboxes.delete, ["mailboxes", "delete", "eve", "-y", "--force"],
            replies={wire.MailboxDelete: {}})
        self.assertEqual(fake.calls, [(wire.MailboxDelete, {"name": "eve", "force": True})])
        self.assertTrue(out.startswith("Mailbox 'eve' deleted.\nNote: the empty inbox/eve/"))


CONTRIB = os.path.join(os.path.dirname(__file__), os.pardir, "contrib", "config.toml")


class DirectEditTests(VerbTestCase):
    """Root's edits with the daemon down keep config.toml's comments and layout."""

    skip = None if os.geteuid() == 0 else "the direct edit is root's (it chowns mailbox dirs)"

    def test_contrib_round_trip(self):
        """mailboxes create, hooks create, hooks delete, mailboxes delete on the
        annotated example: comments and untouched tables stay byte for byte, and the
        file ends as it began (its data_dir too: --data-dir is never written)."""
        with open(CONTRIB) as f:
            original = f.read()
        with open(configfile.config_path(self.config_dir), "w") as f:
            f.write(original)
        data_dir = os.path.join(self.config_dir, "data")
        for sub in ("inbox", "sent"):
            os.makedirs(os.path.join(data_dir, sub))
        verbs = [
            (mailboxes.create, ["mailboxes", "create", "eve", "--owner", "alice"]),
            (hooks.create, ["hooks", "create", "--mailbox", "eve", "--event", "on_receive",
                            "--cmd", '["/bin/true"]', "--name", "eve_log"]),
            (hooks.delete, ["hooks", "delete", "eve_log", "-y"]),
            (mailboxes.delete, ["mailboxes", "delete", "eve", "-y"]),
        ]
        comments = [line for line in original.splitlines() if "#" in line]
        for verb, argv in verbs:
            code, _, err, _ = self.run_verb(verb, argv, down=True, data_dir=data_dir)
            self.assertEqual((code, err), (0, ""), argv)
            with open(configfile.config_path(self.config_dir)) as f:
                text = f.read()
            self.assertTrue(text.startswith(original), text)
            self.assertEqual([line for line in text.splitlines() if "#" in line], comments)
        self.assertEqual(text, original)
        self.assertFalse(os.path.exists(os.path.join(data_dir, "inbox", "eve")))

    def test_layout_refused(self):
        """A layout the edit cannot take is refused with the file named; no change."""
        self.write_config('domain = "test.local"\n'
                          'mailboxes = { alice = { address = "a@test.local", owner = "alice" } }\n')
        path = configfile.config_path(self.config_dir)
        with open(path) as f:
            before = f.read()
        code, _, err, _ = self.run_verb(
            hooks.create, ["hooks", "create", "--mailbox", "alice", "--event", "on_receive",
                           "--cmd", '["/bin/true"]'], down=True)
        self.assertEqual(code, 1)
        self.assertEqual(err, f"Error: refusing to write an invalid config: {path}: cannot "
                              "edit in place: `mailboxes` is an inline table; write each "
                              "mailbox as a [mailboxes.<name>] table to let aimx edit it\n")
        with open(path) as f:
            self.assertEqual(f.read(), before)


CREATE = ["hooks", "create", "--mailbox", "alice", "--event"]


class HookVerbTests(VerbTestCase):
    def test_create_body(self):
        """The request body carries cmd, flag and type, and timeout only when not 60."""
        code, out, _, fake = self.run_verb(
            hooks.create, CREATE + ["on_receive", "--cmd", '["/bin/echo","hi"]',
                                    "--timeout-secs", "5", "--fire-on-untrusted"],
            replies={wire.HookCreate: {"name": "abc"}, wire.MailboxShow: show_reply()})
        self.assertTrue(out.startswith("Hook created: abc (live via daemon)\n"), out)
        arguments = fake.calls[0][1]
        self.assertEqual(arguments["body"], '{"cmd": ["/bin/echo", "hi"], "fire_on_untrusted": '
                                            'true, "type": "cmd", "timeout_secs": 5}')
        self.assertIsNone(arguments["name"])
        _, _, _, fake = self.run_verb(
            hooks.create, CREATE + ["on_receive", "--cmd", '["/bin/true"]',
                                    "--timeout-secs", "60"],
            replies={wire.HookCreate: {"name": "abc"}, wire.MailboxShow: show_reply()})
        self.assertNotIn("timeout_secs", fake.calls[0][1]["body"])
        self.assertNotIn("fire_on_review", fake.calls[0][1]["body"])
        _, _, _, fake = self.run_verb(
            hooks.create, CREATE + ["on_receive", "--cmd", '["/bin/true"]', "--fire-on-review"],
            replies={wire.HookCreate: {"name": "abc"}, wire.MailboxShow: show_reply()})
        self.assertIn('"fire_on_review": true', fake.calls[0][1]["body"])

    def test_create_checks(self):
        """Client-side checks in the spec's order, before the daemon is asked."""
        example = "e.g. --cmd '[\"/bin/echo\", \"hello\"]'"
        cases = [
            (CREATE + ["on_receive", "--cmd", "[]", "--name", "bad name!"],
             "invalid hook name 'bad name!': must match [a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}"),
            (CREATE + ["after_send", "--cmd", '["/x"]', "--fire-on-untrusted"],
             "--fire-on-untrusted is only valid on --event on_receive"),
            (CREATE + ["after_send", "--cmd", '["/x"]', "--fire-on-review"],
             "--fire-on-review is only valid on --event on_receive"),
            (CREATE + ["on_receive", "--cmd", "  "], "--cmd must not be empty"),
            (CREATE + ["on_receive", "--cmd", "echo"],
             "--cmd 'echo' is not an absolute path: a program given alone must be an "
             "absolute path (e.g. --cmd /usr/local/bin/triage); give arguments as a JSON "
             f"array, {example}"),
            (CREATE + ["on_receive", "--cmd", "bin/triage --fast"],
             "--cmd 'bin/triage --fast' is not an absolute path"),
            (CREATE + ["on_receive", "--cmd", '["/bin/echo", hi]'],
             "--cmd starts with [ but is not valid JSON (Expecting value at column 15); give "
             f"a JSON array of strings, {example}, or a single absolute program path"),
            (CREATE + ["on_receive", "--cmd", "[]"],
             f"--cmd must be a JSON array of strings, {example}; the array is empty"),
            (CREATE + ["on_receive", "--cmd", "[1]"],
             f"--cmd must be a JSON array of strings, {example}; not an array of strings"),
        ]
        for argv, text in cases:
            code, _, err, fake = self.run_verb(hooks.create, argv)
            self.assertEqual((code, fake.calls), (1, []), argv)
            self.assertTrue(err.startswith(f"Error: {text}"), err)

    def test_cmd_single_path(self):
        """--cmd without a leading [ is one argv element: the program's absolute path."""
        for text in ("/bin/true", "  /bin/true  "):
            code, _, err, fake = self.run_verb(
                hooks.create, CREATE + ["on_receive", "--cmd", text],
                replies={wire.HookCreate: {"name": "abc"},
                         wire.MailboxShow: show_reply()})
            self.assertEqual((code, err), (0, ""))
            self.assertIn('"cmd": ["/bin/true"]', fake.calls[0][1]["body"])
        code, _, _, fake = self.run_verb(
            hooks.create, CREATE + ["on_receive", "--cmd", ' ["/bin/echo", "x"]'],
            replies={wire.HookCreate: {"name": "abc"}, wire.MailboxShow: show_reply()})
        self.assertIn('"cmd": ["/bin/echo", "x"]', fake.calls[0][1]["body"])

    def test_create_config_checks(self):
        """With a readable config, unknown and foreign mailboxes are caught locally."""
        self.write_config()
        base = ["hooks", "create", "--event", "on_receive", "--cmd", '["/x"]', "--mailbox"]
        code, _, err, _ = self.run_verb(hooks.create, base + ["ghost"])
        self.assertEqual((code, err), (1, "Error: mailbox 'ghost' does not exist\n"))
        _, _, err, _ = self.run_verb(hooks.create, base + ["alice"], euid=2002)
        self.assertIn("not authorized: caller does not own mailbox 'alice'", err)

    def test_daemon_down_non_root(self):
        """Without a daemon a non-root caller is told it is not running and how to start it."""
        for verb, argv in ((hooks.list_, ["hooks", "list"]),
                           (hooks.create, CREATE + ["on_receive", "--cmd", '["/bin/true"]']),
                           (hooks.delete, ["hooks", "delete", "h1", "--yes"])):
            code, _, err, _ = self.run_verb(verb, argv, euid=2001, down=True)
            self.assertEqual((code, err), (1, (
                f"Error: {DOWN} The daemon must be running for non-root hook commands; "
                "with sudo, aimx uses config.toml directly instead.\n")), argv)
            self.assertNotIn("not authorized", err)

    def test_root_without_daemon_or_config(self):
        """Root, no daemon, no config.toml: the error names the missing file, not root."""
        code, _, err, _ = self.run_verb(hooks.list_, ["hooks", "list"], down=True)
        self.assertEqual(code, 1)
        self.assertIn("the daemon is not running and Config file not found at ", err)
        self.assertNotIn("requires root", err)

    def test_root_fallback(self):
        """Root without a daemon edits config.toml and says when it takes effect."""
        self.write_config()
        code, out, _, _ = self.run_verb(
            hooks.create, CREATE + ["on_receive", "--cmd", '["/bin/true"]', "--name", "h1"],
            down=True)
        self.assertEqual(code, 0)
        pending = f"Note: aimx daemon not running; the change takes effect when it starts. {START}"
        self.assertEqual(out, f"Hook created: h1\n{pending}\n{NOTE_NONE}")
        code, out, _, _ = self.run_verb(hooks.list_, ["hooks", "list", "--mailbox", "alice"],
                                        down=True)
        self.assertIn("h1", out)
        code, out, _, _ = self.run_verb(hooks.delete, ["hooks", "delete", "h1", "-y"], down=True)
        self.assertEqual(out, f"Hook deleted: h1\n{pending}\n")
        with open(configfile.config_path(self.config_dir), "rb") as f:
            self.assertNotIn("hooks", tomllib.load(f)["mailboxes"]["alice"])
        audit_dir = os.path.join(self.config_dir, "data", "audit")
        records = auditfiles.read(audit_dir, lambda record: True, 10)
        self.assertEqual([(r["event"], r["action"], r["mailbox"], r["hook"], r["caller_uid"])
                          for r in records],
                         [("hook", "created", "alice", "h1", 0), ("hook", "deleted", "alice",
                                                                 "h1", 0)])

    def test_list(self):
        """The hook table: columns, clipping, --mailbox filter, empty message."""
        rows = [{"name": "n" * 40, "mailbox": "alice", "event": "on_receive",
                 "cmd": ["/bin/true"], "fire_on_untrusted": False, "timeout_secs": 60}]
        _, out, _, _ = self.run_verb(hooks.list_, ["hooks", "list"],
                                     replies={wire.HookList: {"hooks": rows}})
        header, row = out.splitlines()
        self.assertEqual(header, f"{'NAME':<28} {'MAILBOX':<20} {'EVENT':<12}TIMEOUT CMD")
        self.assertEqual(row, "n" * 27 + "… alice                on_receive       60 "
                              '["/bin/true"]')
        _, out, _, fake = self.run_verb(
            hooks.list_, ["hooks", "list", "--mailbox", "bob"],
            replies={wire.HookList: {"hooks": rows},
                     wire.MailboxShow: show_reply(name="bob", owner="bob")})
        self.assertEqual(out, "No hooks configured.\n")
        self.assertEqual(fake.calls[1], (wire.MailboxShow, {"name": "bob"}))

    def test_delete_prompt(self):
        """At a terminal a delete without --yes shows the hook and asks; `n` cancels, exit 0."""
        rows = [{"name": "h1", "mailbox": "alice", "event": "on_receive", "cmd": ["/bin/true"],
                 "fire_on_untrusted": False, "timeout_secs": 60}]
        code, out, _, fake = self.run_verb(
            hooks.delete, ["hooks", "delete", "h1"], stdin="n\n", tty=True,
            replies={wire.HookList: {"hooks": rows}})
        self.assertEqual(code, 0)
        self.assertEqual(out, "About to delete hook:\n  name:    h1\n  mailbox: alice\n"
                              "  event:   on_receive\n  timeout: 60s\n"
                              '  cmd:     ["/bin/true"]\nContinue? [y/N] Cancelled.\n')
        self.assertEqual([c for c, _ in fake.calls], [wire.HookList])

    def test_delete_not_a_terminal(self):
        """Without --yes and without a terminal a hook delete is refused, exit 2; --yes works."""
        rows = [{"name": "h1", "mailbox": "alice", "event": "on_receive", "cmd": ["/bin/true"],
                 "fire_on_untrusted": False, "timeout_secs": 60}]
        replies = {wire.HookList: {"hooks": rows}, wire.HookDelete: {}}
        code, out, err, fake = self.run_verb(hooks.delete, ["hooks", "delete", "h1"],
                                             stdin="y\n", replies=replies)
        self.assertEqual((code, out, err), (2, "", REFUSED))
        self.assertEqual([c for c, _ in fake.calls], [wire.HookList])
        code, out, _, fake = self.run_verb(hooks.delete, ["hooks", "delete", "h1", "--yes"],
                                           replies=replies)
        self.assertEqual((code, out), (0, "Hook deleted: h1 (live via daemon)\n"))


class MissingTextTests(VerbTestCase):
    """A missing mailbox or hook reads the same whether the daemon or the fallback answered."""

    MAILBOX = "Error: mailbox 'ghost' does not exist\n"
    HOOK = "Error: hook 'ghost' not found\n"

    def cases(self):
        """(verb, argv) naming the mailbox `ghost`."""
        return [
            (mailboxes.show, ["mailboxes", "show", "ghost"]),
            (mailboxes.delete, ["mailboxes", "delete", "ghost", "--yes"]),
            (hooks.create, ["hooks", "create", "--mailbox", "ghost", "--event", "on_receive",
                            "--cmd", '["/bin/true"]']),
            (hooks.list_, ["hooks", "list", "--mailbox", "ghost"]),
        ]

    def test_mailbox_daemon(self):
        """The daemon's `[MAILBOX]`/`[ENOENT] mailbox '<m>' does not exist` loses its code."""
        gone = MailboxError("mailbox 'ghost' does not exist")
        replies = {wire.MailboxShow: gone, wire.MailboxDelete: gone,
                   wire.HookCreate: NoEntry("mailbox 'ghost' does not exist"),
                   wire.HookList: {"hooks": []}}
        for verb, argv in self.cases():
            code, out, err, _ = self.run_verb(verb, argv, euid=2001, replies=replies)
            self.assertEqual((code, out, err), (1, "", self.MAILBOX), argv)

    def test_mailbox_fallback(self):
        """Root's direct edit (daemon down) says it in the same words."""
        self.write_config()
        for verb, argv in self.cases():
            code, out, err, _ = self.run_verb(verb, argv, down=True)
            self.assertEqual((code, out, err), (1, "", self.MAILBOX), argv)

    def test_hook(self):
        """`hook '<name>' not found` from the listing, the fallback and the daemon's delete."""
        code, _, err, _ = self.run_verb(hooks.delete, ["hooks", "delete", "ghost", "-y"],
                                        replies={wire.HookList: {"hooks": []}})
        self.assertEqual((code, err), (1, self.HOOK))
        self.write_config()
        code, _, err, _ = self.run_verb(hooks.delete, ["hooks", "delete", "ghost", "-y"],
                                        down=True)
        self.assertEqual((code, err), (1, self.HOOK))
        # Deleted by someone else between the listing and the delete.
        rows = [{"name": "ghost", "mailbox": "alice", "event": "on_receive",
                 "cmd": ["/bin/true"], "fire_on_untrusted": False, "timeout_secs": 60}]
        code, _, err, _ = self.run_verb(
            hooks.delete, ["hooks", "delete", "ghost", "-y"],
            replies={wire.HookList: {"hooks": rows},
                     wire.HookDelete: NoEntry("hook 'ghost' not found")})
        self.assertEqual((code, err), (1, self.HOOK))

    def test_other_refusals_keep_their_code(self):
        """Any other daemon refusal is still `[CODE] reason`."""
        reason = "mailbox 'catchall' is the catchall; hooks on the catchall are forbidden"
        code, _, err, _ = self.run_verb(
            hooks.create, CREATE + ["on_receive", "--cmd", '["/bin/true"]'],
            replies={wire.HookCreate: MailboxError(reason)})
        self.assertEqual((code, err), (1, f"Error: [MAILBOX] {reason}\n"))


class BlockingRunTests(SynchronousTestCase):
    """A verb that only talks to the daemon runs without an event loop."""

    def args(self):
        return argparse.Namespace(config_dir="/nonexistent", data_dir=None, all=False,
                                  json=True)

    def test_to_the_end(self):
        """A verb whose calls are answered before they return runs to its exit code in one
        step, its output written, its connection closed."""
        fake = fakes.FakeAsyncControlClient({wire.MailboxList: {"mailboxes": []}})

        async def connect():
            return fake

        out = io.StringIO()
        args = self.args()
        s = Session(args, connect=connect, euid=0, term=Terminal(out, io.StringIO(), None, {}),
                    environ={})
        self.assertEqual(session.to_the_end(execute(mailboxes.list_, args, s)), 0)
        self.assertEqual((out.getvalue(), fake.names()), ("[]\n", ["MAILBOX-LIST"]))

    def test_suspending_verb(self):
        """A verb that waits for something that is not blocking I/O is an error, not a
        silent exit."""
        async def waits(args, s):
            await defer.Deferred()

        steps = waits(None, None)
        e = self.assertRaises(RuntimeError, session.to_the_end, steps)
        self.assertTrue(str(e).endswith(".waits awaited something that is not blocking"), e)
        self.assertIsNone(steps.cr_frame)  # closed

    def test_interrupted(self):
        """Ctrl-C ends the verb with exit code 130."""
        async def interrupted(args, s):
            raise KeyboardInterrupt

        self.assertEqual(session.run_blocking(interrupted, self.args()), 130)


class StartAdviceTests(SynchronousTestCase):
    """How the daemon-down message says to start the daemon, case by case."""

    def host(self, *files):
        root = os.path.abspath(self.mktemp())
        for path in files:
            os.makedirs(os.path.dirname(os.path.join(root, path.lstrip("/"))), exist_ok=True)
            open(os.path.join(root, path.lstrip("/")), "w").close()
        os.makedirs(root, exist_ok=True)
        return initsystem.System(root=root)

    def test_systemd(self):
        """An installed systemd unit: systemctl."""
        host = self.host("/run/systemd/system/x", units.SYSTEMD_UNIT)
        self.assertEqual(session.start_advice({}, host),
                         "Start it with `sudo systemctl start aimx`.")

    def test_openrc(self):
        """An installed OpenRC script: rc-service."""
        host = self.host("/sbin/openrc", units.OPENRC_SCRIPT)
        self.assertEqual(session.start_advice({}, host),
                         "Start it with `sudo rc-service aimx start`.")

    def test_not_installed(self):
        """No service installed (systemd or not): aimx serve, or setup to install it."""
        for host in (self.host(), self.host("/run/systemd/system/x")):
            self.assertEqual(session.start_advice({}, host), START)
        self.assertEqual(session.start_advice({"AIMX_RUNTIME_DIR": "/run/aimx/"}, self.host()),
                         START)

    def test_own_runtime_dir(self):
        """Another runtime dir (the demo's, a test's): serve with it, or run the demo again."""
        host = self.host("/run/systemd/system/x", units.SYSTEMD_UNIT)
        self.assertEqual(
            session.start_advice({"AIMX_RUNTIME_DIR": "/tmp/demo/run"}, host),
            "Start the aimx that uses /tmp/demo/run (`aimx serve --runtime-dir /tmp/demo/run` "
            "with its --config-dir); if it was `make demo`, run that again and use the "
            "AIMX_RUNTIME_DIR it prints.")


class TrustNoteTests(VerbTestCase):
    """`hooks create` says whether the mailbox's trust policy lets the hook fire."""

    def create(self, *extra, show=None, event="on_receive", down=False):
        replies = {wire.HookCreate: {"name": "abc"},
                   wire.MailboxShow: show or show_reply()}
        code, out, err, _ = self.run_verb(
            hooks.create, CREATE + [event, "--cmd", "/bin/true", *extra], replies=replies,
            down=down)
        self.assertEqual((code, err), (0, ""))
        return out

    def test_none(self):
        """trust = "none": the hook never fires unless it is for untrusted mail too."""
        self.assertEqual(self.create(), f"Hook created: abc (live via daemon)\n{NOTE_NONE}")

    def test_verified(self):
        """trust = "verified": it fires for the trusted senders with a valid DKIM signature."""
        out = self.create(show=show_reply("verified", ["*@example.org", "boss@gmail.com"]))
        self.assertEqual(out.splitlines()[1], (
            "Note: mailbox 'alice' has trust = \"verified\": this hook fires only for mail "
            "from trusted_senders (*@example.org, boss@gmail.com) with a valid DKIM signature "
            "of the sender's domain."))

    def test_verified_without_senders(self):
        """trust = "verified" with no trusted_senders: nothing is trusted."""
        out = self.create(show=show_reply("verified"))
        self.assertEqual(out.splitlines()[1], (
            "Note: mailbox 'alice' has trust = \"verified\" but no trusted_senders, so no mail "
            "to it is trusted and this hook will not fire. To run it, add trusted_senders for "
            "the mailbox in config.toml (as root), or re-create the hook with "
            "--fire-on-untrusted to run it for all mail."))

    def test_fire_on_untrusted(self):
        """--fire-on-untrusted: it fires for everyone's mail, whatever the policy."""
        for policy in ("none", "verified"):
            out = self.create("--fire-on-untrusted", show=show_reply(policy, ["*@x.org"]))
            self.assertEqual(out.splitlines()[1], (
                "Note: this hook fires for all mail to mailbox 'alice', trusted or not "
                "(--fire-on-untrusted): anyone who can send mail to it can start the program."))

    def test_after_send(self):
        """after_send hooks have no trust gate: no note."""
        self.assertEqual(self.create(event="after_send"), "Hook created: abc (live via daemon)\n")

    def test_policy_unreadable(self):
        """A failed MAILBOX-SHOW after the create: the hook is still created, exit 0;
        the program's existence is still checked."""
        out = self.create(show=MailboxError("mailbox 'alice' does not exist"))
        self.assertEqual(out, "Hook created: abc (live via daemon)\n")
        code, _, err, _ = self.run_verb(
            hooks.create, CREATE + ["on_receive", "--cmd", "/nonexistent/x"],
            replies={wire.HookCreate: {"name": "abc"},
                     wire.MailboxShow: MailboxError("mailbox 'alice' does not exist")})
        self.assertEqual(code, 0)
        self.assertEqual(err, "Warning: hook program /nonexistent/x does not exist; the hook is "
                              "created but fails until the program is installed.\n")

    def test_fallback_reads_config(self):
        """Root's direct edit reads the effective policy from config.toml (global trust)."""
        self.write_config(trust="verified", trusted_senders=["*@example.org"])
        out = self.create(down=True)
        self.assertIn("Note: mailbox 'alice' has trust = \"verified\": this hook fires only for "
                      "mail from trusted_senders (*@example.org) with a valid DKIM signature",
                      out)


class ProgramCheckTests(VerbTestCase):
    """`hooks create` warns when the mailbox owner cannot run the program; it still creates it."""

    def setUp(self):
        super().setUp()
        # Under /tmp: every parent is searchable by anyone.
        self.dir = tempfile.mkdtemp(prefix="aimx-hookprog-")
        self.addCleanup(shutil.rmtree, self.dir)
        os.chmod(self.dir, 0o755)

    def program(self, name="prog", mode=0o755, uid=None, gid=None, parent=None):
        path = os.path.join(parent or self.dir, name)
        with open(path, "w") as f:
            f.write("#!/bin/sh\n")
        os.chmod(path, mode)
        if uid is not None or gid is not None:
            os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
        return path

    def create(self, cmd, euid=0):
        code, _, err, fake = self.run_verb(
            hooks.create, CREATE + ["after_send", "--cmd", cmd], euid=euid,
            replies={wire.HookCreate: {"name": "abc"}, wire.MailboxShow: show_reply()})
        self.assertEqual(code, 0)
        self.assertEqual([c for c, _ in fake.calls], [wire.HookCreate, wire.MailboxShow])
        return err

    def test_runnable(self):
        """A program the owner may execute: no warning."""
        self.assertEqual(self.create(self.program()), "")

    def test_missing(self):
        """A program that does not exist (yet): a warning, and the hook is created."""
        path = os.path.join(self.dir, "later")
        self.assertEqual(self.create(path), (
            f"Warning: hook program {path} does not exist; the hook is created but fails "
            "until the program is installed.\n"))

    def test_missing_with_spaces(self):
        """A missing single path with spaces probably meant arguments: say how to pass them."""
        self.assertEqual(self.create("/bin/echo hi"), (
            "Warning: hook program /bin/echo hi does not exist; the hook is created but fails "
            "until the program is installed. A --cmd that does not start with [ is a single "
            "program path; give arguments as a JSON array, e.g. --cmd '[\"/bin/echo\", "
            "\"hello\"]'.\n"))

    def test_json_argv_checked(self):
        """In the JSON form the program is cmd[0]."""
        path = os.path.join(self.dir, "nope")
        self.assertIn(f"hook program {path} does not exist", self.create(f'["{path}", "x"]'))

    def test_not_executable(self):
        """No execute bit for the owner's class: a warning with the mode and file owner."""
        path = self.program(mode=0o744)
        owner = FakePasswd(USERS).username(os.getuid()) or str(os.getuid())
        self.assertEqual(self.create(path), (
            f"Warning: hook program {path} is not executable by alice, who runs the hook "
            f"(mode 0744, owned by {owner}); the hook is created but fails until that is "
            "fixed.\n"))

    def test_not_a_file(self):
        """A directory is not a program."""
        self.assertEqual(self.create(self.dir), (
            f"Warning: hook program {self.dir} is not a regular file; the hook is created but "
            "fails until that is fixed.\n"))

    def test_directory_not_searchable(self):
        """A directory on the way the owner may not search: the program is out of reach."""
        locked = os.path.join(self.dir, "locked")
        os.mkdir(locked, 0o700)
        os.chmod(locked, 0o700)
        path = self.program(parent=locked)
        owner = FakePasswd(USERS).username(os.getuid()) or str(os.getuid())
        self.assertEqual(self.create(path), (
            f"Warning: hook program {path} is not reachable by alice, who runs the hook: "
            f"directory {locked} is not searchable by them (mode 0700, owned by {owner}); the "
            "hook is created but fails until that is fixed.\n"))

    def test_owner_class_decides(self):
        """The owner's own class of bits decides, as the kernel does: uid, then group."""
        if os.geteuid() != 0:
            raise self.skipTest("needs root to chown to the test users")
        alice = USERS["alice"]
        # Owned by alice without u+x: not runnable by her, though others may run it.
        self.assertIn("is not executable by alice", self.create(self.program(
            "mine", mode=0o075, uid=alice)))
        # Group alice (her primary group, which hooks keep) with g+x: runnable.
        self.assertEqual(self.create(self.program("group", mode=0o750, gid=alice)), "")
        # Owned by alice with u+x only: runnable.
        self.assertEqual(self.create(self.program("own", mode=0o700, uid=alice)), "")

    def test_root_owned_mailbox(self):
        """A root-owned mailbox (set by hand): any execute bit will do."""
        code, _, err, _ = self.run_verb(
            hooks.create, CREATE + ["after_send", "--cmd", self.program(mode=0o610)],
            replies={wire.HookCreate: {"name": "abc"},
                     wire.MailboxShow: show_reply(owner="root")})
        self.assertEqual((code, err), (0, ""))

