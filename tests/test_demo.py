"""`aimx demo` without running it: what it prints, who owns its mailboxes, and
`aimx demo send`'s refusals (tests/integration/test_demo.py runs the real thing and
sends to a port nobody answers on)."""

import io
import json
import os
import pwd
import shlex
import sys

import attrs
from twisted.trial.unittest import SynchronousTestCase

import aimx.cli
from aimx.cli import demo
from aimx.errors import AimxError
from aimx.store import demo as state_file

STATE = state_file.DemoState(
    domain="demo.localhost", host="127.0.0.1", port=2525, dns_port=5353, mx_port=2526,
    sender_domain="sender.localhost", selector="demo", sender_key="/d/sender.key",
    config_dir="/d/etc", data_dir="/d/data", log="/d/aimx.log", directory="/d",
)
PROGRAM = "/venv/bin/aimx"
PREFIX = f"AIMX_CONFIG_DIR=/d/etc AIMX_RUNTIME_DIR=/d/run {PROGRAM}"


def commands(text: str) -> list[tuple[str, str]]:
    """The (comment above, command) pairs of the closing text."""
    out, comment = [], ""
    for line in text.splitlines():
        if line.startswith("  #"):
            comment = line.strip()
        elif line.startswith("  ") and line.strip().startswith("AIMX_"):
            out.append((comment, line.strip()))
    return out


class WhatToTryTests(SynchronousTestCase):
    def test_ordinary_user(self):
        """Every command starts with the demo's directories and the aimx that runs it; the
        agent wiring is a command; nothing is marked as root's."""
        text = demo.what_to_try(STATE, "/d/run", "alice", PROGRAM, root=False, me="alice")
        self.assertIn("Try it from another shell, as alice or root; each command works on "
                      "its own:", text)
        self.assertIn("  mailbox owner:  alice (hooks run as alice)", text)
        pairs = commands(text)
        self.assertEqual([c.split(PROGRAM + " ")[1].split(" --")[0] for _, c in pairs], [
            "mailboxes list", "mail list agent", "mail search agent hello", "hooks create",
            "demo send", "send", "doctor", "logs", "agents setup claude-code"])
        for comment, command in pairs:
            self.assertTrue(command.startswith(PREFIX + " "), command)
            self.assertFalse(comment.startswith("# as root:"), comment)
            shlex.split(command)  # well-formed shell words: no stray parenthesis or quote
        self.assertTrue(text.endswith("\n\nCtrl-C stops the demo."))

    def test_root(self):
        """Root's demo: mailboxes of another user, doctor marked as root's, and the agent
        wiring only described (root's own needs --dangerously-allow-root)."""
        text = demo.what_to_try(STATE, "/d/run", "nobody", PROGRAM, root=True, me="root")
        self.assertIn('Try it from another shell, as root, or as nobody (the mailboxes\' '
                      'owner) except where it says "as root"; each command works on its own:',
                      text)
        pairs = commands(text)
        self.assertEqual([c for comment, c in pairs if comment.startswith("# as root:")],
                         [f"{PREFIX} doctor"])
        self.assertEqual([c for _, c in pairs if " agents " in c], [])
        self.assertNotIn(f"{PROGRAM} agents", text)
        self.assertIn("--dangerously-allow-root", text)

    def test_hook_and_demo_send(self):
        """The suggested hook is a JSON argv whose stderr the log keeps, and the
        suggested `demo send` is signed by the sender domain."""
        text = demo.what_to_try(STATE, "/d/run", "alice", PROGRAM, root=False, me="alice")
        [hook] = [shlex.split(c) for _, c in commands(text) if " hooks create " in c]
        self.assertEqual(json.loads(hook[hook.index("--cmd") + 1]), demo.HOOK_CMD)
        self.assertNotIn("--fire-on-untrusted", hook)
        [send] = [shlex.split(c) for _, c in commands(text) if " demo send " in c]
        self.assertEqual(send[send.index("--from") + 1], "carol@sender.localhost")

    def test_quoting(self):
        """Directories with spaces are quoted for the shell."""
        state = attrs.evolve(STATE, config_dir="/a b/etc")
        text = demo.what_to_try(state, "/a b/run", "alice", PROGRAM, root=False, me="alice")
        for _, command in commands(text):
            words = shlex.split(command)
            self.assertEqual(words[:2], ["AIMX_CONFIG_DIR=/a b/etc", "AIMX_RUNTIME_DIR=/a b/run"])


class DaemonEnvironmentTests(SynchronousTestCase):
    def test_same_as_the_state_gives(self):
        """The daemon starts with the variables its state file later gives other commands."""
        self.assertEqual(demo._daemon_environment(STATE.dns_port, STATE.mx_port),
                         STATE.environment())


class OwnerTests(SynchronousTestCase):
    def test_caller(self):
        """Anyone but root owns the demo's mailboxes themselves."""
        self.patch(os, "geteuid", lambda: pwd.getpwnam("nobody").pw_uid)
        self.assertEqual(demo._owner({"SUDO_USER": "root"}), "nobody")

    def test_root(self):
        """Root gives them to the user behind sudo, else nobody; never to root."""
        self.patch(os, "geteuid", lambda: 0)
        someone = pwd.getpwnam("nobody").pw_name
        daemon = next((p.pw_name for p in pwd.getpwall()
                       if p.pw_uid not in (0, 65534)), someone)
        self.assertEqual(demo._owner({"SUDO_USER": daemon}), daemon)
        self.assertEqual(demo._owner({"SUDO_USER": "root"}), "nobody")
        self.assertEqual(demo._owner({"SUDO_USER": "no-such-user-here"}), "nobody")
        self.assertEqual(demo._owner({}), "nobody")


class DemoSendTestCase(SynchronousTestCase):
    """A runtime dir that may hold a demo's state file; L{send} runs `aimx demo send`."""

    def setUp(self):
        self.run_dir = os.path.abspath(self.mktemp())
        os.makedirs(self.run_dir)
        self.environ = {"AIMX_RUNTIME_DIR": self.run_dir}

    def send(self, *argv):
        args = aimx.cli.arguments.parser().parse_args(["demo", "send", *argv])
        return demo.send_main(args, self.environ)

    def with_state(self, **changes):
        state_file.write(self.run_dir, attrs.evolve(STATE, **changes))


class DemoSendTests(DemoSendTestCase):
    def test_no_demo(self):
        """No demo in AIMX_RUNTIME_DIR: how to get one."""
        e = self.assertRaises(AimxError, self.send)
        self.assertEqual(str(e), f"no aimx demo in {self.run_dir} (no demo.json); start one "
                                 "with `aimx demo` and paste the commands it prints (they set "
                                 "AIMX_RUNTIME_DIR)")

    def test_other_domain(self):
        """The demo signs for its sender domain only."""
        self.with_state()
        for sender in ("bob@example.com", "a@sender.localhost, b@sender.localhost",
                       '"a b"@sender.localhost'):
            e = self.assertRaises(AimxError, self.send, "--from", sender)
            self.assertIn("--from must be one address at sender.localhost", str(e))

    def test_key_unreadable(self):
        """A sender key this user cannot read: who can."""
        self.with_state(sender_key=os.path.join(self.run_dir, "missing.key"))
        e = self.assertRaises(AimxError, self.send)
        self.assertIn("cannot read the demo's sender key", str(e))
        self.assertIn("run this as the demo's mailbox owner or root", str(e))

    def test_help(self):
        """`aimx demo send --help` says what it signs with and how it finds the demo."""
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        e = self.assertRaises(SystemExit, aimx.cli.main, ["demo", "send", "--help"])
        self.assertEqual(e.code, 0)
        self.assertIn("DKIM-signed by sender.localhost", out.getvalue())
        self.assertIn("AIMX_RUNTIME_DIR", out.getvalue())
