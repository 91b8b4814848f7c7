"""``aimx logs``: show or follow the daemon's log (L3; docs/cli.md, "aimx logs").

No config and no root needed: the log source is the init system's
(L{aimx.host.initsystem.tail_log}, L{aimx.host.initsystem.follow_log}), except for
a demo: when C{$AIMX_RUNTIME_DIR} holds the state file of C{aimx demo}
(L{aimx.store.demo}), the log is the demo daemon's log file.
"""

import os
import sys

from aimx.cli.term import Terminal
from aimx.control.wire import socket_path
from aimx.store import demo
from aimx.host import initsystem

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
    if state is not None:
        return _demo_log(args, term, system, state)
    if args.follow:
        try:
            initsystem.follow_log(system)
        except initsystem.ServiceError as e:
            term.error(str(e))
            return 1
        except KeyboardInterrupt:
            return 130
        return 0
    try:
        text = initsystem.tail_log(system, args.lines)
    except initsystem.ServiceError as e:
        hint = ("If you are on systemd, run `journalctl -u aimx` directly. "
                "On OpenRC, check /var/log/messages or your syslog config.")
        print("  " + term.style(hint, _DIM), file=term.err)
        term.error(str(e))
        return 1
    term.out.write(text)
    if text and not text.endswith("\n"):
        term.out.write("\n")
    return 0


def _demo_log(args, term: Terminal, system: initsystem.System, state: demo.DemoState) -> int:
    """The demo daemon's log file: its tail, or followed with C{tail -F}."""
    print(term.dim(f"(the log of the aimx demo in {state.directory}: {state.log})"),
          file=term.err)
    try:
        if args.follow:
            initsystem.follow_file(system, state.log, args.lines)
            return 0
        text = initsystem.tail_file(state.log, args.lines)
    except initsystem.ServiceError as e:
        term.error(str(e))
        return 1
    except KeyboardInterrupt:
        return 130
    term.out.write(text)
    return 0
