"""Mailbox directories on disk: create/adopt, wipe, counts, id resolution, mark read."""

import datetime
import os
import stat
import threading

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from aimx.core import frontmatter
from aimx.errors import ConflictError, IOFailure
from aimx.store import mailboxes
from aimx.store.mailstore import Owner

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
ME = Owner("me", os.geteuid(), os.getegid())


def email(read=False) -> bytes:
    return frontmatter.render({"id": "x", "read": read}, "Hello\n")


def record_reads(test) -> list[int]:
    """Patch C{os.read} to record the sizes this thread asks for (other threads pass)."""
    asked: list[int] = []
    real, me = os.read, threading.get_ident()

    def read(fd, n):
        if threading.get_ident() == me:
            asked.append(n)
        return real(fd, n)

    test.patch(os, "read", read)
    return asked


class DirsTests(SynchronousTestCase):
    def setUp(self):
        self.data = os.path.abspath(self.mktemp())
        for sub in ("inbox", "sent"):
            os.makedirs(os.path.join(self.data, sub))

    def test_create(self):
        """Both directories are created with mode 0700 and reported as created."""
        created = mailboxes.create_dirs(self.data, "eve", ME)
        self.assertEqual(created, list(mailboxes.mailbox_dirs(self.data, "eve")))
        for path in created:
            st = os.stat(path)
            self.assertEqual((st.st_mode & 0o777, st.st_uid), (0o700, ME.uid))

    def test_adopt(self):
        """Matching pre-existing directories are adopted (re-chmodded), files untouched."""
        inbox, _ = mailboxes.mailbox_dirs(self.data, "eve")
        os.mkdir(inbox)
        os.chmod(inbox, 0o755)
        with open(os.path.join(inbox, "keep.md"), "w"):
            pass
        created = mailboxes.create_dirs(self.data, "eve", ME)
        self.assertEqual(len(created), 1)
        self.assertEqual(os.stat(inbox).st_mode & 0o777, 0o700)
        self.assertTrue(os.path.exists(os.path.join(inbox, "keep.md")))

    def test_conflict_not_dir(self):
        """A file in the way is ECONFLICT and nothing is created."""
        _, sent = mailboxes.mailbox_dirs(self.data, "eve")
        with open(sent, "w"):
            pass
        e = self.assertRaises(ConflictError, mailboxes.create_dirs, self.data, "eve", ME)
        self.assertIn("exists but is not a directory", str(e))
        self.assertFalse(os.path.exists(os.path.join(self.data, "inbox", "eve")))

    def test_conflict_owner(self):
        """A directory with other ids is ECONFLICT naming both, untouched."""
        inbox, _ = mailboxes.mailbox_dirs(self.data, "zed")
        os.mkdir(inbox)
        os.chmod(inbox, 0o755)  # explicit: another test's daemon may have set umask 077
        other = Owner("other", ME.uid + 1, ME.gid + 1)
        e = self.assertRaises(ConflictError, mailboxes.create_dirs, self.data, "zed", other)
        self.assertIn(f"already exists with owner {ME.uid}:{ME.gid}, expected "
                      f"{other.uid}:{other.gid}; run `chown -R", str(e))
        self.assertEqual(os.stat(inbox).st_mode & 0o777, 0o755)
        self.assertFalse(os.path.exists(os.path.join(self.data, "sent", "zed")))

    def test_create_failure_rolls_back(self):
        """A failed mkdir removes what this call created."""
        os.rmdir(os.path.join(self.data, "sent"))
        e = self.assertRaises(IOFailure, mailboxes.create_dirs, self.data, "eve", ME)
        self.assertIn("failed to create", str(e))
        self.assertFalse(os.path.exists(os.path.join(self.data, "inbox", "eve")))

    def test_wipe_and_count(self):
        """Wipe empties a directory (files, bundles, links, dotfiles) and keeps it."""
        inbox, sent = mailboxes.mailbox_dirs(self.data, "eve")
        mailboxes.create_dirs(self.data, "eve", ME)
        outside = os.path.join(self.data, "outside")
        with open(outside, "w"):
            pass
        os.makedirs(os.path.join(inbox, "b", "c"))
        for name in ("a.md", ".hidden"):
            with open(os.path.join(inbox, name), "w"):
                pass
        os.symlink(outside, os.path.join(inbox, "link"))
        self.assertEqual(mailboxes.count_entries(inbox), 4)
        self.assertEqual(mailboxes.count_entries(os.path.join(self.data, "nope")), 0)
        mailboxes.wipe(inbox)
        self.assertEqual(os.listdir(inbox), [])
        self.assertTrue(os.path.exists(outside))
        mailboxes.wipe(os.path.join(self.data, "nope"))


class CountTests(SynchronousTestCase):
    def test_counts(self):
        """Flat .md files and bundles count; unread unless `read = true`; junk ignored."""
        d = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(d, "b1"))
        os.makedirs(os.path.join(d, "stray"))
        files = {
            "a.md": email(read=True),
            "c.md": email(read=False),
            "b1/b1.md": email(read=False),
            ".tmp.md": email(),
            "notes.txt": b"x",
        }
        for name, data in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        self.assertEqual(mailboxes.count_messages(d), (3, 2))
        self.assertEqual(mailboxes.count_messages(d, False), (3, 0))
        self.assertEqual(mailboxes.count_messages(os.path.join(d, "missing")), (0, 0))

    def test_read_line_only_in_frontmatter(self):
        """A `read = true` line in the body does not make a message read."""
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        with open(os.path.join(d, "a.md"), "wb") as f:
            f.write(b'+++\nid = "a"\nread = false\n+++\n\nread = true\n')
        self.assertEqual(mailboxes.count_messages(d), (1, 1))

    def write(self, name: str, data: bytes) -> str:
        d = getattr(self, "dir", None) or os.path.abspath(self.mktemp())
        self.dir = d
        os.makedirs(os.path.dirname(os.path.join(d, name)), exist_ok=True)
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        return d

    def test_read_state_parsed(self):
        """Read means a top-level TOML C{read = true}; anything else is unread."""
        for text, read in (
            (b'+++\nread=true\n+++\n', True),
            (b'+++\nread = true # seen\n+++\n', True),
            (b'+++\nread = "true"\n+++\n', False),
            (b'+++\nid = "x"\n\n[[attachments]]\nread = true\n+++\n', False),
            (b'+++\nnote = """\nread = true\n"""\n+++\n', False),
            (b'+++\nread = false\n+++\n', False),
        ):
            d = os.path.abspath(self.mktemp())
            os.makedirs(d)
            with open(os.path.join(d, "a.md"), "wb") as f:
                f.write(text)
            self.assertEqual(mailboxes.count_messages(d), (1, 0 if read else 1), text)

    def test_invalid_frontmatter_is_unread(self):
        """A .md file without valid frontmatter still counts, as unread."""
        d = self.write("a.md", b"read = true\n")
        self.write("b.md", b"+++\nread = true\nread = = x\n+++\n")
        self.write("c.md", b'+++\nread = true\nx = "\xff"\n+++\n')
        self.write("d.md", b"")
        self.assertEqual(mailboxes.count_messages(d), (4, 4))

    def frontmatter_of(self, size: int) -> bytes:
        """A read frontmatter (both +++ lines included) of exactly C{size} bytes."""
        head, tail = b'+++\nread = true\npad = "', b'"\n+++\n'
        return head + b"a" * (size - len(head) - len(tail)) + tail

    def test_frontmatter_limit(self):
        """Frontmatter ending exactly at the 64 KiB read limit is read; one byte more is unread."""
        limit = mailboxes.READ_STATE_BYTES
        self.assertEqual(limit, 64 * 1024)
        d = self.write("fits.md", self.frontmatter_of(limit) + b"\nbody\n" * 1000)
        self.assertEqual(mailboxes.count_messages(d), (1, 0))
        self.write("over.md", self.frontmatter_of(limit + 1) + b"\nbody\n")
        self.assertEqual(mailboxes.count_messages(d), (2, 1))
        os.unlink(os.path.join(d, "fits.md"))
        # The limit falls just after "+++" of a "+++x" line: no closing line there.
        self.write("cut.md", self.frontmatter_of(limit + 1)[:-1] + b"x\n")
        self.assertEqual(mailboxes.count_messages(d), (2, 2))

    def test_reads_only_the_head(self):
        """Counting a 5 MiB message reads at most the first 64 KiB of it."""
        d = self.write("big.md", self.frontmatter_of(100) + b"x" * (5 << 20))
        asked = record_reads(self)
        self.assertEqual(mailboxes.count_messages(d), (1, 0))
        self.assertLessEqual(sum(asked), mailboxes.READ_STATE_BYTES)


class ResolveTests(SynchronousTestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)

    def write(self, name, data=b"+++\nread = false\n+++\n"):
        path = os.path.join(self.dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_valid_id(self):
        """Ids with .., /, backslash or NUL, and empty ids, are invalid."""
        for bad in ("", "../x", "a/b", "a\\b", "a\x00", ".."):
            self.assertFalse(mailboxes.valid_id(bad))
        self.assertTrue(mailboxes.valid_id("2026-01-01-000000-hi"))

    def test_flat_then_bundle(self):
        """<id>.md first, else <id>/<id>.md; absent is (None, False)."""
        flat = self.write("a.md")
        bundled = self.write("b/b.md")
        self.assertEqual(mailboxes.resolve_id(self.dir, "a"), (flat, False))
        self.assertEqual(mailboxes.resolve_id(self.dir, "b"), (bundled, False))
        self.assertEqual(mailboxes.resolve_id(self.dir, "c"), (None, False))

    def test_symlink_refused(self):
        """A symlinked <id>.md is refused without falling back to the bundle."""
        outside = os.path.abspath(self.mktemp())
        with open(outside, "w"):
            pass
        os.symlink(outside, os.path.join(self.dir, "x.md"))
        self.write("x/x.md")
        self.assertEqual(mailboxes.resolve_id(self.dir, "x"), (None, True))

    def test_symlinked_bundle_refused(self):
        """A bundle directory that is a symlink out of the mailbox is refused."""
        elsewhere = os.path.abspath(self.mktemp())
        os.makedirs(elsewhere)
        with open(os.path.join(elsewhere, "y.md"), "w"):
            pass
        os.symlink(elsewhere, os.path.join(self.dir, "y"))
        self.assertEqual(mailboxes.resolve_id(self.dir, "y"), (None, True))

    def test_not_regular(self):
        """A directory named <id>.md is refused."""
        os.makedirs(os.path.join(self.dir, "z.md"))
        self.assertEqual(mailboxes.resolve_id(self.dir, "z"), (None, True))


class MarkTests(SynchronousTestCase):
    def setUp(self):
        d = self.dir = os.path.abspath(self.mktemp())
        os.makedirs(d)
        self.path = os.path.join(d, "m.md")
        self.original = frontmatter.render(
            {"id": "m", "subject": "s", "read": False, "labels": ["a"]}, "Body\n+++\ntext\n"
        )
        with open(self.path, "wb") as f:
            f.write(self.original)
        os.chmod(self.path, 0o644)

    def read(self):
        with open(self.path, "rb") as f:
            return frontmatter.parse(f.read())

    def test_mark_read_then_unread(self):
        """read/read_at are set then removed; the body bytes and mode 0600 are kept."""
        self.assertEqual(mailboxes.mark_id(self.dir, "m", True, NOW, ME), (self.path, False))
        fields, body = self.read()
        self.assertEqual((fields["read"], fields["read_at"]), (True, "2026-01-02T03:04:05Z"))
        self.assertEqual(body, frontmatter.parse(self.original)[1])
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)
        mailboxes.mark_id(self.dir, "m", False, NOW, ME)
        fields, _ = self.read()
        self.assertIs(fields["read"], False)
        self.assertNotIn("read_at", fields)
        self.assertEqual(os.listdir(os.path.dirname(self.path)), ["m.md"])

    def test_unresolved_owner_keeps_ids(self):
        """An owner without ids keeps the file's current owner."""
        mailboxes.mark_id(self.dir, "m", True, NOW, Owner("ghost", None, None))
        self.assertEqual(os.stat(self.path).st_uid, os.geteuid())

    def test_malformed(self):
        """A file without frontmatter is IO `malformed frontmatter`, left unchanged."""
        with open(self.path, "wb") as f:
            f.write(b"no frontmatter\n")
        e = self.assertRaises(IOFailure, mailboxes.mark_id, self.dir, "m", True, NOW, ME)
        self.assertIn("malformed frontmatter in", str(e))
        with open(self.path, "wb") as f:
            f.write(b"+++\nread = = x\n+++\n")
        e = self.assertRaises(IOFailure, mailboxes.mark_id, self.dir, "m", True, NOW, ME)
        self.assertIn("failed to parse frontmatter in", str(e))

    def test_size_limit(self):
        """A file at the mark limit is marked; one byte more is IO naming it, unread, unchanged."""
        self.assertEqual(mailboxes.MAX_MARK_BYTES, 64 * 1024 * 1024)
        self.patch(mailboxes, "MAX_MARK_BYTES", len(self.original))
        mailboxes.mark_id(self.dir, "m", True, NOW, ME)
        self.assertIs(self.read()[0]["read"], True)
        with open(self.path, "wb") as f:
            f.write(self.original + b"x")
        asked = record_reads(self)
        e = self.assertRaises(IOFailure, mailboxes.mark_id, self.dir, "m", True, NOW, ME)
        self.assertEqual(str(e), f"refusing to mark {self.path}: {len(self.original) + 1} "
                                 f"bytes, over the {len(self.original)}-byte limit")
        self.assertEqual(asked, [])
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), self.original + b"x")

    def test_reads_the_stat_size_only(self):
        """The rewrite reads fstat's size, no more; a file grown meanwhile is IO, kept whole."""
        opened = mailboxes._open_email(self.dir, "m")
        self.addCleanup(opened.close)
        with open(self.path, "ab") as f:
            f.write(b"appended by the owner\n")
        asked = record_reads(self)
        e = self.assertRaises(IOFailure, mailboxes._rewrite, opened, True, NOW, ME)
        self.assertEqual(str(e), f"{self.path} changed while being read; try again")
        self.assertEqual(sum(asked), len(self.original))
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), self.original + b"appended by the owner\n")
        self.assertEqual(os.listdir(self.dir), ["m.md"])

    def test_write_failure(self):
        """A failed rewrite is IO; no temp file is left and the file is unchanged."""
        tmp = os.path.join(os.path.dirname(self.path), f".m.md.tmp.{os.getpid()}")
        os.mkdir(tmp)
        e = self.assertRaises(IOFailure, mailboxes.mark_id, self.dir, "m", True, NOW, ME)
        self.assertIn("failed to write", str(e))
        os.rmdir(tmp)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), self.original)


class MarkSafetyTests(SynchronousTestCase):
    """MARK resolves and rewrites through directory fds (no path TOCTOU, finding 1)."""

    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        self.dir = os.path.join(self.base, "inbox", "alice")
        os.makedirs(self.dir)
        self.outside = os.path.join(self.base, "victim")
        os.makedirs(self.outside)
        self.victim = os.path.join(self.outside, "x.md")
        self.victim_bytes = frontmatter.render({"id": "x", "read": False}, "root only\n")
        with open(self.victim, "wb") as f:
            f.write(self.victim_bytes)
        os.chmod(self.victim, 0o600)

    def assertVictimUntouched(self):
        with open(self.victim, "rb") as f:
            self.assertEqual(f.read(), self.victim_bytes)
        st = os.stat(self.victim)
        self.assertEqual((st.st_uid, st.st_mode & 0o777, st.st_nlink), (os.geteuid(), 0o600, 1))
        self.assertEqual(os.listdir(self.outside), ["x.md"])

    def test_symlinked_bundle_dir_refused(self):
        """<id>/ swapped for a symlink to a directory outside: refused, nothing outside changes."""
        os.symlink(self.outside, os.path.join(self.dir, "x"))
        self.assertEqual(mailboxes.mark_id(self.dir, "x", True, NOW, ME), (None, True))
        self.assertEqual(mailboxes.resolve_id(self.dir, "x"), (None, True))
        self.assertVictimUntouched()
        self.assertEqual(os.listdir(self.dir), ["x"])

    def test_bundle_swapped_after_open_stays_in_bundle(self):
        """The rewrite goes through the bundle's fd: swapping <id>/ after the lookup is harmless."""
        bundle = os.path.join(self.dir, "x")
        os.makedirs(bundle)
        with open(os.path.join(bundle, "x.md"), "wb") as f:
            f.write(email())
        opened = mailboxes._open_email(self.dir, "x")
        self.addCleanup(opened.close)
        # The owner swaps the bundle for a symlink between the check and the use.
        os.rename(bundle, os.path.join(self.dir, "moved"))
        os.symlink(self.outside, bundle)
        mailboxes._rewrite(opened, True, NOW, ME)
        self.assertVictimUntouched()
        with open(os.path.join(self.dir, "moved", "x.md"), "rb") as f:
            self.assertIs(frontmatter.parse(f.read())[0]["read"], True)
        self.assertEqual(os.listdir(os.path.join(self.dir, "moved")), ["x.md"])

    def test_hard_link_refused(self):
        """A <id>.md hard-linked elsewhere (st_nlink 2) is refused, flat or bundled."""
        os.link(self.victim, os.path.join(self.dir, "x.md"))
        self.assertEqual(mailboxes.mark_id(self.dir, "x", True, NOW, ME), (None, True))
        os.unlink(os.path.join(self.dir, "x.md"))
        os.makedirs(os.path.join(self.dir, "x"))
        os.link(self.victim, os.path.join(self.dir, "x", "x.md"))
        self.assertEqual(mailboxes.mark_id(self.dir, "x", True, NOW, ME), (None, True))
        with open(self.victim, "rb") as f:
            self.assertEqual(f.read(), self.victim_bytes)

    def test_symlinked_file_in_bundle_refused(self):
        """<id>/<id>.md that is a symlink is refused."""
        os.makedirs(os.path.join(self.dir, "x"))
        os.symlink(self.victim, os.path.join(self.dir, "x", "x.md"))
        self.assertEqual(mailboxes.mark_id(self.dir, "x", True, NOW, ME), (None, True))
        self.assertVictimUntouched()

    def test_fifo_refused(self):
        """A FIFO named <id>.md is refused without blocking."""
        os.mkfifo(os.path.join(self.dir, "x.md"))
        self.assertEqual(mailboxes.mark_id(self.dir, "x", True, NOW, ME), (None, True))

    def test_device_refused(self):
        """A device node named <id>.md is refused and never read."""
        try:
            os.mknod(os.path.join(self.dir, "x.md"), stat.S_IFCHR | 0o600, os.makedev(1, 5))
        except PermissionError:
            raise SkipTest("mknod needs CAP_MKNOD")
        self.assertEqual(mailboxes.mark_id(self.dir, "x", True, NOW, ME), (None, True))

    def test_bundle_not_a_directory_refused(self):
        """A regular file named <id> (no <id>.md) is refused."""
        with open(os.path.join(self.dir, "x"), "wb") as f:
            f.write(email())
        self.assertEqual(mailboxes.mark_id(self.dir, "x", True, NOW, ME), (None, True))

    def test_vanished_is_not_found(self):
        """An id whose file or mailbox directory is gone resolves to not found, not an error."""
        self.assertEqual(mailboxes.mark_id(self.dir, "x", True, NOW, ME), (None, False))
        os.makedirs(os.path.join(self.dir, "x"))
        self.assertEqual(mailboxes.mark_id(self.dir, "x", True, NOW, ME), (None, False))
        gone = os.path.join(self.base, "inbox", "bob")
        self.assertEqual(mailboxes.mark_id(gone, "x", True, NOW, ME), (None, False))
        self.assertEqual(mailboxes.resolve_id(gone, "x"), (None, False))

    def test_symlinked_mailbox_dir_not_followed(self):
        """The mailbox directory itself is opened with O_NOFOLLOW."""
        link = os.path.join(self.base, "inbox", "bob")
        os.symlink(self.outside, link)
        self.assertEqual(mailboxes.mark_id(link, "x", True, NOW, ME), (None, False))
        self.assertVictimUntouched()

    def test_temp_cleaned_on_failure(self):
        """A failed rewrite removes the temp it created through the directory fd."""
        bundle = os.path.join(self.dir, "x")
        os.makedirs(bundle)
        with open(os.path.join(bundle, "x.md"), "wb") as f:
            f.write(email())
        opened = mailboxes._open_email(self.dir, "x")
        self.addCleanup(opened.close)
        # Make the final rename fail: the target name is now a non-empty directory.
        os.unlink(os.path.join(bundle, "x.md"))
        os.makedirs(os.path.join(bundle, "x.md", "sub"))
        self.assertRaises(IOFailure, mailboxes._rewrite, opened, True, NOW, ME)
        self.assertEqual(os.listdir(bundle), ["x.md"])


class CountSafetyTests(SynchronousTestCase):
    def test_planted_entries_not_followed(self):
        """Counting skips a FIFO bundle file, a symlinked bundle and a hard link, without blocking."""
        inbox = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(inbox, "fifo"))
        os.mkfifo(os.path.join(inbox, "fifo", "fifo.md"))
        outside = os.path.abspath(self.mktemp())
        os.makedirs(outside)
        with open(os.path.join(outside, "away.md"), "wb") as f:
            f.write(b"+++\nread = true\n+++\n")
        os.symlink(outside, os.path.join(inbox, "away"))
        os.link(os.path.join(outside, "away.md"), os.path.join(inbox, "linked.md"))
        with open(os.path.join(inbox, "real.md"), "wb") as f:
            f.write(b"+++\nread = false\n+++\n")
        self.assertEqual(mailboxes.count_messages(inbox), (1, 1))

    def test_special_files_not_counted(self):
        """A flat FIFO or device named *.md is neither counted nor opened."""
        inbox = os.path.abspath(self.mktemp())
        os.makedirs(inbox)
        os.mkfifo(os.path.join(inbox, "fifo.md"))
        try:
            os.mknod(os.path.join(inbox, "zero.md"), stat.S_IFCHR | 0o600, os.makedev(1, 5))
        except PermissionError:
            pass  # no CAP_MKNOD: the FIFO alone
        with open(os.path.join(inbox, "real.md"), "wb") as f:
            f.write(b"+++\nread = true\n+++\n")
        self.assertEqual(mailboxes.count_messages(inbox), (1, 0))
