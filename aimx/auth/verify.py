"""DKIM + SPF + DMARC for one inbound message (L1, blocking; run it in a thread).

docs/concepts.md, "Trust" (RFC 6376, RFC 7208, RFC 7489): the inputs are
chosen by L{aimx.core.authinputs}, alignment and DMARC verdicts by L{aimx.core.dmarc};
this module only does the lookups, all of them within one time budget.  Nothing here
raises or rejects: every DNS failure maps to a recorded value, and the failures that
could change the trust verdict are flagged (L{AuthResults.temporary}).
"""

import time

from aimx.auth import dkim, spf
from aimx.auth.resolver import DnsNoRecord, DnsTempError
from aimx.core import authinputs, dmarc
from aimx.core.authresults import PASS, UNAUTHENTICATED, AuthResults
from aimx.core.identity import Identity

#: Seconds one message's authentication may take; what is unfinished is temperror.
BUDGET = 20.0


def _dmarc_record(from_domain: str, resolver) -> tuple[dict | None, bool]:
    # The tree walk: (record or None, a DNS error other than "no record" occurred).
    # The first name holding any DMARC record ends the walk; several there mean no record
    # (RFC 7489 §6.6.3).
    for name in dmarc.lookup_names(from_domain):
        try:
            txts = resolver.txt(name)
        except DnsNoRecord:
            continue
        except DnsTempError:
            return None, True
        records = [r for r in map(dmarc.parse_record, txts) if r is not None]
        if records:
            return (records[0] if len(records) == 1 else None), False
    return None, False


def verify_inbound(raw: bytes, *, peer_ip: str | None, mail_from: str | None,
                   helo: str | None, identity: Identity, resolver,
                   budget: float = BUDGET, now=time.monotonic) -> AuthResults:
    """Authenticate one message. Blocking (DNS); never raises.

    @param raw: the message bytes as received.
    @param peer_ip: the SMTP client address; None or C{0.0.0.0} for C{aimx ingest}.
    @param mail_from: the envelope sender (C{""} for C{<>}), None for ingest.
    @param helo: the HELO/EHLO name, None for ingest.
    @param identity: the message's parsed identity fields (its author's domain is
        the one DKIM and DMARC align with).
    @param resolver: an L{aimx.auth.resolver.Resolver}; when it has no nameserver every
        result is C{none}.
    @param budget: seconds for all lookups together.
    """
    from_domain = dmarc.normalize(identity.author_domain) or None
    if not resolver.usable:
        return UNAUTHENTICATED
    resolver = resolver.until(now() + budget)
    signatures = dkim.verify(
        raw, dkim.KeyLookup(resolver.txt_bytes),
        lambda d: from_domain is not None and dmarc.aligned(d, from_domain, "r"))
    passed = [s.domain for s in signatures if s.result == PASS]
    author = identity.author
    identity_spf = authinputs.spf_identity(
        raw, peer_ip=peer_ip, mail_from=mail_from, helo=helo,
        header_from=None if author is None else author.addr_spec)
    spf_result = "none"
    if identity_spf.ip and identity_spf.domain:
        spf_result = spf.check(identity_spf.ip, identity_spf.sender, helo or "", resolver)
    record, error = _dmarc_record(from_domain, resolver) if from_domain else (None, False)
    return AuthResults(
        dkim=PASS if passed else "fail" if signatures else "none",
        spf=spf_result,
        dmarc=dmarc.evaluate(record, error=error, from_domain=from_domain, spf=spf_result,
                             mail_from_domain=identity_spf.domain, dkim_pass_domains=passed),
        from_domain=from_domain,
        signatures=signatures,
        dmarc_temperror=error,
        spf_ip=identity_spf.ip,
        spf_sender=identity_spf.sender,
    )
