"""Who holds port 25 (L0, pure): C{ss -tlnp} output read (docs/cli.md, "aimx portcheck").

Shared by C{aimx portcheck}, C{aimx setup}'s preflight and C{aimx doctor}.
"""

import re

import attrs

from aimx.ops.portcheck import SMTP_PORT

@attrs.frozen
class Occupancy:
    """Who listens on port 25: C{free}, C{aimx} or C{other} (then C{name})."""

    kind: str = attrs.field(validator=attrs.validators.in_(("free", "aimx", "other")))
    name: str | None = None

    @property
    def free(self) -> bool:
        return self.kind == "free"

    @property
    def aimx(self) -> bool:
        return self.kind == "aimx"

    @property
    def other(self) -> bool:
        return self.kind == "other"


FREE = Occupancy("free")
AIMX = Occupancy("aimx")


def held_by(name: str) -> Occupancy:
    return Occupancy("other", name)


_USERS = re.compile(r"users:\((.*)\)")
_USER = re.compile(r'\("([^"]*)"(?:,pid=(\d+))?')
_AIMX_ENTRY_POINTS = ("aimx", "aimx.tac")
_HOSTING_PROCESSES = ("twistd",)


def ss_command(port: int = SMTP_PORT) -> list[str]:
    """The occupancy probe: listening TCP sockets on C{port}, with their processes."""
    return ["ss", "-tlnp", "sport", "=", f":{port}"]


def is_aimx_process(name: str, argv) -> bool:
    """Whether a listener named C{name} (comm) running C{argv} is aimx itself.

    [py] the Python daemon runs as C{aimx serve} (comm C{aimx}), C{twistd -n aimx}
    (comm C{twistd}) or under an interpreter (comm C{python3}, argv naming aimx).

    @param argv: the process's command line, C{None} when unreadable.
    """
    if name == "aimx":
        return True
    if name not in _HOSTING_PROCESSES and not name.startswith("python"):
        return False
    return any(arg.rsplit("/", 1)[-1] in _AIMX_ENTRY_POINTS for arg in (argv or ())[1:])


def parse_occupancy(ss_output: str, argv_of=lambda pid: None) -> Occupancy:
    """Classify C{ss -tlnp sport = :25} output.

    No data line -> free; the first line with C{users:(...)} -> aimx when one of its
    processes is aimx (under socket activation systemd holds aimx's socket too),
    else other(the first process's name); data lines without a process ->
    other(C{unknown}).

    @param argv_of: C{pid -> argv | None}, to recognise aimx under twistd/python.
    """
    lines = [line for line in ss_output.splitlines()[1:] if line.strip()]
    if not lines:
        return FREE
    for line in lines:
        match = _USERS.search(line)
        holders = _USER.findall(match.group(1)) if match else []
        if holders:
            if any(is_aimx_process(name, argv_of(int(pid)) if pid else None)
                   for name, pid in holders):
                return AIMX
            return held_by(holders[0][0])
    return held_by("unknown")
