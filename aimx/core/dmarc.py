"""DMARC record parsing, alignment and the recorded verdict (L0, pure; RFC 7489).

The DNS tree walk itself is done by the caller (C{aimx.auth.verify}) over L{lookup_names}.
Organisational domains come from the Public Suffix List (C{publicsuffixlist}).
"""

import functools

from publicsuffixlist import PublicSuffixList


@functools.cache
def _psl() -> PublicSuffixList:
    # Built on first use: parsing the list is the slow part of this module.
    return PublicSuffixList()


def normalize(domain: str | None) -> str:
    """A domain as DNS and alignment compare it: trimmed, lower-cased, A-labels
    for internationalised names (IDNA); C{""} for none."""
    domain = (domain or "").strip().rstrip(".").lower()
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            pass  # not a name DNS can hold: compared as written, found nowhere
    return domain



def parse_record(txt: str) -> dict[str, str] | None:
    """Parse a DMARC TXT record into its tags (names lower-cased, values trimmed).

    Parts without C{=} are ignored; the first occurrence of a tag wins.

    @param txt: one TXT record, its strings concatenated.
    @return: the tags, or None unless the first tag is exactly C{v=DMARC1} (RFC 7489 §6.4).
    """
    parts = txt.split(";")
    name, _, value = parts[0].partition("=")
    if name.strip() != "v" or value.strip() != "DMARC1":
        return None
    tags = {}
    for part in parts:
        name, eq, value = part.partition("=")
        if eq and name.strip():
            tags.setdefault(name.strip().lower(), value.strip())
    return tags


_POLICIES = frozenset({"none", "quarantine", "reject"})


@functools.lru_cache(maxsize=4096)
def organizational_domain(domain: str) -> str:
    """The registrable domain of C{domain} by the Public Suffix List, lower-cased.

    A public suffix itself (or an empty name) is its own organisational domain.
    """
    domain = normalize(domain)
    return _psl().privatesuffix(domain) or domain


def aligned(a: str | None, b: str | None, mode: str = "r") -> bool:
    """DMARC identifier alignment (RFC 7489 §3.1).

    @param mode: C{"s"} strict (equal domains); anything else relaxed (same
        organisational domain).
    @return: False when either domain is empty.
    """
    a, b = normalize(a), normalize(b)
    if not a or not b:
        return False
    if mode == "s":
        return a == b
    return organizational_domain(a) == organizational_domain(b)


def lookup_names(from_domain: str) -> list[str]:
    """The C{_dmarc} names to query, in tree-walk order.

    The From domain first; then drop the leftmost label each step, except that a name of
    five or more labels jumps straight to its last four; the TLD is the last step.
    """
    labels = normalize(from_domain).split(".")
    if not all(labels):
        return []
    walk = [labels]
    rest = labels[-4:] if len(labels) >= 5 else labels[1:]
    while rest:
        walk.append(rest)
        rest = rest[1:]
    return ["_dmarc." + ".".join(name) for name in walk]


def evaluate(record: dict[str, str] | None, *, error: bool, from_domain: str | None,
             spf: str, mail_from_domain: str | None, dkim_pass_domains) -> str:
    """The recorded C{dmarc} value (policy is read elsewhere, never enforced).

    @param record: the tags found by the tree walk, or None.
    @param error: the walk hit a DNS error other than "no record".
    @param from_domain: the single From domain (L{author_domain}), or None.
    @param spf: the recorded SPF result.
    @param mail_from_domain: domain of the SPF identity (RFC 7208 §2.4), or None.
    @param dkim_pass_domains: C{d=} domains of the DKIM signatures that verified.
    @return: C{"none"} without a From domain, a record, or a usable policy in it
        (RFC 7489 §6.6.3); C{"fail"} on a DNS error or when neither SPF nor DKIM
        passes aligned (aimx decision); else C{"pass"}.
    """
    if from_domain is None:
        return "none"
    if error:
        return "fail"
    if record is None or record.get("p", "").lower() not in _POLICIES:
        return "none"
    spf_ok = spf == "pass" and aligned(mail_from_domain, from_domain, record.get("aspf", "r"))
    dkim_ok = any(aligned(d, from_domain, record.get("adkim", "r")) for d in dkim_pass_domains)
    return "pass" if spf_ok or dkim_ok else "fail"
