"""The ``aimx`` command line (L3): argument parsing and dispatch to one module per verb.

The parser (L{aimx.cli.arguments}) is built with the arguments of the verb
that runs only, and that verb's module is imported only then: C{aimx mailboxes
list} loads neither Twisted nor the modules of the other verbs.
"""

import importlib
import os
import sys

from aimx.cli import arguments
from aimx.errors import AimxError
from aimx.ops.version import version_line

#: Verb -> module in aimx/cli with C{main(args)} (its arguments: L{arguments.VERBS}).
VERBS = {
    "send": "send",
    "mail": "mail",
    "mailboxes": "mailboxes",
    "hooks": "hooks",
    "held": "held",
    "audit": "audit",
    "audit": "audit",
    "agents": "agents",
    "dkim-keygen": "dkimkeygen",
    "reindex": "reindex",
    "logs": "logs",
    "uninstall": "uninstall",
    "portcheck": "portcheck",
    "doctor": "doctor",
    "setup": "setup",
    "completion": "completion",
}


def _split_verb(argv):
    """Split argv around the first command word, skipping global option values."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in ("--data-dir", "--config-dir"):
            i += 2
        elif word.startswith("-"):
            i += 1
        else:
            return argv[:i], word, argv[i + 1 :]
    return argv, None, []


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["--version"], ["-V"]):
        print(version_line())
        return 0
    head, verb, tail = _split_verb(argv)
    if verb == "mcp":  # before the parser: the MCP process skips the CLI's imports
        from aimx.cli import mcp

        return mcp.run(head + tail)
    if verb == "serve":
        from aimx.cli import serve

        return serve.run(head + tail)
    parser = arguments.parser_for(verb)
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_usage(sys.stderr)
        print("aimx: error: missing command", file=sys.stderr)
        return 2
    if args.data_dir is None:
        args.data_dir = os.environ.get("AIMX_DATA_DIR")
    if args.config_dir is None:
        args.config_dir = os.environ.get("AIMX_CONFIG_DIR", "/etc/aimx")
    try:
        if args.verb == "ingest":
            from aimx.cli import ingest

            return ingest.run(args)
        if args.verb == "demo":
            from aimx.cli import demo

            return demo.run(args)
        name = VERBS[arguments.ALIASES.get(args.verb, args.verb)]
        return importlib.import_module(f"aimx.cli.{name}").main(args)
    except AimxError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
