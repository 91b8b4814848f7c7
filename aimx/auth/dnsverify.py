"""DNS verification for C{aimx setup} and C{aimx doctor} (L1: blocking, no Twisted).

Performs the lookups L{aimx.ops.dnscheck.ExpectedDns} asks for through a
L{Resolver} (normally L{Resolver.public}), finds the server's own addresses with
C{hostname -I}, and reads the local DKIM public key. Callers on a reactor run
these functions in a thread.
"""

from concurrent.futures import ThreadPoolExecutor

from aimx.auth.resolver import DnsNoRecord, DnsTempError, Resolver
from aimx.ops.dnscheck import (
    AAAA,
    MX,
    PTR,
    TXT,
    Check,
    ExpectedDns,
    Lookup,
    parse_hostname_i,
)
from aimx.store import keys
from aimx.host.initsystem import System


def lookup(resolver: Resolver, rdtype: str, name: str) -> Lookup:
    """One query, its outcome as a L{Lookup}.

    NXDOMAIN and "no record of that type" are an empty answer (the name's
    authoritative answer); every other failure is the lookup's error.

    @param rdtype: C{A}, C{AAAA}, C{MX}, C{TXT} or C{PTR}.
    """
    try:
        if rdtype == MX:
            answers = [f"{pref} {host}." for pref, host in resolver.mx(name)]
        elif rdtype == TXT:
            answers = resolver.txt(name)
        elif rdtype == PTR:
            answers = resolver.ptr(name)
        else:
            answers = resolver.addresses(name, ipv6=rdtype == AAAA)
    except DnsNoRecord:
        return Lookup()
    except DnsTempError as e:
        # dnspython lists every attempt; the first says what went wrong.
        return Lookup(error=str(e).split("; ")[0])
    return Lookup(answers)


def verify(expected: ExpectedDns, resolver: Resolver) -> list[Check]:
    """Look up everything C{expected} needs and judge it (docs/install.md, "aimx setup", "DNS records").

    Two rounds: L{ExpectedDns.queries}, then the L{ExpectedDns.followups} their
    answers call for (the addresses of the PTR names).  The queries of a round run
    concurrently, so an unreachable resolver costs one lookup's time per round,
    not one per record.
    """
    answers = _all(resolver, expected.queries())
    answers.update(_all(resolver, expected.followups(answers)))
    return expected.evaluate(answers)


def _all(resolver: Resolver, queries: list[tuple[str, str]]) -> dict:
    if not queries:
        return {}
    with ThreadPoolExecutor(max_workers=len(queries)) as pool:
        lookups = list(pool.map(lambda query: lookup(resolver, *query), queries))
    return dict(zip(queries, lookups))


def server_addresses(system: System) -> tuple[str | None, str | None]:
    """The server's first IPv4 and first global IPv6 address, from C{hostname -I}.

    @return: C{None} for each address not found (also when C{hostname} fails).
    """
    done = system.run("hostname", "-I")
    if done.returncode != 0:
        return None, None
    return parse_hostname_i(done.stdout)


def local_dkim_key(config_dir: str) -> str | None:
    """The base64 SubjectPublicKeyInfo of C{<config_dir>/dkim/public.key}.

    @return: C{None} when the file is missing, unreadable or not a public key.
    """
    try:
        return keys.local_public_key_b64(config_dir)
    except (OSError, ValueError):
        return None
