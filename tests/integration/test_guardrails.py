"""Issue 18's outbound guards on a real daemon (docs/guardrails.md): the policy refusals
and attachments passed as descriptors, over the control socket, through `aimx send`
and through the official MCP client, the last two as a second uid (C{nobody}) when
the tests run as root.

The daemon runs in-process with the test mail drop, so "nothing left" is checked
on the drop directory and the sent folder.
"""

import asyncio
import email
import email.policy
import json
import os
import shutil
import subprocess
import sys
import tempfile

from twisted.internet import defer, threads
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher

from aimx.control import aioclient, wire
from aimx.core import frontmatter
from aimx.errors import MalformedError, PolicyError
from aimx.logs import event_line
from aimx.testing import fakes
from tests.integration.base import DOMAIN, stop_daemon
from tests.integration.test_control import IS_ROOT, NOBODY, REPO
from tests.integration.test_mcp import drive
from tests.integration.test_send import SendTestCase, submission

SUPPORT = f"support@{DOMAIN}"


def agent_home(case, owner_uid: int | None = None) -> str:
    """A home directory outside trial's 0700 temp tree (a second uid must reach it)."""
    home = tempfile.mkdtemp(prefix="aimx-home-")
    case.addCleanup(shutil.rmtree, home, True)
    os.chmod(home, 0o755)
    if owner_uid is not None:
        os.chown(home, owner_uid, owner_uid)
    return home


def put(home: str, name: str, data: bytes = b"quarterly numbers", uid: int | None = None) -> str:
    path = os.path.join(home, name)
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory)
        if uid is not None:
            os.chown(directory, uid, uid)
    with open(path, "wb") as f:
        f.write(data)
    if uid is not None:
        os.chown(path, uid, uid)
    return path


class GuardTestCase(SendTestCase):
    """alice without a policy; support with one, its attachments under C{self.home}."""

    policy: dict = {}

    def setUp(self):
        self.home = agent_home(self)
        self.config_mailboxes = self.mailboxes()
        super().setUp()

    def mailboxes(self) -> dict:
        roots = {"attachment_roots": [self.home]}
        return {"alice": {"outbound": roots}, "support": {"outbound": {**roots, **self.policy}}}

    async def attach(self, sender: str, paths, **kw) -> dict:
        """SEND with C{paths} opened here and passed as descriptors."""
        fds = [os.open(p, os.O_RDONLY | os.O_NONBLOCK) for p in paths]
        try:
            return await self.send(submission(sender=sender, **kw),
                                   attachments=list(zip(fds, paths)))
        finally:
            for fd in fds:
                os.close(fd)

    def assertNothingLeft(self, mailbox="support"):
        self.assertEqual(self.dropped(), [])
        self.assertEqual(self.sent(mailbox), [])


class RefusalTests(GuardTestCase):
    policy = {"allow": ["*@customer.example", "alice@partner.example"],
              "deny": ["bob@customer.example"], "max_recipients": 2}

    def setUp(self):
        super().setUp()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    async def test_recipient_rules(self):
        """deny (over allow), allow and max_recipients refuse with the rule named; nothing
        leaves, no sent copy."""
        for to, reason in (
            ("bob@customer.example",
             "bob@customer.example is not allowed for mailbox support (outbound.deny)"),
            ("alice@partner.example, eve@partner.example",
             "eve@partner.example is not allowed for mailbox support (outbound.allow)"),
            ("a@customer.example, b@customer.example, c@customer.example",
             "3 recipients; mailbox support may send to at most 2 per message "
             "(outbound.max_recipients)"),
        ):
            self.assertEqual(await self.refused(PolicyError, submission(sender=SUPPORT, to=to)),
                             reason)
        self.assertNothingLeft()
        await self.send(submission(sender=SUPPORT, to="alice@partner.example, x@customer.example"))
        self.assertEqual(len(self.dropped()), 1)
        logged = "\n".join(event_line(e, journal=True) for e in self.events)
        self.assertIn("<5>aimx.send: policy mailbox=", logged)
        self.assertIn(" verdict=refuse rule=outbound.deny reason=", logged)

    async def test_raw_attachments(self):
        """MIME attachment parts are refused under a policy; alice's own policy says the
        same; the text alone goes."""
        raw = submission(sender=SUPPORT, to="x@customer.example", headers=[
            'Content-Type: multipart/mixed; boundary="b"'], body=(
            "--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\n"
            'Content-Type: text/plain; name="id_rsa"\r\n\r\nsecret\r\n--b--'))
        reason = await self.refused(PolicyError, raw)
        self.assertIn("(outbound.allow_raw_attachments)", reason)
        self.assertNothingLeft()


class RawAllowedTests(GuardTestCase):
    policy = {"allow_raw_attachments": True}

    async def test_raw_attachments_allowed(self):
        """allow_raw_attachments = true lets a raw SEND carry its own parts."""
        raw = submission(sender=SUPPORT, headers=['Content-Type: multipart/mixed; boundary="b"'],
                         body=("--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\n"
                               'Content-Type: text/plain; name="n.txt"\r\n'
                               'Content-Disposition: attachment; filename="n.txt"\r\n\r\n'
                               "note\r\n--b--"))
        await self.send(raw)
        [path] = self.sent("support")
        self.assertEqual(self.read_mail(path)[0]["attachments"][0]["filename"], "n.txt")


class RateTests(GuardTestCase):
    policy = {"max_per_hour": 2}

    async def test_limit_survives_a_restart(self):
        """Two sends an hour: the third is refused, and still after a restart (the window
        starts again from the audit log)."""
        await self.send(submission(sender=SUPPORT))
        await self.send(submission(sender=SUPPORT))
        reason = await self.refused(PolicyError, submission(sender=SUPPORT))
        self.assertRegex(reason, r"^mailbox support has sent 2 messages in the last hour, its "
                                 r"limit; the next may go at \S+Z \(outbound.max_per_hour\)$")
        await stop_daemon(self.daemon)
        self.start_daemon()
        self.assertIn("(outbound.max_per_hour)",
                      await self.refused(PolicyError, submission(sender=SUPPORT)))
        self.assertEqual(len(self.dropped()), 2)
        await self.send(submission())  # alice has no rate

    async def test_deleting_sent_copies_resets_nothing(self):
        """The sent copies deleted (as their owner may) and the daemon restarted, the
        window still holds the sends: it is read from the audit log."""
        await self.send(submission(sender=SUPPORT))
        await self.send(submission(sender=SUPPORT))
        for path in self.sent("support"):
            os.remove(path)
        await stop_daemon(self.daemon)
        self.start_daemon()
        self.assertIn("(outbound.max_per_hour)",
                      await self.refused(PolicyError, submission(sender=SUPPORT)))
        self.assertEqual(len(self.dropped()), 2)


class DescriptorTests(GuardTestCase):
    async def test_allowed_file_is_attached(self):
        """A file under the root is read by the daemon from the descriptor and attached;
        the sent copy keeps it in its bundle."""
        path = put(self.home, "reports/q1.txt")
        await self.attach(SUPPORT, [path])
        [path_md] = self.sent("support")
        fields, _ = self.read_mail(path_md)
        self.assertEqual(fields["attachments"][0]["filename"], "q1.txt")
        with open(os.path.join(os.path.dirname(path_md), "q1.txt"), "rb") as f:
            self.assertEqual(f.read(), b"quarterly numbers")

    async def test_asyncio_client(self):
        """The MCP process's client passes descriptors as Twisted's AMP does: two files,
        in order, then a refusal on the same kind of connection."""
        first, second = put(self.home, "a.txt", b"one"), put(self.home, "b.txt", b"two")
        key = put(self.home, ".ssh/id_rsa", b"key")
        path = os.path.join(self.runtime_dir, "aimx.sock")

        async def aio(paths):
            fds = [os.open(p, os.O_RDONLY) for p in paths]
            try:
                return await aioclient.ControlClient(path).call(
                    wire.Send, message=submission(sender=SUPPORT),
                    attachments=list(zip(fds, paths)))
            except PolicyError as e:
                return str(e)
            finally:
                for fd in fds:
                    os.close(fd)

        await threads.deferToThread(asyncio.run, aio([first, second]))
        refused = await threads.deferToThread(asyncio.run, aio([first, key]))
        self.assertIn(f"attachment {key} is a dot-file", refused)
        [(eml, _)] = self.dropped()
        parts = email.message_from_bytes(eml, policy=email.policy.default)
        self.assertEqual([(p.get_filename(), p.get_content()) for p in parts.iter_attachments()],
                         [("a.txt", "one"), ("b.txt", "two")])

    async def test_refused_files(self):
        """~/.ssh/id_rsa, a link out of the root, a FIFO, /dev/zero and a directory are
        refused naming the path; nothing leaves, whatever the mailbox's other rules."""
        key = put(self.home, ".ssh/id_rsa", b"-----BEGIN OPENSSH PRIVATE KEY-----")
        outside = put(agent_home(self), "secret.txt")
        link = os.path.join(self.home, "report.txt")
        os.symlink(outside, link)
        fifo = os.path.join(self.home, "pipe")
        os.mkfifo(fifo)
        cases = [
            (key, f"attachment {key} is a dot-file or in a dot-directory (.ssh), which mailbox "
                  "{box} never attaches (outbound.attachment_roots)"),
            (link, f"attachment {link} (really {outside}) is outside the attachment roots of "
                   f"mailbox {{box}} ({self.home}) (outbound.attachment_roots)"),
            (fifo, f"attachment {fifo} is not a regular file (outbound.attachment_roots)"),
            ("/dev/zero", "attachment /dev/zero is not a regular file "
                          "(outbound.attachment_roots)"),
            (self.home, f"attachment {self.home} is not a regular file "
                        "(outbound.attachment_roots)"),
        ]
        for box in ("support", "alice"):
            for path, reason in cases:
                d = defer.Deferred.fromCoroutine(
                    self.attach(f"{box}@{DOMAIN}", [put(self.home, "ok.txt"), path]))
                failure = await self.assertFailure(d, PolicyError)
                self.assertEqual(str(failure), reason.format(box=box))
            self.assertNothingLeft(box)

    async def test_size_cap(self):
        """Attachments count against SEND's 25 MiB once encoded."""
        big = os.path.join(self.home, "big.bin")
        with open(big, "wb") as f:
            f.truncate(20 * 1024 * 1024)
        failure = await self.assertFailure(
            defer.Deferred.fromCoroutine(self.attach(SUPPORT, [big])), MalformedError)
        self.assertIn(f"attachment {big} makes the message larger than", str(failure))
        self.assertNothingLeft()


class RootPathTests(GuardTestCase):
    """support's root is C{~/outbox}, a path the agent owns."""

    def setUp(self):
        super().setUp()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def mailboxes(self) -> dict:
        return {"support": {"outbound": {
            "attachment_roots": [os.path.join(self.home, "outbox")]}}}

    async def refusal(self, sender: str, path: str) -> str:
        d = defer.Deferred.fromCoroutine(self.attach(sender, [path]))
        return str(await self.assertFailure(d, PolicyError))

    async def test_root_swapped_for_a_link(self):
        """A file in the root attaches; once the agent swaps the root for a link to
        ~/.ssh, a key reached through it is refused naming the root, and logged."""
        await self.attach(SUPPORT, [put(self.home, "outbox/report.txt")])
        self.assertEqual(len(self.dropped()), 1)
        outbox = os.path.join(self.home, "outbox")
        shutil.rmtree(outbox)
        key = put(self.home, ".ssh/id_rsa", b"key")
        os.symlink(os.path.dirname(key), outbox)
        reason = await self.refusal(SUPPORT, os.path.join(outbox, "id_rsa"))
        self.assertIn(f"is refused: attachment root {outbox} is not a real path (it leads "
                      f"to {os.path.dirname(key)}: a symbolic link is on the way)", reason)
        self.assertEqual(len(self.dropped()), 1)
        logged = "\n".join(event_line(e, journal=True) for e in self.events)
        self.assertIn("aimx.send: attachment root refused mailbox=support", logged)


class AgentTestCase(SendTestCase):
    """A daemon whose mailboxes are nobody's, the agent's uid: its socket open to nobody,
    and C{aimx} run as nobody or as root."""

    skip = None if IS_ROOT else "needs root to act as a second uid"

    def setUp(self):
        super().setUp()
        os.chmod(self.runtime_dir, 0o755)

    def open_to_hooks(self):
        """trial's temp dirs are 0700; a hook of nobody's starts in a mailbox below them."""
        path = self.data_dir
        while path.startswith(os.getcwd() + os.sep):
            os.chmod(path, os.stat(path).st_mode | 0o011)
            path = os.path.dirname(path)

    def aimx(self, uid, *argv: str):
        """`aimx` as C{uid} (C{None}: as root) in a child process."""
        env = dict(os.environ, PYTHONPATH=REPO, AIMX_CONFIG_DIR=self.config_dir,
                   AIMX_RUNTIME_DIR=self.runtime_dir)
        prefix = ([sys.executable, "-m", "aimx"] if uid is None else
                  [sys.executable, "-m", "tests.integration.asuser", str(uid), str(uid), "cli"])
        return threads.deferToThread(subprocess.run, [*prefix, *argv], env=env, cwd=REPO,
                                     capture_output=True, text=True, timeout=60)


class SecondUidTestCase(AgentTestCase):
    """support is nobody's, with a deny rule; its agent's home is a directory of nobody's."""

    def setUp(self):
        self.home = agent_home(self, NOBODY)
        self.config_mailboxes = {"support": {"owner": "nobody", "outbound": {
            "deny": ["bob@x.example"], "attachment_roots": [self.home]}}}
        super().setUp()

    def as_nobody(self, *argv: str):
        return self.aimx(NOBODY, *argv)


class CliTests(SecondUidTestCase):
    async def test_refusals(self):
        """`aimx send` as the owner: the rule's refusal on stderr, exit 1; the key file
        refused by attachment_roots; a good file attached."""
        send = ["send", "--from", SUPPORT, "--subject", "s", "--body", "b"]
        result = await self.as_nobody(*send, "--to", "bob@x.example")
        self.assertEqual((result.returncode, result.stdout, result.stderr), (1, "", (
            "Error [POLICY]: bob@x.example is not allowed for mailbox support "
            "(outbound.deny)\n")))
        key = put(self.home, ".ssh/id_rsa", b"key", uid=NOBODY)
        result = await self.as_nobody(*send, "--to", "eve@y.example", "--attachment", key)
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"Error [POLICY]: attachment {key} is a dot-file", result.stderr)
        self.assertEqual(self.dropped(), [])
        good = put(self.home, "notes.txt", uid=NOBODY)
        result = await self.as_nobody(*send, "--to", "eve@y.example", "--attachment", good)
        self.assertEqual(result.returncode, 0, result.stderr)
        [(eml, _)] = self.dropped()
        self.assertIn(b'filename="notes.txt"', eml)


class McpTests(SecondUidTestCase):
    async def test_refusals(self):
        """email_send through the official client as the owner: `[POLICY] <reason>` for the
        recipient and for ~/.ssh/id_rsa; a file of the home goes."""
        key = put(self.home, ".ssh/id_rsa", b"key", uid=NOBODY)
        good = put(self.home, "notes.txt", uid=NOBODY)
        base = {"from_mailbox": "support", "subject": "s", "body": "b"}

        async def flow(call):
            return [
                await call("email_send", dict(base, to="bob@x.example")),
                await call("email_send", dict(base, to="eve@y.example", attachments=[key])),
                await call("email_send", dict(base, to="eve@y.example", attachments=[good])),
            ]

        _, (deny, dotdir, sent) = await drive(self.runtime_dir, NOBODY, flow)
        self.assertEqual(deny, (True, "[POLICY] bob@x.example is not allowed for mailbox "
                                      "support (outbound.deny)"))
        self.assertEqual(dotdir[0], True)
        self.assertTrue(dotdir[1].startswith(f"[POLICY] attachment {key} is a dot-file"), dotdir)
        self.assertFalse(sent[0], sent)
        [(eml, meta)] = self.dropped()
        self.assertEqual(meta["rcpt_to"], ["eve@y.example"])
        self.assertIn(b'filename="notes.txt"', eml)



class ApprovalTestCase(AgentTestCase):
    """support is nobody's, approval = "new-recipients"; root and the CLI decide."""

    def setUp(self):
        self.home = agent_home(self, NOBODY)
        self.flag = os.path.join(self.home, "after_send.flag")
        self.config_mailboxes = {"support": {
            "owner": "nobody", "trust": "verified", "trusted_senders": ["*@trusted.example"],
            "outbound": {"approval": "new-recipients", "attachment_roots": [self.home]},
            "hooks": [{"event": "after_send", "cmd": ["/usr/bin/touch", self.flag]}]}}
        super().setUp()
        self.open_to_hooks()  # the after_send hook starts in sent/support

    def send_as_agent(self, to: str, *extra: str):
        return self.aimx(NOBODY, "send", "--from", SUPPORT, "--to", to, "--subject", "Offer",
                         "--body", "Hello **there**", *extra)


class ApprovalTests(ApprovalTestCase):
    async def test_hold_approve_reject(self):
        """The agent's mail to new recipients waits (CLI and MCP); the agent may list but
        not approve; root approves through the CLI (delivered, sent copy, after_send
        hook) and rejects with a reason; a recipient mailed once is known from then on."""
        notes = put(self.home, "notes.txt", uid=NOBODY)
        result = await self.send_as_agent("new@customer.example", "--attachment", notes)
        self.assertEqual(result.returncode, 0, result.stderr)
        [line] = result.stdout.splitlines()
        self.assertRegex(line, r"^held for approval: \d{8}-\d{6}-[0-9a-f]{8}$")
        first = line.split(": ")[1]

        async def flow(call):
            sent = await call("email_send", {"from_mailbox": "support", "to": "x@other.example",
                                             "subject": "s", "body": "b"})
            return sent, await call("held_list", {"mailbox": "support"})

        _, (sent, listed) = await drive(self.runtime_dir, NOBODY, flow)
        self.assertFalse(sent[0], sent)
        self.assertRegex(sent[1], r"^held for approval: \d{8}-\d{6}-[0-9a-f]{8}$")
        second = sent[1].split(": ")[1]
        rows = json.loads(listed[1])
        # In hold-id order: the time to the second, then a random part.
        self.assertEqual([(r["hold_id"], r["to"], r["attachments"]) for r in rows],
                         sorted([(first, "new@customer.example", 1),
                                 (second, "x@other.example", 0)]))
        self.assertEqual(self.dropped(), [])

        refused = await self.aimx(NOBODY, "held", "approve", first)
        self.assertEqual((refused.returncode, refused.stderr), (1, (
            "Error: [EACCES] not authorized: the mailbox's owner never approves or rejects "
            "its own mail\n")))
        listing = await self.aimx(NOBODY, "held", "list")
        header, *lines = listing.stdout.splitlines()
        [row] = [line for line in lines if line.startswith(first)]
        self.assertRegex(row, r"^\S+ +support +\d{4}-\d\d-\d\d \d\d:\d\d +new@")
        self.assertEqual(row.index("new@customer.example"), header.index("TO"))

        approved = await self.aimx(None, "held", "approve", first)
        self.assertEqual(approved.returncode, 0, approved.stderr)
        self.assertIn("Approved and sent: <", approved.stdout)
        [(eml, meta)] = self.dropped()
        self.assertEqual(meta["rcpt_to"], ["new@customer.example"])
        self.assertIn(b'filename="notes.txt"', eml)
        [copy] = self.sent("support")
        self.assertEqual(self.read_mail(copy)[0]["to"], "new@customer.example")
        await self.daemon.hooks.idle()
        self.assertTrue(os.path.exists(self.flag))

        rejected = await self.aimx(None, "held", "reject", second, "--reason", "not ours")
        self.assertEqual(rejected.returncode, 0, rejected.stderr)
        path = os.path.join(self.data_dir, "held", "support", "rejected", second + ".md")
        fields, _ = self.read_mail(path)
        self.assertEqual((fields["state"], fields["decided_by"], fields["decision_reason"]),
                         ("rejected", "root", "not ours"))
        self.assertEqual((await self.aimx(None, "held", "list")).stdout,
                         "No messages held for approval.\n")

        again = await self.send_as_agent("new@customer.example")
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertNotIn("held", again.stdout)
        self.assertEqual(len(self.dropped()), 2)

    async def test_trusted_sender_is_known(self):
        """A sender whose mail was stored trusted may be answered without approval; an
        untrusted one's may not."""
        self.dns.add_txt("trusted.example", "v=spf1 ip4:127.0.0.1 -all")
        self.dns.add_txt("_dmarc.trusted.example", "v=DMARC1; p=reject")
        private = self.publish_dkim("trusted.example")
        raw = self.sign(message_from("boss@trusted.example"), private, "trusted.example")
        await self.smtp(raw, [SUPPORT], mail_from="boss@trusted.example")
        self.dns.add_txt("elsewhere.example", "v=spf1 ip4:127.0.0.1 -all")
        await self.smtp(message_from("eve@elsewhere.example"), [SUPPORT],
                        mail_from="eve@elsewhere.example")
        trusted = {self.read_mail(p)[0]["from"]: self.read_mail(p)[0]["trusted"]
                   for p in self.inbox("support")}
        self.assertEqual(trusted, {"boss@trusted.example": "true",
                                   "eve@elsewhere.example": "false"})
        answer = await self.send_as_agent("boss@trusted.example")
        self.assertEqual((answer.returncode, answer.stdout.startswith("<")), (0, True),
                         answer.stderr)
        held = await self.send_as_agent("eve@elsewhere.example")
        self.assertTrue(held.stdout.startswith("held for approval: "), held.stdout)


class KnownFromAuditTests(ApprovalTestCase):
    """What makes a recipient known rests on the audit log (root's), never on the
    mailbox's files, which the agent (its owner) can write; it survives a restart."""

    def write_as_owner(self, folder: str, name: str, fields: dict) -> None:
        """Write a message file in C{<folder>/support/} as the owner (nobody), as an
        agent with a shell could."""
        directory = os.path.join(self.data_dir, folder, "support")
        if not os.path.isdir(directory):  # as a delivery would have made it
            os.makedirs(directory)
            os.chown(directory, NOBODY, NOBODY)
        path = os.path.join(directory, name)
        code = ("import os, sys; os.setgroups([]); os.setgid(%d); os.setuid(%d); "
                "open(sys.argv[1], 'xb').write(sys.stdin.buffer.read())" % (NOBODY, NOBODY))
        subprocess.run([sys.executable, "-c", code, path], check=True, timeout=60,
                       input=frontmatter.render(fields, "Hello\n"))
        self.assertEqual(os.stat(path).st_uid, NOBODY)

    async def restart(self):
        await stop_daemon(self.daemon)
        self.start_daemon()
        await self.daemon.audit.ready()

    async def test_forged_files_known_nobody(self):
        """A trusted inbox file from the attacker and a sent copy to it, both forged by
        the owner, do not make the attacker known: the SEND is held, before and after
        a restart (the index would have read both)."""
        await self.daemon.audit.ready()
        self.write_as_owner("inbox", "2026-01-01-000000-hi.md", {
            "id": "2026-01-01-000000-hi", "message_id": "<f1@evil.example>",
            "from": "attacker@evil.example", "to": SUPPORT, "subject": "hi",
            "date": "2026-01-01T00:00:00Z", "trusted": "true"})
        self.write_as_owner("sent", "2026-01-01-000001-re.md", {
            "id": "2026-01-01-000001-re", "message_id": "<f2@test.local>",
            "from": SUPPORT, "to": "attacker@evil.example", "subject": "re",
            "date": "2026-01-01T00:00:01Z", "delivery_status": "delivered"})
        held = await self.send_as_agent("attacker@evil.example")
        self.assertTrue(held.stdout.startswith("held for approval: "), held.stdout)
        await self.restart()
        held = await self.send_as_agent("attacker@evil.example")
        self.assertTrue(held.stdout.startswith("held for approval: "), held.stdout)
        self.assertEqual(self.dropped(), [])

    async def test_known_survives_a_restart(self):
        """A trusted sender's mail over SMTP and a delivered (approved) SEND make their
        addresses known at once and after a restart, read back from the audit log."""
        await self.daemon.audit.ready()
        self.dns.add_txt("trusted.example", "v=spf1 ip4:127.0.0.1 -all")
        self.dns.add_txt("_dmarc.trusted.example", "v=DMARC1; p=reject")
        private = self.publish_dkim("trusted.example")
        raw = self.sign(message_from("boss@trusted.example"), private, "trusted.example")
        await self.smtp(raw, [SUPPORT], mail_from="boss@trusted.example")
        first = await self.send_as_agent("new@customer.example")
        hold_id = first.stdout.strip().split(": ")[1]
        approved = await self.aimx(None, "held", "approve", hold_id)
        self.assertEqual(approved.returncode, 0, approved.stderr)
        for _ in range(2):
            for to in ("boss@trusted.example", "New@Customer.example"):
                answer = await self.send_as_agent(to)
                self.assertEqual((answer.returncode, answer.stdout.startswith("<")), (0, True),
                                 (to, answer.stdout, answer.stderr))
            held = await self.send_as_agent("stranger@customer.example")
            self.assertTrue(held.stdout.startswith("held for approval: "), held.stdout)
            await self.restart()


def message_from(sender: str) -> bytes:
    return fakes.message(sender=sender, to=SUPPORT, subject="Question",
                         message_id=f"q.{sender}")
