"""Approving held mail by mail on a real daemon (docs/guardrails.md, "Approving by mail").

The daemon runs in-process with C{[approval] notify = "ops@owner.example"}; the fixture
DNS serves owner.example's DKIM key, SPF and DMARC records and MX, and customer.example's
MX, both at a loopback sink.  Notifications are read off the sink; replies come over
SMTP to postmaster@, signed (or not) with owner.example's key as its mail server would.
"""

import email
import email.policy
import os
import re
import smtplib

from twisted.internet import reactor
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher

from aimx.control import client, commands
from aimx.logs import event_line
from aimx.loopback.smtpsink import SmtpSink, listen_all
from aimx.ops import logline
from aimx.store import keys
from aimx.testing import fakes
from tests.integration.base import DOMAIN, DaemonTestCase, base_config
from tests.integration.test_send import stock_dkim, submission

NOTIFY = "ops@owner.example"
SUPPORT = f"support@{DOMAIN}"
POSTMASTER = f"postmaster@{DOMAIN}"
CUSTOMER = "new@customer.example"
_TOKEN = re.compile(r"\[aimx hold (\S+) [0-9a-f]{32}\]")


class ApprovalMailTestCase(DaemonTestCase):
    """support holds everything; holds are announced to ops@owner.example."""

    def setUp(self):
        super().setUp()
        self.write_config(base_config(
            self.data_dir, catchall=self.catchall,
            mailboxes={"support": {"outbound": {"approval": "always"}}},
            approval={"notify": NOTIFY}))
        self.sink = SmtpSink(reactor)
        self.addCleanup(self.sink.stop)
        for domain in ("owner.example", "customer.example"):
            self.dns.add_mx(domain, 10, f"mx.{domain}")
            self.dns.add_a(f"mx.{domain}", "127.0.0.2")
        self.environ["AIMX_SMTP_OUT_PORT"] = str(listen_all({"127.0.0.2": self.sink}))
        # owner.example's mail server signs; its SPF also lets 127.0.0.1 send for it.
        self.owner_key = self.publish_dkim("owner.example")
        self.dns.add_txt("owner.example", "v=spf1 ip4:127.0.0.1 -all")
        self.dns.add_txt("_dmarc.owner.example", "v=DMARC1; p=reject")
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.start_daemon()

    async def hold(self) -> str:
        """support's SEND to a customer, held; fires once it is announced."""
        conn = await client.connect(reactor, os.path.join(self.runtime_dir, "aimx.sock"))
        try:
            answer = await conn.call(commands.Send, message=submission(
                "Our offer, as discussed.", sender=SUPPORT, to=CUSTOMER, subject="Offer"))
        finally:
            conn.close()
        await self.daemon.approvals.idle()
        return answer["held"]

    def notices(self) -> list[email.message.EmailMessage]:
        return [email.message_from_bytes(t.data, policy=email.policy.default)
                for t in self.sink.transactions if t.rcpts == [NOTIFY]]

    def notice(self, hold_id: str) -> email.message.EmailMessage:
        [found] = [n for n in self.notices() if f"[aimx hold {hold_id} " in n["Subject"]]
        return found

    async def reply(self, notice, first_line: str, *, sender=NOTIFY, sign=True,
                    subject=None, expect=250) -> None:
        """A reply to C{notice} (quoting it, as mail apps do) over SMTP to postmaster@,
        answered C{expect}; fires once the daemon has acted on it."""
        quoted = "".join(f"> {line}\r\n" for line in notice.get_content().splitlines())
        raw = fakes.message(
            f"{first_line}\r\n\r\nOn Sun, 1 Mar 2026, aimx <{POSTMASTER}> wrote:\r\n{quoted}",
            sender=sender, to=POSTMASTER, subject=subject or f"Re: {notice['Subject']}",
            message_id=f"r{len(self.sink.transactions)}.{sender}",
            headers=[f"In-Reply-To: {notice['Message-ID']}"])
        if sign:
            raw = self.sign(raw, self.owner_key, "owner.example")
        try:
            code, _ = await self.smtp(raw, [POSTMASTER], mail_from=sender)
        except smtplib.SMTPDataError as e:
            code = e.smtp_code
        self.assertEqual(code, expect)
        await self.daemon.approvals.idle()

    def pending(self) -> list[str]:
        directory = os.path.join(self.data_dir, "held", "support")
        return sorted(n[:-3] for n in os.listdir(directory) if n.endswith(".md"))

    def delivered(self) -> list[bytes]:
        return [t.data for t in self.sink.transactions if t.rcpts == [CUSTOMER]]

    def logged(self) -> str:
        return "\n".join(event_line(e, journal=True) for e in self.events)

    def lines(self, message: str) -> list[logline.Line]:
        """The logged events saying C{message}, read back from their lines."""
        lines = [logline.read(event_line(e, journal=True)) for e in self.events]
        return [line for line in lines if line.message == message]

    def ignored(self) -> list[tuple[str, str, str]]:
        """C{(sender, hold_id, problem)} of each reply ignored."""
        return [(line.fields["sender"], line.fields["hold_id"], line.fields["problem"])
                for line in self.lines("mail reply ignored")]


class ApproveByMailTests(ApprovalMailTestCase):
    async def test_notified_signed_then_approved(self):
        """The hold is announced from postmaster@, DKIM-signed by our domain, with the
        draft; a signed "approve" from notify delivers it as a normal send (sent copy),
        and nothing is stored in any mailbox; the same reply again does nothing."""
        hold_id = await self.hold()
        self.assertEqual(self.delivered(), [])
        [transaction] = self.sink.transactions
        self.assertEqual((transaction.mail_from, transaction.rcpts), (POSTMASTER, [NOTIFY]))
        notice = self.notice(hold_id)
        self.assertEqual(notice["From"], f"aimx <{POSTMASTER}>")
        self.assertEqual(_TOKEN.match(notice["Subject"]).group(1), hold_id)
        self.assertTrue(notice["Subject"].endswith("] Offer"))
        self.assertIn("| Our offer, as discussed.", notice.get_content())
        self.assertIn(f"To:      {CUSTOMER}", notice.get_content())
        with open(keys.dkim_paths(self.config_dir)[1], "rb") as f:
            txt = keys.dkim_txt_value(f.read())
        verdict, signed = stock_dkim(transaction.data, txt)
        self.assertEqual(verdict, "pass")
        self.assertIn("subject", signed)
        self.assertIn(f"d={DOMAIN}".encode(), transaction.data.split(b"\r\n\r\n")[0])

        await self.reply(notice, "Approve")
        [sent] = self.delivered()
        self.assertIn(b"Our offer, as discussed.", sent)
        self.assertEqual(self.pending(), [])
        [copy] = os.listdir(os.path.join(self.data_dir, "sent", "support"))
        self.assertTrue(copy.endswith(".md"))
        self.assertEqual(self.inbox("catchall"), [])
        [line] = self.lines("settled")
        self.assertEqual(
            {k: line.fields[k] for k in ("state", "hold_id", "mailbox", "by")},
            {"state": "approved", "hold_id": hold_id, "mailbox": "support",
             "by": f"mail from {NOTIFY}"})

        await self.reply(notice, "Approve")
        self.assertEqual(len(self.delivered()), 1)
        self.assertIn("no such hold is pending", [p for _, _, p in self.ignored()])

    async def test_reject(self):
        """A signed "reject: reason" moves the hold to rejected/, by mail from notify."""
        hold_id = await self.hold()
        await self.reply(self.notice(hold_id), "reject: not a customer of ours")
        self.assertEqual((self.pending(), self.delivered()), ([], []))
        fields, _ = self.read_mail(os.path.join(self.data_dir, "held", "support", "rejected",
                                                hold_id + ".md"))
        self.assertEqual((fields["state"], fields["decided_by"], fields["decision_reason"]),
                         ("rejected", f"mail from {NOTIFY}", "not a customer of ours"))

    async def test_ignored(self):
        """Decide nothing: a forged unsigned reply from notify (SPF and DMARC pass, DKIM
        absent), a signed reply from another address of the domain, a signed reply with
        a wrong token, and one whose first line is not a decision.  Each is logged;
        the hold still waits and the right reply then approves it."""
        hold_id = await self.hold()
        notice = self.notice(hold_id)
        await self.reply(notice, "approve", sign=False)
        await self.reply(notice, "approve", sender="eve@owner.example")
        wrong = re.sub(r"[0-9a-f]{32}\]", "0" * 32 + "]", notice["Subject"])
        await self.reply(notice, "approve", subject=f"Re: {wrong}")
        await self.reply(notice, "Yes, approve")
        self.assertEqual((self.pending(), self.delivered()), ([hold_id], []))
        self.assertEqual(self.inbox("catchall"), [])
        logged = self.logged()
        self.assertEqual([(sender, problem) for sender, _, problem in self.ignored()], [
            (NOTIFY, f"not authenticated as {NOTIFY}: no valid DKIM signature"),
            ("eve@owner.example", f"from eve@owner.example, not {NOTIFY}"),
            (NOTIFY, "the token is not the hold's (wrong, spent or renewed)"),
            (NOTIFY, "its first line is neither approve nor reject"),
        ])
        self.assertIn("spf=pass dmarc=pass", logged)  # SPF-aligned, and still not enough
        await self.reply(notice, "approve")
        self.assertEqual(len(self.delivered()), 1)

    async def test_dns_failure_asks_for_a_retry(self):
        """When the notify domain's key cannot be looked up for now, a reply is answered
        451 4.4.3 (its server retries) and decides nothing yet."""
        hold_id = await self.hold()
        self.dns.add_servfail("sel._domainkey.owner.example")
        await self.reply(self.notice(hold_id), "approve", expect=451)
        self.assertEqual((self.pending(), self.delivered()), ([hold_id], []))

    async def test_postmaster_keeps_other_mail(self):
        """Mail to postmaster@ without a token still goes where it routes (the catchall)."""
        code, _ = await self.smtp(fakes.message(sender="someone@example.org", to=POSTMASTER,
                                                subject="Abuse report"), [POSTMASTER])
        self.assertEqual(code, 250)
        [path] = self.inbox("catchall")
        self.assertEqual(self.read_mail(path)[0]["subject"], "Abuse report")


class NoCatchallTests(ApprovalMailTestCase):
    catchall = False

    async def test_postmaster_accepted(self):
        """Without a postmaster mailbox or a catchall, RCPT postmaster@ is accepted (other
        unknown addresses are not); mail without a token is logged and stored nowhere."""
        lines = await self.dialogue([
            b"EHLO client.example\r\n", b"MAIL FROM:<a@example.org>\r\n",
            f"RCPT TO:<{POSTMASTER}>\r\n".encode(), f"RCPT TO:<nobody@{DOMAIN}>\r\n".encode(),
            b"QUIT\r\n"])
        self.assertTrue(lines[-3].startswith(b"250"), lines)
        self.assertTrue(lines[-2].startswith(b"550 5.1.1"), lines)
        code, _ = await self.smtp(fakes.message(sender="a@example.org", to=POSTMASTER),
                                  [POSTMASTER], mail_from="a@example.org")
        self.assertEqual(code, 250)
        await self.daemon.approvals.idle()
        self.assertEqual(self.inbox("support"), [])
        [line] = self.lines("mail reply ignored")
        self.assertEqual(
            {k: line.fields[k] for k in ("sender", "hold_id", "message_id", "problem")},
            {"sender": "a@example.org", "hold_id": "?", "message_id": "m1@example.com",
             "problem": "from a@example.org, not ops@owner.example"})
