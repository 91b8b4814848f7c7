"""``aimx uninstall``: remove what aimx installed on the host (L3; docs/cli.md).

It stops the service and deletes its service file and runtime files (a stale
control socket and pid file, an empty runtime dir under /run).  It deletes
nothing it did not install: the config dir (config, DKIM keys), the data dir,
C{/etc/ssl/aimx}, the C{aimx-catchall} user and its home, the socket-activation
files an operator copied by hand (their socket is stopped and disabled) and the
aimx package itself stay.  The package belongs to its installer, so the exact
command that removes it (apt, pipx, uv or pip, detected by L{aimx.host.package})
is printed at the end.
"""

import os
import shlex
import shutil
import sys
from collections.abc import Callable

from aimx.cli.term import Terminal
from aimx.core.config import DEFAULT_DATA_DIR
from aimx.errors import AimxError
from aimx.host import initsystem, package
from aimx.ops import units
from aimx.store import configfile

_GREEN, _BOLD, _DIM = "32", "1", "2"

_INSTALLERS = {
    package.APT: "a Debian package",
    package.PIPX: "pipx",
    package.UV: "uv",
    package.VENV_PIP: "pip, in a virtual environment",
    package.SYSTEM_PIP: "pip",
}


def program_path(argv0: str, executable: str, which=shutil.which) -> str | None:
    """The path of the C{aimx} console script that was run (not resolved), or C{None}.

    pipx links it into its bin directory, which the uninstall command then names.

    @param argv0: C{sys.argv[0]}; used when it names the C{aimx} script
        (C{python -m aimx} names a module file instead, then C{PATH} is searched).
    @param executable: C{sys.executable}, which is never the answer.
    """
    candidate = argv0 if os.path.basename(argv0) == "aimx" else which("aimx")
    if not candidate:
        return None
    path = os.path.abspath(candidate)
    if not os.path.isfile(path) or os.path.realpath(path) == os.path.realpath(executable):
        return None
    return path


def main(args) -> int:
    return run(
        args,
        Terminal(sys.stdout, sys.stderr, sys.stdin, os.environ),
        initsystem.System(),
        euid=os.geteuid(),
        runtime_dir=os.environ.get("AIMX_RUNTIME_DIR") or units.DEFAULT_RUNTIME_DIR,
        find_package=lambda: package.removal(
            package.current(program_path(sys.argv[0], sys.executable))
        ),
    )


def run(args, term: Terminal, system: initsystem.System, *, euid: int, runtime_dir: str,
        find_package: Callable[[], package.Removal]) -> int:
    """Tear down the service and its runtime files, then say how to remove the package.

    @param runtime_dir: the daemon's runtime dir (C{AIMX_RUNTIME_DIR}, else C{/run/aimx}).
    @param find_package: how the package was installed (L{aimx.host.package.removal}).
    @return: the exit code.
    """
    if euid != 0:
        term.error("`aimx uninstall` requires root. Run with: sudo aimx uninstall")
        return 1
    config_dir = args.config_dir
    data_dir = _data_dir(args)
    term.say()
    term.say(term.bold("Uninstall"))
    term.say("This will stop the aimx daemon and remove its service file and runtime files.")
    term.say(f"Config ({config_dir}) and mailbox data ({data_dir}) will be kept, and so "
             "will the aimx package: the command that removes it is shown at the end.")
    if not args.yes and not term.confirm("Proceed with uninstall? (y/N) "):
        term.error("Uninstall cancelled.")
        return 1
    init = initsystem.detect_init(system)
    try:
        removed = initsystem.remove(system)
    except AimxError as e:
        term.error(str(e))
        return 1
    except OSError as e:
        term.error(f"cannot remove the service file: {e}")
        return 1
    if not removed:
        term.say(term.style("aimx.service is not installed; skipping service teardown.", _DIM))
    gone = [initsystem.service_file(init)] if removed else []
    gone += _remove_runtime(term, system, runtime_dir)
    by_hand = initsystem.socket_files(system) if init == initsystem.SYSTEMD else []
    term.say()
    term.say(term.style("Uninstall complete.", _GREEN, _BOLD))
    term.say()
    for path in gone:
        term.say(f"Removed: {path}")
    if by_hand:
        term.say("Socket activation (aimx.socket) is stopped and disabled; its files were "
                 "installed by hand and stay. Remove them with:")
        term.say(f"  sudo rm {' '.join(shlex.quote(p) for p in by_hand)}")
    _package(term, find_package())
    term.say(f"To wipe config and data manually: sudo rm -rf {config_dir} {data_dir}")
    return 0


def _data_dir(args) -> str:
    try:
        config, _ = configfile.load(args.config_dir, data_dir_override=args.data_dir)
    except AimxError:
        return args.data_dir or DEFAULT_DATA_DIR
    return config.data_dir


def _remove_runtime(term: Terminal, system: initsystem.System, runtime_dir: str) -> list[str]:
    try:
        return initsystem.remove_runtime(system, runtime_dir)
    except initsystem.ServiceError as e:
        term.say(f"{term.mark('warn')} runtime files kept: {e}")
    except OSError as e:
        term.say(f"{term.mark('warn')} could not remove runtime files in {runtime_dir}: "
                 f"{e.strerror or e}")
    return []


def _package(term: Terminal, removal: package.Removal) -> None:
    """Say how to remove the aimx package (aimx never deletes it itself)."""
    if removal.command is not None:
        how = _INSTALLERS[removal.installer]
        who = "" if removal.user == "root" else f"; run it as {removal.user}"
        term.say(f"The aimx package stays installed ({how}{who}). To remove it:")
        term.say(f"  {removal.command}")
    if removal.note:
        term.say(removal.note)
