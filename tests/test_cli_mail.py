"""`aimx mail` and `aimx reindex` against a fake daemon connection: what is asked, what
is printed (tables, --json), thread ids, progress, the daemon down."""

import argparse
import io
import json
import os

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from aimx.cli import arguments, mail, reindex
from aimx.cli.session import Session, execute
from aimx.cli.term import Terminal, progress_bar, table
from aimx.core import frontmatter
from aimx.control import wire
from aimx.errors import DaemonNotRunning, MailboxError, NotFoundError
from aimx.testing.fakes import TTY, FakeControlClient, FakePasswd


def row(email_id, folder="inbox", **fields):
    return {"id": email_id, "folder": folder, "from": "Alice <alice@example.com>",
            "to": "agent@test.local", "subject": "Hello", "date": "2026-06-01T10:00:00Z",
            "read": False, "trusted": "none", "thread_id": "0123456789abcdef",
            "message_id": "m@x", "delivery_status": "delivered" if folder == "sent" else "",
            "has_attachments": False, **fields}


class VerbTestCase(SynchronousTestCase):
    def run_verb(self, verb, argv, replies=None, down=False, tty=False, euid=1000):
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers(dest="verb")
        common = argparse.ArgumentParser(add_help=False)
        arguments.mail(sub, common)
        arguments.reindex(sub, common)
        args = parser.parse_args(argv)
        args.config_dir, args.data_dir = self.mktemp(), None
        fake = FakeControlClient(replies or {})
        out, err = (TTY() if tty else io.StringIO()), io.StringIO()
        if down:
            connect = lambda: defer.fail(DaemonNotRunning("aimx daemon not running"))  # noqa
        else:
            connect = lambda: defer.succeed(fake)  # noqa: E731
        session = Session(args, connect=connect, euid=euid, term=Terminal(out, err, None, {}),
                          environ={"AIMX_RUNTIME_DIR": "/tmp/x"}, passwd=FakePasswd({}))
        code = self.successResultOf(defer.Deferred.fromCoroutine(execute(verb, args, session)))
        return code, out.getvalue(), err.getvalue(), fake


class MailVerbTests(VerbTestCase):
    def test_list_table_and_json(self):
        """The inbox table marks unread rows; sent shows TO and STATUS; --json the rows."""
        rows = [row("2026-06-02-100000-b", read=True, subject="Second"),
                row("2026-06-01-100000-a")]
        code, out, _, fake = self.run_verb(mail.list_, ["mail", "list", "alice", "--limit", "2"],
                                           {wire.MailList: {"emails": rows}})
        self.assertEqual(out.splitlines(), [
            "   ID                   DATE              FROM                       SUBJECT",
            "   2026-06-02-100000-b  2026-06-01 10:00  Alice <alice@example.com>  Second",
            "*  2026-06-01-100000-a  2026-06-01 10:00  Alice <alice@example.com>  Hello",
        ])
        self.assertEqual(fake.calls, [(wire.MailList, {
            "mailbox": "alice", "folder": "inbox", "limit": 2, "offset": 0, "unread": False})])
        _, out, _, _ = self.run_verb(mail.list_, ["mail", "list", "alice", "--folder", "sent"],
                                     {wire.MailList: {"emails": [row("x", "sent")]}})
        self.assertEqual(out.splitlines()[0].split(), ["ID", "DATE", "TO", "SUBJECT", "STATUS"])
        _, out, _, _ = self.run_verb(mail.list_, ["mail", "list", "alice", "--json"],
                                     {wire.MailList: {"emails": rows}})
        self.assertEqual(json.loads(out), rows)
        _, out, _, _ = self.run_verb(mail.list_, ["mail", "list", "alice", "--unread"],
                                     {wire.MailList: {"emails": []}})
        self.assertEqual(out, "No unread mail in inbox/alice.\n")

    def test_bad_numbers(self):
        """--limit is 0-200, --offset a whole number."""
        for argv in (["--limit", "500"], ["--limit", "-1"], ["--offset", "x"]):
            self.assertRaises(SystemExit, self.run_verb, mail.list_,
                              ["mail", "list", "alice", *argv])

    def test_thread_id_fallback(self):
        """A thread id given where a message id goes is asked for as a thread id."""
        answers = iter([NotFoundError("email '0123456789abcdef' not found in mailbox 'a'"),
                        {"emails": [row("a", text="Hi there.\nBye.")]}])
        code, out, _, fake = self.run_verb(
            mail.thread, ["mail", "thread", "alice", "0123456789abcdef"],
            {wire.MailThread: lambda arguments: next(answers)})
        self.assertEqual(code, 0)
        self.assertEqual([c[1].get("thread_id") for c in fake.calls],
                         [None, "0123456789abcdef"])
        self.assertEqual(out.splitlines(), [
            "2026-06-01 10:00  inbox  Alice <alice@example.com>  *unread*",
            "Hello  [a]",
            "  Hi there.",
            "  Bye.",
        ])

    def test_thread_not_found(self):
        """A message id that is no thread id stays not found."""
        code, _, err, _ = self.run_verb(
            mail.thread, ["mail", "thread", "alice", "nope"],
            {wire.MailThread: NotFoundError("email 'nope' not found in mailbox 'alice'")})
        self.assertEqual((code, err),
                         (1, "Error: [NOTFOUND] email 'nope' not found in mailbox 'alice'\n"))

    def test_search_arguments(self):
        """Every option goes to MAIL-SEARCH; flags not given are no filter."""
        code, out, _, fake = self.run_verb(
            mail.search, ["mail", "search", "alice", "report q*", "--from", "bob",
                          "--since", "2026-06-01", "--unread", "--folder", "inbox"],
            {wire.MailSearch: {"emails": []}})
        self.assertEqual(out, "No matching mail.\n")
        self.assertEqual(fake.calls[0][1], {
            "mailbox": "alice", "query": "report q*", "folder": "inbox", "sender": "bob",
            "since": "2026-06-01", "until": None, "unread": True, "trusted": None, "limit": 20})

    def test_mark(self):
        """mark-read and mark-unread say what they did; a bad id is refused first."""
        code, out, _, _ = self.run_verb(mail.mark_read, ["mail", "mark-read", "alice", "x"],
                                        {wire.MarkRead: {}})
        self.assertEqual((code, out), (0, "Email 'x' marked as read.\n"))
        code, _, err, fake = self.run_verb(mail.mark_unread,
                                           ["mail", "mark-unread", "alice", "../x"])
        self.assertEqual((code, err, fake.calls),
                         (1, "Error: email id '../x' contains invalid characters\n", []))

    def test_missing_mailbox(self):
        """The daemon's "does not exist" is printed without its code."""
        code, _, err, _ = self.run_verb(
            mail.search, ["mail", "search", "ghost", "x"],
            {wire.MailSearch: MailboxError("mailbox 'ghost' does not exist")})
        self.assertEqual((code, err), (1, "Error: mailbox 'ghost' does not exist\n"))

    def test_read_in_the_other_folder(self):
        """An id that is in the other folder is not just "not found": the error says which
        folder it is in and the option that reads it."""
        root = self.mktemp()
        mailboxes = {"mailboxes": [{"name": "alice", "inbox_path": os.path.join(root, "inbox"),
                                    "sent_path": os.path.join(root, "sent")}]}
        for folder, stem in (("inbox", "2026-06-01-in"), ("sent", "2026-06-02-out")):
            os.makedirs(os.path.join(root, folder))
            with open(os.path.join(root, folder, stem + ".md"), "wb") as f:
                f.write(frontmatter.render({"id": stem, "read": False}, "Text\n"))
        replies = {wire.MailboxList: mailboxes}
        code, out, _, _ = self.run_verb(mail.read, ["mail", "read", "alice", "2026-06-02-out",
                                                    "--folder", "sent"], replies)
        self.assertEqual(code, 0)
        self.assertTrue(out.endswith("+++\n\nText\n"), out)
        for argv, err in (
            (["2026-06-02-out"], "Error: email '2026-06-02-out' is in sent/alice, not "
                                 "inbox/alice: add --folder sent\n"),
            (["2026-06-01-in", "--folder", "sent"], "Error: email '2026-06-01-in' is in "
             "inbox/alice, not sent/alice: add --folder inbox\n"),
            (["2026-06-03-none"], "Error: email '2026-06-03-none' not found in inbox/alice\n"),
        ):
            code, out, got, _ = self.run_verb(mail.read, ["mail", "read", "alice", *argv],
                                              replies)
            self.assertEqual((code, out, got), (1, "", err))

    def test_daemon_down(self):
        """Listing without a daemon: not running, how to start it, exit 2."""
        code, _, err, _ = self.run_verb(mail.list_, ["mail", "list", "alice"], down=True)
        self.assertEqual(code, 2)
        self.assertTrue(err.startswith("Error: aimx daemon not running. Start the aimx"), err)
        code, _, err, _ = self.run_verb(mail.read, ["mail", "read", "alice", "x"], down=True)
        self.assertEqual(code, 2)
        code, _, err, _ = self.run_verb(reindex.run, ["reindex"], down=True)
        self.assertEqual(code, 2)


class ReindexTests(VerbTestCase):
    def test_progress_on_a_terminal(self):
        """The builds are followed until none is left; a terminal gets a bar."""
        states = iter([
            [{"mailbox": "alice", "state": "building", "done": 500, "total": 1000}],
            [{"mailbox": "alice", "state": "building", "done": 1000, "total": 1000}],
            [{"mailbox": "alice", "state": "ready", "done": 0, "total": 0}],
        ])
        code, out, _, fake = self.run_verb(
            reindex.run, ["reindex", "alice"],
            {wire.IndexRebuild: {"mailboxes": ["alice"]},
             wire.IndexStatus: lambda arguments: {"indexes": next(states)},
             wire.MailboxList: {"mailboxes": [{"name": "alice", "total": 950,
                                               "sent_count": 50}]}}, tty=True)
        self.assertEqual(code, 0)
        self.assertIn("alice  " + progress_bar(500, 1000), out)
        self.assertIn("Rebuilt the index of alice (1000 messages).", out)
        self.assertEqual([c[0] for c in fake.calls],
                         [wire.IndexRebuild] + [wire.IndexStatus] * 3 + [wire.MailboxList])

    def test_plain_output(self):
        """Without a terminal: no bar, one line per mailbox with its messages (inbox and
        sent), however quickly the build was done."""
        code, out, _, _ = self.run_verb(
            reindex.run, ["reindex"],
            {wire.IndexRebuild: {"mailboxes": ["a", "b", "c"]},
             wire.IndexStatus: {"indexes": [{"mailbox": "a", "state": "ready"},
                                            {"mailbox": "b", "state": "ready"}]},
             wire.MailboxList: {"mailboxes": [{"name": "a", "total": 3, "sent_count": 1},
                                              {"name": "b", "total": 1, "sent_count": 0}]}})
        self.assertEqual(out, "Rebuilt the index of a (4 messages).\n"
                              "Rebuilt the index of b (1 message).\nRebuilt the index of c.\n")


class TableTests(SynchronousTestCase):
    def test_aligned(self):
        """Columns as wide as their widest cell, two spaces apart, numbers right, long
        cells clipped, no trailing spaces."""
        self.assertEqual(table(["A", "NUM", "LAST"], [["x", 5, "tail"], ["longer", 1234, ""]],
                               right=(1,)), ["A        NUM  LAST", "x          5  tail",
                                             "longer  1234"])
        self.assertEqual(table(["T"], [["abcdefgh"]], limits={0: 4}), ["T", "abc…"])
