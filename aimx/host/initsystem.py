"""The init system on the host (L1): detect it, install and remove aimx's service and
runtime files, read its log.

Every path goes through L{System.path} and every program through L{System.runner},
so tests use a temporary root and a fake runner (docs/install.md, "The service").
"""

import contextlib
import glob
import os
import shutil
import socket
import stat
from collections.abc import Callable

import attrs

from aimx.ops import logline, units
from aimx.errors import AimxError
from aimx.store import safefs
from aimx.host import logfile
from aimx.host.programs import Completed, Runner, Streamer, run_program, stream_program

SYSTEMD, OPENRC, UNKNOWN = "systemd", "openrc", "unknown"
LOG_DIR = os.path.dirname(units.OPENRC_LOG)
MESSAGES = "/var/log/messages"


class ServiceError(AimxError):
    """Installing, removing or reading the service failed; the message is for the operator."""


@attrs.frozen
class System:
    """The host as seen by this module.

    @ivar root: prefix of every absolute path (C{/} on a real host).
    @ivar runner: C{(argv, capture=True) -> Completed} (L{aimx.host.programs}).
    @ivar streamer: C{(argv, on_line) -> exit status}: a program whose output is read
        as it comes (L{aimx.host.programs.stream_program}).
    """

    root: str = "/"
    runner: Runner = run_program
    streamer: Streamer = stream_program

    def path(self, absolute: str) -> str:
        """C{absolute} under L{root}."""
        return os.path.join(self.root, absolute.lstrip("/"))

    def run(self, *argv: str, capture: bool = True) -> Completed:
        """Run a program through L{runner}."""
        return self.runner(list(argv), capture=capture)

    def stream(self, argv: list[str], on_line: Callable[[str], None]) -> int:
        """Run a program through L{streamer}, giving C{on_line} each line it writes."""
        return self.streamer(list(argv), on_line)


def detect_init(system: System) -> str:
    """The init system: L{SYSTEMD} if C{/run/systemd/system} exists, else L{OPENRC}
    if C{/sbin/openrc} does, else L{UNKNOWN}."""
    if os.path.exists(system.path("/run/systemd/system")):
        return SYSTEMD
    if os.path.exists(system.path("/sbin/openrc")):
        return OPENRC
    return UNKNOWN


def service_file(init: str) -> str | None:
    """The service file of an init system, or C{None} for L{UNKNOWN}."""
    return {SYSTEMD: units.SYSTEMD_UNIT, OPENRC: units.OPENRC_SCRIPT}.get(init)


def is_running(system: System) -> bool:
    """Whether the aimx service runs (C{systemctl is-active} / C{rc-service status})."""
    init = detect_init(system)
    if init == SYSTEMD:
        return system.run("systemctl", "is-active", "--quiet", units.SERVICE).returncode == 0
    if init == OPENRC:
        return system.run("rc-service", units.SERVICE, "status").returncode == 0
    return False


def find_twistd(executable: str, which=shutil.which) -> str:
    """The canonical path of the twistd that belongs to the running Python.

    @param executable: C{sys.executable}; its directory is looked at first
        (not resolved: a virtualenv's python is a symlink out of the venv).
    @param which: C{shutil.which}, for the C{PATH} fallback.
    @raise ServiceError: no twistd, so no service file may point at one.
    """
    beside = os.path.join(os.path.dirname(executable), "twistd")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return os.path.realpath(beside)
    found = which("twistd")
    if found:
        return os.path.realpath(found)
    raise ServiceError(
        f"cannot find twistd next to {executable} or on PATH; install aimx into "
        "this Python environment (pip install .) and re-run `sudo aimx setup`"
    )


def _write(path: str, text: str, mode: int) -> None:
    """Replace C{path} atomically with a file of C{mode}."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    safefs.replace_path(path, text.encode("utf-8"), mode=mode, durable=False)


def install(system: System, params: units.UnitParams) -> str:
    """Write the service file for the detected init system, enable and (re)start it.

    systemd: write the unit (0644), C{daemon-reload}, C{enable}, C{reset-failed}
    (those results ignored), then C{restart}. OpenRC: write the script (0755),
    C{rc-update add aimx default}, C{rc-service aimx restart}.

    @return: the path of the service file written.
    @raise ServiceError: unknown init system (nothing written) or the restart failed.
    @raise aimx.ops.units.UnitError: a path cannot go into a service file.
    @raise OSError: the file could not be written.
    """
    init = detect_init(system)
    if init == SYSTEMD:
        _write(system.path(units.SYSTEMD_UNIT), units.systemd_unit(params), 0o644)
        system.run("systemctl", "daemon-reload")
        system.run("systemctl", "enable", units.SERVICE)
        system.run("systemctl", "reset-failed", units.SERVICE)
        restart = system.run("systemctl", "restart", units.SERVICE)
    elif init == OPENRC:
        _write(system.path(units.OPENRC_SCRIPT), units.openrc_script(params), 0o755)
        system.run("rc-update", "add", units.SERVICE, "default")
        restart = system.run("rc-service", units.SERVICE, "restart")
    else:
        raise ServiceError(
            "Could not detect init system (systemd or OpenRC). Start aimx serve manually."
        )
    if restart.returncode != 0:
        detail = restart.stderr.strip()
        raise ServiceError(f"Failed to restart aimx{': ' + detail if detail else ''}")
    return service_file(init)


def socket_files(system: System) -> list[str]:
    """The socket-activation files installed by hand (README, "Socket activation")
    that exist: C{aimx.socket} and its C{aimx.service.d/socket.conf} drop-in.

    aimx did not install them, so L{remove} stops the socket but never deletes them.
    """
    return [
        path for path in (units.SYSTEMD_SOCKET, units.SYSTEMD_SOCKET_DROPIN)
        if os.path.lexists(system.path(path))
    ]


def remove(system: System) -> bool:
    """Stop, disable and delete the service; control-command failures are ignored.

    Under systemd an C{aimx.socket} (socket activation) is stopped and disabled
    first, whether or not the unit is still there: it would otherwise keep port 25
    and start aimx again.  Its files stay (L{socket_files}).

    @return: C{False} when no service file was installed (nothing else done).
    @raise ServiceError: unknown init system.
    @raise OSError: the service file could not be deleted.
    """
    init = detect_init(system)
    if init == UNKNOWN:
        raise ServiceError(
            "Could not detect init system (systemd or OpenRC). Remove "
            f"{units.SYSTEMD_UNIT} or {units.OPENRC_SCRIPT} manually."
        )
    socket = f"{units.SERVICE}.socket"
    if init == SYSTEMD and os.path.lexists(system.path(units.SYSTEMD_SOCKET)):
        system.run("systemctl", "stop", socket)
        system.run("systemctl", "disable", socket)
    path = system.path(service_file(init))
    if not os.path.lexists(path):
        return False
    if init == SYSTEMD:
        system.run("systemctl", "stop", units.SERVICE)
        system.run("systemctl", "disable", units.SERVICE)
        os.unlink(path)
        system.run("systemctl", "daemon-reload")
        system.run("systemctl", "reset-failed", units.SERVICE)
    else:
        system.run("rc-service", units.SERVICE, "stop")
        system.run("rc-update", "del", units.SERVICE, "default")
        os.unlink(path)
    return True


def _answers(directory: str, name: str) -> bool:
    """Whether something accepts connections on the UNIX socket C{name} in C{directory}.

    The socket is reached through the directory's descriptor, so a path longer
    than a socket address may be (108 bytes) is still probed.
    """
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect(f"/proc/self/fd/{dir_fd}/{name}")
    except OSError:
        return False
    finally:
        probe.close()
        os.close(dir_fd)
    return True


#: The files the daemon makes in its runtime dir, and what each must be.
_RUNTIME_FILES = (("aimx.sock", stat.S_ISSOCK), ("aimx.pid", stat.S_ISREG))


def remove_runtime(system: System, runtime_dir: str, answers=None) -> list[str]:
    """Delete what a stopped daemon may leave in C{runtime_dir}: its control socket
    and pid file (after a crash), and the directory itself when it is then empty
    and lies under C{/run} (systemd's C{RuntimeDirectory=}, OpenRC's C{checkpath}).

    Nothing else is touched: a name of another type (a symlink, a directory) stays.

    @param answers: C{(directory, name) -> bool}, whether a daemon answers on that
        socket (by default it is connected to).

    @return: the paths deleted (as the host names them).
    @raise ServiceError: a daemon still answers on the socket (one started by
        hand): nothing is deleted.
    @raise OSError: a file or the directory could not be deleted.
    """
    removed = []
    directory = system.path(runtime_dir)
    if (answers or _answers)(directory, "aimx.sock"):
        raise ServiceError(
            f"aimx still answers on {os.path.join(runtime_dir, 'aimx.sock')} (not started "
            f"by the service); stop it, then remove {runtime_dir}"
        )
    for name, is_kind in _RUNTIME_FILES:
        path = os.path.join(directory, name)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        if is_kind(mode):
            os.unlink(path)
            removed.append(os.path.join(runtime_dir, name))
    under_run = os.path.normpath(runtime_dir).startswith("/run/")
    if under_run and os.path.isdir(directory) and not os.path.islink(directory):
        with contextlib.suppress(FileNotFoundError):
            if not os.listdir(directory):
                os.rmdir(directory)
                removed.append(runtime_dir)
    return removed


def _last_lines(text: str, n: int, chosen: logline.Filter) -> str:
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if chosen:
        lines = list(chosen.select(lines))
    if n == 0 or not lines:
        return ""
    return "\n".join(lines[-n:]) + "\n"


def _read(path: str) -> str | None:
    with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as f:
        return f.read()
    return None


def journal_command(lines: int | None, chosen: logline.Filter = logline.Filter(), *,
                    follow: bool = False, cursor: str | None = None) -> list[str]:
    """The C{journalctl} command that shows the service's log.

    @param lines: how many of the last lines; C{None}: all (C{-n all} when following).
    @param chosen: its priority and time go to journalctl (C{-p}, C{--since @<epoch>});
        a mailbox is aimx's own field, the caller filters on it.
    @param cursor: show only what comes after this journal cursor.
    """
    argv = ["journalctl", "-u", units.SERVICE]
    if lines is not None or follow:
        argv += ["-n", "all" if lines is None else str(lines)]
    argv.append("--no-pager")
    if chosen.priority is not None:
        argv += ["-p", str(chosen.priority)]
    if chosen.since is not None:
        argv += ["--since", f"@{int(chosen.since.timestamp())}"]
    if cursor is not None:
        argv += ["--after-cursor", cursor]
    if follow:
        argv.append("-f")
    return argv


#: How journalctl's --show-cursor ends its output.
_CURSOR = "-- cursor: "


def _journal(system: System, lines: int, chosen: logline.Filter,
             cursor: bool = False) -> tuple[str, str | None]:
    """The last C{lines} lines journalctl shows that C{chosen} passes, and the cursor
    of the journal's last entry (when asked)."""
    mailbox = chosen.mailbox is not None
    argv = journal_command(None if mailbox else lines, chosen)
    done = system.run(*argv, *(["--show-cursor"] if cursor else []))
    if done.returncode != 0:
        raise ServiceError(f"journalctl exited non-zero: {done.stderr.strip()}")
    text, last = done.stdout, None
    if cursor:
        head, _, tail = text.rstrip("\n").rpartition("\n")
        if tail.startswith(_CURSOR):
            text, last = head + "\n" if head else "", tail[len(_CURSOR):]
    if mailbox:  # journalctl applied the rest
        text = _last_lines(text, lines, logline.Filter(mailbox=chosen.mailbox))
    return text, last



def tail_log(system: System, lines: int, chosen: logline.Filter = logline.Filter()) -> str:
    """The last C{lines} lines of the daemon's log that C{chosen} passes.

    systemd: C{journalctl -u aimx -n <lines> --no-pager} (L{journal_command}). OpenRC:
    the files C{/var/log/aimx/*.log} (in name order), else C{/var/log/messages}.

    @raise ServiceError: no log source, or journalctl failed.
    """
    init = detect_init(system)
    if init == SYSTEMD:
        return _journal(system, lines, chosen)[0]
    if init == UNKNOWN:
        raise ServiceError(
            "could not detect init system (systemd or OpenRC); no log source available"
        )
    files = sorted(glob.glob(os.path.join(glob.escape(system.path(LOG_DIR)), "*.log")))
    text = "".join(t for t in map(_read, files) if t)
    if not text:
        text = _read(system.path(MESSAGES))
    if text is None:
        raise ServiceError(
            f"no log source found for unit '{units.SERVICE}': checked {LOG_DIR} and {MESSAGES}"
        )
    return _last_lines(text, lines, chosen)


def follow_log(system: System, lines: int, write: Callable[[str], None],
               chosen: logline.Filter = logline.Filter()) -> None:
    """Show the last C{lines} lines that C{chosen} passes, then each one added, until
    the log ends or Ctrl-C.

    systemd: C{journalctl ... -f} on the terminal; with a mailbox, the lines journalctl
    shows are filtered here, the follow starting after the cursor of the last one.
    OpenRC: C{/var/log/aimx/aimx.log} (L{aimx.host.logfile}).

    @param write: given each line (with its end) when aimx reads them.
    @raise ServiceError: no log to follow, or journalctl exited non-zero.
    """
    init = detect_init(system)
    if init == SYSTEMD:
        if chosen.mailbox is None:
            done = system.run(*journal_command(lines, chosen, follow=True), capture=False)
        else:
            text, cursor = _journal(system, lines, chosen, cursor=True)
            write(text)
            keep = logline.Filter(mailbox=chosen.mailbox).selector()

            def shown(line: str) -> None:
                if keep(line.rstrip("\n")):
                    write(line)

            argv = journal_command(None if cursor else 0, chosen, follow=True, cursor=cursor)
            done = Completed(system.stream(argv, shown))
        if done.returncode != 0:
            raise ServiceError("journalctl exited non-zero")
        return
    if init != OPENRC:
        raise ServiceError(
            "could not detect init system (systemd or OpenRC); no log source available"
        )
    follow_file(system.path(units.OPENRC_LOG), lines, write, chosen)


def follow_file(path: str, lines: int, write: Callable[[str], None],
                chosen: logline.Filter = logline.Filter()) -> None:
    """The last C{lines} lines of the log file C{path} that C{chosen} passes, then each
    one added (L{aimx.host.logfile}).

    @raise ServiceError: the file cannot be read.
    """
    keep = chosen.selector() if chosen else None
    try:
        found, offset = logfile.tail(path, lines, keep)
        write("".join(line + "\n" for line in found))
        logfile.follow(path, offset, write, keep)
    except OSError as e:
        raise ServiceError(f"cannot read the log {path}: {e.strerror or e}") from None


def tail_file(path: str, lines: int, chosen: logline.Filter = logline.Filter()) -> str:
    """The last C{lines} lines of the log file C{path} (the demo's) that C{chosen} passes.

    @raise ServiceError: the file cannot be read.
    """
    try:
        found, _ = logfile.tail(path, lines, chosen.selector() if chosen else None)
    except OSError as e:
        raise ServiceError(f"cannot read the log {path}: {e.strerror or e}") from None
    return "".join(line + "\n" for line in found)
