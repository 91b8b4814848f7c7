"""The running demo's state file, C{<runtime_dir>/demo.json} (L1: disk, no Twisted).

C{aimx demo} writes it once its daemon answers; it says where the demo is and how
it runs: the SMTP port, the loopback DNS server, the port of the sender's MX, the
sender domain's DKIM key, the directories and the daemon's log file.  Every other
command finds a demo through the same C{AIMX_RUNTIME_DIR} it uses for the control
socket: C{aimx demo send} signs and delivers with it, C{aimx doctor} checks the demo
as its daemon runs (its DNS, its MX port, its loopback address), and C{aimx logs}
shows the demo's log instead of the init system's.  A production runtime directory
(C{/run/aimx}) has no C{demo.json}.

The file is written atomically, mode 0644: it holds paths and ports, no secret (the
sender key it names is a file of its own, readable only by the demo's mailbox owner
and root).
"""

import json
import os

import attrs

from aimx.errors import AimxError
from aimx.store import safefs

STATE_FILE = "demo.json"
#: The largest state file read (the real one is well under 1 KiB).
MAX_STATE_BYTES = 64 * 1024
_VERSION = 1


class DemoStateError(AimxError):
    """A C{demo.json} that cannot be read or is not one C{aimx demo} wrote."""

    code = "CONFIG"


def _port(instance, attribute, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise ValueError(f"{attribute.name} must be a port number, not {value!r}")


def _text(instance, attribute, value) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{attribute.name} must be a non-empty string, not {value!r}")


@attrs.frozen
class DemoState:
    """Where a running demo is and how it runs.

    @ivar host: the loopback address everything listens on.
    @ivar port: the demo daemon's SMTP port.
    @ivar dns_port: the demo DNS server (UDP and TCP on C{host}).
    @ivar mx_port: the port of the sender domain's MX (the demo's "remote" server).
    @ivar sender_key: path of the sender domain's DKIM private key (PEM).
    @ivar log: the daemon's log file.
    @ivar directory: the demo's scratch directory (config, data, runtime dir, log).
    """

    domain: str = attrs.field(validator=_text)
    host: str = attrs.field(validator=_text)
    port: int = attrs.field(validator=_port)
    dns_port: int = attrs.field(validator=_port)
    mx_port: int = attrs.field(validator=_port)
    sender_domain: str = attrs.field(validator=_text)
    selector: str = attrs.field(validator=_text)
    sender_key: str = attrs.field(validator=_text)
    config_dir: str = attrs.field(validator=_text)
    data_dir: str = attrs.field(validator=_text)
    log: str = attrs.field(validator=_text)
    directory: str = attrs.field(validator=_text)

    @property
    def smtp(self) -> str:
        """C{host:port} of the demo daemon."""
        return f"{self.host}:{self.port}"

    def environment(self) -> dict[str, str]:
        """The variables the demo daemon runs with: its DNS server and its MX port."""
        return {
            "AIMX_NAMESERVERS": f"{self.host}:{self.dns_port}",
            "AIMX_SMTP_OUT_PORT": str(self.mx_port),
        }


def state_path(runtime_dir: str) -> str:
    """C{<runtime_dir>/demo.json}."""
    return os.path.join(runtime_dir, STATE_FILE)


def write(runtime_dir: str, state: DemoState) -> str:
    """Write the state file atomically (mode 0644); its path."""
    path = state_path(runtime_dir)
    data = dict(attrs.asdict(state), version=_VERSION)
    text = json.dumps(data, indent=2) + "\n"
    safefs.replace_path(path, text.encode("utf-8"), mode=0o644, durable=False)
    return path


def read(runtime_dir: str) -> DemoState | None:
    """The demo whose runtime directory is C{runtime_dir}, or C{None} when it has none.

    @raise DemoStateError: the file exists but cannot be read or is not a demo's.
    """
    path = state_path(runtime_dir)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DemoStateError(f"cannot read the demo state {path}: {e.strerror or e}") from None
    if len(data) > MAX_STATE_BYTES:
        raise DemoStateError(f"{path} is not an aimx demo state file (over 64 KiB)")
    try:
        fields = json.loads(data)
        if not isinstance(fields, dict) or fields.pop("version", None) != _VERSION:
            raise ValueError("not version 1")
        return DemoState(**fields)
    except (ValueError, TypeError) as e:
        raise DemoStateError(f"{path} is not an aimx demo state file: {e}") from None
