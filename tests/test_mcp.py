"""The MCP tools against a fake daemon, and the server through the SDK's in-process client.

docs/mcp.md.  Tool bodies (L{aimx.mcp.tools.Tools}) get a L{FakeDaemon}: canned
MAILBOX-LIST rows pointing at real directories under the test's temp dir, so
listing and reading go through the real files.  The server (L{aimx.mcp.server})
is driven with C{mcp.Client(server)} inside C{asyncio.run}.
"""

import asyncio
import copy
import email
import email.policy
import json
import os

from mcp import Client
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from twisted.trial.unittest import SynchronousTestCase

from aimx.control import aioclient, wire
from aimx.core import configedit, frontmatter
from aimx.errors import (
    BodyTooLarge,
    DaemonNotRunning,
    IOFailure,
    MailboxError,
    MalformedError,
    NoEntry,
    NotFoundError,
    ValidationError,
)
from aimx.mcp import server, tools
from aimx.testing.fakes import FakeAsyncControlClient

DOMAIN = "test.local"
NAMES = {
    "mailbox_list", "mailbox_create", "mailbox_delete", "email_list", "email_read",
    "email_send", "email_reply", "email_mark_read", "email_mark_unread", "hook_create",
    "hook_list", "hook_delete", "email_search", "email_thread", "held_list",
}


class FakeDaemon(FakeAsyncControlClient):
    """The daemon as the tools see it: C{rows} and C{hooks} listed, SEND answered with
    C{deliveries}; set C{answers[Command]} to an error to make that command fail."""

    def __init__(self, rows=(), hooks=()):
        super().__init__({
            wire.MailboxList: lambda a: {"mailboxes": copy.deepcopy(self.rows)},
            wire.HookList: lambda a: {"hooks": copy.deepcopy(self.hooks)},
            wire.MailboxCreate: lambda a: {"address": f"{a['name']}@{DOMAIN}"},
            wire.HookCreate: {"name": "derived"},
            wire.Send: lambda a: {"message_id": "<new@test.local>",
                                      "deliveries": self.deliveries},
            wire.MailList: lambda a: {"emails": copy.deepcopy(
                self.emails[a["folder"]][a["offset"] : a["offset"] + a["limit"]])},
            wire.MailSearch: lambda a: {"emails": copy.deepcopy(self.found)},
            wire.MailThread: lambda a: {"emails": copy.deepcopy(self.found)},
        }, default={})
        self.rows = list(rows)
        self.hooks = list(hooks)
        self.deliveries = None
        #: The index's rows per folder (MAIL-LIST), and what MAIL-SEARCH/THREAD answer.
        self.emails = {"inbox": [], "sent": []}
        self.found = []

    def sent(self) -> tuple[email.message.EmailMessage, dict]:
        """The one SEND: the parsed message and the arguments."""
        [arguments] = [a for command, a in self.calls if command is wire.Send]
        return email.message_from_bytes(arguments["message"], policy=email.policy.default), \
            arguments


def row(root: str, name: str, address: str | None = "") -> dict:
    """A MAILBOX-LIST row for C{name} with its directories under C{root}."""
    return {
        "name": name,
        "address": f"{name}@{DOMAIN}" if address == "" else address,
        "inbox_path": os.path.join(root, "inbox", name),
        "sent_path": os.path.join(root, "sent", name),
        "total": 0,
        "unread": 0,
        "sent_count": 0,
        "registered": address is not None,
    }


def email_row(email_id: str, folder: str = "inbox", **fields) -> dict:
    """A row as the daemon's index answers it (L{aimx.control.listing.email_row})."""
    return {
        "id": email_id, "folder": folder, "from": "sender@example.com",
        "to": f"alice@{DOMAIN}", "subject": "Hi", "date": "2025-06-01T12:00:00Z",
        "read": False, "trusted": "none", "thread_id": "0" * 16, "message_id": "m@x",
        "delivery_status": "delivered" if folder == "sent" else "",
        "has_attachments": False, **fields,
    }


def write_email(directory: str, stem: str, *, bundle=False, body="Hello body", **fields) -> str:
    """Store an email file (flat, or as a bundle) and return its path."""
    values = {
        "id": stem, "message_id": f"{stem}@example.com", "from": "sender@example.com",
        "to": f"alice@{DOMAIN}", "subject": "Hi", "date": "2025-06-01T12:00:00Z", "read": False,
    }
    values.update(fields)
    if bundle:
        directory = os.path.join(directory, stem)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, stem + ".md")
    with open(path, "wb") as f:
        f.write(frontmatter.render(values, body))
    return path


def run(coroutine):
    return asyncio.run(coroutine)


class ToolsTestCase(SynchronousTestCase):
    def setUp(self):
        self.root = os.path.abspath(self.mktemp())
        self.inbox = os.path.join(self.root, "inbox", "alice")
        self.sent_dir = os.path.join(self.root, "sent", "alice")
        os.makedirs(self.inbox)
        self.daemon = FakeDaemon([row(self.root, "alice"), row(self.root, "catchall", "*@t")])
        self.tools = tools.Tools(self.daemon)

    def fails(self, coroutine) -> str:
        """The text of the ToolError the tool raises."""
        return str(self.assertRaises(ToolError, run, coroutine))


class MailboxToolTests(ToolsTestCase):
    def test_list(self):
        """Case 4: the rows as compact JSON, sorted by name, keys in the daemon's order."""
        self.daemon.rows.reverse()
        text = run(self.tools.mailbox_list())
        self.assertNotIn(" ", text.replace("*@t", ""))
        rows = json.loads(text)
        self.assertEqual([r["name"] for r in rows], ["alice", "catchall"])
        self.assertEqual(list(rows[0]), ["name", "address", "inbox_path", "sent_path", "total",
                                         "unread", "sent_count", "registered"])

    def test_list_empty(self):
        """Nothing visible: exactly `[]`."""
        self.daemon.rows = []
        self.assertEqual(run(self.tools.mailbox_list()), "[]")

    def test_create(self):
        """MAILBOX-CREATE without an owner; the answer is the new address."""
        self.assertEqual(run(self.tools.mailbox_create("task-42")), f"task-42@{DOMAIN}")
        self.assertEqual(self.daemon.calls, [(wire.MailboxCreate, {"name": "task-42"})])

    def test_create_refused(self):
        """Daemon errors surface as `[CODE] reason`."""
        self.daemon.answers[wire.MailboxCreate] = MailboxError("mailbox 'x' already exists")
        self.assertEqual(self.fails(self.tools.mailbox_create("x")),
                         "[MAILBOX] mailbox 'x' already exists")

    def test_create_role_name(self):
        """The daemon's role-address refusal reaches the agent as `[VALIDATION] <reason>`."""
        refusal = self.assertRaises(ValidationError, configedit.check_role_name, "postmaster",
                                    by_root=False)
        self.daemon.answers[wire.MailboxCreate] = refusal
        self.assertEqual(self.fails(self.tools.mailbox_create("postmaster")),
                         "[VALIDATION] mailbox name 'postmaster' is a role address (RFC 2142); "
                         "only root can create it")
        self.assertEqual(self.daemon.calls, [(wire.MailboxCreate, {"name": "postmaster"})])

    def test_delete(self):
        """MAILBOX-DELETE with force as given; `Mailbox '<name>' deleted.`"""
        self.assertEqual(run(self.tools.mailbox_delete("alice", True)), "Mailbox 'alice' deleted.")
        self.assertEqual(self.daemon.calls, [(wire.MailboxDelete, {"name": "alice", "force": True})])

    def test_delete_catchall_forced(self):
        """Forcing the catchall is refused before any I/O."""
        self.assertEqual(self.fails(self.tools.mailbox_delete("catchall", True)),
                         "Cannot delete the catchall mailbox")
        self.assertEqual(self.daemon.calls, [])


class EmailListTests(ToolsTestCase):
    """email_list asks the daemon's index (MAIL-LIST) for the page; the rows are its
    rows, cut to the spec's keys (what the index does with the files: test_mailindex)."""

    def test_two_rows(self):
        """Case 5: the daemon's rows, newest first, with the inbox keys."""
        self.daemon.emails["inbox"] = [email_row("2025-06-01-002", read=True, subject="Second"),
                                       email_row("2025-06-01-001")]
        rows = json.loads(run(self.tools.email_list("alice")))
        self.assertEqual(rows[0], {"id": "2025-06-01-002", "from": "sender@example.com",
                                   "to": f"alice@{DOMAIN}", "subject": "Second",
                                   "date": "2025-06-01T12:00:00Z", "read": True,
                                   "trusted": "none", "thread_id": "0" * 16,
                                   "has_attachments": False})
        self.assertEqual((rows[1]["read"], rows[1]["from"]), (False, "sender@example.com"))
        [(_, arguments)] = [c for c in self.daemon.calls if c[0] is wire.MailList]
        self.assertEqual(arguments, {"mailbox": "alice", "folder": "inbox", "limit": 50,
                                     "offset": 0})

    def test_paging_and_clamp(self):
        """Cases 6, 7: limit and offset go to the daemon, limit at most 200; `[]` when empty."""
        self.assertEqual(run(self.tools.email_list("alice")), "[]")
        self.daemon.emails["inbox"] = [email_row(f"2025-06-01-{n:03}") for n in range(205)]
        self.assertEqual(len(json.loads(run(self.tools.email_list("alice", limit=500)))), 200)
        self.assertEqual(run(self.tools.email_list("alice", limit=0)), "[]")
        rows = json.loads(run(self.tools.email_list("alice", limit=2, offset=1)))
        self.assertEqual([r["id"] for r in rows], ["2025-06-01-001", "2025-06-01-002"])

    def test_sent_rows(self):
        """The sent folder: delivery_status instead of read."""
        self.daemon.emails["sent"] = [email_row("2025-06-01-002", "sent", delivery_status="")]
        rows = json.loads(run(self.tools.email_list("alice", "sent")))
        self.assertEqual(list(rows[0]), ["id", "from", "to", "subject", "date", "delivery_status",
                                         "thread_id", "has_attachments"])
        self.assertEqual(rows[0]["delivery_status"], "")

    def test_trust_thread_attachments(self):
        """Rows carry the index's trusted, thread_id and has_attachments (sent rows no
        trusted)."""
        self.daemon.emails["inbox"] = [
            email_row("2025-06-02-001", trusted="false", thread_id="t1", has_attachments=True),
            email_row("2025-06-01-001", trusted="true", thread_id="t1")]
        self.daemon.emails["sent"] = [email_row("2025-06-03-001", "sent", thread_id="t1",
                                                has_attachments=True)]
        rows = json.loads(run(self.tools.email_list("alice")))
        self.assertEqual([(r["trusted"], r["thread_id"], r["has_attachments"]) for r in rows],
                         [("false", "t1", True), ("true", "t1", False)])
        [sent] = json.loads(run(self.tools.email_list("alice", "sent")))
        self.assertEqual((sent["thread_id"], sent["has_attachments"]), ("t1", True))
        self.assertNotIn("trusted", sent)

    def test_bad_folder(self):
        """Any folder but inbox/sent is refused with the spec's text."""
        self.assertEqual(self.fails(self.tools.email_list("alice", "drafts")),
                         'Invalid folder \'drafts\': expected "inbox" or "sent".')

    def test_unknown_mailbox(self):
        """Case 9: a mailbox the listing lacks (missing or someone else's) does not exist."""
        self.assertEqual(self.fails(self.tools.email_list("nonexistent")),
                         "Mailbox 'nonexistent' does not exist.")
        self.assertNotIn("MAIL-LIST", self.daemon.names())

    def test_daemon_error(self):
        """A daemon error is its code and reason."""
        self.daemon.answers[wire.MailList] = IOFailure("the mail index is not available")
        self.assertEqual(self.fails(self.tools.email_list("alice")),
                         "[IO] the mail index is not available")


class EmailSearchTests(ToolsTestCase):
    def test_rows_and_arguments(self):
        """Rows are email_list's for their folder, with folder and snippet; every filter
        goes to MAIL-SEARCH, `from` as `sender`, limit at most 200."""
        self.daemon.found = [email_row("2025-06-02-001", "sent", snippet="…the report…"),
                             email_row("2025-06-01-001", snippet="report")]
        rows = json.loads(run(self.tools.email_search(
            "alice", "report", "all", "bob", "2025-06-01", "2025-06-30", True, False, 500)))
        self.assertEqual(rows[0], {"id": "2025-06-02-001", "folder": "sent",
                                   "from": "sender@example.com", "to": f"alice@{DOMAIN}",
                                   "subject": "Hi", "date": "2025-06-01T12:00:00Z",
                                   "delivery_status": "delivered", "thread_id": "0" * 16,
                                   "has_attachments": False, "snippet": "…the report…"})
        self.assertEqual(list(rows[1]), ["id", "folder", "from", "to", "subject", "date", "read",
                                         "trusted", "thread_id", "has_attachments", "snippet"])
        [(_, arguments)] = [c for c in self.daemon.calls if c[0] is wire.MailSearch]
        self.assertEqual(arguments, {"mailbox": "alice", "query": "report", "folder": "all",
                                     "sender": "bob", "since": "2025-06-01",
                                     "until": "2025-06-30", "unread": True, "trusted": False,
                                     "limit": 200})

    def test_checks(self):
        """A bad folder and an unknown mailbox are refused before any search."""
        self.assertEqual(self.fails(self.tools.email_search("alice", "x", "drafts")),
                         'Invalid folder \'drafts\': expected "inbox", "sent" or "all".')
        self.assertEqual(self.fails(self.tools.email_search("nope", "x")),
                         "Mailbox 'nope' does not exist.")
        self.daemon.answers[wire.MailSearch] = MalformedError("since: 'x' is not an RFC "
                                                                  "3339 date")
        self.assertIn("since: 'x'", self.fails(self.tools.email_search("alice", "x")))


class EmailThreadTests(ToolsTestCase):
    def test_rows(self):
        """Each message: id, folder, from, to, date, subject, trusted, read, text."""
        self.daemon.found = [email_row("2025-06-01-001", text="Shall we?"),
                             email_row("2025-06-01-002", "sent", text="Yes.")]
        rows = json.loads(run(self.tools.email_thread("alice", id="2025-06-01-002")))
        self.assertEqual([list(r) for r in rows], [list(tools._THREAD_KEYS)] * 2)
        self.assertEqual([(r["folder"], r["text"]) for r in rows],
                         [("inbox", "Shall we?"), ("sent", "Yes.")])
        [(_, arguments)] = [c for c in self.daemon.calls if c[0] is wire.MailThread]
        self.assertEqual(arguments, {"mailbox": "alice", "id": "2025-06-01-002",
                                     "thread_id": None, "limit": 50})

    def test_checks(self):
        """Exactly one of id and thread_id; ids are checked; not found says which."""
        self.assertEqual(self.fails(self.tools.email_thread("alice")),
                         "Give exactly one of id and thread_id.")
        self.assertEqual(self.fails(self.tools.email_thread("alice", "a", "b")),
                         "Give exactly one of id and thread_id.")
        self.assertEqual(self.fails(self.tools.email_thread("alice", "../x")),
                         "Email ID contains invalid characters.")
        self.daemon.answers[wire.MailThread] = NotFoundError("email 'x' not found")
        self.assertEqual(self.fails(self.tools.email_thread("alice", "x")),
                         "Email 'x' not found in mailbox 'alice'.")
        self.assertEqual(self.fails(self.tools.email_thread("alice", thread_id="ab")),
                         "Thread 'ab' not found in mailbox 'alice'.")


class EmailReadTests(ToolsTestCase):
    def test_read(self):
        """Case 8: the file verbatim, frontmatter and body; flat or bundled."""
        path = write_email(self.inbox, "2025-06-01-001", body="Hello body é")
        with open(path, encoding="utf-8") as f:
            self.assertEqual(run(self.tools.email_read("alice", "2025-06-01-001")), f.read())
        write_email(self.inbox, "2025-06-02-001", bundle=True, body="In a bundle")
        self.assertIn("In a bundle", run(self.tools.email_read("alice", "2025-06-02-001")))
        write_email(self.sent_dir, "2025-06-03-001", body="Sent one")
        self.assertIn("Sent one", run(self.tools.email_read("alice", "2025-06-03-001", "sent")))

    def test_extracted(self):
        """extracted: a reply's new text (References alone makes a reply), a sent one's too,
        a message that is not a reply whole; a file without frontmatter is refused."""
        quote = "\n\nOn Mon, 1 Jun 2025, Alice <a@example.com> wrote:\n> Earlier words\n"
        write_email(self.inbox, "2025-06-01-001", body="Fine." + quote,
                    references="root@example.com")
        write_email(self.sent_dir, "2025-06-02-001", bundle=True, body="Sent." + quote,
                    in_reply_to="x@example.com")
        write_email(self.inbox, "2025-06-03-001", body="Not a reply." + quote)
        self.assertEqual(run(self.tools.email_read("alice", "2025-06-01-001", extracted=True)),
                         "Fine.")
        self.assertEqual(run(self.tools.email_read("alice", "2025-06-02-001", "sent", True)),
                         "Sent.")
        self.assertEqual(run(self.tools.email_read("alice", "2025-06-03-001", extracted=True)),
                         "Not a reply." + quote.rstrip("\n"))
        with open(os.path.join(self.inbox, "2025-06-04-001.md"), "w") as f:
            f.write("no frontmatter\n")
        self.assertEqual(self.fails(self.tools.email_read("alice", "2025-06-04-001",
                                                          extracted=True)),
                         "Email '2025-06-04-001' has no readable frontmatter.")

    def test_attachment_paths(self):
        """Attachment paths are absolute, in the bundle; the rest of the file is as stored."""
        attachments = [
            {"filename": "report.pdf", "content_type": "application/pdf", "size": 3,
             "path": "report.pdf"},
            {"filename": "x", "content_type": "text/plain", "size": 1, "path": "../../etc/x"},
        ]
        path = write_email(self.inbox, "2025-06-02-001", bundle=True, body="Body é",
                           attachments=attachments)
        text = run(self.tools.email_read("alice", "2025-06-02-001"))
        fields, body = frontmatter.parse(text.encode("utf-8"))
        bundle = os.path.join(self.inbox, "2025-06-02-001")
        self.assertEqual([a["path"] for a in fields["attachments"]],
                         [os.path.join(bundle, "report.pdf"), "../../etc/x"])
        with open(path, "rb") as f:
            stored, stored_body = frontmatter.parse(f.read())
        self.assertEqual(body, stored_body)
        stored["attachments"][0]["path"] = os.path.join(bundle, "report.pdf")
        self.assertEqual(fields, stored)
        flat = write_email(self.inbox, "2025-06-04-001", attachments=attachments)
        with open(flat, encoding="utf-8") as f:  # no bundle: nothing to point at
            self.assertEqual(run(self.tools.email_read("alice", "2025-06-04-001")), f.read())
        sent = write_email(self.sent_dir, "2025-06-03-001", bundle=True, attachments=attachments)
        fields, _ = frontmatter.parse(
            run(self.tools.email_read("alice", "2025-06-03-001", "sent")).encode())
        self.assertEqual(fields["attachments"][0]["path"],
                         os.path.join(os.path.dirname(sent), "report.pdf"))

    def test_not_found(self):
        """Case 8: an unknown id is not found, naming the id and the mailbox."""
        self.assertEqual(self.fails(self.tools.email_read("alice", "nonexistent")),
                         "Email 'nonexistent' not found in mailbox 'alice'.")

    def test_bad_ids(self):
        """Case 8: ids with `..`, `/`, `\\` or NUL, and empty ids, are refused before any I/O."""
        for bad in ("../x", "a/b", "a\\b", "a\0b", ".."):
            self.assertEqual(self.fails(self.tools.email_read("alice", bad)),
                             "Email ID contains invalid characters.")
        self.assertEqual(self.fails(self.tools.email_read("alice", "")),
                         "Email ID cannot be empty.")
        self.assertEqual(self.daemon.calls, [])

    def test_symlink_no_fallback(self):
        """A symlinked <id>.md is not found, even with a real bundle of that id beside it."""
        outside = write_email(os.path.join(self.root, "elsewhere"), "secret", body="SECRET")
        os.symlink(outside, os.path.join(self.inbox, "2025-06-01-001.md"))
        write_email(self.inbox, "2025-06-01-001", bundle=True, body="bundle")
        self.assertIn("not found", self.fails(self.tools.email_read("alice", "2025-06-01-001")))

    def test_links_refused(self):
        """A symlinked bundle dir, a symlinked .md inside a bundle and a hard link are refused."""
        outside = write_email(os.path.join(self.root, "elsewhere", "b1"), "b1", body="SECRET")
        os.symlink(os.path.dirname(outside), os.path.join(self.inbox, "b1"))
        os.makedirs(os.path.join(self.inbox, "b2"))
        os.symlink(outside, os.path.join(self.inbox, "b2", "b2.md"))
        os.link(outside, os.path.join(self.inbox, "hl.md"))
        for email_id in ("b1", "b2", "hl"):
            self.assertIn("not found", self.fails(self.tools.email_read("alice", email_id)))

    def test_fifo(self):
        """A FIFO named like a message is not found (and the read does not block)."""
        os.mkfifo(os.path.join(self.inbox, "fifo.md"))
        self.assertIn("not found", self.fails(self.tools.email_read("alice", "fifo")))


class AddressAsMailboxTests(ToolsTestCase):
    """A full address where a mailbox name is expected (issue 15, point 7)."""

    HINT = ("Mailbox 'bob@test.local' does not exist. None of your mailboxes has that "
            "address; give a mailbox name as listed by mailbox_list (the part before the '@').")

    def test_resolved(self):
        """The address of one of the caller's mailboxes names it, in any case, with a name."""
        write_email(self.inbox, "2025-06-01-001")
        self.daemon.emails["inbox"] = [email_row("2025-06-01-001")]
        for given in (f"alice@{DOMAIN}", f"ALICE@{DOMAIN.upper()}", f"Alice <alice@{DOMAIN}>"):
            rows = json.loads(run(self.tools.email_list(given)))
            self.assertEqual([r["id"] for r in rows], ["2025-06-01-001"])
        self.assertEqual({a["mailbox"] for c, a in self.daemon.calls if c is wire.MailList},
                         {"alice"})
        self.assertIn("Hello body", run(self.tools.email_read(f"alice@{DOMAIN}",
                                                              "2025-06-01-001")))

    def test_daemon_gets_the_name(self):
        """Commands that name the mailbox to the daemon send its name, not the address."""
        run(self.tools.email_mark_read(f"alice@{DOMAIN}", "x1"))
        run(self.tools.email_mark_unread(f"alice@{DOMAIN}", "x1"))
        self.assertEqual(run(self.tools.hook_create(f"alice@{DOMAIN}", "on_receive",
                                                    ["/bin/true"])),
                         "Hook created on mailbox 'alice'.")
        self.assertEqual(run(self.tools.mailbox_delete(f"alice@{DOMAIN}")),
                         "Mailbox 'alice' deleted.")
        sent = dict(self.daemon.calls)
        self.assertEqual(sent[wire.MarkRead]["mailbox"], "alice")
        self.assertEqual(sent[wire.MarkUnread]["mailbox"], "alice")
        self.assertEqual(sent[wire.HookCreate]["mailbox"], "alice")
        self.assertEqual(sent[wire.MailboxDelete], {"name": "alice", "force": False})

    def test_hook_list_and_send(self):
        """hook_list filters by the resolved name; email_send sends from its address."""
        self.daemon.hooks = [{"name": "h", "mailbox": "alice", "event": "on_receive",
                              "cmd": ["/bin/true"], "fire_on_untrusted": False,
                              "timeout_secs": 60}]
        self.assertEqual(len(json.loads(run(self.tools.hook_list(f"alice@{DOMAIN}")))), 1)
        run(self.tools.email_send(f"alice@{DOMAIN}", "bob@example.com", "s", "b"))
        self.assertEqual(self.daemon.sent()[0]["From"], f"alice@{DOMAIN}")

    def test_unresolved_hint(self):
        """An address that is none of the caller's mailboxes (missing or someone else's,
        alike) says which form is wanted; a plain unknown name keeps the spec's text."""
        self.assertEqual(self.fails(self.tools.email_list("bob@test.local")), self.HINT)
        self.assertEqual(self.fails(self.tools.email_mark_read("bob@test.local", "x")),
                         self.HINT)
        self.assertEqual(self.fails(self.tools.mailbox_delete("bob@test.local", True)),
                         self.HINT)
        self.assertEqual(self.fails(self.tools.email_list("bob")), "Mailbox 'bob' does not exist.")
        self.assertNotIn("MARK-READ", self.daemon.names())
        self.assertNotIn("MAILBOX-DELETE", self.daemon.names())

    def test_catchall_by_address(self):
        """The catchall's wildcard address names it; forcing its deletion is still refused."""
        self.assertEqual(self.fails(self.tools.mailbox_delete("*@t", True)),
                         "Cannot delete the catchall mailbox")
        self.assertNotIn("MAILBOX-DELETE", self.daemon.names())


class MarkTests(ToolsTestCase):
    def test_mark(self):
        """Case 10 (wording): MARK-READ / MARK-UNREAD after the row lookup."""
        self.assertEqual(run(self.tools.email_mark_read("alice", "x1")), "Email 'x1' marked as read.")
        self.assertEqual(run(self.tools.email_mark_unread("alice", "x1")),
                         "Email 'x1' marked as unread.")
        self.assertEqual(self.daemon.calls[1], (wire.MarkRead, {"mailbox": "alice", "id": "x1"}))
        self.assertEqual(self.daemon.names(),
                         ["MAILBOX-LIST", "MARK-READ", "MAILBOX-LIST", "MARK-UNREAD"])

    def test_checks(self):
        """Bad ids and invisible mailboxes are refused without a MARK; daemon errors pass."""
        self.assertEqual(self.fails(self.tools.email_mark_read("alice", "a/b")),
                         "Email ID contains invalid characters.")
        self.assertEqual(self.fails(self.tools.email_mark_unread("bob", "x")),
                         "Mailbox 'bob' does not exist.")
        self.assertNotIn("MARK-READ", self.daemon.names())
        self.daemon.answers[wire.MarkRead] = NoEntry("mailbox 'alice' does not exist")
        self.assertEqual(self.fails(self.tools.email_mark_read("alice", "x")),
                         "[ENOENT] mailbox 'alice' does not exist")


def open_on(paths) -> list[str]:
    """Which of C{paths} a descriptor of this process is open on."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target in paths:
            found.append(target)
    return found


class SendTests(ToolsTestCase):
    def send(self, **kw):
        arguments = {"from_mailbox": "alice", "to": "bob@example.com", "subject": "Hi",
                     "body": "**b**", **kw}
        return self.tools.email_send(**arguments)

    def test_send(self):
        """From = the row's address; cc/bcc delivered; the success text names `to`."""
        text = run(self.send(cc="c@example.com", bcc="d@example.com"))
        self.assertEqual(text, "Email sent to bob@example.com. Message-ID: <new@test.local>")
        message, arguments = self.daemon.sent()
        self.assertEqual((message["From"], message["To"], message["Cc"], message["Bcc"]),
                         (f"alice@{DOMAIN}", "bob@example.com", "c@example.com", "d@example.com"))
        self.assertEqual(message.get_content().strip(), "**b**")
        self.assertEqual((arguments["text_only"], arguments["html_body"]), (False, None))
        self.assertTrue(message["Message-ID"].endswith(f"@{DOMAIN}>"))

    def test_modes(self):
        """text_only travels as the flag; html_body CRLF-normalised as bytes."""
        run(self.send(text_only=True))
        self.assertEqual(self.daemon.sent()[1]["text_only"], True)
        self.daemon.calls = []
        run(self.send(html_body="<p>x</p>\n<p>y</p>"))
        self.assertEqual(self.daemon.sent()[1]["html_body"], b"<p>x</p>\r\n<p>y</p>")

    def test_exclusive(self):
        """Case 11: text_only + html_body (even empty) → the SEND text exactly, no I/O."""
        for html in ("<p>x</p>", ""):
            self.assertEqual(self.fails(self.send(text_only=True, html_body=html)),
                             tools.EXCLUSIVE)
            self.assertEqual(self.fails(self.tools.email_reply("alice", "x", "b", True, html)),
                             tools.EXCLUSIVE)
        self.assertEqual(self.daemon.calls, [])

    def test_unknown_sender(self):
        """Case 11: an invisible from_mailbox does not exist; nothing is sent."""
        self.assertEqual(self.fails(self.send(from_mailbox="nonexistent")),
                         "Mailbox 'nonexistent' does not exist.")
        self.assertNotIn("SEND", self.daemon.names())

    def test_unusable_senders(self):
        """Unregistered dirs and the catchall cannot send."""
        self.daemon.rows.append(row(self.root, "stray", None))
        self.assertEqual(self.fails(self.send(from_mailbox="stray")),
                         "Mailbox 'stray' is not registered.")
        self.assertEqual(
            self.fails(self.send(from_mailbox="catchall")),
            "Cannot send from 'catchall': catchall mailbox has no valid sender address. "
            "Use a named mailbox.")

    def test_threading(self):
        """references is applied only with reply_to."""
        run(self.send(references="<r0@x>"))
        message = self.daemon.sent()[0]
        self.assertNotIn("In-Reply-To", message)
        self.assertNotIn("References", message)
        self.daemon.calls = []
        run(self.send(reply_to="m1@x", references="<r0@x> <m1@x>"))
        message = self.daemon.sent()[0]
        self.assertEqual((message["In-Reply-To"], message["References"]),
                         ("<m1@x>", "<r0@x> <m1@x>"))

    def test_attachments(self):
        """Files are opened by the tool and passed as descriptors (the message carries
        none); a missing one is the compose error."""
        path = os.path.join(self.root, "notes.txt")
        with open(path, "w") as f:
            f.write("attached")
        run(self.send(attachments=[path]))
        self.assertEqual(open_on([path]), [])  # closed once answered
        self.assertEqual(list(self.daemon.sent()[0].iter_attachments()), [])
        self.assertEqual(self.daemon.attached, [(path, b"attached")])
        missing = os.path.join(self.root, "missing.pdf")
        self.assertEqual(self.fails(self.send(attachments=[missing])),
                         f"Attachment file not found: {missing}")

    def test_header_injection(self):
        """CR/LF in the subject is the client's refusal."""
        self.assertIn("possible header injection",
                      self.fails(self.send(subject="x\r\nBcc: y@z")).lower())

    def test_daemon_errors(self):
        """`[CODE] reason`, e.g. a Markdown body over 5 MiB."""
        self.daemon.answers[wire.Send] = BodyTooLarge("markdown body exceeds 5 MiB")
        self.assertEqual(self.fails(self.send()), "[BODY_TOO_LARGE] markdown body exceeds 5 MiB")

    def test_partial(self):
        """Recipients not delivered are named after the success line."""
        self.daemon.deliveries = [
            {"rcpt": "bob@example.com", "status": "delivered", "details": ""},
            {"rcpt": "eve@later.example", "status": "deferred", "details": "451 try later"},
        ]
        text = run(self.send(to="bob@example.com, eve@later.example"))
        self.assertEqual(text.splitlines()[1:], [
            "Not delivered to every recipient:",
            "  deferred: eve@later.example: 451 try later",
        ])


class HeldTests(ToolsTestCase):
    def test_held_send(self):
        """A send the policy holds says so with its id (a success, not an error)."""
        self.daemon.answers[wire.Send] = {"message_id": "<m@test.local>",
                                              "held": "20260301-120000-0a1b2c3d"}
        self.assertEqual(run(self.send_one()), "held for approval: 20260301-120000-0a1b2c3d")

    def test_held_list(self):
        """held_list asks HELD-LIST for the mailbox's name (an address works too)."""
        holds = [{"hold_id": "20260301-120000-0a1b2c3d", "mailbox": "alice"}]
        self.daemon.answers[wire.HeldList] = {"holds": holds}
        self.assertEqual(json.loads(run(self.tools.held_list(f"alice@{DOMAIN}"))), holds)
        self.assertEqual(self.daemon.calls[-1], (wire.HeldList, {"mailbox": "alice"}))
        self.assertEqual(self.fails(self.tools.held_list("nobody")),
                         "Mailbox 'nobody' does not exist.")

    def send_one(self):
        return self.tools.email_send("alice", "bob@example.com", "Hi", "b")


class ReplyTests(ToolsTestCase):
    def test_threaded_reply(self):
        """Case 13: Re: subject, bare To, In-Reply-To and References from the original."""
        write_email(self.inbox, "2025-06-01-001", subject="Hello", message_id="m1@x",
                    references="r0@x", **{"from": "Sender Name <sender@example.com>"})
        text = run(self.tools.email_reply("alice", "2025-06-01-001", "Thanks"))
        self.assertEqual(text, "Email sent to sender@example.com. Message-ID: <new@test.local>")
        message, _ = self.daemon.sent()
        self.assertEqual(
            (message["Subject"], message["To"], message["From"], message["In-Reply-To"],
             message["References"]),
            ("Re: Hello", "sender@example.com", f"alice@{DOMAIN}", "<m1@x>", "<r0@x> <m1@x>"))

    def test_reply_goes_to_the_real_sender_only(self):
        """A display name holding addresses never redirects the reply: the stored from is
        parsed, and anything but one clean mailbox is refused."""
        write_email(self.inbox, "c", subject="Hi", message_id="m2@x",
                    **{"from": '"<v1@x.com, v2@y.com>" <att@z.com>'})
        run(self.tools.email_reply("alice", "c", "x"))
        self.assertEqual(self.daemon.sent()[0]["To"], "att@z.com")
        for i, stored in enumerate(("Name <a@x.com, b@y.com>", "<v1@x.com, v2@y.com> <att@z.com>",
                                    "a@x.com, b@y.com", '"<boss@company.com>"@evil.com x')):
            write_email(self.inbox, f"d{i}", subject="Hi", message_id=f"m3{i}@x",
                        **{"from": stored})
            self.daemon.calls = []
            with self.assertRaises(ToolError) as caught:
                run(self.tools.email_reply("alice", f"d{i}", "x"))
            self.assertIn("no single sender address", str(caught.exception))
            self.assertNotIn("SEND", self.daemon.names())

    def test_reply_to_wins(self):
        """A reply goes to every Reply-To mailbox when there is one, else to From."""
        write_email(self.inbox, "r", subject="Hi", message_id="m4@x",
                    **{"from": "Boss <boss@company.com>",
                       "reply_to": '"Desk, Help" <help@company.com>, ops@company.com'})
        run(self.tools.email_reply("alice", "r", "x"))
        self.assertEqual(self.daemon.sent()[0]["To"], "help@company.com, ops@company.com")

    def test_reply_variants(self):
        """`Re: ` is not doubled; no stored references → just the id; no id → no threading."""
        write_email(self.inbox, "a", subject="Re: Hello", message_id="m1@x")
        write_email(self.inbox, "b", subject="re: lower", message_id="")
        run(self.tools.email_reply("alice", "a", "x"))
        message = self.daemon.sent()[0]
        self.assertEqual((message["Subject"], message["References"]), ("Re: Hello", "<m1@x>"))
        self.daemon.calls = []
        run(self.tools.email_reply("alice", "b", "x"))
        message = self.daemon.sent()[0]
        self.assertEqual(message["Subject"], "Re: re: lower")
        self.assertNotIn("In-Reply-To", message)
        self.assertNotIn("References", message)

    def test_not_found(self):
        """Case 13: an unknown id, or one only in sent, is not found; nothing is sent."""
        write_email(self.sent_dir, "s1")
        for email_id in ("nonexistent", "s1"):
            self.assertEqual(self.fails(self.tools.email_reply("alice", email_id, "x")),
                             f"Email '{email_id}' not found in mailbox 'alice'.")
        self.assertNotIn("SEND", self.daemon.names())

    def test_unparsable(self):
        """An original without frontmatter cannot be replied to."""
        with open(os.path.join(self.inbox, "x.md"), "w") as f:
            f.write("just text\n")
        self.assertEqual(self.fails(self.tools.email_reply("alice", "x", "b")),
                         "Failed to parse email frontmatter.")

    def test_from_catchall(self):
        """The catchall cannot reply: `Cannot reply from …`."""
        write_email(os.path.join(self.root, "inbox", "catchall"), "c1")
        self.assertTrue(self.fails(self.tools.email_reply("catchall", "c1", "b"))
                        .startswith("Cannot reply from 'catchall': catchall mailbox"))


class HookToolTests(ToolsTestCase):
    def test_create(self):
        """HOOK-CREATE body: cmd, fire_on_untrusted, type; timeout only when given."""
        text = run(self.tools.hook_create("alice", "on_receive", ["/bin/true"], "h1"))
        self.assertEqual(text, "Hook created on mailbox 'alice'.")
        run(self.tools.hook_create("alice", "after_send", ["/bin/echo", "x"], timeout_secs=5))
        creates = [a for c, a in self.daemon.calls if c is wire.HookCreate]
        self.assertEqual(creates[0], {"mailbox": "alice", "event": "on_receive", "name": "h1",
                                      "body": '{"cmd":["/bin/true"],"fire_on_untrusted":false,'
                                              '"type":"cmd"}'})
        self.assertEqual(json.loads(creates[1]["body"])["timeout_secs"], 5)
        self.assertIsNone(creates[1]["name"])
        run(self.tools.hook_create("alice", "on_receive", ["/bin/true"], fire_on_review=True))
        creates = [a for c, a in self.daemon.calls if c is wire.HookCreate]
        self.assertIs(json.loads(creates[2]["body"])["fire_on_review"], True)

    def test_create_checks(self):
        """Case 14: a foreign mailbox does not exist; empty cmd; daemon reasons verbatim."""
        self.assertEqual(self.fails(self.tools.hook_create("bob", "on_receive", ["/bin/true"])),
                         "Mailbox 'bob' does not exist.")
        self.assertEqual(self.fails(self.tools.hook_create("alice", "on_receive", [])),
                         "cmd must not be empty")
        self.assertNotIn("HOOK-CREATE", self.daemon.names())

    def test_list(self):
        """Case 15: none → `[]`; rows sorted by (mailbox, event, name); filter by mailbox."""
        self.assertEqual(run(self.tools.hook_list()), "[]")
        hook = {"name": "b", "mailbox": "alice", "event": "on_receive", "cmd": ["/bin/true"],
                "fire_on_untrusted": False, "timeout_secs": 60}
        self.daemon.hooks = [hook, dict(hook, name="a"), dict(hook, mailbox="zed"),
                             dict(hook, event="after_send")]
        rows = json.loads(run(self.tools.hook_list()))
        self.assertEqual([(r["mailbox"], r["event"], r["name"]) for r in rows], [
            ("alice", "after_send", "b"), ("alice", "on_receive", "a"),
            ("alice", "on_receive", "b"), ("zed", "on_receive", "b")])
        self.assertEqual(len(json.loads(run(self.tools.hook_list("alice")))), 3)
        self.assertEqual(self.fails(self.tools.hook_list("zed")), "Mailbox 'zed' does not exist.")

    def test_delete(self):
        """Case 14: straight to the daemon; not-found is the daemon's text."""
        self.assertEqual(run(self.tools.hook_delete("h1")), "Hook 'h1' deleted.")
        self.assertEqual(self.daemon.calls, [(wire.HookDelete, {"name": "h1"})])
        self.daemon.answers[wire.HookDelete] = NoEntry("hook 'no_such_hook' not found")
        self.assertEqual(self.fails(self.tools.hook_delete("no_such_hook")),
                         "[ENOENT] hook 'no_such_hook' not found")


class DaemonDownTests(SynchronousTestCase):
    """Case 14: the client's failures become the texts the agent sees (case 3, every tool
    against a missing socket, is in tests.integration.test_mcp)."""

    def test_other_failures(self):
        """Undecodable replies and other connect failures have their own texts."""
        for error, text in (
            (aioclient.MalformedResponse("UNKNOWN boom"),
             "Malformed response from aimx daemon: UNKNOWN boom"),
            (aioclient.ConnectFailed("Failed to connect to aimx daemon at /x: boom"),
             "Failed to connect to aimx daemon at /x: boom"),
            (DaemonNotRunning("down"), tools.NOT_RUNNING),
        ):
            daemon = FakeDaemon()
            daemon.answers[wire.MailboxList] = error
            e = self.assertRaises(ToolError, run, tools.Tools(daemon).mailbox_list())
            self.assertEqual(str(e), text)


class ServerTests(SynchronousTestCase):
    """The registered server, through the SDK's in-process client."""

    def setUp(self):
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.root, "inbox", "alice"))
        self.daemon = FakeDaemon([row(self.root, "alice")])

    def session(self, body):
        """Run C{body(client)} in a connected in-process session; return its result."""

        async def go():
            async with Client(server.build(self.daemon)) as client:
                return await body(client)

        return run(go())

    def call(self, name, arguments):
        """The tool's result, or the MCPError (JSON-RPC error) the call failed with."""

        async def body(client):
            try:
                return await client.call_tool(name, arguments)
            except MCPError as e:
                return e

        return self.session(body)

    def test_surface(self):
        """Cases 1, 2: the twelve tools and email_search, email_thread, held_list;
        capabilities are tools only; serverInfo."""

        async def body(client):
            listed = (await client.list_tools()).tools
            return client.server_capabilities, client.server_info, client.instructions, listed

        capabilities, info, instructions, listed = self.session(body)
        self.assertEqual({t.name for t in listed}, NAMES)
        self.assertEqual(len(listed), 15)
        self.assertIsNotNone(capabilities.tools)
        self.assertEqual((capabilities.prompts, capabilities.resources, capabilities.logging),
                         (None, None, None))
        self.assertEqual(info.name, "aimx")
        self.assertEqual(instructions,
                         "aimx email server. Manage mailboxes and emails for AI agents")

    def test_schemas(self):
        """Parameters, requirements and defaults as the spec; guidance for agents."""
        tools_ = {t.name: t for t in self.session(lambda c: c.list_tools()).tools}
        schema = tools_["email_list"].input_schema
        self.assertEqual(schema["required"], ["mailbox"])
        limit = schema["properties"]["limit"]
        self.assertEqual((limit["default"], limit["minimum"], limit["maximum"]), (50, 0, 200))
        self.assertEqual(tools_["email_send"].input_schema["required"],
                         ["from_mailbox", "to", "subject", "body"])
        self.assertEqual(list(tools_["hook_create"].input_schema["properties"]),
                         ["mailbox", "event", "cmd", "name", "timeout_secs", "fire_on_untrusted",
                          "fire_on_review", "url"])
        self.assertNotIn("required", tools_["hook_list"].input_schema)
        text_only = tools_["email_send"].input_schema["properties"]["text_only"]["description"]
        self.assertIn("do NOT use it for formatted prose", text_only)
        untrusted = tools_["hook_create"].input_schema["properties"]["fire_on_untrusted"]
        self.assertIn("Leave false unless the user explicitly asks", untrusted["description"])
        self.assertIn("tell the user", tools_["hook_create"].description)

    def test_enums_and_bounds(self):
        """folder and event are enums; timeout_secs is 1-600; offset a u32."""
        tools_ = {t.name: t for t in self.session(lambda c: c.list_tools()).tools}
        for name in ("email_list", "email_read"):
            folder = tools_[name].input_schema["properties"]["folder"]
            self.assertEqual((folder["type"], folder["enum"], folder["default"]),
                             ("string", ["inbox", "sent"], "inbox"))
        properties = tools_["hook_create"].input_schema["properties"]
        self.assertEqual(properties["event"]["enum"], ["on_receive", "after_send"])
        [timeout] = [s for s in properties["timeout_secs"]["anyOf"] if s["type"] == "integer"]
        self.assertEqual((timeout["minimum"], timeout["maximum"]), (1, 600))
        offset = tools_["email_list"].input_schema["properties"]["offset"]
        self.assertEqual((offset["minimum"], offset["maximum"]), (0, 2**32 - 1))

    def test_annotations(self):
        """Read-only tools say so; the deletes are destructive; nothing else is."""
        tools_ = {t.name: t for t in self.session(lambda c: c.list_tools()).tools}
        hints = {name: (t.annotations.read_only_hint, t.annotations.destructive_hint)
                 for name, t in tools_.items()}
        reading = {"mailbox_list", "email_list", "email_read", "hook_list", "email_search",
                   "email_thread", "held_list"}
        self.assertEqual({n for n, (ro, _) in hints.items() if ro}, reading)
        self.assertEqual({n for n, (ro, d) in hints.items() if not ro and d},
                         {"mailbox_delete", "hook_delete"})
        self.assertEqual({n for n, (ro, d) in hints.items() if not ro and d is False},
                         NAMES - reading - {"mailbox_delete", "hook_delete"})
        self.assertIs(tools_["email_send"].annotations.open_world_hint, True)
        self.assertIs(tools_["email_list"].annotations.open_world_hint, False)

    def test_result_text(self):
        """Success is one text block; a tool error is isError with the spec's text exactly."""
        result = self.call("mailbox_list", {})
        self.assertFalse(result.is_error)
        self.assertEqual(json.loads(result.content[0].text)[0]["name"], "alice")
        result = self.call("email_send", {"from_mailbox": "alice", "to": "b@c", "subject": "s",
                                          "body": "b", "text_only": True, "html_body": "<p>x</p>"})
        self.assertTrue(result.is_error)
        self.assertEqual(result.content[0].text, tools.EXCLUSIVE)

    def test_bad_values(self):
        """A value the schema refuses is a tool error: one sentence naming the parameter and
        what it takes, no library text; the tool does not run."""
        alice, hook = {"mailbox": "alice"}, {"mailbox": "alice", "event": "on_receive",
                                             "cmd": ["/bin/true"]}
        mail = {"from_mailbox": "alice", "to": "b@c", "subject": "s", "body": "b"}
        cases = [
            ("email_list", dict(alice, limit=500),
             "Invalid limit 500: expected an integer from 0 to 200."),
            ("email_list", dict(alice, limit=-1),
             "Invalid limit -1: expected an integer from 0 to 200."),
            ("email_list", dict(alice, limit="ten"),
             "Invalid limit 'ten': expected an integer from 0 to 200."),
            ("email_list", dict(alice, limit=2.5),
             "Invalid limit 2.5: expected an integer from 0 to 200."),
            ("email_list", dict(alice, offset=-5),
             "Invalid offset -5: expected an integer from 0 to 4294967295."),
            ("email_list", dict(alice, folder="drafts"),
             'Invalid folder \'drafts\': expected "inbox" or "sent".'),
            ("email_list", dict(alice, folder="in\nbox\t"),
             'Invalid folder \'in\\nbox\\t\': expected "inbox" or "sent".'),
            ("email_read", dict(alice, id="x", folder=3),
             'Invalid folder 3: expected "inbox" or "sent".'),
            ("email_list", {"mailbox": ["alice"]}, "Invalid mailbox: expected a string."),
            ("hook_create", dict(hook, event="on_send"),
             'Invalid event \'on_send\': expected "on_receive" or "after_send".'),
            ("hook_create", dict(hook, timeout_secs=0),
             "Invalid timeout_secs 0: expected an integer from 1 to 600."),
            ("hook_create", dict(hook, timeout_secs=601),
             "Invalid timeout_secs 601: expected an integer from 1 to 600."),
            ("hook_create", dict(hook, cmd=["/bin/true", 5]),
             "Invalid cmd: expected an array of strings."),
            ("mailbox_delete", {"name": "x", "force": "maybe"},
             "Invalid force 'maybe': expected true or false."),
            ("email_send", dict(mail, body=1), "Invalid body 1: expected a string."),
            ("email_send", dict(mail, cc=7), "Invalid cc 7: expected a string."),
            ("email_send", dict(mail, attachments="/tmp/a"),
             "Invalid attachments '/tmp/a': expected an array of strings."),
        ]
        for name, arguments, text in cases:
            result = self.call(name, arguments)
            self.assertTrue(result.is_error, (name, arguments))
            self.assertEqual(result.content[0].text, text)
        result = self.call("email_list", {"mailbox": "alice", "folder": "x" * 100})
        self.assertEqual(result.content[0].text,
                         f"Invalid folder '{'x' * 40}…': expected \"inbox\" or \"sent\".")
        self.assertEqual(self.daemon.calls, [])

    def test_null_folder(self):
        """An explicit null folder is the default, as when absent."""
        result = self.call("email_list", {"mailbox": "alice", "folder": None})
        self.assertEqual((result.is_error, result.content[0].text), (False, "[]"))

    def test_argument_names(self):
        """Missing required args, and unknown ones on the four strict tools, are invalid params."""
        for name, arguments in (
            ("email_read", {"mailbox": "alice"}),
            ("email_mark_read", {"mailbox": "alice", "id": "x", "folder": "sent"}),
            ("email_mark_unread", {"mailbox": "alice", "id": "x", "extra": 1}),
            ("mailbox_create", {"name": "x", "owner": "root"}),
            ("mailbox_delete", {"name": "x", "recursive": True}),
        ):
            error = self.call(name, arguments)
            self.assertIsInstance(error, MCPError)
            self.assertEqual(error.code, INVALID_PARAMS)
        self.assertEqual(self.daemon.calls, [])
        result = self.call("email_list", {"mailbox": "alice", "extra": 1})
        self.assertEqual(result.content[0].text, "[]")

    def test_unknown_tool(self):
        """`hook_list_templates` does not exist: invalid params, not a tool result."""
        error = self.call("hook_list_templates", {})
        self.assertIsInstance(error, MCPError)
        self.assertEqual(error.code, INVALID_PARAMS)
