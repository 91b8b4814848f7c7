"""The webhook deliveries' retry plan on a task.Clock (aimx.webhooks).

Attempts are real HTTP requests to a loopback port that refuses connections (the
reactor answers at once); the backoff between them runs on the test's clock.
"""

import json
import os

from twisted.internet import defer, reactor, task
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web import resource, server

from aimx.core import webhook
from aimx.core.config import MailboxConfig, make_hook
from aimx.core.hookspec import HookEvent
from aimx.host import addresses
from aimx.store import webhookfiles
from aimx.webhooks import PER_URL, Webhooks
from tests.integration.base import reserve_port


class Config:
    def __init__(self, *mailboxes):
        self.mailboxes = mailboxes


class Recorder(resource.Resource):
    """A receiver that records each POST's body and answers 204."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.bodies = []

    def render_POST(self, request):
        self.bodies.append(request.content.read())
        request.setResponseCode(204)
        return b""


class WebhooksCase(TestCase):
    """A Webhooks on a task.Clock with one hook, C{agent}, to a refusing loopback port."""

    def setUp(self):
        self.port = reserve_port(self)
        self.hook = make_hook("on_receive", (), name="agent", hook_type="webhook",
                              url=f"http://127.0.0.1:{self.port}/h", allow_insecure=True,
                              allow_private=True, timeout_secs=5)
        self.mailbox = MailboxConfig("alice", "alice@test.com", "alice", hooks=[self.hook])
        self.mailboxes = None
        root = os.path.abspath(self.mktemp())
        self.config_dir, self.data_dir = os.path.join(root, "etc"), os.path.join(root, "data")
        os.makedirs(self.config_dir)
        webhookfiles.write_secret(self.config_dir, "agent", bytes(32))
        self.clock = task.Clock()
        self.disabled = []
        self.webhooks = self.make()

    def make(self, **kw) -> Webhooks:
        return Webhooks(reactor, config=lambda: Config(*(self.mailboxes or (self.mailbox,))),
                        config_dir=self.config_dir, data_dir=self.data_dir, resolver=None,
                        run_in_thread=defer.maybeDeferred, run_dns=defer.maybeDeferred,
                        clock=self.clock, **kw)

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
            (spooled,) = webhookfiles.load(self.data_dir)[0]
            self.assertEqual((spooled["attempts"], spooled["dead"]), (attempt, False))
            self.clock.advance(delay - 1)
            yield defer.Deferred.fromCoroutine(self.settle())
            self.assertEqual(webhookfiles.load(self.data_dir)[0][0]["attempts"], attempt)
            self.clock.advance(1)
            yield defer.Deferred.fromCoroutine(self.settle())
        (spooled,) = webhookfiles.load(self.data_dir)[0]
        self.assertEqual((spooled["id"], spooled["attempts"], spooled["dead"]),
                         (webhook_id, webhook.ATTEMPTS, True))
        self.assertIn("refused", spooled["last_error"].lower())
        self.assertEqual(self.webhooks.status(["agent"]),
                         [{"name": "agent", "pending": 0, "failing": 0, "dead": 1,
                           "last_error": spooled["last_error"]}])
        count = yield defer.Deferred.fromCoroutine(self.webhooks.retry("agent"))
        self.assertEqual(count, 1)
        self.assertEqual(webhookfiles.load(self.data_dir)[0][0]["attempts"], 0)
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
        self.assertEqual(webhookfiles.load(self.data_dir)[0][0]["attempts"], 1)

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


class NameReuseTests(WebhooksCase):
    """Alice's webhook C{agent} is deleted and Bob creates one of that name, his URL:
    none of Alice's deliveries reaches him (docs/hooks.md, "Webhooks")."""

    def setUp(self):
        super().setUp()
        self.receiver = Recorder()
        listening = reactor.listenTCP(0, server.Site(self.receiver), interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.bob_hook = make_hook(
            "on_receive", (), name="agent", hook_type="webhook",
            url=f"http://127.0.0.1:{listening.getHost().port}/bob", allow_insecure=True,
            allow_private=True, timeout_secs=5)

    def reuse(self):
        """Alice's hook gone, Bob's of the same name in its place."""
        self.mailboxes = (MailboxConfig("alice", "alice@test.com", "alice"),
                          MailboxConfig("bob", "bob@test.com", "bob", hooks=[self.bob_hook]))

    async def dead_letter(self):
        await self.webhooks.enqueue(self.event(), self.hook)
        self.clock.advance(0)
        await self.settle()
        for delay in webhook.RETRY_DELAYS:
            self.clock.advance(delay)
            await self.settle()
        self.assertEqual(self.webhooks.status(["agent"])[0]["dead"], 1)

    @defer.inlineCallbacks
    def test_dead_letters_not_retried(self):
        """Bob's HOOK-STATUS counts none of Alice's dead letters and HOOK-RETRY requeues
        none: nothing is posted to his receiver."""
        yield defer.Deferred.fromCoroutine(self.dead_letter())
        self.reuse()
        self.assertEqual(self.webhooks.status(["agent"])[0]["dead"], 0)
        requeued = yield defer.Deferred.fromCoroutine(self.webhooks.retry("agent"))
        self.assertEqual(requeued, 0)
        self.clock.advance(0)
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual(self.receiver.bodies, [])

    @defer.inlineCallbacks
    def test_pending_dropped(self):
        """A pending delivery whose hook now belongs to another mailbox is dropped at its
        next attempt, spool file too, and the log says so; nothing reaches Bob."""
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        yield defer.Deferred.fromCoroutine(self.webhooks.enqueue(self.event(), self.hook))
        self.clock.advance(0)
        yield defer.Deferred.fromCoroutine(self.settle())
        self.reuse()
        self.clock.advance(webhook.RETRY_DELAYS[0])
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual(self.receiver.bodies, [])
        self.assertEqual((webhookfiles.load(self.data_dir)[0], self.webhooks.deliveries), ([], {}))
        self.assertIn("webhook dropped, its hook no longer exists",
                      [e["log_format"] for e in logged])

    @defer.inlineCallbacks
    def test_changed_url_dropped(self):
        """The same mailbox's hook of that name with another URL gets nothing either."""
        yield defer.Deferred.fromCoroutine(self.webhooks.enqueue(self.event(), self.hook))
        self.mailboxes = (MailboxConfig("alice", "alice@test.com", "alice",
                                        hooks=[self.bob_hook]),)
        self.clock.advance(0)
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual((self.receiver.bodies, webhookfiles.load(self.data_dir)[0]), ([], []))

    @defer.inlineCallbacks
    def test_purge(self):
        """purge (HOOK-DELETE) drops the hook's pending and dead deliveries, memory and
        spool files, and cancels their timers; another hook's stay."""
        yield defer.Deferred.fromCoroutine(self.dead_letter())
        yield defer.Deferred.fromCoroutine(self.webhooks.enqueue(self.event(1), self.hook))
        self.clock.advance(0)
        yield defer.Deferred.fromCoroutine(self.settle())
        other = webhookfiles.load(self.data_dir)[0][0] | {"id": "msg_other", "hook": "other"}
        webhookfiles.save(self.data_dir, other, b"{}")
        dropped = yield defer.Deferred.fromCoroutine(self.webhooks.purge("agent"))
        self.assertEqual(dropped, 2)
        self.assertEqual([d["id"] for d in webhookfiles.load(self.data_dir)[0]], ["msg_other"])
        self.assertEqual((self.webhooks.deliveries, self.clock.getDelayedCalls()), ({}, []))
        self.reuse()
        self.clock.advance(webhook.RETRY_DELAYS[-1])
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual(self.receiver.bodies, [])


class SpoolTests(WebhooksCase):
    """The spool's bounds: payloads on disk only, a cap per hook, dead letters expire."""

    async def dead(self, *ns):
        for n in ns:
            await self.webhooks.enqueue(self.event(n), self.hook)
        self.clock.advance(0)
        await self.settle()
        for delay in webhook.RETRY_DELAYS:
            self.clock.advance(delay)
            await self.settle()

    @defer.inlineCallbacks
    def test_escaped_body_survives_restart(self):
        """A 1 MiB body of control characters (6 bytes each in JSON) is spooled whole,
        read back by a restarted daemon and delivered; memory never holds it."""
        receiver = Recorder()
        listening = reactor.listenTCP(0, server.Site(receiver), interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.hook = make_hook("on_receive", (), name="agent", hook_type="webhook",
                              url=f"http://127.0.0.1:{listening.getHost().port}/h",
                              allow_insecure=True, allow_private=True, timeout_secs=5)
        self.mailbox = MailboxConfig("alice", "alice@test.com", "alice", hooks=[self.hook])
        stored = os.path.join(self.config_dir, "x.md")
        with open(stored, "wb") as f:
            f.write(b'+++\nid = "x"\n+++\n\n' + b"\x01" * webhook.BODY_CAP)
        event = HookEvent("on_receive", self.mailbox, stored, "x", "a@x", "alice@test.com",
                          "s", "m@x", "2026-01-01T00:00:00Z", trusted="true")
        yield defer.Deferred.fromCoroutine(self.webhooks.enqueue(event, self.hook))
        self.assertNotIn("body", next(iter(self.webhooks.deliveries.values())))
        self.webhooks.stopService()
        again = self.webhooks = self.make()
        again.startService()
        self.addCleanup(again.stopService)
        self.clock.advance(1)
        yield defer.Deferred.fromCoroutine(self.settle())
        (sent,) = receiver.bodies
        self.assertGreater(len(sent), 6 * webhook.BODY_CAP)
        self.assertEqual(json.loads(sent)["body"], "\x01" * webhook.BODY_CAP)
        self.assertEqual(webhookfiles.load(self.data_dir)[0], [])

    @defer.inlineCallbacks
    def test_cap_pending(self):
        """At the cap with no dead letter the new event is not queued, and the log says so."""
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.webhooks = self.make(spool_cap=2)
        for n in range(2):
            yield defer.Deferred.fromCoroutine(self.webhooks.enqueue(self.event(n), self.hook))
        queued = yield defer.Deferred.fromCoroutine(
            self.webhooks.enqueue(self.event(2), self.hook))
        self.assertIsNone(queued)
        self.assertEqual(len(webhookfiles.load(self.data_dir)[0]), 2)
        (full,) = [e for e in logged if e["log_format"] == "webhook not queued, its spool is full"]
        self.assertEqual((full["log_level"].name, full["cap"]), ("warn", 2))
        self.clock.advance(0)
        yield defer.Deferred.fromCoroutine(self.settle())

    @defer.inlineCallbacks
    def test_cap_drops_oldest_dead(self):
        """At the cap the oldest dead letter makes room for the new event."""
        self.webhooks = self.make(spool_cap=2)
        yield defer.Deferred.fromCoroutine(self.dead(0))
        self.clock.advance(1)
        yield defer.Deferred.fromCoroutine(self.dead(1))
        oldest = webhook.webhook_id(self.event(0), "agent")
        queued = yield defer.Deferred.fromCoroutine(
            self.webhooks.enqueue(self.event(2), self.hook))
        spooled = {d["id"] for d in webhookfiles.load(self.data_dir)[0]}
        self.assertEqual(spooled, {queued, webhook.webhook_id(self.event(1), "agent")})
        self.assertNotIn(oldest, self.webhooks.deliveries)
        self.clock.advance(0)
        yield defer.Deferred.fromCoroutine(self.settle())

    @defer.inlineCallbacks
    def test_dead_letters_expire(self):
        """A dead letter expires DEAD_TTL seconds after it died, a restart between
        counting from its death; memory and spool both lose it."""
        yield defer.Deferred.fromCoroutine(self.dead(0))
        self.clock.advance(webhook.DEAD_TTL // 2)
        self.webhooks.stopService()
        again = self.webhooks = self.make()
        again.startService()
        self.addCleanup(again.stopService)
        self.clock.advance(webhook.DEAD_TTL - webhook.DEAD_TTL // 2 - 1)
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual(again.status(["agent"])[0]["dead"], 1)
        self.clock.advance(1)
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual((again.deliveries, webhookfiles.load(self.data_dir)[0]), ({}, []))

    @defer.inlineCallbacks
    def test_retried_dead_letter_does_not_expire(self):
        """A dead letter queued again by HOOK-RETRY loses its expiry."""
        yield defer.Deferred.fromCoroutine(self.dead(0))
        yield defer.Deferred.fromCoroutine(self.webhooks.retry("agent"))
        self.clock.advance(0)
        yield defer.Deferred.fromCoroutine(self.settle())
        self.clock.advance(webhook.DEAD_TTL - 1)
        yield defer.Deferred.fromCoroutine(self.settle())
        (spooled,) = webhookfiles.load(self.data_dir)[0]
        self.assertEqual(spooled["attempts"], 2)


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
        (spooled,) = webhookfiles.load(self.data_dir)[0]
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
