"""What authentication found for one inbound message (L0, pure values).

Filled in by L{aimx.auth.verify}; read by the trust verdict (L{aimx.core.trust}), the
stored frontmatter and the retry decision (docs/concepts.md, "Trust": RFC 8301
rsa-sha1, C{l=}, a signature cap, an authentication time budget).
"""

import attrs

PASS, FAIL, TEMPERROR, SKIPPED = "pass", "fail", "temperror", "skipped"


@attrs.frozen
class DkimResult:
    """The outcome of one C{DKIM-Signature} field.

    @ivar domain: its C{d=}, lower-cased (C{""} when unreadable).
    @ivar selector: its C{s=} (C{""} when unreadable).
    @ivar algorithm: its C{a=}, lower-cased.
    @ivar result: L{PASS}; L{FAIL}; L{TEMPERROR} (the key lookup failed for a reason
        other than "no such record", or the time budget ran out); L{SKIPPED} (past
        the cap on signatures evaluated per message).
    @ivar aligned: C{d=} is aligned (relaxed) with the author's domain.
    @ivar partial_body: its C{l=} is shorter than the body, so it vouches for
        only part of it.
    @ivar signed_headers: the field names of its C{h=}, lower-cased.
    @ivar why: a short reason for a result other than L{PASS}.
    """

    domain: str
    selector: str
    algorithm: str = ""
    result: str = FAIL
    aligned: bool = False
    partial_body: bool = False
    signed_headers: frozenset[str] = frozenset()
    why: str = ""

    @property
    def passed(self) -> bool:
        return self.result == PASS


@attrs.frozen
class AuthResults:
    """The recorded authentication results of a message.

    @ivar dkim: C{pass|fail|none} (a signature passing with partial body
        coverage still counts as C{pass} here, never for trust).
    @ivar spf: C{pass|fail|softfail|neutral|none} (RFC 7208).
    @ivar dmarc: C{pass|fail|none} (RFC 7489).
    @ivar from_domain: the author's domain, or None.
    @ivar signatures: the per-signature results, in header order.
    @ivar dmarc_temperror: looking up the author domain's DMARC record failed
        temporarily (or the budget ran out).
    @ivar spf_ip: the IP SPF was checked for, or None.
    @ivar spf_sender: the SPF identity, or None.
    """

    dkim: str = attrs.field(validator=attrs.validators.in_((PASS, FAIL, "none")))
    spf: str = attrs.field(
        validator=attrs.validators.in_((PASS, FAIL, "softfail", "neutral", "none")))
    dmarc: str = attrs.field(validator=attrs.validators.in_((PASS, FAIL, "none")))
    from_domain: str | None = None
    signatures: tuple[DkimResult, ...] = ()
    dmarc_temperror: bool = False
    spf_ip: str | None = None
    spf_sender: str | None = None

    @property
    def aligned_temperror(self) -> bool:
        """A signature aligned with the author's domain could not be checked for now."""
        return any(s.aligned and s.result == TEMPERROR for s in self.signatures)

    @property
    def temporary(self) -> bool:
        """A lookup that decides trust failed temporarily (docs/concepts.md, "Trust")."""
        return self.aligned_temperror or self.dmarc_temperror


UNAUTHENTICATED = AuthResults(dkim="none", spf="none", dmarc="none")
