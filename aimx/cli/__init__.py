"""The ``aimx`` command line (L3): argument parsing and dispatch to one module per verb."""

import argparse
import importlib
import os
import sys

from aimx.ops.version import version_line
from aimx.errors import AimxError

HELP_GROUPS = """\
Operations (as current user):
  send          Send an email from one of your mailboxes
  mail          List, read, search and mark mail; whole threads
  mailboxes     Create, list, show and delete mailboxes
  hooks         Create, list and delete hooks
  held          List, show, approve and reject mail held for approval
  audit         Read the audit log (inbound verdicts, sends, changes)
  agents        Wire aimx into an AI agent harness
  mcp           Run the MCP server on stdio
  completion    Print a shell completion script (bash or zsh)

Server administration:
  setup         Guided setup: domain, DNS, DKIM, TLS, service
  serve         Run the mail daemon (same as `twistd -n aimx`)
  doctor        Check the installation
  logs          Show the daemon log
  dkim-keygen   Generate the DKIM key pair
  reindex       Rebuild the mail index from the message files
  portcheck     Check that port 25 is reachable
  uninstall     Remove what setup installed

Try it:
  demo          Run a throwaway local demo (no root, no real DNS)
"""

#: Verb -> module in aimx/cli with C{add_parser(sub, common)} and C{main(args)}.
VERBS = {
    "send": "send",
    "mail": "mail",
    "mailboxes": "mailboxes",
    "hooks": "hooks",
    "held": "held",
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
ALIASES = {"mailbox": "mailboxes", "hook": "hooks"}
#: Verbs that are dispatched but not offered (docs/cli.md, "aimx ingest").
HIDDEN = ("ingest",)


def _verb_modules():
    """The verb modules, imported on demand: some import Twisted, which `--version` skips."""
    return [importlib.import_module(f"aimx.cli.{name}") for name in VERBS.values()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aimx",
        usage="aimx [--data-dir DIR] <command> [args]",
        description=f"{version_line()}: a self-hosted mail server for AI agents",
        epilog=HELP_GROUPS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        default=argparse.SUPPRESS,
        help="storage root (env AIMX_DATA_DIR; default from config.toml, /var/lib/aimx)",
    )
    common.add_argument(
        "--config-dir", default=argparse.SUPPRESS, help="config dir (env AIMX_CONFIG_DIR)"
    )
    parser.add_argument("--data-dir", help=common._actions[0].help)
    parser.add_argument("--config-dir", help=common._actions[1].help)
    parser.add_argument("-V", "--version", action="store_true", help="print the version")
    sub = parser.add_subparsers(dest="verb", metavar="<command>")

    sub.add_parser("serve", help=argparse.SUPPRESS)  # parsed by aimx.service.Options
    sub.add_parser("mcp", help=argparse.SUPPRESS)  # dispatched before this parser is built
    ingest = sub.add_parser("ingest", parents=[common])
    ingest.add_argument("rcpt", help="recipient address to route the message to")

    from aimx.cli import demo

    demo.add_parser(sub, common)

    for module in _verb_modules():
        module.add_parser(sub, common)
    # Keep `ingest` (hidden) and the per-verb entries out of the top-level help.
    sub._choices_actions = []
    return parser


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
    if verb == "mcp":  # before _parser(): the MCP process skips the CLI's Twisted imports
        from aimx.cli import mcp

        return mcp.run(head + tail)
    parser = _parser()
    if verb == "serve":
        from aimx.cli import serve

        return serve.run(head + tail)
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
        module = importlib.import_module(f"aimx.cli.{VERBS[ALIASES.get(args.verb, args.verb)]}")
        return module.main(args)
    except AimxError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
