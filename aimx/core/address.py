"""SMTP envelope values and the RCPT decision (L0, pure).

The address rules of RFC 5321 §4.1.2 with the routing of docs/concepts.md,
"Mailboxes" (route by each mailbox's configured address, case-insensitive local part,
``+tag`` dropped, catchall fallback).
"""

import ipaddress

import attrs

from aimx.core.config import Config, is_approval_address, resolve_mailbox
from aimx.errors import SmtpStatus


@attrs.frozen
class Envelope:
    """One message as received: the SMTP envelope and the raw DATA bytes.

    @ivar peer_ip: the client's IP address, or C{None} for C{aimx ingest}.
    @ivar helo: the EHLO/HELO argument, or C{None}.
    @ivar mail_from: the reverse path; C{None} for the null sender C{<>}.
    @ivar rcpts: accepted recipients in RCPT order, as given.
    @ivar raw: the message bytes after dot-unstuffing, CRLF line ends kept.
    """

    peer_ip: str | None
    helo: str | None
    mail_from: str | None
    rcpts: tuple[str, ...]
    raw: bytes


def client_address(host: str) -> str:
    """The key a connection's peer is counted under for the per-address session cap.

    The canonical text of the IP address, so that two spellings of one address
    count together; an IPv4-mapped IPv6 address (how a dual-stack listener sees an
    IPv4 client) counts as the IPv4 address it carries.

    @param host: the peer host as the transport reports it.
    @return: the canonical address, or C{host} unchanged when it is no IP address.
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def extract_path(args: str, keyword: str) -> str | None:
    """Return the address after C{FROM:}/C{TO:} in MAIL/RCPT arguments.

    The address is the trimmed text between the first C{<} and the first later
    C{>}; without brackets, the whole trimmed rest.  ESMTP parameters after C{>}
    are ignored.

    @param args: the command arguments, e.g. C{"FROM:<a@b> SIZE=10"}.
    @param keyword: C{"FROM:"} or C{"TO:"}.
    @return: the address (possibly empty), or C{None} when the syntax is wrong.
    """
    if not args[: len(keyword)].upper() == keyword:
        return None
    rest = args[len(keyword) :].strip()
    start = rest.find("<")
    if start == -1:
        if ">" in rest:
            return None
        return rest.split(" ", 1)[0] if rest else rest
    end = rest.find(">", start)
    if end == -1:
        return None
    return rest[start + 1 : end].strip()


def mail_parameters(args: str) -> dict[str, str]:
    """Parse the ESMTP parameters that follow the path of a MAIL command.

    @return: upper-cased keyword -> value (C{""} for keywords without a value).
    """
    end = args.find(">")
    tail = args[end + 1 :] if end != -1 else ""
    params = {}
    for word in tail.split():
        key, _, value = word.partition("=")
        params[key.upper()] = value
    return params


RELAY_DENIED = SmtpStatus(550, "5.7.1", "relay not permitted")


def rcpt_verdict(config: Config, addr: str) -> SmtpStatus | None:
    """Decide a RCPT: C{None} to accept, else the rejection to send.

    An address some mailbox routes is accepted, and so is the approval address
    (L{is_approval_address}) with no mailbox behind it.

    @param config: the live configuration snapshot.
    @param addr: the extracted recipient address, case preserved.
    """
    local, at, domain = addr.rpartition("@")
    if not at or not local or domain.lower() != config.domain.lower():
        return RELAY_DENIED
    if resolve_mailbox(config, addr) is None and not is_approval_address(config, addr):
        return SmtpStatus(
            550, "5.1.1", f"<{addr}>: Recipient address rejected: User unknown"
        )
    return None
