"""The caller's mail files, read directly with the MCP process's own uid (L3 helper).

Resolving and reading go through the daemon's own functions
(L{aimx.store.mailstore}, over L{aimx.store.safefs}): every path is opened one
component at a time relative to a directory fd with C{O_NOFOLLOW}, and only
singly-linked regular files are read, so whoever can write inside a mailbox
directory cannot point a read (by a root MCP, say) outside it with a symlink, a
hard link or a swapped directory (docs/security.md, "Files and ownership").
Unlike the daemon, the MCP reads a frontmatter to its end,
however long: it reads as the caller, files the caller could read anyway.
"""

import os
import tomllib

from aimx.store import mailstore

class NotFound(Exception):
    """The id names no acceptable message file."""


def open_message(directory: str, email_id: str) -> int:
    """Open the C{.md} of an id (L{aimx.store.mailstore.open_email}'s rules).

    @param email_id: an id without C{/}, C{..}, C{\\} or NUL.
    @return: a file descriptor the caller closes.
    @raise NotFound: nothing acceptable by that id, or any error on the way.
    """
    return open_message_at(directory, email_id)[0]


def open_message_at(directory: str, email_id: str) -> tuple[int, str]:
    """L{open_message}, with the path of the file opened (in its bundle or not).

    @return: a file descriptor the caller closes, and the path.
    @raise NotFound: as L{open_message}.
    """
    opened = mailstore.open_email_at(directory, email_id)
    if opened is None:
        raise NotFound()
    return opened


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
    try:
        return mailstore.read_fields(fd)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        raise
    except ValueError:
        return None
    finally:
        os.close(fd)
