"""Assembly of the files an agent gets (L0 over package data; docs/cli.md, "aimx agents").

The texts ship as package data under C{aimx/agents_data/}: the common primer,
the five references, and one header per agent.  A skill agent's C{SKILL.md} is
its header followed by the primer; a Goose recipe is its header followed by the
primer indented into the header's C{prompt: |} block.  Nothing is written here.

Two texts name the MCP command, which is only known at install time (the aimx
that runs C{aimx agents setup}): the primer's manual C{claude mcp add} line
(C{@@CLAUDE_MCP_ADD@@}) and the Goose extension's C{cmd}/C{args}/C{envs}
(C{@@AIMX_MCP@@}, a line of its own, rendered at its indentation).
"""

import json
from importlib import resources

import attrs

from aimx.agents import registry
from aimx.agents.registry import REFERENCES, Agent, AgentError, McpCommand

_DATA = "aimx.agents_data"
_CLAUDE_ADD = "@@CLAUDE_MCP_ADD@@"
_EXTENSION = "@@AIMX_MCP@@"


@attrs.frozen
class BundleFile:
    """One file of a bundle.

    @ivar path: relative to the agent's destination (C{references/hooks.md}).
    @ivar text: the file's content.
    """

    path: str
    text: str


def data_text(*parts: str) -> str:
    """The text of a package data file, e.g. C{data_text("references", "hooks.md")}."""
    node = resources.files(_DATA)
    for part in parts:
        node = node.joinpath(part)
    return node.read_text(encoding="utf-8")


def primer(command: McpCommand) -> str:
    """The common primer appended to every agent's entry file, with the
    manual registration line for C{command}."""
    return data_text("primer.md").replace(_CLAUDE_ADD, registry.claude_add_line(command))


def header(agent: Agent) -> str:
    """The agent's own header (frontmatter and hook-wiring section), as shipped."""
    return data_text("headers", agent.header)


def assemble(agent: Agent, command: McpCommand) -> list[BundleFile]:
    """Every file of C{agent}'s bundle, sorted by relative path.

    @param command: the MCP server command the texts name (Goose embeds it).
    @raise AgentError: the Goose header has no C{@@AIMX_MCP@@} line to render.
    """
    if agent.recipe:
        text = header(agent).rstrip("\n") + "\n\n" + indent_block(primer(command), "  ")
        return [BundleFile(agent.entry_file, with_recipe_command(text, command))]
    skill = header(agent).rstrip("\n") + "\n\n" + primer(command)
    files = [BundleFile("SKILL.md", skill)]
    if agent.references:
        files += [
            BundleFile(f"references/{name}", data_text("references", name)) for name in REFERENCES
        ]
    return sorted(files, key=lambda f: f.path)


def indent_block(text: str, prefix: str) -> str:
    """C{text} with C{prefix} before every non-empty line (blank lines stay empty).

    This continues a YAML literal block scalar, where an empty line is part of
    the block whatever its indentation.
    """
    lines = text.split("\n")
    out = [prefix + line if line.strip() else "" for line in lines]
    result = "\n".join(out)
    return result if result.endswith("\n") else result + "\n"


def with_recipe_command(text: str, command: McpCommand) -> str:
    """Replace each C{@@AIMX_MCP@@} line by the extension's C{cmd}, C{args} and C{envs}.

    Block style at the token's indentation, every value JSON-quoted: a JSON
    string is a valid YAML double-quoted scalar, whatever the path holds.

    @raise AgentError: there is no such line.
    """
    lines = text.split("\n")
    if not any(line.strip() == _EXTENSION for line in lines):
        raise AgentError(f"recipe has no {_EXTENSION} line for the MCP command")
    out = []
    for line in lines:
        if line.strip() != _EXTENSION:
            out.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        out.append(f"{indent}cmd: {_quoted(command.command)}")
        out.append(f"{indent}args:")
        out += [f"{indent}  - {_quoted(arg)}" for arg in command.args]
        if command.env:
            out.append(f"{indent}envs:")
            out += [f"{indent}  {name}: {_quoted(value)}" for name, value in command.env]
    return "\n".join(out)


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)
