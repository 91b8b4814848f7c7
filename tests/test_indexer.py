"""The daemon's indexes on a clock, synchronous "threads" and a fake watcher: catching
up with events and directory changes, builds, counts while building, forgetting."""

import os
import shutil

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase, TestCase

from aimx import indexer
from aimx.indexer import Indexer
from aimx.core.received import Written
from aimx.store import inotify, mailindex
from aimx.store.mailindex import Counts
from tests.test_mailindex import message


class FakeWatcher:
    """Watches by path, events delivered by the test."""

    def __init__(self, reactor, on_events):
        self.on_events = on_events
        self.wds: dict[str, int] = {}
        self.removed: list[int] = []
        self.reads = 0

    def add(self, path):
        if not os.path.isdir(path):
            raise FileNotFoundError(path)
        return self.wds.setdefault(path, len(self.wds) + 1)

    def remove(self, wd):
        self.removed.append(wd)

    def doRead(self):
        self.reads += 1

    def close(self):
        pass

    def event(self, path, name, mask=inotify.IN_CLOSE_WRITE):
        self.on_events([inotify.Event(self.wds[path], mask, name)])


class IndexerTestCase(TestCase):
    watch = staticmethod(FakeWatcher)

    def setUp(self):
        self.data = os.path.abspath(self.mktemp())
        self.dirs = mailindex.folder_dirs(self.data, "box")
        for path in self.dirs.values():
            os.makedirs(path)
        self.clock = task.Clock()
        self.thread_calls = 0
        self.indexer = Indexer(self.clock, self.data, self.run_in_thread,
                               names=lambda: ["box"], watch=self.watch)
        self.indexer.startService()
        self.addCleanup(self.indexer.stopService)

    def run_in_thread(self, f, *args):
        self.thread_calls += 1
        return defer.maybeDeferred(f, *args)

    def put(self, stem, folder="inbox", **kw):
        path = os.path.join(self.dirs[folder], stem + ".md")
        with open(path, "wb") as f:
            f.write(message(stem, **kw))
        return path

    def result(self, coroutine):
        d = defer.Deferred.fromCoroutine(coroutine)
        return self.successResultOf(d)

    def counts(self):
        return self.result(self.indexer.counts("box"))

    def page(self):
        return [e.id for e in self.result(self.indexer.query(
            "box", lambda index: index.page("inbox", 50)))]


class CatchUpTests(IndexerTestCase):
    def test_built_at_start(self):
        """Start-up builds a missing index from the files."""
        self.assertTrue(os.path.exists(mailindex.index_path(self.data, "box")))
        self.assertEqual(os.stat(mailindex.index_dir(self.data)).st_mode & 0o777, 0o700)
        self.assertEqual(self.counts(), Counts(0, 0, 0))

    def test_events_then_query(self):
        """Names from events are re-checked before the next answer; the events pending
        are read first."""
        self.put("2025-06-01-000001-a")
        self.indexer._watcher.event(self.dirs["inbox"], "2025-06-01-000001-a.md")
        reads = self.indexer._watcher.reads
        self.assertEqual(self.page(), ["2025-06-01-000001-a"])
        self.assertGreater(self.indexer._watcher.reads, reads)

    def test_events_settle_without_a_query(self):
        """A change's event brings the index up to date within SETTLE seconds."""
        self.put("2025-06-01-000001-a", read=False)
        self.indexer._watcher.event(self.dirs["inbox"], "2025-06-01-000001-a.md")
        self.clock.advance(indexer.SETTLE)
        index = self.indexer._boxes["box"].index
        self.assertEqual(index.counts(), Counts(1, 1, 0))

    def test_note(self):
        """The daemon's own writes are noted directly."""
        self.put("2025-06-01-000001-a")
        self.indexer.note("box", "inbox", "2025-06-01-000001-a")
        self.clock.advance(indexer.SETTLE)
        self.assertEqual(self.indexer._boxes["box"].index.counts().total, 1)

    def test_lost_watch_rescans(self):
        """A directory whose watch is lost (deleted, moved) is compared with its files."""
        self.put("2025-06-01-000001-a")
        inbox = self.dirs["inbox"]
        self.indexer._watcher.event(inbox, "", inotify.IN_IGNORED)
        self.assertEqual(self.page(), ["2025-06-01-000001-a"])

    def test_overflow_rescans(self):
        """After a queue overflow every watched folder is compared with its files."""
        self.put("2025-06-01-000001-a")
        self.indexer._events([inotify.Event(-1, inotify.IN_Q_OVERFLOW, "")])
        self.assertEqual(self.page(), ["2025-06-01-000001-a"])

    def test_deleted_index_rebuilt(self):
        """An index deleted underneath is noticed and rebuilt before the next answer."""
        self.put("2025-06-01-000001-a")
        self.indexer.note("box", "inbox", "2025-06-01-000001-a")
        self.assertEqual(self.counts(), Counts(1, 1, 0))
        mailindex.remove(mailindex.index_path(self.data, "box"))
        self.put("2025-06-01-000002-b")
        self.assertEqual(self.page(), ["2025-06-01-000002-b", "2025-06-01-000001-a"])

    def test_index_directory_deleted(self):
        """The whole index directory deleted underneath: made again, the index rebuilt."""
        self.put("2025-06-01-000001-a")
        self.indexer.note("box", "inbox", "2025-06-01-000001-a")
        self.assertEqual(self.page(), ["2025-06-01-000001-a"])
        shutil.rmtree(mailindex.index_dir(self.data))
        self.put("2025-06-01-000002-b")
        self.assertEqual(self.page(), ["2025-06-01-000002-b", "2025-06-01-000001-a"])
        self.assertEqual(os.stat(mailindex.index_dir(self.data)).st_mode & 0o777, 0o700)

    def test_index_directory_deleted_during_a_build(self):
        """The index directory deleted while a build runs: the build starts again, the
        answer waiting for it comes, and nothing is logged as a failure."""
        self.put("2025-06-01-000001-a")
        mailindex.remove(mailindex.index_path(self.data, "box"))
        deletions = []

        def run_in_thread(f, *args):
            if f is indexer._install and not deletions:
                deletions.append(f)
                shutil.rmtree(mailindex.index_dir(self.data))
            return defer.maybeDeferred(f, *args)

        self.indexer.run_in_thread = run_in_thread
        self.assertEqual(self.page(), ["2025-06-01-000001-a"])
        self.assertEqual(deletions, [indexer._install])
        self.assertTrue(os.path.exists(mailindex.index_path(self.data, "box")))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_written_kept_up_to_a_limit(self):
        """What the store wrote is kept for the index up to MAX_WRITTEN_BYTES of bodies;
        past that a message is noted all the same and read from its file."""
        box_written = lambda: self.indexer._boxes["box"].written["inbox"]
        big = Written(None, {}, b"x" * (indexer.MAX_WRITTEN_BYTES - 10))
        self.indexer.note("box", "inbox", "a", big)
        self.indexer.note("box", "inbox", "b", Written(None, {}, b"y" * 11))
        self.indexer.note("box", "inbox", "c", Written(None, {}, b"z" * 10))
        self.assertEqual(sorted(box_written()), ["a", "c"])
        self.assertEqual(self.indexer._boxes["box"].dirty["inbox"], {"a", "b", "c"})

    def test_forget(self):
        """A deleted mailbox's index file goes."""
        self.result(self.indexer.forget("box"))
        self.assertFalse(os.path.exists(mailindex.index_path(self.data, "box")))
        self.assertEqual(self.indexer._watcher.removed, [1, 2])

    def test_invalid_name(self):
        """Names that cannot be file names have no index."""
        self.assertIsNone(self.result(self.indexer.counts("../x")))


class NoWatchTests(IndexerTestCase):
    """Without inotify: a changed directory is scanned before answering."""

    watch = None

    def test_directory_checks(self):
        """Added, removed and renamed-in files are seen without any event."""
        self.assertEqual(self.page(), [])
        self.put("2025-06-01-000001-a")
        self.put("2025-06-01-000002-b")
        self.assertEqual(self.page(), ["2025-06-01-000002-b", "2025-06-01-000001-a"])
        os.unlink(os.path.join(self.dirs["inbox"], "2025-06-01-000002-b.md"))
        self.assertEqual(self.counts(), Counts(1, 1, 0))


class BuildTests(IndexerTestCase):
    def setUp(self):
        self.gate = None
        super().setUp()

    def gated(self):
        self.gate = defer.Deferred()
        self.addCleanup(lambda: self.gate.called or self.gate.callback(None))

    def run_in_thread(self, f, *args):
        if f == mailindex.MailIndex.build and self.gate is not None:
            return self.gate.addCallback(lambda _: f(*args))
        return defer.maybeDeferred(f, *args)

    def test_counts_while_building(self):
        """While a missing index is built, counts are the last answered or None (the files
        are read), and queries wait."""
        self.assertEqual(self.counts(), Counts(0, 0, 0))
        self.gated()
        mailindex.remove(mailindex.index_path(self.data, "box"))
        self.put("2025-06-01-000001-a")
        self.assertEqual(self.counts(), Counts(0, 0, 0))  # the last answered, meanwhile
        self.indexer._boxes["box"].counts = None
        self.assertIsNone(self.counts())
        self.assertEqual(self.indexer.status("box")["state"], "building")
        waiting = defer.Deferred.fromCoroutine(self.indexer.query(
            "box", lambda index: index.counts()))
        self.assertNoResult(waiting)
        self.gate.callback(None)
        self.assertEqual(self.successResultOf(waiting), Counts(1, 1, 0))
        self.assertEqual(self.indexer.status("box")["state"], "ready")

    def test_update_stopped_quietly(self):
        """An update still waiting for a build when the daemon stops ends without a logged
        failure: stopping is not an error."""
        self.gated()
        mailindex.remove(mailindex.index_path(self.data, "box"))
        self.put("2025-06-01-000001-a")
        self.indexer.note("box", "inbox", "2025-06-01-000001-a")
        self.clock.advance(indexer.SETTLE)
        self.assertEqual(self.indexer.status("box")["state"], "building")
        stopped = self.indexer.stopService()
        self.gate.callback(None)
        self.successResultOf(stopped)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_rebuild_keeps_answering(self):
        """An explicit rebuild builds beside the index, which answers meanwhile."""
        self.put("2025-06-01-000001-a")
        self.indexer.note("box", "inbox", "2025-06-01-000001-a")
        self.gated()
        self.indexer.rebuild("box")
        self.assertEqual(self.counts(), Counts(1, 1, 0))
        self.put("2025-06-01-000002-b")
        self.gate.callback(None)
        self.assertEqual(self.page(), ["2025-06-01-000002-b", "2025-06-01-000001-a"])


class UnavailableTests(SynchronousTestCase):
    def test_unusable_directory(self):
        """An index directory that cannot be used: counts come from the files (None here),
        queries fail with the reason, nothing is built."""
        data = os.path.abspath(self.mktemp())
        os.makedirs(data)
        with open(os.path.join(data, "index"), "w"):
            pass  # a file where the directory goes
        calls = []
        index = Indexer(task.Clock(), data, lambda f, *a: calls.append(f) or defer.maybeDeferred(
            f, *a), names=lambda: ["box"], watch=None)
        index.startService()
        self.addCleanup(index.stopService)
        self.assertIn("index", index.unavailable)
        self.assertIsNone(self.successResultOf(defer.Deferred.fromCoroutine(
            index.counts("box"))))
        failure = self.failureResultOf(defer.Deferred.fromCoroutine(
            index.query("box", lambda i: i.counts())))
        self.assertIn("the mail index is unavailable", str(failure.value))
        self.assertNotIn(mailindex.MailIndex.build, calls)
