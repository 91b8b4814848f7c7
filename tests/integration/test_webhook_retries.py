"""The webhook deliveries' retry plan on a task.Clock (aimx.webhooks).

Attempts are real HTTP requests to a loopback port that refuses connections (the
reactor answers at once); the backoff between them runs on the test's clock.
"""

import os

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from aimx.core import webhook
from aimx.core.config import MailboxConfig, make_hook
from aimx.core.hookspec import HookEvent
from aimx.host import addresses
from aimx.store import webhookfiles
from aimx.webhooks import PER_URL, Webhooks
from tests.integration.base import reserve_port


class Config:
    def __init__(self, mailbox):
        self.mailboxes = (mailbox,)


class WebhooksCase(TestCase):
    """A Webhooks on a task.Clock with one hook, C{agent}, to a refusing loopback port."""

    def setUp(self):
        self.port = reserve_port(self)
        self.hook = make_hook("on_receive", (), name="agent", hook_type="webhook",
                              url=f"http://127.0.0.1:{self.port}/h", allow_insecure=True,
                              allow_private=True, timeout_secs=5)
        self.mailbox = MailboxConfig("alice", "alice@test.com", "alice", hooks=[self.hook])
        root = os.path.abspath(self.mktemp())
        self.config_dir, self.data_dir = os.path.join(root, "etc"), os.path.join(root, "data")
        os.makedirs(self.config_dir)
        webhookfiles.write_secret(self.config_dir, "agent", bytes(32))
        self.clock = task.Clock()
        self.disabled = []
        self.webhooks = self.make()

    def make(self) -> Webhooks:
        return Webhooks(reactor, config=lambda: Config(self.mailbox),
                        config_dir=self.config_dir, data_dir=self.data_dir, resolver=None,
                        run_in_thread=defer.maybeDeferred, run_dns=defer.maybeDeferred,
                        clock=self.clock)

    def event(self, n=0):
        return HookEvent("on_receive", self.mailbox, "", f"id{n}", "a@x", "alice@test.com",
                         "s", "m@x", "2026-01-01T00:00:00Z", trusted="true")

    async def settle(self):
        """Wait until the reactor has answered every attempt in flight."""
        await self.webhooks.idle()


class RetryTests(WebhooksCase):
    @defer.inlineCallbacks
    def test_backoff_then_dead(self):
        """8 attempts, the delays of RETRY_DELAYS between them, then dead-lettered."""
        webhook_id = yield defer.Deferred.fromCoroutine(
            self.webhooks.enqueue(self.event(), self.hook))
        self.clock.advance(0)
        yield defer.Deferred.fromCoroutine(self.settle())
        for attempt, delay in enumerate(webhook.RETRY_DELAYS, 1):
            (spooled,) = webhookfiles.load(self.data_dir)
            self.assertEqual((spooled["attempts"], spooled["dead"]), (attempt, False))
            self.clock.advance(delay - 1)
            yield defer.Deferred.fromCoroutine(self.settle())
            self.assertEqual(webhookfiles.load(self.data_dir)[0]["attempts"], attempt)
            self.clock.advance(1)
            yield defer.Deferred.fromCoroutine(self.settle())
        (spooled,) = webhookfiles.load(self.data_dir)
        self.assertEqual((spooled["id"], spooled["attempts"], spooled["dead"]),
                         (webhook_id, webhook.ATTEMPTS, True))
        self.assertIn("refused", spooled["last_error"].lower())
        self.assertEqual(self.webhooks.status(["agent"]),
                         [{"name": "agent", "pending": 0, "failing": 0, "dead": 1,
                           "last_error": spooled["last_error"]}])
        count = yield defer.Deferred.fromCoroutine(self.webhooks.retry("agent"))
        self.assertEqual(count, 1)
        self.assertEqual(webhookfiles.load(self.data_dir)[0]["attempts"], 0)
        self.clock.advance(0)
        yield defer.Deferred.fromCoroutine(self.settle())

    @defer.inlineCallbacks
    def test_restart_resumes(self):
        """A new Webhooks over the same spool attempts the pending delivery at once."""
        yield defer.Deferred.fromCoroutine(self.webhooks.enqueue(self.event(), self.hook))
        self.webhooks.stopService()  # the daemon stopped before the first attempt
        again = self.make()
        again.startService()
        self.addCleanup(again.stopService)
        self.clock.advance(1)
        self.webhooks = again
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual(webhookfiles.load(self.data_dir)[0]["attempts"], 1)

    @defer.inlineCallbacks
    def test_per_url_limit(self):
        """At most PER_URL attempts to one URL at once; the rest wait their turn."""
        for n in range(PER_URL + 3):
            yield defer.Deferred.fromCoroutine(self.webhooks.enqueue(self.event(n), self.hook))
        self.clock.advance(0)
        slots = self.webhooks._slots[self.hook.url]
        self.assertEqual((slots.tokens, len(slots.waiting)), (0, 3))
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual(slots.tokens, PER_URL)


class OwnAddressTests(WebhooksCase):
    """The server's own addresses are those on the host's interfaces, read at start
    and again on request (the daemon's SIGHUP)."""

    #: A public address, standing for one configured on this host (never connected to).
    PUBLIC = "93.184.215.14"

    def setUp(self):
        self.interfaces = [(self.PUBLIC, "2001:db8::1")]
        super().setUp()
        self.hook = make_hook("on_receive", (), name="agent", hook_type="webhook",
                              url=f"https://{self.PUBLIC}/h", timeout_secs=5)
        self.mailbox = MailboxConfig("alice", "alice@test.com", "alice", hooks=[self.hook])

    def make(self) -> Webhooks:
        return Webhooks(reactor, config=lambda: Config(self.mailbox),
                        config_dir=self.config_dir, data_dir=self.data_dir, resolver=None,
                        run_in_thread=defer.maybeDeferred, run_dns=defer.maybeDeferred,
                        clock=self.clock, interface_addresses=self.read)

    def read(self):
        if isinstance(self.interfaces[-1], Exception):
            raise self.interfaces[-1]
        return self.interfaces[-1]

    @defer.inlineCallbacks
    def test_own_refused_before_start(self):
        """An attempt before the addresses were ever read reads them first, and an
        address on the host's interfaces is refused as the server's own."""
        self.assertIsNone(self.webhooks.own)
        yield defer.Deferred.fromCoroutine(self.webhooks.enqueue(self.event(), self.hook))
        self.clock.advance(0)
        yield defer.Deferred.fromCoroutine(self.settle())
        (spooled,) = webhookfiles.load(self.data_dir)
        self.assertEqual(spooled["last_error"], f"refused: {self.PUBLIC} resolves only to "
                         f"one of this server's own addresses ({self.PUBLIC})")

    @defer.inlineCallbacks
    def test_read_again(self):
        """Reading again replaces the set; the unspecified addresses are always in it;
        a failed read keeps the previous set."""
        own = yield self.webhooks.read_addresses()
        self.assertEqual(own, {"0.0.0.0", "::", self.PUBLIC, "2001:db8::1"})
        self.interfaces.append(("192.0.2.9",))
        own = yield self.webhooks.read_addresses()
        self.assertEqual(own, {"0.0.0.0", "::", "192.0.2.9"})
        self.interfaces.append(addresses.Unreadable("ip: not found"))
        own = yield self.webhooks.read_addresses()
        self.assertEqual(own, {"0.0.0.0", "::", "192.0.2.9"})
