"""The agent harnesses aimx can be wired into (L0, pure; docs/cli.md, "aimx agents").

Each L{Agent} names where its bundle goes (a path template over C{$HOME},
C{$XDG_CONFIG_HOME} and C{$NANOCLAW_HOME}), which directory proves the agent is
installed, which header file its bundle starts with, and how its MCP server is
wired.  The activation and removal hints are rendered here too, from an
L{McpCommand} (the program that starts aimx, the data dir, the environment),
so C{aimx agents list}, C{setup} and the setup wizard print the same text.
Nothing here reads the disk or the environment: callers pass what they looked
up (L{aimx.agents.mcpcommand} finds the program).

How each harness carries the server's environment (checked against each one's
documented config format):

- Claude Code: C{claude mcp add <name> -e K=V ... -- <cmd>}; C{-e} is variadic,
  so it must come after the server name or it swallows the name.
- Codex CLI: C{codex mcp add <name> --env K=V ... -- <cmd>}.
- OpenCode: C{"type": "local"}, C{"command": [argv]}, C{"environment": {...}}.
- Gemini CLI, NanoClaw (C{.mcp.json}), OpenClaw (C{mcp set}): C{"env": {...}}.
- Hermes: C{env:} mapping beside C{command:}/C{args:}.
- Goose: C{envs:} mapping in the recipe's stdio extension (see L{aimx.agents.bundle}).
"""

import json
import re
import shlex
from collections.abc import Iterable, Mapping

import attrs

from aimx.errors import AimxError

# The progressive-disclosure references shipped beside SKILL.md.
REFERENCES = ("frontmatter.md", "hooks.md", "mcp-tools.md", "troubleshooting.md", "workflows.md")

HOME_NOT_SET = "HOME is not set; agents setup writes to the user's home directory"


class AgentError(AimxError):
    """An C{aimx agents} step failed; printed as C{Error: <message>}, exit 1."""


@attrs.frozen
class Agent:
    """One supported agent harness.

    @ivar name: the command-line name (C{claude-code}).
    @ivar display: the human name (C{Claude Code}).
    @ivar dest: where the bundle is written, as a template.
    @ivar root: the agent's own directory; its presence means "installed".
    @ivar header: the header file under C{aimx/agents_data/headers/}.
    @ivar references: whether C{references/*.md} ship beside C{SKILL.md}.
    @ivar recipe: a Goose recipe (one C{aimx.yaml}) instead of a skill directory.
    @ivar cli: the program that registers the MCP server itself (C{claude},
        C{codex}), or C{None} when a hint is printed instead.
    """

    name: str
    display: str
    dest: str
    root: str
    header: str
    references: bool
    recipe: bool = False
    cli: str | None = None

    @property
    def entry_file(self) -> str:
        """The one file every install of this agent writes (C{SKILL.md} or C{aimx.yaml})."""
        return "aimx.yaml" if self.recipe else "SKILL.md"


AGENTS: tuple[Agent, ...] = (
    Agent(
        "claude-code",
        "Claude Code",
        "$HOME/.claude/skills/aimx",
        "$HOME/.claude",
        "claude-code.md",
        references=True,
        cli="claude",
    ),
    Agent(
        "codex",
        "Codex CLI",
        "$HOME/.codex/skills/aimx",
        "$HOME/.codex",
        "codex.md",
        references=True,
        cli="codex",
    ),
    Agent(
        "opencode",
        "OpenCode",
        "$XDG_CONFIG_HOME/opencode/skills/aimx",
        "$XDG_CONFIG_HOME/opencode",
        "opencode.md",
        references=False,
    ),
    Agent(
        "gemini",
        "Gemini CLI",
        "$HOME/.gemini/skills/aimx",
        "$HOME/.gemini",
        "gemini.md",
        references=False,
    ),
    Agent(
        "goose",
        "Goose",
        "$XDG_CONFIG_HOME/goose/recipes",
        "$XDG_CONFIG_HOME/goose",
        "goose.yaml",
        references=False,
        recipe=True,
    ),
    Agent(
        "openclaw",
        "OpenClaw",
        "$HOME/.openclaw/skills/aimx",
        "$HOME/.openclaw",
        "openclaw.md",
        references=True,
    ),
    Agent(
        "hermes",
        "Hermes",
        "$HOME/.hermes/skills/aimx",
        "$HOME/.hermes",
        "hermes.md",
        references=True,
    ),
    Agent(
        "nanoclaw",
        "NanoClaw",
        "$NANOCLAW_HOME/skills/aimx",
        "$NANOCLAW_HOME",
        "nanoclaw.md",
        references=True,
    ),
)

_BY_NAME = {agent.name: agent for agent in AGENTS}


def find(name: str) -> Agent | None:
    """The agent called C{name}, or C{None}."""
    return _BY_NAME.get(name)


def names() -> list[str]:
    """Every agent name, in registry order."""
    return [agent.name for agent in AGENTS]


@attrs.frozen
class Places:
    """The three directories the templates are expanded against.

    @ivar home: the user's home directory.
    @ivar xdg_config_home: C{$XDG_CONFIG_HOME}, default C{<home>/.config}.
    @ivar nanoclaw_home: the NanoClaw fork, C{$NANOCLAW_HOME}, default C{<home>/nanoclaw}.
    """

    home: str
    xdg_config_home: str
    nanoclaw_home: str


def places(environ: Mapping[str, str], home: str | None = None) -> Places:
    """Resolve L{Places} from an environment.

    @param home: an explicit home (C{--dangerously-allow-root}: root's C{pw_dir}).
        When given, C{$HOME} and C{$XDG_CONFIG_HOME} are ignored; C{$NANOCLAW_HOME}
        is still honoured.
    @raise AgentError: no home: C{HOME} unset or empty and none given.
    """
    xdg = None
    if home is None:
        home = environ.get("HOME") or None
        xdg = environ.get("XDG_CONFIG_HOME") or None
    if home is None:
        raise AgentError(HOME_NOT_SET)
    home = home.rstrip("/") or "/"
    return Places(
        home=home,
        xdg_config_home=xdg or _join(home, ".config"),
        nanoclaw_home=environ.get("NANOCLAW_HOME") or _join(home, "nanoclaw"),
    )


def expand(template: str, where: Places) -> str:
    """A path template with its three variables substituted."""
    return (
        template.replace("$XDG_CONFIG_HOME", where.xdg_config_home)
        .replace("$NANOCLAW_HOME", where.nanoclaw_home)
        .replace("$HOME", where.home)
    )


def _join(base: str, name: str) -> str:
    return base + name if base.endswith("/") else f"{base}/{name}"


# -- MCP command and registration ------------------------------------------------------


def _env_pairs(value: Mapping[str, str] | Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(dict(value).items()))


@attrs.frozen
class McpCommand:
    """The MCP server command an agent is told to start.

    @ivar program: the words that start aimx: the absolute path of its console
        script (C{("/srv/venv/bin/aimx",)}), or an interpreter running the package
        (C{("/usr/bin/python3", "-m", "aimx")}).
    @ivar data_dir: passed as C{--data-dir P} before C{mcp}.
    @ivar env: C{(name, value)} pairs, sorted by name, that the server must run
        with: the aimx directories that are not the defaults.
    """

    program: tuple[str, ...] = attrs.field(converter=tuple)
    data_dir: str | None = None
    env: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_env_pairs)

    @program.validator
    def _check_program(self, attribute, value):
        if not value or not all(isinstance(word, str) and word for word in value):
            raise ValueError("an MCP command needs a program")

    @property
    def command(self) -> str:
        """The executable (C{command} of the JSON configs)."""
        return self.program[0]

    @property
    def args(self) -> list[str]:
        """Everything after the executable: C{[-m aimx] [--data-dir P] mcp}."""
        return [*self.program[1:], *mcp_args(self.data_dir)]

    @property
    def argv(self) -> list[str]:
        return [self.command, *self.args]

    @property
    def environment(self) -> dict[str, str]:
        return dict(self.env)

    def shell(self) -> str:
        """The command as POSIX shell words (the data dir always single-quoted)."""
        extra = f" --data-dir {posix_quote(self.data_dir)}" if self.data_dir else ""
        return f"{shlex.join(self.program)}{extra} mcp"

    def display(self) -> str:
        """The command with its environment in front, as a shell would take it."""
        prefix = "".join(shlex.quote(f"{k}={v}") + " " for k, v in self.env)
        return prefix + self.shell()


def mcp_args(data_dir: str | None = None) -> list[str]:
    """The aimx arguments of the server: C{[--data-dir, P,] mcp}."""
    return ["--data-dir", data_dir, "mcp"] if data_dir else ["mcp"]


def registration(agent: Agent, command: McpCommand) -> tuple[list[str], list[str]] | None:
    """The two commands that (re-)register the MCP server through the agent's CLI.

    The first removes a previous registration (its result is ignored); the
    second adds the current one.  The C{--} separator keeps the agent's own
    option parser away from aimx's flags.

    @return: C{(remove_argv, add_argv)}, or C{None} for agents without a CLI step.
    """
    if agent.cli == "claude":
        env = [word for k, v in command.env for word in ("-e", f"{k}={v}")]
        return (
            ["claude", "mcp", "remove", "--scope", "user", "aimx"],
            ["claude", "mcp", "add", "--scope", "user", "aimx", *env, "--", *command.argv],
        )
    if agent.cli == "codex":
        env = [word for k, v in command.env for word in ("--env", f"{k}={v}")]
        return (
            ["codex", "mcp", "remove", "aimx"],
            ["codex", "mcp", "add", "aimx", *env, "--", *command.argv],
        )
    return None


def posix_quote(text: str) -> str:
    """C{text} as one single-quoted POSIX shell word (C{'} becomes C{'\\''})."""
    return "'" + text.replace("'", "'\\''") + "'"


def _shell_env(flag: str, command: McpCommand) -> str:
    return "".join(f" {flag} {shlex.quote(f'{k}={v}')}" for k, v in command.env)


def claude_add_line(command: McpCommand) -> str:
    """The manual C{claude mcp add} command line (hint and primer)."""
    return f"claude mcp add --scope user aimx{_shell_env('-e', command)} -- {command.shell()}"


def codex_add_line(command: McpCommand) -> str:
    """The manual C{codex mcp add} command line."""
    return f"codex mcp add aimx{_shell_env('--env', command)} -- {command.shell()}"


def _pretty(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def mcp_servers_entry(command: McpCommand) -> dict:
    """The C{{"command", "args"[, "env"]}} object of the JSON configs (Gemini, NanoClaw,
    OpenClaw)."""
    entry = {"command": command.command, "args": command.args}
    if command.env:
        entry["env"] = command.environment
    return entry


def opencode_entry(command: McpCommand) -> dict:
    """OpenCode's local server: C{type} is required, C{command} is the whole argv."""
    entry = {"type": "local", "command": command.argv}
    if command.env:
        entry["environment"] = command.environment
    return entry


def activation_hint(agent: Agent, command: McpCommand) -> str:
    """What the user still has to do to activate the MCP server.

    JSON snippets come from a real serializer (2-space indent) so any path is
    escaped correctly; shell commands quote for POSIX shells.
    """
    return _HINTS[agent.name](command)


def _claude_hint(command):
    return "\n".join(
        [
            "Skill installed at ~/.claude/skills/aimx/.",
            "If automatic MCP registration did not happen, register the server once:",
            "",
            f"  {claude_add_line(command)}",
            "",
            "Then restart Claude Code. Claude Code finds the skill by itself, but the MCP",
            "server has to be registered explicitly (headless `claude -p` runs included).",
        ]
    )


def _codex_hint(command):
    return "\n".join(
        [
            "Skill installed at ~/.codex/skills/aimx/.",
            "If automatic MCP registration did not happen, register the server once:",
            "",
            f"  {codex_add_line(command)}",
            "",
            "Then restart Codex CLI. The command records the server in",
            "~/.codex/config.toml, where Codex reads its MCP servers.",
        ]
    )


def _json_hint(before: list[str], snippet: dict, after: tuple[str, ...] = ()) -> str:
    """Lines of advice around a pretty-printed JSON C{snippet}."""
    return "\n".join([*before, "", _pretty(snippet), *([""] + list(after) if after else [])])


def _opencode_hint(command):
    return _json_hint(
        ["Skill installed. Add this to the `mcp` object of your OpenCode config",
         "(~/.config/opencode/opencode.json, or <repo>/opencode.json), then restart OpenCode:"],
        {"mcp": {"aimx": opencode_entry(command)}},
    )


def _gemini_hint(command):
    return _json_hint(
        ["Skill installed. Merge this into ~/.gemini/settings.json (create the file",
         "if it does not exist), then restart Gemini CLI:"],
        {"mcpServers": {"aimx": mcp_servers_entry(command)}},
    )


def _goose_hint(command):
    # Static on purpose: the hint never reads $GOOSE_RECIPE_GITHUB_REPO, so the
    # listing is the same in every shell.
    return (
        "Recipe installed. Start a session with it:\n"
        "\n"
        "  goose run --recipe aimx\n"
        "\n"
        "To share it with a team, commit ~/.config/goose/recipes/aimx.yaml to the\n"
        "GitHub repository named by $GOOSE_RECIPE_GITHUB_REPO; Goose loads recipes\n"
        "from that repository when the variable is set."
    )


def _openclaw_hint(command):
    compact = json.dumps(mcp_servers_entry(command), ensure_ascii=False, separators=(",", ":"))
    return "\n".join(
        [
            "Skill installed. Register the MCP server with OpenClaw:",
            "",
            f"  openclaw mcp set aimx {posix_quote(compact)}",
            "",
            "Then restart the OpenClaw gateway so it loads the server.",
        ]
    )


def _hermes_hint(command):
    lines = [
        "Skill installed at ~/.hermes/skills/aimx/. Paste this under the top-level",
        "`mcp_servers:` key of ~/.hermes/config.yaml (add the key if it is missing):",
        "",
        "  mcp_servers:",
        "    aimx:",
        f"      command: {_yaml_scalar(command.command)}",
        f"      args: [{', '.join(_hermes_args(command))}]",
    ]
    if command.env:
        lines.append("      env:")
        lines += [f"        {k}: {json.dumps(v, ensure_ascii=False)}" for k, v in command.env]
    lines += [
        "      enabled: true",
        "",
        "Then run `/reload-mcp` inside Hermes; it re-reads the file without a restart.",
    ]
    return "\n".join(lines)


def _hermes_args(command: McpCommand) -> list[str]:
    # The data dir is always double-quoted.
    words = [_yaml_scalar(word) for word in command.program[1:]]
    if command.data_dir:
        words += ["--data-dir", json.dumps(command.data_dir, ensure_ascii=False)]
    return [*words, "mcp"]


# Plain YAML scalars that mean themselves in block and flow context alike.
_PLAIN = re.compile(r"[A-Za-z0-9/_.+-]+\Z")


def _yaml_scalar(text: str) -> str:
    """C{text} plain when that is unambiguous, else double-quoted.

    A YAML flow sequence treats C{, [ ] #} as syntax and a plain scalar may read
    as a number or boolean: the rest goes in as a double-quoted scalar, which JSON
    string syntax produces exactly.
    """
    if _PLAIN.match(text) and not text[0].isdigit() and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text, ensure_ascii=False)


_YAML_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "null", "~", "y", "n"})


def _nanoclaw_hint(command):
    return _json_hint(
        ["Skill installed, and the MCP server was merged into <fork>/.mcp.json",
         "under mcpServers.aimx (<fork> is $NANOCLAW_HOME, default ~/nanoclaw):"],
        {"mcpServers": {"aimx": mcp_servers_entry(command)}},
        ("If the merge was skipped, add that entry to the `mcpServers` object of",
         "<fork>/.mcp.json by hand. Restart NanoClaw so it loads the server, then add",
         "a NanoClaw scheduled job that calls email_list through the aimx MCP server."),
    )


_HINTS = {
    "claude-code": _claude_hint,
    "codex": _codex_hint,
    "opencode": _opencode_hint,
    "gemini": _gemini_hint,
    "goose": _goose_hint,
    "openclaw": _openclaw_hint,
    "hermes": _hermes_hint,
    "nanoclaw": _nanoclaw_hint,
}

_REMOVAL_HINTS = {
    "claude-code": "Run `claude mcp remove aimx` to unregister the MCP server from Claude Code too.",
    "codex": "Run `codex mcp remove aimx` to unregister the MCP server from Codex CLI too.",
    "opencode": "Remove the `aimx` block from the `mcp` object of "
    "~/.config/opencode/opencode.json to unregister the MCP server too.",
    "gemini": "Remove the `aimx` entry from `mcpServers` in ~/.gemini/settings.json "
    "to unregister the MCP server too.",
    "goose": "Nothing else to do: Goose finds recipes by file name.",
    "openclaw": "Run `openclaw mcp remove aimx` if your OpenClaw has it; otherwise delete "
    "the `aimx` server from the OpenClaw MCP config by hand.",
    "hermes": "Remove the `aimx` block under `mcp_servers:` in ~/.hermes/config.yaml "
    "to unregister the MCP server too.",
    "nanoclaw": "Remove `aimx` from `mcpServers` in <fork>/.mcp.json to unregister the "
    "MCP server too (<fork> is $NANOCLAW_HOME, default ~/nanoclaw).",
}


def removal_hint(agent: Agent) -> str:
    """The external step C{aimx agents remove} leaves to the user."""
    return _REMOVAL_HINTS[agent.name]


def removal_target(agent: Agent, where: Places) -> str:
    """What C{remove} deletes: the skill directory, or Goose's single recipe file."""
    dest = expand(agent.dest, where)
    return _join(dest, "aimx.yaml") if agent.recipe else dest


def legacy_plugin_dir(where: Places) -> str:
    """Where old releases installed the Claude Code plugin (removed by setup and remove)."""
    return _join(where.home, ".claude/plugins/aimx")
