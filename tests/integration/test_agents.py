"""`aimx agents` with real child processes (docs/cli.md): the default CLI runner with
fake programs on a private PATH, the MCP probe against fake servers, and `aimx agents
setup` run as the user runs it, the command it registers started for real.

No real `claude`/`codex` is ever started and the real home is never touched; every
wait is bounded. The in-process tests are in tests.test_agents.
"""

import io
import json
import os
import shlex
import subprocess
import sys
import unittest

from twisted.trial.unittest import SynchronousTestCase

from aimx.cli import arguments
from aimx.agents import probe
from aimx.agents.probe import CheckResult
from aimx.cli import agents as agents_cli
from tests.test_agents import TOOL_NAMES, AgentsTestCase, section


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: The venv the tests run from (`make test` and CI: .venv) and its console script.
VENV_BIN = os.path.dirname(sys.executable)
VENV_AIMX = os.path.join(VENV_BIN, "aimx")
#: Seconds a real child may take; a bound, never a sleep.
CHILD_TIMEOUT = 120


FAKE_SERVER = """\
import json, os, sys
mode = sys.argv[1]
if len(sys.argv) > 2:
    with open(sys.argv[2], "w") as f:
        f.write(os.getcwd())
tools = [{"name": n, "inputSchema": {"type": "object"}} for n in sorted(%r)]
for line in sys.stdin:
    message = json.loads(line)
    if "id" not in message:
        continue
    reply = {"jsonrpc": "2.0", "id": message["id"]}
    if mode == "garbage":
        print("hello, I am not MCP", flush=True)
        continue
    if mode == "error":
        reply["error"] = {"code": -32601, "message": "method not found"}
    elif message["method"] == "initialize":
        print(json.dumps({"jsonrpc": "2.0", "method": "notifications/message",
                          "params": {"level": "info", "data": "hi"}}), flush=True)
        reply["result"] = {"protocolVersion": "2024-11-05", "capabilities": {"tools": {}},
                           "serverInfo": {"name": "fake", "version": "0"}}
    elif mode == "few":
        reply["result"] = {"tools": tools[:2]}
    elif mode == "pages":
        start = int(message["params"].get("cursor") or 0)
        reply["result"] = {"tools": tools[start:start + 5]}
        if start + 5 < len(tools):
            reply["result"]["nextCursor"] = str(start + 5)
    else:
        reply["result"] = {"tools": tools}
    print(json.dumps(reply), flush=True)
""" % (sorted(TOOL_NAMES),)


class ProbeTests(SynchronousTestCase):
    """probe.check against fake servers (real child processes, every wait bounded)."""

    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.server = self.write("server.py", FAKE_SERVER)
        self.env = {"PATH": "/usr/bin:/bin"}

    def write(self, name, text, mode=0o755):
        path = os.path.join(self.base, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def fake(self, mode, *extra):
        return probe.check([sys.executable, self.server, mode, *extra], self.env,
                           timeout=CHILD_TIMEOUT)

    def test_answers(self):
        """initialize (a notification before the answer is skipped), tools/list: ok, from /."""
        cwd = os.path.join(self.base, "cwd")
        self.assertEqual(self.fake("ok", cwd), CheckResult(True, tools=15))
        with open(cwd) as f:
            self.assertEqual(f.read(), "/")

    def test_pages(self):
        """tools/list pages are followed through nextCursor."""
        self.assertEqual(self.fake("pages"), CheckResult(True, tools=15))

    def test_missing_tools(self):
        """A server that is not aimx's: the missing tools are named."""
        result = self.fake("few")
        self.assertFalse(result.ok)
        missing = sorted(TOOL_NAMES)[2:]
        self.assertEqual(
            result.reason,
            f"answered, but its tools/list lacks 13 of aimx's 15 tools: {', '.join(missing)}",
        )

    def test_not_json(self):
        """Something that is not JSON-RPC on stdout."""
        self.assertEqual(self.fake("garbage").reason,
                         "wrote a line that is not JSON-RPC on stdout: 'hello, I am not MCP'")

    def test_error_answer(self):
        """A JSON-RPC error answer."""
        self.assertEqual(self.fake("error").reason,
                         "answered initialize with an error: 'method not found'")

    def test_not_found(self):
        """No such program."""
        result = probe.check(["/nonexistent/aimx", "mcp"], self.env)
        self.assertEqual(result, CheckResult(False, "command not found: /nonexistent/aimx"))
        script = self.write("aimx", "#!/nonexistent/python\n")
        self.assertEqual(probe.check([script, "mcp"], self.env).reason,
                         "cannot be started: No such file or directory (its #! interpreter?)")

    def test_not_executable(self):
        """A file that cannot be run."""
        path = self.write("aimx", "#!/bin/sh\n", mode=0o644)
        self.assertEqual(probe.check([path, "mcp"], self.env).reason,
                         "cannot be started: Permission denied")

    def test_exit_code_and_stderr_tail(self):
        """An early exit: its code and the last lines of its stderr."""
        path = self.write("aimx", "#!/bin/sh\nfor i in 1 2 3 4 5 6 7 8 9 10; do echo line $i >&2; "
                                  "done\necho >&2\nexit 3\n")
        result = probe.check([path, "mcp"], self.env, timeout=CHILD_TIMEOUT)
        self.assertEqual(result.reason, "exited with code 3 before answering initialize")
        self.assertEqual(result.stderr, tuple(f"line {i}" for i in range(3, 11)))

    def test_killed(self):
        """Killed by a signal before answering."""
        path = self.write("aimx", "#!/bin/sh\nkill -9 $$\n")
        self.assertEqual(probe.check([path, "mcp"], self.env, timeout=CHILD_TIMEOUT).reason,
                         "was killed by signal 9 before answering initialize")

    def test_no_answer(self):
        """A server that reads and never answers: the bounded wait, then it is killed."""
        path = self.write("aimx", "#!/bin/sh\nexec sleep 60\n")
        result = probe.check([path, "mcp"], self.env, timeout=0.5)
        self.assertEqual(result.reason, "gave no answer to initialize within 0.5 s")

    def test_real_server(self):
        """`python -m aimx mcp` of this checkout answers, from / with PYTHONPATH."""
        result = probe.check([sys.executable, "-m", "aimx", "mcp"],
                             dict(self.env, PYTHONPATH=REPO), timeout=CHILD_TIMEOUT)
        self.assertEqual(result, CheckResult(True, tools=15))


# -- the registered command, for real ------------------------------------------------


RECORD_ARGV = '#!/bin/sh\n{ for a in "$@"; do printf "%s\\t" "$a"; done; echo; } >> "$0.log"\n'


def listed_tools(command, args, env):
    """Start C{command args} as an MCP server with the official stdio client; its tool names."""
    import asyncio

    from mcp import ClientSession, StdioServerParameters, stdio_client

    parameters = StdioServerParameters(command=command, args=list(args), env=dict(env), cwd="/")

    async def go():
        async with (
            stdio_client(parameters) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            return sorted(t.name for t in (await session.list_tools()).tools)

    async def bounded():
        return await asyncio.wait_for(go(), CHILD_TIMEOUT)

    return asyncio.run(bounded())


def field(lines, name):
    """The values of C{name:} lines of a C{--print} section."""
    return [line.split(":", 1)[1].strip() for line in lines if line.startswith(name + ":")]


class RealCommandTests(SynchronousTestCase):
    """`aimx agents setup` as the user runs it: from the venv, as a child process, and the
    command it registers started for real (no network; every wait bounded)."""

    def setUp(self):
        if not os.path.isfile(VENV_AIMX):
            raise unittest.SkipTest(f"no aimx console script at {VENV_AIMX}: run from the venv")
        self.home = os.path.abspath(self.mktemp())
        self.bin = os.path.join(self.home, "bin")
        self.runtime = os.path.abspath(self.mktemp())  # a non-default runtime dir
        os.makedirs(self.bin)
        os.makedirs(self.runtime)
        self.claude = self.program("claude", RECORD_ARGV)
        # PYTHONPATH: the venv's console script must import this checkout's aimx.
        self.environ = {
            "HOME": self.home,
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "PYTHONPATH": REPO,
            "AIMX_RUNTIME_DIR": self.runtime,
            "NO_COLOR": "1",
        }

    def program(self, name, script):
        path = os.path.join(self.bin, name)
        with open(path, "w") as f:
            f.write(script)
        os.chmod(path, 0o755)
        return path

    def setup_cli(self, *argv, program=(VENV_AIMX,), cwd=None):
        """Run `<program> agents setup ...` as a child; root needs the flag (writes nothing)."""
        root = ["--dangerously-allow-root"] if os.geteuid() == 0 else []
        return subprocess.run(
            [*program, "agents", "setup", *argv, *root],
            env=self.environ,
            cwd=cwd or self.home,
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
            check=False,
        )

    def home_tree(self):
        return sorted(n for n in os.listdir(self.home) if n != "bin")

    def claude_calls(self):
        log = self.claude + ".log"
        if not os.path.exists(log):
            return []
        with open(log) as f:
            return [line.rstrip("\n").rstrip("\t").split("\t") for line in f]

    def test_print_from_the_venv(self):
        """--print from the venv's console script: the command it would register is that
        script, it exists, it answers tools/list, and the non-default runtime dir rides along
        as the server's environment; nothing is written and `claude` is not run."""
        done = self.setup_cli("claude-code", "--print")
        self.assertEqual(done.returncode, 0, done.stderr)
        server = section(done.stdout, "MCP server")
        self.assertEqual(field(server, "command"), [f"{VENV_AIMX} mcp"])
        self.assertEqual(field(server, "env"), [f"AIMX_RUNTIME_DIR={self.runtime}"])
        add = shlex.split(field(server, "register")[1])
        self.assertEqual(
            add,
            ["claude", "mcp", "add", "--scope", "user", "aimx",
             "-e", f"AIMX_RUNTIME_DIR={self.runtime}", "--", VENV_AIMX, "mcp"],
        )
        self.assertTrue(os.path.isfile(add[-2]) and os.access(add[-2], os.X_OK))
        self.assertEqual(len(field(server, "check")), 1)
        self.assertTrue(field(server, "check")[0].startswith("[OK] "), server)
        env = dict(self.environ, AIMX_RUNTIME_DIR="unused")
        env.update(dict([add[7].split("=", 1)]))
        self.assertEqual(listed_tools(add[-2], add[-1:], env), sorted(TOOL_NAMES))
        self.assertEqual(self.home_tree(), [])
        self.assertEqual(self.claude_calls(), [])

    def test_print_outside_a_venv_script(self):
        """`python -m aimx` with no aimx script on PATH: the command is this interpreter
        with `-m aimx`, and it answers from another directory."""
        done = self.setup_cli("claude-code", "--print", program=(sys.executable, "-m", "aimx"))
        self.assertEqual(done.returncode, 0, done.stderr)
        server = section(done.stdout, "MCP server")
        self.assertEqual(field(server, "command"),
                         [shlex.join([sys.executable, "-m", "aimx", "mcp"])])
        add = shlex.split(field(server, "register")[1])
        self.assertEqual(add[add.index("--") + 1 :], [sys.executable, "-m", "aimx", "mcp"])
        self.assertEqual(listed_tools(sys.executable, ["-m", "aimx", "mcp"], self.environ),
                         sorted(TOOL_NAMES))

    def test_wrong_command(self):
        """--command naming a missing program or a failing one: a clear reason, exit 1."""
        done = self.setup_cli("claude-code", "--print", "--command", "/nonexistent/aimx")
        self.assertEqual(done.returncode, 1)
        self.assertIn("Error: MCP check failed: `AIMX_RUNTIME_DIR=", done.stderr)
        self.assertIn("/nonexistent/aimx mcp`: command not found: /nonexistent/aimx", done.stderr)
        failing = self.program("broken-aimx",
                               "#!/bin/sh\necho 'no such module: aimx' >&2\nexit 3\n")
        # A real install as a user; as root only a preview (root's own home is not ours).
        preview = ["--print"] if os.geteuid() == 0 else []
        done = self.setup_cli("claude-code", *preview, "--command", failing)
        self.assertEqual(done.returncode, 1)
        self.assertIn(f"{failing} mcp`: exited with code 3 before answering initialize",
                      done.stderr)
        self.assertIn("  | no such module: aimx", done.stderr)
        self.assertIn("Nothing was installed or registered.", done.stderr)
        self.assertEqual(self.home_tree(), [])
        self.assertEqual(self.claude_calls(), [])

    def test_command_override(self):
        """--command PATH replaces the detected command (a relative path made absolute)."""
        other = os.path.join(self.home, "other")
        os.makedirs(other)
        os.symlink(VENV_AIMX, os.path.join(other, "aimx"))
        done = self.setup_cli("gemini", "--print", "--command", "other/aimx")
        self.assertEqual(done.returncode, 0, done.stderr)
        server = section(done.stdout, "MCP server")
        self.assertEqual(field(server, "command"), [f"{other}/aimx mcp"])
        self.assertEqual(field(server, "register"), [])
        activation = "\n".join(section(done.stdout, "activation"))
        snippet = json.loads(activation[activation.index("{") :])
        self.assertEqual(
            snippet,
            {"mcpServers": {"aimx": {"command": f"{other}/aimx", "args": ["mcp"],
                                     "env": {"AIMX_RUNTIME_DIR": self.runtime}}}},
        )

    def test_registers_through_claude(self):
        """A real install through a fake `claude` on PATH: the add argv it records names an
        existing program that answers tools/list with the recorded environment."""
        world = agents_cli.World(
            self.environ, 1000, io.StringIO(), io.StringIO(), io.StringIO(),
            argv0=VENV_AIMX, executable=sys.executable,
        )
        args = arguments.parser().parse_args(["agents", "setup", "claude-code"])
        self.assertEqual(agents_cli.main(args, world), 0, world.err.getvalue())
        out = world.out.getvalue()
        self.assertIn("[OK] MCP check passed", out)
        self.assertIn("MCP server registered with Claude Code.", out)
        remove, add = self.claude_calls()
        self.assertEqual(remove, ["mcp", "remove", "--scope", "user", "aimx"])
        self.assertEqual(
            add,
            ["mcp", "add", "--scope", "user", "aimx",
             "-e", f"AIMX_RUNTIME_DIR={self.runtime}", "--", VENV_AIMX, "mcp"],
        )
        env = dict(self.environ)
        del env["AIMX_RUNTIME_DIR"]
        env.update(dict([add[6].split("=", 1)]))
        self.assertEqual(listed_tools(add[-2], add[-1:], env), sorted(TOOL_NAMES))
        self.assertTrue(os.path.isfile(os.path.join(self.home, ".claude/skills/aimx/SKILL.md")))


class SubprocessRunnerTests(AgentsTestCase):
    """The default runner, with a fake `claude` script on a private PATH (case 5)."""

    def fake_program(self, name, script):
        bindir = self.path("bin")
        os.makedirs(bindir, exist_ok=True)
        path = os.path.join(bindir, name)
        with open(path, "w") as f:
            f.write("#!/bin/sh\n" + script)
        os.chmod(path, 0o755)
        self.environ["PATH"] = bindir
        return bindir

    def test_fake_claude_records_argv(self):
        """The real runner finds the program on PATH and passes argv through."""
        bindir = self.fake_program("claude", 'printf "%s " "$@" >> "$0.log"; echo >> "$0.log"\n')
        self.runner = None
        code, out, _ = self.aimx("agents", "setup", "claude-code")
        self.assertEqual(code, 0)
        with open(os.path.join(bindir, "claude.log")) as f:
            calls = f.read().splitlines()
        self.assertEqual(
            calls,
            [
                "mcp remove --scope user aimx ",
                f"mcp add --scope user aimx -- {self.prog} mcp ",
            ],
        )
        self.assertIn("MCP server registered with Claude Code.", out)

    def test_fake_claude_fails(self):
        """Exit status and first stderr line of a failing program."""
        self.fake_program("claude", "echo boom >&2; exit 1\n")
        self.runner = None
        out = self.aimx("agents", "setup", "claude-code")[1]
        self.assertIn("MCP auto-registration failed: boom (exit 1)", out)
