"""Attachment descriptors the daemon received with a SEND (L1: stat, readlink, read).

The client opened each file as itself (L{aimx.store.attachments}).  The daemon
learns where a descriptor really points (L{inspect}: its C{/proc/self/fd/N}
link, checked against the path as it is now), lets the outbound policy decide
(L{aimx.core.outpolicy.attachment_refusal}), and only then reads it
(L{read_attached}, bounded) -- from the descriptor itself, never by reopening
the path, so root never reads what the caller could not.
"""

import os
import stat

from aimx.core.compose import guess_type
from aimx.core.message import Attachment
from aimx.core.outpolicy import AttachedFile, Root

_CHUNK = 1 << 20


def inspect(fd: int, given: str) -> AttachedFile:
    """What the daemon knows of a received descriptor before anything is read.

    The real path is the C{/proc/self/fd} link; it counts only while the path
    still names this very file (same device and inode), so a file deleted,
    renamed or opened outside our mount namespace has none.

    @param given: the path the client named (for messages and the file name).
    """
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return AttachedFile(given, None, False)
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
        now = os.stat(real)
    except OSError:
        return AttachedFile(given, None, True)
    if not real.startswith("/") or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        return AttachedFile(given, None, True)
    return AttachedFile(given, real, True)


def real_roots(roots) -> tuple[Root, ...]:
    """The attachment roots, each with its real path (L{outpolicy.root_refusal}
    refuses a root that differs from it)."""
    return tuple(Root(root, os.path.realpath(root)) for root in roots)


def read_attached(fd: int, given: str, limit: int) -> Attachment:
    """Read an inspected, allowed descriptor whole, from offset 0 (its position is
    the client's too: C{pread} leaves it alone).

    @param limit: the most bytes it may hold.
    @return: the attachment, named by the base name of the path the client gave.
    @raise ValueError: it holds more than C{limit} bytes.
    """
    chunks, offset = [], 0
    while True:
        chunk = os.pread(fd, min(_CHUNK, limit + 1 - offset), offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
        if offset > limit:
            raise ValueError(f"attachment {given} is larger than the {limit} bytes left")
    name = os.path.basename(given) or "attachment"
    return Attachment(name, guess_type(name), b"".join(chunks))
