"""The derived index of one mailbox (L1, blocking): SQLite with FTS5, from the files.

The Markdown files stay the only source of truth.  The index holds, per
message of C{inbox/<name>} and C{sent/<name>}, what listings, counts, search
and threads need: a row of frontmatter values (L{Entry}), the message ids it
names (for threads), the new text of a reply (L{aimx.core.replytext}: without
quoted history and signature) and its subject, addresses and the start of its
body in a contentless FTS5 table (tokens only: 1.4 bytes per byte of text, against 3
with the text kept).  It lives in C{<data_dir>/index/<name>.sqlite}, in a
directory only the daemon's user can enter; it may be deleted at any time
and is rebuilt from the files (L{build}).

Each row carries the signature of its file (inode, size, mtime and ctime, see
L{_sig}): L{MailIndex.update} re-reads a file whose signature changed, and
L{MailIndex.verify} does so for the rows about to be returned, so a row
never says more (C{trusted}, C{read}, text) than its file does at that
moment.  Each folder's directory signature at the last full scan is kept too
(L{MailIndex.stale}): a directory changed behind the daemon's back is scanned
again (L{MailIndex.scan}).

Every file in a mailbox directory is reached through L{aimx.store.safefs}
(directory descriptors, no link followed, only singly-linked regular files
read) and read through L{aimx.store.mailstore.read_head}, at most
L{HEAD_BYTES} of it, as root reads a file its owner controls.  The index's
own files are root's, in a root-only directory, and SQLite opens them by path.

FTS5 contentless tables cannot forget a row's tokens without its old text,
which a changed file no longer has: a row whose text changes gets a new rowid
and its old tokens stay as garbage nothing joins to (counted; past
L{MailIndex.garbage_limit} the caller rebuilds).  Marking read changes no
text, so it updates the row in place.

Not thread-safe: one caller at a time per index (the daemon serialises each
mailbox with a lock and runs this in its thread pool).
"""

import contextlib
import errno
import hashlib
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterable

import attrs

from aimx.core import mailquery, replytext
from aimx.store import mailstore, safefs

SCHEMA = "aimx-mailindex-3"
FOLDERS = ("inbox", "sent")
INDEX_DIR = "index"
#: How much of a message file indexing reads: frontmatter and body start.
HEAD_BYTES = 1 << 20
#: How much of a body (characters) is searchable.
BODY_CHARS = 64 * 1024
#: The longest new text (characters) a thread returns per message.
TEXT_CHARS = 64 * 1024
#: How much of a file a snippet is cut from.
SNIPPET_BYTES = 64 * 1024
#: Message ids of one message kept for threads (its own, In-Reply-To, References).
MAX_LINKS = 64
#: Matches of the highest rowids a search sorts first (L{MailIndex._matching}).
SEARCH_WINDOW = 2000
#: The most messages one thread walk visits.
THREAD_ROWS = 5000
#: A file's row is re-read at most this many times while answering one query.
_PASSES = 3
_INCOMPLETE = "incomplete"

_SCHEMA_SQL = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE dir(folder INTEGER PRIMARY KEY, sig TEXT NOT NULL);
CREATE TABLE msg(
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    folder INTEGER NOT NULL,
    name TEXT NOT NULL,
    bundle INTEGER NOT NULL,
    sig TEXT NOT NULL,
    ok INTEGER NOT NULL,
    read INTEGER NOT NULL,
    date_us INTEGER,
    message_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    sender_fold TEXT NOT NULL,
    recipients TEXT NOT NULL,
    subject TEXT NOT NULL,
    date TEXT NOT NULL,
    trusted TEXT NOT NULL,
    delivery_status TEXT NOT NULL,
    attachments INTEGER NOT NULL,
    text_hash INTEGER NOT NULL
);
CREATE UNIQUE INDEX msg_name ON msg(folder, name);
CREATE INDEX msg_read ON msg(folder, read);
CREATE INDEX msg_thread ON msg(thread_id);
CREATE TABLE newtext(row INTEGER PRIMARY KEY, text TEXT NOT NULL);
CREATE TABLE link(msgid TEXT NOT NULL, row INTEGER NOT NULL);
CREATE INDEX link_msgid ON link(msgid);
CREATE INDEX link_row ON link(row);
CREATE VIRTUAL TABLE fts USING fts5(
    subject, sender, recipients, body,
    content='', tokenize='unicode61 remove_diacritics 2'
);
"""

_COLUMNS = (
    "rowid, folder, name, bundle, sig, read, message_id, thread_id, sender, recipients, "
    "subject, date, trusted, delivery_status, attachments"
)


class IndexMissing(Exception):
    """There is no index file."""


class IndexBroken(Exception):
    """The index file is not an index of this version (or is damaged)."""


@attrs.frozen
class Entry:
    """One message as the index (checked against its file) has it.

    @ivar folder: C{inbox} or C{sent}.
    @ivar id: the file stem.
    @ivar from_: the frontmatter C{from}; C{to} is C{to} (and C{cc}, comma-joined).
    @ivar read: the frontmatter has C{read = true}.
    @ivar attachments: the frontmatter lists attachments.
    @ivar snippet: search results only: a piece of the body around a match.
    @ivar text: threads only: the message's new text (L{aimx.core.replytext}).
    """

    folder: str
    id: str
    from_: str
    to: str
    subject: str
    date: str
    read: bool
    trusted: str
    thread_id: str
    message_id: str
    delivery_status: str
    attachments: bool
    snippet: str = ""
    text: str | None = None
    rowid: int = attrs.field(default=0, eq=False, repr=False)
    bundle: bool = attrs.field(default=False, eq=False, repr=False)
    sig: str = attrs.field(default="", eq=False, repr=False)


@attrs.frozen
class Counts:
    """Messages in the inbox, unread ones among them, messages in sent."""

    total: int
    unread: int
    sent: int


def index_dir(data_dir: str) -> str:
    """C{<data_dir>/index}: the daemon's, mode 0700."""
    return os.path.join(data_dir, INDEX_DIR)


def index_path(data_dir: str, mailbox: str) -> str:
    """C{<data_dir>/index/<mailbox>.sqlite}."""
    return os.path.join(index_dir(data_dir), mailbox + ".sqlite")


def folder_dirs(data_dir: str, mailbox: str) -> dict[str, str]:
    """C{{"inbox": <data_dir>/inbox/<mailbox>, "sent": <data_dir>/sent/<mailbox>}}."""
    return {folder: os.path.join(data_dir, folder, mailbox) for folder in FOLDERS}


def prepare_dir(data_dir: str) -> None:
    """Create C{<data_dir>/index} (mode 0700, this process's) or check and heal it.

    @raise OSError: it cannot be created, or is not a directory of this process's
        user (a symlink, say): the index then stays off.
    """
    path = index_dir(data_dir)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise OSError(errno.EPERM, f"{path} is not a directory of uid {os.geteuid()}")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)


def remove(path: str) -> None:
    """Delete an index file and its SQLite companions (none of them open here)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + suffix)


def _sig(st: os.stat_result) -> str:
    """A file's signature: any write, rename over it or touch changes it (ctime
    cannot be set back)."""
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def _dir_sig(path: str) -> str:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return ""
    if not stat.S_ISDIR(st.st_mode):
        return ""
    return f"{st.st_ino}:{st.st_mtime_ns}"


def _acceptable(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 1


def _lookup(dir_fd: int, email_id: str):
    """Where the message C{email_id} is, as L{mailstore.open_email} resolves it.

    @return: C{(bundle, stat)}; L{_INCOMPLETE} for a bundle directory without
        its C{.md} (yet); C{None} when there is no acceptable message.
    """
    if not email_id or email_id.startswith(".") or "/" in email_id:
        return None
    name = email_id + ".md"
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        pass
    except OSError:
        return None
    else:
        # An existing flat candidate decides: no fallback to the bundle.
        return (False, st) if _acceptable(st) else None
    try:
        bundle_fd = safefs.open_subdir(dir_fd, email_id)
    except (safefs.Refused, OSError):
        return None
    if bundle_fd is None:
        return None
    try:
        st = os.stat(name, dir_fd=bundle_fd, follow_symlinks=False)
    except FileNotFoundError:
        return _INCOMPLETE
    except OSError:
        return None
    finally:
        os.close(bundle_fd)
    return (True, st) if _acceptable(st) else None


def _open(dir_fd: int, email_id: str, bundle: bool) -> tuple[int, os.stat_result] | None:
    """Open a message file for reading (safefs rules); C{None} when gone or refused."""
    name = email_id + ".md"
    try:
        if not bundle:
            return safefs.open_regular(dir_fd, name)
        bundle_fd = safefs.open_subdir(dir_fd, email_id)
        if bundle_fd is None:
            return None
        try:
            return safefs.open_regular(bundle_fd, name)
        finally:
            os.close(bundle_fd)
    except (safefs.Refused, OSError):
        return None


def _ids(value) -> list[str]:
    """Message ids of a frontmatter value: whitespace-separated, brackets or not."""
    if not isinstance(value, str):
        return []
    return [token for token in (t.strip("<>") for t in value.split()) if token]


@attrs.frozen
class _Record:
    """What indexing takes from one file."""

    ok: bool
    read: bool
    date_us: int | None
    message_id: str
    thread_id: str
    sender: str
    recipients: str
    subject: str
    date: str
    trusted: str
    delivery_status: str
    attachments: bool
    links: tuple[str, ...]
    body: str
    #: A reply's new text; C{None} for a message that is not a reply (its body).
    new_text: str | None
    text_hash: int


_BROKEN = _Record(False, False, None, "", "", "", "", "", "", "none", "", False, (), "", None, 0)


def _hash(*parts) -> int:
    digest = hashlib.blake2b(digest_size=8)
    for part in parts:
        digest.update(part if isinstance(part, bytes) else str(part).encode(
            "utf-8", "surrogatepass"))
        digest.update(b"\0")
    return int.from_bytes(digest.digest(), "big", signed=True)


def _record(fields: dict, body: bytes) -> _Record:
    def text(key: str) -> str:
        value = fields.get(key)
        return value if isinstance(value, str) else ""

    recipients = ", ".join(v for v in (text("to"), text("cc")) if v)
    references = _ids(fields.get("references"))
    if len(references) > MAX_LINKS - 2:
        # The root (the first) and the nearest parents matter for threads.
        references = references[:1] + references[-(MAX_LINKS - 3):]
    links = dict.fromkeys([*_ids(text("message_id")), *_ids(text("in_reply_to")), *references])
    reply = bool(_ids(text("in_reply_to")) or references)
    whole = body.decode("utf-8", "replace")
    return _Record(
        ok=True,
        read=fields.get("read") is True,
        date_us=mailquery.timestamp_us(fields.get("date")),
        message_id=text("message_id"),
        thread_id=text("thread_id"),
        sender=text("from"),
        recipients=recipients,
        subject=text("subject"),
        date=text("date"),
        trusted=text("trusted") or "none",
        delivery_status=text("delivery_status"),
        attachments=bool(fields.get("attachments")),
        links=tuple(links)[:MAX_LINKS],
        body=whole[:BODY_CHARS],
        new_text=replytext.new_text(whole)[:TEXT_CHARS] if reply else None,
        text_hash=_hash(text("subject"), text("from"), recipients, reply, body),
    )


def _read(fd: int) -> _Record:
    """Index one open message file (closes C{fd})."""
    try:
        fields, body = mailstore.read_head(fd, HEAD_BYTES)
    except (ValueError, OSError):
        return _BROKEN  # still counted (as unread), as count_messages does
    finally:
        os.close(fd)
    return _record(fields, body)


def _connect(path: str) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA temp_store=MEMORY")
    return con


def _entry(row) -> Entry:
    (rowid, folder, name, bundle, sig, read, message_id, thread_id, sender, recipients,
     subject, date, trusted, delivery_status, attachments) = row
    return Entry(
        folder=FOLDERS[folder], id=name, from_=sender, to=recipients, subject=subject,
        date=date, read=bool(read), trusted=trusted, thread_id=thread_id,
        message_id=message_id, delivery_status=delivery_status,
        attachments=bool(attachments), rowid=rowid, bundle=bool(bundle), sig=sig,
    )


class MailIndex:
    """An open index of one mailbox.

    @param con: the SQLite connection (autocommit; transactions explicit).
    @param path: the index file.
    @param dirs: folder name -> directory (L{folder_dirs}).
    """

    def __init__(self, con: sqlite3.Connection, path: str, dirs: dict[str, str]):
        self.con = con
        self.path = path
        self.dirs = dirs
        try:
            st = os.stat(path)
            self._identity = (st.st_dev, st.st_ino)
        except OSError:
            self._identity = None

    # -- life cycle --------------------------------------------------------------

    @classmethod
    def open(cls, path: str, dirs: dict[str, str]) -> "MailIndex":
        """Open an existing index.

        @raise IndexMissing: there is no file at C{path}.
        @raise IndexBroken: it is not an index of this version, or damaged.
        """
        if not os.path.exists(path):
            raise IndexMissing(path)
        con = _connect(path)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            schema = con.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if schema is None or schema[0] != SCHEMA:
                raise IndexBroken(f"{path}: not an index of {SCHEMA}")
            con.execute("SELECT count(*) FROM dir").fetchone()
        except (sqlite3.Error, IndexBroken) as e:
            con.close()
            raise IndexBroken(str(e)) from None
        return cls(con, path, dirs)

    @classmethod
    def build(cls, path: str, dirs: dict[str, str],
              progress: Callable[[int, int], None] | None = None) -> str:
        """Build a new index from the files, beside C{path}; L{install} puts it in place.

        Each folder's directory signature is taken before it is read, so a
        change made while building is seen by L{stale} afterwards.

        @param progress: called with C{(done, total)} messages now and then.
        @return: the new file's path.
        """
        tmp = f"{path}.build.{os.getpid()}.{threading.get_ident()}"
        remove(tmp)
        con = _connect(tmp)
        try:
            con.execute("PRAGMA journal_mode=OFF")
            con.execute("PRAGMA synchronous=OFF")
            con.executescript(_SCHEMA_SQL)
            index = cls(con, tmp, dirs)
            sigs = [_dir_sig(dirs[folder]) for folder in FOLDERS]
            # Both folders in id order, so rowids follow ids (see _matching).
            plan = sorted((name, number, bundle) for number, folder in enumerate(FOLDERS)
                          for name, bundle in index._scan_names(folder))
            total = len(plan)
            if progress is not None:
                progress(0, total)
            con.execute("BEGIN")
            with index._folder_fd("inbox") as inbox_fd, index._folder_fd("sent") as sent_fd:
                for done, (name, number, bundle) in enumerate(plan, 1):
                    index._add((inbox_fd, sent_fd)[number], number, name, bundle)
                    if progress is not None and done % 500 == 0:
                        progress(done, total)
            con.executemany("INSERT INTO dir VALUES (?, ?)", enumerate(sigs))
            con.execute("INSERT INTO meta VALUES ('schema', ?), ('garbage', '0')", (SCHEMA,))
            con.execute("COMMIT")
            if progress is not None:
                progress(total, total)
            con.execute("PRAGMA journal_mode=WAL")
        except BaseException:
            con.close()
            remove(tmp)
            raise
        con.close()
        return tmp

    @staticmethod
    def install(built: str, path: str) -> None:
        """Put a file made by L{build} in place of C{path}.

        No connection may be open on the old file (its WAL would be applied to
        the new one): close it first.
        """
        if os.path.dirname(built) != os.path.dirname(path):
            raise ValueError(f"{built} is not beside {path}")
        remove(path)
        safefs.rename_path(built, os.path.basename(path))

    def close(self) -> None:
        self.con.close()

    def current(self) -> bool:
        """Whether C{path} is still the file this index opened (not deleted or replaced)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._identity

    @property
    def garbage(self) -> int:
        """Token sets of rows that are gone (see the module docstring)."""
        row = self.con.execute("SELECT value FROM meta WHERE key='garbage'").fetchone()
        return int(row[0]) if row else 0

    def garbage_limit(self) -> bool:
        """Whether enough garbage piled up that a rebuild is worth it."""
        live = self.con.execute("SELECT count(*) FROM msg").fetchone()[0]
        return self.garbage > max(10_000, live)

    # -- keeping up with the files ---------------------------------------------

    @contextlib.contextmanager
    def _folder_fd(self, folder: str):
        try:
            fd = safefs.open_dir(self.dirs[folder])
        except OSError:
            fd = None
        try:
            yield fd
        finally:
            if fd is not None:
                os.close(fd)

    def _scan_names(self, folder: str) -> list[tuple[str, bool]]:
        """C{(id, bundle)} of every message candidate in a folder (nothing opened)."""
        with self._folder_fd(folder) as dir_fd:
            if dir_fd is None:
                return []
            found: dict[str, bool] = {}
            for name, bundle in mailstore.message_entries(dir_fd):
                if bundle:
                    found.setdefault(name, True)
                else:
                    found[name[:-3]] = False  # the flat file wins, as open_email does
        return sorted(found.items())

    def _add(self, dir_fd, folder: int, name: str, bundle: bool) -> None:
        """Read one file and insert its row (no row is there)."""
        if dir_fd is None:
            return
        opened = _open(dir_fd, name, bundle)
        if opened is None:
            return
        fd, st = opened
        self._insert(folder, name, bundle, _sig(st), _read(fd))

    def _insert(self, folder: int, name: str, bundle: bool, sig: str, record: _Record) -> None:
        cur = self.con.execute(
            "INSERT INTO msg(folder, name, bundle, sig, ok, read, date_us, message_id, "
            "thread_id, sender, sender_fold, recipients, subject, date, trusted, "
            "delivery_status, attachments, text_hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (folder, name, bundle, sig, record.ok, record.read, record.date_us,
             record.message_id, record.thread_id, record.sender, record.sender.casefold(),
             record.recipients, record.subject, record.date, record.trusted,
             record.delivery_status, record.attachments, record.text_hash),
        )
        rowid = cur.lastrowid
        self.con.executemany("INSERT INTO link VALUES (?, ?)",
                             [(msgid, rowid) for msgid in record.links])
        if record.new_text is not None:
            self.con.execute("INSERT INTO newtext VALUES (?, ?)", (rowid, record.new_text))
        self.con.execute(
            "INSERT INTO fts(rowid, subject, sender, recipients, body) VALUES (?, ?, ?, ?, ?)",
            (rowid, record.subject, record.sender, record.recipients, record.body),
        )

    def _delete(self, rowid: int) -> None:
        self.con.execute("DELETE FROM msg WHERE rowid=?", (rowid,))
        self.con.execute("DELETE FROM link WHERE row=?", (rowid,))
        self.con.execute("DELETE FROM newtext WHERE row=?", (rowid,))
        self.con.execute("UPDATE meta SET value=value+1 WHERE key='garbage'")

    def _refresh(self, dir_fd, folder: int, name: str, known, written=None) -> str | None:
        """Bring one message's row in line with its file.

        @param known: its current C{(rowid, sig, text_hash)}, or C{None}.
        @param written: the file as the store wrote it (L{aimx.core.received.Written}),
            or C{None}: trusted instead of reading the file while the file keeps the
            signature it had then.
        @return: L{_INCOMPLETE} for a bundle still without its C{.md}, else C{None}.
        """
        found = None if dir_fd is None else _lookup(dir_fd, name)
        if found is None or found == _INCOMPLETE:
            if known is not None:
                self._delete(known[0])
            return found
        bundle, st = found
        sig = _sig(st)
        if known is not None and known[1] == sig:
            return None
        if (written is not None and not bundle and st.st_size <= HEAD_BYTES
                and _sig(written.stat) == sig):
            record = _record(written.fields, written.body)
        else:
            opened = _open(dir_fd, name, bundle)
            if opened is None:
                if known is not None:
                    self._delete(known[0])
                return None
            fd, st = opened
            record = _read(fd)
            sig = _sig(st)
        if known is not None and known[2] == record.text_hash:
            # Same text (a mark, say): no new tokens, update the row in place.
            self.con.execute(
                "UPDATE msg SET bundle=?, sig=?, ok=?, read=?, date_us=?, message_id=?, "
                "thread_id=?, date=?, trusted=?, delivery_status=?, attachments=? "
                "WHERE rowid=?",
                (bundle, sig, record.ok, record.read, record.date_us, record.message_id,
                 record.thread_id, record.date, record.trusted, record.delivery_status,
                 record.attachments, known[0]),
            )
            self.con.execute("DELETE FROM link WHERE row=?", (known[0],))
            self.con.executemany("INSERT INTO link VALUES (?, ?)",
                                 [(msgid, known[0]) for msgid in record.links])
            return None
        if known is not None:
            self._delete(known[0])
        self._insert(folder, name, bundle, sig, record)
        return None

    def _known(self, folder: int, name: str):
        return self.con.execute(
            "SELECT rowid, sig, text_hash FROM msg WHERE folder=? AND name=?", (folder, name)
        ).fetchone()

    def update(self, folder: str, names: Iterable[str], written=None) -> set[str]:
        """Re-check the messages behind directory entry names (from inotify, say).

        C{X.md} stands for the message C{X}, any other name for itself (a
        bundle); dot names are skipped.  A message whose file is unchanged
        costs a stat, one in C{written} (id -> L{aimx.core.received.Written})
        whose file is as written a stat and no read.

        @return: the ids that are bundle directories still without their C{.md}.
        """
        number = FOLDERS.index(folder)
        ids = set()
        for name in names:
            if not name or name.startswith("."):
                continue
            ids.add(name)
            if name.endswith(".md"):
                ids.add(name[:-3])
        incomplete = set()
        if not ids:
            return incomplete
        with self._folder_fd(folder) as dir_fd, self._transaction():
            for email_id in sorted(ids):
                if self._refresh(dir_fd, number, email_id, self._known(number, email_id),
                                 None if written is None else written.get(email_id)):
                    incomplete.add(email_id)
        return incomplete

    def stale(self, folder: str) -> bool:
        """Whether the folder's directory changed since the last full scan."""
        number = FOLDERS.index(folder)
        row = self.con.execute("SELECT sig FROM dir WHERE folder=?", (number,)).fetchone()
        return row is None or row[0] != _dir_sig(self.dirs[folder])

    def scan(self, folder: str) -> int:
        """Compare every file of a folder with its row; index what changed.

        The directory's signature is taken first and recorded last, so a
        change made while scanning makes the folder L{stale} again.

        @return: how many rows were added, changed or removed.
        """
        number = FOLDERS.index(folder)
        sig = _dir_sig(self.dirs[folder])
        rows = {
            name: (rowid, row_sig, text_hash)
            for rowid, name, row_sig, text_hash in self.con.execute(
                "SELECT rowid, name, sig, text_hash FROM msg WHERE folder=?", (number,))
        }
        changed = 0
        with self._folder_fd(folder) as dir_fd, self._transaction():
            present = set()
            if dir_fd is not None:
                for name, bundle in self._scan_names(folder):
                    present.add(name)
                    known = rows.get(name)
                    found = _lookup(dir_fd, name)
                    if found is not None and found != _INCOMPLETE and known is not None \
                            and known[1] == _sig(found[1]):
                        continue
                    self._refresh(dir_fd, number, name, known)
                    changed += 1
            for name, known in rows.items():
                if name not in present:
                    self._delete(known[0])
                    changed += 1
            self.con.execute("INSERT OR REPLACE INTO dir VALUES (?, ?)", (number, sig))
        return changed

    @contextlib.contextmanager
    def _transaction(self):
        self.con.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def verify(self, entries: list[Entry]) -> tuple[list[Entry], bool]:
        """Check rows about to be returned against their files.

        @return: the entries, those whose file changed re-read (and dropped when
            gone), and whether any changed.
        """
        changed = False
        out = []
        by_folder: dict[str, list[Entry]] = {}
        for entry in entries:
            by_folder.setdefault(entry.folder, []).append(entry)
        fresh: dict[tuple[str, str], Entry | None] = {}
        for folder, group in by_folder.items():
            number = FOLDERS.index(folder)
            with self._folder_fd(folder) as dir_fd:
                stale = []
                for entry in group:
                    found = None if dir_fd is None else _lookup(dir_fd, entry.id)
                    if (found is not None and found != _INCOMPLETE
                            and found[0] == entry.bundle and _sig(found[1]) == entry.sig):
                        continue
                    stale.append(entry)
                if not stale:
                    continue
                changed = True
                with self._transaction():
                    for entry in stale:
                        self._refresh(dir_fd, number, entry.id, self._known(number, entry.id))
                for entry in stale:
                    row = self.con.execute(
                        f"SELECT {_COLUMNS} FROM msg WHERE folder=? AND name=? AND ok",
                        (number, entry.id)).fetchone()
                    fresh[(folder, entry.id)] = None if row is None else _entry(row)
        for entry in entries:
            key = (entry.folder, entry.id)
            if key in fresh:
                if fresh[key] is not None:
                    out.append(attrs.evolve(fresh[key], snippet=entry.snippet))
            else:
                out.append(entry)
        return out, changed

    def _checked(self, query: Callable[[], list[Entry]]) -> list[Entry]:
        """Run C{query}, verify its rows; when any changed, run it again (bounded)."""
        for _ in range(_PASSES):
            entries, changed = self.verify(query())
            if not changed:
                return entries
        return entries

    # -- answers ---------------------------------------------------------------

    def counts(self) -> Counts:
        """Messages in the inbox (and unread ones: no C{read = true}, or unreadable),
        and in sent."""
        total = unread = sent = 0
        for folder, read, n in self.con.execute(
                "SELECT folder, read, count(*) FROM msg GROUP BY folder, read"):
            if folder == 0:
                total += n
                unread += 0 if read else n
            else:
                sent += n
        return Counts(total, unread, sent)

    def page(self, folder: str, limit: int, offset: int = 0, unread: bool = False
             ) -> list[Entry]:
        """A folder's messages, newest first (descending id, byte order), checked.

        Files whose frontmatter cannot be read are not listed.

        @param unread: only messages without C{read = true}.
        """
        number = FOLDERS.index(folder)
        where = "folder=? AND ok" + (" AND read=0" if unread else "")
        return self._checked(lambda: [_entry(row) for row in self.con.execute(
            f"SELECT {_COLUMNS} FROM msg WHERE {where} ORDER BY name DESC LIMIT ? OFFSET ?",
            (number, limit, offset))])

    def search(self, terms: list[mailquery.Term], *, folder: str | None = None,
               sender: str | None = None, since: int | None = None,
               until: int | None = None, unread: bool | None = None,
               trusted: bool | None = None, limit: int = 20) -> list[Entry]:
        """Messages matching every term and filter, newest first, with snippets.

        @param terms: from L{mailquery.parse_query}; none: filters only.
        @param folder: C{inbox}, C{sent}, or C{None} for both.
        @param sender: a case-insensitive substring of C{from}.
        @param since: microseconds since the epoch, inclusive (the C{date} field).
        @param until: microseconds since the epoch, exclusive.
        @param unread: C{True}: inbox messages without C{read = true}; C{False}: the others.
        @param trusted: C{True}: C{trusted = "true"}; C{False}: anything else.
        """
        where, args = ["ok"], []
        expression = mailquery.match_expression(terms)
        if folder is not None:
            where.append("folder=?")
            args.append(FOLDERS.index(folder))
        if sender:
            where.append("instr(sender_fold, ?) > 0")
            args.append(sender.casefold())
        if since is not None:
            where.append("date_us >= ?")
            args.append(since)
        if until is not None:
            where.append("date_us < ?")
            args.append(until)
        if unread is not None:
            where.append(("" if unread else "NOT ") + "(folder=0 AND read=0)")
        if trusted is not None:
            where.append("trusted " + ("=" if trusted else "!=") + " 'true'")
        entries = self._checked(lambda: self._matching(expression, where, args, limit))
        return [attrs.evolve(e, snippet=mailquery.snippet(self.body(e), terms))
                for e in entries]

    def _matching(self, expression: str, where: list[str], args: list, limit: int
                  ) -> list[Entry]:
        """The newest C{limit} rows matching C{expression} (if any) and C{where}.

        Sorting every match by id costs ~70 ms when the words are in nearly
        every message (100 000 rows looked up).  Rows are inserted in id order
        (a build goes by id, new mail has newer ids), so the newest matches are
        almost always among those of the highest rowids: the matches of the
        L{SEARCH_WINDOW} highest rowids are sorted first.  That answer is exact
        unless a row below the window's lowest rowid has an id above the last
        one answered (a file added by hand with a future id, say): then, or
        when the window was too small for C{limit} rows, everything is sorted.
        """
        conditions = " AND ".join(where)
        if not expression:
            return [_entry(row) for row in self.con.execute(
                f"SELECT {_COLUMNS} FROM msg WHERE {conditions} ORDER BY name DESC LIMIT ?",
                (*args, limit))]
        window = max(SEARCH_WINDOW, limit * 10)
        lowest, found = self.con.execute(
            "SELECT min(rowid), count(*) FROM (SELECT rowid FROM fts WHERE fts MATCH ? "
            "ORDER BY rowid DESC LIMIT ?)", (expression, window)).fetchone()
        if found == window:
            rows = [_entry(row) for row in self.con.execute(
                f"SELECT {_COLUMNS} FROM msg WHERE {conditions} AND rowid IN (SELECT rowid "
                "FROM fts WHERE fts MATCH ? ORDER BY rowid DESC LIMIT ?) "
                "ORDER BY name DESC LIMIT ?", (*args, expression, window, limit))]
            if len(rows) == limit and not self.con.execute(
                    "SELECT 1 FROM msg WHERE folder IN (0, 1) AND name > ? AND rowid < ? LIMIT 1",
                    (rows[-1].id, lowest)).fetchone():
                return rows
        return [_entry(row) for row in self.con.execute(
            f"SELECT {_COLUMNS} FROM msg WHERE {conditions} AND rowid IN (SELECT rowid "
            "FROM fts WHERE fts MATCH ?) ORDER BY name DESC LIMIT ?",
            (*args, expression, limit))]

    def body(self, entry: Entry, limit: int = SNIPPET_BYTES) -> str:
        """The start of a message's body (C{limit} bytes of its file); C{""} if gone."""
        with self._folder_fd(entry.folder) as dir_fd:
            opened = None if dir_fd is None else _open(dir_fd, entry.id, entry.bundle)
        if opened is None:
            return ""
        fd, _ = opened
        try:
            _, body = mailstore.read_head(fd, limit)
        except (ValueError, OSError):
            return ""
        finally:
            os.close(fd)
        return body.decode("utf-8", "replace")

    def thread(self, *, email_id: str | None = None, thread_id: str | None = None,
               limit: int = 50) -> list[Entry] | None:
        """A conversation across both folders: the newest C{limit} messages, oldest first.

        It starts from the message(s) C{email_id} names (in either folder) or
        every message with C{thread_id}, and grows through the message ids the
        messages name (their own, In-Reply-To, References), so a reply without
        References still joins its parent's thread.  At most L{THREAD_ROWS}
        messages are visited.  Order: by C{date}, then id.

        @return: the entries; C{None} when nothing starts the walk.
        """
        if email_id is not None:
            seeds = {row[0] for row in self.con.execute(
                "SELECT rowid FROM msg WHERE name=? AND ok", (email_id,))}
        else:
            seeds = {row[0] for row in self.con.execute(
                "SELECT rowid FROM msg WHERE thread_id=? AND ok", (thread_id,))}
        if not seeds:
            return None
        rows, frontier, seen_ids = set(seeds), set(seeds), set()
        while frontier and len(rows) < THREAD_ROWS:
            ids = self._column("SELECT DISTINCT msgid FROM link WHERE row IN ({})", frontier)
            ids -= seen_ids
            seen_ids |= ids
            found = self._column("SELECT DISTINCT row FROM link WHERE msgid IN ({})", ids)
            frontier = found - rows
            rows |= frontier

        def query():
            picked = sorted(rows)[:THREAD_ROWS]
            entries = []
            for start in range(0, len(picked), 500):
                chunk = picked[start : start + 500]
                entries += [(row[-1], _entry(row[:-1])) for row in self.con.execute(
                    f"SELECT {_COLUMNS}, date_us FROM msg WHERE ok AND rowid IN "
                    f"({','.join('?' * len(chunk))})", chunk)]
            entries.sort(key=lambda pair: (pair[0] is None, pair[0] or 0, pair[1].id))
            return [entry for _, entry in entries[-limit:]] if limit else []

        return [attrs.evolve(entry, text=self.new_text(entry))
                for entry in self.verify(query())[0]]

    def new_text(self, entry: Entry) -> str:
        """A message's new text: a reply's as stored, else its body (from its file),
        at most L{TEXT_CHARS} characters."""
        row = self.con.execute("SELECT text FROM newtext WHERE row=?", (entry.rowid,)).fetchone()
        if row is not None:
            return row[0]
        return replytext.new_text(self.body(entry, HEAD_BYTES), reply=False)[:TEXT_CHARS]

    def _column(self, sql: str, values: set) -> set:
        out: set = set()
        items = list(values)
        for start in range(0, len(items), 500):
            chunk = items[start : start + 500]
            out |= {row[0] for row in self.con.execute(
                sql.format(",".join("?" * len(chunk))), chunk)}
        return out
