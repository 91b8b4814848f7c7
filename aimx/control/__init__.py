"""The control socket (L2): AMP over a UNIX socket (docs/security.md, "The control socket").

L{aimx.control.wire} is the one description of the commands (CLI, daemon, MCP),
L{aimx.control.commands} their AMP form; L{aimx.control.ops} holds the command
bodies (L{aimx.control.listing} the MAILBOX-LIST/SHOW rows), L{aimx.control.amp}
the daemon's AMP responders and listener.  The clients: L{aimx.control.client}
(Twisted), L{aimx.control.aioclient} (asyncio, the MCP process) and
L{aimx.control.blockingclient} (plain sockets, the CLI).
"""
