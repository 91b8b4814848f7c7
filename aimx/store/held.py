"""Messages held for approval on disk (L1): the one place a hold's files change.

C{<data_dir>/held/} is root's (0700), with a directory per mailbox (0700) holding
C{<hold-id>.md} and C{<hold-id>.parts} (0600, L{aimx.core.heldmail}) and a
C{rejected/} directory for the holds rejected or expired.  Every state change
-- held (L{hold}), its mail-approval token spent or renewed (L{rewrite}),
approved and sent (L{settle} without a file), rejected or expired (L{settle}
with the decided C{.md}) -- goes through this module, so the
audit (issue 18 point 8) has one place to record them.  Files are reached
through L{aimx.store.safefs}: directory descriptors, no link followed, only
singly-linked regular files read, and reads capped.
"""

import contextlib
import errno
import os

from aimx.core import heldmail
from aimx.core.filenames import is_valid_id
from aimx.store import mailstore, safefs

HELD_DIR = "held"
REJECTED_DIR = "rejected"
MD, PARTS = ".md", ".parts"
#: The most bytes read of one hold file: a 5 MiB body and its fields, or 25 MiB of
#: parts, with room to spare.
READ_CAP = 64 * 1024 * 1024
_DIR_MODE, _FILE_MODE = 0o700, 0o600


def held_dir(data_dir: str) -> str:
    """C{<data_dir>/held}."""
    return os.path.join(data_dir, HELD_DIR)


def valid_name(mailbox: str) -> bool:
    """Whether C{mailbox} may name a directory under C{held/}."""
    return is_valid_id(mailbox) and not mailbox.startswith(".")


@contextlib.contextmanager
def _mailbox_dir(data_dir: str, mailbox: str, *, create: bool):
    """C{held/<mailbox>} opened (made first with C{create}); C{None} when absent."""
    if not valid_name(mailbox):
        raise ValueError(f"no held directory for mailbox name '{mailbox}'")
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(held_dir(data_dir), _DIR_MODE)
    try:
        top = safefs.open_dir(held_dir(data_dir))
    except FileNotFoundError:
        yield None
        return
    try:
        if create:
            with contextlib.suppress(FileExistsError):
                safefs.claim_dir(top, mailbox, _DIR_MODE)
        fd = safefs.open_subdir(top, mailbox)
    finally:
        os.close(top)
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


def hold(data_dir: str, mailbox: str, hold_id: str, md: bytes, parts: bytes) -> str:
    """Keep a new hold: its parts, then its C{.md} (whose presence makes it pending).

    @return: the C{.md} file's path.
    @raise OSError: it could not be written (nothing is left behind).
    """
    with _mailbox_dir(data_dir, mailbox, create=True) as fd:
        safefs.create_file(fd, hold_id + PARTS, parts, mode=_FILE_MODE)
        try:
            safefs.create_file(fd, hold_id + MD, md, mode=_FILE_MODE)
        except BaseException:
            safefs.remove(fd, hold_id + PARTS, ignore_errors=True)
            raise
    return os.path.join(held_dir(data_dir), mailbox, hold_id + MD)


def mailboxes(data_dir: str) -> list[str]:
    """The mailboxes with a held directory, sorted."""
    try:
        with safefs.directory(held_dir(data_dir)) as fd:
            return sorted(name for name, kind in safefs.scan(fd)
                          if kind == safefs.DIR and valid_name(name))
    except FileNotFoundError:
        return []


def pending(data_dir: str, mailbox: str) -> list[tuple[str, dict]]:
    """C{(hold id, frontmatter)} of a mailbox's pending holds, oldest first.

    A C{.md} whose frontmatter cannot be read is listed with C{{}} (it can
    still be rejected).
    """
    out = []
    with _mailbox_dir(data_dir, mailbox, create=False) as fd:
        if fd is None:
            return []
        names = sorted(name[: -len(MD)] for name, kind in safefs.scan(fd)
                       if kind == safefs.FILE and name.endswith(MD))
        for hold_id in filter(heldmail.is_hold_id, names):
            opened = _open(fd, hold_id + MD)
            if opened is None:
                continue
            try:
                fields = mailstore.read_fields(opened, READ_CAP)
            except (ValueError, OSError):
                fields = {}
            finally:
                os.close(opened)
            out.append((hold_id, fields))
    return out


def count(data_dir: str, mailbox: str) -> int:
    """How many holds of C{mailbox} are pending."""
    with _mailbox_dir(data_dir, mailbox, create=False) as fd:
        if fd is None:
            return 0
        return sum(1 for name, kind in safefs.scan(fd)
                   if kind == safefs.FILE and name.endswith(MD)
                   and heldmail.is_hold_id(name[: -len(MD)]))


def find(data_dir: str, hold_id: str) -> str | None:
    """The mailbox whose pending hold C{hold_id} is, or C{None}."""
    if not heldmail.is_hold_id(hold_id):
        return None
    for mailbox in mailboxes(data_dir):
        with _mailbox_dir(data_dir, mailbox, create=False) as fd:
            if fd is not None and safefs.exists(fd, hold_id + MD):
                return mailbox
    return None


def read(data_dir: str, mailbox: str, hold_id: str) -> tuple[bytes, bytes] | None:
    """A pending hold's C{.md} and C{.parts} files, or C{None} when it is not pending.

    @raise heldmail.Damaged: its C{.parts} file is missing or not a plain file.
    """
    with _mailbox_dir(data_dir, mailbox, create=False) as fd:
        if fd is None:
            return None
        md = _read(fd, hold_id + MD)
        if md is None:
            return None
        parts = _read(fd, hold_id + PARTS)
        if parts is None:
            raise heldmail.Damaged(f"hold {hold_id} has no parts file")
        return md, parts


def read_md(data_dir: str, mailbox: str, hold_id: str) -> bytes | None:
    """A pending hold's C{.md} file alone (its C{.parts} may be damaged), or C{None}."""
    with _mailbox_dir(data_dir, mailbox, create=False) as fd:
        return None if fd is None else _read(fd, hold_id + MD)


def rewrite(data_dir: str, mailbox: str, hold_id: str, md: bytes) -> bool:
    """Replace a pending hold's C{.md} (its mail-approval token spent or renewed).

    The caller keeps the hold from being decided meanwhile.

    @return: whether it was pending (nothing is written when not).
    """
    with _mailbox_dir(data_dir, mailbox, create=False) as fd:
        if fd is None or not safefs.exists(fd, hold_id + MD):
            return False
        safefs.replace_file(fd, hold_id + MD, md, mode=_FILE_MODE)
        return True


def settle(data_dir: str, mailbox: str, hold_id: str, decided: bytes | None) -> None:
    """A hold is no longer pending.

    @param decided: C{None}: it was approved and sent, its files go; else the
        decided C{.md} (L{heldmail.decided}): both files move to C{rejected/}.
    """
    with _mailbox_dir(data_dir, mailbox, create=False) as fd:
        if fd is None:
            return
        if decided is None:
            safefs.remove(fd, hold_id + MD)
            safefs.remove(fd, hold_id + PARTS)
            return
        with contextlib.suppress(FileExistsError):
            safefs.claim_dir(fd, REJECTED_DIR, _DIR_MODE)
        rejected = safefs.open_subdir(fd, REJECTED_DIR)
        if rejected is None:
            raise OSError(errno.ENOENT, f"{REJECTED_DIR} vanished")
        try:
            with contextlib.suppress(FileNotFoundError):
                safefs.move(fd, hold_id + PARTS, rejected)
            safefs.replace_file(rejected, hold_id + MD, decided, mode=_FILE_MODE)
            safefs.remove(fd, hold_id + MD)
        finally:
            os.close(rejected)


def _open(dir_fd: int, name: str) -> int | None:
    try:
        opened = safefs.open_regular(dir_fd, name)
    except (safefs.Refused, OSError):
        return None
    return None if opened is None else opened[0]


def _read(dir_fd: int, name: str) -> bytes | None:
    fd = _open(dir_fd, name)
    if fd is None:
        return None
    try:
        return safefs.read_up_to(fd, READ_CAP)
    finally:
        os.close(fd)
