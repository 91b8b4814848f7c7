"""The service files that run the daemon under systemd or OpenRC (L0, pure text).

Both run C{twistd --nodaemon --pidfile= aimx --data-dir <data_dir>} as root
(spec/setup-and-ops.md §7): the empty C{--pidfile=} keeps twistd from writing a
pid file of its own; the daemon writes C{<runtime_dir>/aimx.pid} itself.
L{aimx.host.initsystem} installs what these functions render.

The systemd socket activation option is rendered here too but installed by hand
(README, "Socket activation"): L{systemd_socket} is C{aimx.socket}, where systemd
listens on port 25, and L{systemd_socket_dropin} the C{aimx.service.d/socket.conf}
drop-in that makes the daemon take that socket (C{--bind} L{SOCKET_BIND}) instead
of binding port 25 itself.
"""

import re

import attrs

from aimx.core.config import DEFAULT_DATA_DIR
from aimx.errors import AimxError

SERVICE = "aimx"
SYSTEMD_UNIT = "/etc/systemd/system/aimx.service"
OPENRC_SCRIPT = "/etc/init.d/aimx"
SYSTEMD_SOCKET = "/etc/systemd/system/aimx.socket"
SYSTEMD_SOCKET_DROPIN = "/etc/systemd/system/aimx.service.d/socket.conf"
#: The --bind of the socket aimx.socket passes: C{ListenStream=25} with
#: C{BindIPv6Only=both} is one IPv6 socket that takes IPv4 clients too.
SOCKET_BIND = "systemd:domain=INET6:index=0"
DEFAULT_CONFIG_DIR = "/etc/aimx"
DEFAULT_RUNTIME_DIR = "/run/aimx"
# Where `pip install .` as root puts console scripts; only the contrib/ files use it.
DEFAULT_TWISTD = "/usr/local/bin/twistd"
# Under OpenRC supervise-daemon sends the daemon's output here (`aimx logs` reads it).
OPENRC_LOG = "/var/log/aimx/aimx.log"

# Characters that would need quoting or escaping in ExecStart= or a shell string.
_UNSAFE = re.compile(r"[\s\"'\\$`%;&|<>(){}*?#!~]")

_HEADER = (
    "# aimx mail daemon, written by `aimx setup` and removed by `aimx uninstall`.\n"
    "# The program is the twistd of the Python environment aimx is installed in.\n"
)


class UnitError(AimxError):
    """A path cannot be written into a service file."""


def _checked(name: str, path: str) -> str:
    if not path.startswith("/") or _UNSAFE.search(path):
        raise UnitError(
            f"{name} must be an absolute path without spaces, quotes or shell "
            f"characters to go into a service file (got: {path!r})"
        )
    return path


@attrs.frozen
class UnitParams:
    """What the service files depend on.

    @ivar twistd: absolute path of the twistd program to run.
    @ivar data_dir: the data dir, always passed as C{--data-dir}.
    @ivar config_dir: passed as C{--config-dir} only when not C{/etc/aimx}.
    @ivar runtime_dir: passed as C{--runtime-dir} only when not C{/run/aimx}.
    """

    twistd: str
    data_dir: str = DEFAULT_DATA_DIR
    config_dir: str = DEFAULT_CONFIG_DIR
    runtime_dir: str = DEFAULT_RUNTIME_DIR

    def arguments(self) -> list[str]:
        """The twistd arguments, every path checked.

        @raise UnitError: a path is relative or needs quoting.
        """
        data_dir = _checked("data dir", self.data_dir)
        args = ["--nodaemon", "--pidfile=", "aimx", "--data-dir", data_dir]
        if self.config_dir != DEFAULT_CONFIG_DIR:
            args += ["--config-dir", _checked("config dir", self.config_dir)]
        if self.runtime_dir != DEFAULT_RUNTIME_DIR:
            args += ["--runtime-dir", _checked("runtime dir", self.runtime_dir)]
        return args

    def command(self) -> str:
        """The ExecStart= command line: twistd and L{arguments}.

        @raise UnitError: a path is relative or needs quoting.
        """
        return " ".join([_checked("twistd", self.twistd), *self.arguments()])


def systemd_unit(params: UnitParams) -> str:
    """The text of C{/etc/systemd/system/aimx.service}.

    @raise UnitError: a path is relative or needs quoting.
    """
    command = params.command()
    return (
        _HEADER
        + "[Unit]\n"
        "Description=aimx SMTP server\n"
        "After=network-online.target nss-lookup.target\n"
        "Wants=network-online.target\n"
        "StartLimitBurst=5\n"
        "StartLimitIntervalSec=60s\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        "User=root\n"
        f"ExecStart={command}\n"
        "Restart=on-failure\n"
        "RestartSec=5s\n"
        "LimitNOFILE=65536\n"
        "TasksMax=4096\n"
        f"ReadWritePaths={params.data_dir}\n"
        "RuntimeDirectory=aimx\n"
        "StandardOutput=journal\n"
        "StandardError=journal\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def openrc_script(params: UnitParams) -> str:
    """The text of C{/etc/init.d/aimx} (mode 0755).

    @raise UnitError: a path is relative or needs quoting.
    """
    twistd = _checked("twistd", params.twistd)
    runtime_dir = _checked("runtime dir", params.runtime_dir)
    log_dir = OPENRC_LOG.rsplit("/", 1)[0]
    return (
        "#!/sbin/openrc-run\n"
        + _HEADER
        + "\n"
        'description="aimx SMTP server"\n'
        f"command={twistd}\n"
        f'command_args="{" ".join(params.arguments())}"\n'
        "supervisor=supervise-daemon\n"
        f'output_log="{OPENRC_LOG}"\n'
        f'error_log="{OPENRC_LOG}"\n'
        "\n"
        "depend() {\n"
        "\tafter net\n"
        "}\n"
        "\n"
        "start_pre() {\n"
        f"\tcheckpath -d -m 0755 -o root:root {runtime_dir} || return 1\n"
        f"\tcheckpath -d -m 0755 -o root:root {log_dir} || return 1\n"
        "}\n"
    )


def systemd_socket() -> str:
    """The text of C{/etc/systemd/system/aimx.socket}: systemd listens on port 25.

    With L{systemd_socket_dropin} the daemon adopts this socket, so a restart never
    refuses a client (connections wait in the backlog) and port 25 stays bound while
    aimx is down.
    """
    return (
        "# aimx SMTP socket (socket activation): systemd listens on port 25 and hands\n"
        "# the socket to aimx.service, which takes it with the drop-in\n"
        f"# {SYSTEMD_SOCKET_DROPIN} (--bind {SOCKET_BIND}).\n"
        "# Installed by hand, not by `aimx setup`; see the README, \"Socket activation\".\n"
        "[Unit]\n"
        "Description=aimx SMTP socket\n"
        "\n"
        "[Socket]\n"
        "# One IPv6 socket that also takes IPv4 clients: the daemon's domain=INET6.\n"
        "ListenStream=25\n"
        "BindIPv6Only=both\n"
        "\n"
        "[Install]\n"
        "WantedBy=sockets.target\n"
    )


def systemd_socket_dropin(params: UnitParams) -> str:
    """The text of C{/etc/systemd/system/aimx.service.d/socket.conf}.

    It replaces the unit's ExecStart= with the same command plus C{--bind}
    L{SOCKET_BIND}, so the daemon adopts aimx.socket's port 25 instead of binding it.

    @raise UnitError: a path is relative or needs quoting.
    """
    return (
        "# aimx.service takes port 25 from aimx.socket (socket activation) instead of\n"
        "# binding it.  Installed by hand next to aimx.socket; see the README.\n"
        "[Unit]\n"
        "Requires=aimx.socket\n"
        "After=aimx.socket\n"
        "\n"
        "[Service]\n"
        "ExecStart=\n"
        f"ExecStart={params.command()} --bind {SOCKET_BIND}\n"
    )
