"""Webhook hooks end to end: SMTP -> store -> spool -> a real HTTPS receiver on loopback.

The receiver is a Twisted web server with a self-signed certificate for its host
name, which the daemon trusts through C{SSL_CERT_FILE}; it checks every request's
signature with the C{standardwebhooks} reference library.  The host name is
published by the fixture DNS, so the daemon resolves it with its own resolver.
"""

import json
import os

from standardwebhooks import Webhook
from twisted.internet import defer, reactor, ssl, task
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.web import resource, server

from aimx.core import webhook
from aimx.logs import event_line
from aimx.store import keys, webhookfiles
from aimx.testing.fakes import message
from tests.integration.base import (
    DOMAIN,
    DaemonTestCase,
    base_config,
    load_toml,
    reserve_port,
    stop_daemon,
)

HOST = "hooks.example.test"
SECRET = webhook.make_secret(bytes(range(100, 132)))
#: Seconds a test waits for something the daemon does by itself.
PATIENCE = 20


class Receiver(resource.Resource):
    """Records each POST (headers, body, whether its signature verifies); answers C{code}."""

    isLeaf = True

    def __init__(self, code: int = 204):
        super().__init__()
        self.code = code
        self.requests: list[dict] = []
        self.arrived = defer.Deferred()

    def render_POST(self, request):
        body = request.content.read()
        headers = {k.decode().lower(): v[0].decode()
                   for k, v in request.requestHeaders.getAllRawHeaders()}
        try:
            Webhook(SECRET).verify(body, headers)
            verified = True
        except Exception:
            verified = False
        self.requests.append({"headers": headers, "body": json.loads(body),
                              "verified": verified})
        request.setResponseCode(self.code)
        arrived, self.arrived = self.arrived, defer.Deferred()
        reactor.callLater(0, arrived.callback, None)
        return b"x" * (100 * 1024)  # more than the daemon reads


class WebhookTestCase(DaemonTestCase):
    def setUp(self):
        super().setUp()
        tls = os.path.join(self.config_dir, "receiver")
        self.cert, self.key = os.path.join(tls, "cert.pem"), os.path.join(tls, "key.pem")
        keys.generate_self_signed(self.cert, self.key, HOST)
        self.environ["SSL_CERT_FILE"] = self.cert
        self.dns.add_a(HOST, "127.0.0.1")
        self.secret_file = os.path.join(self.config_dir, "agent.secret")
        with open(self.secret_file, "w") as f:
            f.write(SECRET + "\n")
        os.chmod(self.secret_file, 0o600)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.port_number = reserve_port(self)

    def listen(self, receiver: Receiver):
        with open(self.cert, "rb") as c, open(self.key, "rb") as k:
            options = ssl.PrivateCertificate.loadPEM(c.read() + k.read()).options()
        port = reactor.listenSSL(self.port_number, server.Site(receiver), options,
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port

    def start(self, **fields):
        hook = {"name": "agent", "event": "on_receive", "type": "webhook",
                "url": f"https://{HOST}:{self.port_number}/mail",
                "secret_file": self.secret_file, "fire_on_untrusted": True,
                "allow_private": True, **fields}
        self.write_config(base_config(self.data_dir, hooks=[("alice", hook)]))
        return self.start_daemon()

    def mail(self, subject="hello"):
        return self.smtp(message(subject=subject), [f"alice@{DOMAIN}"])

    async def until(self, done, what: str):
        for _ in range(PATIENCE * 20):
            if done():
                return
            await task.deferLater(reactor, 0.05, lambda: None)
        self.fail(f"timed out waiting for {what}")

    def spool(self) -> list[dict]:
        return webhookfiles.load(self.data_dir)[0]

    def logged(self) -> str:
        return "\n".join(event_line(e, journal=True) for e in self.events)


class DeliveryTests(WebhookTestCase):
    @defer.inlineCallbacks
    def test_delivered(self):
        """One signed POST, verified by the reference library; the payload is the stored
        mail; the spool is empty after; the secret is in no log and no config file."""
        receiver = Receiver()
        self.listen(receiver)
        self.start()
        arrived = receiver.arrived
        reply = yield self.mail("hello webhook")
        self.assertEqual(reply[0], 250)
        yield arrived
        (request,) = receiver.requests
        self.assertTrue(request["verified"])
        body = request["body"]
        self.assertEqual((body["type"], body["mailbox"], body["subject"]),
                         ("email.received", "alice", "hello webhook"))
        self.assertEqual(request["headers"]["host"], f"{HOST}:{self.port_number}")
        self.assertTrue(request["headers"]["webhook-id"].startswith("msg_"))
        yield defer.Deferred.fromCoroutine(self.until(lambda: not self.spool(), "the spool"))
        self.assertIn("webhook delivered hook_name=agent", self.logged())
        key = SECRET.removeprefix("whsec_")
        self.assertNotIn(key, self.logged())
        with open(os.path.join(self.config_dir, "config.toml")) as f:
            self.assertNotIn(key, f.read())

    @defer.inlineCallbacks
    def test_down_restart_once(self):
        """Receiver down: the event waits in the spool; after a restart it is delivered
        once, with the webhook-id it was queued with."""
        daemon = self.start()
        yield self.mail()
        yield defer.Deferred.fromCoroutine(self.until(
            lambda: any(d["attempts"] for d in self.spool()), "a failed attempt"))
        (queued,) = self.spool()
        self.assertFalse(queued["dead"])
        yield stop_daemon(daemon)
        receiver = Receiver()
        self.listen(receiver)
        arrived = receiver.arrived
        self.start_daemon()
        yield arrived
        yield defer.Deferred.fromCoroutine(self.until(lambda: not self.spool(), "the spool"))
        yield self.daemon.webhooks.idle()
        (request,) = receiver.requests
        self.assertTrue(request["verified"])
        self.assertEqual(request["headers"]["webhook-id"], queued["id"])

    @defer.inlineCallbacks
    def test_gone_disables(self):
        """A 410 sets disabled = true in config.toml and says so in the log."""
        receiver = Receiver(410)
        self.listen(receiver)
        self.start()
        arrived = receiver.arrived
        yield self.mail()
        yield arrived
        config = os.path.join(self.config_dir, "config.toml")
        yield defer.Deferred.fromCoroutine(self.until(
            lambda: load_toml(config)["mailboxes"]["alice"]["hooks"][0].get("disabled"),
            "the hook disabled"))
        self.assertIn("webhook receiver answered 410 Gone, hook disabled hook_name=agent",
                      self.logged())
        self.assertTrue(self.daemon.live.current.mailbox("alice").hooks[0].disabled)
        yield self.mail("second")
        yield self.daemon.hooks.idle()
        self.assertEqual(len(receiver.requests), 1)

    @defer.inlineCallbacks
    def test_private_refused(self):
        """Without allow_private, a host that resolves to loopback is never connected to."""
        receiver = Receiver()
        self.listen(receiver)
        self.start(allow_private=False)
        yield self.mail()
        yield defer.Deferred.fromCoroutine(self.until(
            lambda: any(d["attempts"] for d in self.spool()), "a refused attempt"))
        (queued,) = self.spool()
        self.assertIn("a loopback address (127.0.0.1)", queued["last_error"])
        self.assertEqual(receiver.requests, [])
