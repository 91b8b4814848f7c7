"""The data directory skeleton (L1): C{inbox/}, C{sent/} and the agent README.

C{README.md} tells agents browsing the directory what the files are; it is rewritten
at start-up whenever its first line (the version line) differs
and on every C{aimx setup}; its text is L{aimx.ops.datadir_readme}.
"""

import os

from aimx.ops import datadir_readme
from aimx.errors import ConfigError
from aimx.store import safefs

README = datadir_readme.render()


def readme_path(data_dir: str) -> str:
    """C{<data_dir>/README.md}."""
    return os.path.join(data_dir, "README.md")


def write_readme(data_dir: str) -> None:
    """Write the current README into C{data_dir}, replacing any other (mode 0644).

    C{aimx setup} calls this on every run; the file is
    written to a temporary name and renamed, so a reader never sees half of it.

    @raise OSError: the file cannot be written.
    """
    safefs.replace_path(readme_path(data_dir), README.encode("utf-8"), mode=0o644,
                        durable=False)


def refresh_readme(data_dir: str) -> bool:
    """Rewrite the README unless its first line is the current version marker.

    A missing file, an empty or unreadable one, or any other first line is
    rewritten; a current one is left alone (not even touched).

    @return: whether the file was written.
    @raise OSError: the file cannot be written.
    """
    try:
        with open(readme_path(data_dir), encoding="utf-8") as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError):
        first = None
    if datadir_readme.is_current(first):
        return False
    write_readme(data_dir)
    return True


def prepare(data_dir: str) -> list[str]:
    """Create the data dir layout and refresh README.md; return warnings.

    @raise ConfigError: the directories cannot be created.
    """
    for sub in ("", "inbox", "sent"):
        path = os.path.join(data_dir, sub)
        try:
            os.makedirs(path, exist_ok=True)
            os.chmod(path, 0o755)
        except OSError as e:
            raise ConfigError(f"cannot create data directory {path}: {e.strerror}") from None
    try:
        refresh_readme(data_dir)
    except OSError as e:
        return [f"Failed to refresh datadir README: {e}"]
    return []
