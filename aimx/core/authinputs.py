"""Inputs of the SPF check chosen from the envelope and the raw header (L0, pure).

RFC 7208 §2.4 and §4.1: the client IP (peer, else the first non-loopback bracketed IP of
a Received header), the sender identity (MAIL FROM, else C{postmaster@<helo>}, else the
author's address from the one identity parse for C{aimx ingest}) and its domain.
"""

import ipaddress
import itertools
import re

import attrs

_BRACKETED = re.compile(r"\[([^\]]*)\]")
_HEADER_END = re.compile(rb"\n\r?\n")


def _header_lines(raw: bytes, encoding: str) -> list[str]:
    # Raw header lines up to the first empty line, without their line endings.
    end = _HEADER_END.search(raw)
    lines = (raw[:end.start()] if end else raw).decode(encoding).split("\n")
    return list(itertools.takewhile(bool, (line.removesuffix("\r") for line in lines)))


def received_ip(raw: bytes) -> str | None:
    """The first non-loopback IP in C{[...]} of the topmost Received header that has one.

    Headers are unfolded (a continuation line joins the previous with one space); only
    lines starting C{Received:} or C{received:} are read; unbracketed IPs never count.
    """
    unfolded: list[list[str]] = []
    for line in _header_lines(raw, "latin-1"):  # byte-transparent; IPs are ASCII
        if line[:1] in (" ", "\t") and unfolded:
            unfolded[-1].append(line.strip())
        else:
            unfolded.append([line])
    for line in (" ".join(parts) for parts in unfolded):  # joined once: linear

        if not line.startswith(("Received:", "received:")):
            continue
        for group in _BRACKETED.findall(line):
            try:
                ip = ipaddress.ip_address(group)
            except ValueError:
                continue
            if not ip.is_loopback:
                return str(ip)
    return None


@attrs.frozen
class SpfIdentity:
    """What SPF is checked for: C{ip} and C{domain} are both needed for a lookup.

    @ivar ip: the client IP, or None.
    @ivar sender: the identity (C{local@domain}), or None.
    @ivar domain: the domain of C{sender}, lower-cased, or None.
    """

    ip: str | None
    sender: str | None
    domain: str | None


def _client_ip(peer_ip: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(peer_ip or "")
    except ValueError:
        return None
    return None if ip.is_unspecified else getattr(ip, "ipv4_mapped", None) or ip


def spf_identity(raw: bytes, *, peer_ip: str | None, mail_from: str | None,
                 helo: str | None, header_from: str | None = None) -> SpfIdentity:
    """Choose the SPF inputs (RFC 7208 §2.4).

    @param peer_ip: the TCP peer; None, unparsable or unspecified (C{0.0.0.0}, C{::})
        falls back to the Received headers. IPv4-mapped IPv6 becomes IPv4.
    @param mail_from: the envelope sender; empty for C{MAIL FROM:<>}, None for ingest.
    @param helo: the HELO/EHLO name, or None.
    @param header_from: the author's address (L{aimx.core.identity.Identity.author}),
        the identity of last resort (C{aimx ingest} has no envelope).
    """
    ip = _client_ip(peer_ip)
    sender = mail_from or (f"postmaster@{helo}" if helo else header_from)
    domain = sender.rpartition("@")[2].lower() if sender and "@" in sender else None
    return SpfIdentity(ip=str(ip) if ip else received_ip(raw), sender=sender,
                       domain=domain or None)
