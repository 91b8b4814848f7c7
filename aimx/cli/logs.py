"""``aimx logs``: show or follow the daemon's log (L3; spec/setup-and-ops.md §4).

No config and no root needed: the log source is the init system's
(L{aimx.store.services.tail_log}, L{aimx.store.services.follow_log}).
"""

import argparse
import os
import sys

from aimx.cli.term import Terminal
from aimx.store import services

DEFAULT_LINES = 50
_DIM = "2"


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid line count: {text!r}")
    return value


def add_parser(sub, common) -> None:
    """Register C{logs} on the top-level subparsers."""
    parser = sub.add_parser(
        "logs", parents=[common], help=argparse.SUPPRESS, prog="aimx logs",
        description="Show the aimx service log (journald, or the OpenRC log files).",
    )
    parser.add_argument(
        "-n", "--lines", type=_count, default=DEFAULT_LINES, metavar="N",
        help=f"number of lines to show (default: {DEFAULT_LINES})",
    )
    parser.add_argument(
        "-f", "--follow", action="store_true", help="stream the log live (journalctl -f)"
    )


def main(args) -> int:
    return run(args, Terminal(sys.stdout, sys.stderr, sys.stdin, os.environ), services.System())


def run(args, term: Terminal, system: services.System) -> int:
    """Print the last C{args.lines} lines, or follow the log; the exit code."""
    if args.follow:
        try:
            services.follow_log(system)
        except services.ServiceError as e:
            term.error(str(e))
            return 1
        except KeyboardInterrupt:
            return 130
        return 0
    try:
        text = services.tail_log(system, args.lines)
    except services.ServiceError as e:
        hint = ("If you are on systemd, run `journalctl -u aimx` directly. "
                "On OpenRC, check /var/log/messages or your syslog config.")
        print("  " + term.style(hint, _DIM), file=term.err)
        term.error(str(e))
        return 1
    term.out.write(text)
    if text and not text.endswith("\n"):
        term.out.write("\n")
    return 0
