"""The data directory skeleton (L1): C{inbox/}, C{sent/} and the agent README.

C{README.md} tells agents browsing the directory what the files are; it is rewritten
at start-up whenever its first line (the version line) differs (spec/daemon.md §2).
"""

import os

from aimx.errors import ConfigError

README_VERSION_LINE = "<!-- aimx-readme-version: 1 -->"

README = f"""{README_VERSION_LINE}
# aimx mail data

This directory is managed by the aimx daemon.

- `inbox/<mailbox>/` holds received mail, one Markdown file per message with TOML
  frontmatter between `+++` lines. A message with attachments is a directory
  `<id>/` holding `<id>.md` and the attachment files.
- `sent/<mailbox>/` holds copies of mail sent from that mailbox.
- File names are `YYYY-MM-DD-HHMMSS-<subject-slug>.md` (UTC); the name without
  `.md` is the message id.
- Files starting with `.` are in the middle of being written: ignore them.
- `read = true|false` in the frontmatter may be edited by hand.
"""


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
    path = os.path.join(data_dir, "README.md")
    try:
        with open(path, encoding="utf-8") as f:
            current = f.readline().rstrip("\n")
    except (OSError, UnicodeDecodeError):
        current = None
    if current == README_VERSION_LINE:
        return []
    try:
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(README)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        return [f"Failed to refresh datadir README: {e}"]
    return []
