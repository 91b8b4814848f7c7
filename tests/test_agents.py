"""`aimx agents setup|list|remove`, the registry, bundles and the picker (docs/cli.md).

Every test runs with a temporary HOME, an injected euid and a fake CLI runner:
no real `claude`/`codex` is ever started and the real home is never touched.
"""

import io
import json
import os
import shlex
import stat
import sys

from twisted.trial.unittest import SynchronousTestCase

from aimx import cli
from aimx.cli import arguments
from aimx.agents import bundle, install, mcpcommand, probe, registry
from aimx.cli import agentpicker as picker
from aimx.agents.install import InstallState
from aimx.agents.probe import CheckResult
from aimx.agents.registry import AGENTS, AgentError, McpCommand
from aimx.cli import agents as agents_cli
from aimx.cli.term import Terminal
from aimx.host.programs import NOT_RUN, Completed
from aimx.testing.fakes import TTY, FakeRunner

try:
    import yaml
except ImportError:  # not a dependency; the structural checks below always run
    yaml = None

TOOL_NAMES = frozenset({
    "mailbox_list", "mailbox_create", "mailbox_delete", "email_list", "email_read",
    "email_send", "email_reply", "email_mark_read", "email_mark_unread", "hook_create",
    "hook_list", "hook_delete", "email_search", "email_thread", "held_list",
})
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ["claude-code", "codex", "opencode", "gemini", "goose", "openclaw", "hermes", "nanoclaw"]


def not_found(argv):
    return Completed(NOT_RUN, "", f"{argv[0]}: not found")


def cli_runner(**answers) -> FakeRunner:
    """A CLI runner answering per program with a Completed; other programs are missing."""
    return FakeRunner(answers, default=not_found)


#: A program path for the pure registry and bundle tests.
PROG = "/opt/aimx/bin/aimx"
COMMAND = McpCommand((PROG,))


class FakeCheck:
    """The MCP check: records (argv, env), answers OK with 12 tools or a given result."""

    def __init__(self, result=None):
        self.result = result or CheckResult(True, tools=15)
        self.calls = []

    def __call__(self, argv, env):
        self.calls.append((list(argv), dict(env)))
        return self.result


def fake_venv(base):
    """A venv-shaped directory: bin/python (this interpreter) and the bin/aimx console script
    it runs, as pip writes it.  @return: the script's path."""
    bindir = os.path.join(base, "bin")
    os.makedirs(bindir)
    os.symlink(sys.executable, os.path.join(bindir, "python"))
    script = os.path.join(bindir, "aimx")
    with open(script, "w") as f:
        f.write(f"#!{bindir}/python\nimport sys\nfrom aimx.cli import main\nsys.exit(main())\n")
    os.chmod(script, 0o755)
    return script


def section(out, title):
    """The lines of C{=== title ===} in C{--print} output, up to the next header."""
    lines = out.splitlines()
    start = lines.index(f"=== {title} ===") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("=== ")), len(lines))
    return lines[start:end]


class AgentsTestCase(SynchronousTestCase):
    """A temporary HOME and a World around it; the aimx running is a fake venv's script."""

    def setUp(self):
        self.home = os.path.abspath(self.mktemp())
        os.makedirs(self.home)
        self.environ = {"HOME": self.home, "PATH": "/nonexistent"}
        self.runner = cli_runner()
        self.check = FakeCheck()
        self.stdin = io.StringIO()
        self.err = io.StringIO()
        self.euid = 1000
        self.root_home = None
        self.prog = fake_venv(os.path.abspath(self.mktemp()))

    def world(self):
        return agents_cli.World(
            self.environ,
            self.euid,
            io.StringIO(),
            self.err,
            self.stdin,
            runner=self.runner,
            root_home=lambda: self.root_home,
            username=lambda uid: "alice",
            open_keys=self.open_keys,
            argv0=self.prog,
            executable=os.path.join(os.path.dirname(self.prog), "python"),
            check=self.check,
        )

    def open_keys(self, stdin):
        raise AssertionError("the picker must not open here")

    def aimx(self, *argv):
        """Parse like `aimx` and run the agents verb; returns (exit, stdout, stderr)."""
        args = arguments.parser().parse_args(list(argv))
        if args.data_dir is None:  # as aimx.cli.main does
            args.data_dir = self.environ.get("AIMX_DATA_DIR")
        if args.config_dir is None:
            args.config_dir = self.environ.get("AIMX_CONFIG_DIR", "/etc/aimx")
        world = self.world()
        code = agents_cli.main(args, world)
        return code, world.out.getvalue(), world.err.getvalue()

    def path(self, *parts):
        return os.path.join(self.home, *parts)

    def read(self, *parts):
        with open(self.path(*parts), encoding="utf-8") as f:
            return f.read()

    def tree(self):
        found = []
        for base, dirs, files in os.walk(self.home):
            found += [os.path.relpath(os.path.join(base, n), self.home) for n in dirs + files]
        return sorted(found)


class ListTests(AgentsTestCase):
    """§2.1, acceptance case 1."""

    def test_list_and_setup_list(self):
        """Both spellings print the same eight blocks in registry order (case 1)."""
        code, out, _ = self.aimx("agents", "list")
        self.assertEqual(code, 0)
        for word in ("claude-code", "nanoclaw", "NanoClaw", "nanoclaw/skills/aimx"):
            self.assertIn(word, out)
        names = [
            line.strip()
            for line in out.splitlines()
            if line.startswith("  ") and not line.startswith("    ")
        ]
        self.assertEqual(names, NAMES)
        self.assertTrue(out.startswith("Supported agents:\n\n"))
        self.assertEqual(self.aimx("agents", "setup", "--list")[1], out)

    def test_block_shape(self):
        """Each block: destination, install, activation with 17-space continuation lines."""
        _, out, _ = self.aimx("agents", "list")
        lines = out.splitlines()
        i = lines.index("  claude-code")
        self.assertEqual(lines[i + 1], f"    destination: {self.home}/.claude/skills/aimx")
        self.assertEqual(lines[i + 2], "    install:     aimx agents setup claude-code")
        self.assertEqual(
            lines[i + 3], "    activation:  Skill installed at ~/.claude/skills/aimx/."
        )
        self.assertEqual(lines[i + 4][:17], " " * 17)
        self.assertIn(
            " " * 19 + f"claude mcp add --scope user aimx -- {self.prog} mcp", lines
        )

    def test_list_ignores_data_dir_and_works_as_root(self):
        """Hints are rendered without --data-dir; root may list (case 3)."""
        self.euid = 0
        code, out, _ = self.aimx("--data-dir", "/custom", "agents", "list")
        self.assertEqual(code, 0)
        self.assertNotIn("/custom", out)

    def test_unresolvable_home(self):
        """Without HOME the raw templates are shown."""
        del self.environ["HOME"]
        code, out, _ = self.aimx("agents", "list")
        self.assertEqual(code, 0)
        self.assertIn("destination: $HOME/.claude/skills/aimx", out)
        self.assertIn("destination: $XDG_CONFIG_HOME/goose/recipes", out)

    def test_no_colour_when_piped(self):
        """Output to a pipe has no escape sequences."""
        self.assertNotIn("\x1b", self.aimx("agents", "list")[1])


class ErrorTests(AgentsTestCase):
    """Unknown agents and the root gate (cases 2, 3)."""

    def test_unknown_agent(self):
        """remove and setup name the unknown agent; exit 1 (case 2)."""
        code, _, err = self.aimx("agents", "remove", "nonesuch")
        self.assertEqual(code, 1)
        self.assertIn("Unknown agent 'nonesuch'. Run `aimx agents list`", err)
        code, _, err = self.aimx("agents", "setup", "nonesuch")
        self.assertEqual(code, 1)
        self.assertIn(
            "Error: unknown agent 'nonesuch'; run `aimx agents list` to see supported agents", err
        )

    def test_root_refused(self):
        """As root, setup and remove refuse with both ways out; nothing is written (case 3)."""
        self.euid = 0
        self.root_home = self.path("roothome")
        for argv in (
            ("agents", "setup", "claude-code"),
            ("agents", "remove", "codex"),
            ("agents", "setup", "--print", "gemini"),
            ("agents", "setup"),
        ):
            code, _, err = self.aimx(*argv)
            self.assertEqual(code, 1, argv)
            self.assertIn("sudo -u <user> aimx agents setup", err)
            self.assertIn("--dangerously-allow-root", err)
        self.assertEqual(self.tree(), [])

    def test_home_not_set(self):
        """Setup without HOME says so."""
        del self.environ["HOME"]
        code, _, err = self.aimx("agents", "setup", "codex")
        self.assertEqual(code, 1)
        self.assertIn("HOME is not set; agents setup writes to the user's home directory", err)


class ClaudeCodeTests(AgentsTestCase):
    """Cases 4, 5, 7, 14."""

    def test_install_without_claude(self):
        """Files, modes, content order, and the manual hint (case 4)."""
        code, out, _ = self.aimx("agents", "setup", "claude-code")
        self.assertEqual(code, 0)
        dest = self.path(".claude/skills/aimx")
        self.assertEqual(
            sorted(os.listdir(os.path.join(dest, "references"))),
            ["frontmatter.md", "hooks.md", "mcp-tools.md", "troubleshooting.md", "workflows.md"],
        )
        skill = self.read(".claude/skills/aimx/SKILL.md")
        self.assertTrue(skill.startswith("---\nname: aimx\n"))
        wiring = skill.index("## Wiring yourself up as a mailbox hook (Claude Code)")
        primer = bundle.primer(McpCommand((self.prog,)))
        self.assertGreater(skill.index(primer), wiring)
        self.assertTrue(skill.endswith(primer))
        for rel in ("SKILL.md", "references/hooks.md"):
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(dest, rel)).st_mode), 0o644)
        for rel in ("", "references"):
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(dest, rel)).st_mode), 0o755)
        self.assertIn(f"Installed {dest}", out)
        self.assertIn(f"claude mcp add --scope user aimx -- {self.prog} mcp", out)

    def test_registers_through_claude(self):
        """remove then add through `claude`; the success line replaces the hint (case 5)."""
        self.runner = cli_runner(claude=Completed(0))
        code, out, _ = self.aimx("agents", "setup", "claude-code")
        self.assertEqual(code, 0)
        self.assertEqual(
            self.runner.calls,
            [
                ["claude", "mcp", "remove", "--scope", "user", "aimx"],
                [
                    "claude",
                    "mcp",
                    "add",
                    "--scope",
                    "user",
                    "aimx",
                    "--",
                    self.prog,
                    "mcp",
                ],
            ],
        )
        self.assertIn("MCP server registered with Claude Code.", out)
        self.assertNotIn("claude mcp add", out)

    def test_data_dir_threaded(self):
        """--data-dir (flag, either side of the verb, or env) reaches the add argv (case 5)."""
        for argv, env in (
            (("--data-dir", "/custom/path", "agents", "setup", "claude-code", "--force"), None),
            (("agents", "setup", "claude-code", "--force", "--data-dir", "/custom/path"), None),
            (("agents", "setup", "claude-code", "--force"), "/custom/path"),
        ):
            self.runner = cli_runner(claude=Completed(0))
            if env:
                self.environ["AIMX_DATA_DIR"] = env
            self.assertEqual(self.aimx(*argv)[0], 0)
            self.assertEqual(self.runner.calls[1][-3:], ["--data-dir", "/custom/path", "mcp"])

    def test_registration_failure(self):
        """A failing `claude` prints its first stderr line and exit code, then the hint (case 5)."""
        self.runner = cli_runner(claude=Completed(1, "", "boom\nmore detail\n"))
        code, out, _ = self.aimx("agents", "setup", "claude-code", "--data-dir", "/it's")
        self.assertEqual(code, 0)
        self.assertIn("MCP auto-registration failed: boom (exit 1)", out)
        self.assertIn(
            "claude mcp add --scope user aimx -e 'AIMX_DATA_DIR=/it'\"'\"'s' "
            f"-- {self.prog} --data-dir '/it'\\''s' mcp",
            out,
        )

    def test_registration_failure_without_output(self):
        """No stderr says so; a killed process has no exit code."""
        self.runner = cli_runner(claude=Completed(-9))
        out = self.aimx("agents", "setup", "claude-code")[1]
        self.assertIn("MCP auto-registration failed: (no error output)\n", out)

    def test_rerun_needs_force(self):
        """Existing files: refused on a non-TTY stdin, replaced with --force (case 7)."""
        self.aimx("agents", "setup", "claude-code")
        skill = self.path(".claude/skills/aimx/SKILL.md")
        with open(skill, "w") as f:
            f.write("stale")
        code, _, err = self.aimx("agents", "setup", "claude-code")
        self.assertEqual(code, 1)
        self.assertIn(
            f"destination files already exist under {self.path('.claude/skills/aimx')}; "
            "pass --force to overwrite",
            err,
        )
        self.assertEqual(self.read(".claude/skills/aimx/SKILL.md"), "stale")
        self.assertEqual(self.aimx("agents", "setup", "claude-code", "--force")[0], 0)
        self.assertTrue(self.read(".claude/skills/aimx/SKILL.md").startswith("---\n"))

    def test_rerun_on_a_terminal_asks(self):
        """On a TTY the existing files are listed and `yes` overwrites, anything else aborts."""
        self.aimx("agents", "setup", "claude-code")
        self.stdin = TTY("n\n")
        code, out, err = self.aimx("agents", "setup", "claude-code")
        self.assertEqual(code, 1)
        self.assertIn("already contains 6 file(s):", out)
        self.assertIn("  references/workflows.md", out)
        self.assertIn("Overwrite? [y/N] ", out)
        self.assertIn("Error: aborted by user", err)
        self.stdin = TTY("yes\n")
        self.assertEqual(self.aimx("agents", "setup", "claude-code")[0], 0)

    def test_remove(self):
        """remove deletes the skill, then reports absence on a second run (case 14)."""
        self.aimx("agents", "setup", "claude-code")
        code, out, _ = self.aimx("agents", "remove", "claude-code")
        self.assertEqual(code, 0)
        self.assertFalse(os.path.exists(self.path(".claude/skills/aimx")))
        self.assertIn(f"Removed {self.path('.claude/skills/aimx')}", out)
        self.assertTrue(
            out.rstrip("\n").endswith(
                "Run `claude mcp remove aimx` to unregister the MCP server from Claude Code too."
            )
        )
        # Only setup's attempt (claude is not on PATH); remove never runs the agent CLI.
        self.assertEqual(
            self.runner.calls, [["claude", "mcp", "remove", "--scope", "user", "aimx"]]
        )
        code, out, _ = self.aimx("agents", "remove", "claude-code")
        self.assertEqual(code, 0)
        self.assertIn("(already absent)", out)
        self.assertIn("no plugin files were present at", out)

    def test_legacy_plugin_removed(self):
        """Setup and remove both delete ~/.claude/plugins/aimx/ (case 14)."""
        for verb in ("setup", "remove"):
            os.makedirs(self.path(".claude/plugins/aimx/sub"))
            out = self.aimx(
                "agents", verb, "claude-code", *(["--force"] if verb == "setup" else [])
            )[1]
            self.assertFalse(os.path.exists(self.path(".claude/plugins/aimx")))
            self.assertIn(
                f"Removed legacy plugin install at {self.path('.claude/plugins/aimx')}", out
            )
        self.assertTrue(os.path.isdir(self.path(".claude/plugins")))


class SubprocessRunnerLookupTests(AgentsTestCase):
    """The default runner looks the program up on the given PATH (no process starts)."""

    def test_missing_program(self):
        """Not on the PATH of the environment it was given → exit status 127 (not run)."""
        self.environ["PATH"] = self.path("empty")
        self.runner = None
        done = self.world().runner(["claude", "mcp"])
        self.assertEqual((done.returncode, done.stderr), (NOT_RUN, "claude: not found"))


class CodexTests(AgentsTestCase):
    def test_registers_through_codex(self):
        """Codex argv: `mcp remove aimx`, `mcp add aimx -- … mcp` (case 6)."""
        self.runner = cli_runner(codex=Completed(0))
        code, out, _ = self.aimx("agents", "setup", "codex")
        self.assertEqual(code, 0)
        self.assertEqual(
            self.runner.calls,
            [
                ["codex", "mcp", "remove", "aimx"],
                ["codex", "mcp", "add", "aimx", "--", self.prog, "mcp"],
            ],
        )
        self.assertIn("MCP server registered with Codex CLI.", out)
        self.assertTrue(os.path.isfile(self.path(".codex/skills/aimx/references/hooks.md")))


class PrintTests(AgentsTestCase):
    def test_print_gemini(self):
        """--print shows files and activation, writes and runs nothing (case 8)."""
        code, out, _ = self.aimx("agents", "setup", "--print", "gemini")
        self.assertEqual(code, 0)
        self.assertTrue(out.startswith("=== SKILL.md ===\n---\nname: aimx\n"))
        self.assertIn(bundle.primer(McpCommand((self.prog,))), out)
        activation = "\n".join(section(out, "activation"))
        snippet = json.loads(activation[activation.index("{") :])
        self.assertEqual(
            snippet, {"mcpServers": {"aimx": {"command": self.prog, "args": ["mcp"]}}}
        )
        self.assertIn(f'"command": "{self.prog}"', activation)
        self.assertEqual(self.tree(), [])
        self.assertEqual(self.runner.calls, [])

    def test_print_lists_every_file_with_data_dir(self):
        """Each file gets a header line; the hint carries --data-dir."""
        out = self.aimx("--data-dir", "/d", "agents", "setup", "--print", "claude-code")[1]
        headers = [line for line in out.splitlines() if line.startswith("=== ")]
        self.assertEqual(
            headers,
            ["=== SKILL.md ==="]
            + [f"=== references/{n} ===" for n in registry.REFERENCES]
            + ["=== activation ===", "=== MCP server ==="],
        )
        self.assertIn(f"-e AIMX_DATA_DIR=/d -- {self.prog} --data-dir '/d' mcp", out)

    def test_print_checks_the_command(self):
        """--print names the command, its env and the CLI steps, and runs the check (only)."""
        code, out, _ = self.aimx("agents", "setup", "--print", "codex")
        self.assertEqual(code, 0)
        self.assertEqual(
            section(out, "MCP server"),
            [
                f"command:  {self.prog} mcp",
                "env:      (none: the default aimx directories)",
                "register: codex mcp remove aimx",
                f"register: codex mcp add aimx -- {self.prog} mcp",
                f"check:    [OK] MCP check passed: `{self.prog} mcp` answers initialize and "
                "tools/list (15 tools).",
            ],
        )
        self.assertEqual(self.check.calls, [([self.prog, "mcp"], self.environ)])
        self.assertEqual(self.runner.calls, [])

    def test_print_failing_check(self):
        """A failing check under --print: its reason in the section, the error, exit 1."""
        self.check = FakeCheck(CheckResult(False, "exited with code 2 before answering "
                                           "initialize", ("Traceback", "ImportError: x")))
        code, out, err = self.aimx("agents", "setup", "--print", "gemini")
        self.assertEqual(code, 1)
        self.assertEqual(
            section(out, "MCP server")[-1],
            "check:    [FAIL] exited with code 2 before answering initialize",
        )
        self.assertEqual(
            err,
            f"Error: MCP check failed: `{self.prog} mcp`: exited with code 2 before answering "
            "initialize\n  | Traceback\n  | ImportError: x\nNothing was installed or "
            "registered. Pass --command PATH to register another aimx program.\n",
        )
        self.assertEqual(self.tree(), [])

    def test_print_nanoclaw_skips_fork_check(self):
        """No fork directory is needed for a preview."""
        self.assertEqual(self.aimx("agents", "setup", "--print", "nanoclaw")[0], 0)
        self.assertEqual(self.tree(), [])


class SnippetAgentTests(AgentsTestCase):
    """opencode, gemini, openclaw, hermes (cases 9, 11, 12)."""

    def test_opencode_default_xdg(self):
        """XDG_CONFIG_HOME unset → ~/.config; SKILL.md only; JSON command hint (case 9)."""
        code, out, _ = self.aimx("agents", "setup", "opencode")
        self.assertEqual(code, 0)
        self.assertEqual(
            self.tree(),
            [
                ".config",
                ".config/opencode",
                ".config/opencode/skills",
                ".config/opencode/skills/aimx",
                ".config/opencode/skills/aimx/SKILL.md",
            ],
        )
        snippet = json.loads(out[out.index("{") :])
        self.assertEqual(snippet["mcp"]["aimx"], {"type": "local", "command": [self.prog, "mcp"]})
        self.assertIn(f'"command": [\n        "{self.prog}",\n        "mcp"\n      ]', out)
        self.assertEqual(self.runner.calls, [])

    def test_xdg_config_home(self):
        """An explicit XDG_CONFIG_HOME is used."""
        self.environ["XDG_CONFIG_HOME"] = self.path("xdg")
        self.aimx("agents", "setup", "opencode")
        self.assertTrue(os.path.isfile(self.path("xdg/opencode/skills/aimx/SKILL.md")))

    def test_gemini(self):
        """gemini: SKILL.md only, settings.json snippet."""
        code, out, _ = self.aimx("agents", "setup", "gemini", "--data-dir", '/a"b')
        self.assertEqual(code, 0)
        self.assertEqual(os.listdir(self.path(".gemini/skills/aimx")), ["SKILL.md"])
        snippet = json.loads(out[out.index("{") :])
        self.assertEqual(snippet["mcpServers"]["aimx"]["args"], ["--data-dir", '/a"b', "mcp"])

    def test_openclaw_hint(self):
        """The openclaw command is one single-quoted compact JSON word (case 11)."""
        out = self.aimx("agents", "setup", "openclaw")[1]
        self.assertIn(
            f"""openclaw mcp set aimx '{{"command":"{self.prog}","args":["mcp"]}}'""", out
        )
        self.assertEqual(len(os.listdir(self.path(".openclaw/skills/aimx/references"))), 5)
        hint = registry.activation_hint(registry.find("openclaw"), McpCommand((PROG,), "/it's"))
        self.assertIn(
            """'{"command":"/opt/aimx/bin/aimx","args":["--data-dir","/it'\\''s","mcp"]}'""", hint
        )

    def test_hermes_hint(self):
        """Hermes YAML args, flow-quoted when needed (case 12)."""
        self.assertIn("args: [mcp]", self.aimx("agents", "setup", "hermes")[1])
        hint = registry.activation_hint(registry.find("hermes"), McpCommand((PROG,), "/a,b"))
        self.assertIn('args: [--data-dir, "/a,b", mcp]', hint)
        self.assertIn("mcp_servers:", hint)
        self.assertIn("/reload-mcp", hint)


class GooseTests(AgentsTestCase):
    """Case 10."""

    def recipe(self, text):
        """Parse the recipe: with PyYAML when present, else check its block structure."""
        if yaml is not None:
            return yaml.safe_load(text)
        lines = text.split("\n")
        start = lines.index("    args:")
        args = []
        for line in lines[start + 1 :]:
            if not line.startswith("      - "):
                break
            value = line[len("      - ") :]
            args.append(json.loads(value) if value.startswith('"') else value)
        prompt_at = lines.index("prompt: |")
        body = lines[prompt_at + 1 :]
        for line in body:
            self.assertTrue(line == "" or line.startswith("  "), line)
        return {
            "extensions": [{"args": args}],
            "prompt": "\n".join(line[2:] for line in body),
        }

    def test_goose_recipe(self):
        """One aimx.yaml; valid; args [mcp]; the prompt holds the primer."""
        code, out, _ = self.aimx("agents", "setup", "goose")
        self.assertEqual(code, 0)
        self.assertEqual(os.listdir(self.path(".config/goose/recipes")), ["aimx.yaml"])
        recipe = self.recipe(self.read(".config/goose/recipes/aimx.yaml"))
        self.assertEqual(recipe["extensions"][0]["args"], ["mcp"])
        self.assertIn(bundle.primer(McpCommand((self.prog,))).strip(), recipe["prompt"])
        self.assertTrue(
            recipe["prompt"].startswith("## Wiring yourself up as a mailbox hook (Goose)")
        )
        self.assertIn("goose run --recipe aimx", out)

    def test_goose_data_dir(self):
        """--data-dir /d → args [--data-dir, /d, mcp]; quoting survives odd paths."""
        self.aimx("agents", "setup", "goose", "--data-dir", "/d")
        recipe = self.recipe(self.read(".config/goose/recipes/aimx.yaml"))
        self.assertEqual(recipe["extensions"][0]["args"], ["--data-dir", "/d", "mcp"])
        text = bundle.assemble(registry.find("goose"), McpCommand((PROG,), '/x: "y" #z'))[0].text
        self.assertEqual(
            self.recipe(text)["extensions"][0]["args"], ["--data-dir", '/x: "y" #z', "mcp"]
        )

    def test_remove_keeps_other_recipes(self):
        """remove goose deletes only aimx.yaml."""
        self.aimx("agents", "setup", "goose")
        other = self.path(".config/goose/recipes/mine.yaml")
        with open(other, "w") as f:
            f.write("title: mine\n")
        code, out, _ = self.aimx("agents", "remove", "goose")
        self.assertEqual(code, 0)
        self.assertEqual(os.listdir(self.path(".config/goose/recipes")), ["mine.yaml"])
        self.assertIn("Goose finds recipes by file name", out)


class NanoClawTests(AgentsTestCase):
    """Case 13 and §5."""

    def setUp(self):
        super().setUp()
        self.fork = self.path("fork")
        self.environ["NANOCLAW_HOME"] = self.fork
        self.mcp_json = os.path.join(self.fork, ".mcp.json")

    def write_mcp(self, text):
        os.makedirs(self.fork, exist_ok=True)
        with open(self.mcp_json, "w") as f:
            f.write(text)

    def mcp(self):
        with open(self.mcp_json) as f:
            return json.load(f)

    def test_missing_fork(self):
        """No fork → exit 1 naming it, with the clone hint; nothing created."""
        code, _, err = self.aimx("agents", "setup", "nanoclaw")
        self.assertEqual(code, 1)
        self.assertIn(self.fork, err)
        self.assertIn("git clone https://github.com/qwibitai/nanoclaw.git ~/nanoclaw", err)
        self.assertIn("$NANOCLAW_HOME", err)
        self.assertEqual(self.tree(), [])

    def test_merge_keeps_other_servers(self):
        """An existing server stays first; aimx is added; file ends with a newline."""
        self.write_mcp('{"mcpServers":{"other":{"command":"x"}},"z":1}')
        code, out, _ = self.aimx("agents", "setup", "nanoclaw")
        self.assertEqual(code, 0)
        document = self.mcp()
        self.assertEqual(list(document), ["mcpServers", "z"])
        self.assertEqual(list(document["mcpServers"]), ["other", "aimx"])
        self.assertEqual(
            document["mcpServers"]["aimx"], {"command": self.prog, "args": ["mcp"]}
        )
        self.assertIn(f"merged mcpServers.aimx into {self.mcp_json}", out)
        self.assertTrue(os.path.isfile(os.path.join(self.fork, "skills/aimx/SKILL.md")))
        self.assertEqual(stat.S_IMODE(os.stat(self.mcp_json).st_mode), 0o644)
        with open(self.mcp_json) as f:
            self.assertTrue(f.read().endswith("}\n"))
        self.assertEqual([n for n in os.listdir(self.fork) if n.endswith(".aimx-tmp")], [])

    def test_no_symlink_followed(self):
        """A symlink planted where a file goes is replaced, never written through, and an
        existing directory keeps its mode (this may run as root in a user's fork)."""
        victim = os.path.join(self.mktemp())
        with open(victim, "w") as f:
            f.write("precious")
        skills = os.path.join(self.fork, "skills", "aimx")
        os.makedirs(skills, mode=0o700)
        os.chmod(skills, 0o700)
        os.symlink(os.path.abspath(victim), os.path.join(skills, "SKILL.md"))
        code, _, err = self.aimx("agents", "setup", "nanoclaw", "--force")
        self.assertEqual(code, 0, err)
        with open(victim) as f:
            self.assertEqual(f.read(), "precious")
        self.assertFalse(os.path.islink(os.path.join(skills, "SKILL.md")))
        self.assertEqual(stat.S_IMODE(os.stat(skills).st_mode), 0o700)

    def test_existing_entry_needs_force(self):
        """An aimx entry is kept without --force (warning, exit 0), replaced with it."""
        self.write_mcp('{"mcpServers":{"aimx":{"command":"old"}}}')
        code, out, _ = self.aimx("agents", "setup", "nanoclaw", "--data-dir", "/d")
        self.assertEqual(code, 0)
        self.assertIn("mcpServers.aimx already exists in", out)
        self.assertIn("pass --force to overwrite", out)
        self.assertEqual(self.mcp()["mcpServers"]["aimx"], {"command": "old"})
        # A second run on a terminal, overwriting the skill files but not the entry.
        self.stdin = TTY("y\n")
        self.assertEqual(self.aimx("agents", "setup", "nanoclaw")[0], 0)
        self.assertEqual(self.mcp()["mcpServers"]["aimx"], {"command": "old"})
        self.assertEqual(
            self.aimx("agents", "setup", "nanoclaw", "--force", "--data-dir", "/d")[0], 0
        )
        self.assertEqual(self.mcp()["mcpServers"]["aimx"]["args"], ["--data-dir", "/d", "mcp"])

    def test_created_when_absent(self):
        """No .mcp.json → created."""
        os.makedirs(self.fork)
        out = self.aimx("agents", "setup", "nanoclaw")[1]
        self.assertIn(f"created {self.mcp_json} with mcpServers.aimx", out)
        self.assertEqual(list(self.mcp()), ["mcpServers"])

    def test_comment_is_not_json(self):
        """JSON5-style comments are refused: exit 1, `not valid JSON`."""
        self.write_mcp('// comment\n{"mcpServers":{}}\n')
        code, _, err = self.aimx("agents", "setup", "nanoclaw")
        self.assertEqual(code, 1)
        self.assertIn(f"{self.mcp_json}: not valid JSON", err)

    def test_merge_errors(self):
        """Shape and encoding errors name the file."""
        os.makedirs(self.fork)
        for content, message in (
            (b"[1]", "top-level value is not a JSON object"),
            (b'{"mcpServers": []}', "mcpServers is not a JSON object"),
            (b"\xff\xfe", "not valid UTF-8"),
            (b'{"a": NaN}', "not valid JSON"),
        ):
            with open(self.mcp_json, "wb") as f:
                f.write(content)
            e = self.assertRaises(AgentError, install.merge_mcp_json, self.fork, COMMAND, False)
            self.assertIn(f"{self.mcp_json}: {message}", str(e))

    def test_blank_file_and_missing_fork(self):
        """A blank file counts as {}; a missing fork is reported, not created."""
        self.write_mcp("  \n")
        outcome, _ = install.merge_mcp_json(self.fork, COMMAND, False)
        self.assertEqual(outcome, install.MergeOutcome.MERGED)
        outcome, _ = install.merge_mcp_json(self.path("nofork"), COMMAND, False)
        self.assertEqual(outcome, install.MergeOutcome.NO_FORK)
        self.assertFalse(os.path.exists(self.path("nofork")))

    def test_remove_leaves_mcp_json(self):
        """remove deletes the skill but never edits .mcp.json."""
        os.makedirs(self.fork)
        self.aimx("agents", "setup", "nanoclaw")
        before = self.mcp()
        out = self.aimx("agents", "remove", "nanoclaw")[1]
        self.assertEqual(self.mcp(), before)
        self.assertFalse(os.path.exists(os.path.join(self.fork, "skills/aimx")))
        self.assertIn("<fork>/.mcp.json", out)


class RootTests(AgentsTestCase):
    """--dangerously-allow-root (case 15)."""

    def test_files_land_in_root_home(self):
        """HOME and XDG_CONFIG_HOME are ignored; root's pw_dir is used."""
        self.euid = 0
        self.root_home = self.path("roothome")
        self.environ["HOME"] = self.path("elsewhere")
        self.environ["XDG_CONFIG_HOME"] = self.path("xdg")
        code, _, _ = self.aimx("agents", "setup", "opencode", "--dangerously-allow-root")
        self.assertEqual(code, 0)
        self.assertTrue(os.path.isfile(self.path("roothome/.config/opencode/skills/aimx/SKILL.md")))
        self.assertEqual(self.tree(), [p for p in self.tree() if p.startswith("roothome")])
        code, out, _ = self.aimx("agents", "remove", "opencode", "--dangerously-allow-root")
        self.assertEqual(code, 0)
        self.assertIn(f"Removed {self.path('roothome/.config/opencode/skills/aimx')}", out)

    def test_nanoclaw_home_still_honoured(self):
        """$NANOCLAW_HOME keeps pointing at the fork under the root override."""
        where = registry.places(
            {"HOME": "/h", "XDG_CONFIG_HOME": "/x", "NANOCLAW_HOME": "/n"}, home="/root"
        )
        self.assertEqual(where, registry.Places("/root", "/root/.config", "/n"))

    def test_root_home_lookup(self):
        """The default lookup reads root's passwd entry."""
        self.assertTrue(agents_cli._root_home().startswith("/"))


class BareSetupTests(AgentsTestCase):
    """No agent named (case 16)."""

    def test_not_a_terminal(self):
        """stderr not a TTY → registry dump and a footer; no picker."""
        code, out, _ = self.aimx("agents", "setup")
        self.assertEqual(code, 0)
        self.assertIn("Supported agents:", out)
        self.assertIn("aimx agents setup <agent>", out.splitlines()[-1])

    def test_print_without_agent(self):
        """--print without agent → dump and a footer naming --print claude-code."""
        self.err = TTY()
        out = self.aimx("agents", "setup", "--print")[1]
        self.assertIn("aimx agents setup --print claude-code", out.splitlines()[-1])

    def test_no_interactive_on_a_terminal(self):
        """--no-interactive never opens the picker."""
        self.err = TTY()
        self.assertEqual(self.aimx("agents", "setup", "--no-interactive")[0], 0)
        self.assertEqual(self.err.getvalue(), "")


class InstallStateTests(AgentsTestCase):
    """§6 detection (case 17)."""

    def state(self, name):
        return install.install_state(registry.find(name), registry.places(self.environ))

    def test_detection(self):
        """not detected → not wired (empty dest too) → wired once a file mentions aimx."""
        self.assertEqual(self.state("claude-code"), InstallState.NOT_DETECTED)
        os.makedirs(self.path(".claude/skills/aimx"))
        self.assertEqual(self.state("claude-code"), InstallState.NOT_WIRED)
        with open(self.path(".claude/skills/aimx/notes.txt"), "w") as f:
            f.write("unrelated")
        self.assertEqual(self.state("claude-code"), InstallState.NOT_WIRED)
        with open(self.path(".claude/skills/aimx/SKILL.md"), "w") as f:
            f.write("name: aimx")
        self.assertEqual(self.state("claude-code"), InstallState.WIRED)

    def test_nested_file_does_not_count(self):
        """Only top-level regular files are scanned."""
        os.makedirs(self.path(".codex/skills/aimx/references"))
        with open(self.path(".codex/skills/aimx/references/x.md"), "w") as f:
            f.write("aimx")
        self.assertEqual(self.state("codex"), InstallState.NOT_WIRED)

    def test_goose(self):
        """Goose is wired when recipes/aimx.yaml is a file."""
        os.makedirs(self.path(".config/goose/recipes"))
        self.assertEqual(self.state("goose"), InstallState.NOT_WIRED)
        os.makedirs(self.path(".config/goose/recipes/aimx.yaml"))
        self.assertEqual(self.state("goose"), InstallState.NOT_WIRED)
        os.rmdir(self.path(".config/goose/recipes/aimx.yaml"))
        self.aimx("agents", "setup", "goose")
        self.assertEqual(self.state("goose"), InstallState.WIRED)


class PickerFlowTests(AgentsTestCase):
    """The TUI of §6 driven through `aimx agents setup` with fake keys."""

    def setUp(self):
        super().setUp()
        self.err = TTY()
        self.keys = []

    def open_keys(self, stdin):
        keys = picker.StreamKeys(io.StringIO(self.keys.pop(0)))
        return picker._NullContext(keys)

    def test_install_detected_agents(self):
        """Detected agents are pre-selected; Enter, confirm, install, summary."""
        os.makedirs(self.path(".claude"))
        os.makedirs(self.path(".gemini"))
        self.keys = ["\n"]
        self.stdin = TTY("\n")
        code, out, _ = self.aimx("agents", "setup")
        self.assertEqual(code, 0)
        screen = self.err.getvalue()
        self.assertIn("Setting up MCP integration for AI agents for `alice`.", screen)
        self.assertIn("Select which AI agents you want to set up AIMX MCP for:", screen)
        self.assertIn("\x1b[", screen)  # a terminal with colour: redrawn in place
        self.assertIn("Tasks to perform:", out)
        self.assertIn("1. Install AIMX MCP for Claude Code", out)
        self.assertIn("2. Install AIMX MCP for Gemini CLI", out)
        self.assertIn("Confirm? [Y/n] ", out)
        self.assertIn("==> Claude Code", out)
        self.assertIn("==> Gemini CLI", out)
        self.assertTrue(os.path.isfile(self.path(".claude/skills/aimx/SKILL.md")))
        self.assertTrue(os.path.isfile(self.path(".gemini/skills/aimx/SKILL.md")))
        summary = out[out.index("Summary") :].splitlines()
        self.assertEqual(summary[2], "  Agent        Status   Destination")
        self.assertEqual(summary[3], "  -----------  -------  -----------")
        self.assertEqual(summary[4], f"  Claude Code  [OK] ok  {self.path('.claude/skills/aimx')}")

    def test_no_colour_screen(self):
        """NO_COLOR: no escape sequences anywhere, ASCII caret, plain reprints."""
        self.environ["NO_COLOR"] = "1"
        os.makedirs(self.path(".claude"))
        os.makedirs(self.path(".codex"))
        self.keys = [" \n"]
        self.stdin = TTY("y\n")
        code, out, _ = self.aimx("agents", "setup")
        self.assertEqual(code, 0)
        screen = self.err.getvalue()
        self.assertNotIn("\x1b", screen + out)
        self.assertIn("> [x] Claude Code", screen)
        self.assertIn("> [ ] Claude Code", screen)  # after the first Space
        self.assertIn("  [-] OpenCode (not detected)", screen)
        self.assertIn("  [>] Space toggles, Enter confirms, q cancels.", screen)
        self.assertIn("1. Install AIMX MCP for Codex CLI", out)
        self.assertNotIn("for Claude Code", out)

    def test_wired_rows_and_refresh(self):
        """A wired agent starts unselected; picking it is a re-install with refreshed files."""
        os.makedirs(self.path(".claude"))
        self.aimx("agents", "setup", "claude-code")
        self.keys = [" \n"]
        self.stdin = TTY("\ny\n")  # confirm, then allow the overwrite
        code, out, _ = self.aimx("agents", "setup")
        self.assertEqual(code, 0)
        self.assertIn("(AIMX MCP wired)", self.err.getvalue())
        self.assertIn("1. Re-install AIMX MCP for Claude Code", out)
        self.assertIn("(refresh files)", out)

    def test_decline_returns_to_picker(self):
        """`n` at the confirmation goes back with the selection kept."""
        os.makedirs(self.path(".hermes"))
        self.keys = ["\n", "\n"]
        self.stdin = TTY("n\ny\n")
        code, out, _ = self.aimx("agents", "setup")
        self.assertEqual(code, 0)
        self.assertEqual(out.count("Tasks to perform:"), 2)
        self.assertEqual(out.count("1. Install AIMX MCP for Hermes"), 2)
        self.assertTrue(os.path.isfile(self.path(".hermes/skills/aimx/SKILL.md")))

    def test_cancel_and_nothing_selected(self):
        """q cancels; Enter with nothing selected does nothing."""
        os.makedirs(self.path(".claude"))
        for keys, message in (
            ("q", "Cancelled. No agents were wired."),
            ("\x1b", "Cancelled. No agents were wired."),
            ("\x03", "Cancelled. No agents were wired."),
            ("", "Cancelled. No agents were wired."),
            (" \n", "No agents selected. Nothing to do."),
        ):
            self.keys = [keys]
            code, out, _ = self.aimx("agents", "setup")
            self.assertEqual(code, 0)
            self.assertIn(message, out)
        self.assertEqual(self.tree(), [".claude"])

    def test_failure_continues(self):
        """One failing agent is reported and the others still install."""
        os.makedirs(self.path(".claude/skills"))
        with open(self.path(".claude/skills/aimx"), "w") as f:
            f.write("in the way")
        os.makedirs(self.path(".codex"))
        self.keys = ["\n"]
        self.stdin = TTY("\n")
        code, out, _ = self.aimx("agents", "setup")
        self.assertEqual(code, 0)
        self.assertIn("  [FAIL] cannot write", out)
        self.assertIn("[FAIL] failed  (error: cannot write", out)
        self.assertIn("Codex CLI    [OK] ok", out)

    def test_nothing_detected(self):
        """No agent directories → a message listing what was looked for."""
        code, out, _ = self.aimx("agents", "setup")
        self.assertEqual(code, 0)
        self.assertIn("No AI agents detected on this user's filesystem.", out)
        for agent in AGENTS:
            self.assertIn(agent.display, out)


class PickerTests(SynchronousTestCase):
    """picker.pick on its own with fake streams."""

    def rows(self, *states):
        return picker.initial_rows(list(zip(AGENTS, states)))

    def style(self, colour=False):
        environ = {} if colour else {"NO_COLOR": "1"}
        return picker.Style(Terminal(TTY(), TTY(), TTY(), environ))

    def test_cursor_skips_and_wraps(self):
        """j/k and arrows move between selectable rows only, wrapping around."""
        S = InstallState
        rows = self.rows(
            S.NOT_DETECTED, S.NOT_WIRED, S.NOT_DETECTED, S.WIRED, *[S.NOT_DETECTED] * 4
        )
        self.assertEqual([r.selected for r in rows[:4]], [False, True, False, False])
        keys = picker.StreamKeys(io.StringIO("j j \x1b[A\x1b[A \n"))
        picked = picker.pick(rows, keys, io.StringIO(), self.style())
        # From codex: j→gemini (on), j wraps→codex (off), up→gemini, up→codex (on).
        self.assertEqual([r.agent.name for r in picked], ["codex", "gemini"])

    def test_line_mode(self):
        """Line input: keys of a line apply together; an empty line confirms."""
        rows = self.rows(*[InstallState.NOT_WIRED] * 8)
        stream = io.StringIO()
        keys = picker.StreamKeys(io.StringIO("j\n \n\n"), line_mode=True)
        picked = picker.pick(rows, keys, stream, self.style())
        self.assertEqual(len(picked), 7)
        self.assertNotIn("codex", [r.agent.name for r in picked])
        self.assertEqual(stream.getvalue().count("Space toggles"), 3)

    def test_colour_redraws_in_place(self):
        """With colour: caret in copper, cursor hidden then shown, in-place redraw."""
        rows = self.rows(*[InstallState.NOT_WIRED] * 8)
        stream = io.StringIO()
        picker.pick(rows, picker.StreamKeys(io.StringIO("j\n")), stream, self.style(True), "bob")
        screen = stream.getvalue()
        self.assertIn("\x1b[38;2;185;83;28m❯\x1b[0m", screen)
        self.assertIn("\x1b[9F\x1b[J", screen)
        self.assertTrue(screen.endswith("\x1b[?25h"))
        self.assertIn("for `bob`.", screen)

    def test_no_user(self):
        """An unknown user drops the `for …` clause."""
        stream = io.StringIO()
        picker.pick(
            self.rows(*[InstallState.NOT_WIRED] * 8),
            picker.StreamKeys(io.StringIO("q")),
            stream,
            self.style(),
        )
        self.assertIn("Setting up MCP integration for AI agents.\n", stream.getvalue())

    def test_keyboard_interrupt_cancels(self):
        """Ctrl-C delivered as a signal cancels too."""

        class Interrupted:
            def read(self):
                raise KeyboardInterrupt

        self.assertIsNone(
            picker.pick(
                self.rows(*[InstallState.NOT_WIRED] * 8), Interrupted(), io.StringIO(), self.style()
            )
        )

    def test_summary_pads_visible_width(self):
        """Padding ignores escape sequences."""
        lines = picker.summary_lines(
            [("Claude Code", True, "/d"), ("Goose", False, "bad")], self.style(True)
        )
        self.assertIn("\x1b[", lines[5])
        plain = [picker._ANSI.sub("", line) for line in lines]
        self.assertEqual(plain[5].index("/d"), plain[6].index("(error: bad)"))
        self.assertEqual(plain[5].index("/d"), plain[3].index("Destination"))
        self.assertEqual(picker.visible_width(picker.pad("\x1b[1mab\x1b[0m", 5)), 5)


class RegistryTests(SynchronousTestCase):
    def test_registry(self):
        """Eight agents in order, with their destinations and wiring."""
        self.assertEqual(registry.names(), NAMES)
        where = registry.places({"HOME": "/h/"})
        self.assertEqual(where, registry.Places("/h", "/h/.config", "/h/nanoclaw"))
        dests = [registry.expand(a.dest, where) for a in AGENTS]
        self.assertEqual(dests[4], "/h/.config/goose/recipes")
        self.assertEqual(dests[7], "/h/nanoclaw/skills/aimx")
        self.assertEqual(
            [a.references for a in AGENTS], [True, True, False, False, False, True, True, True]
        )
        self.assertIsNone(registry.registration(registry.find("gemini"), COMMAND))
        self.assertRaises(AgentError, registry.places, {"HOME": ""})

    def test_mcp_command(self):
        """The registered command: the program's words, [--data-dir P,] mcp; env sorted."""
        self.assertEqual(COMMAND.argv, [PROG, "mcp"])
        command = McpCommand(
            ("/usr/bin/python3", "-m", "aimx"),
            "/d",
            {"AIMX_RUNTIME_DIR": "/r", "AIMX_CONFIG_DIR": "/c"},
        )
        self.assertEqual(command.command, "/usr/bin/python3")
        self.assertEqual(command.args, ["-m", "aimx", "--data-dir", "/d", "mcp"])
        self.assertEqual(command.env, (("AIMX_CONFIG_DIR", "/c"), ("AIMX_RUNTIME_DIR", "/r")))
        self.assertEqual(command.shell(), "/usr/bin/python3 -m aimx --data-dir '/d' mcp")
        self.assertEqual(
            command.display(),
            "AIMX_CONFIG_DIR=/c AIMX_RUNTIME_DIR=/r /usr/bin/python3 -m aimx --data-dir '/d' mcp",
        )
        self.assertEqual(McpCommand(("/a b/aimx",)).shell(), "'/a b/aimx' mcp")
        self.assertRaises(ValueError, McpCommand, ())
        self.assertEqual(registry.posix_quote("it's"), "'it'\\''s'")

    def test_every_hint_renders(self):
        """Every agent has an activation and removal hint; data dirs are escaped."""
        for agent in AGENTS:
            self.assertTrue(registry.activation_hint(agent, COMMAND))
            self.assertTrue(registry.removal_hint(agent))
        gemini = registry.activation_hint(registry.find("gemini"), McpCommand((PROG,), 'a"b\\c'))
        self.assertEqual(
            json.loads(gemini[gemini.index("{") :])["mcpServers"]["aimx"]["args"],
            ["--data-dir", 'a"b\\c', "mcp"],
        )
        nanoclaw = registry.activation_hint(registry.find("nanoclaw"), COMMAND)
        for word in ("NanoClaw", "$NANOCLAW_HOME", "<fork>/.mcp.json", "email_list"):
            self.assertIn(word, nanoclaw)


class BundleTests(SynchronousTestCase):
    def test_skill_files(self):
        """SKILL.md = header + primer; references only where the registry says; sorted."""
        for agent in AGENTS:
            files = bundle.assemble(agent, COMMAND)
            self.assertEqual([f.path for f in files], sorted(f.path for f in files))
            if agent.recipe:
                self.assertEqual([f.path for f in files], ["aimx.yaml"])
                continue
            skill = files[0].text
            self.assertEqual(files[0].path, "SKILL.md")
            self.assertTrue(skill.startswith(bundle.header(agent).rstrip("\n")))
            self.assertTrue(skill.endswith(bundle.primer(COMMAND)))
            self.assertIn(f"## Wiring yourself up as a mailbox hook ({agent.display})", skill)
            self.assertIn(f"aimx agents setup {agent.name}", skill)
            self.assertEqual(len(files), 6 if agent.references else 1)

    def test_frontmatter(self):
        """Headers carry the frontmatter keys of §4.5."""
        text = {a.name: bundle.header(a) for a in AGENTS}
        for name, header in text.items():
            if name == "goose":
                continue
            fm = header.split("---\n")[1]
            self.assertIn("name: aimx\n", fm)
            self.assertIn("description: ", fm)
            self.assertIn("author: ", fm)
        self.assertIn("mcp__aimx__", text["claude-code"].split("---\n")[1])
        self.assertIn("license: MIT", text["hermes"])
        self.assertIn("requires_toolsets: [terminal]", text["hermes"])
        for name in ("openclaw", "nanoclaw"):
            self.assertIn("version: 1.0.0", text[name])
            meta = text[name].split("metadata: ")[1].split("\n")[0]
            self.assertEqual(json.loads(meta), {name: {"requires": {"bins": ["aimx"]}}})
        self.assertIn('version: "1.0.0"', text["goose"])

    def test_hook_recipes(self):
        """Each header teaches its agent's hook argv."""
        expected = {
            "claude-code": '["/usr/local/bin/claude", "-p", ',
            "codex": '["/usr/local/bin/codex", "exec", "--skip-git-repo-check", "--full-auto", "-"]',
            "gemini": '"--yolo"]',
            "opencode": '["/usr/local/bin/opencode", "run", "--dangerously-skip-permissions", ',
            "hermes": '["/usr/local/bin/hermes", "chat", "-q", ',
            "goose": '["/usr/local/bin/goose", "run", "--instructions", "-", "--quiet"]',
        }
        for name, snippet in expected.items():
            self.assertIn(snippet, bundle.header(registry.find(name)))
        self.assertIn("AIMX_FILEPATH", bundle.header(registry.find("opencode")))
        self.assertNotIn("unread_only", bundle.header(registry.find("nanoclaw")))

    def test_primer_facts(self):
        """The primer names all fifteen tools and aimx's own behaviour."""
        text = bundle.primer(COMMAND)
        for tool in (
            "mailbox_list",
            "mailbox_create",
            "mailbox_delete",
            "email_list",
            "email_read",
            "email_send",
            "email_reply",
            "email_mark_read",
            "email_mark_unread",
            "hook_create",
            "hook_list",
            "hook_delete",
            "email_search",
            "email_thread",
            "held_list",
        ):
            self.assertIn(f"`{tool}(", text)
        for fact in (
            "fifteen tools",
            "held for approval",
            "0700",
            "aimx-catchall",
            "fire_on_untrusted",
            "read == false",
            f"claude mcp add --scope user aimx -- {PROG} mcp",
            "partial",
            "sudo aimx mailboxes create <name> --owner <user>",
            "AIMX_FILEPATH",
            "/etc/aimx",
            "thread_id",
            "bcc",
        ):
            self.assertIn(fact, text)
        self.assertNotIn("eleven", text.lower())

    def test_references(self):
        """The five references ship and fix AIMX's stale statements."""
        tools = bundle.data_text("references", "mcp-tools.md")
        self.assertIn("Email '<id>' marked as read.", tools)
        self.assertIn("Hook created on mailbox '<mailbox>'.", tools)
        self.assertIn("the **daemon** first erases", tools)
        trouble = bundle.data_text("references", "troubleshooting.md")
        self.assertIn("selector `aimx`", trouble)
        for n in ("| 0 |", "| 1 |", "| 2 |", "| 3 |"):
            self.assertIn(n, trouble)
        hooks = bundle.data_text("references", "hooks.md")
        self.assertIn("AIMX_SEND_STATUS", hooks)
        self.assertIn("duplicate hook name", hooks)

    def test_indent_and_recipe_errors(self):
        """Blank lines stay empty when indented; a recipe without args: is an error."""
        self.assertEqual(bundle.indent_block("a\n\n  b\n", "  "), "  a\n\n    b\n")
        self.assertRaises(AgentError, bundle.with_recipe_command, "prompt: |\n  x\n", COMMAND)
        self.assertRaises(
            AgentError, bundle.with_recipe_command, "cmd: @@AIMX_MCP@@ mcp\n", COMMAND
        )


class CommandLineTests(SynchronousTestCase):
    """The verb's place in `aimx` (cli.md case 4, §4.8)."""

    def run_cli(self, *argv):
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        self.patch(sys, "stdout", io.StringIO())
        e = self.assertRaises(SystemExit, cli.main, list(argv))
        return e.code, err.getvalue()

    def test_no_singular_alias(self):
        """`agent` and `agent-setup` are unknown subcommands, named in the error."""
        for verb in ("agent", "agent-setup"):
            code, err = self.run_cli(verb, "setup", "--list")
            self.assertEqual(code, 2)
            self.assertIn(f"'{verb}'", err)

    def test_action_required(self):
        """`aimx agents` alone is a usage error."""
        self.assertEqual(self.run_cli("agents")[0], 2)

    def test_help_lists_flags(self):
        """setup --help shows its five flags."""
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        self.assertRaises(SystemExit, cli.main, ["agents", "setup", "--help"])
        for flag in (
            "--list",
            "--force",
            "--print",
            "--no-interactive",
            "--dangerously-allow-root",
        ):
            self.assertIn(flag, out.getvalue())


class TtyKeysTests(SynchronousTestCase):
    """The cbreak key source on a real pseudo-terminal."""

    def test_cbreak_keys(self):
        """Arrow sequences (CSI and SS3), j/k, Space and Enter; the mode is restored."""
        import pty
        import termios

        master, slave = pty.openpty()
        self.addCleanup(os.close, master)
        self.addCleanup(os.close, slave)
        before = termios.tcgetattr(slave)
        with picker.TtyKeys(slave) as keys:
            self.assertFalse(termios.tcgetattr(slave)[3] & termios.ICANON)
            os.write(master, b"\x1b[Bjk \r\x1bOAx")
            got = [keys.read() for _ in range(7)]
        self.assertEqual(
            got,
            [
                picker.DOWN,
                picker.DOWN,
                picker.UP,
                picker.TOGGLE,
                picker.ENTER,
                picker.UP,
                picker.IGNORED,
            ],
        )
        self.assertEqual(termios.tcgetattr(slave), before)

    def test_open_keys_falls_back_to_lines(self):
        """A stdin that is not a terminal is read line by line."""
        with picker.open_keys(io.StringIO("j\n")) as keys:
            self.assertIsInstance(keys, picker.StreamKeys)
            self.assertTrue(keys.line_mode)
        with picker.open_keys(TTY("")) as keys:  # claims a TTY but has no descriptor
            self.assertIsInstance(keys, picker.StreamKeys)


class CheckFirstTests(AgentsTestCase):
    """The MCP check runs before anything is written or registered."""

    def test_ok_line_then_install(self):
        """The check passes: its line, then the install and the registration."""
        self.runner = cli_runner(claude=Completed(0))
        code, out, _ = self.aimx("agents", "setup", "claude-code")
        self.assertEqual(code, 0)
        lines = out.splitlines()
        self.assertEqual(
            lines[0],
            f"[OK] MCP check passed: `{self.prog} mcp` answers initialize and tools/list "
            "(15 tools).",
        )
        self.assertTrue(lines[1].startswith("Installed "))
        self.assertEqual(len(self.check.calls), 1)

    def test_failure_installs_nothing(self):
        """A failing check: exit 1, no file, no CLI run, no legacy plugin removed."""
        os.makedirs(self.path(".claude/plugins/aimx"))
        self.runner = cli_runner(claude=Completed(0))
        self.check = FakeCheck(CheckResult(False, "command not found: /x"))
        code, out, err = self.aimx("agents", "setup", "claude-code", "--command", "/x")
        self.assertEqual(code, 1)
        self.assertEqual(out, "")
        self.assertIn("Error: MCP check failed: `/x mcp`: command not found: /x", err)
        self.assertIn("Nothing was installed or registered.", err)
        self.assertEqual(self.tree(), [".claude", ".claude/plugins", ".claude/plugins/aimx"])
        self.assertEqual(self.runner.calls, [])

    def test_picker_checks_once(self):
        """The picker checks once, after the confirmation; a failure installs nothing."""
        self.err = TTY()
        os.makedirs(self.path(".claude"))
        os.makedirs(self.path(".gemini"))
        self.open_keys = lambda stdin: picker._NullContext(picker.StreamKeys(io.StringIO("\n")))
        self.stdin = TTY("\n")
        self.check = FakeCheck(CheckResult(False, "gave no answer to initialize within 20 s"))
        code, out, err = self.aimx("agents", "setup")
        self.assertEqual(code, 1)
        self.assertIn("Confirm? [Y/n] ", out)
        self.assertIn("gave no answer to initialize within 20 s", err)
        self.assertEqual(self.tree(), [".claude", ".gemini"])
        self.check = FakeCheck()
        self.stdin = TTY("\n")
        self.assertEqual(self.aimx("agents", "setup")[0], 0)
        self.assertEqual(len(self.check.calls), 1)
        self.assertTrue(os.path.isfile(self.path(".gemini/skills/aimx/SKILL.md")))


class DirectoryEnvTests(AgentsTestCase):
    """Non-default aimx directories become the server's environment, in each harness's
    format; the defaults are left out."""

    def setUp(self):
        super().setUp()
        self.environ["AIMX_RUNTIME_DIR"] = "/srv/aimx/run"
        self.environ["AIMX_CONFIG_DIR"] = "/srv/aimx/etc"
        self.env = {"AIMX_CONFIG_DIR": "/srv/aimx/etc", "AIMX_RUNTIME_DIR": "/srv/aimx/run"}

    def snippet(self, out):
        return json.loads(out[out.index("{") :])

    def test_directories(self):
        """Defaults dropped, relative paths made absolute, flags win over the environment."""
        self.assertEqual(
            mcpcommand.directories(None, None, {"AIMX_RUNTIME_DIR": "/run/aimx"}), {}
        )
        self.assertEqual(mcpcommand.directories("/etc/aimx", "/var/lib/aimx", {}), {})
        self.assertEqual(
            mcpcommand.directories("etc", "/d", {"AIMX_RUNTIME_DIR": "run"}),
            {"AIMX_CONFIG_DIR": os.path.abspath("etc"), "AIMX_DATA_DIR": "/d",
             "AIMX_RUNTIME_DIR": os.path.abspath("run")},
        )
        out = self.aimx("--config-dir", "/flag/etc", "agents", "setup", "--print", "gemini")[1]
        entry = self.snippet("\n".join(section(out, "activation")))["mcpServers"]["aimx"]
        self.assertEqual(entry["env"]["AIMX_CONFIG_DIR"], "/flag/etc")

    def test_claude_and_codex(self):
        """claude: -e after the server name (before it, -e swallows the name); codex: --env."""
        self.runner = cli_runner(claude=Completed(0), codex=Completed(0))
        self.aimx("agents", "setup", "claude-code")
        self.aimx("agents", "setup", "codex")
        self.assertEqual(
            self.runner.calls[1],
            ["claude", "mcp", "add", "--scope", "user", "aimx",
             "-e", "AIMX_CONFIG_DIR=/srv/aimx/etc", "-e", "AIMX_RUNTIME_DIR=/srv/aimx/run",
             "--", self.prog, "mcp"],
        )
        self.assertEqual(
            self.runner.calls[3],
            ["codex", "mcp", "add", "aimx", "--env", "AIMX_CONFIG_DIR=/srv/aimx/etc",
             "--env", "AIMX_RUNTIME_DIR=/srv/aimx/run", "--", self.prog, "mcp"],
        )

    def test_check_uses_the_registered_env(self):
        """The check sees the registered directories and none of this process's others."""
        self.environ["AIMX_DATA_DIR"] = "/var/lib/aimx"
        self.environ["OTHER"] = "kept"
        self.aimx("agents", "setup", "--print", "gemini")
        argv, env = self.check.calls[0]
        self.assertEqual(argv, [self.prog, "--data-dir", "/var/lib/aimx", "mcp"])
        self.assertEqual(
            env, {"HOME": self.home, "PATH": "/nonexistent", "OTHER": "kept", **self.env}
        )

    def test_json_harnesses(self):
        """gemini, openclaw, nanoclaw: "env"; opencode: "environment" beside "type": "local"."""
        out = self.aimx("agents", "setup", "gemini")[1]
        self.assertEqual(self.snippet(out)["mcpServers"]["aimx"]["env"], self.env)
        out = self.aimx("agents", "setup", "opencode")[1]
        self.assertEqual(
            self.snippet(out),
            {"mcp": {"aimx": {"type": "local", "command": [self.prog, "mcp"],
                              "environment": self.env}}},
        )
        out = self.aimx("agents", "setup", "openclaw")[1]
        word = shlex.split(out[out.index("openclaw mcp set") :].splitlines()[0])[-1]
        self.assertEqual(json.loads(word)["env"], self.env)
        os.makedirs(self.path("nanoclaw"))
        self.aimx("agents", "setup", "nanoclaw")
        with open(self.path("nanoclaw/.mcp.json")) as f:
            self.assertEqual(json.load(f)["mcpServers"]["aimx"]["env"], self.env)

    def test_hermes(self):
        """hermes: an env: mapping, values double-quoted."""
        out = self.aimx("agents", "setup", "hermes")[1]
        self.assertIn(
            f"      command: {self.prog}\n      args: [mcp]\n      env:\n"
            '        AIMX_CONFIG_DIR: "/srv/aimx/etc"\n'
            '        AIMX_RUNTIME_DIR: "/srv/aimx/run"\n      enabled: true\n',
            out,
        )

    def test_goose(self):
        """goose: envs: in the recipe's extension and in the example hook recipe."""
        self.aimx("agents", "setup", "goose")
        text = self.read(".config/goose/recipes/aimx.yaml")
        lines = [
            f'cmd: "{self.prog}"', "args:", '  - "mcp"', "envs:",
            '  AIMX_CONFIG_DIR: "/srv/aimx/etc"', '  AIMX_RUNTIME_DIR: "/srv/aimx/run"',
            "timeout: 300",
        ]
        for indent in ("    ", "      "):  # the extension, and the example hook recipe
            self.assertIn("".join(f"{indent}{line}\n" for line in lines), text)
        self.assertNotIn("@@", text)
        if yaml is not None:
            self.assertEqual(yaml.safe_load(text)["extensions"][0]["envs"], self.env)


class CommandOptionTests(AgentsTestCase):
    """--command PATH replaces the detected program."""

    def test_path_made_absolute(self):
        """A relative path is made absolute; the check runs that program."""
        self.aimx("agents", "setup", "--print", "gemini", "--command", "venv/bin/aimx")
        self.assertEqual(self.check.calls[0][0], [os.path.abspath("venv/bin/aimx"), "mcp"])

    def test_bare_name_on_path(self):
        """A bare name is looked up on PATH; not found, it is kept for the check to report."""
        self.environ["PATH"] = os.path.dirname(self.prog)
        self.aimx("agents", "setup", "--print", "gemini", "--command", "aimx")
        self.aimx("agents", "setup", "--print", "gemini", "--command", "nonesuch")
        self.assertEqual([argv for argv, _ in self.check.calls],
                         [[self.prog, "mcp"], ["nonesuch", "mcp"]])

    def test_help(self):
        """setup --help documents --command."""
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        self.assertRaises(SystemExit, cli.main, ["agents", "setup", "--help"])
        self.assertIn("--command PATH", out.getvalue())


class ProgramTests(SynchronousTestCase):
    """mcpcommand.program: which aimx is running, for venv, pipx, system and `-m` installs."""

    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)

    def script(self, path, first_lines, mode=0o755):
        path = os.path.join(self.base, path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(first_lines + "from aimx.cli import main\n")
        os.chmod(path, mode)
        return path

    def python(self, bindir):
        """A `python` in C{bindir} that is this interpreter (as a venv's is)."""
        path = os.path.join(self.base, bindir, "python3")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(sys.executable, path)
        return path

    def test_venv_console_script(self):
        """argv[0] is the venv's script, whose #! is the venv python: that script."""
        python = self.python("venv/bin")
        aimx = self.script("venv/bin/aimx", f"#!{python}\n")
        self.assertEqual(mcpcommand.program(aimx, python, "/nonexistent"), (aimx,))

    def test_pipx_symlink_kept(self):
        """A pipx link in ~/.local/bin is registered as the link (it survives upgrades)."""
        python = self.python("pipx/venvs/aimx/bin")
        target = self.script("pipx/venvs/aimx/bin/aimx", f"#!{python}\n")
        link = os.path.join(self.base, "local/bin/aimx")
        os.makedirs(os.path.dirname(link))
        os.symlink(target, link)
        self.assertEqual(mcpcommand.program(link, python, None), (link,))

    def test_system_install(self):
        """No venv: /usr/local/bin/aimx run by the system python is that script."""
        python = self.python("usr/bin")
        aimx = self.script("usr/local/bin/aimx", f"#!{python}\n")
        self.assertEqual(mcpcommand.program(aimx, python, "/nonexistent"), (aimx,))

    def test_relative_argv0(self):
        """`.venv/bin/aimx` typed in a shell: made absolute."""
        python = self.python("venv/bin")
        aimx = self.script("venv/bin/aimx", f"#!{python}\n")
        self.patch(os, "getcwd", lambda: self.base)
        self.assertEqual(
            mcpcommand.program("venv/bin/aimx", python, None), (os.path.abspath("venv/bin/aimx"),)
        )
        self.assertTrue(os.path.samefile(os.path.abspath("venv/bin/aimx"), aimx))

    def test_other_environment_refused(self):
        """Another venv's aimx (its python links to the same base interpreter) or a script
        for another python is not ours: `<python> -m aimx`."""
        python = self.python("venv/bin")
        other = self.python("other/bin")
        theirs = self.script("other/bin/aimx", f"#!{other}\n")
        self.assertEqual(mcpcommand.program(theirs, python, os.path.dirname(theirs)),
                         (python, "-m", "aimx"))
        shutil_python = os.path.join(self.base, "venv/bin/python2")
        with open(shutil_python, "w") as f:
            f.write("")
        wrong = self.script("venv/bin/aimx", f"#!{shutil_python}\n")
        self.assertEqual(mcpcommand.program(wrong, python, None), (python, "-m", "aimx"))

    def test_module_run_uses_path(self):
        """`python -m aimx`: the aimx on PATH when it is this environment's, else `-m aimx`."""
        python = self.python("venv/bin")
        aimx = self.script("venv/bin/aimx", f"#!{python}\n")
        main = os.path.join(REPO, "aimx", "__main__.py")
        self.assertEqual(mcpcommand.program(main, python, os.path.dirname(aimx)), (aimx,))
        self.assertEqual(mcpcommand.program(main, python, "/nonexistent"),
                         (python, "-m", "aimx"))
        self.assertEqual(mcpcommand.program("", python, None), (python, "-m", "aimx"))

    def test_only_a_script_called_aimx(self):
        """trial's own console script has the right #! but is not aimx."""
        python = self.python("venv/bin")
        trial = self.script("venv/bin/trial", f"#!{python}\n")
        self.assertEqual(mcpcommand.program(trial, python, None), (python, "-m", "aimx"))

    def test_shebang_forms(self):
        """`#!/usr/bin/env python3` names no interpreter; pip's sh trampoline for long or
        spaced paths does; a script that cannot be run does not count."""
        python = self.python("my venv/bin")
        env = self.script("a/aimx", "#!/usr/bin/env python3\n")
        self.assertFalse(mcpcommand.runs_with(env, "/usr/bin/python3"))
        trampoline = self.script(
            "my venv/bin/aimx", f"#!/bin/sh\n'''exec' \"{python}\" \"$0\" \"$@\"\n' '''\n"
        )
        self.assertEqual(mcpcommand.shebang(trampoline), python)
        self.assertTrue(mcpcommand.runs_with(trampoline, python))
        self.assertEqual(mcpcommand.program(trampoline, python, None), (trampoline,))
        plain = self.script("b/aimx", f"#!{python}\n", mode=0o644)
        self.assertFalse(mcpcommand.runs_with(plain, python))
        self.assertIsNone(mcpcommand.shebang(self.script("c/aimx", "import sys\n")))
        self.assertIsNone(mcpcommand.shebang(os.path.join(self.base, "missing")))


class ProbeNamesTests(SynchronousTestCase):
    def test_tool_names_are_the_servers(self):
        """AIMX_TOOLS is the fifteen tools `aimx mcp` registers (tests.test_mcp checks those)."""
        from tests.test_mcp import NAMES

        self.assertEqual(probe.AIMX_TOOLS, NAMES)
        self.assertEqual(TOOL_NAMES, NAMES)
