"""Mailbox directories on disk (L1): create, wipe, count, resolve ids, mark read.

Used by the control commands (through the daemon's thread pool) and by the
CLI's root fallback.  Rules: spec/control-socket.md §6.2-6.5, spec/inbound.md §8
("Resolving an id inside a mailbox dir"), spec/frontmatter.md §5.
"""

import os
import shutil
import stat
import tomllib

import attrs

from aimx.core import frontmatter
from aimx.errors import ConflictError, IOFailure
from aimx.store import safefs
from aimx.store.passwd import Owner

_BAD_ID = ("..", "/", "\\", "\0")

#: How much of a message file the read-state check of L{count_messages} reads.
READ_STATE_BYTES = 64 * 1024
#: The largest message file L{mark_id} reads and rewrites.
MAX_MARK_BYTES = 64 * 1024 * 1024


def mailbox_dirs(data_dir: str, name: str) -> tuple[str, str]:
    """C{(<data_dir>/inbox/<name>, <data_dir>/sent/<name>)}."""
    return os.path.join(data_dir, "inbox", name), os.path.join(data_dir, "sent", name)


def create_dirs(data_dir: str, name: str, owner: Owner) -> list[str]:
    """Create (or adopt) both mailbox directories, owner-owned, mode 0700.

    Pre-existing directories are adopted when they already belong to the owner;
    anything else in the way is a conflict and nothing is touched.

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

    @raise OSError: an entry could not be removed.
    """
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


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


def count_messages(directory: str, read_state: bool = True) -> tuple[int, int]:
    """Messages in a mailbox directory and how many of them are unread.

    A message is a regular, singly-linked C{*.md} file, or a directory
    C{<stem>/} holding one as C{<stem>.md}; dotfiles and anything else
    (symlinks, FIFOs, devices, hard links) are ignored and never opened.  A
    message is read when its frontmatter, parsed from the first
    L{READ_STATE_BYTES} of the file, has the top-level key C{read = true}; a
    message whose frontmatter does not end within them or is not valid TOML
    still counts, as unread (the owner controls these files, the daemon that
    counts them is root).

    @param read_state: read each frontmatter to count unread messages (else the
        unread count is 0).
    @return: C{(total, unread)}; C{(0, 0)} when the directory is missing.
    """
    try:
        dir_fd = safefs.open_dir(directory)
    except OSError:
        return 0, 0
    total = unread = 0
    try:
        for entry in os.scandir(dir_fd):
            if entry.name.startswith("."):
                continue
            if entry.is_file(follow_symlinks=False) and entry.name.endswith(".md"):
                state = _read_state(dir_fd, entry.name, read_state)
            elif entry.is_dir(follow_symlinks=False):
                try:
                    bundle_fd = safefs.open_dir(entry.name, dir_fd)
                except OSError:
                    continue
                try:
                    state = _read_state(bundle_fd, entry.name + ".md", read_state)
                finally:
                    os.close(bundle_fd)
            else:
                continue
            if state is None:
                continue
            total += 1
            unread += state == "unread"
    finally:
        os.close(dir_fd)
    return total, unread


def _read_state(dir_fd: int, name: str, read_state: bool) -> str | None:
    """C{"read"}/C{"unread"} for a message file opened safely in C{dir_fd}.

    @return: C{None} when it is missing, not a regular file or a link; without
        C{read_state}, C{"read"} for any message (nothing is read).
    """
    try:
        opened = safefs.open_regular(dir_fd, name)
    except (safefs.Refused, OSError):
        return None
    if opened is None:
        return None
    fd, st = opened
    try:
        if not read_state:
            return "read"
        try:
            head = safefs.read_up_to(fd, READ_STATE_BYTES)
        except OSError:
            return "unread"
    finally:
        os.close(fd)
    if len(head) < st.st_size:
        # Cut the partial last line, so a "+++x" line cut after its "+++" is no delimiter.
        head = head[: head.rfind(b"\n") + 1]
    return "read" if _marked_read(head) else "unread"


def _marked_read(head: bytes) -> bool:
    """Whether the frontmatter at the start of C{head} has the top-level C{read = true}."""
    try:
        fields, _ = frontmatter.parse(head)
    except ValueError:  # no frontmatter, not closed within head, bad TOML or UTF-8
        return False
    return fields.get("read") is True


def valid_id(email_id: str) -> bool:
    """An email id is non-empty and has no C{..}, C{/}, C{\\} or NUL."""
    return bool(email_id) and not any(bad in email_id for bad in _BAD_ID)


@attrs.define
class _Email:
    """An opened message file: its directory fd, its name there, its fd and stat."""

    dir_fd: int
    name: str
    fd: int
    st: os.stat_result
    path: str

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.dir_fd)


def _open_email(directory: str, email_id: str) -> _Email | None:
    """Resolve an id (inbound.md §8) through directory fds; C{None} when absent.

    Every step opens one component relative to the previous directory fd with
    C{O_NOFOLLOW}, so the owner of the mailbox directory cannot redirect the
    lookup (or the later rewrite) out of it by swapping entries for symlinks.
    The mailbox directory itself is opened by path: its parent (C{inbox/}) is
    root's.

    @raise safefs.Refused: a candidate is a symlink, not a regular file / directory,
        or a hard-linked file.
    @raise OSError: any other failure (an entry vanished, permissions...).
    """
    name = email_id + ".md"
    mbfd = safefs.open_dir(directory)
    try:
        found = safefs.open_regular(mbfd, name)
        if found is not None:
            return _Email(os.dup(mbfd), name, *found, os.path.join(directory, name))
        bfd = safefs.open_subdir(mbfd, email_id)
        if bfd is None:
            return None
        try:
            found = safefs.open_regular(bfd, name)
        except BaseException:
            os.close(bfd)
            raise
        if found is None:
            os.close(bfd)
            return None
        return _Email(bfd, name, *found, os.path.join(directory, email_id, name))
    finally:
        os.close(mbfd)


def _find(directory: str, email_id: str) -> tuple["_Email | None", bool]:
    """L{_open_email}, with a refusal and any error while resolving as "not found"."""
    try:
        return _open_email(directory, email_id), False
    except safefs.Refused:
        return None, True
    except OSError:
        return None, False


def open_email(directory: str, email_id: str) -> int | None:
    """Open the C{.md} of an email id for reading, resolved as L{resolve_id} does.

    @return: a file descriptor the caller closes; C{None} when the id is absent,
        a candidate was refused, or resolving failed.
    """
    email, _ = _find(directory, email_id)
    if email is None:
        return None
    os.close(email.dir_fd)
    return email.fd


def resolve_id(directory: str, email_id: str) -> tuple[str | None, bool]:
    """Find the C{.md} of an email id inside a mailbox directory.

    C{<id>.md} first: if it exists it must be a regular, singly-linked file (not
    a symlink), with no fallback to the bundle; else C{<id>/<id>.md} under a real
    directory C{<id>/}.  Resolution goes through directory fds (L{_open_email});
    the returned path is informational — use L{mark_id} to act on the file.

    @param email_id: an id that passed L{valid_id}.
    @return: C{(path, False)}; C{(None, False)} when absent (or any error while
        resolving); C{(None, True)} when a candidate was refused.
    """
    email, refused = _find(directory, email_id)
    if email is None:
        return None, refused
    email.close()
    return email.path, False


def mark_id(
    directory: str, email_id: str, read: bool, now, owner: Owner
) -> tuple[str | None, bool]:
    """Resolve an id and rewrite its C{read}/C{read_at} (frontmatter.md §5).

    The file is read through the fd L{_open_email} opened, at most fstat's
    size and never above L{MAX_MARK_BYTES}; the new content replaces it
    atomically within that directory fd (L{safefs.replace_file}: mode 0600,
    the owner's ids, or the current file's when the owner does not resolve,
    fsynced).  Body bytes are unchanged.

    @param now: an aware datetime for C{read_at}.
    @return: like L{resolve_id}: C{(path, False)} once rewritten, C{(None, refused)}
        when nothing was found (then nothing was written).
    @raise IOFailure: unreadable or too large file, a file that changed while
        being read, bad frontmatter, or a failed write.
    """
    email, refused = _find(directory, email_id)
    if email is None:
        return None, refused
    try:
        _rewrite(email, read, now, owner)
    finally:
        email.close()
    return email.path, False


def _rewrite(email: _Email, read: bool, now, owner: Owner) -> None:
    path = email.path
    st = email.st
    if st.st_size > MAX_MARK_BYTES:
        raise IOFailure(
            f"refusing to mark {path}: {st.st_size} bytes, over the {MAX_MARK_BYTES}-byte limit"
        )
    try:
        data = safefs.read_up_to(email.fd, st.st_size)
        after = os.fstat(email.fd)
    except OSError as e:
        raise IOFailure(f"failed to read {path}: {e.strerror}") from None
    if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
        # Rewriting what was read would cut what the owner appended meanwhile.
        raise IOFailure(f"{path} changed while being read; try again")
    try:
        new = frontmatter.mark_read(data, now) if read else frontmatter.mark_unread(data)
    except tomllib.TOMLDecodeError as e:
        raise IOFailure(f"failed to parse frontmatter in {path}: {e}") from None
    except ValueError:
        raise IOFailure(f"malformed frontmatter in {path}") from None
    if owner.uid is None:
        owner = Owner(owner.name, st.st_uid, st.st_gid)
    try:
        safefs.replace_file(email.dir_fd, email.name, new, mode=0o600, owner=owner)
    except OSError as e:
        raise IOFailure(f"failed to write {path}: {e.strerror or e}") from None
