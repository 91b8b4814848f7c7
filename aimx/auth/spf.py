"""SPF check_host (RFC 7208) over pyspf, with DNS through our resolver (L1, blocking).

pyspf has no resolver argument; it calls the module global C{spf.DNSLookup}. Importing this
module replaces that global once with L{_lookup}, which answers from the resolver bound to
the current context by L{check} (a C{ContextVar}: each thread running a check sees its own
resolver, so concurrent checks with different resolvers do not interfere).
"""

import contextvars

import spf

from aimx.auth.resolver import DnsNoRecord, DnsTempError

_resolver = contextvars.ContextVar("aimx_spf_resolver")

#: pyspf results recorded as themselves; everything else (temperror, permerror) is "none".
_RECORDED = frozenset({"pass", "fail", "softfail", "neutral", "none"})


def _lookup(name, qtype, strict=True, timeout=None):
    """pyspf's DNSLookup: C{[((name, qtype), value), ...]} shaped like its dnspython driver.

    TXT values are 1-tuples of bytes (the strings already joined), A/AAAA address strings,
    MX C{(preference, host)}, PTR host names. Type SPF (99) is obsolete (RFC 7208 §3.1)
    and answered empty. "No record" is an empty list; other failures raise TempError.
    """
    try:
        resolver = _resolver.get()
    except LookupError:
        raise spf.TempError("DNS: no resolver bound (call aimx.auth.spf.check)") from None
    try:
        if qtype == "TXT":
            values = [(t.encode("utf-8"),) for t in resolver.txt(name)]
        elif qtype in ("A", "AAAA"):
            values = resolver.addresses(name, ipv6=qtype == "AAAA")
        elif qtype == "MX":
            values = resolver.mx(name)
        elif qtype == "PTR":
            values = resolver.ptr(name)
        else:
            values = []
    except DnsNoRecord:
        return []
    except DnsTempError as e:
        raise spf.TempError(f"DNS {e}") from None
    return [((name, qtype), v) for v in values]


def check(ip: str, mail_from: str, helo: str, resolver) -> str:
    """RFC 7208 check_host for C{ip} and the sender C{mail_from}, mapped as spec §3.2.

    @param helo: the HELO name (used in macros), or C{""}.
    @param resolver: an L{aimx.auth.resolver.Resolver}.
    @return: C{pass|fail|softfail|neutral|none}; temperror, permerror and any unexpected
        error are C{none}. Never raises.
    """
    token = _resolver.set(resolver)
    try:
        result, _ = spf.check2(i=ip, s=mail_from, h=helo)
    except Exception:  # e.g. an IP pyspf cannot parse
        result = "none"
    finally:
        _resolver.reset(token)
    return result if result in _RECORDED else "none"


spf.DNSLookup = _lookup
