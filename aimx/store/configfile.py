"""Read and atomically edit C{<config_dir>/config.toml} (L1: disk and passwd, no Twisted).

The schema and every validation live in L{aimx.core.config}, the in-place edit of
the text in L{aimx.core.configedit}; this module supplies the bytes, the passwd
lookups and the crash-safe write (docs/configuration.md, "How the file changes").
"""

import os

import tomli_w

from aimx.core.config import Config, load_text, to_toml
from aimx.core.configedit import rewrite_text
from aimx.errors import ConfigError
from aimx.store import passwd, safefs

CONFIG_FILE = "config.toml"
CONFIG_MODE = 0o640


def config_path(config_dir: str) -> str:
    """The path of config.toml inside C{config_dir}."""
    return os.path.join(config_dir, CONFIG_FILE)


def _owner_exists(owner: str) -> bool:
    return passwd.owner(owner).uid is not None


def load(config_dir: str, *, data_dir_override: str | None = None) -> tuple[Config, list[str]]:
    """Read, decode and validate config.toml.

    @param data_dir_override: C{--data-dir}/C{AIMX_DATA_DIR}, applied in memory only.
    @return: the config and the load warnings (to be logged by the caller).
    @raise ConfigError: missing, unreadable, non-UTF-8 or invalid file.
    """
    path = config_path(config_dir)
    try:
        text = safefs.read_text(path)
    except FileNotFoundError:
        raise ConfigError(f"Config file not found at {path}. Run 'sudo aimx setup' first") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid UTF-8: {e}") from None
    config, warnings = load_text(text, path, owner_exists=_owner_exists)
    if data_dir_override is not None:
        config = config.with_data_dir(data_dir_override)
    return config, warnings


def _checked(text: str, path: str, config: Config) -> bytes:
    """C{text} as bytes, once the full load validation gives exactly C{config} back.

    @raise ConfigError: the text would be refused by L{load}, or loads as another
        config (C{"<path>: <reason>"}).
    """
    loaded, _ = load_text(text, path)
    intended = config.as_written()
    if loaded != intended:
        raise ConfigError(
            f"{path}: cannot edit in place: {_difference(loaded, intended)}; nothing was "
            "written (make the change by hand)"
        )
    return text.encode("utf-8")


def _difference(loaded: Config, intended: Config) -> str:
    """What a text that loads as C{loaded} gets wrong, for the refusal message."""
    got = [mb.name for mb in loaded.mailboxes]
    want = [mb.name for mb in intended.mailboxes]
    if got != want and sorted(got) == sorted(want):
        return (
            f"the edited file would list the mailboxes as {', '.join(got)} instead of "
            f"{', '.join(want)}"
        )
    for mb in intended.mailboxes:
        if loaded.mailbox(mb.name) != mb:
            return f"mailbox '{mb.name}' would not load as intended"
    return "the edited file would not load as intended"


def render(config: Config, path: str) -> bytes:
    """The bytes of a config.toml written from scratch for C{config}, validated.

    @raise ConfigError: the text would be refused by L{load} (C{"<path>: <reason>"}).
    """
    return _checked(tomli_w.dumps(to_toml(config)), path, config)


def _current_text(path: str) -> str | None:
    """config.toml's text, or C{None} when there is no file.

    @raise ConfigError: it is not UTF-8.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid UTF-8: {e}") from None


def write_atomic(config_dir: str, config: Config) -> None:
    """Make config.toml hold C{config}, atomically.

    An existing file is edited in place (L{rewrite_text}): only what differs
    changes, its comments, key order and layout are kept.  Without a file, one is
    written from scratch (L{render}).  The new text must load, with the daemon's
    full validation, as exactly C{config} (its in-memory C{data_dir} override
    aside), so a write never leaves a file the daemon refuses or reads otherwise.
    It goes to C{.config.toml.tmp.<pid>} in the same directory with mode 0640
    (root:root when running as root), is fsynced, then renamed over config.toml
    (L{safefs.replace_path}); on any failure the temp file is removed.

    @raise ConfigError: the current file does not load or cannot be edited in
        place, or the new config would not load; nothing was written.
    @raise OSError: the read or write failed; config.toml is unchanged.
    """
    path = config_path(config_dir)
    current = _current_text(path)
    if current is None:
        data = render(config, path)
    else:
        data = _checked(rewrite_text(current, path, config), path, config)
    # The mode is set explicitly: the creation mode is filtered by the umask.
    owner = passwd.owner("root") if os.geteuid() == 0 else None
    safefs.replace_path(path, data, mode=CONFIG_MODE, owner=owner)
