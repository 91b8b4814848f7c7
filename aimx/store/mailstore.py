"""Message files (L1): store, dedup, enumerate, count, resolve ids, read, mark read.

Layout and rules: docs/concepts.md, "Message files" and "Storage layout".  Every
new file is written to a dot-named temp file in the mailbox directory, given its
owner and mode, and then published under its final name with a no-replace link,
so readers never see a partial or root-owned file.  Callers serialise writes per
mailbox (the daemon with a DeferredLock, ``aimx ingest`` by being one process).

Everything inside a mailbox directory goes through L{aimx.store.safefs}: the
owner controls the directory, root must never be redirected by a link, a FIFO
or a hard link.  What root reads there is capped: the dedup scan and the
read/unread count parse the frontmatter of a file's head (L{read_fields}), MARK
reads at most fstat's size and never more than L{MAX_MARK_BYTES}.  The MCP
process lists and reads through the same functions, as the caller.

Dedup (docs/concepts.md): a copy is skipped only when a copy with the same
Message-ID I{and} body hash was stored in the mailbox within 24 h and the new one
is not more trusted than it, so a forged copy never suppresses the genuine one.
"""

import datetime
import itertools
import os
import tomllib
from collections.abc import Iterator

import attrs

from aimx.core import filenames, frontmatter
from aimx.core.received import Stored, Written
from aimx.errors import IOFailure
from aimx.store import mailboxdirs, passwd, safefs
from aimx.store.passwd import Owner

DEDUP_WINDOW = datetime.timedelta(hours=24)
DEDUP_CAP = 100_000
#: How much of a file the dedup scan reads for its frontmatter.
DEDUP_HEAD_BYTES = 16384
#: How much of a message file the read-state check of L{count_messages} reads.
READ_STATE_BYTES = 64 * 1024
#: The largest message file L{mark_id} reads and rewrites.
MAX_MARK_BYTES = 64 * 1024 * 1024
#: The first read of L{read_fields} without a limit; each later one doubles the head.
_FIRST_READ = 1 << 16


def _rank(trusted) -> int:
    """How far a copy is trusted, for dedup: a trusted copy outranks any other."""
    return 1 if trusted == "true" else 0


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class MailStore:
    """Mailboxes under C{<data_dir>/inbox} and C{<data_dir>/sent}.

    @param data_dir: the storage root.
    @param now: returns the current time as an aware UTC datetime.
    @param durable: fsync each new file and its directory before publishing.
    """

    def __init__(self, data_dir: str, *, now=utcnow, durable: bool = True):
        self.data_dir = data_dir
        self.now = now
        self.durable = durable
        self._seen: dict[str, dict[str, datetime.datetime]] = {}
        # directory -> (base, index of the next stem candidate to try): a burst of
        # same-subject mail in one second probes each candidate name once.
        self._next_stem: dict[str, tuple[str, int]] = {}

    def inbox_dir(self, mailbox: str) -> str:
        return os.path.join(self.data_dir, "inbox", mailbox)

    def owner(self, name: str) -> Owner:
        """Resolve an owner now: a user removed and their uid given to another must
        not keep receiving mail as the old one."""
        return passwd.owner(name)

    # -- dedup -----------------------------------------------------------------

    def is_duplicate(self, mailbox: str, message_id: str, body_sha256: str,
                     trusted: str) -> bool:
        """True when a copy with this Message-ID and body, at least as trusted, was
        stored in C{mailbox} within the window."""
        if not message_id:
            return False
        seen = self._dedup_cache(mailbox)
        key = (message_id, body_sha256)
        entry = seen.get(key)
        if entry is None:
            return False
        expiry, rank = entry
        if expiry <= self.now():
            del seen[key]
            return False
        return _rank(trusted) <= rank

    def _remember(self, mailbox: str, message_id: str, body_sha256: str, trusted: str,
                  received: datetime.datetime):
        if not message_id:
            return
        seen = self._dedup_cache(mailbox)
        if len(seen) >= DEDUP_CAP:
            now = self.now()
            for key in [k for k, (expiry, _) in seen.items() if expiry <= now]:
                del seen[key]
            if len(seen) >= DEDUP_CAP:
                return
        key = (message_id, body_sha256)
        rank = max(_rank(trusted), seen.get(key, (None, 0))[1])
        seen[key] = (received + DEDUP_WINDOW, rank)

    def _dedup_cache(self, mailbox: str) -> dict:
        seen = self._seen.get(mailbox)
        if seen is None:
            seen = self._seen[mailbox] = self._scan_recent(self.inbox_dir(mailbox))
        return seen

    def _scan_recent(self, directory: str) -> dict:
        """Load the copies stored in the last 24 h from the mailbox files: their
        Message-ID, C{body_sha256} and C{trusted} (files without a body hash cannot
        match anything)."""
        now = self.now()
        oldest = (now - DEDUP_WINDOW).strftime("%Y-%m-%d")
        seen: dict = {}
        try:
            dir_fd = safefs.open_dir(directory)
        except OSError:
            return seen
        try:
            for fd in _message_files(dir_fd, lambda name: name[:10] >= oldest):
                try:
                    fields = read_fields(fd, DEDUP_HEAD_BYTES)
                except (ValueError, OSError):
                    continue
                message_id, body = fields.get("message_id"), fields.get("body_sha256")
                received = _parse_time(fields.get("received_at", ""))
                if not (isinstance(message_id, str) and message_id and isinstance(body, str)):
                    continue
                if received is None or received + DEDUP_WINDOW <= now:
                    continue
                key = (message_id, body)
                rank = max(_rank(fields.get("trusted")), seen.get(key, (None, 0))[1])
                seen[key] = (received + DEDUP_WINDOW, rank)
        finally:
            os.close(dir_fd)
        return seen

    # -- writing ---------------------------------------------------------------

    def store_inbound(
        self,
        mailbox: str,
        owner_name: str,
        subject: str,
        fields: dict,
        body: str,
        attachments: tuple,
    ) -> Stored:
        """Store one inbound message unless it duplicates a recent copy.

        @param fields: frontmatter fields (C{message_id}, C{body_sha256} and
            C{trusted} decide dedup); C{id}, C{received_at}, C{attachments} and
            a missing C{date} are filled in here.
        @param attachments: L{aimx.core.message.Attachment} values.
        @return: the outcome; C{Stored.duplicate} when skipped.
        @raise aimx.store.mailboxdirs.OwnerConflict: the mailbox directory belongs to
            another user.
        """
        message_id, body_sha256 = fields.get("message_id", ""), fields.get("body_sha256", "")
        trusted = fields.get("trusted", "none")
        if self.is_duplicate(mailbox, message_id, body_sha256, trusted):
            return Stored(None, None)
        owner = self.owner(owner_name)
        directory = self.inbox_dir(mailbox)
        warnings = mailboxdirs.prepare(directory, owner)
        received = self.now()
        base = filenames.base_stem(received, subject)
        rendered = []

        def render(stem, entries=None):
            full = dict(fields, id=stem, received_at=frontmatter.rfc3339_utc(received))
            if full.get("date") is None:
                full["date"] = full["received_at"]
            if entries:
                full["attachments"] = entries
            rendered.append(full)
            return frontmatter.render(full, body)

        stem, path, more, stat = self._publish(directory, base, owner, render, attachments)
        self._remember(mailbox, message_id, body_sha256, trusted, received)
        written = None if stat is None else Written(
            stat, rendered[-1], frontmatter.body_bytes(body))
        return Stored(
            stem, path, len(attachments), tuple(warnings + more),
            frontmatter.rfc3339_utc(received), written,
        )

    def store_sent(
        self, mailbox: str, owner_name: str, subject: str, fields: dict, body: str,
        attachments: tuple,
    ) -> Stored:
        """Write the sent copy of an outbound message under C{sent/<mailbox>}.

        @param fields: frontmatter fields; C{id} and C{attachments} are filled in here.
        @param attachments: L{aimx.core.message.Attachment} values, stored in a bundle.
        """
        owner = self.owner(owner_name)
        directory, warnings = self.prepare_sent(mailbox, owner_name)
        sent = self.now()

        def render(stem, entries=None):
            full = dict(fields, id=stem)
            if entries:
                full["attachments"] = entries
            return frontmatter.render(full, body)

        base = filenames.base_stem(sent, subject)
        stem, path, more, _ = self._publish(directory, base, owner, render, attachments)
        return Stored(
            stem, path, len(attachments), tuple(warnings + more), frontmatter.rfc3339_utc(sent)
        )

    def prepare_sent(self, mailbox: str, owner_name: str) -> tuple[str, list[str]]:
        """Create or heal C{sent/<mailbox>} (owner, mode 0700), as every send does.

        @return: the directory and any warnings.
        """
        directory = os.path.join(self.data_dir, "sent", mailbox)
        return directory, mailboxdirs.prepare(directory, self.owner(owner_name))

    def _publish(self, directory, base, owner, render, attachments):
        if attachments:
            return self._publish_bundle(directory, base, owner, render, attachments)
        return self._publish_flat(directory, base, owner, render)

    def _candidates(self, directory: str, base: str):
        """Stem candidates for C{base}, skipping those this store already used."""
        last_base, start = self._next_stem.get(directory, (None, 0))
        start = start if last_base == base else 0
        for index, stem in itertools.islice(
            enumerate(filenames.stem_candidates(base)), start, None
        ):
            self._next_stem[directory] = (base, index + 1)
            yield stem

    def _publish_flat(self, directory, base, owner, render):
        with safefs.directory(directory) as dfd:
            for stem in self._candidates(directory, base):
                if safefs.exists(dfd, stem):
                    continue  # a bundle has this stem (a flat name is caught by the link)
                final = stem + ".md"
                tmp = f".{final}.tmp.{os.getpid()}"
                warnings = safefs.create_file(
                    dfd, tmp, render(stem), mode=0o600, owner=owner, durable=self.durable
                )
                try:
                    safefs.publish_link(dfd, tmp, final)
                except FileExistsError:
                    continue
                self._sync(dfd)
                stat = os.stat(final, dir_fd=dfd, follow_symlinks=False)
                return stem, os.path.join(directory, final), warnings, stat
        raise AssertionError("unreachable: stem candidates are endless")

    def _publish_bundle(self, directory, base, owner, render, parts):
        with safefs.directory(directory) as dfd:
            for stem in self._candidates(directory, base):
                try:
                    safefs.claim_dir(dfd, stem, 0o700)
                except FileExistsError:
                    continue
                final = stem + ".md"
                try:
                    # From here on only through this descriptor: the owner can rename
                    # or replace the bundle name, but not what we hold open.
                    with safefs.directory(stem, dfd) as bfd:
                        warnings = safefs.set_owner(bfd, owner, 0o700)
                        entries = self._write_attachments(bfd, stem, parts, owner, warnings)
                        warnings += safefs.replace_file(
                            bfd, final, render(stem, entries), mode=0o600, owner=owner,
                            strict=False, durable=self.durable,
                        )
                        self._sync(bfd)
                    self._sync(dfd)
                except BaseException:
                    safefs.remove(dfd, stem, ignore_errors=True)
                    raise
                return stem, os.path.join(directory, stem, final), warnings, None
        raise AssertionError("unreachable: stem candidates are endless")

    def _write_attachments(self, bfd, stem, parts, owner, warnings) -> list[dict]:
        entries = []
        taken, tried = {stem + ".md"}, {}
        for index, part in enumerate(parts):
            name = filenames.sanitize_attachment_name(part.filename_raw, index)
            name = filenames.dedupe_attachment_name(name, taken, tried)
            taken.add(name)
            warnings += safefs.create_file(
                bfd, name, part.data, mode=0o600, owner=owner, durable=self.durable
            )
            entries.append(
                {
                    "filename": name,
                    "content_type": part.content_type,
                    "size": len(part.data),
                    "path": name,
                }
            )
        return entries

    def _sync(self, dir_fd: int):
        if self.durable:
            os.fsync(dir_fd)


# -- reading -------------------------------------------------------------------


def message_entries(dir_fd: int) -> Iterator[tuple[str, bool]]:
    """The message candidates in a mailbox directory, nothing opened.

    @return: C{(name, bundle)} for each real directory C{<stem>/} (C{bundle}
        true) and each regular C{*.md} file; dotfiles (temp files), symlinks and
        anything else are skipped.
    """
    for name, kind in safefs.scan(dir_fd):
        if name.startswith("."):
            continue
        if kind == safefs.DIR:
            yield name, True
        elif kind == safefs.FILE and name.endswith(".md"):
            yield name, False


def _open_entry(dir_fd: int, name: str, bundle: bool) -> int | None:
    """The message file of a candidate of L{message_entries}: C{name}, or C{name/name.md}.

    @return: a descriptor the caller closes; C{None} when it is missing or
        refused (L{safefs.open_regular}), or on any error.
    """
    try:
        if not bundle:
            opened = safefs.open_regular(dir_fd, name)
        else:
            bundle_fd = safefs.open_subdir(dir_fd, name)
            if bundle_fd is None:
                return None
            try:
                opened = safefs.open_regular(bundle_fd, name + ".md")
            finally:
                os.close(bundle_fd)
    except (safefs.Refused, OSError):
        return None
    return None if opened is None else opened[0]


def _message_files(dir_fd: int, wanted=lambda name: True) -> Iterator[int]:
    """A descriptor of every message file in a mailbox directory whose entry name is
    C{wanted}, each closed when the next is asked for."""
    for name, bundle in message_entries(dir_fd):
        if not wanted(name):
            continue
        fd = _open_entry(dir_fd, name, bundle)
        if fd is None:
            continue
        try:
            yield fd
        finally:
            os.close(fd)


def read_fields(fd: int, limit: int | None = None) -> dict:
    """The frontmatter fields of an open message file, reading only as far as needed.

    Reads from the start of the file, a head at a time (the first 64 KiB, then
    doubling), until the frontmatter parses (L{frontmatter.parse}); a head that
    is not the whole file is cut after its last line end, so a C{+++x} line cut
    after its C{+++} is no delimiter.

    @param limit: read no more than this many bytes (root reading a file its
        owner controls); C{None}: as far as the frontmatter goes.
    @raise ValueError: no C{+++} opening line, no closing line within what may
        be read, invalid TOML (C{tomllib.TOMLDecodeError}) or UTF-8
        (C{UnicodeDecodeError}).
    @raise OSError: reading failed.
    """
    size = os.fstat(fd).st_size
    data = b""
    while True:
        want = max(_FIRST_READ, len(data))
        if limit is not None:
            want = min(want, limit - len(data))
        chunk = safefs.read_up_to(fd, want)
        data += chunk
        whole = len(chunk) < want or len(data) >= size
        head = data if whole else data[: data.rfind(b"\n") + 1]
        try:
            return frontmatter.parse(head)[0]
        except ValueError:
            # Not closed yet, or a +++ line inside a string: more may close it.
            if whole or len(data) == limit or not data.startswith(b"+++"):
                raise


def read_head(fd: int, limit: int, fields_limit: int = READ_STATE_BYTES) -> tuple[dict, bytes]:
    """The frontmatter fields of an open message file and its body, from the file's
    first C{limit} bytes (the index reads a message this way).

    The frontmatter must close within the first C{fields_limit} bytes, as for the
    read-state count (L{count_messages}); the body is what follows it within
    C{limit}, cut after its last line end when the file is longer.

    @return: the fields and the body bytes (after the blank separator line).
    @raise ValueError: no frontmatter closing within C{fields_limit} bytes,
        invalid TOML or UTF-8.
    @raise OSError: reading failed.
    """
    data = safefs.read_up_to(fd, limit)
    if len(data) == limit and os.fstat(fd).st_size > limit:
        data = data[: data.rfind(b"\n") + 1]
    fields, body = frontmatter.parse(data)
    if len(data) - len(body) > fields_limit:
        raise ValueError(f"the frontmatter does not end within {fields_limit} bytes")
    return fields, body


def list_ids(directory: str) -> list[str]:
    """The message ids in a mailbox folder, newest first (descending byte order).

    A message is a regular file C{<id>.md} or a real directory C{<id>/}
    (L{message_entries}); nothing is opened.

    @return: the ids; C{[]} when the directory is missing.
    @raise OSError: the directory cannot be opened (a symlink, not a directory,
        no access...).
    """
    try:
        dir_fd = safefs.open_dir(directory)
    except FileNotFoundError:
        return []
    try:
        ids = {name if bundle else name[:-3] for name, bundle in message_entries(dir_fd)}
    finally:
        os.close(dir_fd)
    return sorted(ids, key=os.fsencode, reverse=True)


def count_messages(directory: str, read_state: bool = True) -> tuple[int, int]:
    """Messages in a mailbox directory and how many of them are unread.

    A message is a regular, singly-linked C{*.md} file, or a directory
    C{<stem>/} holding one as C{<stem>.md}; dotfiles and anything else
    (symlinks, FIFOs, devices, hard links) are ignored and never read.  A
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
        for fd in _message_files(dir_fd):
            total += 1
            if read_state and not _marked_read(fd):
                unread += 1
    finally:
        os.close(dir_fd)
    return total, unread


def _marked_read(fd: int) -> bool:
    """Whether the frontmatter in the file's head has the top-level C{read = true}."""
    try:
        return read_fields(fd, READ_STATE_BYTES).get("read") is True
    except (ValueError, OSError):  # not closed within the head, bad TOML or UTF-8
        return False


# -- one message by id -----------------------------------------------------------


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
    """Resolve an id through directory fds; C{None} when absent.

    Every step opens one component relative to the previous directory fd with
    C{O_NOFOLLOW}, so the owner of the mailbox directory cannot redirect the
    lookup (or the later rewrite) out of it by swapping entries for symlinks.
    The mailbox directory itself is opened by path: its parent (C{inbox/}) is
    root's.

    @raise safefs.Refused: a candidate is a symlink, not a regular file /
        directory, or a hard-linked file.
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
    opened = open_email_at(directory, email_id)
    return None if opened is None else opened[0]


def open_email_at(directory: str, email_id: str) -> tuple[int, str] | None:
    """L{open_email}, also saying where the file was found.

    @return: a file descriptor the caller closes and the path it was opened at
        (C{<directory>/<id>.md}, or C{<directory>/<id>/<id>.md} in a bundle; for
        showing, as in L{resolve_id}); C{None} as for L{open_email}.
    """
    email, _ = _find(directory, email_id)
    if email is None:
        return None
    os.close(email.dir_fd)
    return email.fd, email.path


def resolve_id(directory: str, email_id: str) -> tuple[str | None, bool]:
    """Find the C{.md} of an email id inside a mailbox directory.

    C{<id>.md} first: if it exists it must be a regular, singly-linked file (not
    a symlink), with no fallback to the bundle; else C{<id>/<id>.md} under a real
    directory C{<id>/}.  Resolution goes through directory fds (L{_open_email});
    the returned path is informational — use L{mark_id} to act on the file.

    @param email_id: an id that passed L{aimx.core.filenames.is_valid_id}.
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
    """Resolve an id and rewrite its C{read}/C{read_at}.

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


def _parse_time(text: str) -> datetime.datetime | None:
    try:
        value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else None
