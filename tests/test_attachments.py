"""Files attached as descriptors: opened by the client, inspected and read by the daemon
(docs/security.md, "Sending identity"; docs/guardrails.md)."""

import os

from twisted.trial.unittest import SynchronousTestCase

from aimx.core.compose import ComposeError
from aimx.core.message import Attachment
from aimx.core.outpolicy import AttachedFile, Root, attachment_refusal
from aimx.store.attachments import open_attachment
from aimx.store.descriptors import inspect, read_attached, real_roots


class AttachmentTestCase(SynchronousTestCase):
    def setUp(self):
        self.dir = os.path.realpath(self.mktemp())
        os.makedirs(self.dir)

    def write(self, name: str, data: bytes = b"attached payload") -> str:
        path = os.path.join(self.dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def opened(self, path: str) -> int:
        fd = open_attachment(path)
        self.addCleanup(os.close, fd)
        return fd

    def refusal(self, path: str) -> str | None:
        """What the daemon would say of C{path} opened by the client, with the test
        directory as the only root."""
        found = inspect(self.opened(path), path)
        return attachment_refusal("box", found, real_roots([self.dir]), self.dir)


class OpenTests(AttachmentTestCase):
    def test_missing(self):
        """A missing path is refused with the spec's text (case 37)."""
        path = os.path.join(self.dir, "nope.txt")
        e = self.assertRaises(ComposeError, open_attachment, path)
        self.assertEqual(str(e), f"Attachment file not found: {path}")

    def test_unreadable(self):
        """A file the caller cannot read is refused with the OS reason."""
        if os.geteuid() == 0:
            raise self.skipTest("root reads any file")
        path = self.write("secret.txt")
        os.chmod(path, 0)
        e = self.assertRaises(ComposeError, open_attachment, path)
        self.assertEqual(str(e), f"Cannot read attachment {path}: Permission denied")

    def test_fifo_does_not_block(self):
        """A FIFO opens at once (no writer needed): the daemon refuses it."""
        path = os.path.join(self.dir, "fifo")
        os.mkfifo(path)
        self.assertEqual(inspect(self.opened(path), path), AttachedFile(path, None, False))


class InspectTests(AttachmentTestCase):
    def test_regular_file(self):
        """A regular file's real path is where it is."""
        path = self.write("report.pdf")
        self.assertEqual(inspect(self.opened(path), path), AttachedFile(path, path, True))
        self.assertIsNone(self.refusal(path))

    def test_dot_dir(self):
        """~/.ssh/id_rsa: a file in a dot-directory is refused."""
        path = self.write(".ssh/id_rsa", b"-----BEGIN OPENSSH PRIVATE KEY-----")
        self.assertIn("dot-directory (.ssh)", self.refusal(path))

    def test_symlink_out_of_the_root(self):
        """A link inside the root to a file outside it is named with its target."""
        outside = os.path.realpath(self.mktemp())
        with open(outside, "w") as f:
            f.write("x")
        link = os.path.join(self.dir, "innocent.txt")
        os.symlink(outside, link)
        self.assertIn(f"attachment {link} (really {outside}) is outside", self.refusal(link))

    def test_symlink_into_a_dot_dir(self):
        """A plain-looking link to a hidden file is refused for the hidden file."""
        secret = self.write(".config/token")
        link = os.path.join(self.dir, "notes.txt")
        os.symlink(secret, link)
        self.assertIn("(.config)", self.refusal(link))

    def test_not_regular(self):
        """/dev/zero, a directory: not regular files."""
        for path in ("/dev/zero", self.dir):
            self.assertIn("is not a regular file", self.refusal(path))

    def test_moved_or_deleted(self):
        """A file renamed after it was opened is judged where it is now; one deleted
        has no real path any more."""
        path = self.write("a.txt")
        fd = self.opened(path)
        moved = os.path.join(self.dir, ".b.txt")
        os.rename(path, moved)
        self.write("a.txt", b"another file now")
        self.assertEqual(inspect(fd, path), AttachedFile(path, moved, True))
        gone = self.write("c.txt")
        fd = self.opened(gone)
        os.unlink(gone)
        self.assertIn("moved or deleted", attachment_refusal(
            "box", inspect(fd, gone), real_roots([self.dir])))

    def test_real_roots(self):
        """Each root comes with its real path: a link's is its target."""
        link = os.path.join(os.path.realpath(self.mktemp()))
        os.symlink(self.dir, link)
        self.assertEqual(real_roots([link, self.dir]),
                         (Root(link, self.dir), Root(self.dir, self.dir)))

    def test_root_swapped_for_a_link(self):
        """A root the client replaced with a link to its dot-dir no longer passes a file
        there, and the refusal names the root."""
        secret = self.write(".ssh/id_rsa")
        outbox = os.path.join(self.dir, "outbox")
        os.symlink(os.path.dirname(secret), outbox)
        found = inspect(self.opened(os.path.join(outbox, "id_rsa")), outbox + "/id_rsa")
        reason = attachment_refusal("box", found, real_roots([outbox]), self.dir)
        self.assertIn(f"attachment root {outbox} is not a real path", reason)


class ReadTests(AttachmentTestCase):
    def test_reads_from_the_start(self):
        """The whole file, whatever the client's position, which it keeps."""
        path = self.write('file"name.txt')
        fd = self.opened(path)
        os.lseek(fd, 5, os.SEEK_SET)
        self.assertEqual(read_attached(fd, path, 1000),
                         Attachment('file"name.txt', "text/plain", b"attached payload"))
        self.assertEqual(os.lseek(fd, 0, os.SEEK_CUR), 5)

    def test_limit(self):
        """Exactly at the limit passes; one byte more is refused."""
        path = self.write("big.bin", b"x" * 100)
        self.assertEqual(len(read_attached(self.opened(path), path, 100).data), 100)
        self.assertRaises(ValueError, read_attached, self.opened(path), path, 99)
