"""A webhook's URL and the addresses it may reach (L0, pure).

docs/hooks.md, "Webhooks": HTTPS, or plain HTTP with C{allow_insecure}; no
credentials in the URL (it is logged); and no address on the host's own network
(loopback, link-local, private, shared, reserved, multicast, or one of the
server's own) unless C{allow_private}.  The address check runs on the address
actually connected to, at every attempt (L{aimx.webhooks}); a URL whose host is
an address literal is checked when the hook is made as well.
"""

import ipaddress
from urllib.parse import urlsplit

import attrs

#: The longest URL accepted (the request line must stay small).
MAX_URL = 2048
_PORTS = {"https": 443, "http": 80}


@attrs.frozen
class Target:
    """Where a webhook URL points.

    @ivar host: the host name (lowercase) or address literal, without brackets.
    @ivar literal: whether C{host} is an IP address.
    """

    scheme: str
    host: str
    port: int
    literal: bool


def parse(url: str) -> Target:
    """The scheme, host and port of C{url}.

    @raise ValueError: the text says what is wrong.
    """
    if len(url) > MAX_URL:
        raise ValueError(f"is {len(url)} characters long; the maximum is {MAX_URL}")
    if not url.isascii() or any(c <= " " or c == "\x7f" for c in url):
        raise ValueError("must be ASCII without spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme not in _PORTS:
        raise ValueError("must start with https:// (or http:// with allow_insecure)")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (user:password@); put them in the path "
                         "or rely on the signature")
    if parts.fragment:
        raise ValueError("must not have a #fragment")
    try:
        port = parts.port or _PORTS[parts.scheme]
    except ValueError:
        raise ValueError("has an invalid port") from None
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError("has no host")
    try:
        ipaddress.ip_address(host)
        literal = True
    except ValueError:
        literal = False
        if not all(label and len(label) <= 63 and label.replace("-", "").isalnum()
                   for label in host.split(".")):
            raise ValueError(f"has an invalid host name '{host}'") from None
    return Target(parts.scheme, host, port, literal)


def problem(url: str, *, allow_insecure: bool, allow_private: bool) -> str | None:
    """Why C{url} cannot be a webhook's, as the rest of a sentence; C{None} if it can."""
    try:
        target = parse(url)
    except ValueError as e:
        return f"`url` {e}"
    if target.scheme == "http" and not allow_insecure:
        return "`url` is plain http://: use https://, or set `allow_insecure = true`"
    if target.literal and not allow_private:
        refused = refusal(target.host, ())
        if refused is not None:
            return f"`url` points at {refused}: set `allow_private = true` to allow it"
    return None


def refusal(address: str, own: frozenset[str] | tuple[str, ...]) -> str | None:
    """Why a webhook may not connect to C{address} without C{allow_private}.

    @param own: the server's own addresses.
    @return: e.g. C{"a private address (10.0.0.1)"}, or C{None} when allowed.
    """
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind, test in (("a loopback", ip.is_loopback), ("a link-local", ip.is_link_local),
                       ("an unspecified", ip.is_unspecified),
                       ("a multicast", ip.is_multicast), ("a private", ip.is_private)):
        if test:
            return f"{kind} address ({ip})"
    if str(ip) in {str(ipaddress.ip_address(a)) for a in own}:
        return f"one of this server's own addresses ({ip})"
    if not ip.is_global:
        return f"a non-public address ({ip})"
    return None
