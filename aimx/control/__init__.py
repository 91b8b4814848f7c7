"""The control socket (L2): AMP over a UNIX socket (docs/security.md, "The control socket").

L{aimx.control.commands} is the shared wire API (CLI, daemon, MCP);
L{aimx.control.ops} holds the command bodies (L{aimx.control.listing} the
MAILBOX-LIST/SHOW rows), L{aimx.control.amp} the daemon's
AMP responders and listener, L{aimx.control.client} the Twisted client.
"""
