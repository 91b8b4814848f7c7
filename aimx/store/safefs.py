"""File operations a directory's owner cannot redirect (L1): directory fds, no links followed.

The daemon runs as root and works in mailbox directories that their owners
control: an owner may swap any entry for a symlink, a FIFO, a device or a hard
link to someone else's file at any moment.  So root never works by path inside
such a directory.  It opens the directory once and then every entry relative to
that descriptor, one component at a time, with C{O_NOFOLLOW}: what it opens,
creates, links or renames is the entry in I{that} directory, never what a link
points to, and a directory renamed or replaced after it was opened changes
nothing for the descriptor already held.  What is read is size-capped by the
caller (L{read_up_to}).  The MCP process, which reads as the caller, goes
through the same functions.

Writes are atomic: a new file is created exclusively under a temporary name,
given its owner and mode on the descriptor, written (and fsynced when durable)
and only then published, by a no-replace link (L{publish_link}) or a rename
over the old file (L{replace_file}), so no reader sees a partial or root-owned
file (docs/security.md, "Files and ownership").

Files in directories only root (or the caller) writes -- config.toml, keys,
the service file, the data directory's README, agent bundles, the test mail
drop -- are written the same way through L{replace_path} and L{create_path},
which open the parent directory by path (following links: a configured
directory may be one) and then work relative to it.
"""

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator

from aimx.store.passwd import Owner

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# A parent directory named by configuration (L{replace_path}): links followed.
_PARENT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOCTTY: a tty planted
# under a message name must not become root's controlling terminal.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20


class Refused(Exception):
    """An entry exists but is not acceptable: a symlink, not a regular file (or not
    a directory where one was asked for), a file with other hard links, or (for
    L{open_owned}, which gives the reason as the text) someone else's file."""


def open_dir(name: str, dir_fd: int | None = None) -> int:
    """Open a directory, never through a symlink at its last component.

    @param dir_fd: open C{name} relative to this directory (else by path).
    @return: a descriptor the caller closes.
    @raise OSError: C{ELOOP} for a symlink, C{ENOTDIR}, C{ENOENT}, ...
    """
    return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


@contextlib.contextmanager
def directory(name: str, dir_fd: int | None = None) -> Iterator[int]:
    """L{open_dir} as a context manager: the descriptor is closed on exit."""
    fd = open_dir(name, dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def open_subdir(dir_fd: int, name: str) -> int | None:
    """Open the real directory C{name} inside C{dir_fd}; C{None} when absent.

    @raise Refused: C{name} is a symlink or not a directory.
    @raise OSError: any other failure.
    """
    try:
        return open_dir(name, dir_fd)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise Refused() from None
        raise


def open_regular(dir_fd: int, name: str) -> tuple[int, os.stat_result] | None:
    """Open C{name} inside C{dir_fd} for reading: a singly-linked regular file only.

    Never through a symlink, never blocking on a FIFO.  A hard link would let a
    mailbox owner point root at a file of someone else's, so a file must have
    exactly one link.

    @return: the descriptor (the caller closes it) and its fstat; C{None} when
        there is no such entry.
    @raise Refused: a symlink, not a regular file, or a file with other links.
    @raise OSError: any other failure (permissions, ...).
    """
    try:
        return _open_single(dir_fd, name, _READ_FLAGS)
    except FileNotFoundError:
        return None


def _open_single(dir_fd: int, name: str, flags: int, mode: int = 0o600):
    """C{(fd, fstat)} of C{name} opened with C{flags}: a singly-linked regular file
    only (a hard link would let a mailbox owner point root at someone else's file).

    @raise Refused: a symlink (C{flags} hold C{O_NOFOLLOW}), not a regular file, or
        a file with other links.
    """
    try:
        fd = os.open(name, flags, mode, dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise Refused() from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise Refused()
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def open_owned(directory: str, name: str, uid: int) -> int:
    """Open C{name} under C{directory} for another process to read: a regular file of
    C{uid}'s only (a hook's stdin, opened by root for the mailbox owner).

    C{directory} is opened by path (its parent must be root's, as C{inbox/} is),
    then each component of C{name} relative to the previous descriptor with
    C{O_NOFOLLOW}, so no symlink the owner swaps in anywhere below it is followed;
    the file is opened without blocking (a FIFO has no writer) and kept only if
    fstat shows a regular file owned by C{uid}, so root never hands on what is not
    the owner's own.  Other links are allowed: a link the owner made to a file is
    still theirs.

    @param name: a relative path below C{directory} (C{<id>.md}, C{<id>/<id>.md}).
    @return: a blocking, close-on-exec descriptor the caller closes.
    @raise FileNotFoundError: an entry is missing.
    @raise Refused: a component is C{..}, C{.} or empty, or the file is not a
        regular file, or not C{uid}'s (the reason is the exception's text).
    @raise OSError: any other failure; C{ELOOP} for a symlink.
    """
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise Refused("not a path inside the mailbox directory")
    dir_fd = open_dir(directory)
    try:
        for part in parts[:-1]:
            parent, dir_fd = dir_fd, open_dir(part, dir_fd)
            os.close(parent)
        fd = os.open(parts[-1], _READ_FLAGS, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused("not a regular file")
        if st.st_uid != uid:
            raise Refused(f"owned by uid {st.st_uid}, not {uid}")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_up_to(fd: int, size: int) -> bytes:
    """At most C{size} bytes from C{fd}'s position, fewer only at end of file."""
    chunks = []
    while size > 0:
        chunk = os.read(fd, min(size, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


#: What L{scan} reports for an entry, never following a link.
DIR, FILE, OTHER = "dir", "file", "other"


def scan(dir_fd: int) -> Iterator[tuple[str, str]]:
    """The entries of an open directory, nothing opened and no link followed.

    @return: C{(name, kind)} for each entry: L{DIR} for a real directory,
        L{FILE} for a regular file, L{OTHER} for anything else (a symlink, a
        FIFO, a device, a socket).
    """
    with os.scandir(dir_fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                yield entry.name, DIR
            elif entry.is_file(follow_symlinks=False):
                yield entry.name, FILE
            else:
                yield entry.name, OTHER


def exists(dir_fd: int, name: str) -> bool:
    """Whether C{dir_fd} has an entry C{name} of any kind (a dangling symlink too)."""
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def remove(dir_fd: int, name: str, *, ignore_errors: bool = False) -> None:
    """Remove the entry C{name} of C{dir_fd}: a real directory with everything in
    it, anything else (a symlink included) as itself; no link is followed.

    @param ignore_errors: best effort: remove what can be removed, raise nothing.
    @raise OSError: it could not be removed.
    """
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            # rmtree with dir_fd walks by descriptor and never follows a link.
            shutil.rmtree(name, dir_fd=dir_fd, ignore_errors=ignore_errors)
        else:
            os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    except OSError:
        if not ignore_errors:
            raise


def write_all(fd: int, data: bytes) -> None:
    """Write all of C{data} to C{fd}."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def set_owner(target: int | str, owner: Owner, mode: int, *, strict: bool = False) -> list[str]:
    """Give C{target} to C{owner}'s uid and primary gid, then set C{mode}.

    chown comes first because it clears the setuid/setgid bits (chown(2)).  Ids that are this process's own are not chowned.  A failed chown is a
    warning (ingest and send: the 0700 mailbox directory still protects the
    file); with C{strict} it raises, except C{EPERM} in a process that is not
    root, which cannot give files away (the demo, a test run): then the file
    stays its own, as a new one would.

    @param target: a descriptor or a path (a path is only for directories whose
        parent is root's).
    @param owner: whose it becomes; one that does not resolve is a warning.
    @return: the warnings.
    @raise OSError: chmod failed, or chown with C{strict}.
    """
    warnings = []
    chown = os.fchown if isinstance(target, int) else os.chown
    chmod = os.fchmod if isinstance(target, int) else os.chmod
    if owner.uid is None:
        warnings.append(f"owner '{owner.name}' does not resolve; not changing ownership")
    elif (owner.uid, owner.gid) != (os.geteuid(), os.getegid()):
        try:
            chown(target, owner.uid, owner.gid)
        except OSError as e:
            if strict and (os.geteuid() == 0 or not isinstance(e, PermissionError)):
                raise
            warnings.append(f"chown to '{owner.name}' failed: {e.strerror}")
    chmod(target, mode)
    return warnings


def create_file(dir_fd: int, name: str, data: bytes, *, mode: int,
                owner: Owner | None = None, strict: bool = False,
                durable: bool = True) -> list[str]:
    """Create C{name} in C{dir_fd} exclusively, with C{owner} and C{mode}, holding C{data}.

    The owner and mode are set on the descriptor before anything is written
    (L{set_owner}); nothing existing is ever opened (C{O_EXCL|O_NOFOLLOW}).  On
    any failure the new file is removed.

    @param owner: whose the file becomes; C{None} leaves it this process's.
    @param strict: see L{set_owner}.
    @param durable: fsync the file before returning.
    @return: the warnings of L{set_owner}.
    @raise OSError: C{FileExistsError} when the name is taken, or a failed write.
    """
    fd = os.open(name, _CREATE_FLAGS, mode, dir_fd=dir_fd)
    try:
        if owner is None:
            os.fchmod(fd, mode)  # explicit: the creation mode went through the umask
            warnings = []
        else:
            warnings = set_owner(fd, owner, mode, strict=strict)
        write_all(fd, data)
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):  # the directory's owner may have removed it
            os.unlink(name, dir_fd=dir_fd)
        raise
    os.close(fd)
    return warnings


def append_file(dir_fd: int, name: str, data: bytes, *, mode: int) -> bool:
    """Append C{data} to C{name} in C{dir_fd} (created with C{mode} when absent), durably.

    C{O_APPEND} puts each write at the end, never over what is there; the file
    is made C{mode} on its descriptor and must be a singly-linked regular file.
    It is fdatasynced before returning, and the directory too when the file is new.

    @return: whether the file was created.
    @raise Refused: a symlink, not a regular file, or a file with other links.
    @raise OSError: a failed open or write.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd, st = _open_single(dir_fd, name, flags, mode)
    try:
        created = st.st_size == 0
        if stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
        write_all(fd, data)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    if created:
        os.fsync(dir_fd)
    return created


def publish_link(dir_fd: int, tmp: str, final: str) -> None:
    """Publish the file C{tmp} as C{final} without replacing anything, then drop C{tmp}.

    A hard link fails when C{final} exists, so a name taken meanwhile is never
    overwritten; C{tmp} is linked as the entry itself, never through a symlink
    the directory's owner may have swapped in for it.  C{tmp} is removed
    whatever happens.

    @raise FileExistsError: C{final} is taken.
    """
    try:
        os.link(tmp, final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)


def move(dir_fd: int, name: str, to_fd: int) -> None:
    """Move the entry C{name} of C{dir_fd} to the same name in C{to_fd} (one file
    system), replacing what is there; the entry itself moves, never what a link
    points to.

    @raise OSError: it could not be moved.
    """
    os.rename(name, name, src_dir_fd=dir_fd, dst_dir_fd=to_fd)


def claim_dir(dir_fd: int, name: str, mode: int) -> None:
    """Create the directory C{name} in C{dir_fd}: the name is ours once this returns.

    @raise FileExistsError: the name is taken (by anything, a symlink included).
    """
    os.mkdir(name, mode, dir_fd=dir_fd)


def replace_file(dir_fd: int, name: str, data: bytes, *, mode: int,
                 owner: Owner | None = None, strict: bool = True, tmp: str | None = None,
                 durable: bool = True) -> list[str]:
    """Replace C{name} in C{dir_fd} atomically with a file holding C{data}.

    The new content goes to C{tmp} (default C{.<name>.tmp.<pid>}) made by
    L{create_file}, which is then renamed over C{name} within the directory: a
    reader sees the old file or the new one, never a part, and never a file
    without its owner and mode.  A C{tmp} left by an earlier run is removed
    first; on failure C{tmp} is removed.

    @param owner: whose the new file is (L{set_owner}; C{strict} by default).
    @return: the warnings of L{set_owner}.
    @raise OSError: the write or the rename failed; C{name} is unchanged.
    """
    tmp = tmp or f".{name}.tmp.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dir_fd)
    warnings = create_file(dir_fd, tmp, data, mode=mode, owner=owner, strict=strict,
                           durable=durable)
    try:
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    return warnings


@contextlib.contextmanager
def _parent(path: str) -> Iterator[tuple[int, str]]:
    """The parent directory of C{path} opened by path (links followed), and the name."""
    parent, name = os.path.split(path)
    fd = os.open(parent or ".", _PARENT_FLAGS)
    try:
        yield fd, name
    finally:
        os.close(fd)


def replace_path(path: str, data: bytes, *, mode: int, owner: Owner | None = None,
                 tmp: str | None = None, durable: bool = True) -> list[str]:
    """L{replace_file} by path, for a file in a directory only root (or the caller) writes.

    The parent directory is opened by path, following links (a configured
    directory may be a symlink); from there on it is L{replace_file}.

    @param tmp: the temporary name, in the same directory.
    @return: the warnings of L{set_owner}.
    @raise OSError: the directory cannot be opened, or the write failed; the
        old file is unchanged.
    """
    with _parent(path) as (fd, name):
        return replace_file(fd, name, data, mode=mode, owner=owner, tmp=tmp, durable=durable)


def create_path(path: str, data: bytes, *, mode: int, durable: bool = True) -> None:
    """L{create_file} by path: C{path} is created exclusively (never through a link),
    with C{mode} from the moment it exists, in a directory opened as L{replace_path} does.

    @raise FileExistsError: C{path} exists (a symlink included).
    @raise OSError: the directory cannot be opened, or the write failed (then
        the new file is removed).
    """
    with _parent(path) as (fd, name):
        create_file(fd, name, data, mode=mode, durable=durable)


def rename_path(path: str, name: str) -> None:
    """Rename the file at C{path} to C{name} in the same directory, replacing what is
    there (the directory opened as L{replace_path} does: a file made whole elsewhere,
    such as a new index, put in place at once).

    @raise OSError: the directory cannot be opened, or the rename failed.
    """
    with _parent(path) as (fd, old):
        os.replace(old, name, src_dir_fd=fd, dst_dir_fd=fd)


def read_text(path: str) -> str:
    """The UTF-8 text of the file at C{path} (links followed, as for L{replace_path}).

    @raise OSError: the file cannot be read.
    @raise UnicodeDecodeError: it is not UTF-8.
    """
    with open(path, "rb") as f:
        return f.read().decode("utf-8")
