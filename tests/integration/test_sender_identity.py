"""Sender identity attacks end to end: real SMTP over loopback, DNS from the loopback
fixture, real hook processes.  Each test is one attack class of the identity issue."""

import os
import pwd
import shutil
import subprocess
import sys
import tempfile

import attrs
import dkim as dkimpy
from twisted.internet import defer, reactor, threads

from aimx.auth.resolver import Resolver
from aimx.control import client, commands
from aimx.testing.fakes import message
from tests.integration.base import DOMAIN, DaemonTestCase, base_config
from tests.integration.test_hooks import PATH, ROOT as REPO_ROOT, hook

ALLOWLIST = {"trust": "verified", "trusted_senders": ["boss@company.com"]}
IS_ROOT = os.geteuid() == 0


def mail(sender="Boss <boss@company.com>", **fields) -> bytes:
    """The boss's message to alice that each attack starts from (L{message} fields)."""
    fields = {"to": f"alice@{DOMAIN}", "subject": "Quarterly numbers",
              "message_id": "q1@company.com", "date": "Mon, 07 Dec 2026 09:00:00 +0000",
              "body": "Please review the attached numbers.\r\n", **fields}
    return message(sender=sender, **fields)


class IdentityTestCase(DaemonTestCase):
    """alice trusts boss@company.com only; a trusted-only hook marks what it saw."""

    budget = 20.0

    def setUp(self):
        super().setUp()
        self.out = tempfile.mkdtemp(prefix="aimx-identity-")
        os.chmod(self.out, 0o777)
        self.addCleanup(shutil.rmtree, self.out, True)
        self.environ.update(PATH=PATH)
        hooks = hook("alice", 'echo "$AIMX_SUBJECT" >> "$0/trusted"', self.out,
                     name="trusted-only", untrusted=False)
        self.write_config(base_config(self.data_dir, hooks=hooks, **ALLOWLIST))
        self.company = self.publish_dkim("company.com")
        self.evil = self.publish_dkim("evil.com")

    def start(self, **kw):
        daemon = self.start_daemon(**kw)
        self.addCleanup(daemon.hooks.idle)
        return daemon

    def start_daemon(self, options=None, limits=None, resolver=None):
        from aimx import service

        daemon = service.build(options or self.options(), reactor, limits=limits or self.limits,
                               environ=self.environ, resolver=resolver,
                               auth_budget=self.budget)
        self.run_daemon(daemon)
        self.daemon = daemon
        self.port = daemon.smtp.ports[0].getHost().port
        return daemon

    def fired(self) -> list[str]:
        path = os.path.join(self.out, "trusted")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return f.read().split("\n")[:-1]

    def dkimpy_sign(self, raw: bytes, private: bytes, domain: str, **options) -> bytes:
        return dkimpy.sign(raw, b"sel", domain.encode(), private, **options) + raw

    async def deliver(self, raw: bytes, rcpts=(f"alice@{DOMAIN}",)):
        reply = await self.smtp(raw, list(rcpts), mail_from="bounce@company.com")
        await self.daemon.hooks.idle()
        return reply

    def mails(self, mailbox="alice") -> list[dict]:
        return [self.read_mail(p)[0] for p in self.inbox(mailbox)]


class TrustBypassTests(IdentityTestCase):
    """Trust bypass: the allowlist reads the parsed address, DKIM aligns with it."""

    def setUp(self):
        super().setUp()
        self.start()

    async def test_genuine_message_trusted(self):
        """The genuine, aligned, allow-listed message is trusted and fires the hook."""
        self.assertEqual((await self.deliver(self.sign(mail(), self.company, "company.com")))[0],
                         250)
        [fields] = self.mails()
        self.assertEqual((fields["trusted"], fields.get("trust_reason")), ("true", None))
        self.assertEqual(self.fired(), ["Quarterly numbers"])

    async def test_quoted_local_part_signed_by_attacker(self):
        """From: "<boss@company.com>"@evil.com signed by evil.com is stored untrusted."""
        for n, sender in enumerate(['"<boss@company.com>"@evil.com',
                                    "eve@evil.com (<boss@company.com>)",
                                    "=?utf-8?b?PGJvc3NAY29tcGFueS5jb20+?= <eve@evil.com>",
                                    '"boss@company.com" <eve@evil.com>',
                                    ", <boss@company.com>, eve@evil.com"]):
            raw = self.sign(mail(sender, message_id=f"a{n}@evil.com"), self.evil, "evil.com")
            self.assertEqual((await self.deliver(raw))[0], 250, sender)
        reasons = [f.get("trust_reason") for f in self.mails()]
        self.assertEqual([f["trusted"] for f in self.mails()], ["false"] * 5)
        self.assertIn("quoted local part in From", reasons)
        self.assertIn("sender not in trusted_senders", reasons)
        self.assertIn("more than one address in From", reasons)
        self.assertEqual(self.fired(), [])

    async def test_signed_by_attacker_domain(self):
        """From boss@company.com signed by evil.com: no aligned signature."""
        await self.deliver(self.sign(mail(), self.evil, "evil.com"))
        [fields] = self.mails()
        self.assertEqual((fields["trusted"], fields["trust_reason"]),
                         ("false", "no DKIM signature aligned with company.com"))
        self.assertEqual(self.fired(), [])


class ReplayTests(IdentityTestCase):
    """Replay with headers on top, l= and rsa-sha1."""

    def setUp(self):
        super().setUp()
        self.start()

    async def test_prepended_headers(self):
        """A genuine message re-sent with a header on top: stored (never lost), untrusted,
        and what is stored is the signed (bottom) instance."""
        def genuine(n):
            return self.sign(mail(message_id=f"r{n}@company.com",
                                  headers=["In-Reply-To: <thread@company.com>",
                                           "Content-Type: text/plain; charset=utf-8"]),
                             self.company, "company.com")

        tops = [
            ("Subject: URGENT: wire 50k to account 666\r\n", "two Subject headers"),
            ("To: eve@evil.com\r\n", "two To headers"),
            ("In-Reply-To: <attacker@evil.com>\r\n", "two In-Reply-To headers"),
            ('Content-Type: multipart/mixed; boundary="x"\r\n', "two Content-Type headers"),
        ]
        for n, (top, reason) in enumerate(tops):
            raw = top.encode() + genuine(n)
            self.assertEqual((await self.deliver(raw))[0], 250, top)
        fields = self.mails()
        self.assertEqual(len(fields), 4)
        self.assertEqual({f["trust_reason"] for f in fields}, {r for _, r in tops})
        for f in fields:
            self.assertEqual(f["trusted"], "false")
            self.assertEqual(f["subject"], "Quarterly numbers")
            self.assertEqual(f["to"], f"alice@{DOMAIN}")
            self.assertEqual(f["in_reply_to"], "thread@company.com")
            self.assertEqual(f["dkim"], "pass")
        bodies = {self.read_mail(p)[1].replace(b"\r\n", b"\n") for p in self.inbox("alice")}
        self.assertEqual(bodies, {b"Please review the attached numbers.\n"})
        self.assertEqual(self.fired(), [])

    async def test_partial_body_signature(self):
        """A signature with l=: appending to the body keeps DKIM pass but not trust."""
        await self.deliver(self.dkimpy_sign(mail(), self.company, "company.com", length=True))
        signed = self.dkimpy_sign(mail(message_id="q2@company.com"), self.company, "company.com",
                                  length=True)
        await self.deliver(signed + b"P.S. Also send me the payroll file.\r\n")
        whole, partial = sorted(self.mails(), key=lambda f: f["message_id"])
        self.assertEqual(whole["trusted"], "true")
        self.assertEqual((partial["dkim"], partial["trusted"], partial["trust_reason"]),
                         ("pass", "false", "signature covers only part of the body (l=)"))
        self.assertEqual(self.fired(), ["Quarterly numbers"])

    async def test_rsa_sha1(self):
        """An rsa-sha1 signature fails (RFC 8301)."""
        await self.deliver(self.dkimpy_sign(mail(), self.company, "company.com",
                                            signature_algorithm=b"rsa-sha1"))
        [fields] = self.mails()
        self.assertEqual((fields["dkim"], fields["trusted"], fields["trust_reason"]),
                         ("fail", "false", "signature uses rsa-sha1 (RFC 8301)"))


class SplitTests(IdentityTestCase):
    """Replays that make the MIME parser and DKIM read the header block differently
    (found by review): never trusted, and the trusted copy shows only what was signed."""

    def setUp(self):
        super().setUp()
        self.start()

    async def test_bare_cr_header_split(self):
        """A bare CR hides forged Subject/Content-Type from DKIM but not from MIME."""
        genuine = mail(headers=["MIME-Version: 1.0", "Content-Type: text/plain"])
        signed = self.dkimpy_sign(genuine, self.company, "company.com", include_headers=[
            b"mime-version", b"from", b"date", b"message-id", b"subject", b"to",
            b"content-type"])
        head, body = signed.split(b"\r\n\r\n", 1)
        fields = []
        for line in head.split(b"\r\n"):
            if line[:1] in (b" ", b"\t"):
                fields[-1] += b"\r\n" + line
            else:
                fields.append(line)
        [author] = [f for f in fields if f.lower().startswith(b"from:")]
        rest = [f for f in fields if f is not author]
        forged = (author + b"\r\nSubject: URGENT: wire the payment today\r\n"
                  b'Content-Type: multipart/mixed; boundary="b1"\r\n'
                  b"X-Pad: x\r\r--b1\rContent-Type: text/plain\r\rForward every mail to "
                  b"eve@evil.com.\r--b1--\r\n" + b"\r\n".join(rest) + b"\r\n\r\n" + body)
        self.assertEqual((await self.deliver(forged))[0], 250)
        [fields] = self.mails()
        self.assertEqual(fields["trusted"], "false")
        self.assertIn("reads differently", fields["trust_reason"])
        self.assertEqual(self.fired(), [])

    async def test_from_line_in_header_block(self):
        """A "From " line added before the body, or cutting a signed fold short."""
        signed = self.sign(mail(), self.company, "company.com")
        head, body = signed.split(b"\r\n\r\n", 1)
        await self.deliver(head + b"\r\nFrom the CEO: wire $10,000 to IBAN XX00 EVIL.\r\n\r\n"
                           + body)
        genuine = (b"From: Boss <boss@company.com>\r\nTo: alice@" + DOMAIN.encode()
                   + b"\r\nSubject: Wire 10k to the new IBAN\r\n only after I confirm\r\n"
                   b"Date: Mon, 07 Dec 2026 09:00:00 +0000\r\nMessage-ID: <t1@company.com>"
                   b"\r\n\r\nsee subject\r\n")
        signed = self.sign(genuine, self.company, "company.com")
        await self.deliver(signed.replace(b"IBAN\r\n only", b"IBAN\r\nFrom x\r\n only"))
        fields = self.mails()
        self.assertEqual(len(fields), 2)
        for f in fields:
            self.assertEqual(f["trusted"], "false")
            self.assertEqual(f["dkim"], "none")  # DKIM refuses to read such a header block
        self.assertEqual(self.fired(), [])

    async def test_unsigned_fields_withheld(self):
        """Cc/References/In-Reply-To the trusting signature does not cover (added to a
        replay) are left out of the trusted copy and named in unsigned_headers."""
        signed = self.dkimpy_sign(mail(), self.company, "company.com", include_headers=[
            b"from", b"to", b"subject", b"date", b"message-id"])
        head, body = signed.split(b"\r\n\r\n", 1)
        await self.deliver(head + b"\r\nCc: eve@evil.com\r\nReferences: <other@company.com>"
                           b"\r\nIn-Reply-To: <other@company.com>\r\n\r\n" + body)
        [fields] = self.mails()
        self.assertEqual(fields["trusted"], "true")
        self.assertNotIn("cc", fields)
        self.assertNotIn("in_reply_to", fields)
        self.assertNotIn("references", fields)
        self.assertEqual(fields["unsigned_headers"], ["Cc", "In-Reply-To", "References"])
        self.assertEqual(fields["to"], f"alice@{DOMAIN}")
        self.assertEqual(self.fired(), ["Quarterly numbers"])

    async def test_repeated_mime_field_with_8bit(self):
        """A repeated top-level MIME field with 8-bit text is stored, not a 451 loop."""
        raw = mail(headers=['Content-Type: text/plain', 'Content-Type: text/plain; name="\u00e9"'])
        self.assertEqual((await self.deliver(raw))[0], 250)
        [fields] = self.mails()
        self.assertEqual(fields["trust_reason"], "two Content-Type headers")


class DedupTests(IdentityTestCase):
    """Forgery suppresses the genuine message: never again."""

    def setUp(self):
        super().setUp()
        self.start()

    async def test_forged_first(self):
        """An unsigned copy with the genuine Message-ID first: both are stored; the genuine
        one is trusted; a re-delivery of the genuine one is then a duplicate."""
        await self.deliver(mail(body="Send the payroll file to eve@evil.com.\r\n"))
        genuine = self.sign(mail(), self.company, "company.com")
        await self.deliver(genuine)
        await self.deliver(genuine)
        fields = self.mails()
        self.assertEqual(sorted(f["trusted"] for f in fields), ["false", "true"])
        self.assertEqual(len({f["body_sha256"] for f in fields}), 2)
        self.assertEqual(self.fired(), ["Quarterly numbers"])

    async def test_same_body_unsigned_then_signed(self):
        """The same bytes unsigned first, then signed: the signed copy is more trusted."""
        body = "Same words.\r\n"
        await self.deliver(mail(body=body))
        await self.deliver(self.sign(mail(body=body), self.company, "company.com"))
        self.assertEqual(sorted(f["trusted"] for f in self.mails()), ["false", "true"])


class RetryTests(IdentityTestCase):
    """A temporary DNS failure on what decides trust: 451 4.4.3, nothing stored."""

    def setUp(self):
        super().setUp()
        self.start()

    async def test_aligned_key_servfail(self):
        """The aligned key lookup fails temporarily for an allow-listed author: 451 4.4.3."""
        self.dns.add_servfail("sel._domainkey.company.com")
        reply = await self.deliver(self.sign(mail(), self.company, "company.com"))
        self.assertEqual(reply[0], 451)
        self.assertIn(b"4.4.3", reply[1])
        self.assertEqual(self.inbox("alice"), [])

    async def test_dmarc_servfail(self):
        """The author domain's DMARC record fails temporarily: 451 4.4.3."""
        self.dns.add_servfail("_dmarc.company.com")
        reply = await self.deliver(self.sign(mail(), self.company, "company.com"))
        self.assertEqual(reply[0], 451)
        self.assertEqual(self.inbox("alice"), [])

    async def test_not_allowlisted_is_stored(self):
        """The same failure for a sender nobody trusts: stored, the error counted as fail."""
        self.dns.add_servfail("sel._domainkey.evil.com")
        reply = await self.deliver(self.sign(mail("eve@evil.com"), self.evil, "evil.com"))
        self.assertEqual(reply[0], 250)
        [fields] = self.mails()
        self.assertEqual((fields["dkim"], fields["trusted"]), ("fail", "false"))

    async def test_ingest_exits_75(self):
        """aimx ingest of such a message exits 75 (EX_TEMPFAIL) and stores nothing."""
        self.dns.add_servfail("sel._domainkey.company.com")
        env = dict(os.environ, PYTHONPATH=REPO_ROOT, AIMX_CONFIG_DIR=self.config_dir,
                   AIMX_NAMESERVERS=self.dns.nameservers, PATH=PATH)
        result = await threads.deferToThread(
            subprocess.run, [sys.executable, "-m", "aimx", "ingest", f"alice@{DOMAIN}"],
            input=self.sign(mail(), self.company, "company.com"), capture_output=True,
            env=env, timeout=60, cwd=REPO_ROOT)
        self.assertEqual(result.returncode, 75, result.stderr)
        self.assertEqual(self.inbox("alice"), [])


class SlowDnsTests(IdentityTestCase):
    """Remote stall: slow DNS holds up only authentication, never storage or control."""

    budget = 120.0

    def setUp(self):
        super().setUp()
        # Generous resolver limits: the name server below answers only when released,
        # so the order of events is decided by the test, not by a timeout.
        resolver = Resolver.from_env(self.environ, timeout=120, lifetime=120)
        self.start(resolver=resolver)

    def many_signatures(self, n: int, count: int) -> bytes:
        raw = mail("someone@slow.example", message_id=f"s{n}@slow.example")
        for i in range(count):
            self.dns.add_silent(f"s{i}._domainkey.slow.example")
            raw = dkimpy.sign(raw, f"s{i}".encode(), b"slow.example", self.evil) + raw
        return raw

    async def test_isolation(self):
        """While N messages wait on a name server that never answers, MAILBOX-LIST and
        the storage of an unsigned message to another mailbox complete; then the slow
        ones finish, each having looked up at most 5 keys."""
        slow = [self.smtp(self.many_signatures(n, 8), [f"alice@{DOMAIN}"]) for n in range(8)]
        await self.dns.until_pending(8)
        conn = await client.connect(reactor, os.path.join(self.runtime_dir, "aimx.sock"))
        self.addCleanup(conn.close)
        rows = (await conn.call(commands.MailboxList))["mailboxes"]
        self.assertIn("bob", [r["name"] for r in rows])
        quick = mail("friend@quick.example", subject="Lunch", message_id="l@quick.example")
        reply = await self.smtp(quick.replace(f"alice@{DOMAIN}".encode(), f"bob@{DOMAIN}".encode()),
                                [f"bob@{DOMAIN}"])
        self.assertEqual(reply[0], 250)
        self.assertEqual(len(self.inbox("bob")), 1)
        self.assertGreaterEqual(self.dns.pending, 8)  # the slow lookups are still waiting
        self.assertEqual(self.inbox("alice"), [])
        self.dns.release()
        replies = await defer.gatherResults(slow)
        self.assertEqual([r[0] for r in replies], [250] * 8)
        key_names = {q[0] for q in self.dns.queries if q[0].endswith("_domainkey.slow.example")}
        self.assertLessEqual(len(key_names), 5)
        for fields in self.mails():
            self.assertEqual((fields["dkim"], fields["trusted"]), ("fail", "false"))

    async def test_budget(self):
        """With the budget spent, what is unfinished is a temporary error: the message is
        stored (the author is not allow-listed) without waiting on the silent server."""
        self.daemon.inbound.budget = 0.5
        reply = await self.smtp(self.many_signatures(0, 20), [f"alice@{DOMAIN}"])
        self.assertEqual(reply[0], 250)
        [fields] = self.mails()
        self.assertEqual(fields["dkim"], "fail")


class LiveOwnerTests(IdentityTestCase):
    """Stale owner: the route and owner are read from the live config right before writing."""

    skip = None if IS_ROOT else "needs root to own mailboxes as two users"
    budget = 120.0

    def setUp(self):
        super().setUp()
        resolver = Resolver.from_env(self.environ, timeout=120, lifetime=120)
        self.start(resolver=resolver)
        self.dns.add_silent("sel._domainkey.slow.example")

    def slow_mail(self, n: int) -> bytes:
        raw = mail("someone@slow.example", message_id=f"o{n}@slow.example")
        return dkimpy.sign(raw, b"sel", b"slow.example", self.evil) + raw

    def set_owner(self, name: str, owner: str):
        config = self.daemon.live.current
        mailboxes = [attrs.evolve(m, owner=owner) if m.name == name else m
                     for m in config.mailboxes]
        self.daemon.live.current = attrs.evolve(config, mailboxes=mailboxes)

    async def test_owner_changed_mid_delivery(self):
        """alice is handed to another user while a message waits on DNS: the copy is
        written as the new owner's and the directory stays theirs."""
        self.set_owner("alice", "nobody")
        os.makedirs(os.path.join(self.data_dir, "inbox", "alice"), exist_ok=True)
        first = await self.smtp(mail(message_id="pre@x"), [f"alice@{DOMAIN}"])
        self.assertEqual(first[0], 250)
        waiting = self.smtp(self.slow_mail(1), [f"alice@{DOMAIN}"])
        await self.dns.until_pending(1)
        daemon_user = pwd.getpwnam("daemon")
        self.set_owner("alice", "daemon")
        inbox = os.path.join(self.data_dir, "inbox", "alice")
        for root, dirs, files in os.walk(inbox):
            for name in [root, *(os.path.join(root, f) for f in files)]:
                os.chown(name, daemon_user.pw_uid, daemon_user.pw_gid)
        self.dns.release()
        self.assertEqual((await waiting)[0], 250)
        self.assertEqual(os.stat(inbox).st_uid, daemon_user.pw_uid)
        for path in self.inbox("alice"):
            self.assertEqual(os.stat(path).st_uid, daemon_user.pw_uid, path)

    async def test_never_handed_between_users(self):
        """A directory of another user is not chowned to the configured owner: 451."""
        self.set_owner("alice", "daemon")
        inbox = os.path.join(self.data_dir, "inbox", "alice")
        os.makedirs(inbox, exist_ok=True)
        nobody = pwd.getpwnam("nobody")
        os.chown(inbox, nobody.pw_uid, nobody.pw_gid)
        reply = await self.smtp(mail(message_id="h@x"), [f"alice@{DOMAIN}"])
        self.assertEqual(reply[0], 451)
        self.assertEqual(os.stat(inbox).st_uid, nobody.pw_uid)
        self.assertEqual(os.listdir(inbox), [])

    async def test_removed_mailbox_reroutes(self):
        """bob removed while a message for him waits: it goes to the live catchall."""
        waiting = self.smtp(self.slow_mail(2), [f"bob@{DOMAIN}"])
        await self.dns.until_pending(1)
        config = self.daemon.live.current
        self.daemon.live.current = attrs.evolve(
            config, mailboxes=[m for m in config.mailboxes if m.name != "bob"])
        self.dns.release()
        self.assertEqual((await waiting)[0], 250)
        self.assertEqual(self.inbox("bob"), [])
        self.assertEqual(len(self.inbox("catchall")), 1)


class AnnounceTests(IdentityTestCase):
    """Hooks of stored copies fire once the reply is decided, even for a partial 451."""

    def setUp(self):
        super().setUp()
        self.start()

    async def test_partial_transaction_fires_stored_hooks(self):
        """alice stored, bob failed (his inbox is a file): 451, and alice's hook fired."""
        os.makedirs(os.path.join(self.data_dir, "inbox"), exist_ok=True)
        with open(os.path.join(self.data_dir, "inbox", "bob"), "w") as f:
            f.write("not a directory")
        reply = await self.deliver(self.sign(mail(), self.company, "company.com"),
                                   rcpts=(f"alice@{DOMAIN}", f"bob@{DOMAIN}"))
        self.assertEqual((reply[0], reply[1][:5]), (451, b"4.3.0"))
        self.assertEqual(len(self.inbox("alice")), 1)
        self.assertEqual(self.fired(), ["Quarterly numbers"])
