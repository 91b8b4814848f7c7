"""`aimx mail` and `aimx reindex` as processes against a real daemon; `--json` on every
listing verb."""

import json
import os

from twisted.internet import defer

from aimx.store import mailindex
from aimx.testing.fakes import message
from tests.integration.base import DOMAIN
from tests.integration.test_cli_control import CliTestCase
from tests.integration.base import IS_ROOT, SecondUid


#: The `aimx` console script, then the modules it loaded, on stderr.
LOADED = ("import json, sys\nfrom aimx.cli import main\ncode = main(sys.argv[1:])\n"
          "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\nsys.exit(code)")


class MailCliTests(CliTestCase):
    def setUp(self):
        super().setUp()
        self.start_daemon()

    async def receive(self, subject, msgid, body="Hi\r\n", headers=(), day=1):
        reply = await self.smtp(message(body, subject=subject, message_id=msgid,
                                        date=f"Mon, 0{day} Jun 2026 10:00:00 +0000",
                                        headers=headers), [f"alice@{DOMAIN}"])
        self.assertEqual(reply[0], 250)

    async def ok(self, *args) -> str:
        result = await self.aimx(*args)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout

    async def test_list_read_mark(self):
        """list (table and --json), read (whole, --extracted), mark-read, mark-unread."""
        await self.receive("Plan", "a@example.com", "Shall we meet?\r\n")
        await self.receive("Re: Plan", "b@example.com",
                           "Yes, at noon.\r\n\r\nOn Mon, 1 Jun 2026, Alice <a@example.com> "
                           "wrote:\r\n> Shall we meet?\r\n",
                           headers=["In-Reply-To: <a@example.com>"], day=2)
        rows = json.loads(await self.ok("mail", "list", "alice", "--json"))
        self.assertEqual([r["subject"] for r in rows], ["Re: Plan", "Plan"])
        reply_id = rows[0]["id"]
        table = (await self.ok("mail", "list", "alice")).splitlines()
        self.assertEqual(table[0].split(), ["ID", "DATE", "FROM", "SUBJECT"])
        self.assertTrue(table[1].startswith(f"*  {reply_id}  2026-06-02 10:00  Alice"), table)
        whole = await self.ok("mail", "read", "alice", reply_id)
        self.assertTrue(whole.startswith("+++\n"))
        self.assertIn("> Shall we meet?", whole)
        self.assertEqual(await self.ok("mail", "read", "alice", reply_id, "--extracted"),
                         "Yes, at noon.\n")
        self.assertEqual(await self.ok("mail", "mark-read", "alice", reply_id),
                         f"Email '{reply_id}' marked as read.\n")
        unread = json.loads(await self.ok("mail", "list", "alice", "--unread", "--json"))
        self.assertEqual([r["subject"] for r in unread], ["Plan"])
        await self.ok("mail", "mark-unread", "alice", reply_id)
        self.assertEqual(len(json.loads(await self.ok("mail", "list", "alice", "--unread",
                                                      "--json"))), 2)
        missing = await self.aimx("mail", "read", "alice", "nope")
        self.assertEqual((missing.returncode, missing.stderr),
                         (1, "Error: email 'nope' not found in inbox/alice\n"))
        other = await self.aimx("mail", "list", "ghost")
        self.assertEqual((other.returncode, other.stderr),
                         (1, "Error: mailbox 'ghost' does not exist\n"))

    async def test_thread_and_search(self):
        """thread by id or thread_id, oldest first with each new text; search with filters."""
        await self.receive("Plan", "a@example.com", "Shall we meet?\r\n")
        await self.receive("Re: Plan", "b@example.com",
                           "Yes.\r\n\r\nOn Mon, 1 Jun 2026, Alice <a@example.com> wrote:\r\n"
                           "> Shall we meet?\r\n", headers=["In-Reply-To: <a@example.com>"],
                           day=2)
        await self.receive("Invoice", "c@example.com", "The March invoice.\r\n", day=3)
        rows = json.loads(await self.ok("mail", "list", "alice", "--json"))
        plan = next(r for r in rows if r["subject"] == "Plan")
        thread = json.loads(await self.ok("mail", "thread", "alice", plan["id"], "--json"))
        self.assertEqual([r["text"] for r in thread], ["Shall we meet?", "Yes."])
        by_thread = json.loads(await self.ok("mail", "thread", "alice", plan["thread_id"],
                                             "--json"))
        self.assertEqual(by_thread, thread)
        text = await self.ok("mail", "thread", "alice", plan["id"])
        self.assertIn("  Shall we meet?\n", text)
        self.assertIn("2026-06-02 10:00  inbox  Alice <alice@example.com>", text)
        found = json.loads(await self.ok("mail", "search", "alice", "march", "--json"))
        self.assertEqual([r["subject"] for r in found], ["Invoice"])
        self.assertIn("March", found[0]["snippet"])
        found = json.loads(await self.ok("mail", "search", "alice", "", "--since", "2026-06-02",
                                         "--until", "2026-06-02", "--json"))
        self.assertEqual([r["subject"] for r in found], ["Re: Plan"])
        found = json.loads(await self.ok("mail", "search", "alice", "meet*", "--from",
                                         "ALICE@", "--unread", "--folder", "inbox",
                                         "--json"))
        self.assertEqual(len(found), 2)
        table = (await self.ok("mail", "search", "alice", "invoice")).splitlines()
        self.assertEqual(table[0].split(), ["ID", "FOLDER", "DATE", "FROM", "SUBJECT", "MATCH"])
        bad = await self.aimx("mail", "search", "alice", "x", "--since", "yesterday")
        self.assertEqual(bad.returncode, 1)
        self.assertIn("[MALFORMED] since: 'yesterday' is not an RFC 3339 date", bad.stderr)

    async def test_json_on_listing_verbs(self):
        """mailboxes list and hooks list print one JSON document with --json."""
        await self.receive("Plan", "a@example.com")
        rows = json.loads(await self.ok("mailboxes", "list", "--json"))
        alice = next(r for r in rows if r["name"] == "alice")
        self.assertEqual((alice["total"], alice["unread"]), (1, 1))
        self.assertEqual(json.loads(await self.ok("hooks", "list", "--json")), [])

    async def test_listings_load_no_twisted(self):
        """The listing verbs answer from the daemon without importing Twisted, attrs (the
        config model) or another verb's module (the parser has the running verb's
        arguments only)."""
        await self.receive("Plan", "a@example.com")
        [row] = json.loads(await self.ok("mail", "list", "alice", "--json"))
        mine = {"aimx.cli", "aimx.cli.arguments", "aimx.cli.session", "aimx.cli.term"}
        for args in (("mailboxes", "list"), ("mailboxes", "show", "alice"),
                     ("mail", "list", "alice"), ("mail", "search", "alice", "plan"),
                     ("mail", "thread", "alice", row["id"]), ("hooks", "list")):
            result = await self.aimx(*args, program=("-c", LOADED))
            self.assertEqual(result.returncode, 0, result.stderr)
            loaded = set(json.loads(result.stderr))
            self.assertIn("aimx.control.blockingclient", loaded)
            self.assertEqual({m for m in loaded if m.startswith("twisted")}, set(), args)
            verbs = {m for m in loaded if m.startswith("aimx.cli.")} - mine
            self.assertEqual(verbs, {f"aimx.cli.{args[0]}"}, args)
            self.assertEqual({m for m in loaded if m.split(".")[0] in ("attr", "attrs")},
                             set(), args)

    async def test_reindex(self):
        """reindex rebuilds through the daemon and says so; the index answers after."""
        await self.receive("Plan", "a@example.com")
        out = await self.ok("reindex", "alice")
        self.assertEqual(out, "Rebuilt the index of alice (1 message).\n")
        self.assertEqual(len(json.loads(await self.ok("mail", "list", "alice", "--json"))), 1)
        out = await self.ok("reindex")
        self.assertIn("Rebuilt the index of alice", out)
        self.assertIn("Rebuilt the index of catchall (0 messages).", out)

    async def test_daemon_down(self):
        """Without a daemon: listing says how to start it (exit 2); root still reads, and
        reindex builds the files itself."""
        await self.receive("Plan", "a@example.com")
        [row] = json.loads(await self.ok("mail", "list", "alice", "--json"))
        down = self.no_daemon_dir()
        result = await self.aimx("mail", "list", "alice", runtime_dir=down)
        self.assertEqual(result.returncode, 2)
        self.assertIn("aimx daemon not running", result.stderr)
        if not IS_ROOT:
            return
        result = await self.aimx("mail", "read", "alice", row["id"], runtime_dir=down)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("subject = \"Plan\"", result.stdout)
        path = mailindex.index_path(self.data_dir, "alice")
        result = await self.aimx("reindex", "alice", runtime_dir=down)
        self.assertEqual((result.returncode, result.stdout),
                         (0, "Rebuilt the index of alice (1 message).\n"))
        self.assertTrue(os.path.exists(path))


class SecondUidCliTests(SecondUid, CliTestCase):
    """nobody's `aimx mail` never shows root's mailbox."""

    @defer.inlineCallbacks
    def test_nothing_of_alice(self):
        """list, read, search, thread, mark and reindex on alice, by its real message's id:
        does not exist, or nothing, and the message stays unread."""
        yield self.smtp(message(subject="secret"), [f"alice@{DOMAIN}"])
        [path] = self.inbox("alice")
        stem = os.path.basename(path)[:-3]
        for args in (("mail", "list", "alice"), ("mail", "search", "alice", "secret"),
                     ("mail", "read", "alice", stem), ("mail", "read", "alice", stem,
                                                       "--extracted"),
                     ("mail", "thread", "alice", stem), ("mail", "mark-unread", "alice", stem),
                     ("mail", "mark-read", "alice", stem), ("reindex", "alice")):
            result = yield self.as_nobody_cli(*args)
            self.assertEqual(result.returncode, 1, args)
            self.assertIn(result.stderr, ("Error: mailbox 'alice' does not exist\n",
                                          "Error: [EACCES] not authorized\n"))
            self.assertNotIn("secret", result.stdout)
        result = yield self.as_nobody_cli("mailboxes", "list", "--json")
        self.assertEqual(json.loads(result.stdout), [])
        self.assertIs(self.read_mail(path)[0]["read"], False)
