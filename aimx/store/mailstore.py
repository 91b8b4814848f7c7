"""The mail store on disk (L1): mailbox directories, atomic publish, dedup.

Layout and rules: spec/inbound.md §7.6–7.8 and §8.  Every new file is written to a
dot-named temp file in the mailbox directory, given its owner and mode, and then
published under its final name with a no-replace link, so readers never see a
partial or root-owned file.  Callers serialise writes per mailbox (the daemon with a
DeferredLock, ``aimx ingest`` by being one process).

Dedup (spec README, "Dedup"): a copy is skipped only when a copy with the same
Message-ID I{and} body hash was stored in the mailbox within 24 h and the new one
is not more trusted than it, so a forged copy never suppresses the genuine one.
"""

import datetime
import itertools
import os
import shutil
import stat

from aimx.core import filenames, frontmatter
from aimx.core.received import Stored
from aimx.store import passwd, safefs
from aimx.store.passwd import Owner

DEDUP_WINDOW = datetime.timedelta(hours=24)
DEDUP_CAP = 100_000
_FRONTMATTER_PEEK = 16384


class OwnerConflict(OSError):
    """A mailbox directory belongs to a user other than its owner."""


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
            names = os.listdir(directory)
        except OSError:
            return seen
        for name in names:
            if name.startswith(".") or name[:10] < oldest:
                continue
            path = os.path.join(directory, name)
            if not name.endswith(".md"):
                path = os.path.join(path, name + ".md")
            fields = _peek_frontmatter(path)
            if not fields:
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
        return seen

    # -- writing ---------------------------------------------------------------

    def prepare_dir(self, directory: str, owner: Owner) -> list[str]:
        """Create a mailbox directory if needed; heal its owner and mode 0700.

        @raise OwnerConflict: it belongs to another user (not root, not the owner):
            it is never handed from one user to another.
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
        @raise OwnerConflict: the mailbox directory belongs to another user.
        """
        message_id, body_sha256 = fields.get("message_id", ""), fields.get("body_sha256", "")
        trusted = fields.get("trusted", "none")
        if self.is_duplicate(mailbox, message_id, body_sha256, trusted):
            return Stored(None, None)
        owner = self.owner(owner_name)
        directory = self.inbox_dir(mailbox)
        warnings = self.prepare_dir(directory, owner)
        received = self.now()
        base = filenames.base_stem(received, subject)
        def render(stem, entries=None):
            full = dict(fields, id=stem, received_at=frontmatter.rfc3339_utc(received))
            if full.get("date") is None:
                full["date"] = full["received_at"]
            if entries:
                full["attachments"] = entries
            return frontmatter.render(full, body)

        stem, path, more = self._publish(directory, base, owner, render, attachments)
        self._remember(mailbox, message_id, body_sha256, trusted, received)
        return Stored(
            stem, path, len(attachments), tuple(warnings + more),
            frontmatter.rfc3339_utc(received),
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
        stem, path, more = self._publish(directory, base, owner, render, attachments)
        return Stored(
            stem, path, len(attachments), tuple(warnings + more), frontmatter.rfc3339_utc(sent)
        )

    def prepare_sent(self, mailbox: str, owner_name: str) -> tuple[str, list[str]]:
        """Create or heal C{sent/<mailbox>} (owner, mode 0700), as every send does.

        @return: the directory and any warnings.
        """
        directory = os.path.join(self.data_dir, "sent", mailbox)
        return directory, self.prepare_dir(directory, self.owner(owner_name))

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
                if os.path.lexists(os.path.join(directory, stem)):
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
                return stem, os.path.join(directory, final), warnings
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
                    shutil.rmtree(stem, dir_fd=dfd, ignore_errors=True)
                    raise
                return stem, os.path.join(directory, stem, final), warnings
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


def _peek_frontmatter(path: str) -> dict | None:
    """The frontmatter at the start of a regular file; symlinks, FIFOs and devices
    the mailbox owner may have planted are never followed or read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return frontmatter.parse(os.read(fd, _FRONTMATTER_PEEK))[0]
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def _parse_time(text: str) -> datetime.datetime | None:
    try:
        value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else None
