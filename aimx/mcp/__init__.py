"""The ``aimx mcp`` stdio server (L3): L{server} registers the tools, L{tools} holds their bodies."""
