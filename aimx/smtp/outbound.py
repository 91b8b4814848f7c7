"""Outbound delivery straight to the recipients' MX hosts (L2).

L{MxTransport.plan} resolves every recipient domain (RFC 5321 §5.1);
L{MxTransport.deliver} then runs one SMTP transaction per domain, all domains at once,
trying the MX hosts in preference order until each recipient is delivered. No
queue and no retries: the caller retries deferred recipients. L{AimxSender} is Twisted's
ESMTPSender fixed for MX delivery (docs/design.md, "House rules").
"""

import io

from OpenSSL import SSL
from twisted.internet import defer, error, protocol, ssl
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.mail import smtp
from zope.interface import implementer

from aimx.auth.resolver import DnsNoDomain, DnsNoRecord, DnsTempError
from aimx.core.delivery import (
    DEFERRED,
    DELIVERED,
    FAILED,
    Lookup,
    Plan,
    RcptResult,
    Route,
    address_error,
    group_by_domain,
    host_results,
    needs_addresses,
    reply_outcome,
    route_for,
    settle,
)
from aimx.logs import Logger

_log = Logger(namespace="aimx.send")


def _level(status: str):
    """How a recipient's outcome is logged: delivered at info, deferred at notice,
    failed (refused for good) at warning."""
    return {DELIVERED: _log.info, DEFERRED: _log.notice}.get(status, _log.warn)


class _HostSkipped(Exception):
    """An MX host that cannot be tried; the message is the error for its recipients."""


def _lookup(query, *args) -> Lookup:
    """Blocking: one query's outcome as the routing rules read it."""
    try:
        return Lookup(records=tuple(query(*args)))
    except DnsNoDomain:
        return Lookup(nxdomain=True)
    except DnsNoRecord:
        return Lookup()
    except DnsTempError as e:
        return Lookup(error=str(e))


def _route(resolver, domain: str, rcpts: tuple[str, ...]) -> Route:
    """Blocking: where mail for C{domain} goes (RFC 5321 §5.1; the rules are L{route_for}).

    The MX query; when it gives no records (and the domain exists), the A query and,
    unless that answered or said NXDOMAIN, the AAAA query (implicit MX, RFC 5321 §5.1).
    """
    mx = _lookup(resolver.mx, domain)
    addresses = []
    if needs_addresses(mx):
        for ipv6 in (False, True):
            addresses.append(_lookup(resolver.addresses, domain, ipv6))
            if addresses[-1].records or addresses[-1].nxdomain:
                break
    return route_for(domain, rcpts, mx, addresses)


def _address(resolver, host: str, ipv6: bool) -> str:
    """Blocking: the address to connect to for C{host}.

    The first A address; with C{ipv6}, the first AAAA address, else the first A.

    @raise _HostSkipped: no usable record, or the lookups failed.
    """
    failure = None
    for family in (True, False) if ipv6 else (False,):
        try:
            return resolver.addresses(host, ipv6=family)[0]
        except DnsNoRecord:
            continue
        except DnsTempError as e:
            failure = failure or e
    if failure is not None:
        raise _HostSkipped(f"{host}: DNS lookup failed: {failure}")
    if ipv6:
        raise _HostSkipped(f"{host}: no A or AAAA record; skipping")
    raise _HostSkipped(f"{host}: no A record (enable_ipv6 = false); skipping")


def _text(resp: bytes | str | None) -> str:
    """A reply or error text on one line."""
    if isinstance(resp, bytes):
        resp = resp.decode("utf-8", "replace")
    return " ".join((resp or "").split("\n"))


def _lost_outcome(host: str, reason) -> tuple[str, str]:
    """Classify a connection that failed or ended before the transaction did (temporary)."""
    if reason.check(error.TimeoutError):
        return DEFERRED, f"Connection timed out to {host}"
    text = reason.getErrorMessage().rstrip(".")
    if reason.check(SSL.Error):
        return DEFERRED, f"{host}: TLS failed: {text}"
    return DEFERRED, f"{host}: {text}"


@implementer(IOpenSSLClientConnectionCreator)
class _OpportunisticTLS:
    """STARTTLS client side: any certificate is accepted (docs/security.md); SNI = the MX host."""

    def __init__(self, options: ssl.CertificateOptions, host: str):
        self._options = options
        self._host = host

    def clientConnectionForTLS(self, tlsProtocol) -> SSL.Connection:
        connection = self._options.clientConnectionForTLS(tlsProtocol)
        # RFC 6066 §3: SNI carries DNS host names only.
        if self._host.strip(".") and not (isIPAddress(self._host) or isIPv6Address(self._host)):
            connection.set_tlsext_host_name(self._host.encode("ascii"))
        return connection


class AimxSender(smtp.ESMTPSender):
    """ESMTPSender for one transaction with an MX host.

    EHLO without fallback to HELO, opportunistic STARTTLS, no AUTH. Whatever ends the
    transaction is reported once to the factory with the RCPT replies seen so far.
    """

    requireAuthentication = False
    requireTransportSecurity = False
    _at_line_start = True

    def __init__(self, factory: "_SenderFactory"):
        # Arguments: no username, no secret (no AUTH), STARTTLS options, EHLO name, log size.
        super().__init__(None, None, factory.tls, factory.helo, 2 * len(factory.rcpts) + 10)
        self.factory = factory
        self.timeout = factory.timeout

    def _rcpt_replies(self) -> dict[str, tuple[int, str]]:
        return {addr.decode("ascii"): (code, _text(resp))
                for addr, code, resp in self.toAddressesResult}

    def connectionMade(self):
        # Without it, Nagle holds the last piece of the message until the MX's
        # delayed ACK: about 40 ms on most sends (bench/send_bench.py).
        self.transport.setTcpNoDelay(True)
        super().connectionMade()

    def transformChunk(self, chunk: bytes) -> bytes:
        # Gotcha 12: the stock transform only stuffs a dot that follows an LF inside the
        # same chunk; a dot opening a chunk after an LF must be doubled too (RFC 5321 §4.5.2).
        if self._at_line_start and chunk.startswith(b"."):
            chunk = b"." + chunk
        self._at_line_start = chunk.endswith(b"\n")
        return super().transformChunk(chunk)

    def esmtpState_starttls(self, code, resp):
        # Bytes that came in plain text behind the 220 must not be read as replies over TLS
        # (RFC 3207 §4.2; the client side of gotcha 1).
        self.clearLineBuffer()
        super().esmtpState_starttls(code, resp)

    def esmtpEHLORequired(self, code=-1, resp=None):
        # The stock method reports 502 whatever the server said; keep its reply (421 is temporary).
        self.sendError(smtp.SMTPClientError(code, resp, self.log.str()))

    def sentMail(self, code, resp, numOk, addresses, log):
        self.factory.record(reply_outcome(self.factory.host, code, _text(resp)),
                            self._rcpt_replies())

    def sendError(self, exc):
        # Replaces SenderMixin.sendError (its retry logic and a second errback).
        if not isinstance(exc, smtp.SMTPClientError):
            # The body transfer stopped because the connection went: connectionLost says why.
            self.transport.abortConnection()
            return
        self.factory.record(self._error_outcome(exc), self._rcpt_replies())
        if exc.isFatal:
            # abort, not loseConnection: a peer that stopped reading would keep us waiting
            self.transport.abortConnection()
        else:
            self._disconnectFromServer()

    def _error_outcome(self, exc: smtp.SMTPClientError) -> tuple[str, str]:
        host, text = self.factory.host, _text(exc.resp)
        if isinstance(exc, smtp.SMTPTimeoutError):
            return DEFERRED, f"Connection timed out to {host}"
        if isinstance(exc, smtp.TLSError):
            return DEFERRED, f"{host}: STARTTLS failed: {exc.code} {text}"
        if exc.code >= 400:
            return reply_outcome(host, exc.code, text)
        return DEFERRED, f"{host}: {text}"

    def connectionLost(self, reason=protocol.connectionDone):
        self.factory.record(_lost_outcome(self.factory.host, reason), self._rcpt_replies())
        super().connectionLost(reason)


class _SenderFactory(protocol.ClientFactory):
    """One connection to one MX host; L{done} fires with its results once it is closed.

    C{fromEmail}, C{toEmail} and C{file} are what Twisted's SenderMixin reads.
    """

    noisy = False

    def __init__(self, *, host, helo, tls, timeout, mail_from, rcpts, data):
        self.host, self.helo, self.tls, self.timeout = host, helo, tls, timeout
        self.rcpts = rcpts
        self.fromEmail = mail_from
        self.toEmail = [rcpt.encode("ascii") for rcpt in rcpts]
        self.file = io.BytesIO(data)
        self.done: defer.Deferred[list[RcptResult]] = defer.Deferred()
        self._results = None

    def buildProtocol(self, addr):
        return AimxSender(self)

    def record(self, final: tuple[str, str], rcpt_replies) -> None:
        """Keep the first outcome of the transaction; later ones are its aftermath."""
        if self._results is None:
            self._results = host_results(self.host, self.rcpts, rcpt_replies, final)

    def clientConnectionFailed(self, connector, reason):
        self.record(_lost_outcome(self.host, reason), {})
        self.done.callback(self._results)

    def clientConnectionLost(self, connector, reason):
        self.done.callback(self._results)


#: DNS lookups in flight at once, over every send (the pool also serves inbound).
MAX_LOOKUPS = 4
#: MX connections open at once, over every send.
MAX_CONNECTIONS = 32


class MxTransport:
    """Delivers a signed message to the recipients' MX hosts.

    Usage: C{plan = await t.plan(rcpts)}; when C{plan.missing}, send nothing (the
    results are L{aimx.core.delivery.held_back}); else
    C{results = await t.deliver(mail_from, plan, message)}.
    """

    def __init__(self, *, reactor, resolver, run_in_thread, helo: str, port: int = 25,
                 ipv6: bool = False, timeout: float = 60.0):
        """
        @param reactor: provides C{connectTCP}.
        @param resolver: an L{aimx.auth.resolver.Resolver} (blocking).
        @param run_in_thread: C{f, *args -> Deferred}; runs the DNS lookups.
        @param helo: the EHLO name (the configured domain, never the MX name).
        @param port: the port of every MX host (25; C{AIMX_SMTP_OUT_PORT} in tests).
        @param ipv6: C{enable_ipv6}: connect to the first AAAA address when there is
            one, else the first A; when false only A records are used.
        @param timeout: seconds for the connect and for each reply.
        """
        self._reactor = reactor
        self._resolver = resolver
        self._run_in_thread = run_in_thread
        self._helo = helo
        self._port = port
        self._ipv6 = ipv6
        self._timeout = timeout
        self._tls_options = ssl.CertificateOptions()
        # Bounds across all sends: DNS lookups share the reactor's thread pool with
        # inbound verification, and each connection is a descriptor.
        self._lookups = defer.DeferredSemaphore(MAX_LOOKUPS)
        self._connections = defer.DeferredSemaphore(MAX_CONNECTIONS)

    def plan(self, recipients: list[str]) -> defer.Deferred[Plan]:
        """Check the recipients' syntax and resolve their domains, all domains at once.

        A domain whose lookups failed temporarily gets a route with C{error} set (its
        recipients will be deferred); one that cannot receive mail at all (NXDOMAIN, a
        Null MX, no MX, A or AAAA record) is also listed in L{Plan.missing}, and its
        recipients fail.

        @param recipients: bare addresses; the results of L{deliver} keep this order.
        """
        return defer.Deferred.fromCoroutine(self._plan(tuple(recipients)))

    async def _plan(self, rcpts: tuple[str, ...]) -> Plan:
        invalid, valid = [], []
        for rcpt in rcpts:
            reason = address_error(rcpt)
            if reason is None:
                valid.append(rcpt)
            else:
                text = f"Invalid recipient address '{rcpt}': {reason}"
                invalid.append(RcptResult(rcpt, FAILED, text))
        routes = await defer.gatherResults(
            [self._lookups.run(self._run_in_thread, _route, self._resolver, domain,
                               tuple(members))
             for domain, members in group_by_domain(valid).items()],
            consumeErrors=True,
        )
        return Plan(rcpts, tuple(routes), tuple(invalid))

    def deliver(self, mail_from: str, plan: Plan,
                message: bytes) -> defer.Deferred[list[RcptResult]]:
        """Send C{message} to every recipient of C{plan}: one transaction per domain.

        Domains are delivered concurrently; a domain's recipients not delivered by one
        MX host are tried on the next (even after a permanent refusal).

        @param mail_from: the bare envelope sender.
        @param message: the signed message, every line ending in CRLF; the receiving
            host gets exactly these bytes.
        @return: a Deferred firing with one L{RcptResult} per recipient, in the plan's
            order; delivery problems are results, never errbacks.
        """
        return defer.Deferred.fromCoroutine(self._deliver(mail_from, plan, message))

    async def _deliver(self, mail_from: str, plan: Plan, message: bytes) -> list[RcptResult]:
        results = {result.rcpt: result for result in plan.invalid}
        reason = address_error(mail_from)
        # Gotcha 11: ESMTPSender turns every LF into CRLF, so it is fed LF line ends.
        data = message.replace(b"\r\n", b"\n")
        sends = []
        for route in plan.routes:
            if reason is not None:
                text = f"Invalid sender address '{mail_from}': {reason}"
                results.update((rcpt, RcptResult(rcpt, FAILED, text)) for rcpt in route.rcpts)
            elif route.error:
                status = FAILED if route.missing else DEFERRED
                results.update((rcpt, RcptResult(rcpt, status, route.error))
                               for rcpt in route.rcpts)
            else:
                sends.append(defer.Deferred.fromCoroutine(self._send(route, mail_from, data)))
        for route_results in await defer.gatherResults(sends, consumeErrors=True):
            results.update((result.rcpt, result) for result in route_results)
        return [results[rcpt] for rcpt in plan.rcpts]

    async def _send(self, route: Route, mail_from: str, data: bytes) -> list[RcptResult]:
        tries: dict[str, list[RcptResult]] = {rcpt: [] for rcpt in route.rcpts}
        pending = list(route.rcpts)
        for host in route.hosts:
            attempt = self._connections.run(
                lambda: defer.Deferred.fromCoroutine(
                    self._attempt(host, mail_from, pending, data)))
            for result in await attempt:
                tries[result.rcpt].append(result)
            pending = [rcpt for rcpt in pending if tries[rcpt][-1].status != DELIVERED]
            if not pending:
                break
        return [settle(route.domain, rcpt, tries[rcpt]) for rcpt in route.rcpts]

    async def _attempt(self, host: str, mail_from: str, rcpts: list[str],
                       data: bytes) -> list[RcptResult]:
        """One transaction with C{host} for C{rcpts}."""
        try:
            ip = await self._lookups.run(
                self._run_in_thread, _address, self._resolver, host, self._ipv6)
        except _HostSkipped as e:
            results = host_results(host, rcpts, {}, (DEFERRED, str(e)))
        else:
            factory = _SenderFactory(
                host=host, helo=self._helo, tls=_OpportunisticTLS(self._tls_options, host),
                timeout=self._timeout, mail_from=mail_from, rcpts=rcpts, data=data,
            )
            self._reactor.connectTCP(ip, self._port, factory, timeout=self._timeout)
            results = await factory.done
        for result in results:
            _level(result.status)("MX delivery", host=host, rcpt=result.rcpt,
                                  status=result.status, details=result.details)
        return results
