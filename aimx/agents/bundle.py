"""Assembly of the files an agent gets (L0 over package data): spec/agents.md §4.2.

The texts ship as package data under C{aimx/agents_data/}: the common primer,
the five references, and one header per agent.  A skill agent's C{SKILL.md} is
its header followed by the primer; a Goose recipe is its header followed by the
primer indented into the header's C{prompt: |} block.  Nothing is written here.
"""

import json
from importlib import resources

import attrs

from aimx.agents.registry import REFERENCES, Agent, AgentError

_DATA = "aimx.agents_data"


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


def primer() -> str:
    """The common primer appended to every agent's entry file (agents.md §8)."""
    return data_text("primer.md")


def header(agent: Agent) -> str:
    """The agent's own header (frontmatter and hook-wiring section)."""
    return data_text("headers", agent.header)


def assemble(agent: Agent, data_dir: str | None = None) -> list[BundleFile]:
    """Every file of C{agent}'s bundle, sorted by relative path.

    @param data_dir: the data dir to thread into Goose's embedded MCP command.
    @raise AgentError: the Goose header has no C{args:} list to extend.
    """
    if agent.recipe:
        text = header(agent).rstrip("\n") + "\n\n" + indent_block(primer(), "  ")
        if data_dir:
            text = with_recipe_data_dir(text, data_dir)
        return [BundleFile(agent.entry_file, text)]
    skill = header(agent).rstrip("\n") + "\n\n" + primer()
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


def with_recipe_data_dir(text: str, data_dir: str) -> str:
    """Insert C{- --data-dir} and C{- "<P>"} before the first item of the first C{args:} list.

    The path is JSON-quoted: a JSON string is a valid YAML double-quoted scalar.

    @raise AgentError: there is no C{args:} line followed by a C{- } item.
    """
    lines = text.split("\n")
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "args:")
        first = next(i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("- "))
    except StopIteration:
        raise AgentError("recipe has no `args:` list to add --data-dir to") from None
    indent = lines[first][: len(lines[first]) - len(lines[first].lstrip())]
    quoted = json.dumps(data_dir, ensure_ascii=False)
    lines[first:first] = [f"{indent}- --data-dir", f"{indent}- {quoted}"]
    return "\n".join(lines)
