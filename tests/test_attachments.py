"""Files a client attaches (docs/security.md, "Sending identity")."""

import os

from twisted.trial.unittest import SynchronousTestCase

from aimx.core.compose import Attachment, ComposeError
from aimx.store.attachments import read_attachment


class ReadAttachmentTests(SynchronousTestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)

    def write(self, name: str, data: bytes = b"attached payload") -> str:
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_reads_file(self):
        """The basename, a type guessed from the extension, and the bytes."""
        self.assertEqual(read_attachment(self.write('file"name.txt')),
                         Attachment('file"name.txt', "text/plain", b"attached payload"))

    def test_missing(self):
        """A missing path is refused with the spec's text (case 37)."""
        path = os.path.join(self.dir, "nope.txt")
        e = self.assertRaises(ComposeError, read_attachment, path)
        self.assertEqual(str(e), f"Attachment file not found: {path}")

    def test_directory(self):
        """A directory is not a file."""
        e = self.assertRaises(ComposeError, read_attachment, self.dir)
        self.assertEqual(str(e), f"Attachment path is not a file: {self.dir}")

    def test_symlink_to_file(self):
        """A symlink is followed to the regular file; the link's name is used."""
        link = os.path.join(self.dir, "link.md")
        os.symlink(self.write("target.bin"), link)
        self.assertEqual(read_attachment(link).filename, "link.md")

    def test_unreadable(self):
        """An unreadable file is refused with the OS reason."""
        if os.geteuid() == 0:
            raise self.skipTest("root reads any file")
        path = self.write("secret.txt")
        os.chmod(path, 0)
        e = self.assertRaises(ComposeError, read_attachment, path)
        self.assertEqual(str(e), f"Cannot read attachment {path}: Permission denied")
