"""Both ends of the port-25 probe (L2): a minimal SMTP responder and the prober.

The responder answers just enough SMTP for a reachability probe (banner, EHLO/HELO,
QUIT) and nothing else: it is the temporary listener of C{aimx portcheck} / C{aimx
setup} and the verifier's own port-25 listener.  The
prober (L{smtp_handshake}) connects and expects a 220 banner; then either sends
EHLO, accepts a C{250} reply and says QUIT (the verifier's probe back to its
caller), or says QUIT at once (the outbound check, to a well-known domain's MX:
nothing but QUIT is ever sent there).  L{TrackedPort} is a listening port whose
stop also ends and awaits its open connections, so a torn-down listener leaves
nothing behind.
"""

import ipaddress

from twisted.internet import defer, error
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.basic import LineOnlyReceiver
from twisted.protocols.policies import TimeoutMixin, WrappingFactory

from aimx.idle import IdleWaiters
from aimx.ops.portcheck import PASSED, ProbeResult, ProbeTarget
from aimx.ops.probedialogue import (
    MAX_SMTP_LINE,
    RESPONDER_BANNER,
    RESPONDER_READ_TIMEOUT,
    ProbeDialogue,
    responder_reply,
)
from aimx.logs import Logger

log = Logger(namespace="aimx.verifier")


# -- the responder --------------------------------------------------------------


class Responder(LineOnlyReceiver, TimeoutMixin):
    """One probe session: banner, then a reply per command line until QUIT."""

    delimiter = b"\n"
    MAX_LENGTH = MAX_SMTP_LINE
    _closing = False
    _deadline = None

    def connectionMade(self):
        factory = self.factory
        if len(factory.sessions) >= factory.max_sessions:
            log.notice("connection refused", reason="session limit",
                       sessions=len(factory.sessions))
            self._closing = True
            self.transport.loseConnection()
            return
        factory.sessions.add(self)
        self.callLater = factory.clock.callLater
        self.setTimeout(factory.read_timeout)
        if factory.session_timeout is not None:
            self._deadline = factory.clock.callLater(factory.session_timeout, self._expire)
        self._reply(factory.banner)

    def _reply(self, line: str) -> None:
        self.transport.write(line.encode("utf-8") + b"\r\n")

    def lineReceived(self, line: bytes):
        if self._closing:
            return
        self.resetTimeout()
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        reply, close = responder_reply(text, self.factory.hostname, self.factory.unknown)
        self._reply(reply)
        if close:
            self._closing = True
            self.transport.loseConnection()

    def lineLengthExceeded(self, line):
        self.transport.loseConnection()

    def timeoutConnection(self):
        self.transport.abortConnection()

    def _expire(self):
        self._deadline = None
        self.transport.abortConnection()

    def connectionLost(self, reason):
        self.factory.sessions.discard(self)
        self.setTimeout(None)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


class ResponderFactory(Factory):
    """Builds L{Responder}s.

    @param banner: the greeting line, C{220 ...}.
    @param hostname: the argument of the C{250} reply to EHLO/HELO.
    @param unknown: the reply to any other command.
    @param read_timeout: seconds of silence before the connection is closed.
    @param session_timeout: a session's total lifetime, C{None} for unbounded.
    @param max_sessions: connections beyond this many are closed at once.
    @param clock: for the timeouts.
    """

    protocol = Responder
    noisy = False

    def __init__(self, clock, *, banner: str = RESPONDER_BANNER,
                 hostname: str = "localhost", unknown: str = "502 Not implemented",
                 read_timeout: float = RESPONDER_READ_TIMEOUT,
                 session_timeout: float | None = None, max_sessions: int = 128):
        self.clock = clock
        self.banner = banner
        self.hostname = hostname
        self.unknown = unknown
        self.read_timeout = read_timeout
        self.session_timeout = session_timeout
        self.max_sessions = max_sessions
        self.sessions = set()


def temporary_responder_factory(clock) -> ResponderFactory:
    """The temporary responder: C{220 localhost ESMTP aimx}, C{502} otherwise."""
    return ResponderFactory(clock)


def verifier_responder_factory(clock, hostname: str, max_sessions: int) -> ResponderFactory:
    """The verifier's port-25 listener: answers outbound probes from aimx hosts.

    Sessions are short by design: 10 s per line, 30 s in all.
    """
    return ResponderFactory(
        clock,
        banner=f"220 {hostname} SMTP aimx-verifier",
        hostname=hostname,
        unknown="500 Command not recognized",
        read_timeout=10,
        session_timeout=30,
        max_sessions=max_sessions,
    )


# -- listening ports that clean up after themselves -----------------------------


class _Tracking(WrappingFactory):
    """Remembers its open connections and tells when the last one is gone."""

    noisy = False

    def __init__(self, wrapped):
        super().__init__(wrapped)
        self._idle = IdleWaiters()

    def unregisterProtocol(self, p):
        super().unregisterProtocol(p)
        if not self.protocols:
            self._idle.idle()

    def close_all(self) -> defer.Deferred:
        """Abort every open connection; fire when all are lost."""
        d = self._idle.wait(not self.protocols)
        for p in list(self.protocols):
            p.transport.abortConnection()
        return d


class TrackedPort:
    """A listening TCP port whose L{stop} also closes its connections.

    @ivar port: the C{IListeningPort}.
    """

    def __init__(self, reactor, port: int, factory, interface: str = ""):
        """Listen now.

        @raise twisted.internet.error.CannotListenError: the bind failed.
        """
        self._tracking = _Tracking(factory)
        self.port = reactor.listenTCP(port, self._tracking, interface=interface)

    @property
    def address(self):
        return self.port.getHost()

    async def stop(self) -> None:
        """Stop listening, abort the open connections and wait for them to go."""
        await self.port.stopListening()
        await self._tracking.close_all()


# -- the prober -----------------------------------------------------------------


class _Prober(LineOnlyReceiver, TimeoutMixin):
    """Drives a L{ProbeDialogue} over one connection; C{done} fires when it closes."""

    delimiter = b"\n"
    MAX_LENGTH = MAX_SMTP_LINE

    def __init__(self, dialogue: ProbeDialogue, clock, io_timeout: float):
        self.dialogue = dialogue
        self.clock = clock
        self.callLater = clock.callLater
        self.io_timeout = io_timeout
        self.done = defer.Deferred()
        self._deadline = None

    def connectionMade(self):
        self.setTimeout(self.io_timeout)

    def set_deadline(self, seconds: float, budget: float) -> None:
        """End the exchange after C{seconds}, whatever its state.

        @param budget: the whole allowance, for the message.
        """
        if self.done.called:
            return
        self._deadline = self.clock.callLater(seconds, self._expire, budget)

    def _expire(self, budget):
        self._deadline = None
        self.dialogue.lost(f"no complete SMTP exchange within {budget:g} s")
        self.transport.abortConnection()

    def lineReceived(self, line: bytes):
        if self.dialogue.finished:
            return
        self.resetTimeout()
        command = self.dialogue.received(line.rstrip(b"\r").decode("utf-8", "replace"))
        if command is not None:
            self.transport.write(command.encode("utf-8") + b"\r\n")
        if self.dialogue.finished:
            self.transport.loseConnection()

    def lineLengthExceeded(self, line):
        self.dialogue.lost("reply line too long")
        self.transport.abortConnection()

    def timeoutConnection(self):
        self.dialogue.lost(self.dialogue.timed_out(self.io_timeout))
        self.transport.abortConnection()

    def connectionLost(self, reason):
        self.setTimeout(None)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.dialogue.lost()
        self.done.callback(self.dialogue)


class _ProberFactory(Factory):
    noisy = False

    def __init__(self, clock, ehlo_name: str | None, io_timeout: float):
        self.clock = clock
        self.ehlo_name = ehlo_name
        self.io_timeout = io_timeout

    def buildProtocol(self, addr) -> Protocol:
        return _Prober(ProbeDialogue(self.ehlo_name), self.clock, self.io_timeout)


def _endpoint(reactor, host: str, port: int, timeout: float):
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return HostnameEndpoint(reactor, host, port, timeout=timeout)
    endpoint = TCP6ClientEndpoint if ip.version == 6 else TCP4ClientEndpoint
    return endpoint(reactor, str(ip), port, timeout=timeout)


async def smtp_handshake(reactor, target: ProbeTarget, *, ehlo_name: str | None,
                         connect_timeout: float, io_timeout: float,
                         budget: float, clock=None, label: str | None = None) -> ProbeResult:
    """Connect to C{target}, expect 220, [send EHLO, expect 250,] QUIT.  Never raises.

    @param ehlo_name: the EHLO argument; C{None} to say QUIT right after the banner.
    @param connect_timeout: seconds for the TCP connection.
    @param io_timeout: seconds to wait for each reply line.
    @param budget: seconds for everything, connection included.
    @param clock: for the reply timeout and the budget once connected (default the
        reactor; tests pass a C{task.Clock}).
    @param label: how the target is named in the reasons (default C{host:port}).
    @return: L{PASSED}; or a failure whose C{error} says the name did not resolve
        or the peer answered but not as SMTP should, or whose C{detail} says why
        nothing (or nothing in time) answered.
    """
    clock = reactor if clock is None else clock
    label = str(target) if label is None else label
    started = reactor.seconds()
    connect_timeout = min(connect_timeout, budget)
    factory = _ProberFactory(clock, ehlo_name, io_timeout)
    try:
        prober = await _endpoint(reactor, target.host, target.port, connect_timeout).connect(
            factory
        )
    except error.DNSLookupError:
        return ProbeResult(False, error=f"cannot resolve {target.host}")
    except error.TimeoutError:
        return ProbeResult(
            False, detail=f"no connection to {label} within {connect_timeout:g} s"
        )
    except (error.ConnectError, OSError) as e:
        return ProbeResult(False, detail=f"cannot connect to {label}: {_reason(e)}")
    except Exception as e:  # e.g. a malformed host: the check could not run
        return ProbeResult(False, error=f"cannot probe {label}: {_reason(e)}")
    prober.set_deadline(max(budget - (reactor.seconds() - started), 0.0), budget)
    dialogue = await prober.done
    if dialogue.ok:
        return PASSED
    if dialogue.answered:  # the port is open; the server did not speak our way
        return ProbeResult(False, error=f"{label}: {dialogue.reason}")
    return ProbeResult(False, detail=f"{label}: {dialogue.reason}")


def _reason(e: Exception) -> str:
    if isinstance(e, error.ConnectionRefusedError):
        return "connection refused"
    return str(e) or type(e).__name__
