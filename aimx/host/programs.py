"""Host programs (L1): the one runner every blocking program run goes through.

A runner is C{(argv, capture=True) -> Completed}.  Code that runs a program
takes one injected -- L{aimx.host.initsystem.System.runner} (systemctl,
journalctl, useradd, hostname), the agents CLI's C{World.runner}
(C{claude}, C{codex}), L{aimx.verifier.client.detect_occupancy} (C{ss}) -- and
tests pass a fake with the same signature.  L{run_program} is the real one.
A program whose output is read as it comes (C{journalctl -f} filtered by
C{aimx logs}) goes through a streamer, C{(argv, on_line) -> exit status}:
L{stream_program}.
"""

import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping

import attrs

#: The exit status of a program that could not be started: not found, not
#: executable (the shell's convention).
NOT_RUN = 127


@attrs.frozen
class Completed:
    """A finished program.

    @ivar returncode: its exit status; C{-N} when signal C{N} ended it (C{-9}
        after a timeout); L{NOT_RUN} when it could not be started.
    @ivar stdout: its output, when captured (else empty).
    @ivar stderr: its error output, when captured, or why it did not start or finish.
    """

    returncode: int
    stdout: str = ""
    stderr: str = ""


Runner = Callable[..., Completed]
Streamer = Callable[[list[str], Callable[[str], None]], int]


def run_program(argv: list[str], capture: bool = True, *,
                environ: Mapping[str, str] | None = None,
                timeout: float | None = None) -> Completed:
    """Run C{argv} and wait for it.

    @param capture: collect stdout and stderr (UTF-8, undecodable bytes
        replaced); otherwise they stay the terminal's.
    @param environ: the program's whole environment; C{argv[0]} is then looked
        up on I{its} C{PATH}, and stdin is closed (a program run on a caller's
        behalf reads nothing of the terminal).  C{None}: this process's
        environment and stdin.
    @param timeout: seconds before it is killed.
    @return: the outcome; a program that is missing or cannot be started is
        L{NOT_RUN} with the reason in C{stderr}, never an exception.
    """
    if environ is not None:
        program = shutil.which(argv[0], path=environ.get("PATH", os.defpath))
        if program is None:
            return Completed(NOT_RUN, "", f"{argv[0]}: not found")
        argv = [program, *argv[1:]]
    try:
        done = subprocess.run(
            argv, capture_output=capture, text=True, encoding="utf-8", errors="replace",
            check=False, timeout=timeout,
            env=None if environ is None else dict(environ),
            stdin=None if environ is None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        # subprocess.run has killed it (SIGKILL) and reaped it.
        return Completed(-signal.SIGKILL, "", f"timed out after {int(timeout)}s")
    except OSError as e:
        return Completed(NOT_RUN, "", f"{argv[0]}: {e.strerror or e}")
    return Completed(done.returncode, done.stdout or "", done.stderr or "")


def stream_program(argv: list[str], on_line: Callable[[str], None]) -> int:
    """Run C{argv}, giving C{on_line} each line of its output (with its end) as it
    comes; its stderr stays the terminal's.

    @return: its exit status (L{NOT_RUN} when it could not be started).  Ctrl-C
        (C{KeyboardInterrupt}) stops it and is raised again.
    """
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, encoding="utf-8",
                                errors="replace")
    except OSError:
        return NOT_RUN
    try:
        with proc.stdout:
            for line in proc.stdout:
                on_line(line)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc.wait()
