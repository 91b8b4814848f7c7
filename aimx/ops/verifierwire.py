"""The verifier service's HTTP answers and whom it probes (L0, pure; docs/cli.md, "The verifier").

C{twistd aimx-verifier} writes the answers; L{read_probe_response} is how the
callers (C{aimx portcheck}, setup, doctor) read them.
"""

import ipaddress
import json

from aimx.ops.portcheck import PASSED, ProbeResult

CLIENT_IP_HEADER = "X-AIMX-Client-IP"


def health_body() -> bytes:
    """C{GET /health}: C{{"status":"ok","service":"aimx-verifier"}}."""
    return _compact({"status": "ok", "service": "aimx-verifier"})


def probe_body(reachable: bool, ip: str) -> bytes:
    """C{GET /probe}: C{{"reachable":<bool>,"ip":"<caller ip>"}}."""
    return _compact({"reachable": reachable, "ip": ip})


def _compact(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def probe_passed(body: bytes) -> bool:
    """AIMX's pass rule: the body contains C{"reachable":true} (or with a space)."""
    return b'"reachable":true' in body or b'"reachable": true' in body


def read_probe_response(status: int, body: bytes) -> ProbeResult:
    """Interpret the verifier's C{/probe} answer (a non-2xx status is a failure)."""
    if not 200 <= status < 300:
        return ProbeResult(False, error=f"the verifier answered HTTP {status}")
    try:
        ip = str(canonical_ip(json.loads(body).get("ip")))
    except (ValueError, AttributeError, TypeError):
        ip = None  # only an address parsed as one is shown to the operator
    if probe_passed(body):
        if ip is not None:
            return ProbeResult(True, detail=f"the verifier reached {ip} on port 25")
        return PASSED
    if ip is not None:
        return ProbeResult(False, detail=f"the verifier could not reach {ip} on port 25")
    return ProbeResult(False, detail="the verifier did not report the port reachable")


# -- whom the verifier probes ---------------------------------------------------


def canonical_ip(text: str):
    """Parse an address; an IPv4-mapped IPv6 address becomes its IPv4 form.

    Otherwise C{::ffff:127.0.0.1} would slip past the loopback check.

    @raise ValueError: not an IP address.
    """
    ip = ipaddress.ip_address(text.strip().split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_ULA = ipaddress.ip_network("fc00::/7")


def is_blocked_target(ip) -> bool:
    """Addresses a public verifier never probes: loopback, unspecified, link-local,
    private (RFC 1918 and the other special IPv4 blocks, RFC 4193), CGNAT (RFC 6598),
    multicast, broadcast."""
    ip = canonical_ip(str(ip))
    return (
        ip.is_loopback
        or ip.is_unspecified
        or ip.is_link_local
        or ip.is_multicast
        or (ip.version == 4 and (ip.is_private or ip in _CGNAT))
        or (ip.version == 6 and ip in _ULA)
    )


def caller_ip(peer: str, header: str | None, allow_private: bool = False):
    """The address C{/probe} connects back to, or C{None} (answer 400).

    A non-loopback TCP peer is authoritative (the service is exposed directly; the
    header is ignored so a client cannot pick its target).  A loopback peer is a
    reverse proxy, which must name the client in C{X-AIMX-Client-IP}; a private or
    loopback value there is refused.  With C{allow_private} (tests, private
    networks) private values are accepted and a loopback peer without the header is
    probed itself.
    """
    peer_ip = canonical_ip(peer)
    if not peer_ip.is_loopback:
        return peer_ip
    if header is None:
        return peer_ip if allow_private else None
    try:
        ip = canonical_ip(header)
    except ValueError:
        return None
    if is_blocked_target(ip) and not allow_private:
        return None
    return ip
