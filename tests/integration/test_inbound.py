"""Real SMTP over loopback to the running service: routing, storage, verification."""

import base64
import os
import smtplib
import socket
import ssl

from twisted.internet import defer, threads
from twisted.logger import capturedLogs

from aimx.core.address import Envelope
from aimx.store import keys
from aimx.testing.fakes import message, multipart_message, part
from tests.integration.base import DaemonTestCase, base_config

PLAIN = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: alice@test.local\r\n"
    b"Subject: Test\r\n"
    b"Message-ID: <plain-001@example.com>\r\n"
    b"Date: Thu, 01 Jan 2025 12:00:00 +0000\r\n"
    b"\r\n"
    b"Hello from the test.\r\n"
)


class RoutingTests(DaemonTestCase):
    def setUp(self):
        super().setUp()
        self.start_daemon()

    @defer.inlineCallbacks
    def test_full_transaction(self):
        """A message lands as exactly one .md with its subject and body (case 10)."""
        reply = yield self.smtp(PLAIN, ["alice@test.local"])
        self.assertEqual(reply, (250, b"2.0.0 OK message accepted"))
        fields, body = self.only_mail("alice")
        self.assertEqual(fields["subject"], "Test")
        self.assertIn(b"Hello from the test.", body)
        self.assertEqual(fields["from"], "Alice <alice@example.com>")
        self.assertEqual(fields["message_id"], "plain-001@example.com")
        self.assertEqual(fields["date"], "2025-01-01T12:00:00Z")
        self.assertEqual(fields["received_from_ip"], "127.0.0.1")
        self.assertEqual(fields["size_bytes"], len(PLAIN))
        self.assertEqual(fields["mailbox"], "alice")
        self.assertIs(fields["read"], False)
        self.assertEqual(
            (fields["dkim"], fields["spf"], fields["dmarc"], fields["trusted"]),
            ("none", "none", "none", "none"),
        )

    @defer.inlineCallbacks
    def test_domain_case(self):
        """RCPT alice@TEST.LOCAL is stored for alice (case 5)."""
        yield self.smtp(PLAIN, ["alice@TEST.LOCAL"])
        self.assertEqual(len(self.inbox("alice")), 1)

    @defer.inlineCallbacks
    def test_catchall(self):
        """An unknown local part lands in the catchall with its delivered_to (case 8)."""
        yield self.smtp(PLAIN, ["randomuser@test.local"])
        fields, _ = self.only_mail("catchall")
        self.assertEqual(fields["delivered_to"], "randomuser@test.local")
        self.assertEqual(fields["mailbox"], "catchall")

    @defer.inlineCallbacks
    def test_case_and_tag(self):
        """Alice@ and alice+tag@ route to alice; the tag stays in to/delivered_to (case 9)."""
        yield self.smtp(message(message_id="a@x"), ["Alice@test.local"])
        yield self.smtp(message(to="alice+tag@test.local", message_id="b@x"), ["alice+tag@test.local"])
        paths = self.inbox("alice")
        self.assertEqual(len(paths), 2)
        tagged = [self.read_mail(p)[0] for p in paths if "alice+tag" in open(p).read()]
        self.assertEqual(tagged[0]["delivered_to"], "alice+tag@test.local")
        self.assertEqual(tagged[0]["to"], "alice+tag@test.local")

    @defer.inlineCallbacks
    def test_two_rcpts(self):
        """One copy per recipient, each with its own delivered_to (cases 11, 12)."""
        raw = message(to="alice@test.local", headers=["Bcc: bob@test.local"])
        yield self.smtp(raw, ["alice@test.local", "bob@test.local"])
        alice, _ = self.only_mail("alice")
        bob, bob_body = self.only_mail("bob")
        self.assertEqual(alice["delivered_to"], "alice@test.local")
        self.assertEqual(bob["delivered_to"], "bob@test.local")
        self.assertEqual(bob["to"], "alice@test.local")
        self.assertNotIn("bcc", bob)

    @defer.inlineCallbacks
    def test_mixed_rcpts(self):
        """An accepted and a relayed RCPT: the message reaches only alice (case 6)."""

        def send():
            with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as c:
                c.ehlo("x")
                c.mail("a@example.com")
                self.assertEqual(c.rcpt("alice@test.local")[0], 250)
                self.assertEqual(c.rcpt("mallory@evil.example")[0], 550)
                return c.data(PLAIN)[0]

        self.assertEqual((yield threads.deferToThread(send)), 250)
        self.assertEqual(len(self.inbox("alice")), 1)
        self.assertEqual(self.inbox("catchall"), [])

    @defer.inlineCallbacks
    def test_two_messages_one_connection(self):
        """Two messages with distinct Message-IDs on one connection: two files (case 24)."""

        def send():
            with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as c:
                c.sendmail("a@example.com", ["alice@test.local"], message(message_id="one@x"))
                c.sendmail("a@example.com", ["alice@test.local"], message(message_id="two@x"))

        yield threads.deferToThread(send)
        self.assertEqual(len(self.inbox("alice")), 2)

    @defer.inlineCallbacks
    def test_duplicate_rcpt_stored_once(self):
        """RCPT alice@ then ALICE@ in one transaction stores one file, even without Message-ID."""
        raw = b"From: a@example.com\r\nTo: alice@test.local\r\nSubject: once\r\n\r\nHi\r\n"

        def send():
            with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as c:
                c.ehlo("x")
                c.mail("a@example.com")
                replies = [c.rcpt(rcpt)[0] for rcpt in ("alice@test.local", "ALICE@Test.Local")]
                return replies, c.data(raw)[0]

        replies, data = yield threads.deferToThread(send)
        self.assertEqual((replies, data), ([250, 250], 250))
        fields, _ = self.only_mail("alice")
        self.assertEqual(fields["delivered_to"], "alice@test.local")

    @defer.inlineCallbacks
    def test_dedup(self):
        """A repeated Message-ID is stored once per mailbox (case 25)."""
        yield self.smtp(PLAIN, ["alice@test.local"])
        reply = yield self.smtp(PLAIN, ["alice@test.local"])
        self.assertEqual(reply[0], 250)
        self.assertEqual(len(self.inbox("alice")), 1)
        yield self.smtp(PLAIN, ["nobody@test.local", "other@test.local"])
        self.assertEqual(len(self.inbox("catchall")), 1)

    @defer.inlineCallbacks
    def test_attachments_bundle(self):
        """Attachments make a bundle with sanitised, de-duplicated names (cases 32-35)."""
        png = bytes(range(256)) * 40

        def attached(ctype, name, body, *headers):
            return part(body, ctype, [f'Content-Disposition: attachment; filename="{name}"',
                                      *headers])

        raw = multipart_message(
            part("See attached.\r\n", "text/plain"),
            attached("text/plain", "notes.txt", "note body\r\n"),
            attached("image/png", "../../../etc/cron.d/evil",
                     base64.encodebytes(png).decode().replace("\n", "\r\n"),
                     "Content-Transfer-Encoding: base64"),
            attached("application/pdf", "report.pdf", "%PDF-1"),
            attached("application/pdf", "report.pdf", "%PDF-2"),
            boundary="XYZ", subject="Files",
        )
        yield self.smtp(raw, ["alice@test.local"])
        [path] = self.inbox("alice")
        bundle = os.path.dirname(path)
        self.assertEqual(
            sorted(os.listdir(bundle)),
            sorted([os.path.basename(path), "notes.txt", "evil", "report.pdf", "report-1.pdf"]),
        )
        with open(os.path.join(bundle, "evil"), "rb") as f:
            self.assertEqual(f.read(), png)
        fields, body = self.read_mail(path)
        self.assertEqual(
            [a["filename"] for a in fields["attachments"]],
            ["notes.txt", "evil", "report.pdf", "report-1.pdf"],
        )
        self.assertEqual(fields["attachments"][1]["size"], len(png))
        self.assertIn(b"See attached.", body)
        self.assertFalse(os.path.exists(os.path.join(self.data_dir, "etc")))

    @defer.inlineCallbacks
    def test_html_only(self):
        """HTML-only mail is stored as Markdown without tags (case 31)."""
        raw = message(
            body="<html><body><h1>Hello</h1><p>World</p></body></html>\r\n",
            headers=["MIME-Version: 1.0", "Content-Type: text/html; charset=utf-8"],
        )
        yield self.smtp(raw, ["alice@test.local"])
        _, body = self.only_mail("alice")
        self.assertIn(b"Hello", body)
        self.assertIn(b"World", body)
        self.assertNotIn(b"<h1>", body)

    @defer.inlineCallbacks
    def test_malformed_mime_stored(self):
        """Broken MIME, 8-bit headers and no headers at all are still stored."""
        broken = (
            b"From: \xff\xfe <bad@@example..com>\r\nSubject: =?utf-8?B?!!!?=\r\n"
            b"Content-Type: multipart/mixed; boundary=\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n--\r\n%%%notbase64\r\n"
        )
        for raw in (broken, b"just a body line\r\n", b"Subject: only\r\n"):
            reply = yield self.smtp(raw, ["alice@test.local"])
            self.assertEqual(reply[0], 250)
        paths = self.inbox("alice")
        self.assertEqual(len(paths), 3)
        for path in paths:
            fields, _ = self.read_mail(path)
            self.assertIn("subject", fields)

    @defer.inlineCallbacks
    def test_poisoned_parts_stored(self):
        """A part whose name decodes to a lone surrogate (kept as its bytes read as
        UTF-8) and a forwarded message too deep to write back: 250, and one bundle
        with both kept."""
        deep = b"Content-Type: message/rfc822\r\n\r\n" * 400 + b"innermost\r\n"
        body = (
            b"--B\r\nContent-Type: text/plain\r\n\r\nStill here.\r\n"
            b"--B\r\nContent-Type: application/pdf\r\n"
            b"Content-Disposition: attachment; filename*=utf-7''+2AA-.pdf\r\n\r\n%PDF\r\n"
            b"--B\r\n" + deep + b"--B--\r\n"
        )
        raw = message(
            subject="Poisoned", message_id="poisoned@x", body=body.decode(),
            headers=['MIME-Version: 1.0', 'Content-Type: multipart/mixed; boundary="B"'],
        )
        with capturedLogs() as events:
            reply = yield self.smtp(raw, ["alice@test.local"])
        self.assertEqual(reply[0], 250)
        [path] = self.inbox("alice")
        fields, stored_body = self.read_mail(path)
        self.assertIn(b"Still here.", stored_body)
        self.assertEqual(
            [(a["filename"], a["content_type"]) for a in fields["attachments"]],
            [("+2AA-.pdf", "application/pdf"), ("attachment-1", "message/rfc822")],
        )
        with open(os.path.join(os.path.dirname(path), "attachment-1"), "rb") as f:
            self.assertTrue(f.read().endswith(b"innermost"))
        problems = [e["problem"] for e in events
                    if e.get("log_namespace") == "aimx.inbound" and "problem" in e]
        self.assertEqual(problems, ["part 1 kept raw (RecursionError)"])

    @defer.inlineCallbacks
    def test_hidden_text_flagged_and_logged(self):
        """Text a reader never sees is left out of the stored body, the file says
        hidden_text = true and the log gives how much was removed."""
        raw = message(
            subject="Hidden", message_id="hidden@x",
            body="Pay the invoice.\u200b\u200b\r\nThanks\u202e\r\n",
            headers=["Content-Type: text/plain; charset=utf-8"],
        )
        with capturedLogs() as events:
            reply = yield self.smtp(raw, ["alice@test.local"])
        self.assertEqual(reply[0], 250)
        [path] = self.inbox("alice")
        fields, stored_body = self.read_mail(path)
        self.assertIs(fields["hidden_text"], True)
        self.assertEqual(stored_body, b"Pay the invoice.\nThanks\n")
        hidden = [e for e in events if "hidden_chars" in e]
        self.assertEqual([e["hidden_chars"] for e in hidden], [3])
        self.assertEqual(hidden[0]["message_id"], "hidden@x")

    @defer.inlineCallbacks
    def test_empty_data_stored(self):
        """An empty DATA (and one blank line) is stored with no body: 250, not a
        451 the client would retry for ever."""

        def send(payload):
            with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as c:
                c.ehlo("x")
                c.mail("a@example.com")
                c.rcpt("alice@test.local")
                self.assertEqual(c.docmd("DATA")[0], 354)
                c.send(payload + b".\r\n")
                return c.getreply()

        for payload in (b"", b"\r\n"):
            reply = yield threads.deferToThread(send, payload)
            self.assertEqual(reply[0], 250, payload)
        paths = self.inbox("alice")
        self.assertEqual(len(paths), 2)
        for path in paths:
            fields, stored_body = self.read_mail(path)
            self.assertEqual(fields["subject"], "(no subject)")
            self.assertEqual(stored_body, b"\n")
            self.assertNotIn("attachments", fields)

    @defer.inlineCallbacks
    def test_unreadable_structure_stored(self):
        """Forwarded messages nested too deep for the parser: 250, the whole
        message stored as message.eml, its headers read."""
        raw = message(subject="Deep", message_id="deep@x",
                      headers=["Content-Type: message/rfc822"],
                      body="Content-Type: message/rfc822\r\n\r\n" * 5000 + "x\r\n")
        reply = yield self.smtp(raw, ["alice@test.local"])
        self.assertEqual(reply[0], 250)
        [path] = self.inbox("alice")
        fields, _ = self.read_mail(path)
        self.assertEqual((fields["subject"], fields["message_id"]), ("Deep", "deep@x"))
        self.assertEqual([a["filename"] for a in fields["attachments"]], ["message.eml"])
        with open(os.path.join(os.path.dirname(path), "message.eml"), "rb") as f:
            self.assertEqual(f.read(), raw)

    @defer.inlineCallbacks
    def test_many_parts_capped(self):
        """1500 attachments: 250, a bundle of 1000 files, the last remainder.eml."""
        parts = "".join(
            f'--B\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; '
            f'filename="{i}.txt"\r\n\r\n{i}\r\n' for i in range(1500)
        )
        raw = message(subject="Many", message_id="many@x", body=parts + "--B--\r\n",
                      headers=['Content-Type: multipart/mixed; boundary="B"'])
        reply = yield self.smtp(raw, ["alice@test.local"])
        self.assertEqual(reply[0], 250)
        [path] = self.inbox("alice")
        fields, _ = self.read_mail(path)
        names = [a["filename"] for a in fields["attachments"]]
        self.assertEqual(names, [f"{i}.txt" for i in range(999)] + ["remainder.eml"])
        self.assertEqual(len(os.listdir(os.path.dirname(path))), 1001)

    @defer.inlineCallbacks
    def test_big_message(self):
        """A 25 MiB message is accepted and stored; one byte more is refused 552."""
        line = b"x" * 1022 + b"\r\n"
        header = b"Subject: big\r\nMessage-ID: <big@x>\r\n\r\n"
        size = 26214400
        body = line * ((size - len(header)) // len(line))
        raw = header + body + b"y" * (size - len(header) - len(body) - 2) + b"\r\n"
        self.assertEqual(len(raw), size)
        reply = yield self.smtp(raw, ["alice@test.local"])
        self.assertEqual(reply[0], 250)
        fields, _ = self.only_mail("alice")
        self.assertEqual(fields["size_bytes"], size)

        def too_big():
            with smtplib.SMTP("127.0.0.1", self.port, timeout=60) as c:
                c.ehlo("x")
                c.mail("a@b")
                c.rcpt("alice@test.local")
                return c.data(raw[:-2] + b"zz\r\n")[0]

        self.assertEqual((yield threads.deferToThread(too_big)), 552)


class FailureTests(DaemonTestCase):
    @defer.inlineCallbacks
    def test_unwritable_data_dir(self):
        """When the store cannot write, the final reply is 451, never 5xx (case 22)."""
        self.start_daemon()
        with open(os.path.join(self.data_dir, "inbox", "alice"), "w") as f:
            f.write("not a directory")
        reply = yield self.smtp(PLAIN, ["alice@test.local"])
        self.assertEqual(reply[0], 451)

    @defer.inlineCallbacks
    def test_partial_failure(self):
        """One recipient's store fails: 451 4.3.0; the other copy stays (case 23)."""
        self.start_daemon()
        with open(os.path.join(self.data_dir, "inbox", "bob"), "w") as f:
            f.write("blocks bob's mailbox")
        reply = yield self.smtp(PLAIN, ["alice@test.local", "bob@test.local"])
        self.assertEqual(reply[0], 451)
        self.assertTrue(reply[1].startswith(b"4.3.0 Temporary failure on partial accept"))
        self.assertEqual(len(self.inbox("alice")), 1)

    async def test_each_recipient_reply(self):
        """deliver_each says who was stored: 250 for alice (and her repeat), 451 for bob."""
        self.start_daemon()
        with open(os.path.join(self.data_dir, "inbox", "bob"), "w") as f:
            f.write("blocks bob's mailbox")
        rcpts = ("alice@test.local", "bob@test.local", "ALICE@test.local")
        replies = await self.daemon.inbound.deliver_each(
            Envelope(peer_ip=None, helo=None, mail_from=None, rcpts=rcpts, raw=PLAIN))
        self.assertEqual([(rcpt, status.line()) for rcpt, status in replies], [
            ("alice@test.local", b"250 2.0.0 OK message accepted"),
            ("bob@test.local", b"451 4.3.0 Temporary failure, please retry"),
            ("ALICE@test.local", b"250 2.0.0 OK message accepted"),
        ])
        self.assertEqual(len(self.inbox("alice")), 1)


class PipeliningTests(DaemonTestCase):
    def setUp(self):
        super().setUp()
        self.start_daemon()

    @defer.inlineCallbacks
    def test_whole_session_in_one_packet(self):
        """A fully pipelined session gets every reply, in order."""
        lines = yield self.dialogue([
            b"EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<alice@test.local>\r\n"
            b"DATA\r\n" + PLAIN + b".\r\nQUIT\r\n"
        ])
        codes = [line[:3] for line in lines]
        self.assertEqual(codes, [b"220"] + [b"250"] * 6 + [b"250", b"250", b"354", b"250", b"221"])
        self.assertEqual(len(self.inbox("alice")), 1)


class ConnectionCapTests(DaemonTestCase):
    def setUp(self):
        super().setUp()
        # Every client here is 127.0.0.1: lift the per-address cap out of the way.
        self.write_config(base_config(self.data_dir, max_sessions_per_ip=100))
        self.start_daemon()

    @defer.inlineCallbacks
    def test_connection_cap(self):
        """Connection 101 gets 421 Too many connections (daemon case 16)."""

        def open_many():
            socks, banners = [], []
            try:
                for _ in range(100):
                    s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                    socks.append(s)
                    banners.append(s.recv(100)[:4])
                with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                    return banners, s.recv(100)
            finally:
                for s in socks:
                    s.close()

        banners, reply = yield threads.deferToThread(open_many)
        self.assertEqual(banners, [b"220 "] * 100)
        self.assertEqual(reply, b"421 4.3.2 Too many connections, try again later\r\n")


class PerAddressCapTests(DaemonTestCase):
    """max_sessions_per_ip = 3 over real loopback SMTP."""

    def setUp(self):
        super().setUp()
        self.write_config(base_config(self.data_dir, max_sessions_per_ip=3))
        self.start_daemon()

    def connect(self):
        """A socket and its reader, once the server's first line has arrived."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.addCleanup(s.close)
        reader = s.makefile("rb")
        self.addCleanup(reader.close)
        return s, reader, reader.readline()

    @defer.inlineCallbacks
    def test_fourth_refused_until_one_quits(self):
        """Three sessions open, the 4th gets 421 4.7.0 and EOF; after a 221 the next is served."""

        def talk():
            held = [self.connect() for _ in range(3)]
            _, fourth, refusal = self.connect()
            after_refusal = fourth.read()
            s, reader, _ = held[0]
            s.sendall(b"QUIT\r\n")
            bye = reader.readline()
            fifth, fifth_reader, banner = self.connect()
            fifth.sendall(b"EHLO x\r\nQUIT\r\n")
            return (
                [line for _, _, line in held], refusal, after_refusal, bye, banner,
                fifth_reader.read().split(b"\r\n")[-2],
            )

        held, refusal, after_refusal, bye, banner, last = yield threads.deferToThread(talk)
        self.assertEqual(held, [b"220 test.local ESMTP aimx\r\n"] * 3)
        self.assertEqual(
            refusal, b"421 4.7.0 Too many connections from your address, try again later\r\n"
        )
        self.assertEqual(after_refusal, b"")
        self.assertEqual(bye, b"221 2.0.0 Bye\r\n")
        self.assertEqual(banner, b"220 test.local ESMTP aimx\r\n")
        self.assertEqual(last, b"221 2.0.0 Bye")

    @defer.inlineCallbacks
    def test_back_to_back_sessions_never_refused(self):
        """A client holding all 3 slots and cycling QUIT-then-reconnect is always served."""

        def talk():
            held = [self.connect() for _ in range(3)]
            firsts = [line for _, _, line in held]
            for i in range(30):
                s, reader, _ = held[i % 3]
                s.sendall(b"QUIT\r\n")
                if reader.readline() != b"221 2.0.0 Bye\r\n":
                    return firsts, i
                held[i % 3] = self.connect()
                firsts.append(held[i % 3][2])
            return firsts, None

        firsts, broken = yield threads.deferToThread(talk)
        self.assertIsNone(broken)
        self.assertEqual(firsts, [b"220 test.local ESMTP aimx\r\n"] * 33)


class StartTlsTests(DaemonTestCase):
    def setUp(self):
        super().setUp()
        cert = os.path.join(self.config_dir, "cert.pem")
        key = os.path.join(self.config_dir, "key.pem")
        keys.generate_self_signed(cert, key, "localhost")
        self.start_daemon(self.options("--tls-cert", cert, "--tls-key", key))

    def context(self):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context

    @defer.inlineCallbacks
    def test_starttls_transaction(self):
        """STARTTLS, then a full transaction; post-TLS EHLO has no STARTTLS (case 20)."""

        def send():
            with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as c:
                code, text = c.ehlo("x")
                assert b"STARTTLS" in text, text
                self.assertEqual(c.starttls(context=self.context())[0], 220)
                code, text = c.ehlo("x")
                assert b"STARTTLS" not in text, text
                c.mail("a@example.com")
                c.rcpt("alice@test.local")
                reply = c.data(PLAIN)
                return reply, c.quit()

        (data_reply, quit_reply) = yield threads.deferToThread(send)
        self.assertEqual(data_reply[0], 250)
        self.assertEqual(quit_reply[0], 221)
        self.assertEqual(len(self.inbox("alice")), 1)

    @defer.inlineCallbacks
    def test_pipelined_plaintext_discarded(self):
        """Commands pipelined after STARTTLS get no reply and are not run (case 21)."""

        def talk():
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                f = s.makefile("rb")
                f.readline()
                s.sendall(b"EHLO x\r\n")
                while not f.readline().startswith(b"250 "):
                    pass
                s.sendall(b"STARTTLS\r\nMAIL FROM:<evil@x>\r\nNOOP\r\n")
                ready = f.readline()
                tls = self.context().wrap_socket(s)
                tls.sendall(b"MAIL FROM:<a@b>\r\nQUIT\r\n")
                out = b""
                while True:
                    data = tls.recv(4096)
                    if not data:
                        break
                    out += data
                return ready, out

        ready, out = yield threads.deferToThread(talk)
        self.assertEqual(ready, b"220 2.0.0 Ready to start TLS\r\n")
        # The session was reset: MAIL now needs a fresh EHLO; nothing else answered.
        self.assertEqual(out, b"503 5.5.1 Send EHLO/HELO first\r\n221 2.0.0 Bye\r\n")


class AuthenticationTests(DaemonTestCase):
    """DKIM/SPF/DMARC and trust end to end, DNS from the loopback fixture."""

    def setUp(self):
        super().setUp()
        self.write_config(base_config(self.data_dir, trust="verified",
                                      trusted_senders=["*@company.com"]))
        self.start_daemon()
        self.dns.add_txt("company.com", "v=spf1 ip4:127.0.0.1 -all")
        self.dns.add_txt("_dmarc.company.com", "v=DMARC1; p=reject")

    @defer.inlineCallbacks
    def test_signed_and_aligned(self):
        """A DKIM-signed, SPF-passing, aligned message is stored as trusted."""
        private = self.publish_dkim("company.com")
        raw = self.sign(message(sender="Boss <boss@company.com>"), private, "company.com")
        yield self.smtp(raw, ["alice@test.local"], mail_from="boss@company.com")
        fields, _ = self.only_mail("alice")
        self.assertEqual(
            (fields["dkim"], fields["spf"], fields["dmarc"], fields["trusted"]),
            ("pass", "pass", "pass", "true"),
        )

    @defer.inlineCallbacks
    def test_forged_from(self):
        """A message forged as the allow-listed sender, unsigned, is not trusted."""
        self.dns.add_txt("evil.example", "v=spf1 ip4:127.0.0.1 -all")
        raw = message(sender="Boss <boss@company.com>")
        yield self.smtp(raw, ["alice@test.local"], mail_from="x@evil.example")
        fields, _ = self.only_mail("alice")
        self.assertEqual(
            (fields["dkim"], fields["spf"], fields["dmarc"], fields["trusted"]),
            ("none", "pass", "fail", "false"),
        )

    @defer.inlineCallbacks
    def test_signed_by_unaligned_domain(self):
        """DKIM passing for attacker.org with From boss@company.com is not trusted."""
        private = self.publish_dkim("attacker.org")
        raw = self.sign(message(sender="boss@company.com"), private, "attacker.org")
        yield self.smtp(raw, ["alice@test.local"], mail_from="x@attacker.org")
        fields, _ = self.only_mail("alice")
        self.assertEqual((fields["dkim"], fields["trusted"]), ("pass", "false"))

    @defer.inlineCallbacks
    def test_tampered_body(self):
        """One changed body byte after signing makes dkim fail."""
        private = self.publish_dkim("company.com")
        raw = self.sign(message(sender="boss@company.com", body="Pay 10\r\n"), private, "company.com")
        yield self.smtp(raw.replace(b"Pay 10", b"Pay 90"), ["alice@test.local"])
        fields, _ = self.only_mail("alice")
        self.assertEqual((fields["dkim"], fields["trusted"]), ("fail", "false"))

    @defer.inlineCallbacks
    def test_null_sender_uses_helo(self):
        """MAIL FROM:<> checks SPF for the HELO name (aimx decision)."""
        self.dns.add_txt("mail.company.com", "v=spf1 ip4:127.0.0.1 -all")
        raw = message(sender="boss@company.com")
        yield self.smtp(raw, ["alice@test.local"], mail_from="", helo="mail.company.com")
        fields, _ = self.only_mail("alice")
        self.assertEqual(fields["spf"], "pass")


class ConcurrencyTests(DaemonTestCase):
    def setUp(self):
        super().setUp()
        self.start_daemon()

    @defer.inlineCallbacks
    def test_eight_concurrent_bundles(self):
        """Eight concurrent same-subject messages with attachments: 8 intact bundles (case 36)."""
        raws = [multipart_message(
            part(f"message {i}", "text/plain"),
            part(f"payload-{i}", "application/octet-stream",
                 headers=['Content-Disposition: attachment; filename="data.bin"']),
            subject="Same", message_id=f"c{i}@x",
        ) for i in range(8)]
        replies = yield defer.gatherResults([self.smtp(r, ["alice@test.local"]) for r in raws])
        self.assertEqual([r[0] for r in replies], [250] * 8)
        paths = self.inbox("alice")
        self.assertEqual(len(paths), 8)
        payloads = set()
        for path in paths:
            with open(os.path.join(os.path.dirname(path), "data.bin"), "rb") as f:
                payloads.add(f.read())
        self.assertEqual(payloads, {f"payload-{i}".encode() for i in range(8)})

    @defer.inlineCallbacks
    def test_eight_bit_dkim(self):
        """8-bit mail is kept as raw bytes, so its DKIM signature verifies (aimx decision)."""
        private = self.publish_dkim("example.com")
        raw = (
            "From: José <jose@example.com>\r\nTo: alice@test.local\r\nSubject: Café\r\n"
            "Message-ID: <8bit@example.com>\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\nNaïve résumé — ok\r\n"
        ).encode("utf-8")
        yield self.smtp(self.sign(raw, private, "example.com"), ["alice@test.local"])
        fields, body = self.only_mail("alice")
        self.assertEqual(fields["dkim"], "pass")
        self.assertEqual(fields["subject"], "Café")
        self.assertIn("Naïve résumé".encode(), body)


class LogInjectionTests(DaemonTestCase):
    """Values from the network never forge or garble a log line (control characters
    in a HELO name, a recipient, a From display name or a hook's output)."""

    def setUp(self):
        super().setUp()
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import globalLogPublisher

        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.start_daemon()

    def lines(self) -> list[str]:
        from aimx.logs import event_line

        return [event_line(e, journal=True) for e in self.events
                if str(e.get("log_namespace", "")).startswith("aimx")]

    @defer.inlineCallbacks
    def test_controls_escaped(self):
        """ESC, CR and NUL sent by a client appear escaped, every event on one line."""
        yield self.dialogue([
            b"EHLO evil\x1b[2J\x00host\r\n",
            b"MAIL FROM:<a@example.com>\r\n",
            b"RCPT TO:<x\x1b]0;pwned\x07@other.example>\r\n",
            b"RCPT TO:<alice@test.local>\r\n",
            b"DATA\r\n",
            b"From: =?utf-8?q?Boss=0D=0A[aimx]_stored_email?= <b@example.com>\r\n"
            b"Subject: s\r\n\r\nbody\r\n.\r\n",
            b"QUIT\r\n",
        ])
        text = "\n".join(self.lines())
        self.assertIn("evil\\x1b[2J\\x00host", text)
        self.assertIn("x\\x1b]0;pwned\\x07@other.example", text)
        for line in self.lines():
            self.assertNotIn("\x1b", line)
            self.assertNotIn("\x00", line)
            self.assertNotIn("\r", line)
        self.assertEqual(len(self.inbox("alice")), 1)
