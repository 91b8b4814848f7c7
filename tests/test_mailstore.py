"""The mail store on a real temporary directory: publish, names, modes, owners, dedup."""

import datetime
import os
import pwd

from twisted.trial.unittest import SynchronousTestCase

from aimx.core import frontmatter
from aimx.core.message import Attachment
from aimx.store import safefs
from aimx.store.mailstore import MailStore

UTC = datetime.timezone.utc
T0 = datetime.datetime(2025, 3, 14, 15, 9, 26, 123456, tzinfo=UTC)


def fields(message_id="m@x", subject="Hello", body="b0", trusted="none") -> dict:
    return {
        "message_id": message_id, "thread_id": "0" * 16, "from": "a@x", "to": "b@y",
        "delivered_to": "b@y", "subject": subject, "date": None, "size_bytes": 10,
        "body_sha256": body, "dkim": "none", "spf": "none", "dmarc": "none",
        "trusted": trusted, "mailbox": "alice", "read": False,
    }


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


class StoreTestCase(SynchronousTestCase):
    def setUp(self):
        self.root = self.mktemp()
        self.clock = Clock(T0)
        self.store = MailStore(self.root, now=self.clock)
        self.owner = pwd.getpwuid(os.geteuid()).pw_name

    def put(self, message_id="m@x", subject="Hello", attachments=(), owner=None, store=None,
            body="b0", trusted="none"):
        return (store or self.store).store_inbound(
            "alice", owner or self.owner, subject,
            fields(message_id, subject, body, trusted), "body\n", attachments,
        )

    def names(self) -> list[str]:
        return sorted(os.listdir(os.path.join(self.root, "inbox", "alice")))


class PublishTests(StoreTestCase):
    def test_flat_file(self):
        """A message without attachments is one flat .md named by time and slug (case 27)."""
        stored = self.put()
        self.assertEqual(stored.id, "2025-03-14-150926-hello")
        self.assertEqual(self.names(), ["2025-03-14-150926-hello.md"])
        with open(stored.path, "rb") as f:
            data, body = frontmatter.parse(f.read())
        self.assertEqual(data["id"], stored.id)
        self.assertEqual(data["received_at"], "2025-03-14T15:09:26.123456+00:00")
        self.assertEqual(data["date"], data["received_at"])
        self.assertEqual(body, b"body\n")

    def test_same_second_collisions(self):
        """Same second, same subject: -2, -3; an existing bundle dir forces -2 (case 27)."""
        ids = [self.put(f"{i}@x").id for i in range(3)]
        self.assertEqual(
            ids,
            ["2025-03-14-150926-hello", "2025-03-14-150926-hello-2", "2025-03-14-150926-hello-3"],
        )
        other = MailStore(self.mktemp(), now=self.clock)
        os.makedirs(os.path.join(other.inbox_dir("alice"), "2025-03-14-150926-hello"))
        self.assertEqual(self.put(store=other).id, "2025-03-14-150926-hello-2")

    def test_bundle(self):
        """Attachments make <stem>/<stem>.md plus the files, without an attachments/ dir."""
        parts = (Attachment("notes.txt", "text/plain", b"n"), Attachment("notes.txt", "text/plain", b"m"))
        stored = self.put(attachments=parts)
        bundle = os.path.dirname(stored.path)
        self.assertEqual(
            sorted(os.listdir(bundle)), ["2025-03-14-150926-hello.md", "notes-1.txt", "notes.txt"]
        )
        with open(stored.path, "rb") as f:
            data, _ = frontmatter.parse(f.read())
        self.assertEqual(
            data["attachments"],
            [
                {"filename": "notes.txt", "content_type": "text/plain", "size": 1, "path": "notes.txt"},
                {"filename": "notes-1.txt", "content_type": "text/plain", "size": 1, "path": "notes-1.txt"},
            ],
        )

    def test_attachment_named_like_the_md(self):
        """An attachment named <stem>.md does not clobber the message file."""
        parts = (Attachment("2025-03-14-150926-hello.md", "text/plain", b"evil"),)
        stored = self.put(attachments=parts)
        with open(stored.path, "rb") as f:
            self.assertTrue(f.read().startswith(b"+++\n"))
        self.assertIn("2025-03-14-150926-hello-1.md", os.listdir(os.path.dirname(stored.path)))

    def test_two_bundles_same_attachment_name(self):
        """Two messages each with notes.txt get two bundles (case 33)."""
        part = (Attachment("notes.txt", "text/plain", b"n"),)
        self.put("1@x", attachments=part)
        self.put("2@x", attachments=part)
        self.assertEqual(self.names(), ["2025-03-14-150926-hello", "2025-03-14-150926-hello-2"])

    def test_no_temp_files_left(self):
        """Publishing leaves no dot-named temp file behind."""
        self.put()
        self.put("2@x", attachments=(Attachment("a", "text/plain", b"a"),))
        for directory, _, files in os.walk(os.path.join(self.root, "inbox")):
            self.assertEqual([f for f in files if f.startswith(".")], [], directory)

    def test_modes(self):
        """Files are 0600 and mailbox and bundle dirs 0700 (case 38)."""
        stored = self.put(attachments=(Attachment("a.bin", "application/octet-stream", b"\0"),))
        bundle = os.path.dirname(stored.path)
        self.assertEqual(os.stat(stored.path).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(os.path.join(bundle, "a.bin")).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(bundle).st_mode & 0o777, 0o700)
        self.assertEqual(os.stat(self.store.inbox_dir("alice")).st_mode & 0o777, 0o700)

    def test_failed_write_removes_bundle(self):
        """A write failure inside a bundle removes the whole bundle."""

        class Boom(bytes):
            def __len__(self):
                raise OSError("disk full")

        with self.assertRaises(OSError):
            self.put(attachments=(Attachment("a", "text/plain", b"ok"), Attachment("b", "x/y", Boom())))
        self.assertEqual(self.names(), [])


class OwnerTests(StoreTestCase):
    def test_owned_by_mailbox_owner(self):
        """As root, files and dirs belong to the owner's uid and primary gid (case 38)."""
        if os.geteuid() != 0:
            raise self.skipTest("needs root to chown")
        nobody = pwd.getpwnam("nobody")
        stored = self.put(owner="nobody", attachments=(Attachment("a", "text/plain", b"a"),))
        for path in (stored.path, os.path.dirname(stored.path), self.store.inbox_dir("alice")):
            st = os.stat(path)
            self.assertEqual((st.st_uid, st.st_gid), (nobody.pw_uid, nobody.pw_gid), path)

    def test_unchangeable_owner_is_a_warning(self):
        """Without the right to chown, the message is stored and a warning returned (case 38)."""
        if os.geteuid() == 0:
            raise self.skipTest("root can always chown")
        stored = self.put(owner="root")
        self.assertTrue(os.path.exists(stored.path))
        self.assertTrue(any("chown" in w for w in stored.warnings))

    def test_never_handed_to_another_user(self):
        """A mailbox directory of another (non-root) user is never chowned to the owner:
        the message is refused and the directory keeps its owner."""
        if os.geteuid() != 0:
            raise self.skipTest("needs root to create another user's directory")
        nobody = pwd.getpwnam("nobody")
        directory = self.store.inbox_dir("alice")
        os.makedirs(directory)
        os.chown(directory, nobody.pw_uid, nobody.pw_gid)
        from aimx.store.mailstore import OwnerConflict

        self.assertRaises(OwnerConflict, self.put, owner="daemon")
        self.assertEqual(os.stat(directory).st_uid, nobody.pw_uid)
        self.assertEqual(os.listdir(directory), [])

    def test_unknown_owner_is_a_warning(self):
        """An owner missing from passwd stores the message with a warning."""
        stored = self.put(owner="nosuchuser123")
        self.assertTrue(os.path.exists(stored.path))
        self.assertTrue(any("does not resolve" in w for w in stored.warnings))


class DedupTests(StoreTestCase):
    def test_duplicate_skipped(self):
        """The same Message-ID twice in one mailbox is stored once."""
        self.assertFalse(self.put().duplicate)
        self.assertTrue(self.put().duplicate)
        self.assertEqual(len(self.names()), 1)

    def test_no_message_id_never_deduped(self):
        """Mail without a Message-ID is never a duplicate."""
        self.put("")
        self.put("")
        self.assertEqual(len(self.names()), 2)

    def test_fresh_process_remembers(self):
        """A new store (a restart, or aimx ingest) rebuilds the window from disk (case 25)."""
        self.put()
        self.clock.now = T0 + datetime.timedelta(hours=23)
        restarted = MailStore(self.root, now=self.clock)
        self.assertTrue(self.put(store=restarted).duplicate)

    def test_window_expires(self):
        """After 24 h the same Message-ID is stored again, in memory and after a restart."""
        self.put()
        self.clock.now = T0 + datetime.timedelta(hours=24, seconds=1)
        self.assertFalse(self.put().duplicate)
        self.clock.now = T0 + datetime.timedelta(days=5)
        restarted = MailStore(self.root, now=self.clock)
        self.assertFalse(self.put(store=restarted).duplicate)

    def test_other_body_is_stored(self):
        """A copy with the same Message-ID but another body is stored too: a forged copy
        never suppresses the genuine one (nor the other way round)."""
        self.assertFalse(self.put(body="forged").duplicate)
        self.assertFalse(self.put(body="genuine").duplicate)
        self.assertTrue(self.put(body="genuine").duplicate)
        self.assertEqual(len(self.names()), 2)

    def test_more_trusted_copy_is_stored(self):
        """An untrusted copy never suppresses a trusted one of the same message; a later
        copy that is not more trusted is dropped."""
        self.assertFalse(self.put(trusted="false").duplicate)
        self.assertFalse(self.put(trusted="true").duplicate)
        self.assertTrue(self.put(trusted="true").duplicate)
        self.assertTrue(self.put(trusted="false").duplicate)
        self.assertEqual(len(self.names()), 2)

    def test_restart_keeps_hash_and_trust(self):
        """After a restart the window is rebuilt with body hashes and trust from the files."""
        self.put(body="genuine", trusted="false")
        self.clock.now = T0 + datetime.timedelta(hours=1)
        restarted = MailStore(self.root, now=self.clock)
        self.assertTrue(self.put(store=restarted, body="genuine").duplicate)
        self.assertFalse(self.put(store=restarted, body="other").duplicate)
        self.assertFalse(self.put(store=restarted, body="genuine", trusted="true").duplicate)
        again = MailStore(self.root, now=self.clock)
        self.assertTrue(self.put(store=again, body="genuine", trusted="true").duplicate)

    def test_file_without_hash_blocks_nothing(self):
        """A file from before body hashes were stored matches no new copy."""
        directory = self.store.inbox_dir("alice")
        os.makedirs(directory)
        with open(os.path.join(directory, "2025-03-14-150000-old.md"), "wb") as f:
            f.write(b'+++\nmessage_id = "m@x"\nreceived_at = "2025-03-14T15:00:00+00:00"\n+++\n')
        self.assertFalse(self.put().duplicate)

    def test_old_file_does_not_block(self):
        """A stored file whose received_at is 5 days old does not block its Message-ID (case 25)."""
        self.put()
        self.clock.now = T0 + datetime.timedelta(days=5)
        self.assertFalse(self.put(store=MailStore(self.root, now=self.clock)).duplicate)


class BurstTests(StoreTestCase):
    def test_burst_probes_each_name_once(self):
        """A same-second burst continues after the last stem instead of re-probing."""
        ids = [self.put(f"{i}@x").id for i in range(5)]
        self.assertEqual(ids[-1], "2025-03-14-150926-hello-5")
        probed = []
        real = os.path.lexists
        self.patch(os.path, "lexists", lambda p: probed.append(p) or real(p))
        self.assertEqual(self.put("6@x").id, "2025-03-14-150926-hello-6")
        self.assertEqual(len(probed), 1)  # the bundle dir of -6 only; link checks the name

    def test_names_taken_by_others_are_skipped(self):
        """A name created behind the store's back is still never overwritten."""
        self.put("1@x")
        with open(os.path.join(self.store.inbox_dir("alice"), "2025-03-14-150926-hello-2.md"), "w"):
            pass
        self.assertEqual(self.put("2@x").id, "2025-03-14-150926-hello-3")


class HostileOwnerTests(StoreTestCase):
    """The mailbox owner controls the mailbox directory; root must never be fooled."""

    def test_bundle_swapped_for_symlink(self):
        """A bundle dir replaced by a symlink right after mkdir: nothing lands outside."""
        outside = os.path.abspath(self.mktemp())
        os.makedirs(outside)
        real_mkdir = os.mkdir

        def mkdir_then_swap(name, mode=0o777, *, dir_fd=None):
            real_mkdir(name, mode, dir_fd=dir_fd)
            if dir_fd is not None:  # the attacker wins the race
                os.rmdir(name, dir_fd=dir_fd)
                os.symlink(outside, name, dir_fd=dir_fd)

        self.patch(os, "mkdir", mkdir_then_swap)
        with self.assertRaises(OSError):
            self.put(attachments=(Attachment("cron", "text/plain", b"* * * * * root x"),))
        self.assertEqual(os.listdir(outside), [])
        self.assertEqual(os.stat(outside).st_uid, os.geteuid())

    def test_temp_swapped_for_symlink(self):
        """A temp file replaced by a symlink before publishing is never hard-linked through."""
        secret = os.path.abspath(self.mktemp())
        with open(secret, "w") as f:
            f.write("secret")
        real_create = safefs.create_file

        def create_then_swap(dir_fd, name, data, **kwargs):
            warnings = real_create(dir_fd, name, data, **kwargs)
            os.unlink(name, dir_fd=dir_fd)
            os.symlink(secret, name, dir_fd=dir_fd)
            return warnings

        self.patch(safefs, "create_file", create_then_swap)
        self.put()
        self.assertEqual(os.stat(secret).st_nlink, 1)

    def test_scan_skips_fifos_and_symlinks(self):
        """The dedup scan neither blocks on a FIFO nor follows a planted symlink."""
        directory = self.store.inbox_dir("alice")
        os.makedirs(directory)
        os.mkfifo(os.path.join(directory, "2025-03-14-150000-fifo.md"))
        target = os.path.abspath(self.mktemp())
        with open(target, "wb") as f:
            f.write(b'+++\nmessage_id = "m@x"\nbody_sha256 = "b0"\nreceived_at = "2025-03-14T15:00:00+00:00"\n+++\n')
        os.symlink(target, os.path.join(directory, "2025-03-14-150001-link.md"))
        self.assertFalse(self.put().duplicate)
