"""Message files on a real temporary directory: publish, names, modes, owners, dedup;
enumerate, count, resolve ids, read frontmatter heads, mark read."""

import datetime
import os
import pwd
import stat

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from aimx.core import frontmatter
from aimx.core.message import Attachment
from aimx.errors import IOFailure
from aimx.store import mailstore, safefs
from aimx.store.mailboxdirs import OwnerConflict
from aimx.store.mailstore import MailStore
from aimx.store.passwd import Owner
from aimx.testing.fakes import FakeNow
from tests.test_safefs import record_reads

UTC = datetime.timezone.utc
T0 = datetime.datetime(2025, 3, 14, 15, 9, 26, 123456, tzinfo=UTC)
NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
ME = Owner("me", os.geteuid(), os.getegid())


def fields(message_id="m@x", subject="Hello", body="b0", trusted="none") -> dict:
    return {
        "message_id": message_id, "thread_id": "0" * 16, "from": "a@x", "to": "b@y",
        "delivered_to": "b@y", "subject": subject, "date": None, "size_bytes": 10,
        "body_sha256": body, "dkim": "none", "spf": "none", "dmarc": "none",
        "trusted": trusted, "mailbox": "alice", "read": False,
    }


def email(read=False) -> bytes:
    return frontmatter.render({"id": "x", "read": read}, "Hello\n")


class StoreTestCase(SynchronousTestCase):
    def setUp(self):
        self.root = self.mktemp()
        self.clock = FakeNow(T0)
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
        real = safefs.exists
        self.patch(safefs, "exists", lambda fd, name: probed.append(name) or real(fd, name))
        self.assertEqual(self.put("6@x").id, "2025-03-14-150926-hello-6")
        # The bundle directory's name only: the link checks the .md name.
        self.assertEqual(probed, ["2025-03-14-150926-hello-6"])

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


    def test_scan_skips_linked_bundles_and_hard_links(self):
        """The dedup scan reads no bundle reached through a symlink and no hard link."""
        directory = self.store.inbox_dir("alice")
        os.makedirs(directory)
        head = (b'+++\nmessage_id = "m@x"\nbody_sha256 = "b0"\n'
                b'received_at = "2025-03-14T15:00:00+00:00"\n+++\n')
        outside = os.path.abspath(self.mktemp())
        os.makedirs(outside)
        with open(os.path.join(outside, "2025-03-14-150000-away.md"), "wb") as f:
            f.write(head)
        os.symlink(outside, os.path.join(directory, "2025-03-14-150000-away"))
        os.link(os.path.join(outside, "2025-03-14-150000-away.md"),
                os.path.join(directory, "2025-03-14-150001-linked.md"))
        self.assertFalse(self.put().duplicate)


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
        self.assertEqual(mailstore.count_messages(d), (3, 2))
        self.assertEqual(mailstore.count_messages(d, False), (3, 0))
        self.assertEqual(mailstore.count_messages(os.path.join(d, "missing")), (0, 0))

    def test_read_line_only_in_frontmatter(self):
        """A `read = true` line in the body does not make a message read."""
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        with open(os.path.join(d, "a.md"), "wb") as f:
            f.write(b'+++\nid = "a"\nread = false\n+++\n\nread = true\n')
        self.assertEqual(mailstore.count_messages(d), (1, 1))

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
            self.assertEqual(mailstore.count_messages(d), (1, 0 if read else 1), text)

    def test_invalid_frontmatter_is_unread(self):
        """A .md file without valid frontmatter still counts, as unread."""
        d = self.write("a.md", b"read = true\n")
        self.write("b.md", b"+++\nread = true\nread = = x\n+++\n")
        self.write("c.md", b'+++\nread = true\nx = "\xff"\n+++\n')
        self.write("d.md", b"")
        self.assertEqual(mailstore.count_messages(d), (4, 4))

    def frontmatter_of(self, size: int) -> bytes:
        """A read frontmatter (both +++ lines included) of exactly C{size} bytes."""
        head, tail = b'+++\nread = true\npad = "', b'"\n+++\n'
        return head + b"a" * (size - len(head) - len(tail)) + tail

    def test_frontmatter_limit(self):
        """Frontmatter ending exactly at the 64 KiB read limit is read; one byte more is unread."""
        limit = mailstore.READ_STATE_BYTES
        self.assertEqual(limit, 64 * 1024)
        d = self.write("fits.md", self.frontmatter_of(limit) + b"\nbody\n" * 1000)
        self.assertEqual(mailstore.count_messages(d), (1, 0))
        self.write("over.md", self.frontmatter_of(limit + 1) + b"\nbody\n")
        self.assertEqual(mailstore.count_messages(d), (2, 1))
        os.unlink(os.path.join(d, "fits.md"))
        # The limit falls just after "+++" of a "+++x" line: no closing line there.
        self.write("cut.md", self.frontmatter_of(limit + 1)[:-1] + b"x\n")
        self.assertEqual(mailstore.count_messages(d), (2, 2))

    def test_reads_only_the_head(self):
        """Counting a 5 MiB message reads at most the first 64 KiB of it."""
        d = self.write("big.md", self.frontmatter_of(100) + b"x" * (5 << 20))
        asked = record_reads(self)
        self.assertEqual(mailstore.count_messages(d), (1, 0))
        self.assertLessEqual(sum(asked), mailstore.READ_STATE_BYTES)

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
        self.assertEqual(mailstore.count_messages(inbox), (1, 1))

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
        self.assertEqual(mailstore.count_messages(inbox), (1, 0))


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

    def test_flat_then_bundle(self):
        """<id>.md first, else <id>/<id>.md; absent is (None, False)."""
        flat = self.write("a.md")
        bundled = self.write("b/b.md")
        self.assertEqual(mailstore.resolve_id(self.dir, "a"), (flat, False))
        self.assertEqual(mailstore.resolve_id(self.dir, "b"), (bundled, False))
        self.assertEqual(mailstore.resolve_id(self.dir, "c"), (None, False))

    def test_symlink_refused(self):
        """A symlinked <id>.md is refused without falling back to the bundle."""
        outside = os.path.abspath(self.mktemp())
        with open(outside, "w"):
            pass
        os.symlink(outside, os.path.join(self.dir, "x.md"))
        self.write("x/x.md")
        self.assertEqual(mailstore.resolve_id(self.dir, "x"), (None, True))

    def test_symlinked_bundle_refused(self):
        """A bundle directory that is a symlink out of the mailbox is refused."""
        elsewhere = os.path.abspath(self.mktemp())
        os.makedirs(elsewhere)
        with open(os.path.join(elsewhere, "y.md"), "w"):
            pass
        os.symlink(elsewhere, os.path.join(self.dir, "y"))
        self.assertEqual(mailstore.resolve_id(self.dir, "y"), (None, True))

    def test_not_regular(self):
        """A directory named <id>.md is refused."""
        os.makedirs(os.path.join(self.dir, "z.md"))
        self.assertEqual(mailstore.resolve_id(self.dir, "z"), (None, True))


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
        self.assertEqual(mailstore.mark_id(self.dir, "m", True, NOW, ME), (self.path, False))
        fields, body = self.read()
        self.assertEqual((fields["read"], fields["read_at"]), (True, "2026-01-02T03:04:05Z"))
        self.assertEqual(body, frontmatter.parse(self.original)[1])
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)
        mailstore.mark_id(self.dir, "m", False, NOW, ME)
        fields, _ = self.read()
        self.assertIs(fields["read"], False)
        self.assertNotIn("read_at", fields)
        self.assertEqual(os.listdir(os.path.dirname(self.path)), ["m.md"])

    def test_unresolved_owner_keeps_ids(self):
        """An owner without ids keeps the file's current owner."""
        mailstore.mark_id(self.dir, "m", True, NOW, Owner("ghost", None, None))
        self.assertEqual(os.stat(self.path).st_uid, os.geteuid())

    def test_malformed(self):
        """A file without frontmatter is IO `malformed frontmatter`, left unchanged."""
        with open(self.path, "wb") as f:
            f.write(b"no frontmatter\n")
        e = self.assertRaises(IOFailure, mailstore.mark_id, self.dir, "m", True, NOW, ME)
        self.assertIn("malformed frontmatter in", str(e))
        with open(self.path, "wb") as f:
            f.write(b"+++\nread = = x\n+++\n")
        e = self.assertRaises(IOFailure, mailstore.mark_id, self.dir, "m", True, NOW, ME)
        self.assertIn("failed to parse frontmatter in", str(e))

    def test_size_limit(self):
        """A file at the mark limit is marked; one byte more is IO naming it, unread, unchanged."""
        self.assertEqual(mailstore.MAX_MARK_BYTES, 64 * 1024 * 1024)
        self.patch(mailstore, "MAX_MARK_BYTES", len(self.original))
        mailstore.mark_id(self.dir, "m", True, NOW, ME)
        self.assertIs(self.read()[0]["read"], True)
        with open(self.path, "wb") as f:
            f.write(self.original + b"x")
        asked = record_reads(self)
        e = self.assertRaises(IOFailure, mailstore.mark_id, self.dir, "m", True, NOW, ME)
        self.assertEqual(str(e), f"refusing to mark {self.path}: {len(self.original) + 1} "
                                 f"bytes, over the {len(self.original)}-byte limit")
        self.assertEqual(asked, [])
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), self.original + b"x")

    def test_reads_the_stat_size_only(self):
        """The rewrite reads fstat's size, no more; a file grown meanwhile is IO, kept whole."""
        opened = mailstore._open_email(self.dir, "m")
        self.addCleanup(opened.close)
        with open(self.path, "ab") as f:
            f.write(b"appended by the owner\n")
        asked = record_reads(self)
        e = self.assertRaises(IOFailure, mailstore._rewrite, opened, True, NOW, ME)
        self.assertEqual(str(e), f"{self.path} changed while being read; try again")
        self.assertEqual(sum(asked), len(self.original))
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), self.original + b"appended by the owner\n")
        self.assertEqual(os.listdir(self.dir), ["m.md"])

    def test_write_failure(self):
        """A failed rewrite is IO; no temp file is left and the file is unchanged."""
        tmp = os.path.join(os.path.dirname(self.path), f".m.md.tmp.{os.getpid()}")
        os.mkdir(tmp)
        e = self.assertRaises(IOFailure, mailstore.mark_id, self.dir, "m", True, NOW, ME)
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
        self.assertEqual(mailstore.mark_id(self.dir, "x", True, NOW, ME), (None, True))
        self.assertEqual(mailstore.resolve_id(self.dir, "x"), (None, True))
        self.assertVictimUntouched()
        self.assertEqual(os.listdir(self.dir), ["x"])

    def open_bundle(self):
        """A bundle C{x/x.md} in the mailbox, opened as MARK opens it; its path."""
        bundle = os.path.join(self.dir, "x")
        os.makedirs(bundle)
        with open(os.path.join(bundle, "x.md"), "wb") as f:
            f.write(email())
        opened = mailstore._open_email(self.dir, "x")
        self.addCleanup(opened.close)
        return opened, bundle

    def test_bundle_swapped_after_open_stays_in_bundle(self):
        """The rewrite goes through the bundle's fd: swapping <id>/ after the lookup is harmless."""
        opened, bundle = self.open_bundle()
        # The owner swaps the bundle for a symlink between the check and the use.
        os.rename(bundle, os.path.join(self.dir, "moved"))
        os.symlink(self.outside, bundle)
        mailstore._rewrite(opened, True, NOW, ME)
        self.assertVictimUntouched()
        with open(os.path.join(self.dir, "moved", "x.md"), "rb") as f:
            self.assertIs(frontmatter.parse(f.read())[0]["read"], True)
        self.assertEqual(os.listdir(os.path.join(self.dir, "moved")), ["x.md"])

    def test_hard_link_refused(self):
        """A <id>.md hard-linked elsewhere (st_nlink 2) is refused, flat or bundled."""
        os.link(self.victim, os.path.join(self.dir, "x.md"))
        self.assertEqual(mailstore.mark_id(self.dir, "x", True, NOW, ME), (None, True))
        os.unlink(os.path.join(self.dir, "x.md"))
        os.makedirs(os.path.join(self.dir, "x"))
        os.link(self.victim, os.path.join(self.dir, "x", "x.md"))
        self.assertEqual(mailstore.mark_id(self.dir, "x", True, NOW, ME), (None, True))
        with open(self.victim, "rb") as f:
            self.assertEqual(f.read(), self.victim_bytes)

    def test_symlinked_file_in_bundle_refused(self):
        """<id>/<id>.md that is a symlink is refused."""
        os.makedirs(os.path.join(self.dir, "x"))
        os.symlink(self.victim, os.path.join(self.dir, "x", "x.md"))
        self.assertEqual(mailstore.mark_id(self.dir, "x", True, NOW, ME), (None, True))
        self.assertVictimUntouched()

    def test_fifo_refused(self):
        """A FIFO named <id>.md is refused without blocking."""
        os.mkfifo(os.path.join(self.dir, "x.md"))
        self.assertEqual(mailstore.mark_id(self.dir, "x", True, NOW, ME), (None, True))

    def test_device_refused(self):
        """A device node named <id>.md is refused and never read."""
        try:
            os.mknod(os.path.join(self.dir, "x.md"), stat.S_IFCHR | 0o600, os.makedev(1, 5))
        except PermissionError:
            raise SkipTest("mknod needs CAP_MKNOD")
        self.assertEqual(mailstore.mark_id(self.dir, "x", True, NOW, ME), (None, True))

    def test_bundle_not_a_directory_refused(self):
        """A regular file named <id> (no <id>.md) is refused."""
        with open(os.path.join(self.dir, "x"), "wb") as f:
            f.write(email())
        self.assertEqual(mailstore.mark_id(self.dir, "x", True, NOW, ME), (None, True))

    def test_vanished_is_not_found(self):
        """An id whose file or mailbox directory is gone resolves to not found, not an error."""
        self.assertEqual(mailstore.mark_id(self.dir, "x", True, NOW, ME), (None, False))
        os.makedirs(os.path.join(self.dir, "x"))
        self.assertEqual(mailstore.mark_id(self.dir, "x", True, NOW, ME), (None, False))
        gone = os.path.join(self.base, "inbox", "bob")
        self.assertEqual(mailstore.mark_id(gone, "x", True, NOW, ME), (None, False))
        self.assertEqual(mailstore.resolve_id(gone, "x"), (None, False))

    def test_symlinked_mailbox_dir_not_followed(self):
        """The mailbox directory itself is opened with O_NOFOLLOW."""
        link = os.path.join(self.base, "inbox", "bob")
        os.symlink(self.outside, link)
        self.assertEqual(mailstore.mark_id(link, "x", True, NOW, ME), (None, False))
        self.assertVictimUntouched()

    def test_temp_cleaned_on_failure(self):
        """A failed rewrite removes the temp it created through the directory fd."""
        opened, bundle = self.open_bundle()
        # Make the final rename fail: the target name is now a non-empty directory.
        os.unlink(os.path.join(bundle, "x.md"))
        os.makedirs(os.path.join(bundle, "x.md", "sub"))
        self.assertRaises(IOFailure, mailstore._rewrite, opened, True, NOW, ME)
        self.assertEqual(os.listdir(bundle), ["x.md"])


class ReadFieldsTests(SynchronousTestCase):
    """The one frontmatter reader: a head at a time, bounded for root, to the end for MCP."""

    def open(self, data: bytes) -> int:
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(data)
        fd = os.open(path, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        return fd

    def test_fields(self):
        """The frontmatter's fields; the body is not needed."""
        fd = self.open(frontmatter.render({"id": "x", "read": True}, "body\n" * 100_000))
        asked = record_reads(self)
        self.assertEqual(mailstore.read_fields(fd), {"id": "x", "read": True})
        self.assertEqual(asked, [64 * 1024])

    def test_unbounded_reads_on(self):
        """Without a limit a long frontmatter is read to its closing line, heads doubling."""
        data = frontmatter.render({"id": "x", "pad": "a" * 200_000}, "body\n")
        fd = self.open(data)
        asked = record_reads(self)
        self.assertEqual(mailstore.read_fields(fd)["pad"], "a" * 200_000)
        # 64 KiB, 64 KiB more, then 128 KiB (the end of the file comes first).
        self.assertEqual(asked[:3], [1 << 16, 1 << 16, 1 << 17])

    def test_limit(self):
        """With a limit nothing past it is read, and a frontmatter closing later fails."""
        fd = self.open(frontmatter.render({"pad": "a" * 200_000}, "body\n"))
        asked = record_reads(self)
        self.assertRaises(ValueError, mailstore.read_fields, fd, 1000)
        self.assertEqual(sum(asked), 1000)

    def test_no_frontmatter_stops(self):
        """A file that does not start with +++ is ValueError after the first head."""
        fd = self.open(b"no frontmatter\n" + b"x" * 200_000)
        asked = record_reads(self)
        self.assertRaises(ValueError, mailstore.read_fields, fd)
        self.assertEqual(len(asked), 1)

    def test_bad_toml(self):
        """Invalid TOML or UTF-8 raise their own ValueErrors (the MCP tells them apart)."""
        import tomllib

        self.assertRaises(tomllib.TOMLDecodeError, mailstore.read_fields,
                          self.open(b"+++\nfrom = \n+++\n"))
        self.assertRaises(UnicodeDecodeError, mailstore.read_fields,
                          self.open(b'+++\nx = "\xff"\n+++\n'))

    def test_cut_head_needs_a_whole_closing_line(self):
        """A head that ends inside a "+++x" line does not close there."""
        head = b'+++\npad = """\n' + b"a" * (1 << 16)
        data = head[: (1 << 16) - 4] + b'\n+++x\n"""\n+++\n'
        fields = mailstore.read_fields(self.open(data))
        self.assertTrue(fields["pad"].endswith("+++x\n"))


class ListIdsTests(SynchronousTestCase):
    def test_ids(self):
        """Flat files and bundle dirs, newest first; dotfiles, links and other files skipped."""
        d = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(d, "2025-01-02-b"))
        for name in ("2025-01-01-a.md", "2025-01-03-c.md", ".tmp.md", "notes.txt"):
            with open(os.path.join(d, name), "wb") as f:
                f.write(email())
        os.symlink(os.path.join(d, "2025-01-01-a.md"), os.path.join(d, "2025-01-04-l.md"))
        os.symlink(os.path.join(d, "2025-01-02-b"), os.path.join(d, "2025-01-05-l"))
        self.assertEqual(mailstore.list_ids(d), ["2025-01-03-c", "2025-01-02-b", "2025-01-01-a"])
        self.assertEqual(mailstore.list_ids(os.path.join(d, "missing")), [])
        self.assertRaises(OSError, mailstore.list_ids, os.path.join(d, "notes.txt"))
