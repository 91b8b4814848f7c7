"""Outbound delivery: routes, per-recipient classification and aggregation (L0, pure).

docs/concepts.md, "Sending": recipients of our own domain are delivered locally (L{split_local}, L{local_result});
every other domain is routed from its MX and address lookups (L{route_for}): NXDOMAIN, a
Null MX (RFC 7505) and a name with neither MX nor address (RFC 5321 §5.1) are permanent,
a temporary DNS failure defers. One SMTP transaction per remote domain, MX hosts in
preference order, one result per recipient. A reply to RCPT decides that recipient; any
other reply or error decides every recipient still pending on that host. Across hosts a
recipient is delivered if any host accepted it, else failed if any host refused it
permanently, else deferred.
"""

import re
from collections.abc import Iterable, Mapping, Sequence

import attrs

from aimx.core.config import ascii_lower
from aimx.errors import SmtpStatus

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
    @ivar error: why there are no hosts: C{"DNS failure for ..."} (temporary), or the
        permanent reason when C{missing}.
    @ivar missing: the domain definitively cannot receive mail (NXDOMAIN, a Null MX, or
        no MX, A or AAAA record); its recipients fail.
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
        """C{(domain, reason)} for each domain that cannot receive mail at all; a send
        with any is held back before delivery (L{held_back})."""
        return [(route.domain, route.error) for route in self.routes if route.missing]


@attrs.frozen
class Lookup:
    """One DNS query's outcome, as the routing rules read it.

    The adapter maps its resolver's answer or error to this: records, NXDOMAIN, a
    temporary failure, or none of them (NOERROR without an answer of that type).

    @ivar records: the answer: C{(preference, host)} for MX, addresses for A/AAAA.
    @ivar nxdomain: the name does not exist (RFC 8020: no record of any type).
    @ivar error: a temporary failure's text (timeout, SERVFAIL), C{""} when none.
    """

    records: tuple = ()
    nxdomain: bool = False
    error: str = ""

    def __attrs_post_init__(self):
        if sum((bool(self.records), self.nxdomain, bool(self.error))) > 1:
            raise ValueError("a lookup has records, NXDOMAIN or an error, only one")


def no_such_domain(domain: str) -> str:
    """The permanent reason for a domain that does not exist (NXDOMAIN)."""
    return f"550 5.1.2 {domain}: no such domain"


def null_mx(domain: str) -> str:
    """The permanent reason for a domain that publishes a Null MX (RFC 7505 §4.2)."""
    return f"556 5.1.10 {domain} does not accept mail (null MX, RFC 7505)"


def no_mail_server(domain: str) -> str:
    """The permanent reason for a domain with neither MX nor address (RFC 5321 §5.1)."""
    return f"550 5.1.2 No mail server found for domain {domain} (no MX, A or AAAA record)"


def _is_root(host: str) -> bool:
    return not host.rstrip(".")


def needs_addresses(mx: Lookup) -> bool:
    """Whether the route depends on the domain's own A/AAAA records (the implicit MX):
    true when the MX query gave no records, unless the domain does not exist."""
    return not mx.records and not mx.nxdomain


def route_for(domain: str, rcpts: tuple[str, ...], mx: Lookup,
          addresses: Sequence[Lookup] = ()) -> Route:
    """Where the mail of C{domain} goes (RFC 5321 §5.1, RFC 7505).

    - MX records: their hosts by preference. MX records that all point at the root
      (RFC 7505's single C{0 .}, or any such set) are a Null MX: the domain accepts no
      mail, permanently. A root host among real ones is skipped.
    - NXDOMAIN on the MX query: the domain does not exist, permanently.
    - Otherwise (no MX, or the MX query failed): the domain itself when an A or AAAA
      lookup answered (implicit MX); else a temporary failure on any lookup defers;
      else NXDOMAIN means no such domain and empty answers no mail server, both
      permanent.

    @param mx: the MX query; records are C{(preference, host)}.
    @param addresses: the A/AAAA queries of the domain, made only when
        L{needs_addresses}; an answer may end the list early.
    """
    if mx.records:
        hosts = [host.rstrip(".") for _, host in sorted(mx.records, key=lambda r: r[0])]
        if all(_is_root(host) for host in hosts):
            return Route(domain, rcpts, error=null_mx(domain), missing=True)
        return Route(domain, rcpts, hosts=tuple(h for h in hosts if not _is_root(h)))
    if mx.nxdomain:
        return Route(domain, rcpts, error=no_such_domain(domain), missing=True)
    if any(lookup.records for lookup in addresses):
        return Route(domain, rcpts, hosts=(domain,))
    failure = mx.error or next((lookup.error for lookup in addresses if lookup.error), "")
    if failure:
        return Route(domain, rcpts, error=f"DNS failure for {domain}: {failure}")
    if any(lookup.nxdomain for lookup in addresses):
        return Route(domain, rcpts, error=no_such_domain(domain), missing=True)
    return Route(domain, rcpts, error=no_mail_server(domain), missing=True)


def held_back(plan: Plan) -> list[RcptResult]:
    """The results of a remote part that is not sent because some domain of it cannot
    receive mail (nothing half-sent: the caller fixes the address and sends again).

    Recipients of such a domain fail with its reason; recipients refused before any
    lookup keep their refusal; a domain whose lookups failed temporarily keeps its DNS
    failure; every other recipient is deferred, naming the domains in the way.

    @return: one result per recipient of C{plan}, in its order.
    """
    missing = [domain for domain, _ in plan.missing]
    their = "its" if len(missing) == 1 else "their"
    held = (f"Not sent because {', '.join(missing)} cannot receive mail; "
            f"retry without {their} recipients")
    results = {result.rcpt: result for result in plan.invalid}
    for entry in plan.routes:
        if entry.missing:
            status, details = FAILED, entry.error
        else:
            status, details = DEFERRED, entry.error or held
        results.update((rcpt, RcptResult(rcpt, status, details)) for rcpt in entry.rcpts)
    return [results[rcpt] for rcpt in plan.rcpts]


def split_local(rcpts: Iterable[str], domain: str) -> tuple[list[str], list[str]]:
    """The recipients of our own C{domain} (delivered locally) and the others.

    The domain (after the last C{@}) is compared ASCII case-insensitively, as the
    SMTP server's RCPT rule and SEND's From check do; a subdomain is not ours.

    @return: C{(local, remote)}, each in the given order.
    """
    ours = ascii_lower(domain)
    local, remote = [], []
    for rcpt in rcpts:
        (local if ascii_lower(rcpt.rpartition("@")[2]) == ours else remote).append(rcpt)
    return local, remote


def local_result(rcpt: str, status: SmtpStatus) -> RcptResult:
    """A local recipient's result from the reply the inbound chain (or the RCPT rule)
    gave it: 2xx delivered, 5xx failed, anything else deferred; the details are the
    reply itself (C{"250 2.0.0 OK message accepted"})."""
    if 200 <= status.code < 300:
        outcome = DELIVERED
    elif 500 <= status.code < 600:
        outcome = FAILED
    else:
        outcome = DEFERRED
    return RcptResult(rcpt, outcome, status.line().decode("utf-8"))


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
    """Classify one SMTP reply from C{host} (RFC 5321 §4.2.1: 2xx, 4xx, 5xx).

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
    """The status of a whole send (docs/concepts.md, "Message files": C{delivery_status}).

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
