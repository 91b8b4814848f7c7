"""SPF check_host (RFC 7208) over pyspf, with DNS through our resolver (L1, blocking).

pyspf has no resolver argument, but every lookup of a check goes through one
method, C{query.dns(name, qtype, cnames=None, ignore_void=False)} (pyspf documents
it: a list of answers, C{[]} when there is no data, cached per query, the void
lookup limit applied).  L{_Query} subclasses C{spf.query} and overrides that method
to answer from the resolver given to L{check}; L{check} then runs the check as
C{spf.check2} does.  Nothing of pyspf is replaced: its module global C{DNSLookup}
is never called, and concurrent checks with different resolvers cannot meet.

What the override keeps of pyspf's own C{dns()}: names are normalised (final dot
dropped, lower case) and a name with an empty label or one over 63 octets has no
data; answers are cached per query by C{(name, qtype)}; an empty answer counts as
a void lookup unless the caller says not to, and more than C{spf.MAX_VOID_LOOKUPS}
is a permerror (RFC 7208 §4.6.4); a temporary DNS failure is a temperror; the
whole check has pyspf's C{querytime} budget (20 s, RFC 7208 §4.6.4) on top of the
resolver's own deadline (L{aimx.auth.resolver.Resolver.until}).  CNAMEs are not
followed here: the resolver (a recursive one, through dnspython, which follows the
chain inside an answer and bounds it) returns the records at the end of the chain.
"""

import time

import spf

from aimx.auth.resolver import DnsNoRecord, DnsTempError

#: pyspf results recorded as themselves; everything else (temperror, permerror) is "none".
_RECORDED = frozenset({"pass", "fail", "softfail", "neutral", "none"})

#: Seconds one check may spend on DNS (pyspf's C{check2} default, RFC 7208 §4.6.4).
QUERY_TIME = 20

#: RFC 1035 §2.3.4: octets in a label.
_MAX_LABEL = 63


def _normalised(name) -> str | None:
    """C{name} as a cache key (no final dot, lower case), or None when it cannot be
    a DNS name: an empty label or one over 63 octets (pyspf answers such a name
    with no data, RFC 7208 §4.3)."""
    name = str(name)
    if name.endswith("."):
        name = name[:-1]
    for label in name.split("."):
        if not 0 < len(label.encode("utf-8", "surrogateescape")) <= _MAX_LABEL:
            return None
    return name.lower()


class _Query(spf.query):
    """pyspf's query, with every DNS lookup answered by our resolver.

    @param resolver: an L{aimx.auth.resolver.Resolver}; the other arguments are
        C{spf.query}'s.
    """

    def __init__(self, *, resolver, **kwargs):
        super().__init__(**kwargs)
        self._resolver = resolver
        self._answers: dict[tuple[str, str], list] = {}

    def dns(self, name, qtype, cnames=None, ignore_void=False):
        """pyspf's C{query.dns}: the answers for C{name}, shaped as its dnspython
        driver gives them: TXT a 1-tuple of bytes (the strings of one record,
        joined), A/AAAA address strings, MX C{(preference, host)}, PTR host names;
        C{[]} for no data.  Type SPF (99, obsolete: RFC 7208 §3.1) has none.

        @param cnames: unused (the resolver follows CNAMEs).
        @param ignore_void: do not count an empty answer as a void lookup.
        @raise spf.TempError: the lookup failed temporarily, or the check's time
            is spent.
        @raise spf.PermError: more than C{spf.MAX_VOID_LOOKUPS} void lookups.
        """
        key = _normalised(name)
        if key is None:
            return []
        if (key, qtype) not in self._answers:
            self._answers[key, qtype] = self._lookup(key, qtype)
        answers = self._answers[key, qtype]
        if not answers and not ignore_void:
            self.void_lookups += 1
            if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                raise spf.PermError(f"Void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")
        return list(answers)  # pyspf sorts MX answers in place

    def _lookup(self, name: str, qtype: str) -> list:
        if self.querytime < 0:
            raise spf.TempError("DNS Error: exceeded max query lookup time")
        started = time.monotonic()
        resolver = self._resolver
        try:
            if qtype == "TXT":
                return [(text,) for text in resolver.txt_bytes(name)]
            if qtype in ("A", "AAAA"):
                return resolver.addresses(name, ipv6=qtype == "AAAA")
            if qtype == "MX":
                return resolver.mx(name)
            if qtype == "PTR":
                return resolver.ptr(name)
            return []
        except DnsNoRecord:
            return []
        except DnsTempError as e:
            raise spf.TempError(f"DNS {e}") from None
        finally:
            if self.querytime > 0:
                self.querytime -= time.monotonic() - started


def check(ip: str, mail_from: str, helo: str, resolver) -> str:
    """RFC 7208 check_host for C{ip} and the sender C{mail_from}, mapped to the recorded C{spf}.

    @param helo: the HELO name (used in macros), or C{""}.
    @param resolver: an L{aimx.auth.resolver.Resolver}.
    @return: C{pass|fail|softfail|neutral|none}; temperror, permerror and any unexpected
        error are C{none}. Never raises.
    """
    try:  # as spf.check2, with our query
        result, _, _ = _Query(i=ip, s=mail_from, h=helo, local=None, receiver=None,
                              timeout=spf.MAX_PER_LOOKUP_TIME, verbose=False,
                              querytime=QUERY_TIME, resolver=resolver).check()
    except Exception:  # e.g. an IP pyspf cannot parse
        result = "none"
    return result if result in _RECORDED else "none"
