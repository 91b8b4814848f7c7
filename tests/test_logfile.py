"""A log file followed as it grows, is rotated and is truncated (aimx.host.logfile).

The files are real; a follower runs in a thread where another thread writes, or is
driven from its own writer (which changes the file, then raises to end it).  No test
sleeps: each waits for the line it expects.
"""

import os
import queue
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from aimx.host import logfile
from aimx.ops import logline

#: Seconds a test waits for a line before it fails.
WAIT = 30


def line(priority: str, mailbox: str, n: int) -> str:
    return f"2026-06-01T12:00:{n:02d}.000+00:00 {priority} aimx.hook: firing mailbox={mailbox}\n"


class Enough(Exception):
    """Raised by a test's writer to end a follow."""


class _Files(SynchronousTestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "aimx.log")
        self.write_file(line("info", "alice", 0) + line("err", "bob", 1))

    def write_file(self, text: str, mode: str = "w") -> None:
        with open(self.path, mode) as f:
            f.write(text)

    def append(self, text: str) -> None:
        self.write_file(text, "a")


class TailTests(_Files):
    def test_unfiltered(self):
        """The last N lines and the end offset."""
        lines, offset = logfile.tail(self.path, 1)
        self.assertEqual((lines, offset), ([line("err", "bob", 1).rstrip("\n")],
                                           os.path.getsize(self.path)))

    def test_filtered(self):
        """The last N lines that pass."""
        keep = logline.Filter(mailbox="alice").selector()
        self.assertEqual(logfile.tail(self.path, 5, keep)[0], [line("info", "alice", 0)[:-1]])


class FollowTests(_Files):
    def follow_in_thread(self, chosen=logline.Filter()):
        """Follow the file from its end in a thread; its lines arrive on the queue."""
        got, stop = queue.Queue(), threading.Event()
        _, offset = logfile.tail(self.path, 0)
        follower = threading.Thread(
            target=logfile.follow,
            args=(self.path, offset, got.put, chosen.selector() if chosen else None,
                  stop.is_set))
        follower.start()

        def stopped():
            stop.set()
            os.utime(self.path)  # wake it now rather than at its next look
            follower.join(WAIT)
            self.assertFalse(follower.is_alive())

        self.addCleanup(stopped)
        return got

    def test_growing_file(self):
        """Lines appended by another writer arrive as they are written, whole: a line
        written in two parts arrives once it is complete."""
        got = self.follow_in_thread()
        self.append(line("info", "alice", 2))
        self.assertEqual(got.get(timeout=WAIT), line("info", "alice", 2))
        half = line("notice", "bob", 3)
        self.append(half[:20])
        self.append(half[20:])
        self.assertEqual(got.get(timeout=WAIT), half)

    def test_growing_file_filtered(self):
        """Only lines that pass arrive (priority, mailbox)."""
        got = self.follow_in_thread(logline.Filter(priority=logline.NOTICE, mailbox="bob"))
        self.append(line("info", "bob", 2) + line("err", "alice", 3) + line("err", "bob", 4))
        self.assertEqual(got.get(timeout=WAIT), line("err", "bob", 4))

    def driven(self, *changes):
        """Follow from the file's end; each line written makes the next change to the
        file; the last one ends the follow.  The lines written."""
        written = []
        steps = list(changes)

        def write(text):
            written.append(text)
            if not steps:
                raise Enough()
            steps.pop(0)()

        _, offset = logfile.tail(self.path, 0)
        steps.pop(0)()
        deadline = time.monotonic() + WAIT  # a change missed fails, not hangs
        self.assertRaises(Enough, logfile.follow, self.path, offset, write,
                          stopped=lambda: time.monotonic() > deadline)
        return written

    def test_rotated(self):
        """The file renamed away and a new one made: the rest of the old, then the new
        from its start."""

        def rotate():
            self.append(line("info", "old", 2))
            os.rename(self.path, self.path + ".1")
            self.write_file(line("info", "new", 3))

        written = self.driven(lambda: self.append(line("info", "x", 1)), rotate, lambda: None)
        self.assertEqual(written, [line("info", "x", 1), line("info", "old", 2),
                                   line("info", "new", 3)])

    def test_truncated(self):
        """The file cut short in place: read again from its start."""
        written = self.driven(lambda: self.append(line("info", "a", 2)),
                              lambda: self.write_file(line("info", "b", 3)))
        self.assertEqual(written, [line("info", "a", 2), line("info", "b", 3)])

    def test_missing(self):
        """A file that is not there cannot be followed."""
        self.assertRaises(OSError, logfile.follow, self.path + ".nope", 0, self.fail)
