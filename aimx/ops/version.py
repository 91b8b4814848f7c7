"""The version of this aimx (L0): C{aimx --version} and the VERSION command's fields.

The package version is always known.  The git commit and the build date are
known only when the build recorded them: C{setup.py}'s build step writes them
to C{aimx/_build.py} in the built package (a source checkout has no such file).
What is not known is not guessed: no commit is shown, the fields say
C{unknown}.
"""

import sys

from aimx import __version__

try:
    from aimx._build import BUILD_DATE, COMMIT
except ImportError:  # a source checkout, or an editable install
    COMMIT = BUILD_DATE = None


def version_line() -> str:
    """C{aimx <version>}, then C{ (<commit>)} when the build recorded one."""
    line = f"aimx {__version__ or 'dev'}"
    return f"{line} ({COMMIT})" if COMMIT else line


def version_fields() -> dict[str, str]:
    """C{tag}, C{git_hash}, C{target} and C{build_date} (the VERSION command's answer)."""
    import platform  # not for version_line: every CLI run builds its help from that

    return {
        "tag": __version__ or "dev",
        "git_hash": COMMIT or "unknown",
        "target": f"{platform.machine().lower()}-{sys.platform}",
        "build_date": BUILD_DATE or "unknown",
    }
