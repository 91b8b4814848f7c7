"""The webhook payload, signature and retry plan (aimx.core.webhook), with the
Standard Webhooks reference library as the signature's oracle."""

import json
import time
from datetime import datetime, timezone

from standardwebhooks import Webhook, WebhookVerificationError
from twisted.trial.unittest import SynchronousTestCase

from aimx.core import hookspec, webhook
from aimx.core.config import MailboxConfig
from aimx.core.hookspec import HookEvent

MAILBOX = MailboxConfig("support", "support@test.com", "alice")
SECRET = webhook.make_secret(bytes(range(32)))


def received(id="2026-01-01-120000-hi", filepath="/d/inbox/support/x.md"):
    return HookEvent("on_receive", MAILBOX, filepath, id, "a@x.example", "support@test.com",
                     "hi", "m@x.example", "2026-01-01T12:00:00Z", trusted="true")


class SignatureTests(SynchronousTestCase):
    def test_oracle_verifies(self):
        """The reference library accepts our headers, and refuses them for another body."""
        body = json.dumps({"type": "email.received", "subject": "héllo"}).encode()
        now = int(time.time())
        headers = webhook.headers(webhook.parse_secret(SECRET), "msg_1", now, body)
        self.assertEqual(Webhook(SECRET).verify(body, headers)["subject"], "héllo")
        self.assertRaises(WebhookVerificationError, Webhook(SECRET).verify, body + b" ",
                          headers)
        other = webhook.make_secret(bytes(32))
        self.assertRaises(WebhookVerificationError, Webhook(other).verify, body, headers)

    def test_fresh_per_attempt(self):
        """Same id, new timestamp: a new signature; the library's own signing agrees."""
        key = webhook.parse_secret(SECRET)
        first = webhook.signature(key, "msg_1", 1_700_000_000, b"{}")
        second = webhook.signature(key, "msg_1", 1_700_000_060, b"{}")
        self.assertNotEqual(first, second)
        when = datetime.fromtimestamp(1_700_000_000, timezone.utc)
        self.assertEqual(Webhook(SECRET).sign("msg_1", when, b"{}"), first)

    def test_secret_form(self):
        """whsec_ and 24-64 bytes of base64, else refused without quoting it."""
        self.assertEqual(webhook.parse_secret(f"  {SECRET}\n"), bytes(range(32)))
        for bad in ("abc", "whsec_!!!", "whsec_" + "QUFB" * 2, "whsec_" + "QUFB" * 30):
            e = self.assertRaises(webhook.SecretError, webhook.parse_secret, bad)
            self.assertNotIn(bad[6:] or "abc", str(e))


class PayloadTests(SynchronousTestCase):
    def test_received(self):
        """email.received from the stored frontmatter; attachment paths left out."""
        fields = {"id": "x", "message_id": "m@x.example", "thread_id": "t1", "from": "a@x",
                  "to": "support@test.com", "subject": "hi", "date": "2026-01-01T12:00:00Z",
                  "trusted": "true", "dkim": "pass", "spf": "pass", "dmarc": "pass",
                  "read": False, "attachments": [{"filename": "a.pdf", "content_type":
                                                  "application/pdf", "size": 3, "path": "a/b"}]}
        data = json.loads(webhook.payload(received(), fields, b"Hello *there*\n"))
        self.assertEqual(data["type"], "email.received")
        self.assertEqual((data["mailbox"], data["id"], data["thread_id"], data["dkim"]),
                         ("support", "2026-01-01-120000-hi", "t1", "pass"))
        self.assertEqual(data["attachments"],
                         [{"filename": "a.pdf", "content_type": "application/pdf", "size": 3}])
        self.assertEqual(data["body"], "Hello *there*\n")
        self.assertEqual(data["frontmatter"], fields)
        self.assertNotIn("body_truncated", data)
        self.assertNotIn("delivery_status", data)

    def test_truncated(self):
        """A body over 1 MiB is cut there (whole characters) and says so."""
        body = "é".encode() * (webhook.BODY_CAP // 2 + 1)
        data = json.loads(webhook.payload(received(), {}, body))
        self.assertTrue(data["body_truncated"])
        self.assertEqual(len(data["body"].encode()), webhook.BODY_CAP)
        at_cap = json.loads(webhook.payload(received(), {}, b"x" * webhook.BODY_CAP))
        self.assertNotIn("body_truncated", at_cap)

    def test_payload_cap(self):
        """A body of control characters at the cap fits PAYLOAD_CAP with its frontmatter;
        a frontmatter that would pass the cap is left out."""
        body = b"\x01" * webhook.BODY_CAP
        fields = {"note": "\x01" * (webhook.FILE_CAP - webhook.BODY_CAP)}
        whole = webhook.payload(received(), fields, body)
        self.assertLessEqual(len(whole), webhook.PAYLOAD_CAP)
        self.assertEqual(json.loads(whole)["frontmatter"], fields)
        fields["attachments"] = [{}] * (webhook.PAYLOAD_CAP // 50)
        cut = webhook.payload(received(), fields, body)
        self.assertLessEqual(len(cut), webhook.PAYLOAD_CAP)
        self.assertEqual((json.loads(cut)["frontmatter"], json.loads(cut)["body"]),
                         ({}, "\x01" * webhook.BODY_CAP))

    def test_sent_without_copy(self):
        """email.sent with nothing stored: the event's values and its status."""
        event = hookspec.sent(MAILBOX, "deferred", from_="support@test.com", to="b@y",
                              subject="s", message_id="<m@test.com>", filepath="",
                              now=datetime(2026, 1, 1, tzinfo=timezone.utc))
        data = json.loads(webhook.payload(event, None, b""))
        self.assertEqual((data["type"], data["delivery_status"], data["delivery"],
                          data["message_id"]), ("email.sent", "deferred", [], "<m@test.com>"))

    def test_webhook_id(self):
        """Stable for one event and hook; another hook or event gets another."""
        self.assertEqual(webhook.webhook_id(received(), "h"), webhook.webhook_id(received(), "h"))
        self.assertNotEqual(webhook.webhook_id(received(), "h"),
                            webhook.webhook_id(received(), "g"))
        self.assertNotEqual(webhook.webhook_id(received(), "h"),
                            webhook.webhook_id(received(id="other"), "h"))


class PlanTests(SynchronousTestCase):
    def test_outcome(self):
        self.assertEqual([webhook.outcome(c) for c in (200, 204, 299, 410, 301, 404, 500)],
                         ["delivered"] * 3 + ["gone"] + ["retry"] * 3)

    def test_backoff(self):
        """About 5 s to 6 h between 8 attempts, then dead-lettered."""
        delays = [webhook.retry_delay(n) for n in range(1, 9)]
        self.assertEqual(delays[0], 5)
        self.assertEqual(delays[6], 6 * 3600)
        self.assertIsNone(delays[7])
        self.assertEqual(delays[:7], sorted(delays[:7]))
