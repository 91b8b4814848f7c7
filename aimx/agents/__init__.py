"""Agent integration: the registry of supported harnesses, their bundles, installs.

The public surface (spec/agents.md):

- L{AGENTS}, L{Agent}, L{find}: the eight harnesses in registry order (the setup
  wizard lists C{agent.display} for each).
- L{activation_hint}, L{removal_hint}, L{mcp_argv}: what to print or register.
- L{assemble}: the files of one agent's bundle (package data under
  C{aimx/agents_data/}).
- L{install}: writing, removal, NanoClaw's C{.mcp.json}, CLI registration.

C{aimx agents setup|list|remove} itself lives in L{aimx.cli.agents}.
"""

from aimx.agents.bundle import BundleFile, assemble
from aimx.agents.registry import (
    AGENTS,
    MCP_PROGRAM,
    Agent,
    AgentError,
    Places,
    activation_hint,
    find,
    mcp_argv,
    places,
    removal_hint,
)

__all__ = [
    "AGENTS",
    "MCP_PROGRAM",
    "Agent",
    "AgentError",
    "BundleFile",
    "Places",
    "activation_hint",
    "assemble",
    "find",
    "mcp_argv",
    "places",
    "removal_hint",
]
