"""The service files that run the daemon under systemd or OpenRC (L0, pure text).

Both run C{twistd --nodaemon --pidfile= aimx --data-dir <data_dir>} as root
(docs/install.md, "The service"): the empty C{--pidfile=} keeps twistd from writing a
pid file of its own; the daemon writes C{<runtime_dir>/aimx.pid} itself.
L{aimx.host.initsystem} installs what these functions render.

The systemd unit is sandboxed (README, "The service sandbox"): the file system is
read-only but for the aimx directories and the homes, /tmp and /dev are private,
no privilege can be gained, the kernel, namespaces, address families and system
calls are restricted, and the capability bounding set is L{CAPABILITIES}.  Hooks
are the daemon's children and run inside the same sandbox, so it keeps what the
agent recipes need: the owners' homes writable, the network, and memory that is
writable and executable (node's and Python's JITs).  The OpenRC script gets what
OpenRC can give: the umask, the capability bounding set, no new privileges.

The systemd socket activation option is rendered here too but installed by hand
(README, "Socket activation"): L{systemd_socket} is C{aimx.socket}, where systemd
listens on port 25, and L{systemd_socket_dropin} the C{aimx.service.d/socket.conf}
drop-in that makes the daemon take that socket (C{--bind} L{SOCKET_BIND}) instead
of binding port 25 itself.
"""

import posixpath
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

#: The capabilities the daemon uses, and so its whole bounding set (hooks, started
#: as its children, can never hold any other).
CAPABILITIES = (
    "CAP_NET_BIND_SERVICE",  # listen on port 25
    "CAP_CHOWN",  # give mailbox files and directories to their owner
    "CAP_FOWNER",  # set the mode of a mailbox directory the owner owns
    "CAP_DAC_OVERRIDE",  # write into the owners' 0700 mailbox directories
    "CAP_SETUID",  # run a hook as the mailbox owner ...
    "CAP_SETGID",  # ... with the owner's group and no supplementary groups
    "CAP_KILL",  # stop a hook (running as its owner) at its timeout
)
#: Every capability of Linux (capabilities(7), 0 to 40): OpenRC can only drop them
#: from the bounding set one by one.
ALL_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
#: Homes hooks may write in besides the aimx directories ("-": absent is fine).
#: An owner whose home is elsewhere needs a drop-in (README, "The service sandbox").
HOMES = ("-/home", "-/root")
#: What a hook's program may call besides @system-service: sandboxing itself further
#: (codex exec runs its commands under Landlock and seccomp).
EXTRA_SYSCALLS = (
    "seccomp", "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
)

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

    def runtime_directory(self) -> str | None:
        """The C{RuntimeDirectory=} for the runtime dir: its path under C{/run}, or
        C{None} when it lies elsewhere (then it is one of L{writable_paths})."""
        path = posixpath.normpath(_checked("runtime dir", self.runtime_dir))
        if path.startswith("/run/"):
            return path.removeprefix("/run/")
        return None

    def writable_paths(self) -> list[str]:
        """The unit's C{ReadWritePaths=}: the data and config dirs (config edits
        replace config.toml), a runtime dir outside C{/run}, then L{HOMES}.

        @raise UnitError: a path is relative or needs quoting.
        """
        paths = [_checked("data dir", self.data_dir), _checked("config dir", self.config_dir)]
        if self.runtime_directory() is None:
            paths.append(self.runtime_dir)
        return [*paths, *HOMES]


def systemd_unit(params: UnitParams) -> str:
    """The text of C{/etc/systemd/system/aimx.service}, sandboxed (module docstring).

    @raise UnitError: a path is relative or needs quoting.
    """
    command = params.command()
    writable = " ".join(params.writable_paths())
    runtime = params.runtime_directory()
    runtime_lines = (
        f"RuntimeDirectory={runtime}\nRuntimeDirectoryMode=0755\n" if runtime else ""
    )
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
        + runtime_lines
        + "StandardOutput=journal\n"
        "StandardError=journal\n"
        "\n"
        "# The sandbox.  Hooks are the daemon's children and run inside it too: they\n"
        "# can write only below ReadWritePaths (the homes among them) and in a /tmp of\n"
        "# their own, use the network, and never gain privileges (no sudo or other\n"
        "# setuid programs).  Give hooks another path with `systemctl edit aimx`:\n"
        "#   [Service]\n"
        "#   ReadWritePaths=/srv/reports\n"
        "UMask=0077\n"
        "ProtectSystem=strict\n"
        f"ReadWritePaths={writable}\n"
        "PrivateTmp=yes\n"
        "PrivateDevices=yes\n"
        "PrivateMounts=yes\n"
        "NoNewPrivileges=yes\n"
        f"CapabilityBoundingSet={' '.join(CAPABILITIES)}\n"
        "ProtectKernelTunables=yes\n"
        "ProtectKernelModules=yes\n"
        "ProtectKernelLogs=yes\n"
        "ProtectControlGroups=yes\n"
        "ProtectClock=yes\n"
        "ProtectHostname=yes\n"
        "ProtectProc=invisible\n"
        "RestrictNamespaces=yes\n"
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK\n"
        "RestrictRealtime=yes\n"
        "RestrictSUIDSGID=yes\n"
        "LockPersonality=yes\n"
        "SystemCallArchitectures=native\n"
        f"SystemCallFilter=@system-service {' '.join(EXTRA_SYSCALLS)}\n"
        "SystemCallErrorNumber=EPERM\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def openrc_script(params: UnitParams) -> str:
    """The text of C{/etc/init.d/aimx} (mode 0755), with what OpenRC can sandbox.

    C{umask} always; the capability bounding set (C{capabilities}, every
    capability but L{CAPABILITIES} dropped) and no new privileges when
    supervise-daemon can set them, which C{start_pre} asks it (C{--help} after the
    option): OpenRC before 0.45, or 0.45 to 0.51 built without libcap (Debian 12),
    would refuse to start the service otherwise.  No new privileges goes to
    supervise-daemon directly: 0.45 to 0.51 misspell C{no_new_privs=yes}.

    @raise UnitError: a path is relative or needs quoting.
    """
    twistd = _checked("twistd", params.twistd)
    runtime_dir = _checked("runtime dir", params.runtime_dir)
    log_dir = OPENRC_LOG.rsplit("/", 1)[0]
    dropped = ",".join(f"!{c.lower()}" for c in ALL_CAPABILITIES if c not in CAPABILITIES)
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
        "# What OpenRC can sandbox; hooks, the daemon's children, inherit it and cannot\n"
        "# gain privileges (no sudo or other setuid programs).  The bounding set keeps\n"
        f"# only {' '.join(c.removeprefix('CAP_').lower() for c in CAPABILITIES)}.\n"
        "umask=077\n"
        f'capabilities="{dropped}"\n'
        "\n"
        "depend() {\n"
        "\tafter net\n"
        "}\n"
        "\n"
        "start_pre() {\n"
        f"\tcheckpath -d -m 0755 -o root:root {runtime_dir} || return 1\n"
        f"\tcheckpath -d -m 0755 -o root:root {log_dir} || return 1\n"
        "\t# Ask supervise-daemon what it can do: capabilities need OpenRC 0.45 built\n"
        "\t# with libcap, --no-new-privs OpenRC 0.45 (no_new_privs=yes is misspelt\n"
        "\t# on its way to supervise-daemon before 0.52).\n"
        '\tif ! supervise-daemon "${RC_SVCNAME}" --capabilities "${capabilities}" --help \\\n'
        "\t\t\t>/dev/null 2>&1; then\n"
        '\t\tewarn "supervise-daemon cannot limit capabilities here; aimx keeps all of root\'s"\n'
        "\t\tunset capabilities\n"
        "\tfi\n"
        '\tif supervise-daemon "${RC_SVCNAME}" --no-new-privs --help >/dev/null 2>&1; then\n'
        '\t\tsupervise_daemon_args="${supervise_daemon_args-${start_stop_daemon_args}}'
        ' --no-new-privs"\n'
        "\telse\n"
        '\t\tewarn "supervise-daemon cannot set no_new_privs here"\n'
        "\tfi\n"
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
