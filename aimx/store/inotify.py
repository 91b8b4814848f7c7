"""Linux inotify for the mailbox directories (L1): the system calls and the event format.

The daemon's index (L{aimx.indexer}) watches each mailbox directory for entries
that are created, linked, written, renamed or removed.  Twisted's
C{twisted.internet.inotify} is not used: it drops the queue-overflow event
(C{wd = -1} is looked up as a watch and skipped), after which changes would go
unnoticed, and it stops reading I{every} watch once one watched directory is
deleted.  Here the reader gets every event, overflow included, and a lost watch
is only that watch.
"""

import ctypes
import ctypes.util
import errno
import os
import struct

import attrs

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000

IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

#: What a mailbox directory is watched for: any entry appearing, changing (written,
#: its link count or mode) or going, and the directory itself going.
MAILBOX_MASK = (
    IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
    | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK
)
#: Events after which a watch no longer reports what happens in its directory.
LOST = IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT

_HEADER = struct.Struct("=iIII")


@attrs.frozen
class Event:
    """One inotify event.

    @ivar wd: the watch (-1 for L{IN_Q_OVERFLOW}).
    @ivar name: the entry's name inside the watched directory (C{""} for the
        directory itself).
    """

    wd: int
    mask: int
    name: str


def parse(buffer: bytes) -> tuple[list[Event], bytes]:
    """The complete events at the start of C{buffer}, and what is left of it."""
    events = []
    offset = 0
    while len(buffer) - offset >= _HEADER.size:
        wd, mask, _cookie, size = _HEADER.unpack_from(buffer, offset)
        end = offset + _HEADER.size + size
        if end > len(buffer):
            break
        raw = buffer[offset + _HEADER.size : end].rstrip(b"\0")
        events.append(Event(wd, mask, os.fsdecode(raw)))
        offset = end
    return events, buffer[offset:]


class _Libc:
    def __init__(self):
        path = ctypes.util.find_library("c")
        self.libc = ctypes.CDLL(path, use_errno=True)
        self.libc.inotify_init1.argtypes = [ctypes.c_int]
        self.libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]


_libc = None


def _calls():
    global _libc
    if _libc is None:
        _libc = _Libc()
    return _libc.libc


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


def init() -> int:
    """A new non-blocking, close-on-exec inotify descriptor.

    @raise OSError: inotify is not available (not Linux, or out of instances).
    """
    try:
        calls = _calls()
    except (OSError, AttributeError, TypeError) as e:
        raise OSError(errno.ENOSYS, f"inotify unavailable: {e}") from None
    return _check(calls.inotify_init1(IN_NONBLOCK | IN_CLOEXEC), "inotify_init1")


def add_watch(fd: int, path: str, mask: int = MAILBOX_MASK) -> int:
    """Watch C{path} (a directory, not through a symlink with the default mask).

    @return: the watch descriptor.
    @raise OSError: e.g. C{ENOENT}, C{ENOTDIR}, C{ENOSPC} (no watches left).
    """
    return _check(_calls().inotify_add_watch(fd, os.fsencode(path), mask), "inotify_add_watch")


def rm_watch(fd: int, wd: int) -> None:
    """Stop a watch; one already gone is not an error."""
    _calls().inotify_rm_watch(fd, wd)


def read(fd: int, size: int = 65536) -> bytes:
    """Whatever events are queued; C{b""} when none are."""
    try:
        return os.read(fd, size)
    except BlockingIOError:
        return b""
