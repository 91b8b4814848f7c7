"""A daemon log file read by C{aimx logs} (L1): its last lines, then what is added.

The demo's log and OpenRC's C{/var/log/aimx/aimx.log} are files of lines in
L{aimx.ops.logline}'s file form.  L{tail} returns the last lines that pass a
filter (reading only the end of the file when nothing is filtered); L{follow}
then writes each complete line appended after that point, as C{tail -F} would:
a file replaced (rotated) is read again from its start, one cut short
(truncated) too.  It waits on inotify for the file's directory, and looks
every L{POLL_SECONDS} anyway (no inotify, or a change it did not report).
"""

import collections
import os
import select
from collections.abc import Callable

from aimx.store import inotify

#: The longest wait between two looks at a followed file.
POLL_SECONDS = 1.0
#: How much of a log file L{tail} reads from its end at a time.
_TAIL_BLOCK = 64 * 1024
_MASK = (inotify.IN_MODIFY | inotify.IN_ATTRIB | inotify.IN_CLOSE_WRITE | inotify.IN_CREATE
         | inotify.IN_MOVED_TO | inotify.IN_DELETE | inotify.IN_ONLYDIR)

Keep = Callable[[str], bool]


def _decode(line: bytes) -> str:
    return line.decode("utf-8", "replace")


def tail(path: str, lines: int, keep: Keep | None = None) -> tuple[list[str], int]:
    """The last C{lines} lines of C{path} that C{keep} passes, and where the file ended.

    @param keep: judges each line in order (a L{aimx.ops.logline.Filter.selector});
        C{None} keeps all, and then only the end of the file is read.
    @return: the lines (without line ends) and the offset to L{follow} from.
    @raise OSError: the file cannot be read.
    """
    with open(path, "rb") as f:
        if keep is None:
            return _last(f, lines), f.tell()
        kept = collections.deque(maxlen=lines)
        for raw in f:
            text = _decode(raw.rstrip(b"\n"))
            if keep(text):
                kept.append(text)
        return list(kept), f.tell()


def _last(f, lines: int) -> list[str]:
    """The last C{lines} lines of C{f}, reading back from its end only as far as needed;
    C{f} is left at its end."""
    end = f.seek(0, os.SEEK_END)
    if lines == 0:
        return []
    data, start = b"", end
    # One newline more than the lines wanted: the first line read may be partial.
    while start > 0 and data.count(b"\n") <= lines:
        step = min(_TAIL_BLOCK, start)
        start -= step
        f.seek(start)
        data = f.read(step) + data
    f.seek(end)
    found = data.split(b"\n")
    if found[-1] == b"":
        found.pop()
    if start > 0:
        found = found[1:]
    return [_decode(line) for line in found[-lines:]]


def follow(path: str, offset: int, write: Callable[[str], None], keep: Keep | None = None,
           stopped: Callable[[], bool] = lambda: False) -> None:
    """Write each line added to C{path} after C{offset} that C{keep} passes, until
    C{stopped()} (or Ctrl-C: C{KeyboardInterrupt}).

    @param write: given each line with its line end.
    @param stopped: looked at after each wake-up (a change, or L{POLL_SECONDS}).
    @raise OSError: C{path} cannot be opened at first.
    """
    f = open(path, "rb")
    f.seek(offset)
    notify = _watch(os.path.dirname(os.path.abspath(path)))
    try:
        _follow(path, f, write, keep or (lambda _: True), stopped, notify)
    finally:
        if notify is not None:
            os.close(notify)


def _watch(directory: str) -> int | None:
    """An inotify descriptor watching C{directory}, or C{None} (then polling only)."""
    try:
        fd = inotify.init()
    except OSError:
        return None
    try:
        inotify.add_watch(fd, directory, _MASK)
    except OSError:
        os.close(fd)
        return None
    return fd


def _follow(path, f, write, keep, stopped, notify) -> None:
    """L{follow}'s loop; it closes C{f} (or the file that replaced it) when done."""
    partial = b""
    try:
        while not stopped():
            data = f.read()
            if data:
                *complete, partial = (partial + data).split(b"\n")
                for raw in complete:
                    text = _decode(raw)
                    if keep(text):
                        write(text + "\n")
                continue
            replaced = _replaced(path, f)
            if replaced is not None:  # rotated: the old file was read to its end
                f.close()
                f, partial = replaced, b""
                continue
            if f.tell() > os.fstat(f.fileno()).st_size:  # truncated in place
                f.seek(0)
                partial = b""
                continue
            ready, _, _ = select.select([notify] if notify is not None else [], [], [],
                                        POLL_SECONDS)
            if ready:
                inotify.read(notify)
    finally:
        f.close()


def _replaced(path: str, f):
    """C{path} opened again when it is no longer the file C{f} reads, else C{None}."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    held = os.fstat(f.fileno())
    if (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino):
        return None
    try:
        return open(path, "rb")
    except OSError:
        return None
