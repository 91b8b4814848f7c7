"""Outbound delivery results: per-recipient classification and aggregation (L0, pure).

spec/outbound.md §5 and §10: one SMTP transaction per recipient domain, MX hosts in
preference order, one result per recipient. A reply to RCPT decides that recipient; any
other reply or error decides every recipient still pending on that host. Across hosts a
recipient is delivered if any host accepted it, else failed if any host refused it
permanently, else deferred.
"""

import re
from collections.abc import Iterable, Mapping, Sequence

import attrs

DELIVERED, DEFERRED, FAILED = "delivered", "deferred", "failed"

# What the SMTP client can put in MAIL FROM/RCPT TO unquoted: a dot-atom local part
# (RFC 5321 §4.1.2) and a host name. Quoted local parts and SMTPUTF8 are not supported.
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")
_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?")


@attrs.frozen
class RcptResult:
    """What became of one recipient.

    @ivar rcpt: the bare address, as given.
    @ivar status: L{DELIVERED}, L{DEFERRED} or L{FAILED}.
    @ivar details: the accepting host's reply, or why it was not delivered.
    """

    rcpt: str
    status: str = attrs.field(validator=attrs.validators.in_((DELIVERED, DEFERRED, FAILED)))
    details: str


@attrs.frozen
class Route:
    """Where the mail of one recipient domain goes.

    @ivar domain: the domain, lowercased.
    @ivar rcpts: its recipients, first-seen order, without duplicates.
    @ivar hosts: the MX hosts in preference order (or the domain itself, the implicit
        MX); empty when C{error} says why there are none.
    @ivar error: C{"DNS failure for ..."} or C{"No mail server found for domain ..."}.
    @ivar missing: the domain definitively has no mail server (no MX, A or AAAA).
    """

    domain: str
    rcpts: tuple[str, ...]
    hosts: tuple[str, ...] = ()
    error: str = ""
    missing: bool = False


@attrs.frozen
class Plan:
    """A resolved send: every recipient domain's route, and the invalid recipients.

    @ivar rcpts: every recipient in the order given; results come back in this order.
    @ivar routes: one per recipient domain, first-seen order.
    @ivar invalid: recipients refused before any lookup (bad address syntax).
    """

    rcpts: tuple[str, ...]
    routes: tuple[Route, ...]
    invalid: tuple[RcptResult, ...]

    @property
    def missing(self) -> list[tuple[str, str]]:
        """C{(domain, "No mail server found for domain <domain>")} for each domain that
        has no mail server at all; a send with any should be refused before delivery."""
        return [(route.domain, route.error) for route in self.routes if route.missing]


def address_error(address: str) -> str | None:
    """Why C{address} cannot be used in MAIL FROM or RCPT TO, or None when it can.

    @param address: a bare address such as C{bob@example.com}.
    """
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return "expected local-part@domain"
    if not address.isascii():
        return "non-ASCII addresses are not supported (no SMTPUTF8)"
    if not _LOCAL.fullmatch(local):
        return f"unsupported characters in local part {local!r}"
    if len(domain) > 253 or not all(_LABEL.fullmatch(label) for label in domain.split(".")):
        return f"invalid domain {domain!r}"
    return None


def group_by_domain(rcpts: Iterable[str]) -> dict[str, list[str]]:
    """Recipients by domain (text after the last C{@}, lowercased), duplicates dropped.

    @return: domain -> recipients; domains and recipients in first-seen order.
    """
    groups: dict[str, list[str]] = {}
    for rcpt in rcpts:
        members = groups.setdefault(rcpt.rpartition("@")[2].lower(), [])
        if rcpt not in members:
            members.append(rcpt)
    return groups


def reply_outcome(host: str, code: int, text: str) -> tuple[str, str]:
    """Classify one SMTP reply from C{host} (spec §10).

    @return: C{(status, details)}: 2xx delivered, 5xx failed (C{Rejected by <host>: ...}),
        anything else deferred (C{<host>: <code> <text>}).
    """
    if 500 <= code < 600:
        return FAILED, f"Rejected by {host}: {code} {text}"
    return (DELIVERED if 200 <= code < 300 else DEFERRED), f"{host}: {code} {text}"


def host_results(
    host: str,
    rcpts: Sequence[str],
    rcpt_replies: Mapping[str, tuple[int, str]],
    final: tuple[str, str],
) -> list[RcptResult]:
    """The results of one attempt at C{host}.

    A recipient whose RCPT was refused keeps that reply; every other recipient gets
    C{final}, the outcome of the transaction (end-of-data reply, or the error that
    ended it). Twisted's "No recipients accepted" is thereby classified per RCPT code.

    @param rcpt_replies: address -> C{(code, text)} of each RCPT answered so far.
    @param final: C{(status, details)} of the transaction.
    """
    results = []
    for rcpt in rcpts:
        code, text = rcpt_replies.get(rcpt, (250, ""))
        status, details = final if 200 <= code < 300 else reply_outcome(host, code, text)
        results.append(RcptResult(rcpt, status, details))
    return results


def settle(domain: str, rcpt: str, tries: Sequence[RcptResult]) -> RcptResult:
    """The final result of C{rcpt} after trying the MX hosts of C{domain} in order.

    Delivered if a host accepted it; otherwise failed if any host refused it
    permanently, else deferred, with C{All MX servers for <domain> unreachable: ...}
    listing each host's error.

    @param tries: this recipient's result at each host tried, in order (at least one).
    """
    for attempt in tries:
        if attempt.status == DELIVERED:
            return attempt
    status = FAILED if any(t.status == FAILED for t in tries) else DEFERRED
    errors = "; ".join(t.details for t in tries)
    return RcptResult(rcpt, status, f"All MX servers for {domain} unreachable: {errors}")


def overall(results: Iterable[RcptResult]) -> str:
    """The status of a whole send (spec §5, README "Partial sends").

    @return: C{"delivered"} when every recipient was delivered, C{"deferred"} when every
        one was deferred, C{"failed"} when every one failed, else C{"partial"}.
    """
    statuses = {result.status for result in results}
    if len(statuses) == 1:
        return statuses.pop()
    return "partial"


def summary(results: Iterable[RcptResult]) -> str:
    """One line about the recipients not delivered (the C{delivery_details} and error reason).

    @return: the details alone when one recipient was not delivered, else
        C{"<rcpt>: <details>"} joined with C{"; "}; C{""} when all were delivered.
    """
    undelivered = [result for result in results if result.status != DELIVERED]
    if len(undelivered) == 1:
        return undelivered[0].details
    return "; ".join(f"{result.rcpt}: {result.details}" for result in undelivered)
