"""``aimx portcheck [--verify-host URL] [--outbound-check-domain DOMAIN]`` (L3): is port
25 reachable both ways?

docs/cli.md, "aimx portcheck", with no hosted service.  Root only.  Outbound: this host
connects to port 25 of the lowest-preference MX of a well-known domain
(C{outbound_check_domain}, default C{gmail.com}), reads the 220 banner and says
QUIT.  Inbound: only with a C{verify_host} (the operator's own C{twistd -n
aimx-verifier} on another host), which is asked to connect back to this host's
port 25; when nothing holds port 25 a temporary SMTP responder listens there for
that probe.  Without a verifier the inbound check is skipped with an explanation,
and that alone does not fail the command.  The reusable parts live in
L{aimx.verifier.client}; L{checked} also words setup's preflight and doctor's lines.

Test hooks: C{AIMX_PORTCHECK_BIND=HOST:PORT} (responder and occupancy port,
default C{0.0.0.0:25}), C{AIMX_SMTP_OUT_PORT} (the MX port of the outbound check)
and C{AIMX_NAMESERVERS} (its DNS).
"""

import functools

from aimx.auth.resolver import Resolver
from aimx.cli import session
from aimx.cli.session import CliError
from aimx.ops.portcheck import (
    INBOUND_NOT_CHECKED,
    NO_VERIFIER,
    ProbeResult,
    inbound_message,
    outbound_message,
    resolve_check_domain,
    resolve_verify_host,
    settings_from_environ,
)
from aimx.ops.portholder import Occupancy
from aimx.verifier.client import (
    TemporaryResponder,
    detect_occupancy,
    inbound_probe,
    outbound_probe,
)

NOT_ROOT = "`aimx portcheck` requires root. Run with: sudo aimx portcheck"
TITLE = "aimx portcheck - Port 25 connectivity check"
ALL_PASSED = "Port 25 reachable. Ready for `aimx setup`."
OUTBOUND_ONLY = (
    "Outbound port 25 works. Inbound port 25 was not checked (no verifier configured)."
)
SOME_FAILED = "Some checks failed. See details above."


def main(args) -> int:
    from twisted.internet import reactor, threads

    verb = functools.partial(portcheck, reactor=reactor, run_in_thread=threads.deferToThread)
    return session.run(verb, args)


async def checked(term, label: str, probe, message) -> bool:
    """Print C{  <label>... }, await C{probe}, finish the line with a mark and why.

    The line reads C{  <label>... ✓ - <what answered>} or C{... ✗ - <reason>}; on
    failure the operator's advice (C{message(result)}) goes to stderr.
    """
    term.out.write(f"  {label}... ")
    term.out.flush()
    result: ProbeResult = await probe
    mark = term.mark("ok" if result.ok else "fail")
    term.say(f"{mark} - {result.reason}" if result.reason else mark)
    if not result.ok:
        print(f"  {message(result)}", file=term.err)
    return result.ok


def not_checked(term, label: str = "Inbound port 25") -> None:
    """The inbound line and the explanation when no verifier is configured."""
    term.say(f"  {label}... {term.mark('warn')} - {INBOUND_NOT_CHECKED}")
    for line in NO_VERIFIER:
        term.say("    " + line)


async def portcheck(args, s: session.Session, *, reactor, run_in_thread,
                    detect=detect_occupancy, resolver: Resolver | None = None) -> int:
    """The verb.

    @param reactor: for the responder and the probes.
    @param run_in_thread: runs the outbound check's DNS lookups off the reactor.
    @param detect: C{port -> Occupancy} (tests replace C{ss}).
    @param resolver: for the outbound check's MX lookup; default
        L{Resolver.from_env} of the session's environment (C{AIMX_NAMESERVERS}).
    """
    if not s.root:
        raise CliError(NOT_ROOT)
    config = s.config()
    verify_host = resolve_verify_host(
        args.verify_host, config.verify_host if config is not None else None
    )
    domain = resolve_check_domain(
        args.outbound_check_domain,
        config.outbound_check_domain if config is not None else None,
    )
    settings = settings_from_environ(s.environ)
    if resolver is None:
        resolver = Resolver.from_env(s.environ)
    occupancy: Occupancy = detect(settings.port)
    term = s.term

    term.say(term.bold(TITLE))
    term.say()
    ok = await checked(
        term, "Outbound port 25",
        outbound_probe(reactor, domain, settings, resolver=resolver,
                       run_in_thread=run_in_thread),
        outbound_message,
    )
    if occupancy.other:
        raise CliError(
            f"Port 25 is occupied by `{occupancy.name}`.\n"
            "Stop or uninstall the process and run `sudo aimx portcheck` again to check."
        )
    if verify_host is None:
        not_checked(term)
    elif occupancy.free:
        async with TemporaryResponder(reactor, settings):
            ok = await _inbound(term, reactor, verify_host) and ok
    else:
        ok = await _inbound(term, reactor, verify_host) and ok
    term.say()
    if not ok:
        raise CliError(SOME_FAILED)
    term.success(ALL_PASSED if verify_host is not None else OUTBOUND_ONLY)
    term.say("Run `sudo aimx setup` to begin.")
    return 0


async def _inbound(term, reactor, verify_host: str) -> bool:
    return await checked(
        term, "Inbound port 25", inbound_probe(reactor, verify_host), inbound_message
    )
