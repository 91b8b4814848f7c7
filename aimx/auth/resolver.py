"""Blocking DNS lookups for authentication and delivery (L1: dnspython, no Twisted).

Every query aimx makes (DKIM keys, SPF, DMARC, MX, A/AAAA) goes through one L{Resolver}.
C{AIMX_NAMESERVERS=host[:port][,host[:port]]} (IPv6 as C{[::1]:53}) selects the servers;
otherwise the system configuration is used. Callers run these methods in a thread.
"""

import ipaddress
import os
import time

import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from aimx.errors import ConfigError

#: Seconds per server attempt, and for a whole lookup.
CACHE_SIZE = 4096
TIMEOUT = 2.0
LIFETIME = 5.0

#: Setup and doctor ask these in order (AIMX's C{dig} cascade), each up to 3 times.
PUBLIC_RESOLVERS = ("1.1.1.1", "8.8.8.8", "9.9.9.9")
PUBLIC_ATTEMPTS = 3


class DnsNoRecord(Exception):
    """The name does not exist (NXDOMAIN) or has no record of the asked type."""


class DnsNoDomain(DnsNoRecord):
    """The name does not exist at all (NXDOMAIN, RFC 8020: no record of any type)."""


class DnsTempError(Exception):
    """The lookup failed for any other reason (timeout, SERVFAIL, no usable server)."""


def parse_nameservers(value: str) -> list[tuple[str, int]]:
    """Parse an C{AIMX_NAMESERVERS} value.

    @param value: C{host[:port][,host[:port]]}; IPv6 hosts as C{[::1]:53} or bare C{::1}.
    @return: C{(ip, port)} pairs in the given order.
    @raise ConfigError: an entry is not an IP address with an optional port 1-65535.
    """
    servers = []
    for entry in filter(None, (e.strip() for e in value.split(","))):
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else (rest or "53")
        elif entry.count(":") == 1:
            host, port = entry.split(":")
        else:
            host, port = entry, "53"
        try:
            ip = str(ipaddress.ip_address(host))
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(port)
        except ValueError:
            raise ConfigError(
                f"AIMX_NAMESERVERS: invalid nameserver {entry!r} "
                "(expected IP[:port], IPv6 as [addr]:port)"
            ) from None
        servers.append((ip, int(port)))
    return servers


class Resolver:
    """dnspython lookups with aimx's error model: L{DnsNoRecord} or L{DnsTempError}.

    Answers are cached for their TTL, as any MTA's resolver would: repeat senders then
    cost no round trips for their DKIM, SPF and DMARC records.
    """

    def __init__(self, resolver: dns.resolver.Resolver, *, timeout: float = TIMEOUT,
                 lifetime: float = LIFETIME, deadline: float | None = None):
        """
        @param resolver: a configured dnspython resolver; one without nameservers makes
            every lookup fail with L{DnsTempError} and L{usable} false.
        @param timeout: seconds per server attempt.
        @param lifetime: seconds for a whole lookup.
        @param deadline: a C{time.monotonic()} value past which every lookup fails
            with L{DnsTempError} at once (see L{until}).
        """
        self._dns = resolver
        self._dns.timeout = timeout
        self._dns.lifetime = lifetime
        self._dns.use_edns(0, 0, 1232)
        self._dns.cache = dns.resolver.LRUCache(CACHE_SIZE)
        self.deadline = deadline

    @classmethod
    def from_env(cls, environ=os.environ, resolv_conf="/etc/resolv.conf", *,
                 timeout: float = TIMEOUT, lifetime: float = LIFETIME) -> "Resolver":
        """Build the resolver from C{AIMX_NAMESERVERS}, else from the system configuration.

        @param environ: the environment to read.
        @param resolv_conf: the system configuration file (injectable for tests).
        @return: a resolver; an unusable one (no servers) when the system configuration
            cannot be loaded.
        @raise ConfigError: C{AIMX_NAMESERVERS} is set but malformed.
        """
        servers = parse_nameservers(environ.get("AIMX_NAMESERVERS", ""))
        if servers:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in servers]
        else:
            try:
                resolver = dns.resolver.Resolver(filename=resolv_conf)
            except (dns.exception.DNSException, OSError):
                resolver = dns.resolver.Resolver(configure=False)
        return cls(resolver, timeout=timeout, lifetime=lifetime)

    def until(self, deadline: float) -> "Resolver":
        """This resolver (same servers and cache) with every lookup ending by
        C{deadline} (C{time.monotonic()}): the authentication time budget."""
        view = object.__new__(Resolver)
        view._dns, view.deadline = self._dns, deadline
        return view

    @classmethod
    def public(cls, environ=os.environ) -> "Resolver":
        """The resolver of C{aimx setup} and C{aimx doctor}: C{AIMX_NAMESERVERS} when set,
        else the public resolvers L{PUBLIC_RESOLVERS}, asked in that order.

        It does not cache (the setup wizard re-verifies after the operator edits DNS)
        and gives each server up to L{PUBLIC_ATTEMPTS} tries of L{TIMEOUT} seconds.

        @raise ConfigError: C{AIMX_NAMESERVERS} is set but malformed.
        """
        servers = parse_nameservers(environ.get("AIMX_NAMESERVERS", ""))
        servers = servers or [(ip, 53) for ip in PUBLIC_RESOLVERS]
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in servers]
        public = cls(resolver)
        public._dns.cache = None
        public._dns.lifetime = len(servers) * PUBLIC_ATTEMPTS * TIMEOUT
        return public

    @property
    def usable(self) -> bool:
        """False when no nameserver is configured (every lookup would fail)."""
        return bool(self._dns.nameservers)

    def _resolve(self, name: str, rdtype: dns.rdatatype.RdataType) -> dns.resolver.Answer:
        try:
            qname = dns.name.from_text(name)
        except (dns.exception.DNSException, ValueError):
            # A name that cannot be written in DNS has no records (RFC 7208 §4.3 likewise).
            raise DnsNoRecord(name) from None
        lifetime = None
        if self.deadline is not None:
            lifetime = self.deadline - time.monotonic()
            if lifetime <= 0:
                raise DnsTempError(f"{name} {rdtype.name}: authentication time budget spent")
            lifetime = min(lifetime, self._dns.lifetime)
        try:
            return self._dns.resolve(qname, rdtype, search=False, lifetime=lifetime)
        except dns.resolver.NXDOMAIN:
            raise DnsNoDomain(name) from None
        except dns.resolver.NoAnswer:
            raise DnsNoRecord(name) from None
        except Exception as e:  # any other failure of the lookup is temporary
            raise DnsTempError(f"{name} {rdtype.name}: {e}") from None

    def txt_bytes(self, name: str) -> list[bytes]:
        """TXT records of C{name}, each record's strings concatenated.

        @raise DnsNoRecord: NXDOMAIN or no TXT record.
        @raise DnsTempError: any other failure.
        """
        return [b"".join(r.strings) for r in self._resolve(name, dns.rdatatype.TXT)]

    def txt(self, name: str) -> list[str]:
        """TXT records of C{name}, each record's strings concatenated (UTF-8, lossy).

        @raise DnsNoRecord: NXDOMAIN or no TXT record.
        @raise DnsTempError: any other failure.
        """
        return [t.decode("utf-8", "replace") for t in self.txt_bytes(name)]

    def mx(self, domain: str) -> list[tuple[int, str]]:
        """MX records of C{domain} as C{(preference, host)}, host without the final dot, sorted.

        A Null MX (RFC 7505) has the host C{"."}.

        @raise DnsNoDomain: NXDOMAIN.
        @raise DnsNoRecord: no MX record.
        @raise DnsTempError: any other failure.
        """
        answer = self._resolve(domain, dns.rdatatype.MX)
        return sorted((r.preference, r.exchange.to_text(omit_final_dot=True)) for r in answer)

    def addresses(self, host: str, ipv6: bool = False) -> list[str]:
        """A (or, with C{ipv6}, AAAA) addresses of C{host}.

        @raise DnsNoRecord: NXDOMAIN or no record of that type.
        @raise DnsTempError: any other failure.
        """
        rdtype = dns.rdatatype.AAAA if ipv6 else dns.rdatatype.A
        return [r.address for r in self._resolve(host, rdtype)]

    def ptr(self, name: str) -> list[str]:
        """PTR targets of a reverse name such as C{4.3.2.1.in-addr.arpa}, without final dots.

        @raise DnsNoRecord: NXDOMAIN or no PTR record.
        @raise DnsTempError: any other failure.
        """
        answer = self._resolve(name, dns.rdatatype.PTR)
        return [r.target.to_text(omit_final_dot=True) for r in answer]
