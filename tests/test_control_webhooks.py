"""HOOK-CREATE of webhooks, HOOK-ENABLE, HOOK-STATUS and HOOK-RETRY over AMP."""

import json
import os
import stat

import attrs

from aimx.control import commands
from aimx.core import configedit, webhook
from aimx.errors import AccessDenied, NoEntry, ValidationError
from tests.test_control_amp import ALICE, BOB, NOW, ROOT, ControlTestCase

URL = "https://agents.example/mail"


class FakeWebhooks:
    """Records what the control commands ask of the deliveries."""

    def __init__(self):
        self.retried = []
        self.purged = []

    def status(self, names):
        return [{"name": name, "pending": 0, "failing": 0, "dead": 1} for name in sorted(names)]

    async def retry(self, name):
        self.retried.append(name)
        return 1

    async def purge(self, name):
        self.purged.append(name)
        return 2


class WebhookControlTests(ControlTestCase):
    def setUp(self):
        super().setUp()
        self.control.random = lambda n: b"\x07" * n
        self.control.webhooks = self.webhooks = FakeWebhooks()

    def create(self, uid=ALICE, **fields):
        body = json.dumps({"type": "webhook", "url": URL, **fields})
        return self.connect(uid).call(commands.HookCreate, mailbox="alice", event="on_receive",
                                      name=None, body=body)

    def secret_file(self, name):
        return webhook.secret_path(self.config_dir, name, None)

    def test_generated_secret(self):
        """No secret given: one is generated, stored 0600 and answered once; config.toml,
        HOOK-LIST and the log never hold it."""
        reply = self.create()
        secret = webhook.make_secret(b"\x07" * webhook.SECRET_BYTES)
        self.assertEqual(reply["secret"], secret)
        path = self.secret_file(reply["name"])
        with open(path) as f:
            self.assertEqual(f.read().strip(), secret)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode), 0o700)
        (hook,) = self.config_toml()["mailboxes"]["alice"]["hooks"]
        self.assertEqual(hook, {"event": "on_receive", "type": "webhook", "url": URL})
        listed = self.connect(ALICE).call(commands.HookList)["hooks"]
        for text in (self.config_text(), json.dumps(listed), self.logged()):
            self.assertNotIn(secret[6:], text)

    def test_given_secret(self):
        """A caller's secret is stored as given and not answered back."""
        secret = "whsec_" + "QUJD" * 8
        reply = self.create(secret=secret)
        self.assertIsNone(reply["secret"])
        with open(self.secret_file(reply["name"])) as f:
            self.assertEqual(f.read().strip(), secret)

    def test_bad_secret_stores_nothing(self):
        """A malformed secret is VALIDATION and leaves no file and no hook."""
        e = self.connect(ALICE).refused(
            ValidationError, commands.HookCreate, mailbox="alice", event="on_receive",
            name="w", body=json.dumps({"type": "webhook", "url": URL, "secret": "whsec_AAAA"}))
        self.assertNotIn("AAAA", e)
        self.assertFalse(os.path.exists(self.secret_file("w")))
        self.assertNotIn("hooks", self.config_toml()["mailboxes"]["alice"])

    def test_allow_private_root_only(self):
        """Only root may point a webhook at the host's own network."""
        e = self.connect(ALICE).refused(
            AccessDenied, commands.HookCreate, mailbox="alice", event="on_receive", name=None,
            body=json.dumps({"type": "webhook", "url": URL, "allow_private": True}))
        self.assertEqual(e, "allow_private is for root only")
        self.assertTrue(self.create(ROOT, allow_private=True)["name"])

    def test_delete_removes_secret(self):
        """Deleting a webhook removes the secret aimx kept for it and its queued
        deliveries; the log says how many."""
        name = self.create()["name"]
        self.connect(ALICE).call(commands.HookDelete, name=name)
        self.assertFalse(os.path.exists(self.secret_file(name)))
        self.assertEqual(self.webhooks.purged, [name])
        self.assertIn("dropped=2", self.logged())

    def test_enable(self):
        """HOOK-ENABLE clears C{disabled}; another owner's hook is not found."""
        name = self.create()["name"]
        self.live.current = configedit.set_disabled(self.live.current, name, True)
        self.connect(BOB).refused(NoEntry, commands.HookEnable, name=name)
        self.connect(ALICE).call(commands.HookEnable, name=name)
        self.assertFalse(self.live.current.mailbox("alice").hooks[0].disabled)
        self.assertNotIn("disabled", self.config_toml()["mailboxes"]["alice"]["hooks"][0])

    def test_disable(self):
        """A 410's disable writes C{disabled = true} to config.toml."""
        name = self.create()["name"]
        self.successResultOf(self.control.hook_disable(name))
        self.assertTrue(self.config_toml()["mailboxes"]["alice"]["hooks"][0]["disabled"])
        hook = self.live.current.mailbox("alice").hooks[0]
        self.assertEqual(attrs.evolve(hook, disabled=False).name, name)

    def test_status_and_retry(self):
        """Status and retry reach the deliveries for the caller's own webhooks only."""
        name = self.create()["name"]
        rows = self.connect(ALICE).call(commands.HookStatus, name=None)["hooks"]
        self.assertEqual([row["name"] for row in rows], [name])
        self.assertEqual(self.connect(BOB).call(commands.HookStatus, name=None)["hooks"], [])
        self.connect(BOB).refused(NoEntry, commands.HookRetry, name=name)
        self.assertEqual(self.connect(ROOT).call(commands.HookRetry, name=name),
                         {"requeued": 1})
        self.assertEqual(self.webhooks.retried, [name])


class WebhookAuditTests(ControlTestCase):
    """A webhook's creation, enabling, disabling by a 410 and retry are audited."""

    def setUp(self):
        super().setUp()
        self.clock.advance(NOW.timestamp())
        self.start_audit()
        self.control.webhooks = FakeWebhooks()

    def test_recorded(self):
        """HOOK-CREATE carries the url and never the secret; a 410's disable has no
        caller; HOOK-ENABLE and HOOK-RETRY name theirs; the owner reads them all."""
        secret = "whsec_" + "QUJD" * 8
        name = self.connect(ALICE).call(
            commands.HookCreate, mailbox="alice", event="on_receive", name=None,
            body=json.dumps({"type": "webhook", "url": URL, "secret": secret}))["name"]
        self.successResultOf(self.control.hook_disable(name))
        self.connect(ALICE).call(commands.HookEnable, name=name)
        self.connect(ROOT).call(commands.HookRetry, name=name)
        records = self.connect(ALICE).call(commands.AuditRead)["records"]
        self.assertEqual(
            [(r["event"], r["action"], r["mailbox"], r["hook"], r.get("caller_uid"))
             for r in records],
            [("hook", "created", "alice", name, ALICE), ("hook", "disabled", "alice", name, None),
             ("hook", "enabled", "alice", name, ALICE), ("hook", "retried", "alice", name, ROOT)])
        created, disabled, _, retried = records
        self.assertEqual((created["type"], created["url"], created["allow_private"]),
                         ("webhook", URL, False))
        self.assertNotIn("cmd", created)
        self.assertEqual((disabled["reason"], retried["requeued"]), ("410 Gone", 1))
        self.assertNotIn("QUJD", json.dumps(records))

    def test_delete_recorded(self):
        """HOOK-DELETE of a webhook records how many queued deliveries it dropped."""
        name = self.connect(ALICE).call(
            commands.HookCreate, mailbox="alice", event="on_receive", name=None,
            body=json.dumps({"type": "webhook", "url": URL}))["name"]
        self.connect(ALICE).call(commands.HookDelete, name=name)
        deleted = self.connect(ALICE).call(commands.AuditRead)["records"][-1]
        self.assertEqual((deleted["action"], deleted["hook"], deleted["dropped"]),
                         ("deleted", name, 2))
