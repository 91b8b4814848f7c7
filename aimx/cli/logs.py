"""``aimx logs``: show or follow the daemon's log (L3; docs/cli.md, "aimx logs";
docs/logging.md).

No config and no root needed: the log source is the init system's
(L{aimx.host.initsystem.tail_log}, L{aimx.host.initsystem.follow_log}), except for
a demo: when C{$AIMX_RUNTIME_DIR} holds the state file of C{aimx demo}
(L{aimx.store.demo}), the log is the demo daemon's log file.  C{--priority},
C{--since} and C{--mailbox} select lines (L{aimx.ops.logline.Filter}): journalctl
applies the first two, aimx the mailbox, and aimx all three to a log file.
"""

import os
import sys

from aimx.cli.term import Terminal
from aimx.control.wire import socket_path
from aimx.host import initsystem
from aimx.ops import logline
from aimx.store import demo

_DIM = "2"


def main(args) -> int:
    return run(args, Terminal(sys.stdout, sys.stderr, sys.stdin, os.environ), initsystem.System(),
               os.environ)


def run(args, term: Terminal, system: initsystem.System, environ=None) -> int:
    """Print the last C{args.lines} lines, or follow the log; the exit code.

    @param environ: where C{AIMX_RUNTIME_DIR} is read (a demo's log); none: the
        init system's log.
    """
    try:
        state = None if environ is None else demo.read(os.path.dirname(socket_path(environ)))
    except demo.DemoStateError as e:
        term.error(str(e))
        return 1
    chosen = logline.Filter(args.priority, args.since, args.mailbox)
    if state is not None:
        print(term.dim(f"(the log of the aimx demo in {state.directory}: {state.log})"),
              file=term.err)
    try:
        if args.follow:
            if state is not None:
                initsystem.follow_file(state.log, args.lines, _writer(term), chosen)
            else:
                initsystem.follow_log(system, args.lines, _writer(term), chosen)
            return 0
        if state is not None:
            text = initsystem.tail_file(state.log, args.lines, chosen)
        else:
            text = initsystem.tail_log(system, args.lines, chosen)
    except initsystem.ServiceError as e:
        if state is None and not args.follow:
            hint = ("If you are on systemd, run `journalctl -u aimx` directly. "
                    "On OpenRC, check /var/log/messages or your syslog config.")
            print("  " + term.style(hint, _DIM), file=term.err)
        term.error(str(e))
        return 1
    except KeyboardInterrupt:
        return 130
    term.out.write(text)
    if text and not text.endswith("\n"):
        term.out.write("\n")
    return 0


def _writer(term: Terminal):
    """Write to the terminal at once (a followed line must show when it comes)."""

    def write(text: str) -> None:
        term.out.write(text)
        term.out.flush()

    return write
