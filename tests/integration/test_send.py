"""SEND on a real daemon with the test mail drop (docs/concepts.md, "Sending").

The daemon runs in-process with C{AIMX_TEST_MAIL_DROP}; SEND goes over the real
control socket.  Signatures (made by aimx's own signer) are checked by stock dkimpy
in a child process that never imports aimx, against the key the fixture DNS
serves.
"""

import asyncio
import email
import email.policy
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile

from twisted.internet import defer, reactor, threads
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher

from aimx.auth.resolver import Resolver
from aimx.control import aioclient, client, commands, wire
from aimx.errors import (
    BodyTooLarge,
    ConfigError,
    DeliveryError,
    DomainError,
    MailboxError,
    MalformedError,
    TempError,
)
from aimx.logs import event_line
from aimx.store import keys
from aimx.loopback.smtpsink import SmtpSink, listen_all
from aimx.testing.fakes import hook_table, message
from tests.integration.base import DOMAIN, DaemonTestCase, base_config
from tests.integration.base import IS_ROOT, NOBODY, REPO

_VERIFY = """
import sys, dkim
txt = sys.argv[1].encode()
message = sys.stdin.buffer.read()
d = dkim.DKIM(message)
ok = d.verify(dnsfunc=lambda name, timeout=5: txt)
print("pass" if ok else "fail", b":".join(d.include_headers).decode())
"""


def stock_dkim(message: bytes, txt: str) -> tuple[str, list[str]]:
    """Verify with unmodified dkimpy in a fresh interpreter: (verdict, signed header names)."""
    out = subprocess.run(
        [sys.executable, "-I", "-c", _VERIFY, txt], input=message, capture_output=True,
        check=True, timeout=60,
    ).stdout.decode().split()
    return out[0], out[1].split(":")


def submission(body="Hello from the end-to-end test.", *, sender=f"alice@{DOMAIN}",
               to="recipient@example.com", subject="Hi", headers=()) -> bytes:
    """A message as an agent submits it: no Message-ID (the daemon adds one)."""
    return message(body + "\r\n", sender=sender, to=to, subject=subject, message_id=None,
                   date="Thu, 01 Jan 2026 12:00:00 +0000", headers=headers)


class SendTestCase(DaemonTestCase):
    #: More top-level config keys, more mailboxes and hooks (L{base_config}'s arguments).
    config_top: dict = {}
    config_mailboxes: dict = {}
    config_hooks: list = []

    def setUp(self):
        super().setUp()
        self.drop = os.path.join(self.config_dir, "..", "drop")
        self.environ["AIMX_TEST_MAIL_DROP"] = self.drop
        self.write_config(base_config(self.data_dir, mailboxes=self.config_mailboxes,
                                      hooks=self.config_hooks, **self.config_top))
        self.start_daemon()

    async def send(self, message: bytes, **kw) -> dict:
        conn = await client.connect(reactor, os.path.join(self.runtime_dir, "aimx.sock"))
        try:
            return await conn.call(commands.Send, message=message, **kw)
        finally:
            conn.close()

    def refused(self, error, message: bytes, **kw) -> defer.Deferred:
        d = defer.Deferred.fromCoroutine(self.send(message, **kw))
        return self.assertFailure(d, error).addCallback(str)

    def dropped(self) -> list[tuple[bytes, dict]]:
        if not os.path.isdir(self.drop):
            return []
        out = []
        for name in sorted(os.listdir(self.drop)):
            if name.endswith(".eml"):
                with open(os.path.join(self.drop, name), "rb") as f:
                    eml = f.read()
                with open(os.path.join(self.drop, name[:-4] + ".json")) as f:
                    out.append((eml, json.load(f)))
        return out

    def only_dropped(self) -> tuple[bytes, dict]:
        [one] = self.dropped()
        return one

    def sent(self, mailbox="alice") -> list[str]:
        directory = os.path.join(self.data_dir, "sent", mailbox)
        if not os.path.isdir(directory):
            return []
        names = sorted(n for n in os.listdir(directory) if not n.startswith("."))
        return [os.path.join(directory, n) if n.endswith(".md")
                else os.path.join(directory, n, n + ".md") for n in names]

    def only_sent(self, mailbox="alice") -> tuple[dict, bytes]:
        [path] = self.sent(mailbox)
        return self.read_mail(path)

    def dkim_txt(self) -> str:
        with open(keys.dkim_paths(self.config_dir)[1], "rb") as f:
            return keys.dkim_txt_value(f.read())


class SendTests(SendTestCase):
    async def test_signed_and_dropped(self):
        """Cases 1, 2, 17: signed with our key, verifiable by stock dkimpy; an id is made."""
        reply = await self.send(submission())
        self.assertRegex(reply["message_id"], rf"^<[0-9a-f-]{{36}}@{re.escape(DOMAIN)}>$")
        eml, envelope = self.only_dropped()
        self.assertTrue(eml.startswith(b"DKIM-Signature:"))
        for tag in (f"d={DOMAIN}", "s=aimx", "a=rsa-sha256", "c=relaxed/relaxed"):
            self.assertIn(tag.encode(), eml.split(b"\r\n\r\n")[0])
        for text in (b"From: alice@test.local", b"Message-ID: <"):
            self.assertIn(text, eml)
        self.assertEqual(envelope, {"mail_from": f"alice@{DOMAIN}",
                                    "rcpt_to": ["recipient@example.com"],
                                    "message_id": reply["message_id"]})
        verdict, signed = stock_dkim(eml, self.dkim_txt())
        self.assertEqual(verdict, "pass")
        for name in ("from", "to", "subject", "date", "message-id"):
            self.assertIn(name, signed)
        self.assertEqual(reply["deliveries"][0]["status"], "delivered")

    async def test_no_signature_by_default(self):
        """No `signature` key: the body goes out as written, in the wire message (both
        parts, DKIM-signed) and in the sent copy; no promotional text, no link."""
        body = "Thanks, received.\r\n\r\nAlice"
        await self.send(submission(body))
        eml, _ = self.only_dropped()
        self.assertEqual(stock_dkim(eml, self.dkim_txt())[0], "pass")
        plain, html = email.message_from_bytes(eml, policy=email.policy.default).get_payload()
        self.assertEqual(plain.get_content(), "Thanks, received.\r\n\r\nAlice\r\n")
        self.assertEqual(re.findall(r">([^<>]+)</p>", html.get_content()),
                         ["Thanks, received.", "Alice"])
        [path] = self.sent()
        with open(path, "rb") as f:
            copy = f.read()
        self.assertTrue(copy.endswith(b"+++\n\nThanks, received.\n\nAlice\n"), copy)
        for text in (b"AIMX", b"aimx.email", b"Sent from", b"https://", b"href"):
            self.assertNotIn(text, eml)
            self.assertNotIn(text, copy)

    async def test_key_served_by_fixture_dns(self):
        """The signature verifies against the TXT record the DNS fixture serves."""
        self.dns.add_txt(f"aimx._domainkey.{DOMAIN}", self.dkim_txt())
        await self.send(submission())
        eml, _ = self.only_dropped()
        resolver = Resolver.from_env(self.environ)
        name = f"aimx._domainkey.{DOMAIN}"
        [txt] = await threads.deferToThread(resolver.txt, name)
        self.assertEqual(stock_dkim(eml, txt)[0], "pass")

    async def test_sent_copy(self):
        """Cases 3, 26: Markdown body in the sent copy, no MIME, modes, keys in order."""
        await self.send(submission("# Hello\r\n\r\nWorld"))
        eml, _ = self.only_dropped()
        self.assertIn(b'Content-Type: multipart/alternative; boundary="aimx-', eml)
        fields, body = self.only_sent()
        self.assertEqual(fields["outbound_format"], "markdown")
        self.assertEqual(fields["delivery_status"], "delivered")
        self.assertIs(fields["outbound"], True)
        self.assertEqual(fields["dkim"], "pass")
        self.assertIn("delivered_at", fields)
        self.assertEqual(body, b"# Hello\n\nWorld\n")
        self.assertNotIn(b"aimx-", body)
        self.assertNotIn(b"DKIM-Signature", body)
        self.assertEqual(fields["size_bytes"], len(eml))
        self.assertEqual(list(fields)[:8], ["id", "message_id", "thread_id", "from", "to",
                                            "delivered_to", "subject", "date"])
        self.assertEqual(fields["date"], "2026-01-01T12:00:00Z")
        directory = os.path.join(self.data_dir, "sent", "alice")
        self.assertEqual(stat.S_IMODE(os.stat(directory).st_mode), 0o700)
        [path] = self.sent()
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(os.listdir(directory), [os.path.basename(path)])

    async def test_no_subject(self):
        """A message without Subject is recorded with subject = "" (verbatim)."""
        await self.send(f"From: alice@{DOMAIN}\r\nTo: r@example.com\r\n\r\nx\r\n".encode())
        [path] = self.sent()
        self.assertEqual(self.read_mail(path)[0]["subject"], "")
        self.assertTrue(os.path.basename(path).endswith("-no-subject.md"))

    async def test_attachment_bundle(self):
        """Case 4 end to end: the sent copy is a bundle with the file beside it."""
        message = (
            f"From: alice@{DOMAIN}\r\nTo: r@example.com\r\nSubject: Report\r\n"
            'Content-Type: multipart/mixed; boundary="aimx-x"\r\n\r\n'
            "--aimx-x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n## Report\r\n"
            '--aimx-x\r\nContent-Type: text/plain; name="note.txt"\r\n'
            'Content-Disposition: attachment; filename="note.txt"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\nYXR0YWNoZWQgcGF5bG9hZA==\r\n--aimx-x--\r\n"
        ).encode()
        await self.send(message)
        eml, _ = self.only_dropped()
        self.assertEqual(stock_dkim(eml, self.dkim_txt())[0], "pass")
        [path] = self.sent()
        fields, body = self.read_mail(path)
        self.assertEqual(fields["attachments"][0]["filename"], "note.txt")
        with open(os.path.join(os.path.dirname(path), "note.txt"), "rb") as f:
            self.assertEqual(f.read(), b"attached payload")

    async def test_modes(self):
        """Cases 5, 6: text-only is one part; caller HTML goes out verbatim."""
        await self.send(submission("Your code: 9999"), text_only=True)
        await self.send(submission("fallback text."), html_body=b"<h1>x</h1>")
        (text, _), (html, _) = self.dropped()
        msg = email.message_from_bytes(text, policy=email.policy.default)
        self.assertEqual(msg.get_content_type(), "text/plain")
        self.assertIn("Your code: 9999", msg.get_content())
        plain, part = email.message_from_bytes(html, policy=email.policy.default).get_payload()
        self.assertEqual(part.get_content().strip(), "<h1>x</h1>")
        formats = sorted(self.read_mail(p)[0]["outbound_format"] for p in self.sent())
        self.assertEqual(formats, ["html", "text"])

    async def test_exclusive(self):
        """Case 7: both modes at once is MALFORMED; nothing dropped."""
        reason = await self.refused(MalformedError, submission(), text_only=True,
                                    html_body=b"<p>x</p>")
        self.assertEqual(reason, "AIMX/1 SEND: --text-only and --html-body are mutually exclusive")
        self.assertEqual(self.dropped(), [])

    async def test_sender_checks(self):
        """Cases 10–16: domain, mailbox, catchall, missing headers; nothing dropped."""
        self.assertIn("other.org",
                      await self.refused(DomainError, submission(sender="alice@other.org")))
        reason = await self.refused(MailboxError, submission(sender=f"bogus@{DOMAIN}"))
        self.assertIn(f"bogus@{DOMAIN}", reason)
        self.assertIn("aimx mailboxes create", reason)
        await self.refused(MailboxError, submission(sender=f"catchall@{DOMAIN}"))
        self.assertEqual(await self.refused(MalformedError, submission(sender=None)),
                         "missing required header: From")
        self.assertEqual(await self.refused(MalformedError, submission(to=None)),
                         "missing required header: To")
        self.assertEqual(await self.refused(MalformedError, submission(sender="no-at-sign")),
                         "could not extract sender address from From: no-at-sign")
        self.assertEqual(
            await self.refused(MalformedError, f"From: alice@{DOMAIN}\r\nTo: a@b\r\n".encode()),
            "outbound request body has no header/body separator (expected blank line)")
        self.assertEqual(self.dropped(), [])
        self.assertEqual(self.sent(), [])

    async def test_from_forgeries_refused(self):
        """Send as anyone (issue): a From that scanning for '<' would read as alice is
        refused with its reason, and nothing is signed or sent."""
        cases = [
            (f"ceo@{DOMAIN} (<alice@{DOMAIN}>)", "may not contain a comment"),
            (f"ceo@foreign.example (<alice@{DOMAIN}>)", "may not contain a comment"),
            (f'"<alice@{DOMAIN}>"@foreign.example', "plain address"),
            (f"alice@{DOMAIN}, ceo@{DOMAIN}", "exactly one mailbox"),
            (f"Staff: alice@{DOMAIN};", "not a group"),
        ]
        for from_, reason in cases:
            self.assertIn(reason, await self.refused(MalformedError, submission(sender=from_)))
        sender = submission(headers=[f"Sender: ceo@{DOMAIN}"])
        self.assertIn("Sender header is not allowed",
                      await self.refused(MalformedError, sender))
        self.assertEqual(self.dropped(), [])
        self.assertEqual(self.sent(), [])

    async def test_signed_from_is_the_authorised_identity(self):
        """The From that is signed is re-written from the parsed name and address."""
        self.dns.add_txt(f"aimx._domainkey.{DOMAIN}", self.dkim_txt())
        await self.send(submission(sender=f"=?utf-8?q?Al=C3=ADce?=   <alice@{DOMAIN}>"))
        eml, envelope = self.only_dropped()
        head = eml.split(b"\r\n\r\n")[0].decode()
        froms = [line for line in head.split("\r\n") if line.lower().startswith("from:")]
        self.assertEqual(froms, [f"From: =?utf-8?b?QWzDrWNl?= <alice@{DOMAIN}>"])
        self.assertEqual(envelope["mail_from"], f"alice@{DOMAIN}")
        verdict, signed = stock_dkim(eml, self.dkim_txt())
        self.assertEqual(verdict, "pass")
        self.assertIn("from", signed)
        fields, _ = self.only_sent()
        self.assertEqual(fields["from"], f"Alíce <alice@{DOMAIN}>")

    async def test_sender_forms(self):
        """Cases 11, 12, 18: case-insensitive domain, display name, a given Message-ID."""
        await self.send(submission(sender=f"alice@{DOMAIN.upper()}"))
        await self.send(submission(sender=f"Alice <alice@{DOMAIN}>"))
        reply = await self.send(submission(headers=["Message-ID: <abc@example.com>"]))
        self.assertEqual(reply["message_id"], "<abc@example.com>")
        self.assertEqual(len(self.dropped()), 3)

    async def test_recipients(self):
        """Cases 19, 20: display names stripped; To, Cc, Bcc all delivered; Bcc hidden."""
        await self.send(submission(to="Bob <bob@gmail.com>"))
        await self.send(submission(to="a@x.com, b@y.com",
                                   headers=["Cc: Cee <c@w.com>", "Bcc: c@z.com"]))
        (_, first), (eml, second) = self.dropped()
        self.assertEqual(first["rcpt_to"], ["bob@gmail.com"])
        self.assertEqual(second["rcpt_to"], ["a@x.com", "b@y.com", "c@w.com", "c@z.com"])
        self.assertNotIn(b"Bcc", eml)
        self.assertNotIn(b"c@z.com", eml)
        copies = [self.read_mail(p)[0] for p in self.sent()]
        with_bcc = [c for c in copies if "bcc" in c]
        self.assertEqual([c["bcc"] for c in with_bcc], [["c@z.com"]])
        self.assertEqual(with_bcc[0]["cc"], "Cee <c@w.com>")
        self.assertEqual(len(with_bcc[0]["delivery"]), 4)

    async def test_25_mib_through_both_clients(self):
        """A full 25 MiB message is signed and sent through the Twisted and asyncio clients."""
        head = submission("", subject="big")[:-2]  # headers and the empty line
        line = b"a" * 998 + b"\r\n"
        room = wire.MESSAGE_CAP - len(head)
        message = head + line * (room // len(line)) + b"b" * (room % len(line))
        self.assertEqual(len(message), wire.MESSAGE_CAP)
        first = await self.send(message, text_only=True)
        path = os.path.join(self.runtime_dir, "aimx.sock")

        async def aio():
            return await aioclient.ControlClient(path).call(wire.Send, message=message,
                                                            text_only=True)

        second = await threads.deferToThread(asyncio.run, aio())
        dropped = self.dropped()
        self.assertEqual(sorted(e["message_id"] for _, e in dropped),
                         sorted([first["message_id"], second["message_id"]]))
        tail = b"\r\n" + b"b" * (room % len(line)) + b"\r\n"
        for eml, _ in dropped:
            self.assertEqual(eml.count(line), room // len(line))
            self.assertIn(tail, eml[-1000:])
        self.assertEqual(self.daemon.control.factory.buffered, 0)

    async def test_markdown_cap(self):
        """Case 21: 5 MiB + 1 of Markdown is refused; the same text-only is sent."""
        body = "a" * (5 * 1024 * 1024 + 1)
        reason = await self.refused(BodyTooLarge, submission(body))
        self.assertIn("markdown body exceeds 5 MiB", reason)
        await self.send(submission(body), text_only=True)
        self.assertEqual(len(self.dropped()), 1)

    async def test_threading(self):
        """Case 35: the sent copy's thread_id hashes the root of References."""
        await self.send(submission(headers=[
            "In-Reply-To: <orig@example.com>",
            "References: <first@example.com> <orig@example.com>"]))
        eml, _ = self.only_dropped()
        _, signed = stock_dkim(eml, self.dkim_txt())
        self.assertIn("in-reply-to", signed)
        self.assertIn("references", signed)
        fields, _ = self.only_sent()
        root = hashlib.sha256(b"first@example.com").hexdigest()[:16]
        self.assertEqual(fields["thread_id"], root)

    async def test_inbound_side_passes_it(self):
        """aimx's own inbound side records dkim = "pass" for what aimx signed."""
        self.dns.add_txt(f"aimx._domainkey.{DOMAIN}", self.dkim_txt())
        await self.send(submission(to=f"bob@{DOMAIN}"))
        eml, _ = self.only_dropped()
        await self.smtp(eml, [f"bob@{DOMAIN}"], mail_from=f"alice@{DOMAIN}")
        fields, _ = self.only_mail("bob")
        self.assertEqual(fields["dkim"], "pass")


class LocalDropTests(SendTestCase):
    async def test_local_recipient_dropped(self):
        """With AIMX_TEST_MAIL_DROP nothing is delivered, mail to our own domain included."""
        self.dns.add_txt(f"aimx._domainkey.{DOMAIN}", self.dkim_txt())
        reply = await self.send(submission(to=f"bob@{DOMAIN}, r@example.com"))
        _, envelope = self.only_dropped()
        self.assertEqual(envelope["rcpt_to"], [f"bob@{DOMAIN}", "r@example.com"])
        self.assertEqual([d["status"] for d in reply["deliveries"]], ["delivered"] * 2)
        self.assertEqual(self.inbox("bob"), [])
        self.assertEqual(self.inbox("catchall"), [])
        self.assertEqual(self.only_sent()[0]["delivery_status"], "delivered")


class StartupTests(DaemonTestCase):
    def test_mail_drop_warning(self):
        """Daemon case 8: the mail drop is announced loudly, naming the path."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.environ["AIMX_TEST_MAIL_DROP"] = "/tmp/some-drop"
        self.start_daemon()
        logged = "\n".join(event_line(e, journal=True) for e in events)
        self.assertIn("<4>aimx.daemon: AIMX_TEST_MAIL_DROP is set: outbound mail is written to "
                      "a directory and NOT delivered, for tests only; unset it on production "
                      "hosts path=/tmp/some-drop", logged)

    def test_bad_out_port(self):
        """A bad AIMX_SMTP_OUT_PORT stops start-up and names the variable."""
        self.environ["AIMX_SMTP_OUT_PORT"] = "smtp"
        e = self.assertRaises(ConfigError, self.start_daemon)
        self.assertIn("AIMX_SMTP_OUT_PORT", str(e))


class SignatureConfigTests(SendTestCase):
    config_top = {"signature": "-- daemon-sig-marker"}

    async def test_custom_signature(self):
        """Case 9: the configured signature in the wire and the sent copy."""
        await self.send(submission("Your code: 9999"), text_only=True)
        eml, _ = self.only_dropped()
        self.assertIn(b"daemon-sig-marker", eml)
        self.assertNotIn(b"multipart/", eml)
        self.assertIn(b"daemon-sig-marker", self.only_sent()[1])

    async def test_signature_edit_applies_next_send(self):
        """The signature comes from the live config: edit + reload, no restart."""
        self.write_config(base_config(self.data_dir, signature=""))
        await self.daemon.reload()
        await self.send(submission("x"))
        eml, _ = self.only_dropped()
        self.assertNotIn(b"daemon-sig-marker", eml)
        self.assertNotIn(b"Sent from AIMX.", eml)


class AfterSendTests(SendTestCase):
    def setUp(self):
        self.sentinel = os.path.abspath(self.mktemp())
        script = 'printf "status=%s to=%s file=%s\\n" "$AIMX_SEND_STATUS" "$AIMX_TO" "$AIMX_FILEPATH" > ' + self.sentinel
        self.config_hooks = [("alice", hook_table("after_send", ["/bin/sh", "-c", script]))]
        super().setUp()

    async def test_hook_done_before_reply(self):
        """Case 27: when SEND answers, the hook has already written its sentinel."""
        await self.send(submission())
        with open(self.sentinel) as f:
            line = f.read()
        self.assertIn("status=delivered to=recipient@example.com", line)
        self.assertIn(f"file={self.sent()[0]}", line)

    async def test_deferred_hook(self):
        """Case 28, 34: a drop path that is a file answers TEMP; the hook sees deferred."""
        self.daemon.outbox.drop_dir = self.sentinel + ".file"
        with open(self.sentinel + ".file", "w") as f:
            f.write("untouched")
        await self.refused(TempError, submission())
        with open(self.sentinel) as f:
            self.assertEqual(f.read(), "status=deferred to=recipient@example.com file=\n")
        with open(self.sentinel + ".file") as f:
            self.assertEqual(f.read(), "untouched")
        self.assertEqual(self.sent(), [])


class AuthorizationTests(SendTestCase):
    skip = None if IS_ROOT else "needs root to act as a second uid"

    def setUp(self):
        super().setUp()
        os.chmod(self.runtime_dir, 0o755)

    async def test_other_uid_refused_root_allowed(self):
        """Case 23 / control case 5: nobody may not send as root's alice; root may."""
        env = dict(os.environ, PYTHONPATH=REPO, AIMX_RUNTIME_DIR=self.runtime_dir)
        calls = json.dumps([["Send", {"message": submission().decode()}]])
        argv = [sys.executable, "-m", "tests.integration.asuser", str(NOBODY), str(NOBODY),
                "amp", calls]
        result = await threads.deferToThread(
            subprocess.run, argv, env=env, cwd=REPO, capture_output=True, timeout=60
        )
        self.assertEqual(json.loads(result.stdout),
                         [{"error": "EACCES", "reason": "not authorized"}], result.stderr)
        self.assertEqual(self.dropped(), [])
        self.assertEqual(self.sent(), [])
        await self.send(submission())
        self.assertEqual(len(self.dropped()), 1)


class MxSendTestCase(DaemonTestCase):
    """A daemon that delivers to loopback MX hosts found through the fixture DNS."""

    config_mailboxes: dict = {}

    def setUp(self):
        super().setUp()
        self.write_config(base_config(self.data_dir, mailboxes=self.config_mailboxes))
        directory = self.mktemp()
        cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
        keys.generate_self_signed(cert, key, "mx.ok.example")
        self.sinks = {
            "ok": SmtpSink(reactor, tls=keys.load_tls_pair(cert, key)),
            "rej": SmtpSink(reactor, rcpt={"bob@rej.example": 550}),
            "later": SmtpSink(reactor, rcpt={"bob@later.example": 451}),
            "close": SmtpSink(reactor, behaviour="close"),
        }
        ips = {}
        for n, (name, sink) in enumerate(self.sinks.items(), start=2):
            ips[f"127.0.0.{n}"] = sink
            self.addCleanup(sink.stop)
            self.dns.add_mx(f"{name}.example", 10, f"mx.{name}.example")
            self.dns.add_a(f"mx.{name}.example", f"127.0.0.{n}")
        self.dns.add_mx("null.example", 0, ".")  # RFC 7505
        self.dns.add_txt("nomx.example", "v=spf1 -all")  # a name without MX, A or AAAA
        self.dns.add_servfail("broken.example")
        self.environ["AIMX_SMTP_OUT_PORT"] = str(listen_all(ips))
        self.start_daemon()

    async def send(self, to: str) -> dict:
        conn = await client.connect(reactor, os.path.join(self.runtime_dir, "aimx.sock"))
        try:
            return await conn.call(commands.Send, message=submission(to=to))
        finally:
            conn.close()

    def refused(self, error, to: str) -> defer.Deferred:
        d = defer.Deferred.fromCoroutine(self.send(to))
        return self.assertFailure(d, error).addCallback(str)

    def copies(self) -> list[dict]:
        directory = os.path.join(self.data_dir, "sent", "alice")
        if not os.path.isdir(directory):
            return []
        return [self.read_mail(os.path.join(directory, n))[0]
                for n in sorted(os.listdir(directory))]


class MxSendTests(MxSendTestCase):
    async def test_delivered_over_starttls(self):
        """Case 32: STARTTLS with a self-signed cert, EHLO = our domain, signature verifies."""
        reply = await self.send("bob@ok.example")
        self.assertEqual(reply["deliveries"][0]["status"], "delivered")
        [tx] = self.sinks["ok"].transactions
        self.assertEqual((tx.helo, tx.mail_from, tx.rcpts, tx.tls),
                         (DOMAIN, f"alice@{DOMAIN}", ["bob@ok.example"], True))
        with open(keys.dkim_paths(self.config_dir)[1], "rb") as f:
            txt = keys.dkim_txt_value(f.read())
        self.assertEqual(stock_dkim(tx.data, txt)[0], "pass")
        [copy] = self.copies()
        self.assertEqual(copy["delivery_status"], "delivered")

    async def test_rejected_is_failed_and_recorded(self):
        """Cases 24, 33: RCPT 550 → DELIVERY; the sent copy says failed and why."""
        reason = await self.refused(DeliveryError, "bob@rej.example")
        self.assertIn("550", reason)
        [copy] = self.copies()
        self.assertEqual(copy["delivery_status"], "failed")
        self.assertIn("550", copy["delivery_details"])
        self.assertNotIn("delivered_at", copy)

    async def test_temporary_is_deferred_and_not_recorded(self):
        """Cases 25, 33: RCPT 451 and a closed connection → TEMP; no sent copy."""
        self.assertIn("451", await self.refused(TempError, "bob@later.example"))
        self.assertIn("mx.close.example", await self.refused(TempError, "bob@close.example"))
        self.assertEqual(self.copies(), [])

    async def test_partial(self):
        """(aimx decision) one delivered, one refused: OK with per-recipient results."""
        reply = await self.send("bob@ok.example, bob@rej.example, bob@later.example")
        self.assertEqual([d["status"] for d in reply["deliveries"]],
                         ["delivered", "failed", "deferred"])
        [copy] = self.copies()
        self.assertEqual(copy["delivery_status"], "partial")
        self.assertEqual([d["rcpt"] for d in copy["delivery"]],
                         ["bob@ok.example", "bob@rej.example", "bob@later.example"])
        self.assertIn("bob@later.example: ", copy["delivery_details"])

    async def test_no_mail_server_sends_nothing(self):
        """A domain that cannot receive mail stops the remote part before anything leaves:
        its recipient failed, the others deferred with the reason (nothing half-sent)."""
        reply = await self.send("bob@ok.example, x@nowhere.example")
        self.assertEqual(reply["deliveries"], [
            {"rcpt": "bob@ok.example", "status": "deferred",
             "details": "Not sent because nowhere.example cannot receive mail; "
                        "retry without its recipients"},
            {"rcpt": "x@nowhere.example", "status": "failed",
             "details": "550 5.1.2 nowhere.example: no such domain"},
        ])
        self.assertEqual(self.sinks["ok"].transactions, [])
        [copy] = self.copies()
        self.assertEqual(copy["delivery_status"], "partial")

    async def test_nxdomain_failed(self):
        """NXDOMAIN is permanent: DELIVERY (not TEMP), and the sent copy says failed."""
        reason = await self.refused(DeliveryError, "x@nowhere.example")
        self.assertEqual(reason, "550 5.1.2 nowhere.example: no such domain")
        [copy] = self.copies()
        self.assertEqual(copy["delivery_status"], "failed")
        self.assertEqual(copy["delivery_details"], reason)

    async def test_null_mx_failed(self):
        """A Null MX (RFC 7505 §4.2) is permanent: 556 5.1.10, nothing connects."""
        reason = await self.refused(DeliveryError, "x@null.example")
        self.assertEqual(reason, "556 5.1.10 null.example does not accept mail "
                                 "(null MX, RFC 7505)")
        self.assertEqual(self.copies()[0]["delivery_status"], "failed")

    async def test_no_mx_no_address_failed(self):
        """A name with neither MX nor A/AAAA is permanent (RFC 5321 §5.1)."""
        reason = await self.refused(DeliveryError, "x@nomx.example")
        self.assertEqual(reason, "550 5.1.2 No mail server found for domain nomx.example "
                                 "(no MX, A or AAAA record)")

    async def test_every_recipient_failed(self):
        """Several permanent failures: DELIVERY naming each recipient and why."""
        reason = await self.refused(DeliveryError, "x@nowhere.example, y@null.example")
        self.assertEqual(reason.split("; "), [
            "x@nowhere.example: 550 5.1.2 nowhere.example: no such domain",
            "y@null.example: 556 5.1.10 null.example does not accept mail (null MX, RFC 7505)",
        ])

    async def test_dns_failure_deferred(self):
        """SERVFAIL is temporary: TEMP, no sent copy."""
        reason = await self.refused(TempError, "x@broken.example")
        self.assertTrue(reason.startswith("DNS failure for broken.example: "), reason)
        self.assertEqual(self.copies(), [])


class CliSendTests(SendTestCase):
    """`aimx send` as a real second uid against the daemon (cli.md cases 6–10)."""

    skip = None if IS_ROOT else "needs root to act as a second uid"
    config_mailboxes = {"nb": {"owner": "nobody"}}

    def setUp(self):
        super().setUp()
        os.chmod(self.runtime_dir, 0o755)

    def aimx_as_nobody(self, *argv: str):
        env = dict(os.environ, PYTHONPATH=REPO, AIMX_RUNTIME_DIR=self.runtime_dir, NO_COLOR="1")
        return threads.deferToThread(
            subprocess.run,
            [sys.executable, "-m", "tests.integration.asuser", str(NOBODY), str(NOBODY), "cli",
             *argv],
            env=env, cwd="/", capture_output=True, timeout=60,
        )

    async def test_send_as_owner(self):
        """The owner sends; the sent copy and its directory belong to the owner (case 26)."""
        result = await self.aimx_as_nobody(
            "send", "--from", "nb@test.local", "--to", "r@example.com", "--subject", "Hi",
            "--body", "**bold** news", "--bcc", "hidden@example.net")
        self.assertEqual(result.returncode, 0, result.stderr)
        message_id = result.stdout.decode().strip()
        self.assertRegex(message_id, r"^<[0-9a-f-]{36}@test\.local>$")
        self.assertIn(b"Email sent.", result.stderr)
        eml, envelope = self.only_dropped()
        self.assertEqual(envelope["rcpt_to"], ["r@example.com", "hidden@example.net"])
        self.assertIn(b"<strong>bold</strong>", eml)
        [path] = self.sent("nb")
        for target, mode in ((path, 0o600), (os.path.dirname(path), 0o700)):
            st = os.stat(target)
            self.assertEqual((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)),
                             (NOBODY, NOBODY, mode))
        fields, body = self.read_mail(path)
        self.assertEqual(fields["message_id"], message_id.strip("<>"))
        self.assertEqual(fields["bcc"], ["hidden@example.net"])

    async def test_root_sends_from_another_users_mailbox(self):
        """Root (the operator) sends from nobody's mailbox with `aimx send`, as MCP can
        (docs/security.md, "Sending identity"); the sent copy still belongs to the owner."""
        env = dict(os.environ, PYTHONPATH=REPO, AIMX_RUNTIME_DIR=self.runtime_dir, NO_COLOR="1")
        result = await threads.deferToThread(
            subprocess.run,
            [sys.executable, "-m", "aimx", "send", "--from", "nb@test.local", "--to",
             "r@example.com", "--subject", "From root", "--body", "Hello."],
            env=env, cwd="/", capture_output=True, timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"Email sent.", result.stderr)
        eml, envelope = self.only_dropped()
        self.assertEqual(envelope["rcpt_to"], ["r@example.com"])
        self.assertIn(b"From: nb@test.local", eml)
        [path] = self.sent("nb")
        self.assertEqual(os.stat(path).st_uid, NOBODY)
        fields, _ = self.read_mail(path)
        self.assertEqual(f"<{fields['message_id']}>", result.stdout.decode().strip())

    async def test_send_as_someone_else(self):
        """nobody may not send as root's alice: `Error: not authorized: <from>`, exit 1."""
        result = await self.aimx_as_nobody(
            "send", "--from", f"alice@{DOMAIN}", "--to", "r@example.com", "--subject", "x",
            "--body", "y")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr, f"Error: not authorized: alice@{DOMAIN}\n".encode())
        self.assertEqual(self.dropped(), [])


class LocalSendTests(MxSendTestCase):
    """Mail to our own domain without the mail drop goes through the inbound chain:
    DKIM-verified against the key the fixture DNS serves, trusted by the allowlist,
    stored, hooks fired; no MX lookup for our domain."""

    def setUp(self):
        self.out = tempfile.mkdtemp(prefix="aimx-local-")
        self.addCleanup(shutil.rmtree, self.out, True)
        script = 'printf "%s|%s" "$AIMX_FROM" "$AIMX_SUBJECT" > "$0/fired"'
        self.config_mailboxes = {"trusting": {
            "trust": "verified", "trusted_senders": [f"*@{DOMAIN}"],
            "hooks": [hook_table("on_receive", ["/bin/sh", "-c", script, self.out])],
        }}
        super().setUp()
        self.addCleanup(self.daemon.hooks.idle)
        with open(keys.dkim_paths(self.config_dir)[1], "rb") as f:
            self.dns.add_txt(f"aimx._domainkey.{DOMAIN}", keys.dkim_txt_value(f.read()))

    def mx_queries(self) -> list[str]:
        return [name for name, kind in self.dns.queries if kind == 15]  # MX

    async def test_local_delivery_trusted(self):
        """Stored in the recipient's inbox as trusted (DKIM pass, allowlist *@domain),
        its on_receive hook fires, the sender's sent copy is written; no MX lookup."""
        reply = await self.send(f"trusting@{DOMAIN}")
        self.assertEqual(reply["deliveries"], [
            {"rcpt": f"trusting@{DOMAIN}", "status": "delivered",
             "details": "250 2.0.0 OK message accepted"}])
        fields, body = self.only_mail("trusting")
        self.assertEqual((fields["dkim"], fields["spf"], fields["trusted"]),
                         ("pass", "none", "true"))
        self.assertNotIn("received_from_ip", fields)
        self.assertEqual(fields["message_id"], reply["message_id"].strip("<>"))
        self.assertIn(b"Hello from the end-to-end test.", body)
        await self.daemon.hooks.idle()
        with open(os.path.join(self.out, "fired")) as f:
            self.assertEqual(f.read(), f"alice@{DOMAIN}|Hi")
        [copy] = self.copies()
        self.assertEqual(copy["delivery_status"], "delivered")
        self.assertEqual(copy["delivery"][0]["status"], "delivered")
        self.assertNotIn(DOMAIN, self.mx_queries())

    async def test_untrusted_without_published_key(self):
        """Verified like any other message: without our key in DNS it is stored untrusted
        and the default hook does not fire."""
        self.dns.clear()
        reply = await self.send(f"trusting@{DOMAIN}")
        self.assertEqual(reply["deliveries"][0]["status"], "delivered")
        fields, _ = self.only_mail("trusting")
        self.assertEqual(fields["trusted"], "false")
        self.assertNotEqual(fields["dkim"], "pass")
        await self.daemon.hooks.idle()
        self.assertFalse(os.path.exists(os.path.join(self.out, "fired")))

    async def test_key_lookup_tempfail_deferred(self):
        """A temporary DNS failure on our own key, for a mailbox that allow-lists us:
        the chain answers 451 4.4.3, the recipient is deferred (TEMP), nothing stored."""
        self.dns.add_servfail(f"aimx._domainkey.{DOMAIN}")
        reason = await self.refused(TempError, f"trusting@{DOMAIN}")
        self.assertEqual(reason,
                         "451 4.4.3 Temporary DNS failure verifying the sender; please retry")
        self.assertEqual(self.inbox("trusting"), [])
        self.assertEqual(self.copies(), [])

    async def test_unknown_local_recipient(self):
        """A local recipient that routes nowhere fails without being tried (no catchall)."""
        self.write_config(base_config(self.data_dir, catchall=False))
        await self.daemon.reload()
        reason = await self.refused(DeliveryError, f"nobody@{DOMAIN}")
        self.assertEqual(
            reason, f"550 5.1.1 <nobody@{DOMAIN}>: Recipient address rejected: User unknown")
        self.assertEqual(self.copies()[0]["delivery_status"], "failed")

    async def test_catchall(self):
        """An unknown local part goes to the catchall, as over SMTP."""
        reply = await self.send(f"Nobody@{DOMAIN.upper()}")
        self.assertEqual(reply["deliveries"][0]["status"], "delivered")
        fields, _ = self.only_mail("catchall")
        self.assertEqual(fields["delivered_to"], f"Nobody@{DOMAIN.upper()}")

    async def test_mixed_local_and_remote(self):
        """Local recipients are stored, remote ones go to their MX, one result each."""
        reply = await self.send(f"bob@{DOMAIN}, bob@ok.example, trusting@{DOMAIN}, "
                                "bob@rej.example")
        self.assertEqual([(d["rcpt"], d["status"]) for d in reply["deliveries"]], [
            (f"bob@{DOMAIN}", "delivered"), ("bob@ok.example", "delivered"),
            (f"trusting@{DOMAIN}", "delivered"), ("bob@rej.example", "failed")])
        [tx] = self.sinks["ok"].transactions
        self.assertEqual(tx.rcpts, ["bob@ok.example"])
        self.assertEqual(len(self.inbox("bob")), 1)
        self.assertEqual(self.only_mail("trusting")[0]["trusted"], "true")
        self.assertEqual(self.copies()[0]["delivery_status"], "partial")
        self.assertNotIn(DOMAIN, self.mx_queries())

    async def test_local_with_missing_remote_domain(self):
        """A remote domain that cannot receive mail holds back only the remote part:
        local delivery needs no DNS for routing and goes ahead."""
        reply = await self.send(f"trusting@{DOMAIN}, bob@ok.example, x@nowhere.example")
        self.assertEqual([d["status"] for d in reply["deliveries"]],
                         ["delivered", "deferred", "failed"])
        self.assertEqual(self.sinks["ok"].transactions, [])
        self.assertEqual(len(self.inbox("trusting")), 1)

    async def test_one_local_copy_not_stored(self):
        """Each local recipient gets its own result: a mailbox that cannot be written is
        deferred with the chain's 451, the other is delivered (partial, sent copy)."""
        with open(os.path.join(self.data_dir, "inbox", "bob"), "w") as f:
            f.write("blocks bob's mailbox")
        reply = await self.send(f"trusting@{DOMAIN}, bob@{DOMAIN}")
        self.assertEqual(reply["deliveries"], [
            {"rcpt": f"trusting@{DOMAIN}", "status": "delivered",
             "details": "250 2.0.0 OK message accepted"},
            {"rcpt": f"bob@{DOMAIN}", "status": "deferred",
             "details": "451 4.3.0 Temporary failure, please retry"}])
        self.assertEqual(self.copies()[0]["delivery_status"], "partial")

    async def test_chain_crash_deferred(self):
        """An unexpected failure of the inbound chain defers the local recipients (as
        over SMTP: 451), never the whole SEND."""
        self.daemon.outbox.local = lambda envelope: defer.fail(RuntimeError("boom"))
        reason = await self.refused(TempError, f"trusting@{DOMAIN}")
        self.assertEqual(reason, "451 4.3.0 Temporary failure, please retry")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    async def test_sent_to_self(self):
        """A mailbox may write to itself: the copy lands in its inbox and its sent folder."""
        reply = await self.send(f"alice@{DOMAIN}")
        self.assertEqual(reply["deliveries"][0]["status"], "delivered")
        self.assertEqual(self.only_mail("alice")[0]["dkim"], "pass")
        self.assertEqual(len(self.copies()), 1)


class CliFailureTests(MxSendTestCase):
    """`aimx send` (as a real second uid) when every recipient failed or was deferred."""

    skip = None if IS_ROOT else "needs root to act as a second uid"
    config_mailboxes = {"nb": {"owner": "nobody"}}

    def setUp(self):
        super().setUp()
        os.chmod(self.runtime_dir, 0o755)

    def aimx_send(self, to: str):
        env = dict(os.environ, PYTHONPATH=REPO, AIMX_RUNTIME_DIR=self.runtime_dir, NO_COLOR="1")
        argv = [sys.executable, "-m", "tests.integration.asuser", str(NOBODY), str(NOBODY),
                "cli", "send", "--from", f"nb@{DOMAIN}", "--to", to, "--subject", "x",
                "--body", "y"]
        return threads.deferToThread(subprocess.run, argv, env=env, cwd="/",
                                     capture_output=True, timeout=60)

    async def test_nxdomain_is_delivery_error(self):
        """NXDOMAIN: `Error [DELIVERY]: ...`, exit 1, not TEMP."""
        result = await self.aimx_send("x@nowhere.example")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr,
                         b"Error [DELIVERY]: 550 5.1.2 nowhere.example: no such domain\n")

    async def test_null_mx_is_delivery_error(self):
        """Null MX: `Error [DELIVERY]: 556 5.1.10 ...`, exit 1."""
        result = await self.aimx_send("x@null.example")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr, b"Error [DELIVERY]: 556 5.1.10 null.example does not "
                                        b"accept mail (null MX, RFC 7505)\n")

    async def test_temporary_stays_temp(self):
        """A 4xx stays `Error [TEMP]`."""
        result = await self.aimx_send("bob@later.example")
        self.assertEqual(result.returncode, 1)
        self.assertTrue(result.stderr.startswith(b"Error [TEMP]: "), result.stderr)
        self.assertIn(b"451", result.stderr)
