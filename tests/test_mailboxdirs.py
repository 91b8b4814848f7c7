"""Mailbox directories on disk: create/adopt, heal, wipe, count entries."""

import os

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from aimx.errors import ConflictError, IOFailure
from aimx.store import mailboxdirs
from aimx.store.passwd import Owner

ME = Owner("me", os.geteuid(), os.getegid())


class DirsTests(SynchronousTestCase):
    def setUp(self):
        self.data = os.path.abspath(self.mktemp())
        for sub in ("inbox", "sent"):
            os.makedirs(os.path.join(self.data, sub))

    def test_create(self):
        """Both directories are created with mode 0700 and reported as created."""
        created = mailboxdirs.create_dirs(self.data, "eve", ME)
        self.assertEqual(created, list(mailboxdirs.mailbox_dirs(self.data, "eve")))
        for path in created:
            st = os.stat(path)
            self.assertEqual((st.st_mode & 0o777, st.st_uid), (0o700, ME.uid))

    def test_adopt(self):
        """Matching pre-existing directories are adopted (re-chmodded), files untouched."""
        inbox, _ = mailboxdirs.mailbox_dirs(self.data, "eve")
        os.mkdir(inbox)
        os.chmod(inbox, 0o755)
        with open(os.path.join(inbox, "keep.md"), "w"):
            pass
        created = mailboxdirs.create_dirs(self.data, "eve", ME)
        self.assertEqual(len(created), 1)
        self.assertEqual(os.stat(inbox).st_mode & 0o777, 0o700)
        self.assertTrue(os.path.exists(os.path.join(inbox, "keep.md")))

    def test_conflict_not_dir(self):
        """A file in the way is ECONFLICT and nothing is created."""
        _, sent = mailboxdirs.mailbox_dirs(self.data, "eve")
        with open(sent, "w"):
            pass
        e = self.assertRaises(ConflictError, mailboxdirs.create_dirs, self.data, "eve", ME)
        self.assertIn("exists but is not a directory", str(e))
        self.assertFalse(os.path.exists(os.path.join(self.data, "inbox", "eve")))

    def test_conflict_owner(self):
        """A directory with other ids is ECONFLICT naming both, untouched."""
        inbox, _ = mailboxdirs.mailbox_dirs(self.data, "zed")
        os.mkdir(inbox)
        os.chmod(inbox, 0o755)  # explicit: another test's daemon may have set umask 077
        other = Owner("other", ME.uid + 1, ME.gid + 1)
        e = self.assertRaises(ConflictError, mailboxdirs.create_dirs, self.data, "zed", other)
        self.assertIn(f"already exists with owner {ME.uid}:{ME.gid}, expected "
                      f"{other.uid}:{other.gid}; run `chown -R", str(e))
        self.assertEqual(os.stat(inbox).st_mode & 0o777, 0o755)
        self.assertFalse(os.path.exists(os.path.join(self.data, "sent", "zed")))

    def test_create_failure_rolls_back(self):
        """A failed mkdir removes what this call created."""
        os.rmdir(os.path.join(self.data, "sent"))
        e = self.assertRaises(IOFailure, mailboxdirs.create_dirs, self.data, "eve", ME)
        self.assertIn("failed to create", str(e))
        self.assertFalse(os.path.exists(os.path.join(self.data, "inbox", "eve")))

    def test_wipe_and_count(self):
        """Wipe empties a directory (files, bundles, links, dotfiles) and keeps it."""
        inbox, sent = mailboxdirs.mailbox_dirs(self.data, "eve")
        mailboxdirs.create_dirs(self.data, "eve", ME)
        outside = os.path.join(self.data, "outside")
        with open(outside, "w"):
            pass
        os.makedirs(os.path.join(inbox, "b", "c"))
        for name in ("a.md", ".hidden"):
            with open(os.path.join(inbox, name), "w"):
                pass
        os.symlink(outside, os.path.join(inbox, "link"))
        self.assertEqual(mailboxdirs.count_entries(inbox), 4)
        self.assertEqual(mailboxdirs.count_entries(os.path.join(self.data, "nope")), 0)
        mailboxdirs.wipe(inbox)
        self.assertEqual(os.listdir(inbox), [])
        self.assertTrue(os.path.exists(outside))
        mailboxdirs.wipe(os.path.join(self.data, "nope"))

    def test_wipe_never_follows_a_linked_directory(self):
        """A mailbox path that is a symlink is not wiped through (ELOOP); its target stays."""
        outside = os.path.join(self.data, "outside")
        os.makedirs(outside)
        with open(os.path.join(outside, "keep"), "w"):
            pass
        link = os.path.join(self.data, "inbox", "eve")
        os.symlink(outside, link)
        self.assertRaises(OSError, mailboxdirs.wipe, link)
        self.assertEqual(os.listdir(outside), ["keep"])


class PrepareTests(SynchronousTestCase):
    def setUp(self):
        self.dir = os.path.join(os.path.abspath(self.mktemp()), "inbox", "eve")

    def test_created_and_healed(self):
        """A missing directory is created 0700; a drifted mode is healed."""
        self.assertEqual(mailboxdirs.prepare(self.dir, ME), [])
        self.assertEqual(os.stat(self.dir).st_mode & 0o777, 0o700)
        os.chmod(self.dir, 0o755)
        self.assertEqual(mailboxdirs.prepare(self.dir, ME), [])
        self.assertEqual(os.stat(self.dir).st_mode & 0o777, 0o700)

    def test_not_a_directory(self):
        """A file (or a symlink) in the mailbox's place is a conflict, left alone."""
        os.makedirs(os.path.dirname(self.dir))
        os.symlink(os.path.dirname(self.dir), self.dir)
        self.assertRaises(mailboxdirs.OwnerConflict, mailboxdirs.prepare, self.dir, ME)
        self.assertTrue(os.path.islink(self.dir))

    def test_never_handed_to_another_user(self):
        """A directory of another (non-root) user is never chowned to the owner."""
        if os.geteuid() != 0:
            raise SkipTest("needs root to create another user's directory")
        os.makedirs(self.dir)
        os.chown(self.dir, 65534, 65534)
        e = self.assertRaises(mailboxdirs.OwnerConflict, mailboxdirs.prepare, self.dir,
                              Owner("daemon", 1, 1))
        self.assertIn("not to the mailbox owner 'daemon'; not changing its ownership", str(e))
        self.assertEqual(os.stat(self.dir).st_uid, 65534)

    def test_unresolved_owner(self):
        """An owner that does not resolve is a warning; the mode is still set."""
        self.assertEqual(mailboxdirs.prepare(self.dir, Owner("ghost", None, None)),
                         ["owner 'ghost' does not resolve; not changing ownership"])
