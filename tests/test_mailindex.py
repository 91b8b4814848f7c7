"""The derived mail index on real temporary directories: build, keep up with the files,
list, count, search and thread, and never say more than a file does."""

import os
import pwd
import sqlite3

from twisted.trial.unittest import SynchronousTestCase

from aimx.core import frontmatter
from aimx.core.mailquery import parse_query
from aimx.core.received import Written
from aimx.core.threadid import thread_id
from aimx.store import mailindex, mailstore
from aimx.store.mailindex import Counts, IndexBroken, IndexMissing, MailIndex
from aimx.store.mailstore import MailStore


def message(stem: str, *, subject="Hello", sender="Alice <alice@example.com>",
            to="agent@test.local", body="Hello there.", read=False, trusted="none",
            message_id=None, in_reply_to=None, references=None, date="2025-06-01T10:00:00Z",
            attachments=None, **extra) -> bytes:
    message_id = message_id if message_id is not None else f"{stem}@example.com"
    fields = {
        "id": stem, "message_id": message_id,
        "thread_id": thread_id(message_id, in_reply_to, references),
        "from": sender, "to": to, "subject": subject, "date": date,
        "in_reply_to": in_reply_to, "references": references,
        "trusted": trusted, "mailbox": "box", "read": read, "attachments": attachments,
        **extra,
    }
    return frontmatter.render(fields, body)


class IndexTestCase(SynchronousTestCase):
    def setUp(self):
        self.data = os.path.abspath(self.mktemp())
        self.dirs = mailindex.folder_dirs(self.data, "box")
        for path in self.dirs.values():
            os.makedirs(path)
        mailindex.prepare_dir(self.data)
        self.path = mailindex.index_path(self.data, "box")
        self.index = None

    def tearDown(self):
        if self.index is not None:
            self.index.close()

    def put(self, stem: str, folder="inbox", bundle=False, **kw) -> str:
        directory = self.dirs[folder]
        if bundle:
            directory = os.path.join(directory, stem)
            os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, stem + ".md")
        with open(path, "wb") as f:
            f.write(message(stem, **kw))
        return path

    def build(self) -> MailIndex:
        if self.index is not None:
            self.index.close()
        MailIndex.install(MailIndex.build(self.path, self.dirs), self.path)
        self.index = MailIndex.open(self.path, self.dirs)
        return self.index

    def ids(self, entries) -> list[str]:
        return [e.id for e in entries]


class LifeCycleTests(IndexTestCase):
    def test_missing(self):
        """No file: L{IndexMissing}."""
        self.assertRaises(IndexMissing, MailIndex.open, self.path, self.dirs)

    def test_not_an_index(self):
        """A file that is not an index of this version: L{IndexBroken}."""
        with open(self.path, "wb") as f:
            f.write(b"garbage" * 1000)
        self.assertRaises(IndexBroken, MailIndex.open, self.path, self.dirs)
        os.unlink(self.path)
        con = sqlite3.connect(self.path)
        con.execute("CREATE TABLE meta(key, value)")
        con.close()
        self.assertRaises(IndexBroken, MailIndex.open, self.path, self.dirs)

    def test_build_reports_progress(self):
        """A build reads every message and reports (done, total), ending at the total."""
        for i in range(3):
            self.put(f"2025-06-01-00000{i}-a")
        self.put("2025-06-01-000009-s", folder="sent")
        seen = []
        MailIndex.install(MailIndex.build(self.path, self.dirs, lambda *p: seen.append(p)),
                          self.path)
        self.assertEqual(seen[0], (0, 4))
        self.assertEqual(seen[-1], (4, 4))
        self.index = MailIndex.open(self.path, self.dirs)
        self.assertEqual(self.index.counts(), Counts(3, 3, 1))

    def test_current(self):
        """An index deleted or replaced on disk is no longer current."""
        index = self.build()
        self.assertTrue(index.current())
        os.unlink(self.path)
        self.assertFalse(index.current())

    def test_directory_mode(self):
        """The index directory is the daemon's, mode 0700; a symlink there is refused."""
        path = mailindex.index_dir(self.data)
        os.chmod(path, 0o755)
        mailindex.prepare_dir(self.data)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o700)
        os.rmdir(path)
        os.symlink(self.mktemp(), path)
        self.assertRaises(OSError, mailindex.prepare_dir, self.data)


class CountsAndPagesTests(IndexTestCase):
    def test_counts_match_the_files(self):
        """Counts equal what count_messages reads from the files (flat, bundles, broken)."""
        self.put("2025-06-01-000001-a")
        self.put("2025-06-01-000002-b", read=True)
        self.put("2025-06-01-000003-c", bundle=True, attachments=[{"filename": "x"}])
        with open(os.path.join(self.dirs["inbox"], "2025-06-01-000004-bad.md"), "wb") as f:
            f.write(b"no frontmatter\n")
        os.symlink("/etc/passwd", os.path.join(self.dirs["inbox"], "2025-06-01-000005-l.md"))
        self.put("2025-06-01-000006-s", folder="sent")
        counts = self.build().counts()
        self.assertEqual((counts.total, counts.unread),
                         mailstore.count_messages(self.dirs["inbox"]))
        self.assertEqual(counts, Counts(4, 3, 1))

    def test_page_newest_first(self):
        """A page is newest first by id; unreadable files are not listed."""
        for i in range(5):
            self.put(f"2025-06-0{i + 1}-000000-m", read=i % 2 == 0)
        with open(os.path.join(self.dirs["inbox"], "2025-06-09-000000-bad.md"), "wb") as f:
            f.write(b"+++\nnot toml\n+++\n")
        index = self.build()
        self.assertEqual(self.ids(index.page("inbox", 2, 1)),
                         ["2025-06-04-000000-m", "2025-06-03-000000-m"])
        self.assertEqual(self.ids(index.page("inbox", 10, unread=True)),
                         ["2025-06-04-000000-m", "2025-06-02-000000-m"])
        self.assertEqual(index.page("inbox", 0), [])

    def test_entry_fields(self):
        """An entry carries the frontmatter values listings show."""
        self.put("2025-06-01-000001-a", subject="Invoice", trusted="true", read=True,
                 bundle=True, attachments=[{"filename": "x.pdf"}], cc="Bob <bob@x>")
        [entry] = self.build().page("inbox", 10)
        self.assertEqual(
            (entry.folder, entry.id, entry.subject, entry.from_, entry.to, entry.trusted,
             entry.read, entry.attachments, entry.date),
            ("inbox", "2025-06-01-000001-a", "Invoice", "Alice <alice@example.com>",
             "agent@test.local, Bob <bob@x>", "true", True, True, "2025-06-01T10:00:00Z"))


class FreshnessTests(IndexTestCase):
    def test_update_added_changed_removed(self):
        """update() indexes a new file, re-reads a changed one and drops a removed one."""
        self.put("2025-06-01-000001-a")
        index = self.build()
        self.put("2025-06-01-000002-b")
        self.put("2025-06-01-000001-a", read=True)
        self.assertEqual(index.update("inbox", ["2025-06-01-000002-b.md",
                                                "2025-06-01-000001-a.md"]), set())
        self.assertEqual(index.counts(), Counts(2, 1, 0))
        os.unlink(os.path.join(self.dirs["inbox"], "2025-06-01-000002-b.md"))
        index.update("inbox", ["2025-06-01-000002-b.md", ".tmp"])
        self.assertEqual(index.counts(), Counts(1, 0, 0))

    def test_written_taken_while_unchanged(self):
        """A file the store describes (Written) is indexed from that description while
        it keeps the stat it had; once changed, from the file."""
        index = self.build()
        path = self.put("2025-06-01-000001-a", subject="On disk")
        said = Written(os.stat(path), {"subject": "As written", "read": True}, b"Body\n")
        index.update("inbox", ["2025-06-01-000001-a.md"], {"2025-06-01-000001-a": said})
        [entry] = index.page("inbox", 10)
        self.assertEqual((entry.subject, entry.read), ("As written", True))
        self.put("2025-06-01-000001-a", subject="Edited")
        index.update("inbox", ["2025-06-01-000001-a.md"], {"2025-06-01-000001-a": said})
        [entry] = index.page("inbox", 10)
        self.assertEqual((entry.subject, entry.read), ("Edited", False))

    def test_store_describes_what_it_wrote(self):
        """What the store says it wrote indexes to the same row as the file read back,
        for the shapes an inbound message takes."""
        store = MailStore(self.data)
        owner = pwd.getpwuid(os.geteuid()).pw_name
        cases = [
            ({}, "Plain body.\n"),
            ({"cc": "Carol <c@x>", "in_reply_to": "<p@x>", "references": "<r@x> <p@x>"},
             "Re: text\n\n> quoted\n"),
            ({"subject": "Ünïcödé \u200b \"quotes\" \\ back", "to": "a@x, b@y",
              "references": " ".join(f"<r{i}@x>" for i in range(200))}, "No final newline"),
            ({"risk_reasons": ("guard:x",), "unsigned_headers": [], "date": None},
             "line\r\nwith CR\n" * 50),
            ({"subject": "+++", "trusted": "true"}, "+++\nbody after a delimiter\n+++\n"),
        ]
        for number, (extra, body) in enumerate(cases):
            fields = {"message_id": f"m{number}@x", "thread_id": "0" * 16, "from": "a@x", "to": "b@y",
                      "subject": "Hello", "date": "Thu, 01 Jan 2026 10:00:00 +0000",
                      "trusted": "none", "mailbox": "box", "read": False, **extra}
            stored = store.store_inbound("box", owner, fields["subject"], fields, body, ())
            with open(stored.path, "rb") as f:
                fd = os.dup(f.fileno())
            self.assertEqual(mailindex._record(stored.written.fields, stored.written.body),
                             mailindex._read(fd), (extra, body))
            self.assertEqual(stored.written.stat.st_ino, os.stat(stored.path).st_ino)

    def test_incomplete_bundle(self):
        """A bundle directory without its .md yet is reported, then indexed once it has one."""
        index = self.build()
        os.makedirs(os.path.join(self.dirs["inbox"], "2025-06-01-000001-a"))
        self.assertEqual(index.update("inbox", ["2025-06-01-000001-a"]),
                         {"2025-06-01-000001-a"})
        self.put("2025-06-01-000001-a", bundle=True)
        self.assertEqual(index.update("inbox", ["2025-06-01-000001-a"]), set())
        self.assertEqual(index.counts().total, 1)

    def test_stale_and_scan(self):
        """A folder changed behind the index is stale; a scan brings it in line."""
        self.put("2025-06-01-000001-a")
        self.put("2025-06-01-000002-b")
        index = self.build()
        self.assertFalse(index.stale("inbox"))
        os.unlink(os.path.join(self.dirs["inbox"], "2025-06-01-000001-a.md"))
        self.put("2025-06-01-000003-c", read=True)
        self.assertTrue(index.stale("inbox"))
        self.assertEqual(index.scan("inbox"), 2)
        self.assertFalse(index.stale("inbox"))
        self.assertEqual(self.ids(index.page("inbox", 10)),
                         ["2025-06-01-000003-c", "2025-06-01-000002-b"])
        self.assertEqual(index.counts(), Counts(2, 1, 0))

    def test_verify_edit_in_place(self):
        """A row about to be returned is re-read when its file changed: an edit of
        `trusted` or `read` in place is never answered from the old row."""
        path = self.put("2025-06-01-000001-a", trusted="true")
        index = self.build()
        with open(path, "r+b") as f:  # in place: same inode, no directory change
            data = f.read().replace(b'trusted = "true"', b'trusted = "false"')
            f.seek(0)
            f.write(data)
            f.truncate()
        [entry] = index.page("inbox", 10)
        self.assertEqual(entry.trusted, "false")
        self.assertEqual(index.search([], trusted=True), [])

    def test_verify_drops_a_removed_file(self):
        """A row whose file is gone is not returned (and leaves the index)."""
        self.put("2025-06-01-000001-a")
        self.put("2025-06-01-000002-b")
        index = self.build()
        os.unlink(os.path.join(self.dirs["inbox"], "2025-06-01-000002-b.md"))
        self.assertEqual(self.ids(index.page("inbox", 10)), ["2025-06-01-000001-a"])
        self.assertEqual(index.counts().total, 1)

    def test_file_replaced_by_symlink(self):
        """A file swapped for a symlink is no longer a message."""
        self.put("2025-06-01-000001-a")
        index = self.build()
        target = os.path.join(self.dirs["inbox"], "2025-06-01-000001-a.md")
        os.unlink(target)
        os.symlink(self.put("2025-06-01-000009-z", folder="sent"), target)
        self.assertEqual(index.page("inbox", 10), [])

    def test_mark_keeps_tokens(self):
        """A change of read state only updates the row: no FTS garbage."""
        self.put("2025-06-01-000001-a", body="alpha beta")
        index = self.build()
        self.put("2025-06-01-000001-a", body="alpha beta", read=True)
        index.update("inbox", ["2025-06-01-000001-a.md"])
        self.assertEqual(index.garbage, 0)
        self.put("2025-06-01-000001-a", body="gamma")
        index.update("inbox", ["2025-06-01-000001-a.md"])
        self.assertEqual(index.garbage, 1)
        self.assertEqual(index.search(parse_query("alpha")), [])
        self.assertEqual(self.ids(index.search(parse_query("gamma"))), ["2025-06-01-000001-a"])


class SearchTests(IndexTestCase):
    def setUp(self):
        super().setUp()
        self.put("2025-06-01-000001-a", subject="Quarterly report",
                 body="Please find the quarterly numbers attached.\nRegards", trusted="true",
                 date="2025-06-01T10:00:00+02:00")
        self.put("2025-06-02-000001-b", subject="Lunch", sender="Bob <BOB@Example.org>",
                 body="Shall we have lunch on Friday? The report can wait.", read=True,
                 date="2025-06-02T12:00:00Z")
        self.put("2025-06-03-000001-c", folder="sent", subject="Re: Quarterly report",
                 sender="agent@test.local", body="Thanks, the numbers look fine.",
                 date="2025-06-03T08:00:00Z")
        self.index = self.build()

    def search(self, query="", **kw) -> list[str]:
        return self.ids(self.index.search(parse_query(query), **kw))

    def test_words_anded_newest_first(self):
        """Every word must match, in subject, addresses or body; newest first."""
        self.assertEqual(self.search("report"), ["2025-06-03-000001-c", "2025-06-02-000001-b",
                                                 "2025-06-01-000001-a"])
        self.assertEqual(self.search("report numbers"),
                         ["2025-06-03-000001-c", "2025-06-01-000001-a"])
        self.assertEqual(self.search("example.org lunch"), ["2025-06-02-000001-b"])

    def test_prefix_and_phrase(self):
        """`word*` matches words it starts; quotes match words in order."""
        self.assertEqual(self.search("quart*"), ["2025-06-03-000001-c", "2025-06-01-000001-a"])
        self.assertEqual(self.search('"quarterly numbers"'), ["2025-06-01-000001-a"])
        self.assertEqual(self.search('"numbers quarterly"'), [])

    def test_syntax_never_reaches_fts(self):
        """FTS5 operators and stray quotes are plain words: no error, no widening."""
        for query in ('report OR lunch', 'NEAR(report lunch)', '"', 'report"', 'subject:lunch',
                      '^report', 'report NOT lunch', '*', '-report', 'a\x00b', "(", "{x}"):
            self.search(query)  # no exception
        self.assertEqual(self.search("report OR lunch"), [])
        self.assertEqual(self.search("lunch -"), ["2025-06-02-000001-b"])

    def test_filters(self):
        """folder, from (case-insensitive substring), since/until, unread, trusted."""
        self.assertEqual(self.search("report", folder="inbox"),
                         ["2025-06-02-000001-b", "2025-06-01-000001-a"])
        self.assertEqual(self.search(sender="bob@example"), ["2025-06-02-000001-b"])
        day = 86400 * 10**6
        june2 = 1748822400 * 10**6
        self.assertEqual(self.search(since=june2), ["2025-06-03-000001-c", "2025-06-02-000001-b"])
        self.assertEqual(self.search(since=june2, until=june2 + day), ["2025-06-02-000001-b"])
        # 10:00+02:00 is 08:00 UTC on June 1.
        self.assertEqual(self.search(until=june2), ["2025-06-01-000001-a"])
        self.assertEqual(self.search(unread=True), ["2025-06-01-000001-a"])
        self.assertEqual(self.search(unread=False), ["2025-06-03-000001-c", "2025-06-02-000001-b"])
        self.assertEqual(self.search(trusted=True), ["2025-06-01-000001-a"])
        self.assertEqual(self.search(trusted=False), ["2025-06-03-000001-c", "2025-06-02-000001-b"])
        self.assertEqual(self.search(limit=1), ["2025-06-03-000001-c"])

    def test_newest_first_whatever_the_insert_order(self):
        """Messages indexed after older-named ones (added by hand with older ids) do not
        push the newest out of the answer: the window of recent rowids is checked."""
        self.patch(mailindex, "SEARCH_WINDOW", 2)
        for n in range(15):
            self.put(f"2024-01-01-0000{n:02}-old", body="report from the archive")
        self.index.update("inbox", [f"2024-01-01-0000{n:02}-old.md" for n in range(15)])
        self.assertEqual(self.search("report", limit=1), ["2025-06-03-000001-c"])
        self.assertEqual(self.search("report", limit=2),
                         ["2025-06-03-000001-c", "2025-06-02-000001-b"])
        self.assertEqual(self.search("archive", limit=1), ["2024-01-01-000014-old"])

    def test_snippet_from_the_file(self):
        """A result carries a short piece of its body around the match."""
        [entry] = self.index.search(parse_query("friday"))
        self.assertIn("Friday", entry.snippet)
        [entry] = self.index.search(parse_query("lunch"), folder="inbox")
        self.assertTrue(entry.snippet.startswith("Shall we have lunch"))


class ThreadTests(IndexTestCase):
    def test_chain_with_mixed_headers(self):
        """Five messages across inbox and sent, linked by References or In-Reply-To alone,
        form one conversation, oldest first, whichever one starts it."""
        self.put("2025-06-01-000001-a", message_id="a@x", date="2025-06-01T10:00:00Z")
        self.put("2025-06-01-000002-b", folder="sent", message_id="b@x", in_reply_to="a@x",
                 references="a@x", date="2025-06-01T11:00:00Z")
        self.put("2025-06-01-000003-c", message_id="c@x", in_reply_to="<b@x>",
                 date="2025-06-01T12:00:00Z")
        self.put("2025-06-01-000004-d", folder="sent", message_id="d@x",
                 in_reply_to="<c@x>", references="<b@x> <c@x>", date="2025-06-01T13:00:00Z")
        self.put("2025-06-01-000005-e", message_id="e@x", in_reply_to="d@x",
                 references="a@x b@x c@x d@x", date="2025-06-01T14:00:00Z")
        self.put("2025-06-01-000006-z", message_id="z@x", date="2025-06-01T15:00:00Z")
        index = self.build()
        chain = ["2025-06-01-000001-a", "2025-06-01-000002-b", "2025-06-01-000003-c",
                 "2025-06-01-000004-d", "2025-06-01-000005-e"]
        for start in chain:
            self.assertEqual(self.ids(index.thread(email_id=start)), chain, start)
        self.assertEqual(self.ids(index.thread(thread_id=thread_id("c@x", "b@x", None))), chain)
        self.assertEqual([e.folder for e in index.thread(email_id=chain[0])],
                         ["inbox", "sent", "inbox", "sent", "inbox"])
        self.assertEqual(self.ids(index.thread(email_id=chain[0], limit=2)), chain[-2:])
        self.assertIsNone(index.thread(email_id="nope"))
        self.assertEqual(self.ids(index.thread(email_id="2025-06-01-000006-z")),
                         ["2025-06-01-000006-z"])

    def test_new_text(self):
        """A thread gives each message's new text: a reply's without the quoted history
        and signature (stored), any other message's whole body (from its file)."""
        self.put("2025-06-01-000001-a", message_id="a@x", body="Shall we meet?\n\n-- \nAlice\n")
        self.put("2025-06-01-000002-b", folder="sent", message_id="b@x", in_reply_to="a@x",
                 date="2025-06-01T11:00:00Z",
                 body="Yes, at noon.\n\n-- \nAgent\n\nOn Sun, 1 Jun 2025, Alice "
                      "<alice@example.com> wrote:\n> Shall we meet?\n")
        [first, second] = self.build().thread(email_id="2025-06-01-000002-b")
        self.assertEqual(first.text, "Shall we meet?\n\n-- \nAlice")
        self.assertEqual(second.text, "Yes, at noon.")
