"""Mailbox directories on disk (L1): create or heal, adopt, wipe, count entries, list.

C{<data_dir>/inbox/<name>/} and C{<data_dir>/sent/<name>/} are 0700 and belong
to the mailbox owner (uid and primary gid); their parents C{inbox/} and
C{sent/} are root's, so a mailbox directory itself is reached by path, and what
is inside it only through its descriptor (L{aimx.store.safefs}).  Rules:
docs/security.md, "Files and ownership".
"""

import os
import stat

from aimx.errors import ConflictError, IOFailure
from aimx.store import safefs
from aimx.store.passwd import Owner


class OwnerConflict(OSError):
    """A mailbox directory belongs to a user other than its owner."""


def mailbox_dirs(data_dir: str, name: str) -> tuple[str, str]:
    """C{(<data_dir>/inbox/<name>, <data_dir>/sent/<name>)}."""
    return os.path.join(data_dir, "inbox", name), os.path.join(data_dir, "sent", name)


def prepare(directory: str, owner: Owner) -> list[str]:
    """Create a mailbox directory if needed; heal its owner and mode 0700 (ingest, send).

    A directory is never handed from one user to another: one that belongs to
    neither root, this process nor the owner is left alone.

    @return: warnings (a chown that failed, an owner that does not resolve).
    @raise OwnerConflict: it belongs to another user, or is not a directory.
    """
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    else:
        if not stat.S_ISDIR(st.st_mode):
            raise OwnerConflict(f"{directory} is not a directory")
        if stat.S_IMODE(st.st_mode) == 0o700 and (st.st_uid, st.st_gid) == (
            owner.uid,
            owner.gid,
        ):
            return []
        if st.st_uid not in (0, os.geteuid(), owner.uid) and owner.uid is not None:
            raise OwnerConflict(
                f"{directory} belongs to uid {st.st_uid}, not to the mailbox owner "
                f"'{owner.name}'; not changing its ownership"
            )
    return safefs.set_owner(directory, owner, 0o700)


def create_dirs(data_dir: str, name: str, owner: Owner) -> list[str]:
    """Create (or adopt) both mailbox directories, owner-owned, mode 0700 (MAILBOX-CREATE).

    Pre-existing directories are adopted when they already belong to the owner;
    anything else in the way is a conflict and nothing is touched.  Unlike
    L{prepare}, every failure is fatal.

    @return: the directories this call created (for L{remove_dirs} on rollback).
    @raise ConflictError: a path exists but is not a directory, or has other ids.
    @raise IOFailure: stat, mkdir, chown or chmod failed (created dirs removed).
    """
    paths = mailbox_dirs(data_dir, name)
    missing = []
    for path in paths:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            missing.append(path)
            continue
        except OSError as e:
            raise IOFailure(f"failed to stat {path}: {e.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise ConflictError(
                f"{path} exists but is not a directory; remove it before creating the mailbox"
            )
        if (st.st_uid, st.st_gid) != (owner.uid, owner.gid):
            raise ConflictError(
                f"{path} already exists with owner {st.st_uid}:{st.st_gid}, expected "
                f"{owner.uid}:{owner.gid}; run `chown -R {owner.uid}:{owner.gid} {path}` "
                "(and the matching sibling) and retry"
            )
    created: list[str] = []
    for path in missing:
        try:
            os.mkdir(path, 0o700)
        except OSError as e:
            remove_dirs(created)
            raise IOFailure(f"failed to create {path}: {e.strerror}") from None
        created.append(path)
    for path in paths:
        try:
            os.chown(path, owner.uid, owner.gid)
            os.chmod(path, 0o700)
        except OSError as e:
            remove_dirs(created)
            raise IOFailure(f"failed to chown {path}: {e.strerror}") from None
    return created


def remove_dirs(paths: list[str]) -> None:
    """Remove directories this process created (best effort; they are empty)."""
    for path in paths:
        try:
            os.rmdir(path)
        except OSError:
            pass


def count_entries(directory: str) -> int:
    """Entries directly inside C{directory} (dotfiles included); 0 when it is missing."""
    try:
        return len(os.listdir(directory))
    except FileNotFoundError:
        return 0


def wipe(directory: str) -> None:
    """Remove every entry inside C{directory}, keeping it: files, bundles, links as links.

    Entries are removed through the directory's descriptor (L{safefs.remove}),
    so no link inside is followed.

    @raise OSError: an entry could not be removed.
    """
    try:
        dir_fd = safefs.open_dir(directory)
    except FileNotFoundError:
        return
    try:
        for name, _ in list(safefs.scan(dir_fd)):
            safefs.remove(dir_fd, name)
    finally:
        os.close(dir_fd)


def inbox_dirs(data_dir: str) -> dict[str, int]:
    """Directory names under C{<data_dir>/inbox}, each with its owner uid."""
    try:
        entries = list(os.scandir(os.path.join(data_dir, "inbox")))
    except FileNotFoundError:
        return {}
    return {
        entry.name: entry.stat(follow_symlinks=False).st_uid
        for entry in entries
        if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False)
    }


def mailbox_names(config, data_dir: str) -> set[str]:
    """Every mailbox there is: configured, or a directory under C{inbox/} or C{sent/}."""
    names = {mb.name for mb in config.mailboxes} | set(inbox_dirs(data_dir))
    try:
        entries = list(os.scandir(os.path.join(data_dir, "sent")))
    except FileNotFoundError:
        entries = []
    names |= {e.name for e in entries
              if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)}
    return names
