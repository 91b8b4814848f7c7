"""`aimx mcp` against a real daemon (docs/mcp.md).

Three ways in: raw JSON-RPC lines to an `aimx mcp` child (the wire, no daemon);
the server in-process through the SDK's C{mcp.Client}, in a thread so the
reactor keeps serving the in-process daemon; and the official stdio client
(C{stdio_client} + C{ClientSession}) driving an `aimx mcp` child, as a second
uid when the tests run as root.  A child that must run as another uid imports
everything first, then drops privileges (the interpreter's own files need not
be readable by that uid).
"""

import asyncio
import email
import email.policy
import json
import os
import select
import smtplib
import subprocess
import sys
import tempfile

from mcp import Client, ClientSession, StdioServerParameters, stdio_client
from mcp.server.mcpserver.exceptions import ToolError
from twisted.internet import reactor, threads
from twisted.trial.unittest import SynchronousTestCase

from aimx.control.aioclient import ControlClient
from aimx.core import frontmatter
from aimx.mcp import server, tools
from aimx.loopback.smtpsink import SmtpSink, listen_all
from tests.integration.base import DOMAIN, DaemonTestCase, load_toml
from tests.integration.base import IS_ROOT, NOBODY, REPO
from tests.integration.test_send import SendTestCase
from tests.test_mcp import NAMES

DAEMON_UID = 1  # the second uid of the isolation test (Debian's `daemon`)
_AS_UID = """
import os, sys
import anyio._backends._asyncio, mcp.server.stdio
import aimx.cli, aimx.cli.mcp, aimx.mcp.server
aimx.mcp.server.build(None)  # schema generation imports what it needs, as root
os.setgroups([])
os.setgid(int(sys.argv[2]))
os.setuid(int(sys.argv[1]))
sys.exit(aimx.cli.main(["mcp"]))
"""
INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2024-11-05", "capabilities": {},
               "clientInfo": {"name": "trial", "version": "1"}},
}


def mcp_argv(uid: int | None) -> list[str]:
    """The command line of an `aimx mcp` child, as C{uid}:C{uid} (C{None}: as us)."""
    if uid is None:
        return [sys.executable, "-m", "aimx", "mcp"]
    return [sys.executable, "-c", _AS_UID, str(uid), str(uid)]


class DaemonDownTests(SynchronousTestCase):
    """Case 3: every tool that needs the daemon says it is not running."""

    def setUp(self):
        directory = tempfile.mkdtemp(prefix="aimx-mcp-")
        self.addCleanup(os.rmdir, directory)
        self.tools = tools.Tools(ControlClient(os.path.join(directory, "aimx.sock")))

    def test_every_tool(self):
        """A missing socket → `aimx daemon not running. Start with 'sudo systemctl start aimx'`."""
        t = self.tools
        calls = [
            t.mailbox_list(), t.mailbox_create("support"), t.mailbox_delete("support"),
            t.email_list("a"), t.email_read("a", "x"), t.email_send("a", "b@c", "s", "b"),
            t.email_reply("a", "x", "b"), t.email_mark_read("a", "x"),
            t.email_mark_unread("a", "x"), t.hook_create("a", "on_receive", ["/bin/true"]),
            t.hook_list(), t.hook_delete("h"),
        ]
        for call in calls:
            self.assertEqual(str(self.assertRaises(ToolError, asyncio.run, call)), tools.NOT_RUNNING)


class RawStdioTests(SynchronousTestCase):
    """The wire, with no daemon: cases 1, 3, 14 (daemon down) and 17."""

    def setUp(self):
        runtime = tempfile.mkdtemp(prefix="aimx-run-")
        self.addCleanup(os.rmdir, runtime)
        self.child = subprocess.Popen(
            mcp_argv(None), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, cwd=REPO,
            env=dict(os.environ, PYTHONPATH=REPO, AIMX_RUNTIME_DIR=runtime),
        )
        self.addCleanup(self.stop)
        self.next_id = 10

    def stop(self):
        if self.child.poll() is None:
            self.child.kill()
        self.child.wait()
        for stream in (self.child.stdin, self.child.stdout, self.child.stderr):
            stream.close()

    def send(self, message: dict) -> None:
        self.child.stdin.write(json.dumps(message).encode() + b"\n")
        self.child.stdin.flush()

    def receive(self) -> dict:
        """The next stdout line, which must be one JSON-RPC message (30 s at most)."""
        ready, _, _ = select.select([self.child.stdout], [], [], 30)
        self.assertTrue(ready, "no reply from aimx mcp within 30 s")
        return json.loads(self.child.stdout.readline())

    def initialize(self) -> dict:
        self.send(INITIALIZE)
        reply = self.receive()
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return reply

    def tool(self, name: str, arguments: dict) -> dict:
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call",
                   "params": {"name": name, "arguments": arguments}})
        reply = self.receive()
        self.assertEqual(reply["id"], self.next_id)
        return reply

    def test_initialize_and_exit(self):
        """Cases 1, 17: protocol 2024-11-05 answered with serverInfo and tools; EOF → exit 0."""
        reply = self.initialize()
        result = reply["result"]
        self.assertEqual(result["protocolVersion"], "2024-11-05")
        self.assertEqual(result["serverInfo"]["name"], "aimx")
        self.assertIsInstance(result["capabilities"]["tools"], dict)
        self.assertEqual(set(result["capabilities"]), {"tools"})
        self.send({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        self.assertEqual({t["name"] for t in self.receive()["result"]["tools"]}, NAMES)
        self.child.stdin.close()
        self.assertEqual(self.child.wait(30), 0)
        self.assertEqual(self.child.stdout.read(), b"")

    def test_no_daemon(self):
        """Cases 3, 14: tool errors saying the daemon is down, never a JSON-RPC error."""
        self.initialize()
        for name, arguments in (
            ("mailbox_list", {}),
            ("email_mark_read", {"mailbox": "alice", "id": "x"}),
            ("mailbox_create", {"name": "support"}),
            ("mailbox_delete", {"name": "support"}),
            ("hook_create", {"mailbox": "alice", "event": "on_receive", "cmd": ["/bin/true"]}),
        ):
            reply = self.tool(name, arguments)
            self.assertNotIn("error", reply)
            self.assertIs(reply["result"]["isError"], True)
            self.assertEqual(reply["result"]["content"],
                             [{"type": "text", "text": tools.NOT_RUNNING}])


def mcp_session(runtime_dir: str, body):
    """Run C{body(client)} with the official MCP client on an in-process server over the
    daemon of C{runtime_dir}, in a thread with its own event loop; fires with its result."""

    async def go():
        client = ControlClient(os.path.join(runtime_dir, "aimx.sock"))
        async with Client(server.build(client)) as session:
            return await body(session)

    return threads.deferToThread(asyncio.run, go())


class InProcessTestCase(SendTestCase):
    """A real daemon with the mail drop; the MCP server in-process, as this test's uid."""

    def setUp(self):
        super().setUp()
        self.inbox = os.path.join(self.data_dir, "inbox", "alice")

    def session(self, body):
        """Run C{body(client)} (L{mcp_session}); fires with its result."""
        return mcp_session(self.runtime_dir, body)

    async def tool(self, name: str, arguments: dict | None = None) -> tuple[bool, str]:
        """(isError, text) of one call."""
        result = await self.session(lambda c: c.call_tool(name, arguments or {}))
        [content] = result.content
        return bool(result.is_error), content.text

    async def ok(self, name: str, arguments: dict | None = None) -> str:
        failed, text = await self.tool(name, arguments)
        self.assertFalse(failed, text)
        return text

    async def error(self, name: str, arguments: dict | None = None) -> str:
        failed, text = await self.tool(name, arguments)
        self.assertTrue(failed, text)
        return text

    def store(self, stem: str, **fields) -> str:
        values = {"id": stem, "message_id": f"{stem}@example.com", "from": "sender@example.com",
                  "to": f"alice@{DOMAIN}", "subject": "Hi", "date": "2025-06-01T12:00:00Z",
                  "read": False}
        values.update(fields)
        os.makedirs(self.inbox, exist_ok=True)
        path = os.path.join(self.inbox, stem + ".md")
        with open(path, "wb") as f:
            f.write(frontmatter.render(values, f"Body of {stem}"))
        return path


class ReadingTests(InProcessTestCase):
    async def test_mailbox_list(self):
        """Case 4: alice and catchall, with their paths, registered."""
        rows = {r["name"]: r for r in json.loads(await self.ok("mailbox_list"))}
        self.assertLessEqual({"alice", "catchall"}, set(rows))
        alice = rows["alice"]
        self.assertTrue(alice["inbox_path"].endswith("/inbox/alice"))
        self.assertTrue(alice["sent_path"].endswith("/sent/alice"))
        self.assertIs(alice["registered"], True)
        self.assertEqual(alice["address"], f"alice@{DOMAIN}")

    async def test_list(self):
        """Cases 5, 7: two emails newest first; an empty mailbox is `[]`; limit 200 is the
        most, and 500 a parameter error (issue 15 overrides "500 behaves as 200")."""
        self.assertEqual(await self.ok("email_list", {"mailbox": "bob"}), "[]")
        self.store("2025-06-01-001")
        self.store("2025-06-01-002", read=True)
        rows = json.loads(await self.ok("email_list", {"mailbox": "alice"}))
        self.assertEqual(len(rows), 2)
        self.assertEqual(rows[0]["id"], "2025-06-01-002")
        self.assertEqual((rows[1]["read"], rows[1]["from"]), (False, "sender@example.com"))
        for n in range(3, 206):
            self.store(f"2025-06-01-{n:03}")
        rows = json.loads(await self.ok("email_list", {"mailbox": "alice", "limit": 200}))
        self.assertEqual(len(rows), 200)
        self.assertEqual(await self.error("email_list", {"mailbox": "alice", "limit": 500}),
                         "Invalid limit 500: expected an integer from 0 to 200.")

    async def test_paging(self):
        """Case 6: five emails, limit 2 offset 1 → the 4th and 3rd of June."""
        for day in range(1, 6):
            self.store(f"2025-06-0{day}-001")
        rows = json.loads(await self.ok("email_list", {"mailbox": "alice", "limit": 2,
                                                       "offset": 1}))
        self.assertEqual([r["id"] for r in rows], ["2025-06-04-001", "2025-06-03-001"])

    async def test_read(self):
        """Case 8: the body; an unknown id is not found; `../x` has invalid characters."""
        self.store("2025-06-01-001")
        text = await self.ok("email_read", {"mailbox": "alice", "id": "2025-06-01-001"})
        self.assertIn("Body of 2025-06-01-001", text)
        self.assertIn("not found", await self.error("email_read", {"mailbox": "alice",
                                                                  "id": "nonexistent"}))
        self.assertEqual(await self.error("email_read", {"mailbox": "alice", "id": "../x"}),
                         "Email ID contains invalid characters.")

    async def test_read_extracted(self):
        """extracted: only the new text, as `aimx mail read --extracted` prints it: a reply
        without its quoted history and signature, another message whole, no frontmatter;
        the schema says so, and a value that is not a boolean is a plain refusal."""
        path = self.store("2025-06-02-001", in_reply_to="2025-06-01-001@example.com")
        with open(path, "wb") as f:
            f.write(frontmatter.render(
                {"id": "2025-06-02-001", "in_reply_to": "2025-06-01-001@example.com",
                 "read": False},
                "Yes, noon works.\n\n-- \nBob\n\nOn Mon, 1 Jun 2025, Alice "
                "<alice@example.com> wrote:\n> Shall we meet?\n"))
        self.store("2025-06-03-001")
        ref = {"mailbox": "alice", "id": "2025-06-02-001"}
        self.assertEqual(await self.ok("email_read", dict(ref, extracted=True)),
                         "Yes, noon works.")
        whole = await self.ok("email_read", dict(ref, extracted=False))
        self.assertIn("> Shall we meet?", whole)
        self.assertEqual(whole, await self.ok("email_read", ref))
        self.assertEqual(await self.ok("email_read", {"mailbox": "alice", "id": "2025-06-03-001",
                                                      "extracted": True}),
                         "Body of 2025-06-03-001")
        self.assertEqual(await self.error("email_read", dict(ref, extracted="maybe")),
                         "Invalid extracted 'maybe': expected true or false.")
        listed = await self.session(lambda c: c.list_tools())
        [read] = [t for t in listed.tools if t.name == "email_read"]
        schema = read.input_schema["properties"]["extracted"]
        self.assertEqual((schema["type"], schema["default"]), ("boolean", False))
        self.assertIn("quoted history", schema["description"])
        self.assertIn("With extracted", read.description)
        self.assertNotIn("extracted", read.input_schema.get("required", []))

    async def test_unknown_mailbox(self):
        """Case 9: a mailbox nobody has does not exist."""
        self.assertIn("does not exist", await self.error("email_list",
                                                          {"mailbox": "nonexistent"}))

    async def test_mark(self):
        """Case 10: the daemon rewrites the file: read = true, then read = false."""
        path = self.store("2025-06-01-001")
        text = await self.ok("email_mark_read", {"mailbox": "alice", "id": "2025-06-01-001"})
        self.assertIn("marked as read", text)
        self.assertIs(self.read_mail(path)[0]["read"], True)
        text = await self.ok("email_mark_unread", {"mailbox": "alice", "id": "2025-06-01-001"})
        self.assertIn("marked as unread", text)
        self.assertIs(self.read_mail(path)[0]["read"], False)
        self.assertIn("[NOTFOUND]", await self.error("email_mark_read",
                                                      {"mailbox": "alice", "id": "missing"}))

    async def test_hooks(self):
        """Cases 14, 15: no hooks → `[]`; create, list, delete; unknown → ENOENT."""
        self.assertEqual(await self.ok("hook_list"), "[]")
        text = await self.ok("hook_create", {"mailbox": "alice", "event": "on_receive",
                                             "cmd": ["/bin/true"], "name": "h1"})
        self.assertEqual(text, "Hook created on mailbox 'alice'.")
        [hook] = json.loads(await self.ok("hook_list", {"mailbox": "alice"}))
        self.assertEqual(hook, {"name": "h1", "mailbox": "alice", "event": "on_receive",
                                "cmd": ["/bin/true"], "fire_on_untrusted": False,
                                "fire_on_review": False, "timeout_secs": 60})
        self.assertEqual(await self.ok("hook_delete", {"name": "h1"}), "Hook 'h1' deleted.")
        text = await self.error("hook_delete", {"name": "no_such_hook"})
        self.assertEqual(text, "[ENOENT] hook 'no_such_hook' not found")
        self.assertEqual(await self.error(
            "hook_create", {"mailbox": "alice", "event": "on_send", "cmd": ["/bin/true"]}),
            'Invalid event \'on_send\': expected "on_receive" or "after_send".')
        self.assertIn("[VALIDATION]", await self.error(
            "hook_create", {"mailbox": "alice", "event": "on_receive", "cmd": ["bin/true"]}))


class SendingTests(InProcessTestCase):
    async def test_unknown_sender_and_exclusive(self):
        """Case 11: an unknown from_mailbox; text_only + html_body exactly; nothing dropped."""
        base = {"from_mailbox": "alice", "to": "r@example.com", "subject": "s", "body": "b"}
        self.assertIn("does not exist", await self.error(
            "email_send", dict(base, from_mailbox="nonexistent")))
        for name, arguments in (("email_send", base),
                                ("email_reply", {"mailbox": "alice", "id": "x", "body": "b"})):
            text = await self.error(name, dict(arguments, text_only=True, html_body="<p>x</p>"))
            self.assertEqual(text, tools.EXCLUSIVE)
        self.assertEqual(self.dropped(), [])

    async def test_modes(self):
        """Case 12: text_only → one text/plain part; html_body → that exact text/html part."""
        base = {"from_mailbox": "alice", "to": "r@example.com", "subject": "s",
                "body": "**plain** text"}
        text = await self.ok("email_send", dict(base, text_only=True))
        self.assertTrue(text.startswith("Email sent to r@example.com. Message-ID: <"), text)
        eml, _ = self.only_dropped()
        message = email.message_from_bytes(eml, policy=email.policy.default)
        self.assertEqual(message.get_content_type(), "text/plain")
        self.assertTrue(message.get_content().startswith("**plain** text\r\n"))
        html = "<p>Hello <b>there</b></p>"
        await self.ok("email_send", dict(base, html_body=html))
        eml, _ = self.dropped()[1]
        message = email.message_from_bytes(eml, policy=email.policy.default)
        [part] = [p for p in message.walk() if p.get_content_type() == "text/html"]
        self.assertEqual(part.get_content().strip(), html)

    async def test_reply(self):
        """Case 13: unknown id not found; Re:, In-Reply-To, References, bare To."""
        self.assertIn("not found", await self.error(
            "email_reply", {"mailbox": "alice", "id": "nope", "body": "b"}))
        self.store("2025-06-01-001", subject="Hello", message_id="m1@x", references="r0@x",
                   **{"from": "Sender <sender@example.com>"})
        text = await self.ok("email_reply", {"mailbox": "alice", "id": "2025-06-01-001",
                                             "body": "Thanks"})
        self.assertTrue(text.startswith("Email sent to sender@example.com. Message-ID: <"))
        eml, envelope = self.only_dropped()
        message = email.message_from_bytes(eml, policy=email.policy.default)
        self.assertEqual(
            (message["Subject"], message["In-Reply-To"], message["References"], message["To"]),
            ("Re: Hello", "<m1@x>", "<r0@x> <m1@x>", "sender@example.com"))
        self.assertEqual(envelope["rcpt_to"], ["sender@example.com"])

    async def test_big_body(self):
        """A 10 MiB Markdown body is the daemon's BODY_TOO_LARGE; nothing is sent."""
        text = await self.error("email_send", {"from_mailbox": "alice", "to": "r@example.com",
                                               "subject": "s", "body": "x" * (10 << 20)})
        self.assertTrue(text.startswith("[BODY_TOO_LARGE] "), text[:200])
        self.assertEqual(self.dropped(), [])


def drive(runtime_dir: str, uid, flow):
    """Start `aimx mcp` as C{uid} (C{None}: as us) and run C{flow(call)} in a thread.

    C{call(name, arguments)} returns C{(isError, text)}.
    @return: a Deferred firing with C{(tools as listed, flow's result)}.
    """
    parameters = StdioServerParameters(
        command=mcp_argv(uid)[0], args=mcp_argv(uid)[1:], cwd="/",
        env=dict(os.environ, PYTHONPATH=REPO, AIMX_RUNTIME_DIR=runtime_dir),
    )

    async def go():
        async with (
            stdio_client(parameters) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            listed = (await session.list_tools()).tools

            async def call(name, arguments=None):
                result = await session.call_tool(name, arguments or {})
                return bool(result.is_error), result.content[0].text

            return listed, await flow(call)

    def run_flow():
        try:
            return asyncio.run(go())
        except BaseExceptionGroup as group:  # the task groups wrap a failed assertion
            error = group
            while isinstance(error, BaseExceptionGroup):
                error = error.exceptions[0]
            raise error from None

    return threads.deferToThread(run_flow)


class EndToEndTests(DaemonTestCase):
    """The official stdio client drives `aimx mcp` children (cases 9, 14, 16 and the flow)."""

    agent = NOBODY if IS_ROOT else None  # the uid of the main flow (None: the test's own)

    def setUp(self):
        super().setUp()
        self.sink = SmtpSink(reactor)
        self.addCleanup(self.sink.stop)
        self.dns.add_mx("example.net", 10, "mx.example.net")
        self.dns.add_a("mx.example.net", "127.0.0.2")
        self.environ["AIMX_SMTP_OUT_PORT"] = str(listen_all({"127.0.0.2": self.sink}))
        os.chmod(self.runtime_dir, 0o755)
        self.start_daemon()
        config = os.path.join(self.config_dir, "config.toml")
        os.chmod(config, 0o640)  # production mode: unreadable to the agent (case 16)
        path = self.data_dir  # trial's temp dirs are 0700: let the agents reach their mail
        while path.startswith(os.getcwd() + os.sep):
            os.chmod(path, os.stat(path).st_mode | 0o011)
            path = os.path.dirname(path)

    def drive(self, uid, flow):
        """Start `aimx mcp` as C{uid} and run C{flow(call)} in a thread (L{drive})."""
        return drive(self.runtime_dir, uid, flow)

    def deliver(self, raw: bytes, rcpt: str):
        """Blocking SMTP delivery to the daemon (called from the flow's thread)."""
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as c:
            c.sendmail("sender@example.net", [rcpt], raw)

    async def test_agent_flow(self):
        """Every tool as the agent: create a mailbox, receive, list, read, mark, reply (the MX
        gets it threaded), send, hooks, delete; with config.toml unreadable (case 16)."""
        raw = (b"From: Sender <sender@example.net>\r\nTo: agent@test.local\r\n"
               b"Subject: Hello agent\r\nMessage-ID: <orig@example.net>\r\n"
               b"References: <root@example.net>\r\nDate: Thu, 01 Jan 2026 12:00:00 +0000\r\n"
               b"\r\nPlease answer.\r\n")
        texts = []

        def read_state() -> bool:
            [path] = self.inbox("agent")
            return self.read_mail(path)[0]["read"]

        async def flow(call):
            async def ok(name, arguments=None):
                failed, text = await call(name, arguments)
                texts.append(text)
                self.assertFalse(failed, f"{name}: {text}")
                return text

            out = {"address": await ok("mailbox_create", {"name": "agent"})}
            out["role"] = await call("mailbox_create", {"name": "postmaster"})
            await asyncio.to_thread(self.deliver, raw, "agent@test.local")
            [row] = json.loads(await ok("email_list", {"mailbox": "agent"}))
            ref = {"mailbox": "agent", "id": row["id"]}
            out["row"] = row
            out["read"] = await ok("email_read", ref)
            out["mark"] = await ok("email_mark_read", ref), read_state()
            out["reply"] = await ok("email_reply", dict(ref, body="Here is **the** answer."))
            out["sent"] = json.loads(await ok("email_list", {"mailbox": "agent",
                                                             "folder": "sent"}))
            out["thread"] = json.loads(await ok("email_thread", ref))
            out["search"] = json.loads(await ok("email_search", {"mailbox": "agent",
                                                                 "query": "answer*"}))
            out["search_inbox"] = json.loads(await ok(
                "email_search", {"mailbox": "agent", "query": "answer", "folder": "inbox",
                                 "from": "SENDER@example.NET", "unread": False}))
            out["unmark"] = await ok("email_mark_unread", ref), read_state()
            out["send"] = await ok("email_send", {"from_mailbox": "agent", "subject": "News",
                                                  "to": "friend@example.net", "body": "Hi"})
            out["big"] = await call("email_send", {"from_mailbox": "agent", "to": "x@example.net",
                                                   "subject": "big", "body": "x" * (10 << 20)})
            await ok("hook_create", {"mailbox": "agent", "event": "on_receive",
                                     "cmd": ["/bin/true"], "name": "notify1"})
            out["hooks"] = json.loads(await ok("hook_list", {}))
            out["hook_delete"] = await ok("hook_delete", {"name": "notify1"})
            out["mailboxes"] = json.loads(await ok("mailbox_list"))
            out["delete"] = await ok("mailbox_delete", {"name": "agent", "force": True})
            return out

        listed, out = await self.drive(self.agent, flow)
        self.assertEqual(sorted(t.name for t in listed), sorted(NAMES))
        self.assertEqual(out["address"], f"agent@{DOMAIN}")
        self.assertEqual(out["role"], (True, "[VALIDATION] mailbox name 'postmaster' is a role "
                                             "address (RFC 2142); only root can create it"))
        row = out["row"]
        self.assertEqual((row["from"], row["subject"], row["read"]),
                         ("Sender <sender@example.net>", "Hello agent", False))
        self.assertIn("Please answer.", out["read"])
        self.assertEqual(out["mark"], (f"Email '{row['id']}' marked as read.", True))
        self.assertEqual(out["unmark"], (f"Email '{row['id']}' marked as unread.", False))
        self.assertTrue(out["reply"].startswith("Email sent to sender@example.net. Message-ID: "))
        reply, news = self.sink.transactions
        self.assertEqual((reply.mail_from, reply.rcpts),
                         (f"agent@{DOMAIN}", ["sender@example.net"]))
        message = email.message_from_bytes(reply.data, policy=email.policy.default)
        self.assertEqual(
            (message["Subject"], message["In-Reply-To"], message["References"], message["To"]),
            ("Re: Hello agent", "<orig@example.net>", "<root@example.net> <orig@example.net>",
             "sender@example.net"))
        self.assertEqual([r["delivery_status"] for r in out["sent"]], ["delivered"])
        # The conversation, oldest first: the mail received, then the reply sent.
        self.assertEqual([(r["id"], r["folder"]) for r in out["thread"]],
                         [(row["id"], "inbox"), (out["sent"][0]["id"], "sent")])
        self.assertEqual([r["text"] for r in out["thread"]],
                         ["Please answer.", "Here is **the** answer."])
        self.assertEqual(list(out["thread"][0]), ["id", "folder", "from", "to", "date",
                                                  "subject", "trusted", "read", "text"])
        self.assertEqual([(r["folder"], r["id"]) for r in out["search"]],
                         [("sent", out["sent"][0]["id"]), ("inbox", row["id"])])
        self.assertIn("answer", out["search"][0]["snippet"])
        self.assertEqual([r["id"] for r in out["search_inbox"]], [row["id"]])
        self.assertTrue(out["send"].startswith("Email sent to friend@example.net. "))
        self.assertEqual(news.rcpts, ["friend@example.net"])
        self.assertIs(out["big"][0], True)
        self.assertTrue(out["big"][1].startswith("[BODY_TOO_LARGE] "))
        self.assertEqual([h["name"] for h in out["hooks"]], ["notify1"])
        self.assertEqual(out["hook_delete"], "Hook 'notify1' deleted.")
        self.assertEqual(out["delete"], "Mailbox 'agent' deleted.")
        self.assertNotIn("agent", load_toml(os.path.join(self.config_dir, "config.toml"))
                         ["mailboxes"])
        if self.agent is not None:
            # Case 16: config.toml is 0640 root; the agent sees its own mailbox only.
            self.assertEqual([m["name"] for m in out["mailboxes"]], ["agent"])
        for text in texts:
            self.assertNotIn("Permission denied", text)
            self.assertNotIn("EACCES", text)

    async def test_polish(self):
        """Issue 15 point 7 through the official client: row fields, absolute attachment
        paths, enums and bounds in the schemas, plain parameter errors, annotations, and a
        full address where a mailbox name is expected."""
        raw = (b"From: Sender <sender@example.net>\r\nTo: agent@test.local\r\n"
               b"Subject: Report\r\nMessage-ID: <rep@example.net>\r\n"
               b"Date: Thu, 01 Jan 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\n"
               b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
               b"--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
               b"--b\r\nContent-Type: text/plain\r\n"
               b'Content-Disposition: attachment; filename="notes.txt"\r\n\r\n'
               b"attached text\r\n--b--\r\n")
        address = f"agent@{DOMAIN}"

        async def flow(call):
            out = {"address": await call("mailbox_create", {"name": "agent"})}
            await asyncio.to_thread(self.deliver, raw, "agent@test.local")
            out["rows"] = await call("email_list", {"mailbox": address.upper()})
            [row] = json.loads(out["rows"][1])
            out["read"] = await call("email_read", {"mailbox": address, "id": row["id"]})
            [attachment] = frontmatter.parse(out["read"][1].encode("utf-8"))[0]["attachments"]
            with open(attachment["path"], "rb") as f:  # before the mailbox is deleted
                out["attached"] = f.read()
            out["search"] = await call("email_search", {"mailbox": address, "query": "attached"})
            out["thread"] = await call("email_thread", {"mailbox": address, "id": row["id"]})
            out["extracted"] = await call("email_read", {"mailbox": address, "id": row["id"],
                                                         "extracted": True})
            out["mark"] = await call("email_mark_read", {"mailbox": address, "id": row["id"]})
            out["hook"] = await call("hook_create", {"mailbox": address, "event": "on_receive",
                                                     "cmd": ["/bin/true"], "name": "h1"})
            out["hooks"] = await call("hook_list", {"mailbox": address})
            out["errors"] = [
                await call("email_list", {"mailbox": "agent", "limit": 500}),
                await call("email_list", {"mailbox": "agent", "folder": "drafts"}),
                await call("hook_create", {"mailbox": "agent", "event": "on_send",
                                           "cmd": ["/bin/true"]}),
                await call("hook_create", {"mailbox": "agent", "event": "on_receive",
                                           "cmd": ["/bin/true"], "timeout_secs": 0}),
                await call("email_list", {"mailbox": "nobody-here@test.local"}),
            ]
            await call("hook_delete", {"name": "h1"})
            out["delete"] = await call("mailbox_delete", {"name": address, "force": True})
            return out

        listed, out = await self.drive(self.agent, flow)
        self.assertEqual(out["address"], (False, address))
        failed, rows = out["rows"]
        self.assertFalse(failed, rows)
        [row] = json.loads(rows)
        self.assertEqual(list(row), ["id", "from", "to", "subject", "date", "read", "trusted",
                                     "thread_id", "has_attachments"])
        self.assertEqual((row["trusted"], row["has_attachments"]), ("none", True))
        self.assertTrue(row["thread_id"])
        failed, text = out["read"]
        self.assertFalse(failed, text)
        [attachment] = frontmatter.parse(text.encode("utf-8"))[0]["attachments"]
        self.assertTrue(os.path.isabs(attachment["path"]), attachment)
        self.assertEqual(attachment["path"], os.path.join(
            self.data_dir, "inbox", "agent", row["id"], attachment["filename"]))
        self.assertEqual(out["attached"].rstrip(b"\r\n"), b"attached text")
        failed, text = out["search"]
        self.assertFalse(failed, text)
        [found] = json.loads(text)
        self.assertEqual(list(found), ["id", "folder", "from", "to", "subject", "date", "read",
                                       "trusted", "thread_id", "has_attachments", "snippet"])
        self.assertEqual({k: found[k] for k in row}, row)
        failed, text = out["thread"]
        self.assertFalse(failed, text)
        self.assertEqual([(r["id"], r["text"]) for r in json.loads(text)],
                         [(row["id"], "See attached.")])
        self.assertEqual(out["extracted"], (False, "See attached."))
        self.assertEqual(out["mark"], (False, f"Email '{row['id']}' marked as read."))
        self.assertEqual(out["hook"], (False, "Hook created on mailbox 'agent'."))
        self.assertEqual([h["mailbox"] for h in json.loads(out["hooks"][1])], ["agent"])
        self.assertEqual(out["errors"], [
            (True, "Invalid limit 500: expected an integer from 0 to 200."),
            (True, 'Invalid folder \'drafts\': expected "inbox" or "sent".'),
            (True, 'Invalid event \'on_send\': expected "on_receive" or "after_send".'),
            (True, "Invalid timeout_secs 0: expected an integer from 1 to 600."),
            (True, "Mailbox 'nobody-here@test.local' does not exist. None of your mailboxes has "
                   "that address; give a mailbox name as listed by mailbox_list (the part "
                   "before the '@')."),
        ])
        self.assertEqual(out["delete"], (False, "Mailbox 'agent' deleted."))
        tools_ = {t.name: t for t in listed}
        email_list = tools_["email_list"].input_schema["properties"]
        self.assertEqual(email_list["folder"]["enum"], ["inbox", "sent"])
        self.assertEqual((email_list["limit"]["minimum"], email_list["limit"]["maximum"]),
                         (0, 200))
        hook = tools_["hook_create"].input_schema["properties"]
        self.assertEqual(hook["event"]["enum"], ["on_receive", "after_send"])
        [timeout] = [s for s in hook["timeout_secs"]["anyOf"] if s["type"] == "integer"]
        self.assertEqual((timeout["minimum"], timeout["maximum"]), (1, 600))
        self.assertEqual(
            {name for name, t in tools_.items() if t.annotations.read_only_hint},
            {"mailbox_list", "email_list", "email_read", "hook_list", "email_search",
             "email_thread", "held_list"})
        self.assertEqual(
            {name for name, t in tools_.items() if t.annotations.destructive_hint},
            {"mailbox_delete", "hook_delete"})

    async def test_other_uid_isolated(self):
        """Cases 9, 14: a second uid can neither see nor touch the agent's mailbox or hook."""
        if not IS_ROOT:
            raise self.skipTest("needs root to act as two other uids")

        async def setup(call):
            results = [await call("mailbox_create", {"name": "agent"})]
            await asyncio.to_thread(self.deliver, b"Subject: s\r\n\r\nhi\r\n", "agent@test.local")
            results.append(await call("hook_create", {"mailbox": "agent", "event": "on_receive",
                                                      "cmd": ["/bin/true"], "name": "notify1"}))
            [row] = json.loads((await call("email_list", {"mailbox": "agent"}))[1])
            return results, row["id"]

        _, (results, email_id) = await self.drive(NOBODY, setup)
        self.assertEqual([failed for failed, _ in results], [False, False])
        attempts = [
            ("email_list", {"mailbox": "agent"}),
            ("email_read", {"mailbox": "agent", "id": email_id}),
            ("email_mark_read", {"mailbox": "agent", "id": email_id}),
            ("email_reply", {"mailbox": "agent", "id": email_id, "body": "x"}),
            ("email_send", {"from_mailbox": "agent", "to": "x@example.net", "subject": "s",
                            "body": "b"}),
            ("hook_create", {"mailbox": "agent", "event": "on_receive", "cmd": ["/bin/true"]}),
            ("hook_list", {"mailbox": "agent"}),
            ("email_list", {"mailbox": "alice"}),
            ("email_search", {"mailbox": "agent", "query": "hi"}),
            ("email_thread", {"mailbox": "agent", "id": email_id}),
        ]

        async def intrude(call):
            listing = [await call("mailbox_list"), await call("hook_list")]
            refused = [await call(name, arguments) for name, arguments in attempts]
            deleted = [await call("hook_delete", {"name": "notify1"}),
                       await call("mailbox_delete", {"name": "agent", "force": True})]
            return listing, refused, deleted

        _, (listing, refused, deleted) = await self.drive(DAEMON_UID, intrude)
        self.assertEqual(listing, [(False, "[]"), (False, "[]")])
        for (name, arguments), result in zip(attempts, refused):
            mailbox = arguments.get("mailbox") or arguments.get("from_mailbox")
            self.assertEqual(result, (True, f"Mailbox '{mailbox}' does not exist."), name)
        self.assertEqual(deleted, [(True, "[ENOENT] hook 'notify1' not found"),
                                   (True, "[MAILBOX] mailbox 'agent' does not exist")])
        # Nothing changed: the mail is unread, the hook and the mailbox are still there.
        [path] = self.inbox("agent")
        self.assertIs(self.read_mail(path)[0]["read"], False)
        mailbox = load_toml(os.path.join(self.config_dir, "config.toml"))["mailboxes"]["agent"]
        self.assertEqual([h["name"] for h in mailbox["hooks"]], ["notify1"])
        self.assertEqual(self.sink.transactions, [])


class LayeringTests(SynchronousTestCase):
    def test_no_reactor(self):
        """The MCP process imports no Twisted at all (its control client is asyncio's, on
        the wire commands), nor aimx.smtp, aimx.service or a CLI verb."""
        code = (
            "import sys, aimx.cli, aimx.cli.mcp, aimx.mcp.server, aimx.control.aioclient\n"
            "aimx.mcp.server.build(None)\n"
            "bad = {'aimx.smtp', 'aimx.service', 'aimx.cli.send', 'aimx.control.commands'}\n"
            "print(sorted(m for m in sys.modules if m in bad or m.startswith('twisted')))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=REPO), check=True, timeout=60)
        self.assertEqual(out.stdout, "[]\n")

    def test_lean_start(self):
        """Up to a first listing the MCP process imports no MIME parser, HTML converter
        or composer: those are for sending and replying (cold start, bench/mcp_coldstart.py).
        The listing is the daemon's (MAIL-LIST)."""
        code = (
            "import sys, asyncio, aimx.cli, aimx.cli.mcp, aimx.mcp.server\n"
            "from aimx.mcp import tools\n"
            "aimx.mcp.server.build(None)\n"
            "class Daemon:\n"
            "    async def call(self, command, **arguments):\n"
            "        return {'mailboxes': [{'name': 'a', 'inbox_path': sys.argv[1]}],\n"
            "                'emails': [{'id': '2025-06-01-001'}]}\n"
            "print(asyncio.run(tools.Tools(Daemon()).email_list('a'))[:9])\n"
            "heavy = {'aimx.core.message', 'aimx.core.htmltext', 'aimx.core.compose',\n"
            "         'aimx.core.identity', 'aimx.core.config', 'selectolax', 'markdown_it'}\n"
            "print(sorted(heavy & set(sys.modules)))\n"
        )
        inbox = self.mktemp()
        os.makedirs(inbox)
        with open(os.path.join(inbox, "2025-06-01-001.md"), "wb") as f:
            f.write(frontmatter.render({"id": "2025-06-01-001", "read": False}, "Body"))
        out = subprocess.run([sys.executable, "-c", code, inbox], capture_output=True,
                             text=True, env=dict(os.environ, PYTHONPATH=REPO), check=True,
                             timeout=60)
        self.assertEqual(out.stdout, '[{"id":"2\n[]\n')
