"""The audit log's files (L1): append a batch of lines, read them back, drop old days.

C{<audit_dir>/YYYY-MM-DD.jsonl} (docs/guardrails.md, "Audit"): the directory is
made 0700, each file 0600, both the daemon's (root's).  Lines are appended with
C{O_APPEND} and the file fdatasynced after each batch (L{aimx.store.safefs.append_file});
what a line holds is L{aimx.core.audit}'s.
"""

import collections
import contextlib
import os
import re

from aimx.core import audit
from aimx.store import safefs

DIR_MODE, FILE_MODE = 0o700, 0o600
#: The most bytes of records one read returns (an AMP answer stays far below its cap).
READ_BYTES = 32 * 1024 * 1024
_DAY_FILE = re.compile(r"\d{4}-\d{2}-\d{2}\.jsonl")
_CHUNK = 1 << 20


def _open(directory: str, *, create: bool) -> int | None:
    """The audit directory opened (made first with C{create}, then kept 0700)."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.makedirs(directory, DIR_MODE)
    try:
        fd = safefs.open_dir(directory)
    except FileNotFoundError:
        return None
    if create:
        os.fchmod(fd, DIR_MODE)
    return fd


def append(directory: str, lines: list[tuple[str, bytes]]) -> None:
    """Append each C{(day file, line)} to its file, one write and one sync per file.

    @raise OSError: the directory or a file could not be written.
    """
    by_file: dict[str, list[bytes]] = {}
    for name, data in lines:
        by_file.setdefault(name, []).append(data)
    fd = _open(directory, create=True)
    try:
        for name, chunks in by_file.items():
            safefs.append_file(fd, name, b"".join(chunks), mode=FILE_MODE)
    finally:
        os.close(fd)


def days(directory: str) -> list[str]:
    """The day files, oldest first."""
    fd = _open(directory, create=False)
    if fd is None:
        return []
    try:
        return sorted(name for name, kind in safefs.scan(fd)
                      if kind == safefs.FILE and _DAY_FILE.fullmatch(name))
    finally:
        os.close(fd)


def prune(directory: str, oldest_kept: str) -> list[str]:
    """Remove the day files older than C{oldest_kept} (a day file's name).

    @return: the names removed.
    """
    old = [name for name in days(directory) if name < oldest_kept]
    if old:
        with safefs.directory(directory) as fd:
            for name in old:
                safefs.remove(fd, name, ignore_errors=True)
    return old


def read(directory: str, keep, limit: int, first_day: str | None = None,
         max_bytes: int = READ_BYTES) -> list[dict]:
    """The last C{limit} records that C{keep} accepts, oldest first, at most
    C{max_bytes} of them (as written).

    Files are read newest first, each line by line, and reading stops once
    C{limit} records (or C{max_bytes}) are found in the files read so far.

    @param keep: C{record -> bool} (the caller's filters and who it is).
    @param first_day: skip the day files before this one.
    """
    found: collections.deque = collections.deque()
    fd = _open(directory, create=False)
    if fd is None or limit <= 0:
        if fd is not None:
            os.close(fd)
        return []
    used = 0
    try:
        names = [n for n in sorted((name for name, kind in safefs.scan(fd)
                                    if kind == safefs.FILE and _DAY_FILE.fullmatch(name)),
                                   reverse=True) if first_day is None or n >= first_day]
        for name in names:
            kept = [(r, size) for r, size in _records(fd, name) if keep(r)]
            for record, size in reversed(kept):
                if len(found) >= limit or used + size > max_bytes:
                    return list(found)
                found.appendleft(record)
                used += size
    finally:
        os.close(fd)
    return list(found)


def replay(directory: str, first_day: str, visit) -> int:
    """Hand every record of the day files from C{first_day} on to C{visit}, oldest
    file first and in file order.

    @return: how many records were visited.
    """
    fd = _open(directory, create=False)
    if fd is None:
        return 0
    seen = 0
    try:
        names = sorted(name for name, kind in safefs.scan(fd)
                       if kind == safefs.FILE and _DAY_FILE.fullmatch(name)
                       and name >= first_day)
        for name in names:
            for record, _ in _records(fd, name):
                visit(record)
                seen += 1
    finally:
        os.close(fd)
    return seen


def _records(dir_fd: int, name: str):
    """C{(record, its line's length)} of one day file, in order; lines that do not
    read are skipped."""
    try:
        opened = safefs.open_regular(dir_fd, name)
    except (safefs.Refused, OSError):
        return
    if opened is None:
        return
    fd = opened[0]
    try:
        rest = b""
        while True:
            chunk = os.read(fd, _CHUNK)
            if not chunk:
                break
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            if len(rest) > audit.MAX_LINE:
                rest = b"x" * (audit.MAX_LINE + 1)  # too long to read: skipped whole
            for raw in lines:
                record = audit.parse_line(raw)
                if record is not None:
                    yield record, len(raw) + 1
    finally:
        os.close(fd)
