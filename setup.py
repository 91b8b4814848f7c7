"""Packaging hook: record the git commit and the build date in the built package.

Everything else is in setup.cfg.  The build step writes C{aimx/_build.py}
(C{COMMIT}, C{BUILD_DATE}) next to the built modules, never into the source
tree; L{aimx.ops.version} reads it for C{aimx --version} and the VERSION
command.  Outside a git checkout, or without git, the commit is C{None}.
"""

import datetime
import os
import re
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def git_commit(root: str) -> str | None:
    """The short (12 hex digit) commit checked out in C{root}, or C{None}."""
    if not os.path.exists(os.path.join(root, ".git")):  # a directory, or a worktree's file
        return None
    try:
        result = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    if result.returncode != 0 or not re.fullmatch(r"[0-9a-f]{7,40}", commit):
        return None
    return commit


def stamp_text(commit: str | None, build_date: str) -> str:
    """The text of C{aimx/_build.py}."""
    return (
        '"""Written by setup.py when this package was built."""\n\n'
        f"COMMIT = {commit!r}\nBUILD_DATE = {build_date!r}\n"
    )


class BuildPy(build_py):
    """C{build_py} that also writes C{aimx/_build.py} into the build directory."""

    def run(self):
        super().run()
        if self.dry_run:
            return
        path = os.path.join(self.build_lib, "aimx", "_build.py")
        today = datetime.date.today().isoformat()
        with open(path, "w", encoding="utf-8") as f:
            f.write(stamp_text(git_commit(HERE), today))


if __name__ == "__main__":
    setup(cmdclass={"build_py": BuildPy})
