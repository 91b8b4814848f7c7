"""``aimx uninstall``: remove the service and the ``aimx`` program (L3; spec/setup-and-ops.md §5).

Kept: the config dir (config, DKIM keys), the data dir, C{/etc/ssl/aimx}, the
C{aimx-catchall} user and its home. The program removed is the C{aimx} console
script, never the Python interpreter; the package itself stays installed.
"""

import argparse
import os
import shutil
import sys

from aimx.cli.term import Terminal
from aimx.core.config import DEFAULT_DATA_DIR
from aimx.errors import AimxError
from aimx.store import configfile
from aimx.host import initsystem

_GREEN, _BOLD, _DIM = "32", "1", "2"


def add_parser(sub, common) -> None:
    """Register C{uninstall} on the top-level subparsers."""
    parser = sub.add_parser(
        "uninstall", parents=[common], help=argparse.SUPPRESS, prog="aimx uninstall",
        description="Stop aimx, remove its service file and the aimx program "
        "(config and mail are kept).",
    )
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")


def program_path(argv0: str, executable: str, which=shutil.which) -> str | None:
    """The canonical path of the installed C{aimx} console script, or C{None}.

    @param argv0: C{sys.argv[0]}; used when it names the C{aimx} script
        (C{python -m aimx} names a module file instead, then C{PATH} is searched).
    @param executable: C{sys.executable}, which is never the answer.
    """
    candidate = argv0 if os.path.basename(argv0) == "aimx" else which("aimx")
    if not candidate:
        return None
    path = os.path.realpath(candidate)
    if not os.path.isfile(path) or path == os.path.realpath(executable):
        return None
    return path


def main(args) -> int:
    return run(
        args,
        Terminal(sys.stdout, sys.stderr, sys.stdin, os.environ),
        initsystem.System(),
        euid=os.geteuid(),
        program=program_path(sys.argv[0], sys.executable),
    )


def run(args, term: Terminal, system: initsystem.System, *, euid: int, program: str | None) -> int:
    """Tear down the service, delete C{program}; the exit code.

    @param program: the path to delete (L{program_path}), or C{None}.
    """
    if euid != 0:
        term.error("`aimx uninstall` requires root. Run with: sudo aimx uninstall")
        return 1
    config_dir = args.config_dir
    data_dir = _data_dir(args)
    term.say()
    term.say(term.bold("Uninstall"))
    target = program or "the installed aimx binary"
    term.say(f"This will stop the aimx daemon, remove its service file, and delete {target}.")
    term.say(f"Config ({config_dir}) and mailbox data ({data_dir}) will be kept.")
    if not args.yes and not term.confirm("Proceed with uninstall? (y/N) "):
        term.error("Uninstall cancelled.")
        return 1
    try:
        if not initsystem.remove(system):
            term.say(term.style("aimx.service is not installed; skipping service teardown.", _DIM))
    except AimxError as e:
        term.error(str(e))
        return 1
    except OSError as e:
        term.error(f"cannot remove the service file: {e}")
        return 1
    removed = _remove_program(term, program)
    term.say()
    term.say(term.style("Uninstall complete.", _GREEN, _BOLD))
    term.say()
    if removed:
        term.say(f"Removed binary: {program}")
    term.say(f"To wipe config and data manually: sudo rm -rf {config_dir} {data_dir}")
    return 0


def _data_dir(args) -> str:
    try:
        config, _ = configfile.load(args.config_dir, data_dir_override=args.data_dir)
    except AimxError:
        return args.data_dir or DEFAULT_DATA_DIR
    return config.data_dir


def _remove_program(term: Terminal, program: str | None) -> bool:
    warn = term.mark("warn")
    if program is None:
        term.say(f"{warn} could not resolve the aimx binary path; remove it manually if needed.")
        return False
    try:
        os.unlink(program)
    except OSError as e:
        term.say(f"{warn} could not remove binary at {program}: {e.strerror or e}")
        term.say(f"Remove it manually with: sudo rm {program}")
        return False
    return True
