"""``aimx portcheck [--verify-host URL]`` (L3): is port 25 reachable both ways?

spec/setup-and-ops.md §3.  Root only.  When nothing holds port 25 a temporary SMTP
responder listens there for the duration of the probes; the outbound probe talks
SMTP to the verify host's port 25, the inbound probe asks the verifier's C{/probe}
to connect back.  The reusable parts live in L{aimx.verifier.client}.

Test hooks: C{AIMX_PORTCHECK_BIND=HOST:PORT} (responder and occupancy port,
default C{0.0.0.0:25}) and C{AIMX_SMTP_OUT_PORT} (the verify host's SMTP port).
"""

import argparse
import functools

from aimx.cli import session
from aimx.cli.session import CliError
from aimx.core.config import DEFAULT_VERIFY_HOST
from aimx.core.portcheck import (
    Occupancy,
    ProbeResult,
    inbound_message,
    outbound_message,
    resolve_verify_host,
    settings_from_environ,
)
from aimx.verifier.client import (
    TemporaryResponder,
    detect_occupancy,
    inbound_probe,
    outbound_probe,
)

NOT_ROOT = "`aimx portcheck` requires root. Run with: sudo aimx portcheck"
TITLE = "aimx portcheck - Port 25 connectivity check"
ALL_PASSED = "Port 25 reachable. Ready for `aimx setup`."
SOME_FAILED = "Some checks failed. See details above."


def add_parser(sub, common) -> None:
    """Register C{portcheck} on the top-level subparsers."""
    parser = sub.add_parser(
        "portcheck",
        parents=[common],
        help=argparse.SUPPRESS,
        prog="aimx portcheck",
        description=(
            "Check that port 25 is reachable: outbound to the verify host's port 25, "
            "and inbound by asking the verifier to connect back to this host's port 25. "
            "Requires root (it may bind port 25 for the duration of the check)."
        ),
    )
    parser.add_argument(
        "--verify-host",
        metavar="URL",
        help=f"verifier base URL (default: verify_host in config.toml, else "
        f"{DEFAULT_VERIFY_HOST})",
    )


def main(args) -> int:
    from twisted.internet import reactor

    return session.run(functools.partial(portcheck, reactor=reactor), args)


async def checked(term, label: str, probe, message) -> bool:
    """Print C{  <label>... }, await C{probe}, finish the line with a mark.

    On failure the operator's line (C{message(result)}) and the detail go to stderr.
    """
    term.out.write(f"  {label}... ")
    term.out.flush()
    result: ProbeResult = await probe
    term.say(term.mark("ok" if result.ok else "fail"))
    if not result.ok:
        print(f"  {message(result)}", file=term.err)
        if result.detail:
            print(f"  ({result.detail})", file=term.err)
    return result.ok


async def portcheck(args, s: session.Session, *, reactor, detect=detect_occupancy) -> int:
    """The verb.

    @param reactor: for the responder and the probes.
    @param detect: C{port -> Occupancy} (tests replace C{ss}).
    """
    if not s.root:
        raise CliError(NOT_ROOT)
    config = s.config()
    verify_host = resolve_verify_host(
        args.verify_host, config.verify_host if config is not None else None
    )
    settings = settings_from_environ(s.environ)
    occupancy: Occupancy = detect(settings.port)
    if occupancy.free:
        async with TemporaryResponder(reactor, settings):
            return await _probes(s.term, reactor, verify_host, settings, occupancy)
    return await _probes(s.term, reactor, verify_host, settings, occupancy)


async def _probes(term, reactor, verify_host, settings, occupancy: Occupancy) -> int:
    term.say(term.bold(TITLE))
    term.say()
    ok = await checked(
        term, "Outbound port 25", outbound_probe(reactor, verify_host, settings),
        outbound_message,
    )
    if occupancy.other:
        raise CliError(
            f"Port 25 is occupied by `{occupancy.name}`.\n"
            "Stop or uninstall the process and run `sudo aimx portcheck` again to check."
        )
    ok = await checked(
        term, "Inbound port 25", inbound_probe(reactor, verify_host), inbound_message
    ) and ok
    term.say()
    if not ok:
        raise CliError(SOME_FAILED)
    term.success(ALL_PASSED)
    term.say("Run `sudo aimx setup` to begin.")
    return 0
