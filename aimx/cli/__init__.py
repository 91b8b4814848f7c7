"""The ``aimx`` command line (L3): argument parsing and dispatch to one module per verb."""

import argparse
import os
import sys

from aimx import __version__
from aimx.core.version import version_fields
from aimx.errors import AimxError

HELP_GROUPS = """\
Operations (as current user):
  send          Send an email from one of your mailboxes
  mailboxes     Create, list, show and delete mailboxes
  hooks         Create, list and delete hooks
  agents        Wire aimx into an AI agent harness
  mcp           Run the MCP server on stdio

Server administration:
  setup         Guided setup: domain, DNS, DKIM, TLS, service
  serve         Run the mail daemon (same as `twistd -n aimx`)
  doctor        Check the installation
  logs          Show the daemon log
  dkim-keygen   Generate the DKIM key pair
  portcheck     Check that port 25 is reachable
  uninstall     Remove what setup installed

Try it:
  demo          Run a throwaway local demo (no root, no real DNS)
"""

# Verbs of the spec that later issues build; until then they say so plainly.
NOT_BUILT = {
    "setup": "operator tools",
}


def version_line() -> str:
    v = version_fields()
    return (
        f"AIMX (AI Mail Exchange) version {v['tag']} ({v['git_hash']}) "
        f"{v['target']} built {v['build_date']}"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aimx",
        usage="aimx [--data-dir DIR] <command> [args]",
        description=f"AIMX (AI Mail Exchange) version {__version__} (unknown)",
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
    ingest = sub.add_parser("ingest", parents=[common])
    ingest.add_argument("rcpt", help="recipient address to route the message to")

    demo = sub.add_parser("demo", parents=[common], help=argparse.SUPPRESS)
    demo.add_argument("--port", type=int, default=2525, help="SMTP port on 127.0.0.1")
    demo.add_argument("--dir", default=None, help="demo directory (default: a temp dir)")
    demo.add_argument(
        "--no-wait", action="store_true", help="stop the daemon after the deliveries"
    )

    # Not at the top: some import Twisted, which `aimx --version` must not pay for.
    from aimx.cli import agents, dkimkeygen, hooks, logs, mailboxes, send, uninstall

    send.add_parser(sub, common)
    mailboxes.add_parser(sub, common)
    hooks.add_parser(sub, common)
    agents.add_parser(sub, common)
    dkimkeygen.add_parser(sub, common)
    logs.add_parser(sub, common)
    uninstall.add_parser(sub, common)
    from aimx.cli import portcheck

    portcheck.add_parser(sub, common)
    from aimx.cli import doctor

    doctor.add_parser(sub, common)
    for verb in NOT_BUILT:
        stub = sub.add_parser(verb, parents=[common], help=argparse.SUPPRESS)
        stub.add_argument("args", nargs=argparse.REMAINDER)
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
    if verb in NOT_BUILT and not {"-h", "--help"} & set(tail):
        print(
            f"Error: 'aimx {verb}' is not built yet in this version "
            f"(it comes with {NOT_BUILT[verb]})",
            file=sys.stderr,
        )
        return 1
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
        if args.verb == "send":
            from aimx.cli import send

            return send.main(args)
        if args.verb in ("mailboxes", "mailbox"):
            from aimx.cli import mailboxes

            return mailboxes.main(args)
        if args.verb in ("hooks", "hook"):
            from aimx.cli import hooks

            return hooks.main(args)
        if args.verb == "dkim-keygen":
            from aimx.cli import dkimkeygen

            return dkimkeygen.main(args)
        if args.verb == "logs":
            from aimx.cli import logs

            return logs.main(args)
        if args.verb == "uninstall":
            from aimx.cli import uninstall

            return uninstall.main(args)
        if args.verb == "agents":
            from aimx.cli import agents

            return agents.main(args)
        if args.verb == "portcheck":
            from aimx.cli import portcheck

            return portcheck.main(args)
        if args.verb == "doctor":
            from aimx.cli import doctor

            return doctor.main(args)
        if args.verb == "ingest":
            from aimx.cli import ingest

            return ingest.run(args)
        from aimx.cli import demo

        return demo.run(args)
    except AimxError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
