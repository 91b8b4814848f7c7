"""Agent integration (L1: files and processes): the registry of supported harnesses,
their bundles, installs.

The public surface (docs/cli.md, "aimx agents"):

- L{AGENTS}, L{Agent}, L{find}: the eight harnesses in registry order (the setup
  wizard lists C{agent.display} for each).
- L{McpCommand}, L{activation_hint}, L{removal_hint}: what to register or print;
  L{mcpcommand} finds the aimx to register, L{probe} checks that it answers.
- L{assemble}: the files of one agent's bundle (package data under
  C{aimx/agents_data/}).
- L{install}: writing, removal, NanoClaw's C{.mcp.json}, CLI registration.

C{aimx agents setup|list|remove} itself lives in L{aimx.cli.agents}, its picker in
L{aimx.cli.agentpicker}.
"""

from aimx.agents.bundle import BundleFile, assemble
from aimx.agents.registry import (
    AGENTS,
    Agent,
    AgentError,
    McpCommand,
    Places,
    activation_hint,
    find,
    places,
    removal_hint,
)

__all__ = [
    "AGENTS",
    "Agent",
    "AgentError",
    "BundleFile",
    "McpCommand",
    "Places",
    "activation_hint",
    "assemble",
    "find",
    "places",
    "removal_hint",
]
