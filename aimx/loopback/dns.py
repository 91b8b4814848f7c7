"""An authoritative loopback DNS server for tests (test support; uses twisted.names).

L{FixtureDNS} answers from an in-memory table on 127.0.0.1, UDP and TCP on one port; point
C{AIMX_NAMESERVERS} at L{FixtureDNS.nameservers}. Records can change while it runs; TTLs
are 0. Unknown names get NXDOMAIN, known names without the asked type an empty answer;
an alias (L{FixtureDNS.add_cname}) is answered with its chain, as a recursive resolver would.
dnspython blocks: query it from a thread (C{deferToThread}) while the reactor serves, never
on the reactor thread.

As a program (C{aimx demo} uses it): C{python -m aimx.loopback.dns --port N --txt NAME=VALUE ...}.
"""

import argparse

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.names import common, dns, error, server

from aimx.idle import IdleWaiters

#: CNAMEs followed within the table for one query.
_MAX_CHAIN = 8


class _ServerFailure(Exception):
    """Answer this query with SERVFAIL."""


def _key(name: str | bytes) -> bytes:
    if isinstance(name, str):
        name = name.encode("ascii")
    return name.rstrip(b".").lower()


class _Zone(common.ResolverBase):
    """The in-memory table: C{{name: {type: [payload, ...]}}}, SERVFAIL names, silent
    names (queries for them wait until released) and a log of the queries."""

    def __init__(self):
        super().__init__()
        self.records: dict[bytes, dict[int, list]] = {}
        self.failing: set[bytes] = set()
        self.silent: set[bytes] = set()
        self.waiting: list[defer.Deferred] = []
        self.queries: list[tuple[str, int]] = []
        self.on_query: list = []

    def _lookup(self, name, cls, type, timeout):
        key = _key(name)
        self.queries.append((key.decode("ascii", "replace"), type))
        if key in self.silent:
            waiting = defer.Deferred(lambda d: None)
            self.waiting.append(waiting)
            for listener in list(self.on_query):
                listener()
            return waiting
        answers = []
        # RFC 1034 §4.3.2 step 3a: a CNAME is copied into the answer and the query
        # goes on at its target, as far as the table reaches (a loop or an overlong
        # chain is SERVFAIL, as a recursive resolver answers).
        for _ in range(_MAX_CHAIN + 1):
            if key in self.failing:
                return defer.fail(_ServerFailure(name))
            if key not in self.records:
                return defer.fail(error.AuthoritativeDomainError(name))
            aliases = self.records[key].get(dns.CNAME, [])
            if type == dns.CNAME or not aliases:
                answers += [dns.RRHeader(key, type, dns.IN, payload.ttl, payload, auth=True)
                            for payload in self.records[key].get(type, [])]
                return defer.succeed((answers, [] if answers else [_NEGATIVE_SOA], []))
            answers.append(dns.RRHeader(key, dns.CNAME, dns.IN, aliases[0].ttl, aliases[0],
                                        auth=True))
            key = _key(aliases[0].name.name)
        return defer.fail(_ServerFailure(name))


# Negative answers carry an SOA with minimum 0, as an authoritative server's would,
# so resolvers do not cache "no such record" (tests add records as they go).
_NEGATIVE_SOA = dns.RRHeader(b"", dns.SOA, dns.IN, 0, dns.Record_SOA(
    mname=b"fixture.invalid", rname=b"hostmaster.fixture.invalid", minimum=0, ttl=0),
    auth=True)


class _Server(server.DNSServerFactory):
    """DNSServerFactory that can answer SERVFAIL quietly and report when TCP is idle."""

    noisy = False

    def __init__(self, zone):
        super().__init__(authorities=[zone])
        self._idle = IdleWaiters()

    def gotResolverError(self, failure, protocol, message, address):
        if failure.check(error.AuthoritativeDomainError):
            response = self._responseFromMessage(
                message=message, rCode=dns.ENAME, authority=[_NEGATIVE_SOA])
            self.sendReply(protocol, response, address)
            return
        if not failure.check(_ServerFailure):
            return super().gotResolverError(failure, protocol, message, address)
        self.sendReply(protocol, self._responseFromMessage(message=message, rCode=dns.ESERVER),
                       address)

    def connectionLost(self, protocol):
        super().connectionLost(protocol)
        if not self.connections:
            self._idle.idle()

    def idle(self) -> defer.Deferred:
        """Fires when no TCP connection is open."""
        return self._idle.wait(not self.connections)


class FixtureDNS:
    """A loopback authoritative DNS server with a mutable table.

    Usage: C{dns = FixtureDNS(reactor); dns.start(); self.addCleanup(dns.stop)}.
    """

    def __init__(self, reactor):
        self._reactor = reactor
        self._zone = _Zone()
        self._factory = _Server(self._zone)
        self._tcp = self._udp = None

    def start(self, port: int = 0) -> None:
        """Listen on 127.0.0.1, TCP and UDP on one port number.

        @param port: the port; 0 picks a free TCP port, then UDP on the same number
            (retried a few times should that UDP port be taken).
        @raise CannotListenError: the port (or, for 0, any free pair) could not be bound.
        """
        for _ in range(1 if port else 10):
            tcp = self._reactor.listenTCP(port, self._factory, interface="127.0.0.1")
            udp_protocol = dns.DNSDatagramProtocol(self._factory)
            udp_protocol.noisy = False
            try:
                self._udp = self._reactor.listenUDP(tcp.getHost().port, udp_protocol,
                                                    interface="127.0.0.1")
            except CannotListenError:
                tcp.stopListening()
                continue
            self._tcp = tcp
            return
        raise CannotListenError("127.0.0.1", port, "no port free for both UDP and TCP")

    def stop(self) -> defer.Deferred:
        """Stop listening and drop open TCP connections; fires when all are closed.
        Queries still waiting on silent names are answered with SERVFAIL first."""
        self.release()
        for protocol in list(self._factory.connections):
            protocol.transport.abortConnection()
        return defer.gatherResults([
            defer.maybeDeferred(self._udp.stopListening),
            defer.maybeDeferred(self._tcp.stopListening),
            self._factory.idle(),
        ])

    @property
    def nameservers(self) -> str:
        """The C{AIMX_NAMESERVERS} value for this server, C{127.0.0.1:<port>}."""
        return f"127.0.0.1:{self._tcp.getHost().port}"

    def _add(self, name: str, type: int, payload) -> None:
        self._zone.records.setdefault(_key(name), {}).setdefault(type, []).append(payload)

    def add_txt(self, name: str, *strings: str | bytes, ttl: int = 0) -> None:
        """Add one TXT record made of C{strings}, each split into 255-byte strings.

        @param ttl: its TTL; the default 0 keeps resolvers from caching it.
        """
        data = [s.encode("utf-8") if isinstance(s, str) else s for s in strings]
        chunks = [s[i:i + 255] for s in data for i in range(0, len(s) or 1, 255)]
        self._add(name, dns.TXT, dns.Record_TXT(*chunks, ttl=ttl))

    def add_mx(self, name: str, pref: int, host: str) -> None:
        """Add an MX record; C{host} C{"."} is the root (a Null MX, RFC 7505)."""
        self._add(name, dns.MX, dns.Record_MX(pref, host.rstrip(".").encode("ascii"), ttl=0))

    def add_a(self, name: str, ip: str) -> None:
        """Add an A record."""
        self._add(name, dns.A, dns.Record_A(ip, ttl=0))

    def add_aaaa(self, name: str, ip: str) -> None:
        """Add an AAAA record."""
        self._add(name, dns.AAAA, dns.Record_AAAA(ip, ttl=0))

    def add_cname(self, name: str, target: str) -> None:
        """Make C{name} an alias of C{target}: queries for it are answered with the
        CNAME followed by C{target}'s records (of that type), as far as the table
        reaches; a loop or a chain of more than 8 is SERVFAIL."""
        self._add(name, dns.CNAME, dns.Record_CNAME(target.rstrip(".").encode("ascii"), ttl=0))

    def add_ptr(self, name: str, host: str) -> None:
        """Add a PTR record at a reverse name (C{4.3.2.1.in-addr.arpa})."""
        self._add(name, dns.PTR, dns.Record_PTR(host.encode("ascii"), ttl=0))

    def add_servfail(self, name: str) -> None:
        """Answer every query for C{name} with SERVFAIL (a temporary DNS error)."""
        self._zone.failing.add(_key(name))

    def add_silent(self, name: str) -> None:
        """Answer no query for C{name} until L{release} (a name server that hangs)."""
        self._zone.silent.add(_key(name))

    def release(self) -> None:
        """Answer every waiting query for a silent name with SERVFAIL; stop being silent."""
        self._zone.silent.clear()
        waiting, self._zone.waiting = self._zone.waiting, []
        for query in waiting:
            query.errback(_ServerFailure("released"))

    @property
    def queries(self) -> list[tuple[str, int]]:
        """C{(name, type)} of every query received, in order (names lower-cased)."""
        return self._zone.queries

    @property
    def pending(self) -> int:
        """Queries for silent names not answered yet."""
        return len(self._zone.waiting)

    def until_pending(self, count: int) -> defer.Deferred:
        """Fires once at least C{count} queries wait on silent names."""
        done = defer.Deferred()

        def check():
            if not done.called and self.pending >= count:
                self._zone.on_query.remove(check)
                done.callback(self.pending)

        self._zone.on_query.append(check)
        self._reactor.callLater(0, check)  # maybe already there
        return done

    def clear(self) -> None:
        """Remove every record, SERVFAIL and silent name."""
        self._zone.records.clear()
        self._zone.failing.clear()
        self.release()


def from_args(reactor, argv: list[str]) -> FixtureDNS:
    """A started L{FixtureDNS} from command-line arguments (C{--port}, C{--txt}, C{--mx}, C{--a})."""
    parser = argparse.ArgumentParser(prog="python -m aimx.loopback.dns",
                                     description="Serve fixed DNS records on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="UDP and TCP port (0: any)")
    parser.add_argument("--txt", action="append", default=[], metavar="NAME=VALUE",
                        help="a TXT record (repeatable); VALUE may contain '='")
    parser.add_argument("--mx", action="append", default=[], metavar="NAME=HOST",
                        help="an MX record of preference 10 (repeatable)")
    parser.add_argument("--a", action="append", default=[], metavar="NAME=IP",
                        help="an A record (repeatable)")
    args = parser.parse_args(argv)
    server = FixtureDNS(reactor)
    adders = (
        ("--txt", args.txt, server.add_txt),
        ("--mx", args.mx, lambda name, host: server.add_mx(name, 10, host)),
        ("--a", args.a, server.add_a),
    )
    for flag, items, add in adders:
        for item in items:
            name, eq, value = item.partition("=")
            if not eq:
                parser.error(f"{flag} needs NAME=VALUE, got {item!r}")
            add(name, value)
    server.start(args.port)
    return server


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted."""
    from twisted.internet import reactor

    server = from_args(reactor, argv)
    print(f"aimx fixture DNS on {server.nameservers}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
