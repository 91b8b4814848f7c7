"""The caller's side of the port-25 check (L2), shared by C{aimx portcheck},
C{aimx setup}'s preflight and C{aimx doctor} (docs/cli.md, "aimx portcheck").

Two checks, neither using a hosted service:

  - outbound (L{outbound_probe}): this host connects to port 25 of the
    lowest-preference MX of a well-known domain (C{outbound_check_domain}, default
    C{gmail.com}), looked up through aimx's own resolver, reads the 220 banner and
    says QUIT; nothing else is sent;
  - inbound (L{inbound_probe}): only when the operator configured C{verify_host}, a
    verifier they run elsewhere (C{twistd -n aimx-verifier}) is asked to connect
    back to this host's port 25.

Usage, inside a reactor (e.g. a coroutine run with C{Deferred.fromCoroutine})::

    settings = portcheck.settings_from_environ(environ)       # aimx.ops.portcheck
    outbound = await outbound_probe(reactor, "gmail.com", settings,
                                    resolver=Resolver.from_env(environ),
                                    run_in_thread=threads.deferToThread)
    occupancy = detect_occupancy(settings.port)               # free / aimx / other(name)
    if verify_host is not None and occupancy.free:
        async with TemporaryResponder(reactor, settings):     # may raise ResponderBindError
            inbound = await inbound_probe(reactor, verify_host)

Each probe returns a L{ProbeResult} and never raises; the caller words the outcome
(C{aimx.ops.portcheck.outbound_message}/C{inbound_message}).
"""

import functools

from twisted.internet import defer, error
from twisted.web.client import Agent, HTTPConnectionPool, ResponseFailed, readBody
from twisted.web.http_headers import Headers

from aimx import __version__
from aimx.auth.resolver import DnsNoRecord, DnsTempError
from aimx.ops.portcheck import (
    INBOUND_HTTP_TIMEOUT,
    OUTBOUND_BUDGET,
    OUTBOUND_CONNECT_TIMEOUT,
    OUTBOUND_IO_TIMEOUT,
    ProbeResult,
    ProbeSettings,
    ProbeTarget,
    lowest_mx,
    mx_label,
    outbound_passed,
    probe_url,
)
from aimx.ops.portholder import FREE, Occupancy, parse_occupancy, ss_command
from aimx.ops.verifierwire import read_probe_response
from aimx.errors import AimxError
from aimx.host.programs import Runner, run_program
from aimx.verifier.smtp import TrackedPort, smtp_handshake, temporary_responder_factory

DEFAULT_SETTINGS = ProbeSettings()


class ResponderBindError(AimxError):
    """The temporary responder could not listen on port 25."""

    code = "IO"


#: Seconds C{ss} may take.
SS_TIMEOUT = 10
_run_ss = functools.partial(run_program, timeout=SS_TIMEOUT)


def _proc_argv(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return [arg.decode("utf-8", "replace") for arg in raw.split(b"\0") if arg]


def detect_occupancy(port: int = 25, run: Runner = _run_ss, argv_of=_proc_argv) -> Occupancy:
    """Who listens on TCP C{port}, from C{ss -tlnp} (blocking, quick).

    A failure to run C{ss} counts as free: binding the temporary
    responder then tells the truth.

    @param run: the program runner (L{aimx.host.programs}), for tests.
    @param argv_of: C{pid -> argv | None}, for tests.
    """
    done = run(ss_command(port))
    if done.returncode != 0:  # missing, failed, or killed after SS_TIMEOUT
        return FREE
    return parse_occupancy(done.stdout, argv_of)


class TemporaryResponder:
    """An async context manager: the temporary port-25 responder listens while inside.

    Leaving stops the listener and ends its connections, and waits for both.

    @raise ResponderBindError: on entry, when the port cannot be bound; its message
        is C{Cannot bind port 25 for preflight: <reason>} plus advice.
    """

    def __init__(self, reactor, settings: ProbeSettings = DEFAULT_SETTINGS):
        self.reactor = reactor
        self.settings = settings
        self.listening = None

    async def __aenter__(self) -> "TemporaryResponder":
        try:
            self.listening = TrackedPort(
                self.reactor,
                self.settings.port,
                temporary_responder_factory(self.reactor),
                interface=self.settings.bind_host,
            )
        except error.CannotListenError as e:
            raise ResponderBindError(
                f"Cannot bind port 25 for preflight: {e.socketError}\n"
                "Run with sudo or ensure port 25 is available."
            ) from None
        return self

    async def __aexit__(self, *exc_info) -> bool:
        await self.listening.stop()
        return False


class _NoTarget(Exception):
    """The outbound check has nowhere to connect; the message says why."""


def _mx_address(resolver, domain: str) -> tuple[str, str]:
    """Blocking: the lowest-preference MX of C{domain} and its first IPv4 address.

    @raise _NoTarget: no MX (or a null MX), no A record, or a failed lookup.
    """
    try:
        host = lowest_mx(resolver.mx(domain))
    except DnsNoRecord:
        host = None
    except DnsTempError as e:
        raise _NoTarget(f"cannot look up the MX of {domain}: {e}") from None
    if host is None:
        raise _NoTarget(f"{domain} has no MX record")
    try:
        return host, resolver.addresses(host)[0]
    except DnsNoRecord:
        raise _NoTarget(f"{host} (MX of {domain}) has no A record") from None
    except DnsTempError as e:
        raise _NoTarget(f"cannot look up {host} (MX of {domain}): {e}") from None


async def outbound_probe(reactor, domain: str, settings: ProbeSettings = DEFAULT_SETTINGS,
                         *, resolver, run_in_thread, clock=None,
                         connect_timeout: float = OUTBOUND_CONNECT_TIMEOUT,
                         io_timeout: float = OUTBOUND_IO_TIMEOUT) -> ProbeResult:
    """Can this host open port 25 to the world?  Ask C{domain}'s MX for its banner.

    The lowest-preference MX of C{domain} and its IPv4 address come from
    C{resolver} (in a thread); the connection goes to C{settings.out_port} (25,
    C{AIMX_SMTP_OUT_PORT} in tests); the 220 banner is read and QUIT sent, nothing
    else.  Never raises.

    @param resolver: an L{aimx.auth.resolver.Resolver} (blocking).
    @param run_in_thread: runs the lookups off the reactor.
    @param clock: for the banner timeout and the budget (default the reactor).
    @param connect_timeout: seconds for the TCP connection (10).
    @param io_timeout: seconds to wait for the banner (5).
    @return: a pass naming who answered; a failure with C{detail} (refused, no
        connection or no banner in time: blocked) or C{error} (no MX, DNS failure,
        a banner other than 220: the check could not tell).
    """
    try:
        host, ip = await run_in_thread(_mx_address, resolver, domain)
    except _NoTarget as e:
        return ProbeResult(False, error=str(e))
    label = mx_label(host, ip, settings.out_port, domain)
    result = await smtp_handshake(
        reactor,
        ProbeTarget(ip, settings.out_port),
        ehlo_name=None,
        connect_timeout=connect_timeout,
        io_timeout=io_timeout,
        budget=OUTBOUND_BUDGET,
        clock=clock,
        label=label,
    )
    return outbound_passed(label) if result.ok else result


async def _get(agent, url: str):
    response = await agent.request(
        b"GET",
        url.encode("ascii"),
        Headers({b"User-Agent": [f"aimx/{__version__}".encode()]}),
    )
    return response.code, await readBody(response)


def _describe(e: Exception, timeout: float) -> str:
    if isinstance(e, error.TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(e, ResponseFailed) and e.reasons:  # and its subclass ResponseNeverReceived
        return _describe(e.reasons[0].value, timeout)
    if isinstance(e, error.ConnectionRefusedError):
        return "connection refused"
    return str(e) or type(e).__name__


async def inbound_probe(reactor, verify_host: str,
                        timeout: float = INBOUND_HTTP_TIMEOUT) -> ProbeResult:
    """C{GET <verify host>/probe}: the verifier connects back to our port 25.

    An HTTP or transport failure is a failure with C{error} set.
    """
    url = probe_url(verify_host)
    pool = HTTPConnectionPool(reactor, persistent=True)
    try:
        d = defer.Deferred.fromCoroutine(_get(Agent(reactor, pool=pool), url))
        d.addTimeout(timeout, reactor)
        status, body = await d
    except Exception as e:  # every failure of the exchange is a failed check
        return ProbeResult(False, error=f"{url}: {_describe(e, timeout)}")
    finally:
        await pool.closeCachedConnections()
    return read_probe_response(status, body)
