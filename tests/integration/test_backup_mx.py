"""A stock Postfix as aimx's backup MX (contrib/postfix-backup-mx, docs/backup-mx.md).

A private Postfix instance (L{tests.integration.postfix}) built from the shipped
fragment and maps queues mail for aimx's domain while aimx is down and relays it, over
required TLS, once aimx is up.  The sender signs with DKIM and publishes SPF for the
address it sends from (127.0.0.2); the backup relays from 127.0.0.3, so aimx sees the
relay as the peer.  Needs root and Debian's postfix package (.ci/run installs it);
skipped otherwise.
"""

import os
import smtplib
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from twisted.internet import reactor, task, threads
from twisted.logger import Logger

from aimx.store import keys
from aimx.testing.fakes import message
from tests.integration import postfix
from tests.integration.base import DOMAIN, DaemonTestCase, base_config, reserve_port

log = Logger()

SENDER = "boss@company.com"
CLIENT_IP = "127.0.0.2"  # the sender's own MTA
RELAY_IP = "127.0.0.3"  # the backup MX, as aimx sees it
COUNT = 20
#: Seconds any one wait below may take.
DEADLINE = 30


async def until(done, what: str):
    """Call C{done()} (blocking, so in a thread) every 20 ms until it is true.

    @raise AssertionError: not within L{DEADLINE} seconds.
    """
    deadline = reactor.seconds() + DEADLINE
    while not await threads.deferToThread(done):
        if reactor.seconds() > deadline:
            raise AssertionError(f"not {what} within {DEADLINE} s")
        await task.deferLater(reactor, 0.02, lambda: None)


class BackupMxTests(DaemonTestCase):
    skip = postfix.unavailable()

    def setUp(self):
        super().setUp()
        self.write_config(base_config(self.data_dir, trust="verified",
                                      trusted_senders=[f"*@{SENDER.split('@')[1]}"]))
        self.private = self.publish_dkim("company.com")
        self.dns.add_txt("company.com", f"v=spf1 ip4:{CLIENT_IP} -all")
        self.dns.add_txt("_dmarc.company.com", "v=DMARC1; p=reject")
        # aimx's port: held, so connecting is refused until aimx listens on it.
        self.aimx_port = reserve_port(self)
        self.backup = postfix.PrivatePostfix(
            listen_port=reserve_port(self), domain=DOMAIN,
            next_hop=f"[127.0.0.1]:{self.aimx_port}", bind_address=RELAY_IP)
        self.addCleanup(self.backup.remove)
        self.backup.write()

    async def start_backup(self):
        await threads.deferToThread(self.backup.start)
        self.addCleanup(threads.deferToThread, self.backup.stop)

    def start_aimx(self, *tls: str):
        self.start_daemon(self.options("--bind", f"127.0.0.1:{self.aimx_port}", *tls))

    def tls_options(self) -> tuple[str, ...]:
        """aimx's STARTTLS options, a self-signed certificate as C{aimx setup} makes."""
        cert = os.path.join(self.config_dir, "cert.pem")
        key = os.path.join(self.config_dir, "key.pem")
        keys.generate_self_signed(cert, key, DOMAIN)
        return "--tls-cert", cert, "--tls-key", key

    def fingerprint(self) -> str:
        """The SHA-256 fingerprint of aimx's certificate, as C{openssl x509
        -fingerprint -sha256} prints it (after the C{=})."""
        with open(os.path.join(self.config_dir, "cert.pem"), "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        return cert.fingerprint(hashes.SHA256()).hex(":").upper()

    def send_to_backup(self, count: int):
        """C{count} DKIM-signed messages, one SMTP session from L{CLIENT_IP}."""
        raws = [self.sign(message(sender=f"Boss <{SENDER}>", subject=f"Report {i}",
                                  message_id=f"report-{i}@company.com",
                                  date="Thu, 01 Jan 2025 12:00:00 +0000",
                                  body=f"Figures for part {i}.\r\n"),
                          self.private, "company.com")
                for i in range(count)]

        def send():
            with smtplib.SMTP("127.0.0.1", self.backup.listen_port, timeout=30,
                              local_hostname="mail.company.com",
                              source_address=(CLIENT_IP, 0)) as client:
                return [client.sendmail(SENDER, [f"alice@{DOMAIN}"], raw) for raw in raws]

        return threads.deferToThread(send)

    def deferred(self, count: int) -> bool:
        """Whether C{count} messages wait in the deferred queue, each tried once."""
        queue = self.backup.queue()
        return len(queue) == count and all(entry["queue_name"] == "deferred"
                                           for entry in queue)

    async def test_queued_while_down_then_relayed(self):
        """aimx down: 20 signed messages sent to the backup wait in its queue; aimx
        up and one queue run: all 20 are stored, trusted on their original DKIM
        signatures, relayed over TLS from the backup's address (SPF of the sender's
        domain then fails for that address; DMARC passes on DKIM)."""
        await self.start_backup()
        started = time.monotonic()
        refused = await self.send_to_backup(COUNT)
        self.assertEqual(refused, [{}] * COUNT)
        await until(lambda: self.deferred(COUNT), f"{COUNT} messages deferred")
        queued = time.monotonic() - started
        self.assertEqual(self.inbox("alice"), [])
        reasons = {entry["recipients"][0]["delay_reason"] for entry in self.backup.queue()}
        self.assertTrue(all("Connection refused" in reason for reason in reasons), reasons)

        self.start_aimx(*self.tls_options())
        flushed = time.monotonic()
        await threads.deferToThread(self.backup.flush)
        await until(lambda: len(self.inbox("alice")) == COUNT, f"{COUNT} messages stored")
        stored = time.monotonic() - flushed
        log.info("backup MX: {count} messages queued in {queued:.2f} s; "
                 "queue run to all stored {stored:.2f} s",
                 count=COUNT, queued=queued, stored=stored)

        mails = [self.read_mail(path)[0] for path in self.inbox("alice")]
        self.assertEqual(sorted(fields["subject"] for fields in mails),
                         sorted(f"Report {i}" for i in range(COUNT)))
        for fields in mails:
            self.assertEqual(
                (fields["dkim"], fields["spf"], fields["dmarc"], fields["trusted"],
                 fields["received_from_ip"]),
                ("pass", "fail", "pass", "true", RELAY_IP), fields["subject"])
        await until(lambda: self.backup.queue() == [], "the backup queue empty")
        self.assertIn(f"TLS connection established to 127.0.0.1[127.0.0.1]:{self.aimx_port}",
                      self.backup.read_log())

    async def test_tls_required(self):
        """aimx up without STARTTLS: the backup keeps the message queued, naming TLS
        as the reason, and aimx stores nothing (the shipped policy map applies to
        that next hop)."""
        self.start_aimx()
        await self.start_backup()
        self.assertEqual(await self.send_to_backup(1), [{}])
        await until(lambda: self.deferred(1), "the message deferred")
        [entry] = self.backup.queue()
        self.assertIn("TLS is required, but was not offered",
                      entry["recipients"][0]["delay_reason"])
        self.assertEqual(self.inbox("alice"), [])

    async def test_pinned_certificate(self):
        """The fingerprint policy of the operator doc pins aimx's self-signed
        certificate: with another fingerprint the message stays queued; with aimx's,
        after a reload and a queue run, it is stored."""
        self.start_aimx(*self.tls_options())
        self.backup.set_tls_policy("fingerprint match=" + ":".join(["AB"] * 32))
        await self.start_backup()
        self.assertEqual(await self.send_to_backup(1), [{}])
        await until(lambda: self.deferred(1), "the message deferred")
        [entry] = self.backup.queue()
        self.assertIn("Server certificate not verified", entry["recipients"][0]["delay_reason"])
        self.assertEqual(self.inbox("alice"), [])

        self.backup.set_tls_policy("fingerprint match=" + self.fingerprint())
        await threads.deferToThread(self.backup.reload)
        await threads.deferToThread(self.backup.flush)
        await until(lambda: len(self.inbox("alice")) == 1, "the message stored")
        fields, _ = self.only_mail("alice")
        self.assertEqual((fields["dkim"], fields["trusted"]), ("pass", "true"))
