"""``aimx mcp`` (L3): the stdio MCP server (docs/mcp.md).

Runs as whoever started it, with no reactor: tools reach the daemon through
L{aimx.control.aioclient}.  stdout carries the protocol only; logging goes to
stderr.  C{--data-dir} and C{--config-dir} are accepted and ignored: every path
comes from the daemon's mailbox listing.  Exits 0 when stdin closes.
"""

import argparse
import logging
import sys


def run(argv: list[str]) -> int:
    """Serve MCP on stdin/stdout until stdin reaches end of file."""
    parser = argparse.ArgumentParser(
        prog="aimx mcp", description="Run the aimx MCP server on stdio (for AI agents)."
    )
    parser.add_argument("--data-dir", help="accepted and ignored")
    parser.add_argument("--config-dir", help="accepted and ignored")
    parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)

    from aimx.control.aioclient import ControlClient
    from aimx.control.wire import socket_path
    from aimx.mcp.server import build

    build(ControlClient(socket_path())).run("stdio")
    return 0
