"""The trust verdict for an inbound message and the on_receive hook gate (L0, pure).

Spec trust-and-auth §5: the glob patterns of §5.1 (glob-match semantics, compared
lower-cased) and C{trusted} = "none" | "true" | "false" from the effective policy and
sender list (C{Config.effective_trust}/C{effective_trusted_senders}), the header From and
whether an aligned DKIM signature passed.
"""

import functools
import re


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
    """Whole-string, case-insensitive glob match with the syntax of spec §5.1.

    C{*} (not C{/}), C{**}, C{?}, C{[a-z]}/C{[!a]}/C{[^a]}, nestable C{{a,b}}, leading
    C{!} (each one negates), C{\\} escapes.

    @raise ValueError: the pattern is invalid (config validation uses this).
    """
    regex, negated = _compile(pattern)
    return (regex.fullmatch(text.lower()) is not None) != negated


def bare_lower(from_: str) -> str:
    """The address of a formatted From, lower-cased: text after the last C{<} up to C{>}."""
    if "<" in from_:
        from_ = from_.rpartition("<")[2].partition(">")[0]
    return from_.lower()


def evaluate(policy: str, senders: tuple[str, ...], from_: str,
             dkim_aligned: bool) -> tuple[str, bool]:
    """The C{trusted} value of a message (§5).

    @param policy: the effective policy, C{"none"} or C{"verified"}.
    @param senders: the effective sender patterns.
    @param from_: the frontmatter C{from} (formatted header From).
    @param dkim_aligned: a DKIM signature passed with C{d=} aligned (relaxed) to From.
    @return: C{(trusted, sender_allowlisted)}; an unknown policy fails closed.
    """
    if policy == "none":
        return "none", False
    if policy != "verified":
        return "false", False
    sender = bare_lower(from_)
    allowlisted = any(_safe_match(p, sender) for p in senders)
    return ("true" if allowlisted and dkim_aligned else "false"), allowlisted


def _safe_match(pattern: str, sender: str) -> bool:
    # Config load rejects invalid patterns; one that slips through matches nothing.
    try:
        return glob_match(pattern, sender)
    except ValueError:
        return False


def hook_fires(trusted: str, fire_on_untrusted: bool) -> bool:
    """Whether an on_receive hook runs for a message (§5.2)."""
    return trusted == "true" or fire_on_untrusted
