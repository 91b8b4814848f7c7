"""The caller's mail files, read directly with the MCP process's own uid (L3 helper).

Every path is opened one component at a time relative to a directory fd with
C{O_NOFOLLOW}, and only singly-linked regular files are read: whoever can write
inside a mailbox directory cannot point a read (by a root MCP, say) outside it
with a symlink, a hard link or a swapped directory.  The rules are those of the
daemon's resolver (spec/mcp.md §1 "Strict path resolver", spec/inbound.md §8).
"""

import os
import tomllib

from aimx.core import frontmatter
from aimx.store import mailboxes

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 16


class NotFound(Exception):
    """The id names no acceptable message file."""


def list_ids(directory: str) -> list[str]:
    """The message ids in a mailbox folder, newest first (descending byte order).

    A message is a regular file C{<id>.md} or a real directory C{<id>/}; dotfiles,
    symlinks and anything else are skipped, nothing is opened.

    @return: the ids; C{[]} when the directory is missing.
    @raise OSError: the directory cannot be opened (not a directory, no access...).
    """
    try:
        fd = os.open(directory, _DIR_FLAGS)
    except FileNotFoundError:
        return []
    ids = set()
    try:
        for entry in os.scandir(fd):
            name = entry.name
            if name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                ids.add(name)
            elif name.endswith(".md") and entry.is_file(follow_symlinks=False):
                ids.add(name[:-3])
    finally:
        os.close(fd)
    return sorted(ids, key=os.fsencode, reverse=True)


def open_message(directory: str, email_id: str) -> int:
    """Open the C{.md} of an id (L{aimx.store.mailboxes.open_email}'s rules).

    @param email_id: an id without C{/}, C{..}, C{\\} or NUL.
    @return: a file descriptor the caller closes.
    @raise NotFound: nothing acceptable by that id, or any error on the way.
    """
    fd = mailboxes.open_email(directory, email_id)
    if fd is None:
        raise NotFound()
    return fd


def read_message(fd: int) -> bytes:
    """The whole of an open message file; closes C{fd}.

    @raise OSError: reading failed.
    """
    with open(fd, "rb") as f:
        return f.read()


def read_frontmatter(fd: int) -> dict | None:
    """The frontmatter of an open message file, reading no further than needed; closes C{fd}.

    @return: the fields, or C{None} when the file has no C{+++}-delimited
        frontmatter (then it is not listed).
    @raise ValueError: the frontmatter is not TOML (or not UTF-8).
    @raise OSError: reading failed.
    """
    data = b""
    with open(fd, "rb") as f:
        while True:
            chunk = f.read(max(_CHUNK, len(data)))
            data += chunk
            try:
                return frontmatter.parse(data)[0]
            except (tomllib.TOMLDecodeError, UnicodeDecodeError):
                if not chunk:
                    raise
            except ValueError:
                if not chunk or not data.startswith(b"+++"):
                    return None
            # Not closed yet, or a +++ line inside a string: the rest may close it.
