"""Webhook deliveries (L2): the spool, signed POSTs, retries (docs/hooks.md, "Webhooks").

L{Webhooks.enqueue} is what L{aimx.hooks.HookRunner} calls for a C{type = "webhook"}
hook: the payload is built from the stored file (read in a thread, as the
mailbox owner's file, L{safefs.open_owned}), written to the spool
(C{<data_dir>/webhooks/<webhook-id>.json}, root-only) and only then attempted,
so a restart or a crash loses nothing; a restarted daemon tries every pending
delivery within L{RESTART_DELAY} seconds.  Memory holds each delivery's state,
never its payload (read from the spool at each attempt).  A delivery belongs to
its hook's name, mailbox and URL: one whose hook is no longer so is dropped.  A
hook has at most L{webhook.SPOOL_CAP} deliveries spooled (past it its oldest dead
letter goes, else the new event is not queued); dead letters expire after
L{webhook.DEAD_TTL} seconds on the clock.

An attempt resolves the URL's host with aimx's resolver (the C{aimx-dns} pool,
so C{AIMX_NAMESERVERS} applies), refuses an address on the host's own network
unless C{allow_private} (L{webhookurl.refusal}; the server's own addresses are
those on the host's interfaces, read at start and on SIGHUP,
L{Webhooks.read_addresses}), and connects to that very
address (L{_Pinned}) -- a second lookup by the HTTP client could answer
otherwise (DNS rebinding).  TLS names the URL's host (SNI) and verifies the
certificate against it.  Twisted's L{Agent} follows no redirects; the
answer's body is read up to L{RESPONSE_CAP} bytes and dropped; C{timeout_secs}
bounds the whole exchange.  2xx: delivered; 410: the hook is disabled
(config.toml) and its deliveries dead-lettered; anything else: retried after
L{webhook.RETRY_DELAYS}, dead-lettered after L{webhook.ATTEMPTS}.  At most
L{PER_URL} attempts to one URL run at once.

C{treq} is not used: it adds redirects, cookies and JSON helpers this module
must not have, and nothing here needs more than C{Agent.request}.
"""

import os

from twisted.application import service
from twisted.internet import defer, ssl
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer
from zope.interface import implementer

from aimx import __version__
from aimx.auth.resolver import DnsNoRecord
from aimx.core import frontmatter, webhook, webhookurl
from aimx.core.hookspec import HookEvent
from aimx.idle import Pending
from aimx.logs import Logger
from aimx.store import passwd, safefs, webhookfiles

log = Logger(namespace="aimx.webhook")

#: Attempts to one URL running at once.
PER_URL = 4
#: Bytes of an answer's body read (and dropped).
RESPONSE_CAP = 64 * 1024
#: Seconds after start-up by which every pending delivery is attempted.
RESTART_DELAY = 1.0
#: Always this server's own: a connection to them reaches the host itself.
_UNSPECIFIED = frozenset({"0.0.0.0", "::"})


class Refused(Exception):
    """No address of the URL's host may be connected to."""


@implementer(IBodyProducer)
class _Body:
    """A request body already in memory."""

    def __init__(self, data: bytes):
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer):
        consumer.write(self.data)
        return defer.succeed(None)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


class _Discard(Protocol):
    """Reads an answer's body up to L{RESPONSE_CAP} bytes, keeps none of it."""

    def __init__(self, done: defer.Deferred):
        self.done = done
        self.left = RESPONSE_CAP

    def dataReceived(self, data):
        self.left -= len(data)
        if self.left < 0:
            self.transport.stopProducing()

    def connectionLost(self, reason):
        if not self.done.called:
            self.done.callback(None)


@implementer(IAgentEndpointFactory)
class _Pinned:
    """Connects to one checked address, speaking TLS for the URL's host name."""

    def __init__(self, reactor, address: str, host: str, timeout: float, trust_root):
        self.reactor, self.address, self.host = reactor, address, host
        self.timeout, self.trust_root = timeout, trust_root

    def endpointForURI(self, uri):
        kind = TCP6ClientEndpoint if ":" in self.address else TCP4ClientEndpoint
        endpoint = kind(self.reactor, self.address, uri.port, timeout=self.timeout)
        if uri.scheme == b"https":
            options = ssl.optionsForClientTLS(self.host, trustRoot=self.trust_root)
            endpoint = wrapClientTLS(options, endpoint)
        return endpoint


class Webhooks(service.Service):
    """The webhook deliveries of one daemon; see the module docstring.

    @param config: returns the live configuration (the hooks, by name).
    @param resolver: aimx's L{aimx.auth.resolver.Resolver}, used in C{run_dns}.
    @param run_in_thread: disk work.
    @param run_dns: lookups (the C{aimx-dns} pool).
    @param interface_addresses: returns the addresses on the host's interfaces
        (blocking; L{aimx.host.addresses.interface_addresses}), refused as the
        server's own.
    @param trust_root: the TLS trust root; C{None}: the platform's.
    @param disable: C{name -> Deferred}: set C{disabled = true} on a hook
        (L{aimx.control.ops.Control.hook_disable}).
    """

    def __init__(self, reactor, *, config, config_dir: str, data_dir: str, resolver,
                 run_in_thread, run_dns, clock=None, interface_addresses=tuple, trust_root=None,
                 disable=None, resolve_owner=passwd.owner, euid: int | None = None,
                 spool_cap: int = webhook.SPOOL_CAP):
        self.reactor = reactor
        self.clock = reactor if clock is None else clock
        self.config = config
        self.config_dir = config_dir
        self.data_dir = data_dir
        self.resolver = resolver
        self.run_in_thread = run_in_thread
        self.run_dns = run_dns
        self.interface_addresses = interface_addresses
        #: The server's own addresses; C{None} until first read.
        self.own: frozenset[str] | None = None
        self.trust_root = ssl.platformTrust() if trust_root is None else trust_root
        self.disable = disable
        self.resolve_owner = resolve_owner
        self.euid = os.geteuid() if euid is None else euid
        self.spool_cap = spool_cap
        self.deliveries: dict[str, dict] = {}
        self._timers: dict = {}
        self._slots: dict[str, defer.DeferredSemaphore] = {}
        self._pending = Pending()

    # -- the service -------------------------------------------------------------

    def startService(self):
        super().startService()
        self._pending.track(self.read_addresses())
        loaded = self.run_in_thread(webhookfiles.load, self.data_dir)
        loaded.addCallback(self._resume)
        loaded.addErrback(lambda f: log.failure("webhook spool could not be read", f))
        self._pending.track(loaded)

    def _resume(self, loaded: tuple[list[dict], list[str]]) -> None:
        deliveries, skipped = loaded
        for name in skipped:
            log.warn("webhook spool file not read, left in place", file=name)
        now = self.clock.seconds()
        pending = 0
        for delivery in deliveries:
            if delivery["id"] in self.deliveries:
                continue
            self.deliveries[delivery["id"]] = delivery
            if delivery.get("dead"):
                self._expire_later(delivery)
            else:
                pending += 1
                wait = min(max(delivery.get("next_at", now) - now, 0), RESTART_DELAY)
                self._schedule(delivery, wait)
        if deliveries:
            log.info("webhook spool read", pending=pending, dead=len(deliveries) - pending)

    def read_addresses(self) -> defer.Deferred:
        """Read the host's interface addresses again (at start and on SIGHUP).

        Fires with the new set of own addresses; when they cannot be read, the
        previous set is kept (at first: the unspecified addresses only).
        """
        reading = self.run_in_thread(self.interface_addresses)

        def read(found):
            self.own = _UNSPECIFIED | frozenset(found)
            log.info("webhook own addresses read", count=len(self.own))
            return self.own

        def unreadable(failure):
            log.warn("webhook own addresses not read, keeping the previous ones",
                     error=str(failure.value))
            self.own = _UNSPECIFIED if self.own is None else self.own
            return self.own

        return reading.addCallbacks(read, unreadable)

    def stopService(self):
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
        return super().stopService()

    def idle(self) -> defer.Deferred:
        """Fires once no spool write, lookup or request is under way."""
        return self._pending.idle()

    # -- queueing ----------------------------------------------------------------

    async def enqueue(self, event: HookEvent, hook) -> str | None:
        """Spool one event for one webhook and start its first attempt.

        @return: its C{webhook-id}; C{None}: the hook's spool is full of
            pending deliveries and the event was not queued.
        """
        webhook_id = webhook.webhook_id(event, hook.name)
        if webhook_id in self.deliveries:
            return webhook_id
        payload = await self.run_in_thread(self._payload, event)
        if webhook_id in self.deliveries:
            return webhook_id
        spooled = sorted((d for d in self.deliveries.values() if d["hook"] == hook.name),
                         key=lambda d: d["created"])
        evicted = None
        if len(spooled) >= self.spool_cap:
            evicted = next((d for d in spooled if d["dead"]), None)
            if evicted is None:
                log.warn("webhook not queued, its spool is full", hook_name=hook.name,
                         mailbox=event.mailbox.name, email_id=event.id, cap=self.spool_cap)
                return None
            self._forget(evicted)
            log.warn("webhook dead letter dropped, its spool is full", hook_name=hook.name,
                     mailbox=evicted["mailbox"], webhook_id=evicted["id"], cap=self.spool_cap)
        now = self.clock.seconds()
        delivery = {
            "id": webhook_id, "hook": hook.name, "mailbox": event.mailbox.name, "url": hook.url,
            "event": event.event, "email_id": event.id,
            "attempts": 0, "created": now, "next_at": now, "last_error": None, "dead": False,
        }
        self.deliveries[webhook_id] = delivery
        try:
            if evicted is not None:
                await self.run_in_thread(webhookfiles.discard, self.data_dir, evicted["id"])
            await self.run_in_thread(webhookfiles.save, self.data_dir, delivery, payload)
        except BaseException:
            self.deliveries.pop(webhook_id, None)
            raise
        log.info("webhook queued", hook_name=hook.name, webhook_id=webhook_id,
                 event=event.event, mailbox=event.mailbox.name, email_id=event.id)
        self._schedule(delivery, 0)
        return webhook_id

    def _payload(self, event: HookEvent) -> bytes:
        """The event's payload, from its stored file (blocking)."""
        fields, body = self._stored(event)
        return webhook.payload(event, fields, body)

    def _stored(self, event: HookEvent):
        """The stored file's frontmatter and body; C{(None, b"")} when there is none."""
        if not event.filepath:
            return None, b""
        owner = self.resolve_owner(event.mailbox.owner)
        uid = owner.uid if self.euid == 0 and owner.uid is not None else self.euid
        directory, name = os.path.split(event.filepath)
        try:
            fd = safefs.open_owned(directory, name, uid)
        except (OSError, safefs.Refused) as e:
            log.warn("webhook payload file not read, sending the event's fields",
                     path=event.filepath, error=getattr(e, "strerror", None) or "refused")
            return None, b""
        try:
            data = safefs.read_up_to(fd, webhook.FILE_CAP)
        finally:
            os.close(fd)
        try:
            return frontmatter.parse(data)
        except ValueError:
            return None, data

    def status(self, names) -> list[dict]:
        """Per named webhook: deliveries pending (not yet tried), failing, dead-lettered.

        Only deliveries queued for the hook as it is now (its mailbox and URL) count.
        """
        rows = {name: {"name": name, "pending": 0, "failing": 0, "dead": 0, "last_error": None}
                for name in names}
        for delivery in sorted(self.deliveries.values(), key=lambda d: d["created"]):
            row = rows.get(delivery["hook"])
            if row is None or self._hook(delivery) is None:
                continue
            kind = "dead" if delivery["dead"] else "failing" if delivery["attempts"] else "pending"
            row[kind] += 1
            row["last_error"] = delivery["last_error"] or row["last_error"]
        return [rows[name] for name in sorted(rows)]

    async def retry(self, name: str) -> int:
        """Queue the hook's dead-lettered deliveries again, from attempt 1."""
        dead = [d for d in self.deliveries.values()
                if d["hook"] == name and d["dead"] and self._hook(d) is not None]
        for delivery in dead:
            self._cancel(delivery["id"])
            delivery.update(dead=False, attempts=0, last_error=None,
                            next_at=self.clock.seconds())
            delivery.pop("dead_at", None)
            await self.run_in_thread(webhookfiles.save, self.data_dir, delivery)
            self._schedule(delivery, 0)
        return len(dead)

    async def purge(self, name: str) -> int:
        """Drop every delivery of the hook C{name}, pending or dead, from memory and
        the spool (its HOOK-DELETE: a later hook of that name gets none of them).

        @return: how many were dropped.
        """
        dropped = [d for d in self.deliveries.values() if d["hook"] == name]
        for delivery in dropped:
            self._forget(delivery)
        removed = await self.run_in_thread(webhookfiles.discard_hook, self.data_dir, name)
        return len({d["id"] for d in dropped} | set(removed))

    # -- attempts ----------------------------------------------------------------

    def _schedule(self, delivery: dict, delay: float) -> None:
        self._timers[delivery["id"]] = self.clock.callLater(delay, self._start, delivery["id"])

    def _start(self, webhook_id: str) -> None:
        self._timers.pop(webhook_id, None)
        attempt = defer.Deferred.fromCoroutine(self._attempt(webhook_id))
        attempt.addErrback(lambda f: log.failure("webhook attempt crashed", f))
        self._pending.track(attempt)

    def _cancel(self, webhook_id: str) -> None:
        timer = self._timers.pop(webhook_id, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _forget(self, delivery: dict) -> None:
        """Drop a delivery from memory (its spool file is the caller's to remove)."""
        self._cancel(delivery["id"])
        del self.deliveries[delivery["id"]]

    def _expire_later(self, delivery: dict) -> None:
        """Expire a dead letter L{webhook.DEAD_TTL} seconds after it died."""
        now = self.clock.seconds()
        left = max(delivery.get("dead_at", now) + webhook.DEAD_TTL - now, 0)
        self._timers[delivery["id"]] = self.clock.callLater(left, self._expire, delivery)

    def _expire(self, delivery: dict) -> None:
        self._timers.pop(delivery["id"], None)
        if not self._current(delivery) or not delivery["dead"]:
            return
        del self.deliveries[delivery["id"]]
        log.info("webhook dead letter expired", hook_name=delivery["hook"],
                 mailbox=delivery["mailbox"], webhook_id=delivery["id"])
        removing = self.run_in_thread(webhookfiles.discard, self.data_dir, delivery["id"])
        removing.addErrback(lambda f: log.failure("webhook spool file not removed", f))
        self._pending.track(removing)

    def _hook(self, delivery: dict):
        """The webhook a delivery was queued for, if it is still configured as it was
        then: same name, same mailbox, same URL; else C{None} (a hook deleted, and its
        name perhaps reused by another owner, never receives it)."""
        for mailbox in self.config().mailboxes:
            if mailbox.name != delivery["mailbox"]:
                continue
            for hook in mailbox.hooks:
                if (hook.name == delivery["hook"] and hook.type == "webhook"
                        and hook.url == delivery.get("url")):
                    return hook
        return None

    def _current(self, delivery: dict) -> bool:
        """Whether the delivery is still spooled (not purged, delivered or dropped)."""
        return self.deliveries.get(delivery["id"]) is delivery

    async def _attempt(self, webhook_id: str) -> None:
        delivery = self.deliveries.get(webhook_id)
        if delivery is None or delivery["dead"]:
            return
        hook = self._hook(delivery)
        if hook is None:
            log.warn("webhook dropped, its hook no longer exists", webhook_id=webhook_id,
                     hook_name=delivery["hook"], mailbox=delivery["mailbox"])
            del self.deliveries[webhook_id]
            await self.run_in_thread(webhookfiles.discard, self.data_dir, webhook_id)
            return
        if hook.disabled:
            await self._dead(delivery, "the hook is disabled")
            return
        slots = self._slots.setdefault(hook.url, defer.DeferredSemaphore(PER_URL))
        await slots.acquire()
        try:  # the payload is in memory only while its attempt runs
            body = await self.run_in_thread(webhookfiles.read_payload, self.data_dir, webhook_id)
        except (OSError, ValueError) as e:
            slots.release()
            if self._current(delivery):
                log.warn("webhook dropped, its spool file is unreadable", webhook_id=webhook_id,
                         hook_name=hook.name, mailbox=delivery["mailbox"],
                         error=getattr(e, "strerror", None) or str(e))
                del self.deliveries[webhook_id]
                await self.run_in_thread(webhookfiles.discard, self.data_dir, webhook_id)
            return
        started = self.clock.seconds()
        code = error = None
        try:
            code = await self._post(hook, delivery, body)
        except Refused as e:
            error = f"refused: {e}"
        except defer.TimeoutError:
            error = f"no answer within {hook.timeout_secs}s"
        except Exception as e:
            error = _describe(e)
        finally:
            slots.release()
        duration_ms = int((self.clock.seconds() - started) * 1000)
        if not self._current(delivery):
            return  # purged (HOOK-DELETE) while the attempt ran
        result = webhook.RETRY if code is None else webhook.outcome(code)
        attempt = delivery["attempts"] + 1
        if result == webhook.DELIVERED:
            del self.deliveries[webhook_id]
            await self.run_in_thread(webhookfiles.discard, self.data_dir, webhook_id)
            log.info("webhook delivered", hook_name=hook.name, mailbox=delivery["mailbox"],
                     webhook_id=webhook_id, status=code, attempt=attempt,
                     duration_ms=duration_ms)
        elif result == webhook.GONE:
            log.warn("webhook receiver answered 410 Gone, hook disabled", hook_name=hook.name,
                     mailbox=delivery["mailbox"], host=webhookurl.parse(hook.url).host,
                     advice=f"aimx hooks enable {hook.name}; aimx hooks retry {hook.name}")
            if self.disable is not None:
                await self.disable(hook.name)
            for other in [d for d in self.deliveries.values()
                          if d["hook"] == hook.name and self._hook(d) is hook]:
                await self._dead(other, "410 Gone: the hook is disabled")
        else:
            delivery["attempts"] = attempt
            delivery["last_error"] = error or f"HTTP {code}"
            wait = webhook.retry_delay(attempt)
            if wait is None:
                await self._dead(delivery, delivery["last_error"])
                return
            delivery["next_at"] = self.clock.seconds() + wait
            await self.run_in_thread(webhookfiles.save, self.data_dir, delivery)
            log.warn("webhook attempt failed", hook_name=hook.name, mailbox=delivery["mailbox"],
                     webhook_id=webhook_id, attempt=attempt, error=delivery["last_error"],
                     retry_in_s=wait)
            self._schedule(delivery, wait)

    async def _dead(self, delivery: dict, why: str) -> None:
        if not self._current(delivery):
            return
        self._cancel(delivery["id"])
        delivery.update(dead=True, last_error=why, dead_at=self.clock.seconds())
        self._expire_later(delivery)
        await self.run_in_thread(webhookfiles.save, self.data_dir, delivery)
        log.warn("webhook dead-lettered", hook_name=delivery["hook"],
                 mailbox=delivery["mailbox"], webhook_id=delivery["id"],
                 attempts=delivery["attempts"], error=why)

    async def _post(self, hook, delivery: dict, body: bytes) -> int:
        """One signed POST to the first allowed address; the answer's status code."""
        target = webhookurl.parse(hook.url)
        if target.literal:
            candidates = [target.host]
        else:
            candidates = await self.run_dns(self._addresses, target.host)
        own = self.own if self.own is not None else await self.read_addresses()
        refusals = []
        for candidate in candidates:
            why = None if hook.allow_private else webhookurl.refusal(candidate, own)
            if why is None:
                break
            refusals.append(why)
        else:
            raise Refused(f"{target.host} resolves only to {refusals[0]}" if refusals
                          else f"{target.host} has no address")
        path = webhook.secret_path(self.config_dir, hook.name, hook.secret_file)
        key = await self.run_in_thread(webhookfiles.read_secret, path)
        values = webhook.headers(key, delivery["id"], int(self.clock.seconds()), body)
        headers = Headers({name: [value] for name, value in values.items()})
        headers.addRawHeader("user-agent", f"aimx/{__version__}")
        agent = Agent.usingEndpointFactory(
            self.reactor,
            _Pinned(self.reactor, candidate, target.host, hook.timeout_secs, self.trust_root))
        exchange = defer.Deferred.fromCoroutine(
            _exchange(agent, hook.url.encode("ascii"), headers, body))
        exchange.addTimeout(hook.timeout_secs, self.clock)
        return await exchange

    def _addresses(self, host: str) -> list[str]:
        """A, else AAAA, addresses of C{host} (blocking: run in the DNS pool)."""
        for ipv6 in (False, True):
            try:
                return self.resolver.addresses(host, ipv6)
            except DnsNoRecord:
                continue
        return []



async def _exchange(agent, url: bytes, headers: Headers, body: bytes) -> int:
    response = await agent.request(b"POST", url, headers, _Body(body))
    done = defer.Deferred()
    response.deliverBody(_Discard(done))
    await done
    return response.code


def _describe(error: Exception) -> str:
    """A failed attempt's one line (never the request or the secret)."""
    text = str(error).strip() or type(error).__name__
    reasons = getattr(error, "reasons", None)
    if reasons:  # twisted.web's ResponseNeverReceived and friends wrap Failures
        text = "; ".join(str(r.value) or type(r.value).__name__ for r in reasons)
    return text.splitlines()[0][:300] if text else type(error).__name__
