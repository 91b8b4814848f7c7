"""The DNS records aimx needs and the verdict of each DNS check (L0, pure).

Shared by C{aimx setup} and C{aimx doctor}: L{ExpectedDns.records} is the record
table of docs/install.md, "aimx setup" ("DNS records"), L{ExpectedDns.evaluate} their
verification. The lookups themselves are L{aimx.auth.dnsverify}'s; this module only names
the queries (L{ExpectedDns.queries}) and judges their answers.
"""

import ipaddress
import json
from collections.abc import Mapping

import attrs

A, AAAA, MX, TXT = "A", "AAAA", "MX", "TXT"
PASS, FAIL, MISSING, WARN = "pass", "fail", "missing", "warn"

_SPF_IPS = ("ip4:", "+ip4:", "ip6:", "+ip6:")
_TABLE_HEADER = (
    "  TYPE NAME                                          VALUE",
    "  ---- --------------------------------------------- -----",
)


@attrs.frozen
class DnsRecord:
    """One record the operator publishes: C{type} (C{A}, C{MX}, ...), C{name}, C{value}."""

    type: str
    name: str
    value: str


@attrs.frozen
class Lookup:
    """What one query returned.

    @ivar answers: the answers as text (MX as C{"<pref> <host>."}); empty when the
        name does not exist or has no record of that type.
    @ivar error: why the lookup failed, or C{None}.
    """

    answers: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    error: str | None = None


@attrs.frozen
class Check:
    """The verdict of one check.

    @ivar name: C{A}, C{AAAA}, C{MX}, C{SPF}, C{SPF (IPv6)}, C{DKIM} or C{DMARC}.
    @ivar status: L{PASS}, L{FAIL}, L{MISSING} or L{WARN}.
    @ivar record: the record to publish when the check fails, if one is known.
    """

    name: str
    status: str
    message: str = ""
    record: DnsRecord | None = None

    @property
    def failed(self) -> bool:
        """Fail and Missing fail; a warning does not."""
        return self.status in (FAIL, MISSING)


@attrs.frozen
class ExpectedDns:
    """What DNS should say about this server.

    @ivar ipv6: the server's global IPv6 address when C{enable_ipv6} is on, else C{None}.
    @ivar dkim_key: the base64 SubjectPublicKeyInfo of the local DKIM public key, or
        C{None} when it is unknown (the DKIM check then only wants a record, and no
        DKIM record is suggested).
    """

    domain: str
    ipv4: str
    ipv6: str | None
    selector: str
    dkim_key: str | None

    @property
    def dkim_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def dmarc_name(self) -> str:
        return f"_dmarc.{self.domain}"

    def _records(self) -> dict[str, DnsRecord]:
        """The records by the check that wants them, in display order."""
        ips = f"ip4:{self.ipv4}" + (f" ip6:{self.ipv6}" if self.ipv6 else "")
        records = {A: DnsRecord(A, self.domain, self.ipv4)}
        if self.ipv6:
            records[AAAA] = DnsRecord(AAAA, self.domain, self.ipv6)
        records[MX] = DnsRecord(MX, self.domain, f"10 {self.domain}.")
        records["SPF"] = DnsRecord(TXT, self.domain, f"v=spf1 {ips} -all")
        if self.dkim_key is not None:
            records["DKIM"] = DnsRecord(TXT, self.dkim_name, f"v=DKIM1; k=rsa; p={self.dkim_key}")
        records["DMARC"] = DnsRecord(
            TXT, self.dmarc_name, f"v=DMARC1; p=reject; rua=mailto:postmaster@{self.domain}"
        )
        return records

    def records(self) -> list[DnsRecord]:
        """The records to publish, in display order (never a PTR)."""
        return list(self._records().values())

    def queries(self) -> list[tuple[str, str]]:
        """The C{(type, name)} lookups L{evaluate} needs."""
        queries = [(A, self.domain)]
        if self.ipv6:
            queries.append((AAAA, self.domain))
        return queries + [
            (MX, self.domain),
            (TXT, self.domain),
            (TXT, self.dkim_name),
            (TXT, self.dmarc_name),
        ]

    def evaluate(self, answers: Mapping[tuple[str, str], Lookup]) -> list[Check]:
        """Every check, in display order: A, AAAA, MX, SPF, SPF (IPv6), DKIM, DMARC.

        @param answers: a L{Lookup} for each of L{queries}.
        """
        records = self._records()
        spf = answers[(TXT, self.domain)]
        checks = [_address(A, answers[(A, self.domain)], self.ipv4, records[A])]
        if self.ipv6:
            checks.append(_address(AAAA, answers[(AAAA, self.domain)], self.ipv6, records[AAAA]))
        checks += [
            _mx(answers[(MX, self.domain)], self.domain, records[MX]),
            _spf("SPF", spf, self.ipv4, records["SPF"]),
        ]
        if self.ipv6:
            checks.append(_spf("SPF (IPv6)", spf, self.ipv6, records["SPF"]))
        checks += [
            _dkim(answers[(TXT, self.dkim_name)], self.dkim_key, records.get("DKIM")),
            _dmarc(answers[(TXT, self.dmarc_name)], records["DMARC"]),
        ]
        return checks


def passed(checks: list[Check]) -> bool:
    """Whether verification passed: no check failed (warnings allowed)."""
    return not any(check.failed for check in checks)


def table_lines(records: list[DnsRecord]) -> list[str]:
    """The record table of setup's DNS guidance: header, rule, one row per record."""
    return [*_TABLE_HEADER, *(f"  {r.type:<4} {r.name:<45} {r.value}" for r in records)]


def parse_hostname_i(output: str) -> tuple[str | None, str | None]:
    """The server addresses in C{hostname -I} output.

    @return: the first IPv4 address and the first global IPv6 address (not
        link-local, ULA, loopback or unspecified); C{None} for each one absent.
    """
    ipv4 = ipv6 = None
    for token in output.split():
        try:
            ip = ipaddress.ip_address(token)
        except ValueError:
            continue
        if ip.version == 4:
            ipv4 = ipv4 or str(ip)
        elif ipv6 is None and _global_v6(ip):
            ipv6 = str(ip)
    return ipv4, ipv6


def _global_v6(ip: ipaddress.IPv6Address) -> bool:
    return not (
        ip.is_link_local
        or ip in ipaddress.IPv6Network("fc00::/7")
        or ip.is_loopback
        or ip.is_unspecified
    )


def _listing(items, quoted: bool = True) -> str:
    """C{["a", "b"]}: how AIMX shows the records it found."""
    shown = (json.dumps(i, ensure_ascii=False) if quoted else i for i in items)
    return "[" + ", ".join(shown) + "]"


def _same_ip(text: str, expected: str) -> bool:
    try:
        return ipaddress.ip_address(text) == ipaddress.ip_address(expected)
    except ValueError:
        return text == expected


def _address(kind: str, lookup: Lookup, ip: str, record: DnsRecord) -> Check:
    if lookup.error is not None:
        return Check(kind, FAIL, f"{kind} record lookup failed: {lookup.error}", record)
    if any(_same_ip(answer, ip) for answer in lookup.answers):
        return Check(kind, PASS)
    if lookup.answers:
        found = _listing(lookup.answers, quoted=False)
        return Check(kind, FAIL, f"{kind} record points to {found}, expected {ip}", record)
    return Check(kind, MISSING, f"No {kind} record found", record)


def _mx(lookup: Lookup, domain: str, record: DnsRecord) -> Check:
    if lookup.error is not None:
        return Check(MX, FAIL, f"MX lookup failed: {lookup.error}", record)
    if any(domain.lower() in answer.lower() for answer in lookup.answers):
        return Check(MX, PASS)
    if lookup.answers:
        message = f"MX record found but does not point to {domain}: {_listing(lookup.answers)}"
        return Check(MX, FAIL, message, record)
    return Check(MX, MISSING, "No MX record found", record)


def _spf_lists(record: str, ip: str) -> bool:
    """Whether an C{ip4:}/C{ip6:} mechanism names exactly C{ip} (a CIDR suffix is ignored)."""
    for token in record.split():
        lowered = token.lower()
        for prefix in _SPF_IPS:
            if lowered.startswith(prefix) and _same_ip(token[len(prefix):].split("/")[0], ip):
                return True
    return False


def _spf(name: str, lookup: Lookup, ip: str, record: DnsRecord) -> Check:
    if lookup.error is not None:
        return Check(name, FAIL, f"SPF lookup failed: {lookup.error}", record)
    spf = [answer for answer in lookup.answers if answer.startswith("v=spf1")]
    if not spf:
        return Check(name, MISSING, "No SPF record found", record)
    if any(_spf_lists(answer, ip) for answer in spf):
        return Check(name, PASS)
    return Check(name, FAIL, f"SPF record found but does not include {ip}: {_listing(spf)}", record)


def _dkim_p(record: str) -> str | None:
    """The C{p=} value of a DKIM record with whitespace removed; C{None} when absent or empty."""
    for tag in record.split(";"):
        tag = tag.strip()
        if tag.startswith("p="):
            key = "".join(tag[2:].split())
            if key:
                return key
    return None


def _dkim(lookup: Lookup, local_key: str | None, record: DnsRecord | None) -> Check:
    if lookup.error is not None:
        return Check("DKIM", FAIL, f"DKIM lookup failed: {lookup.error}", record)
    dkim = [answer for answer in lookup.answers if "v=DKIM1" in answer]
    if not dkim:
        return Check("DKIM", MISSING, "No DKIM record found", record)
    if local_key is None or any(_dkim_p(answer) == local_key for answer in dkim):
        return Check("DKIM", PASS)
    return Check("DKIM", FAIL, "DKIM record found but public key does not match local key", record)


def _dmarc(lookup: Lookup, record: DnsRecord) -> Check:
    if lookup.error is not None:
        return Check("DMARC", FAIL, f"DMARC lookup failed: {lookup.error}", record)
    dmarc = [answer for answer in lookup.answers if "v=DMARC1" in answer]
    if not dmarc:
        return Check("DMARC", MISSING, "No DMARC record found", record)
    if any(tag.strip().lower() == "p=none" for answer in dmarc for tag in answer.split(";")):
        return Check(
            "DMARC",
            WARN,
            "DMARC record uses p=none (no enforcement). Consider p=quarantine or p=reject "
            "for production.",
        )
    return Check("DMARC", PASS)
