"""The no-follow file primitives on a real temporary directory, against a hostile owner.

The directory's owner may swap any entry for a symlink, a FIFO, a device or a hard
link to a file of someone else's; nothing here may read, write or chown through one.
"""

import errno
import os
import stat
import threading

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from aimx.store import safefs
from aimx.store.passwd import Owner

ME = Owner("me", os.geteuid(), os.getegid())


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


class DirTestCase(SynchronousTestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.fd = safefs.open_dir(self.dir)
        self.addCleanup(os.close, self.fd)
        self.outside = os.path.abspath(self.mktemp())
        os.makedirs(self.outside)
        self.victim = os.path.join(self.outside, "victim")
        with open(self.victim, "wb") as f:
            f.write(b"root only")
        os.chmod(self.victim, 0o600)

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def write(self, name: str, data: bytes = b"data") -> str:
        with open(self.path(name), "wb") as f:
            f.write(data)
        return self.path(name)

    def read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def assertVictimUntouched(self):
        self.assertEqual(self.read(self.victim), b"root only")
        st = os.stat(self.victim)
        self.assertEqual((st.st_uid, st.st_mode & 0o777, st.st_nlink), (os.geteuid(), 0o600, 1))
        self.assertEqual(os.listdir(self.outside), ["victim"])


class OpenDirTests(DirTestCase):
    def test_symlinked_directory_refused(self):
        """A directory reached through a symlink is not opened (ELOOP)."""
        os.symlink(self.outside, self.path("link"))
        self.assertRaises(OSError, safefs.open_dir, "link", self.fd)
        self.assertRaises(OSError, safefs.open_dir, self.path("link"))

    def test_directory_context_closes(self):
        """L{safefs.directory} yields an open descriptor and closes it on exit."""
        with safefs.directory(self.dir) as fd:
            os.fstat(fd)
        self.assertRaises(OSError, os.fstat, fd)

    def test_subdir(self):
        """A real subdirectory opens; an absent one is None; a symlink or a file is refused."""
        os.mkdir(self.path("real"))
        fd = safefs.open_subdir(self.fd, "real")
        self.addCleanup(os.close, fd)
        self.assertTrue(stat.S_ISDIR(os.fstat(fd).st_mode))
        self.assertIsNone(safefs.open_subdir(self.fd, "absent"))
        os.symlink(self.outside, self.path("link"))
        self.assertRaises(safefs.Refused, safefs.open_subdir, self.fd, "link")
        self.write("file")
        self.assertRaises(safefs.Refused, safefs.open_subdir, self.fd, "file")


class OpenRegularTests(DirTestCase):
    def test_regular_file(self):
        """A singly-linked regular file opens, with its fstat; an absent one is None."""
        self.write("a", b"hello")
        fd, st = safefs.open_regular(self.fd, "a")
        self.addCleanup(os.close, fd)
        self.assertEqual((os.read(fd, 10), st.st_size), (b"hello", 5))
        self.assertIsNone(safefs.open_regular(self.fd, "absent"))

    def test_symlink_refused(self):
        """A symlink is refused, never followed."""
        os.symlink(self.victim, self.path("a"))
        self.assertRaises(safefs.Refused, safefs.open_regular, self.fd, "a")

    def test_hard_link_refused(self):
        """A file with a second hard link (st_nlink 2) is refused."""
        os.link(self.victim, self.path("a"))
        self.assertRaises(safefs.Refused, safefs.open_regular, self.fd, "a")

    def test_fifo_refused_without_blocking(self):
        """A FIFO is refused, and opening it does not wait for a writer."""
        os.mkfifo(self.path("a"))
        self.assertRaises(safefs.Refused, safefs.open_regular, self.fd, "a")

    def test_directory_refused(self):
        """A directory is not a regular file."""
        os.mkdir(self.path("a"))
        self.assertRaises(safefs.Refused, safefs.open_regular, self.fd, "a")

    def test_device_refused(self):
        """A device node is refused and never read."""
        try:
            os.mknod(self.path("a"), stat.S_IFCHR | 0o600, os.makedev(1, 5))
        except PermissionError:
            raise SkipTest("mknod needs CAP_MKNOD")
        self.assertRaises(safefs.Refused, safefs.open_regular, self.fd, "a")


class OpenOwnedTests(DirTestCase):
    """The guarded open of a hook's stdin: root opens it for the mailbox owner."""

    def open(self, name: str, uid: int = ME.uid) -> int:
        fd = safefs.open_owned(self.dir, name, uid)
        self.addCleanup(os.close, fd)
        return fd

    def test_own_file(self):
        """The owner's regular file opens blocking and close-on-exec, flat or in a bundle."""
        self.write("a.md", b"hello")
        os.mkdir(self.path("b"))
        self.write("b/b.md", b"bundle")
        fd = self.open("a.md")
        self.assertEqual(os.read(fd, 10), b"hello")
        self.assertTrue(os.get_blocking(fd))
        self.assertFalse(os.get_inheritable(fd))
        self.assertEqual(os.read(self.open("b/b.md"), 10), b"bundle")

    def test_other_owner_refused(self):
        """A file whose owner is not the given uid is refused, saying whose it is."""
        self.write("a.md")
        with self.assertRaises(safefs.Refused) as caught:
            safefs.open_owned(self.dir, "a.md", ME.uid + 1)
        self.assertEqual(str(caught.exception), f"owned by uid {ME.uid}, not {ME.uid + 1}")

    def test_symlink_not_followed(self):
        """A symlink swapped in for the file is not followed (ELOOP)."""
        os.symlink(self.victim, self.path("a.md"))
        with self.assertRaises(OSError) as caught:
            safefs.open_owned(self.dir, "a.md", ME.uid)
        self.assertEqual(caught.exception.errno, errno.ELOOP)

    def test_symlinked_bundle_not_followed(self):
        """A bundle directory swapped for a symlink is not followed."""
        os.symlink(self.outside, self.path("victim"))
        self.assertRaises(OSError, safefs.open_owned, self.dir, "victim/victim", ME.uid)

    def test_symlinked_directory_not_followed(self):
        """The directory itself is not opened through a symlink."""
        os.symlink(self.dir, self.path("link"))
        self.write("a.md")
        self.assertRaises(OSError, safefs.open_owned, self.path("link"), "a.md", ME.uid)

    def test_fifo_refused_without_blocking(self):
        """A FIFO is refused as not a regular file, and opening it does not wait."""
        os.mkfifo(self.path("a.md"))
        with self.assertRaises(safefs.Refused) as caught:
            safefs.open_owned(self.dir, "a.md", ME.uid)
        self.assertEqual(str(caught.exception), "not a regular file")

    def test_directory_refused(self):
        """A directory at the name is not a regular file."""
        os.mkdir(self.path("a.md"))
        self.assertRaises(safefs.Refused, safefs.open_owned, self.dir, "a.md", ME.uid)

    def test_missing(self):
        """A missing file is FileNotFoundError."""
        self.assertRaises(FileNotFoundError, safefs.open_owned, self.dir, "a.md", ME.uid)

    def test_names_outside_refused(self):
        """C{..}, C{.} and empty components are refused before anything is opened."""
        self.write("a.md")
        for name in ("../outside/victim", "./a.md", "b//a.md", "", "a.md/."):
            self.assertRaises(safefs.Refused, safefs.open_owned, self.dir, name, ME.uid)


class ReadUpToTests(DirTestCase):
    def test_bounded(self):
        """At most the size asked for is read; fewer bytes only at end of file."""
        self.write("a", b"x" * 100)
        fd, _ = safefs.open_regular(self.fd, "a")
        self.addCleanup(os.close, fd)
        asked = record_reads(self)
        self.assertEqual(safefs.read_up_to(fd, 60), b"x" * 60)
        self.assertEqual(asked, [60])
        self.assertEqual(safefs.read_up_to(fd, 60), b"x" * 40)


class CreateFileTests(DirTestCase):
    def setUp(self):
        super().setUp()
        old = os.umask(0o077)
        self.addCleanup(os.umask, old)

    def test_mode_whatever_the_umask(self):
        """The file gets exactly its mode (the umask does not narrow it) and its data."""
        self.assertEqual(safefs.create_file(self.fd, "a", b"data", mode=0o644), [])
        self.assertEqual(os.stat(self.path("a")).st_mode & 0o777, 0o644)
        self.assertEqual(self.read(self.path("a")), b"data")

    def test_existing_names_never_opened(self):
        """A taken name, a symlink to a victim included, is FileExistsError; nothing written."""
        self.write("a", b"old")
        self.assertRaises(FileExistsError, safefs.create_file, self.fd, "a", b"new", mode=0o600)
        self.assertEqual(self.read(self.path("a")), b"old")
        os.symlink(self.victim, self.path("b"))
        self.assertRaises(FileExistsError, safefs.create_file, self.fd, "b", b"new", mode=0o600)
        self.assertVictimUntouched()

    def test_failed_write_removes_the_file(self):
        """A write that fails leaves no file behind."""

        def fail(fd, data):
            raise OSError(28, "No space left on device")

        self.patch(os, "write", fail)
        self.assertRaises(OSError, safefs.create_file, self.fd, "a", b"data", mode=0o600)
        self.assertEqual(os.listdir(self.dir), [])

    def test_unresolved_owner_is_a_warning(self):
        """An owner that does not resolve is a warning; the file keeps its mode."""
        warnings = safefs.create_file(
            self.fd, "a", b"data", mode=0o600, owner=Owner("ghost", None, None)
        )
        self.assertEqual(warnings, ["owner 'ghost' does not resolve; not changing ownership"])
        self.assertEqual(os.stat(self.path("a")).st_mode & 0o777, 0o600)

    def test_owner(self):
        """As root the file belongs to the owner's uid and primary gid."""
        if os.geteuid() != 0:
            raise SkipTest("needs root to chown")
        nobody = Owner("nobody", 65534, 65534)
        self.assertEqual(safefs.create_file(self.fd, "a", b"", mode=0o600, owner=nobody), [])
        st = os.stat(self.path("a"))
        self.assertEqual((st.st_uid, st.st_gid), (65534, 65534))


class SetOwnerTests(DirTestCase):
    def setUp(self):
        super().setUp()
        self.file = self.write("a")
        os.chmod(self.file, 0o644)
        self.nobody = Owner("nobody", ME.uid + 1, ME.gid + 1)
        self.failure = PermissionError(1, "Operation not permitted")

        def chown(*args):
            raise self.failure

        self.patch(os, "chown", chown)

    def test_chown_failure_is_a_warning(self):
        """A chown that fails is a warning; the mode is set all the same."""
        warnings = safefs.set_owner(self.file, self.nobody, 0o600)
        self.assertEqual(warnings, ["chown to 'nobody' failed: Operation not permitted"])
        self.assertEqual(os.stat(self.file).st_mode & 0o777, 0o600)

    def test_strict(self):
        """strict: EPERM is tolerated (warned) only in a process that is not root;
        as root, or any other error, it raises."""
        self.patch(os, "geteuid", lambda: ME.uid + 2)
        self.assertEqual(len(safefs.set_owner(self.file, self.nobody, 0o600, strict=True)), 1)
        self.failure = OSError(22, "Invalid argument")
        self.assertRaises(OSError, safefs.set_owner, self.file, self.nobody, 0o600, strict=True)
        self.failure = PermissionError(1, "Operation not permitted")
        self.patch(os, "geteuid", lambda: 0)
        self.assertRaises(PermissionError, safefs.set_owner, self.file, self.nobody, 0o600,
                          strict=True)

    def test_own_ids_not_chowned(self):
        """Ids that are the process's own need no chown."""
        self.assertEqual(safefs.set_owner(self.file, ME, 0o600), [])


class PublishTests(DirTestCase):
    def test_publish_link(self):
        """The temp file becomes the final name and is gone."""
        safefs.create_file(self.fd, ".tmp", b"new", mode=0o600)
        safefs.publish_link(self.fd, ".tmp", "final")
        self.assertEqual(os.listdir(self.dir), ["final"])
        self.assertEqual(self.read(self.path("final")), b"new")

    def test_never_replaces(self):
        """A final name taken meanwhile is FileExistsError, kept, and the temp is removed."""
        self.write("final", b"old")
        safefs.create_file(self.fd, ".tmp", b"new", mode=0o600)
        self.assertRaises(FileExistsError, safefs.publish_link, self.fd, ".tmp", "final")
        self.assertEqual(os.listdir(self.dir), ["final"])
        self.assertEqual(self.read(self.path("final")), b"old")

    def test_temp_swapped_for_symlink(self):
        """A temp swapped for a symlink is linked as the link itself, never its target."""
        os.symlink(self.victim, self.path(".tmp"))
        safefs.publish_link(self.fd, ".tmp", "final")
        self.assertTrue(os.path.islink(self.path("final")))
        self.assertVictimUntouched()

    def test_claim_dir(self):
        """A directory name is claimed once; a symlink in the way counts as taken."""
        safefs.claim_dir(self.fd, "b", 0o700)
        self.assertRaises(FileExistsError, safefs.claim_dir, self.fd, "b", 0o700)
        os.symlink(self.outside, self.path("c"))
        self.assertRaises(FileExistsError, safefs.claim_dir, self.fd, "c", 0o700)
        self.assertVictimUntouched()


class ReplaceFileTests(DirTestCase):
    def test_replace(self):
        """The file is replaced whole, with its mode; no temp is left."""
        self.write("a", b"old")
        safefs.replace_file(self.fd, "a", b"new", mode=0o640)
        self.assertEqual(os.listdir(self.dir), ["a"])
        self.assertEqual(self.read(self.path("a")), b"new")
        self.assertEqual(os.stat(self.path("a")).st_mode & 0o777, 0o640)

    def test_symlink_replaced_not_followed(self):
        """A name that is a symlink is replaced by the file; its target is untouched."""
        os.symlink(self.victim, self.path("a"))
        safefs.replace_file(self.fd, "a", b"new", mode=0o600)
        self.assertFalse(os.path.islink(self.path("a")))
        self.assertVictimUntouched()

    def test_planted_temp_removed(self):
        """A file or symlink left at the temp name is removed first, never written through."""
        tmp = f".a.tmp.{os.getpid()}"
        os.symlink(self.victim, self.path(tmp))
        safefs.replace_file(self.fd, "a", b"new", mode=0o600)
        self.assertEqual(os.listdir(self.dir), ["a"])
        self.assertVictimUntouched()

    def test_failure_keeps_old_file(self):
        """A rename that fails keeps the old file and removes the temp."""
        os.makedirs(self.path("a/sub"))
        self.assertRaises(OSError, safefs.replace_file, self.fd, "a", b"new", mode=0o600)
        self.assertEqual(os.listdir(self.dir), ["a"])

    def test_temp_name(self):
        """The temp name can be chosen (in the same directory)."""
        names = []
        real = os.replace

        def replace(src, dst, **kwargs):
            names.append(src)
            return real(src, dst, **kwargs)

        self.patch(os, "replace", replace)
        safefs.replace_file(self.fd, "a", b"new", mode=0o600, tmp=".mine")
        safefs.replace_file(self.fd, "a", b"new", mode=0o600)
        self.assertEqual(names, [".mine", f".a.tmp.{os.getpid()}"])



class ScanTests(DirTestCase):
    def test_kinds(self):
        """Entries are reported by their own kind: links, FIFOs and dangling links never followed."""
        os.makedirs(self.path("d"))
        self.write("f")
        os.symlink(self.outside, self.path("to-dir"))
        os.symlink(self.victim, self.path("to-file"))
        os.symlink(self.path("gone"), self.path("dangling"))
        os.mkfifo(self.path("fifo"))
        self.assertEqual(sorted(safefs.scan(self.fd)), [
            ("d", safefs.DIR), ("dangling", safefs.OTHER), ("f", safefs.FILE),
            ("fifo", safefs.OTHER), ("to-dir", safefs.OTHER), ("to-file", safefs.OTHER),
        ])

    def test_exists(self):
        """Any entry exists, a dangling symlink too; a missing name does not."""
        os.symlink(self.path("gone"), self.path("dangling"))
        self.write("f")
        self.assertTrue(safefs.exists(self.fd, "dangling"))
        self.assertTrue(safefs.exists(self.fd, "f"))
        self.assertFalse(safefs.exists(self.fd, "gone"))


class RemoveTests(DirTestCase):
    def test_tree_and_links(self):
        """A directory goes with its content; links go as links, their targets stay."""
        os.makedirs(self.path("b/c"))
        os.symlink(self.outside, self.path("b/c/out"))
        os.symlink(self.outside, self.path("to-dir"))
        os.symlink(self.victim, self.path("to-file"))
        for name in ("b", "to-dir", "to-file", "missing"):
            safefs.remove(self.fd, name)
        self.assertEqual(os.listdir(self.dir), [])
        self.assertEqual(os.listdir(self.outside), ["victim"])
        self.assertVictimUntouched()

    def test_ignore_errors(self):
        """Best effort raises nothing; without it a failure is an OSError."""
        self.patch(os, "unlink", lambda *a, **kw: (_ for _ in ()).throw(PermissionError()))
        self.write("f")
        safefs.remove(self.fd, "f", ignore_errors=True)
        self.assertRaises(PermissionError, safefs.remove, self.fd, "f")


class ByPathTests(SynchronousTestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)

    def read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def test_replace_through_a_linked_directory(self):
        """By path, the parent may be a symlink (a configured directory): it is followed."""
        link = os.path.abspath(self.mktemp())
        os.symlink(self.dir, link)
        safefs.replace_path(os.path.join(link, "a"), b"new", mode=0o644)
        self.assertEqual(self.read(os.path.join(self.dir, "a")), b"new")
        self.assertEqual(os.listdir(self.dir), ["a"])
        self.assertEqual(os.stat(os.path.join(self.dir, "a")).st_mode & 0o777, 0o644)

    def test_replace_keeps_old_file_on_failure(self):
        """A failed write leaves the old file and no temp."""
        path = os.path.join(self.dir, "a")
        with open(path, "wb") as f:
            f.write(b"old")
        self.patch(safefs, "write_all", lambda fd, data: (_ for _ in ()).throw(OSError(28, "full")))
        self.assertRaises(OSError, safefs.replace_path, path, b"new", mode=0o600)
        self.assertEqual(os.listdir(self.dir), ["a"])
        self.assertEqual(self.read(path), b"old")

    def test_create(self):
        """A new file is created with its mode; an existing name or a symlink is refused."""
        path = os.path.join(self.dir, "k")
        safefs.create_path(path, b"key", mode=0o600)
        self.assertEqual((self.read(path), os.stat(path).st_mode & 0o777), (b"key", 0o600))
        self.assertRaises(FileExistsError, safefs.create_path, path, b"other", mode=0o600)
        target = os.path.join(self.dir, "target")
        os.symlink(target, os.path.join(self.dir, "l"))
        self.assertRaises(FileExistsError, safefs.create_path,
                          os.path.join(self.dir, "l"), b"x", mode=0o600)
        self.assertFalse(os.path.exists(target))
