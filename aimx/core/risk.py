"""Whether a stored message needs a person's eyes first (L0, pure).

docs/guardrails.md, "Risk": a copy is stored with C{risk = "review"} and its
C{risk_reasons} when a content guard matched (L{aimx.core.guards}), hidden
text was removed from its body, a From display name holds an address other
than the From address, or a trusted sender's Reply-To points to another
domain.  Hooks do not fire for it unless they set C{fire_on_review}
(L{aimx.core.hookspec}).
"""

from collections.abc import Sequence

from aimx.core.guards import Hit
from aimx.core.identity import Identity, parse_address_list

REVIEW = "review"
HIDDEN_TEXT = "hidden_text"
DISPLAY_NAME = "display_name_address"
REPLY_TO = "reply_to_domain"
GUARD = "guard:"
#: Characters stripped from a display-name word before it is read as an address.
_WRAPPING = "\"'()<>[]{},;:"


def reasons(*, hits: Sequence[Hit], hidden_chars: int, identity: Identity,
            trusted: str) -> tuple[str, ...]:
    """The C{risk_reasons} of one stored copy, in a fixed order; empty: no risk.

    @param hits: the guards that matched (C{guard:<name>} each).
    @param hidden_chars: characters removed from the body as hidden.
    @param identity: the identity as stored (a trusted copy's, unsigned fields out).
    @param trusted: the copy's C{trusted} value.
    """
    out = [GUARD + hit.guard for hit in hits]
    if hidden_chars:
        out.append(HIDDEN_TEXT)
    if any(_other_address(m.display_name, m.address) for m in identity.from_.mailboxes):
        out.append(DISPLAY_NAME)
    author = identity.author
    if trusted == "true" and author is not None and any(
            m.domain_lower != author.domain_lower for m in identity.reply_to.mailboxes):
        out.append(REPLY_TO)
    return tuple(out)


def level(found: Sequence[str]) -> str | None:
    """C{risk}: L{REVIEW} when there is a reason, else C{None} (the key is left out)."""
    return REVIEW if found else None


def _other_address(display_name: str, address: str) -> bool:
    """Whether a word of the display name parses as an address that is not C{address}
    (C{"ceo@bank.example" <x@attacker.example>})."""
    for word in display_name.split():
        word = word.strip(_WRAPPING)
        if "@" not in word:
            continue
        parsed = parse_address_list(word).single
        if parsed is not None and "." in parsed.domain and parsed.address != address:
            return True
    return False
