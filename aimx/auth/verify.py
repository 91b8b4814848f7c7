"""DKIM + SPF + DMARC for one inbound message (L1, blocking; run it in a thread).

Spec trust-and-auth §1-4: the inputs are chosen by L{aimx.core.authinputs}, the verdicts
by L{aimx.core.dmarc}; this module only does the lookups. Nothing here raises or rejects:
every DNS failure maps to a recorded value.
"""

import attrs

from aimx.auth import dkim, spf
from aimx.auth.dkim import DkimSignature
from aimx.auth.resolver import DnsNoRecord, DnsTempError
from aimx.core import authinputs, dmarc

_VERDICTS = attrs.validators.in_(("pass", "fail", "none"))


@attrs.frozen
class AuthResults:
    """The recorded authentication results of a message.

    @ivar dkim: C{pass|fail|none} (§2).
    @ivar spf: C{pass|fail|softfail|neutral|none} (§3).
    @ivar dmarc: C{pass|fail|none} (§4).
    @ivar dkim_aligned: a DKIM signature passed with C{d=} aligned (relaxed) to the From
        domain; the trust input (§5).
    @ivar from_domain: the single From domain, or None.
    @ivar signatures: the per-signature DKIM results.
    @ivar spf_ip: the IP SPF was checked for, or None.
    @ivar spf_sender: the SPF identity, or None.
    """

    dkim: str = attrs.field(validator=_VERDICTS)
    spf: str = attrs.field(
        validator=attrs.validators.in_(("pass", "fail", "softfail", "neutral", "none")))
    dmarc: str = attrs.field(validator=_VERDICTS)
    dkim_aligned: bool
    from_domain: str | None
    signatures: tuple[DkimSignature, ...] = ()
    spf_ip: str | None = None
    spf_sender: str | None = None


def _dmarc_record(from_domain: str, resolver) -> tuple[dict | None, bool]:
    # The tree walk (§4): (record or None, a DNS error other than "no record" occurred).
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
                   helo: str | None, from_addresses: tuple[str, ...],
                   resolver) -> AuthResults:
    """Authenticate one message. Blocking (DNS); never raises.

    @param raw: the message bytes as received.
    @param peer_ip: the SMTP client address; None or C{0.0.0.0} for C{aimx ingest}.
    @param mail_from: the envelope sender (C{""} for C{<>}), None for ingest.
    @param helo: the HELO/EHLO name, None for ingest.
    @param from_addresses: the addresses of the RFC 5322 From header.
    @param resolver: an L{aimx.auth.resolver.Resolver}; when it has no nameserver every
        result is C{none} (spec §1).
    """
    from_domain = dmarc.author_domain(from_addresses)
    if not resolver.usable:
        return AuthResults(dkim="none", spf="none", dmarc="none", dkim_aligned=False,
                           from_domain=from_domain)
    signatures = dkim.verify(raw, resolver.dkim_dnsfunc)
    passed = [s.domain for s in signatures if s.passed]
    identity = authinputs.spf_identity(raw, peer_ip=peer_ip, mail_from=mail_from, helo=helo)
    spf_result = "none"
    if identity.ip and identity.domain:
        spf_result = spf.check(identity.ip, identity.sender, helo or "", resolver)
    record, error = _dmarc_record(from_domain, resolver) if from_domain else (None, False)
    return AuthResults(
        dkim="pass" if passed else "fail" if signatures else "none",
        spf=spf_result,
        dmarc=dmarc.evaluate(record, error=error, from_domain=from_domain, spf=spf_result,
                             mail_from_domain=identity.domain, dkim_pass_domains=passed),
        dkim_aligned=any(dmarc.aligned(d, from_domain, "r") for d in passed),
        from_domain=from_domain,
        signatures=signatures,
        spf_ip=identity.ip,
        spf_sender=identity.sender,
    )
