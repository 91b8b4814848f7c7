"""The addresses configured on this host's interfaces (L1: runs C{ip}).

The webhook SSRF guard refuses them as "this server's own" (docs/hooks.md,
"Webhooks").  C{ip -j address show} lists every address of every interface,
both families, secondary IPv4 addresses included (C{SIOCGIFADDR} would give one
IPv4 address per interface); it goes through the one program runner.
"""

import functools
import ipaddress
import json

from aimx.host.programs import run_program

#: C{ip}'s JSON listing of every interface address.
ARGV = ["ip", "-j", "address", "show"]
#: Seconds C{ip} may take.
TIMEOUT = 10


class Unreadable(Exception):
    """C{ip} did not run or did not answer with its listing (the text says why)."""


def parse(text: str) -> tuple[str, ...]:
    """The C{local} addresses of an C{ip -j address show} listing, normalised.

    @raise Unreadable: the text is not such a listing.
    """
    try:
        interfaces = json.loads(text)
        found = []
        for interface in interfaces:
            for info in interface.get("addr_info", ()):
                local = info.get("local")
                if local:
                    found.append(str(ipaddress.ip_address(local.split("%")[0])))
    except (ValueError, TypeError, AttributeError) as e:
        raise Unreadable(f"unexpected output of {' '.join(ARGV)}: {e}") from None
    return tuple(dict.fromkeys(found))


def interface_addresses(runner=functools.partial(run_program, timeout=TIMEOUT)
                        ) -> tuple[str, ...]:
    """Every address configured on the host's interfaces (blocking).

    @param runner: the program runner (L{aimx.host.programs}).
    @raise Unreadable: C{ip} is missing, failed, or answered something else.
    """
    done = runner(ARGV)
    if done.returncode != 0:
        raise Unreadable(f"{' '.join(ARGV)} exited {done.returncode}: "
                         f"{done.stderr.strip()[:200]}")
    return parse(done.stdout)
