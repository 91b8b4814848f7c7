"""The operator verbs' outside programs, run for real: the completion scripts under bash
and zsh, `make -n install`, and git for the build stamp (tests.test_cli_ops has the
rest, in-process).
"""

import io
import os
import runpy
import shlex
import shutil
import subprocess
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

import aimx.cli


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class MakefileTests(SynchronousTestCase):
    def test_install_says_what_it_does(self):
        """Each silent (pip -q) install step is announced on a line of its own first."""
        if shutil.which("make") is None:
            raise SkipTest("no make")
        venv = os.path.abspath(self.mktemp())
        result = subprocess.run(["make", "-n", "-B", "install", f"VENV={venv}"], cwd=REPO,
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        pips = [i for i, line in enumerate(lines) if "pip install" in line]
        self.assertEqual(len(pips), 2, lines)
        for i in pips:
            self.assertRegex(lines[i - 1], r"^echo ")
        self.assertIn("Installing aimx and its dependencies", result.stdout)


class CompletionScriptTests(SynchronousTestCase):
    """The completion scripts run by bash and zsh."""

    def script(self, shell):
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        self.assertEqual(aimx.cli.main(["completion", shell]), 0)
        return out.getvalue()

    def complete(self, line):
        """The words bash offers for the last word of C{line} (empty when it ends in a space)."""
        if shutil.which("bash") is None:
            raise SkipTest("no bash")
        words = line.split(" ")
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(self.script("bash"))
        array = " ".join(shlex.quote(w) for w in words)
        probe = (f"source {shlex.quote(path)}; COMP_WORDS=({array}); "
                 f"COMP_CWORD={len(words) - 1}; COMP_LINE={shlex.quote(line)}; "
                 f"COMP_POINT={len(line)}; _aimx; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
        result = subprocess.run(["bash", "--norc", "--noprofile", "-c", probe],
                                capture_output=True, text=True, timeout=30)
        self.assertEqual(result.stderr, "")
        return sorted(w for w in result.stdout.split("\n") if w)

    def test_bash_syntax(self):
        """`aimx completion bash` is a script bash accepts, registering _aimx for aimx."""
        if shutil.which("bash") is None:
            raise SkipTest("no bash")
        text = self.script("bash")
        result = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True,
                                timeout=30)
        self.assertEqual((result.returncode, result.stderr), (0, ""))
        self.assertIn("complete -F _aimx aimx", text)

    def test_zsh_syntax(self):
        """`aimx completion zsh` is a #compdef script zsh accepts."""
        text = self.script("zsh")
        self.assertTrue(text.startswith("#compdef aimx\n"))
        if shutil.which("zsh") is None:
            raise SkipTest("no zsh")
        result = subprocess.run(["zsh", "-n"], input=text, capture_output=True, text=True,
                                timeout=30)
        self.assertEqual((result.returncode, result.stderr), (0, ""))

    def test_zsh_completes(self):
        """Under zsh the same lookups feed compadd (stubbed here: it prints its words)."""
        if shutil.which("zsh") is None:
            raise SkipTest("no zsh")
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(self.script("zsh"))

        def offered(*words):
            array = " ".join(shlex.quote(w) for w in words)
            probe = ("compdef() { print -r -- \"compdef $*\"; }; "
                     "compadd() { [[ $1 == -- ]] && shift; print -l -- \"$@\"; }; "
                     f"source {shlex.quote(path)}; words=({array}); CURRENT={len(words)}; _aimx")
            result = subprocess.run(["zsh", "-f", "-c", probe], capture_output=True, text=True,
                                    timeout=30)
            self.assertEqual(result.stderr, "")
            lines = result.stdout.splitlines()
            self.assertEqual(lines[0], "compdef _aimx aimx")  # sourced: registers itself
            return lines[1:]

        self.assertEqual(offered("aimx", "hook", ""),
                         ["list", "create", "delete", "enable", "status", "retry"])
        self.assertEqual(offered("aimx", "hooks", "create", "--event", ""),
                         ["on_receive", "after_send"])
        self.assertIn("send", offered("aimx", "--config-dir", "mailboxes", ""))

    def test_verbs(self):
        """The verbs of `aimx --help` are offered; the hidden `ingest` and the aliases are not."""
        verbs = self.complete("aimx ")
        for verb in ("send", "mailboxes", "hooks", "agents", "mcp", "setup", "serve", "doctor",
                     "logs", "dkim-keygen", "portcheck", "uninstall", "demo", "completion"):
            self.assertIn(verb, verbs)
        for hidden in ("ingest", "mailbox", "hook"):
            self.assertNotIn(hidden, verbs)
        self.assertEqual(self.complete("aimx --data-dir /x ho"), ["hooks"])

    def test_actions_and_options(self):
        """Actions, their options, option values and aliases come from the parser."""
        self.assertEqual(self.complete("aimx hooks "),
                         ["create", "delete", "enable", "list", "retry", "status"])
        self.assertEqual(self.complete("aimx hook cr"), ["create"])
        self.assertEqual(self.complete("aimx hooks create --ev"), ["--event"])
        self.assertEqual(self.complete("aimx hooks create --mailbox support --event "),
                         ["after_send", "on_receive"])
        self.assertEqual(self.complete("aimx mailboxes delete eve --f"), ["--force"])
        self.assertEqual(self.complete("aimx completion "), ["bash", "zsh"])
        send = self.complete("aimx send --")
        self.assertIn("--in-reply-to", send)
        self.assertNotIn("--reply-to", send)
        self.assertIn("--bind", self.complete("aimx serve --"))

    def test_option_values(self):
        """An option's value is never read as a verb; paths complete as files or dirs."""
        # `mailboxes` here is the --config-dir value: the verbs are offered next.
        self.assertIn("send", self.complete("aimx --config-dir mailboxes "))
        self.assertEqual(self.complete("aimx hooks create --name "), [])
        self.assertEqual(self.complete("aimx send --reply-to hooks --in"), ["--in-reply-to"])
        base = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(base, "sub"))
        open(os.path.join(base, "note.txt"), "w").close()
        self.assertEqual(self.complete(f"aimx send --attachment {base}/"),
                         [f"{base}/note.txt", f"{base}/sub"])
        self.assertEqual(self.complete(f"aimx --data-dir {base}/"), [f"{base}/sub"])


class BuildStampTests(SynchronousTestCase):
    def test_git_commit(self):
        """setup.py's build step asks git for the commit: nothing outside a checkout."""
        build = runpy.run_path(os.path.join(REPO, "setup.py"), run_name="aimx_setup")
        # Outside a git checkout nothing is known.
        self.assertIsNone(build["git_commit"](os.path.abspath(self.mktemp())))
        # In this checkout: what git says, when git can say it (installed, and the
        # checkout's owner acceptable to it).
        if shutil.which("git") and os.path.exists(os.path.join(REPO, ".git")):
            head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short=12", "HEAD"],
                                  capture_output=True, text=True, timeout=30)
            expected = head.stdout.strip() if head.returncode == 0 else None
            self.assertEqual(build["git_commit"](REPO), expected)
            if expected is not None:
                self.assertRegex(expected, r"^[0-9a-f]{12}$")
