"""Package data for C{aimx agents setup}: the primer, the references, the per-agent headers.

Loaded with C{importlib.resources} by L{aimx.agents.bundle}; no code lives here.
"""
