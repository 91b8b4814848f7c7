"""The verifier service (L2): C{twistd -n aimx-verifier}.

The far end of the inbound port-25 check of C{aimx portcheck}, C{aimx setup} and
C{aimx doctor} (docs/cli.md, "The verifier").  aimx uses no hosted verifier: an
operator who wants the inbound check runs this on another host, outside the mail
host's network, and sets C{verify_host} to its URL.

  - C{GET /health} (and C{GET /}) -> C{{"status":"ok","service":"aimx-verifier"}};
  - C{GET /probe} -> connects back to the caller's address on port 25, expects a 220
    banner and a 250 to C{EHLO <hostname>}, says QUIT (45 s budget), and answers
    C{{"reachable":<bool>,"ip":"<caller ip>"}};
  - a port-25 listener answering banner/EHLO/QUIT (C{--smtp none} turns it off;
    aimx's own outbound check asks a well-known domain's MX instead, so it is only
    a target when an operator points a domain's MX at it).

The HTTP side binds loopback by default and expects a TLS reverse proxy in front
that sets C{X-AIMX-Client-IP} to the client's address (a loopback peer without a
usable header gets 400; a non-loopback peer is probed directly and the header is
ignored).  Loopback and private callers are never probed unless
C{--allow-private} is given (tests, private networks).  C{--probe-port} moves the
probe-back port off 25 for loopback tests.
"""

import json
import socket
import sys

from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.python import usage
from twisted.web import resource, server

from aimx.ops.portcheck import (
    PROBE_BACK_BUDGET,
    ProbeTarget,
    SettingsError,
    parse_hostport,
    parse_port,
)
from aimx.ops.verifierwire import (
    CLIENT_IP_HEADER,
    caller_ip,
    health_body,
    is_blocked_target,
    probe_body,
)
from aimx import logs
from aimx.logs import Logger
from aimx.verifier.smtp import TrackedPort, smtp_handshake, verifier_responder_factory

log = Logger(namespace="aimx.verifier")

DEFAULT_HTTP = "127.0.0.1:3025"
DEFAULT_SMTP = "0.0.0.0:25"


class Options(usage.Options):
    """Options of C{twistd aimx-verifier}."""

    optParameters = [
        ["http", None, DEFAULT_HTTP,
         "HTTP listen address HOST:PORT (put a TLS reverse proxy in front)"],
        ["smtp", None, DEFAULT_SMTP,
         "port-25 listener for outbound probes, HOST:PORT, or 'none'"],
        ["probe-port", None, "25", "port /probe connects back to on the caller"],
        ["hostname", None, None, "name in the SMTP banner and EHLO [this host's FQDN]"],
        ["client-ip-header", None, CLIENT_IP_HEADER,
         "header in which a loopback reverse proxy names the client"],
        ["max-probes", None, "64", "concurrent /probe requests before 503"],
        ["max-smtp-sessions", None, "128", "concurrent port-25 sessions"],
    ]
    optFlags = [
        ["allow-private", None,
         "probe loopback/private callers; a loopback peer without the header is probed"],
    ]

    def postOptions(self):
        try:
            self.http = parse_hostport(self["http"], "--http", allow_zero=True)
            self.smtp = (
                None
                if self["smtp"] == "none"
                else parse_hostport(self["smtp"], "--smtp", allow_zero=True)
            )
            self.probe_port = parse_port(self["probe-port"], "--probe-port")
            self.max_probes = _positive(self["max-probes"], "--max-probes")
            self.max_smtp_sessions = _positive(
                self["max-smtp-sessions"], "--max-smtp-sessions"
            )
        except SettingsError as e:
            raise usage.UsageError(str(e))
        self["hostname"] = self["hostname"] or socket.getfqdn()
        if self.parent is not None:  # under twistd
            logs.use_for_twistd(self.parent)


def _positive(raw: str, name: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise SettingsError(f"{name} must be a positive number, not {raw!r}")
    return int(raw)


def _json(request, body: bytes, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    return body


class Health(resource.Resource):
    """C{GET /health}."""

    isLeaf = True

    def render_GET(self, request):
        return _json(request, health_body())


class Probe(resource.Resource):
    """C{GET /probe}: connect back to the caller's port 25."""

    isLeaf = True

    def __init__(self, verifier: "Verifier"):
        super().__init__()
        self.verifier = verifier
        self.running = 0

    def render_GET(self, request):
        verifier = self.verifier
        header = request.getHeader(verifier.client_ip_header)
        peer = request.getClientAddress().host
        try:
            ip = caller_ip(peer, header, verifier.allow_private)
        except ValueError:
            ip = None
        if ip is None:
            log.notice("probe refused, no usable client address header",
                       peer=peer, header=verifier.client_ip_header)
            return _json(request, _error("cannot tell the caller's address"), 400)
        if is_blocked_target(ip) and not verifier.allow_private:
            log.info("not probed, private address", peer=str(ip))
            return _json(request, probe_body(False, str(ip)))
        if self.running >= verifier.max_probes:
            return _json(request, _error("too many probes in progress"), 503)
        self.running += 1
        gone = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        d = defer.Deferred.fromCoroutine(verifier.probe_back(ip))

        def answer(reachable):
            self.running -= 1
            if not gone:
                request.write(_json(request, probe_body(reachable, str(ip))))
                request.finish()

        def crashed(failure):
            self.running -= 1
            log.failure("probe crashed", failure, peer=str(ip))
            if not gone:
                request.write(_json(request, _error("internal error"), 500))
                request.finish()

        d.addCallbacks(answer, crashed)
        return server.NOT_DONE_YET


def _error(text: str) -> bytes:
    return json.dumps({"error": text}, separators=(",", ":")).encode()


class _Site(server.Site):
    """A site without the per-request access log (L{Probe} logs its outcome)."""

    noisy = False

    def log(self, request):
        pass


def root_resource(verifier: "Verifier") -> resource.Resource:
    """C{/} and C{/health} -> L{Health}; C{/probe} -> L{Probe}."""
    root = resource.Resource()
    health = Health()
    root.putChild(b"", health)
    root.putChild(b"health", health)
    root.putChild(b"probe", Probe(verifier))
    return root


class Verifier(service.Service):
    """The HTTP listener and the port-25 listener.

    @ivar http_port: the HTTP C{TrackedPort} once started.
    @ivar smtp_port: the port-25 C{TrackedPort}, C{None} when disabled.
    """

    def __init__(self, reactor, *, http=("127.0.0.1", 3025), smtp=("0.0.0.0", 25),
                 probe_port: int = 25, hostname: str = "localhost",
                 client_ip_header: str = CLIENT_IP_HEADER, allow_private: bool = False,
                 max_probes: int = 64, max_smtp_sessions: int = 128,
                 probe_budget: float = PROBE_BACK_BUDGET):
        self.reactor = reactor
        self.http = http
        self.smtp = smtp
        self.probe_port = probe_port
        self.hostname = hostname
        self.client_ip_header = client_ip_header
        self.allow_private = allow_private
        self.max_probes = max_probes
        self.max_smtp_sessions = max_smtp_sessions
        self.probe_budget = probe_budget
        self.http_port = None
        self.smtp_port = None

    def startService(self):
        """Bind both listeners, or raise C{CannotListenError} (nothing left bound)."""
        host, port = self.http
        try:
            self.http_port = TrackedPort(
                self.reactor, port, _Site(root_resource(self)), interface=host
            )
            if self.smtp is not None:
                host, port = self.smtp
                self.smtp_port = TrackedPort(
                    self.reactor,
                    port,
                    verifier_responder_factory(
                        self.reactor, self.hostname, self.max_smtp_sessions
                    ),
                    interface=host,
                )
        except CannotListenError as e:
            log.error("cannot listen", host=host, port=port, error=e.socketError)
            if self.http_port is not None:
                self.http_port.port.stopListening()
                self.http_port = None
            raise
        super().startService()
        log.info("listening", service="http", address=_address(self.http_port))
        log.info("listening", service="smtp",
                 address=_address(self.smtp_port) if self.smtp_port else "disabled")
        log.info("probing back", port=self.probe_port)

    async def _stop(self):
        for port in (self.http_port, self.smtp_port):
            if port is not None:
                await port.stop()

    def stopService(self):
        super().stopService()
        return defer.Deferred.fromCoroutine(self._stop())

    async def probe_back(self, ip) -> bool:
        """Banner/EHLO/QUIT with C{ip} on the probe port; the verdict, logged."""
        started = self.reactor.seconds()
        result = await smtp_handshake(
            self.reactor,
            ProbeTarget(str(ip), self.probe_port),
            ehlo_name=self.hostname,
            connect_timeout=self.probe_budget,
            io_timeout=self.probe_budget,
            budget=self.probe_budget,
        )
        why = {} if result.ok else {"reason": result.detail or result.error}
        log.info(
            "probe",
            peer=str(ip),
            reachable=result.ok,
            duration_ms=int((self.reactor.seconds() - started) * 1000),
            **why,
        )
        return result.ok


def _address(port: TrackedPort) -> str:
    address = port.address
    host = f"[{address.host}]" if ":" in address.host else address.host
    return f"{host}:{address.port}"


def build(options: Options, reactor) -> Verifier:
    """The service for parsed L{Options}."""
    return Verifier(
        reactor,
        http=options.http,
        smtp=options.smtp,
        probe_port=options.probe_port,
        hostname=options["hostname"],
        client_ip_header=options["client-ip-header"],
        allow_private=bool(options["allow-private"]),
        max_probes=options.max_probes,
        max_smtp_sessions=options.max_smtp_sessions,
    )


def makeService(options: Options) -> Verifier:
    """twistd's entry point."""
    from twisted.internet import reactor

    if options["allow-private"]:
        print("aimx-verifier: --allow-private: loopback and private callers will be "
              "probed", file=sys.stderr)
    return build(options, reactor)
