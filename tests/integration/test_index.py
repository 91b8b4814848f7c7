"""The mail index on a real daemon, over the control socket: MAIL-LIST, MAIL-SEARCH,
MAIL-THREAD, the MAILBOX-LIST/SHOW counts, consistency with the files after store, mark,
delete and changes made by hand, a deleted index, and a second uid; a thread through
the MCP tool and the CLI too."""

import json
import os
import shutil
import stat
import subprocess
import sys

from twisted.internet import defer, reactor, task, threads

from aimx.control import client, commands
from aimx.errors import MailboxError, MalformedError, NotFoundError
from aimx.store import mailindex
from tests.integration.base import DOMAIN, REPO, SecondUid
from tests.integration.test_control import ControlTestCase
from aimx.testing.fakes import message
from tests.integration.test_mcp import mcp_session
from tests.integration.test_send import SendTestCase, submission
from tests.test_mailindex import message as md_file


class IndexTestCase(SendTestCase):
    async def call(self, command, **kw):
        conn = await client.connect(reactor, os.path.join(self.runtime_dir, "aimx.sock"))
        try:
            return await conn.call(command, **kw)
        finally:
            conn.close()

    async def emails(self, command=commands.MailList, **kw) -> list[dict]:
        return (await self.call(command, **kw))["emails"]

    async def ids(self, command=commands.MailList, **kw) -> list[str]:
        return [row["id"] for row in await self.emails(command, **kw)]

    async def row(self, name="alice") -> dict:
        rows = (await self.call(commands.MailboxList))["mailboxes"]
        return next(r for r in rows if r["name"] == name)

    async def receive(self, subject="Test", msgid="m1@example.com", body="Hi\r\n",
                      date="Thu, 01 Jan 2026 10:00:00 +0000", headers=(), to="alice"):
        reply = await self.smtp(message(body, subject=subject, message_id=msgid, date=date,
                                        to=f"{to}@{DOMAIN}", headers=headers),
                                [f"{to}@{DOMAIN}"])
        self.assertEqual(reply[0], 250)

    def inbox_ids(self, mailbox="alice") -> list[str]:
        return sorted((os.path.basename(p)[:-3] for p in self.inbox(mailbox)), reverse=True)

    def hand_write(self, stem, folder="inbox", bundle=False, **kw) -> str:
        directory = os.path.join(self.data_dir, folder, "alice")
        if bundle:
            directory = os.path.join(directory, stem)
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, stem + ".md")
        tmp = os.path.join(os.path.dirname(path), ".hand.tmp")
        with open(tmp, "wb") as f:
            f.write(md_file(stem, **kw))
        os.rename(tmp, path)
        return path


class ConsistencyTests(IndexTestCase):
    async def test_store_mark_delete(self):
        """Stored mail is listed at once with its fields; marks show in the rows and the
        MAILBOX-LIST/SHOW counts; a forced delete takes the index with it."""
        await self.receive(subject="First", msgid="a@example.com")
        await self.receive(subject="Second", msgid="b@example.com")
        rows = await self.emails(mailbox="alice")
        self.assertEqual([r["id"] for r in rows], self.inbox_ids())
        first = next(r for r in rows if r["subject"] == "First")
        self.assertEqual(
            {k: first[k] for k in ("folder", "from", "to", "read", "trusted", "message_id",
                                   "has_attachments")},
            {"folder": "inbox", "from": "Alice <alice@example.com>", "to": f"alice@{DOMAIN}",
             "read": False, "trusted": "none", "message_id": "a@example.com",
             "has_attachments": False})
        row = await self.row()
        self.assertEqual((row["total"], row["unread"]), (2, 2))
        await self.call(commands.MarkRead, mailbox="alice", id=first["id"])
        self.assertEqual((await self.row())["unread"], 1)
        shown = (await self.call(commands.MailboxShow, name="alice"))["mailbox"]
        self.assertEqual((shown["inbox_total"], shown["inbox_unread"]), (2, 1))
        self.assertEqual([r["read"] for r in await self.emails(mailbox="alice")
                          if r["id"] == first["id"]], [True])
        self.assertEqual(await self.ids(mailbox="alice", unread=True),
                         [r["id"] for r in rows if r["id"] != first["id"]])
        await self.call(commands.MarkUnread, mailbox="alice", id=first["id"])
        self.assertEqual((await self.row())["unread"], 2)
        self.assertEqual(await self.ids(mailbox="alice", limit=1, offset=1), [rows[1]["id"]])
        path = mailindex.index_path(self.data_dir, "alice")
        self.assertTrue(os.path.exists(path))
        await self.call(commands.MailboxDelete, name="alice", force=True)
        self.assertFalse(os.path.exists(path))

    async def test_sent_copies(self):
        """A sent copy is in the sent folder's rows, with its delivery status."""
        await self.send(submission(subject="Report"))
        [row] = await self.emails(mailbox="alice", folder="sent")
        self.assertEqual((row["folder"], row["subject"], row["delivery_status"]),
                         ("sent", "Report", "delivered"))
        self.assertEqual((await self.row())["sent_count"], 1)

    async def test_changes_by_hand(self):
        """Files added, renamed and deleted by hand, flat or bundled, are seen before the
        next answer."""
        await self.receive()
        [stored] = self.inbox_ids()
        self.hand_write("2030-01-01-000000-hand")
        self.hand_write("2030-01-02-000000-bundle", bundle=True)
        self.assertEqual(await self.ids(mailbox="alice"),
                         ["2030-01-02-000000-bundle", "2030-01-01-000000-hand", stored])
        inbox = os.path.join(self.data_dir, "inbox", "alice")
        os.rename(os.path.join(inbox, "2030-01-01-000000-hand.md"),
                  os.path.join(inbox, "2030-01-03-000000-moved.md"))
        os.unlink(os.path.join(inbox, stored + ".md"))
        self.assertEqual(await self.ids(mailbox="alice"),
                         ["2030-01-03-000000-moved", "2030-01-02-000000-bundle"])
        self.assertEqual(((await self.row())["total"], (await self.row())["unread"]), (2, 2))

    async def test_edits_in_place(self):
        """A flat file's `read` edited in place shows in the counts at once; a bundle's
        `trusted` edited in place shows in the rows returned."""
        flat = self.hand_write("2030-01-01-000000-flat")
        bundle = self.hand_write("2030-01-02-000000-bundle", bundle=True, trusted="true")
        self.assertEqual((await self.row())["unread"], 2)
        for path, old, new in ((flat, b"read = false", b"read = true"),
                               (bundle, b'trusted = "true"', b'trusted = "false"')):
            with open(path, "r+b") as f:
                data = f.read().replace(old, new)
                f.seek(0)
                f.write(data)
                f.truncate()
        self.assertEqual((await self.row())["unread"], 1)
        rows = await self.emails(mailbox="alice")
        self.assertEqual([(r["id"], r["trusted"]) for r in rows],
                         [("2030-01-02-000000-bundle", "false"), ("2030-01-01-000000-flat", "none")])
        self.assertEqual(await self.emails(commands.MailSearch, mailbox="alice", query="",
                                           trusted=True), [])

    async def test_edit_reflected_within_seconds(self):
        """Without any query, an edit by hand reaches the index within 2 s (inotify)."""
        path = self.hand_write("2030-01-01-000000-flat")
        self.assertEqual((await self.row())["unread"], 1)
        with open(path, "r+b") as f:
            data = f.read().replace(b"read = false", b"read = true")
            f.seek(0)
            f.write(data)
        edited = reactor.seconds()
        box = self.daemon.index._boxes["alice"]
        while reactor.seconds() - edited < 3:
            await task.deferLater(reactor, 0.05, lambda: None)
            if (await self.daemon.index.run_in_thread(box.index.counts)).unread == 0:
                break
        self.assertLessEqual(reactor.seconds() - edited, 2)

    async def test_index_deleted(self):
        """The index may be deleted at any time: the next answer rebuilds it."""
        await self.receive(subject="Kept")
        self.assertEqual(len(await self.ids(mailbox="alice")), 1)
        path = mailindex.index_path(self.data_dir, "alice")
        mailindex.remove(path)
        self.hand_write("2030-01-01-000000-hand")
        self.assertEqual(len(await self.ids(mailbox="alice")), 2)
        self.assertTrue(os.path.exists(path))
        self.assertEqual((await self.row())["total"], 2)
        shutil.rmtree(mailindex.index_dir(self.data_dir))  # the whole directory, too
        self.assertEqual(len(await self.ids(mailbox="alice")), 2)
        self.assertTrue(os.path.exists(path))

    def test_index_directory(self):
        """The index directory is the daemon's alone (0700)."""
        st = os.stat(mailindex.index_dir(self.data_dir))
        self.assertEqual((stat.S_IMODE(st.st_mode), st.st_uid), (0o700, os.geteuid()))

    async def test_rebuild_and_status(self):
        """INDEX-REBUILD rebuilds in the background; INDEX-STATUS says when it is ready."""
        await self.receive()
        names = (await self.call(commands.IndexRebuild, mailbox="alice"))["mailboxes"]
        self.assertEqual(names, ["alice"])
        for _ in range(200):
            [status] = (await self.call(commands.IndexStatus, mailbox="alice"))["indexes"]
            if status["state"] == "ready":
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(status["state"], "ready")
        self.assertEqual(len(await self.ids(mailbox="alice")), 1)

    async def test_bad_arguments(self):
        """Unknown folders, bad dates and an id with a slash are refused with reasons."""
        e = await self.assertFailure(defer.Deferred.fromCoroutine(
            self.call(commands.MailList, mailbox="alice", folder="trash")), MalformedError)
        self.assertEqual(str(e), "invalid folder 'trash': expected \"inbox\" or \"sent\"")
        e = await self.assertFailure(defer.Deferred.fromCoroutine(
            self.call(commands.MailSearch, mailbox="alice", query="x", since="yesterday")),
            MalformedError)
        self.assertIn("since: 'yesterday' is not an RFC 3339 date", str(e))
        e = await self.assertFailure(defer.Deferred.fromCoroutine(
            self.call(commands.MailThread, mailbox="alice", id="../x")), NotFoundError)
        self.assertEqual(str(e), "email id '../x' contains invalid characters")
        e = await self.assertFailure(defer.Deferred.fromCoroutine(
            self.call(commands.MailThread, mailbox="alice")), MalformedError)
        e = await self.assertFailure(defer.Deferred.fromCoroutine(
            self.call(commands.MailThread, mailbox="alice", id="nope")), NotFoundError)
        self.assertEqual(str(e), "email 'nope' not found in mailbox 'alice'")
        e = await self.assertFailure(defer.Deferred.fromCoroutine(
            self.call(commands.MailList, mailbox="nobody-here")), MailboxError)
        self.assertEqual(str(e), "mailbox 'nobody-here' does not exist")


class SearchTests(IndexTestCase):
    async def test_search(self):
        """Words ANDed over subject, addresses and body, prefixes, phrases, filters,
        newest first, snippets; query syntax is never FTS5 syntax."""
        await self.receive(subject="Quarterly report", msgid="q@example.com",
                           body="The quarterly numbers are attached.\r\n",
                           date="Mon, 01 Jun 2026 10:00:00 +0000")
        await self.receive(subject="Lunch", msgid="l@example.com",
                           body="Lunch on Friday? The report can wait.\r\n",
                           date="Tue, 02 Jun 2026 10:00:00 +0000")
        await self.send(submission(subject="Re: Quarterly report", body="Numbers look fine."))
        rows = await self.emails(commands.MailSearch, mailbox="alice", query="report")
        self.assertEqual([r["folder"] for r in rows], ["sent", "inbox", "inbox"])
        [row] = await self.emails(commands.MailSearch, mailbox="alice", query="friday lunch")
        self.assertEqual(row["subject"], "Lunch")
        self.assertIn("Friday", row["snippet"])
        self.assertEqual(len(await self.emails(commands.MailSearch, mailbox="alice",
                                               query="quart*")), 2)
        self.assertEqual(len(await self.emails(commands.MailSearch, mailbox="alice",
                                               query='"quarterly numbers"')), 1)
        self.assertEqual(len(await self.emails(commands.MailSearch, mailbox="alice",
                                               query="report", folder="inbox")), 2)
        self.assertEqual(len(await self.emails(commands.MailSearch, mailbox="alice",
                                               query="report", since="2026-06-02",
                                               until="2026-06-02")), 1)
        self.assertEqual(len(await self.emails(commands.MailSearch, mailbox="alice",
                                               query="", sender="ALICE@EXAMPLE")), 2)
        for query in ('report OR lunch', 'NEAR(report', '"', 'a:b', '^x', '*', '(', '\x00'):
            await self.emails(commands.MailSearch, mailbox="alice", query=query)
        self.assertEqual(await self.emails(commands.MailSearch, mailbox="alice",
                                           query="report OR lunch"), [])


class ThreadTests(IndexTestCase):
    #: The new text of each message of the chain, oldest first.
    TEXTS = ["Hi", "Hello from the end-to-end test.", "Hi", "Hello from the end-to-end test.",
             "Agreed."]

    async def chain(self) -> tuple[list[str], str]:
        """Five messages across inbox and sent, joined by References or In-Reply-To alone
        (and one more of another thread): their ids, oldest first, and their thread_id."""
        await self.receive(subject="Plan", msgid="a@example.com",
                           date="Mon, 01 Jun 2026 08:00:00 +0000")
        await self.send(submission(
            subject="Re: Plan", to="alice@example.com",
            headers=["Message-ID: <b@test.local>", "In-Reply-To: <a@example.com>",
                     "References: <a@example.com>"]).replace(
            b"Thu, 01 Jan 2026 12:00:00", b"Mon, 01 Jun 2026 09:00:00"))
        await self.receive(subject="Re: Plan", msgid="c@example.com",
                           date="Mon, 01 Jun 2026 10:00:00 +0000",
                           headers=["In-Reply-To: <b@test.local>"])
        await self.send(submission(
            subject="Re: Plan", to="alice@example.com",
            headers=["Message-ID: <d@test.local>", "In-Reply-To: <c@example.com>"]).replace(
            b"Thu, 01 Jan 2026 12:00:00", b"Mon, 01 Jun 2026 11:00:00"))
        await self.receive(subject="Re: Plan", msgid="e@example.com",
                           date="Mon, 01 Jun 2026 12:00:00 +0000",
                           body="Agreed.\r\n\r\nOn Mon, 1 Jun 2026 at 11:00, Alice "
                                "<alice@test.local> wrote:\r\n> Hello from the end-to-end "
                                "test.\r\n",
                           headers=["In-Reply-To: <d@test.local>",
                                    "References: <a@example.com> <b@test.local> "
                                    "<c@example.com> <d@test.local>"])
        await self.receive(subject="Other", msgid="z@example.com",
                           date="Mon, 01 Jun 2026 13:00:00 +0000")
        everything = await self.emails(mailbox="alice") + await self.emails(
            mailbox="alice", folder="sent")
        by_msgid = {r["message_id"]: r["id"] for r in everything}
        chain = [by_msgid[m] for m in ("a@example.com", "b@test.local", "c@example.com",
                                       "d@test.local", "e@example.com")]
        thread = next(r["thread_id"] for r in everything if r["message_id"] == "c@example.com")
        return chain, thread

    async def test_five_message_chain(self):
        """The chain comes back over MAIL-THREAD as one conversation, oldest first, from
        any of its messages or by a thread_id."""
        chain, thread = await self.chain()
        for start in chain:
            rows = await self.emails(commands.MailThread, mailbox="alice", id=start)
            self.assertEqual([r["id"] for r in rows], chain)
        self.assertEqual([r["folder"] for r in rows], ["inbox", "sent", "inbox", "sent", "inbox"])
        self.assertEqual([r["text"] for r in rows], self.TEXTS)
        self.assertEqual(await self.ids(commands.MailThread, mailbox="alice", thread_id=thread),
                         chain)
        self.assertEqual(await self.ids(commands.MailThread, mailbox="alice", id=chain[0],
                                        limit=2), chain[3:])

    async def test_through_email_thread(self):
        """The MCP tool email_thread (the official client) gives the chain from its last
        message, its first, or its thread_id."""
        chain, thread = await self.chain()

        async def calls(client):
            out = []
            for arguments in ({"id": chain[-1]}, {"id": chain[0]}, {"thread_id": thread},
                              {"id": chain[0], "limit": 2}):
                result = await client.call_tool("email_thread", {"mailbox": "alice",
                                                                 **arguments})
                out.append((result.is_error, result.content[0].text))
            return out

        answers = await mcp_session(self.runtime_dir, calls)
        for failed, text in answers:
            self.assertFalse(failed, text)
        rows = [json.loads(text) for _, text in answers]
        for got in rows[:3]:
            self.assertEqual([r["id"] for r in got], chain)
        self.assertEqual([(r["folder"], r["text"]) for r in rows[0]],
                         list(zip(["inbox", "sent", "inbox", "sent", "inbox"], self.TEXTS)))
        self.assertEqual([r["id"] for r in rows[3]], chain[3:])

    async def test_through_aimx_mail_thread(self):
        """`aimx mail thread` (a process) gives the chain from any message or the thread_id,
        as JSON and as text."""
        chain, thread = await self.chain()

        def aimx(*args):
            env = dict(os.environ, PYTHONPATH=REPO, AIMX_RUNTIME_DIR=self.runtime_dir,
                       AIMX_CONFIG_DIR=self.config_dir, NO_COLOR="1")
            return subprocess.run([sys.executable, "-m", "aimx", "mail", "thread", "alice",
                                   *args], env=env, cwd=REPO, capture_output=True, text=True,
                                  timeout=60)

        for start in (chain[2], thread):
            result = await threads.deferToThread(aimx, start, "--json")
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual([r["id"] for r in json.loads(result.stdout)], chain)
        result = await threads.deferToThread(aimx, chain[-1])
        self.assertEqual(result.returncode, 0, result.stderr)
        blocks = result.stdout.split("\n\n")
        self.assertEqual(len(blocks), 5)
        for block, message_id, text, folder in zip(blocks, chain, self.TEXTS,
                                                   ["inbox", "sent"] * 2 + ["inbox"]):
            head, subject, body = block.rstrip("\n").split("\n")
            self.assertIn(f"  {folder}  ", head)
            self.assertEqual(subject, f"Re: Plan  [{message_id}]" if message_id != chain[0]
                             else f"Plan  [{message_id}]")
            self.assertEqual(body, f"  {text}")


class SecondUidTests(SecondUid, ControlTestCase):
    """nobody against root's mailboxes: nothing of them through the index commands."""

    async def test_nothing_of_another_mailbox(self):
        """Every MAIL-* and INDEX-* command on alice answers as if it did not exist."""
        await self.smtp(message(subject="secret words", message_id="s@example.com"),
                        [f"alice@{DOMAIN}"])
        [path] = self.inbox("alice")
        stem = os.path.basename(path)[:-3]
        gone = {"error": "MAILBOX", "reason": "mailbox 'alice' does not exist"}
        results = await self.nobody_commands(
            ("MailList", {"mailbox": "alice"}),
            ("MailList", {"mailbox": "alice", "folder": "sent"}),
            ("MailSearch", {"mailbox": "alice", "query": "secret"}),
            ("MailThread", {"mailbox": "alice", "id": stem}),
            ("IndexRebuild", {"mailbox": "alice"}),
            ("IndexStatus", {"mailbox": "alice"}),
            ("IndexStatus", {}),
            ("IndexRebuild", {}),
            ("MailboxList", {}),
        )
        self.assertEqual(results[:6], [gone] * 6)
        self.assertEqual(results[6:], [{"ok": {"indexes": []}}, {"ok": {"mailboxes": []}},
                                       {"ok": {"mailboxes": []}}])

    async def test_own_mailbox(self):
        """nobody reads its own mailbox's index (and only that)."""
        [created] = await self.nobody_commands(("MailboxCreate", {"name": "nobox"}))
        self.assertIn("ok", created)
        await self.smtp(message(subject="mine", to=f"nobox@{DOMAIN}", message_id="n@example.com"),
                        [f"nobox@{DOMAIN}"])
        results = await self.nobody_commands(
            ("MailList", {"mailbox": "nobox"}),
            ("MailSearch", {"mailbox": "nobox", "query": "mine"}),
            ("IndexStatus", {}),
        )
        self.assertEqual([r["subject"] for r in results[0]["ok"]["emails"]], ["mine"])
        self.assertEqual([r["subject"] for r in results[1]["ok"]["emails"]], ["mine"])
        self.assertEqual([s["mailbox"] for s in results[2]["ok"]["indexes"]], ["nobox"])
