"""The daemon's mail indexes (L2): one per mailbox, kept current, every query through here.

L{Indexer} owns an L{aimx.store.mailindex.MailIndex} per mailbox and answers
listings, counts, searches and threads from it for the control commands
(L{aimx.control.ops}), which authorise the caller first; nobody else opens the
index files (they are in a root-only directory).

Each mailbox has a lock of its own (not the storage lock: a rebuild or a
search must never hold up storing mail), so one operation at a time touches
its index, always in the thread pool.  Before any answer the index catches up
with the files:

 - inotify watches both folder directories (L{aimx.store.inotify}); the
   names of created, linked, written, renamed and removed entries collect as
   I{dirty} and are re-checked (a stat each, a read when changed).  Pending
   events are read before answering, and a mailbox with events is brought up
   to date within L{SETTLE} seconds anyway.  The daemon's own writes (store,
   mark) are also noted directly (L{Indexer.note}).
 - a folder without a watch (no inotify, no watches left, the directory
   missing or replaced, a queue overflow, the daemon just started) is scanned
   in full when its directory changed since the last scan.
 - every row about to be returned is checked against its file
   (L{MailIndex.verify}), which covers what no watch sees: a bundle's C{.md}
   edited in place.

A missing, damaged or outdated index is rebuilt from the files (one build at
a time), at start-up in the background, or when first needed; a query waits
for it, the mailbox counts fall back to reading the files meanwhile.  An
explicit rebuild (L{Indexer.rebuild}) builds beside the old index, which keeps
answering, and swaps it in.
"""

import os
import sqlite3
import time

import attrs
from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReadDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

from aimx.core.filenames import is_valid_id
from aimx.errors import IOFailure
from aimx.logs import Logger
from aimx.store import inotify, mailindex
from aimx.store.mailindex import FOLDERS, IndexBroken, IndexMissing, MailIndex

log = Logger(namespace="aimx.index")

#: Seconds between a change's event and the index catching up with it.
SETTLE = 0.5
#: Indexes kept open at once (each holds three file descriptors).
MAX_OPEN = 32
#: Dirty names kept per folder; past that the folder is scanned instead.
MAX_DIRTY = 20_000
#: Bodies of files the daemon wrote kept for the index to take their rows from.
MAX_WRITTEN_BYTES = 16 << 20
#: Builds tried in a row when the index directory is deleted underneath them.
BUILD_ATTEMPTS = 3
_NEED_BUILD = object()


class Cancelled(Exception):
    """The daemon is stopping: a build in progress gives up."""


def valid_name(name: str) -> bool:
    """Whether C{name} may name a mailbox's index file (and its directories)."""
    return is_valid_id(name) and not name.startswith(".")


@attrs.define
class _Box:
    """One mailbox's index and what is known about its freshness (reactor side)."""

    name: str
    path: str
    dirs: dict
    lock: defer.DeferredLock = attrs.Factory(defer.DeferredLock)
    index: MailIndex | None = None
    dirty: dict = attrs.Factory(lambda: {f: set() for f in FOLDERS})
    incomplete: dict = attrs.Factory(lambda: {f: set() for f in FOLDERS})
    #: Folders to compare with their directory (scanned when it changed).
    rescan: dict = attrs.Factory(lambda: {f: True for f in FOLDERS})
    wds: dict = attrs.Factory(dict)
    building: defer.Deferred | None = None
    waiters: list = attrs.Factory(list)
    progress: tuple = (0, 0)
    used: float = 0.0
    scheduled: object = None
    #: The counts last answered (what a rebuild answers meanwhile).
    counts: object = None
    #: Files the daemon wrote and not yet indexed: id -> L{aimx.core.received.Written}, per folder.
    written: dict = attrs.Factory(lambda: {f: {} for f in FOLDERS})
    written_bytes: int = 0

    def take(self) -> tuple[dict, dict, dict]:
        dirty, self.dirty = self.dirty, {f: set() for f in FOLDERS}
        written, self.written = self.written, {f: {} for f in FOLDERS}
        self.written_bytes = 0
        rescan = dict(self.rescan)
        for folder in FOLDERS:
            if folder in self.wds:
                self.rescan[folder] = False
        return dirty, rescan, written

    def give_back(self, dirty: dict, rescan: dict) -> None:
        for folder in FOLDERS:
            self.dirty[folder] |= dirty[folder]
            self.rescan[folder] = self.rescan[folder] or rescan[folder]


@attrs.frozen
class _Synced:
    """What a thread's catch-up (L{_catch_up}) found."""

    index: MailIndex | None
    incomplete: dict
    value: object = None
    need_build: bool = False
    garbage: bool = False


def _catch_up(index, path, dirs, dirty, incomplete, rescan, fn, written=None) -> _Synced:
    """In a thread, under the mailbox lock: open the index if needed, bring it up to
    date with the files, then run C{fn(index)}."""
    if index is not None and not index.current():
        index.close()
        index = None
    if index is None:
        try:
            index = MailIndex.open(path, dirs)
        except (IndexMissing, IndexBroken):
            return _Synced(None, incomplete, need_build=True)
        rescan = {folder: True for folder in FOLDERS}
    try:
        left = {}
        for folder in FOLDERS:
            if rescan[folder] and index.stale(folder):
                index.scan(folder)
            names = dirty[folder] | incomplete[folder]
            left[folder] = index.update(folder, names, written and written[folder]) \
                if names else set()
        value = None if fn is None else fn(index)
        garbage = index.garbage_limit()
    except sqlite3.DatabaseError as e:
        log.warn("index damaged, rebuilding it", path=path, error=e)
        index.close()
        mailindex.remove(path)
        return _Synced(None, incomplete, need_build=True)
    return _Synced(index, left, value, garbage=garbage)


def _install(old: MailIndex | None, built: str, path: str) -> None:
    if old is not None:
        old.close()
    MailIndex.install(built, path)


@implementer(IReadDescriptor)
class _Watcher:
    """The inotify descriptor, read by the reactor (and before every answer)."""

    def __init__(self, reactor, on_events):
        self.reactor = reactor
        self.on_events = on_events
        self.fd = inotify.init()
        self._buffer = b""
        reactor.addReader(self)

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "aimx-inotify"

    def doRead(self):
        while self.fd >= 0:
            data = inotify.read(self.fd)
            if not data:
                return
            events, self._buffer = inotify.parse(self._buffer + data)
            self.on_events(events)

    def connectionLost(self, reason):
        self.close()

    def add(self, path: str) -> int:
        return inotify.add_watch(self.fd, path)

    def remove(self, wd: int) -> None:
        if self.fd >= 0:
            inotify.rm_watch(self.fd, wd)

    def close(self):
        if self.fd >= 0:
            self.reactor.removeReader(self)
            os.close(self.fd)
            self.fd = -1


class Indexer(service.Service):
    """Every mailbox's index.

    @param reactor: the clock (C{callLater}) and, with C{watch}, the reader.
    @param data_dir: the storage root (C{index/} is made there).
    @param run_in_thread: C{f, *args -> Deferred}.
    @param names: C{() -> names} of the mailboxes to index at start-up
        (configured ones and directories; blocking, run in a thread).
    @param watch: C{(reactor, on_events) -> watcher} (L{_Watcher}: inotify);
        C{None}: no watches, only the directory checks.
    @param max_open: indexes kept open at once.
    """

    def __init__(self, reactor, data_dir: str, run_in_thread, names=lambda: (),
                 watch=_Watcher, max_open: int = MAX_OPEN):
        self.reactor = reactor
        self.data_dir = data_dir
        self.run_in_thread = run_in_thread
        self.names = names
        self.watch = watch
        self.max_open = max_open
        self.stopping = False
        self._boxes: dict[str, _Box] = {}
        self._by_wd: dict[int, tuple[_Box, str]] = {}
        self._watcher: _Watcher | None = None
        self._builds = defer.DeferredSemaphore(1)
        self.warmed: defer.Deferred = defer.succeed(None)
        #: Why there is no index at all (its directory is unusable), or C{None}.
        self.unavailable: str | None = None

    # -- service ---------------------------------------------------------------

    def startService(self):
        super().startService()
        self.stopping = False
        try:
            mailindex.prepare_dir(self.data_dir)
            self.unavailable = None
        except OSError as e:
            self.unavailable = f"{mailindex.index_dir(self.data_dir)}: {e.strerror or e}"
            log.error("mail index directory unusable: mailbox counts are read from the "
                      "files, listings and searches fail", error=self.unavailable)
            return
        if self.watch is not None:
            try:
                self._watcher = self.watch(self.reactor, self._events)
            except OSError as e:
                log.warn("inotify unavailable, the index compares directory times instead",
                         error=e)
        self.warmed = defer.Deferred.fromCoroutine(self._warm())
        self.warmed.addErrback(lambda f: log.failure("indexing at start-up crashed", f))

    def stopService(self):
        super().stopService()
        self.stopping = True
        for box in self._boxes.values():
            if box.scheduled is not None and box.scheduled.active():
                box.scheduled.cancel()
            box.scheduled = None
        return defer.Deferred.fromCoroutine(self._close_all())

    async def _close_all(self):
        await self.warmed
        for box in list(self._boxes.values()):
            if box.building is not None:
                try:
                    await self._observe(box)
                except Exception:
                    pass
            async with box.lock:
                if box.index is not None:
                    index, box.index = box.index, None
                    await self.run_in_thread(index.close)
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        self._by_wd.clear()
        for box in self._boxes.values():
            box.wds.clear()

    async def _warm(self):
        """Open (or build) and catch up every known mailbox's index, one at a time."""
        names = await self.run_in_thread(self.names)
        for name in sorted(set(names)):
            if self.stopping:
                return
            if not valid_name(name):
                continue
            try:
                await self._run(self._box(name), None)
            except Cancelled:
                return
            except Exception:
                log.failure("indexing at start-up failed", mailbox=name)
            self._trim()

    # -- boxes, watches --------------------------------------------------------

    def _box(self, name: str) -> _Box:
        box = self._boxes.get(name)
        if box is None:
            box = self._boxes[name] = _Box(
                name, mailindex.index_path(self.data_dir, name),
                mailindex.folder_dirs(self.data_dir, name))
        return box

    def _ensure_watches(self, box: _Box) -> None:
        if self._watcher is None:
            return
        for folder in FOLDERS:
            if folder in box.wds:
                continue
            try:
                wd = self._watcher.add(box.dirs[folder])
            except OSError:
                continue  # missing directory, or no watches left: directory checks
            other = self._by_wd.get(wd)
            if other is not None and other != (box, folder):
                other[0].wds.pop(other[1], None)
            self._by_wd[wd] = (box, folder)
            box.wds[folder] = wd
            box.rescan[folder] = True  # whatever happened before the watch

    def _events(self, events) -> None:
        for event in events:
            if event.mask & inotify.IN_Q_OVERFLOW:
                log.warn("inotify queue overflow, rescanning the mailboxes")
                for box, folder in list(self._by_wd.values()):
                    box.rescan[folder] = True
                    self._schedule(box)
                continue
            target = self._by_wd.get(event.wd)
            if target is None:
                continue
            box, folder = target
            if event.mask & inotify.LOST:
                del self._by_wd[event.wd]
                if box.wds.get(folder) == event.wd:
                    del box.wds[folder]
                if self._watcher is not None and not event.mask & inotify.IN_IGNORED:
                    self._watcher.remove(event.wd)
                box.rescan[folder] = True
            elif event.name:
                dirty = box.dirty[folder]
                dirty.add(event.name)
                if len(dirty) > MAX_DIRTY:
                    dirty.clear()
                    box.rescan[folder] = True
                    self._unwatch(box, folder)
            self._schedule(box)

    def _unwatch(self, box: _Box, folder: str) -> None:
        """Forget a folder's watch: its changes are found by a scan from now on (the
        next catch-up adds the watch again)."""
        wd = box.wds.pop(folder, None)
        if wd is not None:
            self._by_wd.pop(wd, None)
            if self._watcher is not None:
                self._watcher.remove(wd)

    def _read_events(self) -> None:
        if self._watcher is not None:
            self._watcher.doRead()

    def _schedule(self, box: _Box) -> None:
        if box.scheduled is None and not self.stopping:
            box.scheduled = self.reactor.callLater(SETTLE, self._drain, box)

    def _drain(self, box: _Box) -> None:
        box.scheduled = None
        d = defer.Deferred.fromCoroutine(self._run(box, None))
        # Cancelled: the daemon stopped while the update waited for a build.
        d.addErrback(lambda f: f.check(Cancelled) or log.failure(
            "index update failed", f, mailbox=box.name))

    def note(self, mailbox: str, folder: str, email_id: str, written=None) -> None:
        """The daemon changed (stored, marked) the message C{email_id}.

        @param written: the file as the store wrote it (L{aimx.core.received.Written}):
            its row is taken from there, not read back, while the file is unchanged
            (at most L{MAX_WRITTEN_BYTES} of bodies are kept so).
        """
        if not valid_name(mailbox) or folder not in FOLDERS:
            return
        box = self._box(mailbox)
        box.dirty[folder].add(email_id)
        if written is not None and box.written_bytes + len(written.body) <= MAX_WRITTEN_BYTES:
            box.written[folder][email_id] = written
            box.written_bytes += len(written.body)
        self._schedule(box)

    def on_received(self, ingested) -> None:
        """Inbound listener: a copy was stored (L{aimx.smtp.inbound.Inbound.listeners})."""
        stored = ingested.stored
        if not stored.duplicate:
            self.note(ingested.mailbox.name, "inbox", stored.id, stored.written)

    # -- running work ----------------------------------------------------------

    async def _run(self, box: _Box, fn, build: bool = True):
        """Bring C{box}'s index up to date, then run C{fn(index)} in the thread pool.

        @param build: build a missing index and wait for it (else return
            L{_NEED_BUILD}, the build started in the background).
        """
        for _ in range(3):
            if self.stopping and box.index is None:
                raise Cancelled()
            async with box.lock:
                box.used = time.monotonic()
                self._read_events()
                self._ensure_watches(box)
                dirty, rescan, written = box.take()
                try:
                    synced = await self.run_in_thread(
                        _catch_up, box.index, box.path, box.dirs, dirty, box.incomplete,
                        rescan, fn, written)
                except BaseException:
                    box.give_back(dirty, rescan)
                    raise
                box.index = synced.index
                box.incomplete = synced.incomplete
                if not synced.need_build:
                    if synced.garbage:
                        self.rebuild(box.name)
                    self._trim()
                    return synced.value
                box.give_back(dirty, {folder: True for folder in FOLDERS})
            if not build:
                self._start_build(box)
                return _NEED_BUILD
            await self._observe(box)
        raise IOFailure(f"the index of mailbox '{box.name}' could not be opened")

    def _trim(self) -> None:
        """Close the least recently used indexes past L{MAX_OPEN} (when idle)."""
        open_boxes = [b for b in self._boxes.values() if b.index is not None]
        if len(open_boxes) <= self.max_open:
            return
        open_boxes.sort(key=lambda b: b.used)
        for box in open_boxes[: len(open_boxes) - self.max_open]:
            if not box.lock.locked:
                d = defer.Deferred.fromCoroutine(self._close(box))
                d.addErrback(lambda f: log.failure("closing an index failed", f))

    async def _close(self, box: _Box) -> None:
        async with box.lock:
            if box.index is not None:
                index, box.index = box.index, None
                await self.run_in_thread(index.close)

    # -- building --------------------------------------------------------------

    def _start_build(self, box: _Box) -> None:
        if box.building is None and not self.stopping:
            box.building = defer.Deferred.fromCoroutine(self._build(box))
            box.building.addBoth(self._built, box)

    def _built(self, result, box: _Box):
        box.building = None
        waiters, box.waiters = box.waiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(None)
        if isinstance(result, Failure) and not result.check(Cancelled):
            log.failure("index build failed", result, mailbox=box.name)
        return None

    def _observe(self, box: _Box) -> defer.Deferred:
        """A Deferred firing when C{box}'s build (started now if needed) is done."""
        self._start_build(box)
        if box.building is None:
            return defer.succeed(None)
        waiter = defer.Deferred()
        box.waiters.append(waiter)
        return waiter

    async def _build(self, box: _Box) -> None:
        async with self._builds:
            if self.stopping:
                raise Cancelled()
            started = time.monotonic()
            box.progress = (0, 0)
            log.info("building the index", mailbox=box.name)
            self._ensure_watches(box)

            def progress(done, total):
                box.progress = (done, total)
                if self.stopping:
                    raise Cancelled()

            for attempt in range(BUILD_ATTEMPTS):
                # The whole index directory may have been deleted, before or during a build.
                await self.run_in_thread(mailindex.prepare_dir, self.data_dir)
                built = await self.run_in_thread(MailIndex.build, box.path, box.dirs, progress)
                async with box.lock:
                    old, box.index = box.index, None
                    try:
                        await self.run_in_thread(_install, old, built, box.path)
                    except FileNotFoundError:
                        if attempt + 1 == BUILD_ATTEMPTS:
                            raise
                        log.warn("index directory deleted during a build, building again",
                                 mailbox=box.name)
                        continue
                    # Anything changed since the build read a folder shows in its directory.
                    box.rescan = {folder: True for folder in FOLDERS}
                    break
            done, _ = box.progress
            log.info("index built", mailbox=box.name, messages=done,
                     seconds=round(time.monotonic() - started, 1))

    def rebuild(self, mailbox: str) -> None:
        """Build C{mailbox}'s index again from its files, in the background (the
        current index, if any, answers until the new one is in place)."""
        if valid_name(mailbox):
            self._start_build(self._box(mailbox))

    def status(self, mailbox: str) -> dict:
        """C{{"mailbox", "state": "building"|"ready"|"none", "done", "total"}}."""
        box = self._boxes.get(mailbox)
        if box is not None and box.building is not None:
            done, total = box.progress
            return {"mailbox": mailbox, "state": "building", "done": done, "total": total}
        exists = box is not None and box.index is not None or os.path.exists(
            mailindex.index_path(self.data_dir, mailbox))
        return {"mailbox": mailbox, "state": "ready" if exists else "none",
                "done": 0, "total": 0}

    async def forget(self, mailbox: str) -> None:
        """A mailbox was deleted: close and delete its index."""
        if not valid_name(mailbox):
            return
        box = self._box(mailbox)
        async with box.lock:
            for folder in FOLDERS:
                self._unwatch(box, folder)
            index, box.index = box.index, None
            if index is not None:
                await self.run_in_thread(index.close)
            await self.run_in_thread(mailindex.remove, box.path)
            box.dirty = {f: set() for f in FOLDERS}
            box.incomplete = {f: set() for f in FOLDERS}
            box.rescan = {f: True for f in FOLDERS}

    # -- answers ---------------------------------------------------------------

    async def query(self, mailbox: str, fn):
        """C{fn(index)} on C{mailbox}'s up-to-date index, in the thread pool.

        @raise IOFailure: the index cannot be had.
        """
        if self.unavailable is not None:
            raise IOFailure(f"the mail index is unavailable: {self.unavailable}")
        if not valid_name(mailbox):
            raise IOFailure(f"no index for mailbox name '{mailbox}'")
        return await self._run(self._box(mailbox), fn)

    async def counts(self, mailbox: str) -> mailindex.Counts | None:
        """The mailbox's message counts.

        While its index is being built from nothing, the counts answered last (an
        index deleted underneath), or C{None} (none yet: the caller reads the files).
        """
        if self.unavailable is not None or not valid_name(mailbox):
            return None
        box = self._box(mailbox)
        if box.building is not None and box.index is None:
            return box.counts
        value = await self._run(box, lambda index: index.counts(), build=False)
        if value is _NEED_BUILD:
            return box.counts
        box.counts = value
        return value
