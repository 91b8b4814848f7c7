"""Start a program the way systemd's socket activation does (integration test helper).

    python -m tests.integration.socketactivate FD NAME PROGRAM ARG...

Moves descriptor FD to 3 (C{SD_LISTEN_FDS_START}), sets C{LISTEN_FDS=1},
C{LISTEN_FDNAMES=NAME} and C{LISTEN_PID} to this process's pid, then execs PROGRAM:
the pid stays the same, so the program finds the socket as it would under systemd
(sd_listen_fds(3); Twisted's C{ListenFDs.fromEnvironment}).
"""

import os
import sys


def main(argv: list[str]) -> None:
    fd, name, program = int(argv[0]), argv[1], argv[2:]
    if fd != 3:
        os.dup2(fd, 3)  # inheritable, unlike the original may be
        os.close(fd)
    else:
        os.set_inheritable(3, True)
    os.environ.update(LISTEN_FDS="1", LISTEN_FDNAMES=name, LISTEN_PID=str(os.getpid()))
    os.execvp(program[0], program)


if __name__ == "__main__":
    main(sys.argv[1:])
