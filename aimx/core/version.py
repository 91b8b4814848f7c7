"""The version fields shared by C{aimx --version} and the VERSION command (L0)."""

import datetime
import platform
import sys

from aimx import __version__


def version_fields() -> dict[str, str]:
    """C{tag}, C{git_hash}, C{target} and C{build_date} (spec/control-socket.md §6.10)."""
    return {
        "tag": __version__ or "dev",
        "git_hash": "unknown",
        "target": f"{platform.machine().lower()}-{sys.platform}",
        "build_date": datetime.date.today().isoformat(),
    }
