"""Read and atomically rewrite C{<config_dir>/config.toml} (L1: disk and C{pwd}, no Twisted).

The schema and every validation live in L{aimx.core.config}; this module supplies the
bytes, the passwd lookups and the crash-safe write of spec/config.md §5.
"""

import contextlib
import os
import pwd

import tomli_w

from aimx.core.config import Config, load_text, to_toml
from aimx.errors import ConfigError

CONFIG_FILE = "config.toml"
CONFIG_MODE = 0o640


def config_path(config_dir: str) -> str:
    """The path of config.toml inside C{config_dir}."""
    return os.path.join(config_dir, CONFIG_FILE)


def _owner_exists(owner: str) -> bool:
    try:
        pwd.getpwnam(owner)
    except KeyError:
        return False
    return True


def load(config_dir: str, *, data_dir_override: str | None = None) -> tuple[Config, list[str]]:
    """Read, decode and validate config.toml.

    @param data_dir_override: C{--data-dir}/C{AIMX_DATA_DIR}, applied in memory only.
    @return: the config and the load warnings (to be logged by the caller).
    @raise ConfigError: missing, unreadable, non-UTF-8 or invalid file.
    """
    path = config_path(config_dir)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ConfigError(f"Config file not found at {path}. Run 'sudo aimx setup' first") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid UTF-8: {e}") from None
    config, warnings = load_text(text, path, owner_exists=_owner_exists)
    if data_dir_override is not None:
        config = config.with_data_dir(data_dir_override)
    return config, warnings


def render(config: Config, path: str) -> bytes:
    """The config.toml bytes of C{config}, after running the full load validation on them.

    @raise ConfigError: the text would be refused by L{load} (C{"<path>: <reason>"}).
    """
    text = tomli_w.dumps(to_toml(config))
    load_text(text, path)
    return text.encode("utf-8")


def write_atomic(config_dir: str, config: Config) -> None:
    """Replace config.toml with C{config}, atomically (spec/config.md §5).

    The whole file goes to C{.config.toml.tmp.<pid>} in the same directory with mode
    0640 (root:root when running as root), is fsynced, then renamed over config.toml;
    on any failure the temp file is removed. Comments and unknown keys are lost.

    The text is first validated exactly as the daemon's load would (L{render}),
    so a rewrite never leaves a file the daemon refuses to start with.

    @raise ConfigError: the new config would not load; nothing was written.
    @raise OSError: the write failed; config.toml is unchanged.
    """
    data = render(config, config_path(config_dir))
    tmp = os.path.join(config_dir, f".{CONFIG_FILE}.tmp.{os.getpid()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        with open(os.open(tmp, flags, CONFIG_MODE), "wb") as f:
            # Explicit: the creation mode is filtered by the umask (AIMX ends up 0600).
            os.fchmod(f.fileno(), CONFIG_MODE)
            if os.geteuid() == 0:
                os.fchown(f.fileno(), 0, 0)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, config_path(config_dir))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
