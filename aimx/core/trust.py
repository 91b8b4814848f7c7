"""The trust verdict for an inbound message and the on_receive hook gate (L0, pure).

docs/concepts.md, "Trust": the sender patterns (glob-match semantics, compared
lower-cased; docs/configuration.md) and C{trusted} = "none" | "true" |
"false" from the effective policy and sender list (C{Config.effective_trust} /
C{effective_trusted_senders}), the parsed identity (L{aimx.core.identity}) and the
DKIM results; a C{"false"} verdict carries its reason.
"""

import functools
import re

import attrs

from aimx.core.authresults import TEMPERROR, AuthResults
from aimx.core.identity import Identity, display_name


def _class(pattern: str, i: int) -> tuple[str, int]:
    # The [...] set whose "[" is at i-1: (regex class, index after its "]").
    negate = pattern[i:i + 1] in ("!", "^")
    i += negate
    out = []
    while i < len(pattern) and pattern[i] != "]":
        escaped = pattern[i] == "\\"
        i += escaped
        if i == len(pattern):
            break
        c = pattern[i]
        if c == "-" and not escaped and out and pattern[i + 1:i + 2] not in ("]", ""):
            out.append("-")
        else:
            out.append(re.escape(c))
        i += 1
    if i == len(pattern) or not out:
        raise ValueError("unterminated or empty [...]")
    return "[" + "^" * negate + "".join(out) + "]", i + 1


def _translate(pattern: str) -> str:
    out, depth, i = [], 0, 0
    while i < len(pattern):
        c = pattern[i]
        i += 1
        if c == "\\":
            if i == len(pattern):
                raise ValueError("trailing backslash")
            out.append(re.escape(pattern[i]))
            i += 1
        elif c == "*":
            double = pattern[i:i + 1] == "*"
            i += double
            out.append(".*" if double else "[^/]*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            cls, i = _class(pattern, i)
            out.append(cls)
        elif c == "{":
            depth += 1
            out.append("(?:")
        elif c == "," and depth:
            out.append("|")
        elif c == "}" and depth:
            depth -= 1
            out.append(")")
        else:
            out.append(re.escape(c))
    if depth:
        raise ValueError("unclosed {")
    return "".join(out)


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str) -> tuple[re.Pattern, bool]:
    bang = len(pattern) - len(pattern.lstrip("!"))
    try:
        regex = re.compile(_translate(pattern[bang:].lower()), re.DOTALL)
    except (ValueError, re.error) as e:  # re.error: e.g. a reversed range [z-a]
        raise ValueError(f"invalid sender pattern {pattern!r}: {e}") from None
    return regex, bang % 2 == 1


def glob_match(pattern: str, text: str) -> bool:
    """Whole-string, case-insensitive glob match (docs/configuration.md, sender patterns).

    C{*} (not C{/}), C{**}, C{?}, C{[a-z]}/C{[!a]}/C{[^a]}, nestable C{{a,b}}, leading
    C{!} (each one negates), C{\\} escapes.

    @raise ValueError: the pattern is invalid (config validation uses this).
    """
    regex, negated = _compile(pattern)
    return (regex.fullmatch(text.lower()) is not None) != negated


#: Fields a trusting signature must cover when the message has them: who it is
#: from, who replies go to, what it is about, and how its body is to be read.
COVERED = ("from", "sender", "reply-to", "subject", "content-type")
#: Fields a trusted copy shows only when its trusting signature covers them: many
#: signers leave some of them out (Microsoft 365 signs no To or Cc), and an attacker
#: replaying a signed message could add them (a Cc for a reply-all, a thread).
WITHHELD_UNLESS_SIGNED = ("to", "cc", "date", "message-id", "in-reply-to", "references")


@attrs.frozen
class Verdict:
    """The trust verdict of one message for one mailbox.

    @ivar trusted: C{"none"}, C{"true"} or C{"false"} (the frontmatter value).
    @ivar allowlisted: the author's address matched the mailbox's sender patterns.
    @ivar sender: the author's address as matched (lower-cased), or C{""}.
    @ivar reason: why it is C{"false"} (the frontmatter C{trust_reason}), else None.
    @ivar unsigned: for C{"true"}, the L{WITHHELD_UNLESS_SIGNED} fields the message has
        but its trusting signature does not cover: the stored copy leaves them out.
    """

    trusted: str
    allowlisted: bool = False
    sender: str = ""
    reason: str | None = None
    unsigned: tuple[str, ...] = ()


def allowlisted(senders: tuple[str, ...], identity: Identity) -> bool:
    """Whether the message has a trustable author whom C{senders} allow."""
    author = identity.author
    if author is None or identity.problem() is not None:
        return False
    return any(_safe_match(p, author.address) for p in senders)


def evaluate(policy: str, senders: tuple[str, ...], identity: Identity,
             auth: AuthResults) -> Verdict:
    """The C{trusted} value of a message (docs/concepts.md, "Trust").

    C{"true"} needs: the identity fields read cleanly (one From mailbox with a plain
    dot-atom address, no repeated field, no Sender in another domain), that address
    on the allowlist, and a DKIM signature aligned with its domain that passed, signs
    the whole body and covers the L{COVERED} fields the message has.

    @param policy: the effective policy, C{"none"} or C{"verified"}.
    @param senders: the effective sender patterns.
    @param identity: the parsed identity fields.
    @param auth: the authentication results.
    @return: the verdict; an unknown policy fails closed.
    """
    author = identity.author
    sender = author.address if author is not None else ""
    if policy == "none":
        return Verdict("none", sender=sender)
    if policy != "verified":
        return Verdict("false", sender=sender, reason=f"unknown trust policy {policy!r}")
    problem = identity.problem()
    if problem is not None:
        return Verdict("false", sender=sender, reason=problem)
    if not allowlisted(senders, identity):
        return Verdict("false", sender=sender, reason="sender not in trusted_senders")
    reason, signature = _dkim_problem(auth, identity.author_domain or "", identity.present)
    if reason is not None:
        return Verdict("false", True, sender, reason)
    unsigned = tuple(name for name in WITHHELD_UNLESS_SIGNED if name in identity.present
                     and name not in signature.signed_headers)
    return Verdict("true", True, sender, None, unsigned)


def _dkim_problem(auth: AuthResults, domain: str, present: frozenset[str]):
    """C{(why no aligned DKIM signature vouches for the message, None)}, or
    C{(None, the signature that does)}."""
    aligned = [s for s in auth.signatures if s.aligned]
    passed = [s for s in aligned if s.passed]
    for signature in passed:
        missing = [name for name in COVERED if name in present
                   and name not in signature.signed_headers]
        if not signature.partial_body and not missing:
            return None, signature
    return _why_not(auth, domain, present, aligned, passed), None


def _why_not(auth, domain, present, aligned, passed) -> str:
    """The first reason, in this order, why none of the aligned signatures vouches."""
    if any(s.partial_body for s in passed):
        return "signature covers only part of the body (l=)"
    if passed:
        missing = [name for name in COVERED if name in present
                   and name not in passed[0].signed_headers]
        return f"signature does not cover the {display_name(missing[0])} header"
    if any(s.result == TEMPERROR for s in aligned):
        return f"DKIM key of {domain} could not be looked up (temporary error)"
    if any(s.algorithm == "rsa-sha1" for s in aligned):
        return "signature uses rsa-sha1 (RFC 8301)"
    if aligned:
        return f"DKIM signature of {domain} did not verify"
    if any(s.passed for s in auth.signatures):
        return f"no DKIM signature aligned with {domain}"
    return "no valid DKIM signature"


def must_retry(auth: AuthResults, identity: Identity, mailboxes) -> bool:
    """Whether to answer C{451 4.4.3} and store nothing (docs/concepts.md, "Trust").

    True when a temporary DNS failure (or the time budget) hit a lookup that decides
    trust (an aligned signature's key, the author domain's DMARC record) and the
    author is allow-listed by a C{verified} mailbox among the recipients'.

    @param mailboxes: C{(policy, senders)} of each recipient's mailbox.
    """
    if not auth.temporary:
        return False
    return any(policy == "verified" and allowlisted(senders, identity)
               for policy, senders in mailboxes)


_GLOB_SPECIAL = frozenset("\\*?[]{},!")


def literal(address: str) -> str:
    """The sender pattern matching C{address} alone (case aside): its glob
    characters escaped."""
    return "".join("\\" + c if c in _GLOB_SPECIAL else c for c in address)


def _safe_match(pattern: str, sender: str) -> bool:
    # Config load rejects invalid patterns; one that slips through matches nothing.
    try:
        return glob_match(pattern, sender)
    except ValueError:
        return False


def hook_fires(trusted: str, fire_on_untrusted: bool) -> bool:
    """Whether an on_receive hook runs for a message (docs/hooks.md, "The trust gate")."""
    return trusted == "true" or fire_on_untrusted
