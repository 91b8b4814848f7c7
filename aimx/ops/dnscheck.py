"""The DNS records aimx needs and the verdict of each DNS check (L0, pure).

Shared by C{aimx setup} and C{aimx doctor}: L{ExpectedDns.records} is the record
table setup prints (docs/install.md, "aimx setup", "DNS records"), L{ExpectedDns.evaluate} the verification both run.  The lookups
themselves are L{aimx.auth.dnsverify}'s; this module only names the queries
(L{ExpectedDns.queries}, then L{ExpectedDns.followups} for what the first answers
name) and judges their answers.

Besides the zone's records it checks reverse DNS (PTR, forward-confirmed: the
name a server address maps to must map back to it), which is set at the address's
provider, not in the zone; and, when the operator has one, the backup MX.
"""

import ipaddress
import json
from collections.abc import Mapping

import attrs

from aimx.core.dmarc import parse_record

A, AAAA, MX, TXT, PTR = "A", "AAAA", "MX", "TXT", "PTR"
PASS, FAIL, MISSING, WARN = "pass", "fail", "missing", "warn"

#: One TXT character-string holds at most 255 bytes (RFC 1035 §3.3.14); a longer
#: value is published as several strings, which receivers concatenate (RFC 6376
#: §3.6.2.2 for DKIM keys, RFC 7208 §3.3 for SPF).
TXT_STRING_MAX = 255
#: The MX preferences setup proposes: aimx first, the backup after it (RFC 5321 §5.1).
OWN_MX_PREFERENCE, BACKUP_MX_PREFERENCE = 10, 20
#: PTR names per address whose forward addresses are looked up: a reverse zone is
#: someone else's, and may answer with many names.
MAX_PTR_NAMES = 4
#: The DMARC policies, loosest first: setup proposes the first, doctor suggests the next.
DMARC_POLICIES = ("none", "quarantine", "reject")

_SPF_IPS = ("ip4:", "+ip4:", "ip6:", "+ip6:")
_TABLE_HEADER = (
    "  TYPE NAME                                          VALUE",
    "  ---- --------------------------------------------- -----",
)


def txt_strings(value: str) -> tuple[str, ...]:
    """A TXT value cut into the character-strings that publish it, each at most
    L{TXT_STRING_MAX} bytes of UTF-8 and never cut inside a character."""
    data = value.encode("utf-8")
    strings = []
    while len(data) > TXT_STRING_MAX:
        cut = TXT_STRING_MAX
        while data[cut] & 0xC0 == 0x80:  # a UTF-8 continuation byte: back off
            cut -= 1
        strings.append(data[:cut].decode("utf-8"))
        data = data[cut:]
    strings.append(data.decode("utf-8"))
    return tuple(strings)


def quoted(strings) -> str:
    """Character-strings as a zone file writes them: C{"one" "two"} (RFC 1035 §5.1)."""
    return " ".join(
        '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in strings
    )


@attrs.frozen
class DnsRecord:
    """One record the operator publishes: C{type} (C{A}, C{MX}, ...), C{name}, C{value}.

    A TXT C{value} is the whole text, its strings concatenated.
    """

    type: str
    name: str
    value: str

    @property
    def strings(self) -> tuple[str, ...]:
        """The character-strings of a TXT record (L{txt_strings}); other types: the value."""
        return txt_strings(self.value) if self.type == TXT else (self.value,)

    @property
    def shown(self) -> str:
        """The value as setup and doctor print it: a TXT value too long for one
        string as its quoted strings, anything else as it is."""
        strings = self.strings
        return quoted(strings) if len(strings) > 1 else self.value


@attrs.frozen
class Lookup:
    """What one query returned.

    @ivar answers: the answers as text (MX as C{"<pref> <host>."}, PTR as the name
        without its final dot); empty when the name does not exist or has no record
        of that type.
    @ivar error: why the lookup failed, or C{None}.
    """

    answers: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    error: str | None = None


@attrs.frozen
class Check:
    """The verdict of one check.

    @ivar name: C{A}, C{AAAA}, C{MX}, C{MX (backup)}, C{SPF}, C{SPF (IPv6)}, C{DKIM},
        C{DMARC}, C{PTR} or C{PTR (IPv6)}.
    @ivar status: L{PASS}, L{FAIL}, L{MISSING} or L{WARN}.
    @ivar record: the record to publish when the check fails, if one is known.
    @ivar advice: what to do that is not a record of the zone (PTR).
    @ivar found: what a later decision reads: DMARC's policy, the PTR name.
    """

    name: str
    status: str
    message: str = ""
    record: DnsRecord | None = None
    advice: str | None = None
    found: str | None = None

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
    @ivar backup_mx: the backup MX host (config C{backup_mx}), or C{None}.
    """

    domain: str
    ipv4: str
    ipv6: str | None
    selector: str
    dkim_key: str | None
    backup_mx: str | None = None

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
        records[MX] = DnsRecord(MX, self.domain, f"{OWN_MX_PREFERENCE} {self.domain}.")
        if self.backup_mx:
            records["MX (backup)"] = DnsRecord(
                MX, self.domain, f"{BACKUP_MX_PREFERENCE} {self.backup_mx}."
            )
        records["SPF"] = DnsRecord(TXT, self.domain, f"v=spf1 {ips} -all")
        if self.dkim_key is not None:
            records["DKIM"] = DnsRecord(TXT, self.dkim_name, f"v=DKIM1; k=rsa; p={self.dkim_key}")
        # Monitoring first, reports off: tighten once mail flows (doctor says when).
        records["DMARC"] = DnsRecord(TXT, self.dmarc_name, "v=DMARC1; p=none")
        return records

    def records(self) -> list[DnsRecord]:
        """The records to publish, in display order (never a PTR: that is the
        address provider's)."""
        return list(self._records().values())

    def reverse(self) -> list[tuple[str, str]]:
        """C{(check name, address)} of each server address whose PTR is checked.

        A loopback address (a demo) has no reverse DNS anyone could set.
        """
        pairs = [("PTR", self.ipv4)] + ([("PTR (IPv6)", self.ipv6)] if self.ipv6 else [])
        return [(name, ip) for name, ip in pairs if not ipaddress.ip_address(ip).is_loopback]

    def queries(self) -> list[tuple[str, str]]:
        """The C{(type, name)} lookups L{evaluate} needs first; L{followups} names the rest."""
        queries = [(A, self.domain)]
        if self.ipv6:
            queries.append((AAAA, self.domain))
        queries += [
            (MX, self.domain),
            (TXT, self.domain),
            (TXT, self.dkim_name),
            (TXT, self.dmarc_name),
        ]
        if self.backup_mx:
            queries += [(A, self.backup_mx), (AAAA, self.backup_mx)]
        return queries + [(PTR, _reverse_name(ip)) for _, ip in self.reverse()]

    def followups(self, answers: Mapping[tuple[str, str], Lookup]) -> list[tuple[str, str]]:
        """The lookups the first answers call for: the forward addresses (A for an
        IPv4 address, AAAA for IPv6) of the first L{MAX_PTR_NAMES} names each PTR
        lookup returned, less what L{queries} already asks."""
        asked = set(self.queries())
        wanted = []
        for _, ip in self.reverse():
            for name in _ptr_names(answers[(PTR, _reverse_name(ip))]):
                query = (_forward_type(ip), name)
                if query not in asked:
                    asked.add(query)
                    wanted.append(query)
        return wanted

    def evaluate(self, answers: Mapping[tuple[str, str], Lookup]) -> list[Check]:
        """Every check, in display order: A, AAAA, MX, MX (backup), SPF, SPF (IPv6),
        DKIM, DMARC, PTR, PTR (IPv6).

        @param answers: a L{Lookup} for each of L{queries} and of L{followups}.
        """
        records = self._records()
        spf = answers[(TXT, self.domain)]
        mx = answers[(MX, self.domain)]
        checks = [_address(A, answers[(A, self.domain)], self.ipv4, records[A])]
        if self.ipv6:
            checks.append(_address(AAAA, answers[(AAAA, self.domain)], self.ipv6, records[AAAA]))
        checks.append(_mx(mx, self.domain, records[MX]))
        if self.backup_mx:
            checks.append(_backup_mx(
                mx, (answers[(A, self.backup_mx)], answers[(AAAA, self.backup_mx)]),
                self.domain, self.backup_mx, records["MX (backup)"],
            ))
        checks.append(_spf("SPF", spf, self.ipv4, records["SPF"]))
        if self.ipv6:
            checks.append(_spf("SPF (IPv6)", spf, self.ipv6, records["SPF"]))
        checks += [
            _dkim(answers[(TXT, self.dkim_name)], self.dkim_key, records.get("DKIM")),
            _dmarc(answers[(TXT, self.dmarc_name)], records["DMARC"]),
        ]
        for name, ip in self.reverse():
            lookup = answers[(PTR, _reverse_name(ip))]
            forward = {host: answers[(_forward_type(ip), host)] for host in _ptr_names(lookup)}
            checks.append(_ptr(name, ip, lookup, forward, self.domain))
        return checks


def passed(checks: list[Check]) -> bool:
    """Whether verification passed: no check failed (warnings allowed)."""
    return not any(check.failed for check in checks)


def table_lines(records: list[DnsRecord]) -> list[str]:
    """The record table of setup's DNS guidance: header, rule, one row per record."""
    return [*_TABLE_HEADER, *(f"  {r.type:<4} {r.name:<45} {r.shown}" for r in records)]


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


def _mx_entries(answers) -> list[tuple[int, str]]:
    """C{(preference, host)} of each C{"<pref> <host>."} answer, the host lower-cased."""
    entries = []
    for answer in answers:
        preference, _, host = answer.partition(" ")
        if preference.isdigit():
            entries.append((int(preference), host.rstrip(".").lower()))
    return entries


def _backup_mx(mx: Lookup, addresses: tuple[Lookup, Lookup], domain: str, backup: str,
               record: DnsRecord) -> Check:
    """The backup MX is in the MX set, after aimx (a higher preference number,
    RFC 5321 §5.1), and has an address senders can reach."""
    name = "MX (backup)"
    if mx.error is not None:
        return Check(name, FAIL, f"MX lookup failed: {mx.error}", record)
    entries = _mx_entries(mx.answers)
    mine = [pref for pref, host in entries if host == backup.lower()]
    if not mine:
        return Check(name, MISSING, f"{backup} is not among the MX records of {domain}", record)
    own = [pref for pref, host in entries if host == domain.lower()]
    if own and min(mine) <= min(own):
        return Check(
            name, FAIL,
            f"backup MX {backup} has preference {min(mine)}, not above {domain}'s own "
            f"{min(own)}: senders would try the backup first",
            record,
        )
    if not any(lookup.answers for lookup in addresses):
        errors = [lookup.error for lookup in addresses if lookup.error is not None]
        if errors:
            return Check(name, FAIL, f"address lookup for {backup} failed: {errors[0]}")
        return Check(name, FAIL, f"backup MX {backup} has no A or AAAA record: senders "
                                 "cannot reach it")
    return Check(name, PASS)


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
    if any('"' in answer for answer in dkim):
        # The quoted strings were pasted into a field that took them as text.
        return Check(
            "DKIM", FAIL,
            "DKIM record contains quote characters: your DNS provider stored the quoted "
            "strings as text; enter the value without the quotes (as separate strings if "
            "the provider asks for them)",
            record,
        )
    return Check("DKIM", FAIL, "DKIM record found but public key does not match local key", record)


def _dmarc(lookup: Lookup, record: DnsRecord) -> Check:
    """A DMARC record with any policy passes: p=none is the monitoring start setup
    proposes (the next step is doctor's to suggest)."""
    if lookup.error is not None:
        return Check("DMARC", FAIL, f"DMARC lookup failed: {lookup.error}", record)
    found = [(answer, parse_record(answer)) for answer in lookup.answers]
    dmarc = [(answer, tags) for answer, tags in found if tags is not None]
    if not dmarc:
        return Check("DMARC", MISSING, "No DMARC record found", record)
    shown = _listing(answer for answer, _ in dmarc)
    if len(dmarc) > 1:
        # RFC 7489 §6.6.3: more than one record, and receivers apply none.
        return Check("DMARC", FAIL, f"{len(dmarc)} DMARC records found, so receivers use "
                                    f"none; keep one: {shown}", record)
    policy = dmarc[0][1].get("p", "").lower()
    if policy not in DMARC_POLICIES:
        return Check("DMARC", FAIL, f"DMARC record has no valid policy (p=none, p=quarantine "
                                    f"or p=reject): {shown}", record)
    if policy == "none":
        return Check("DMARC", PASS, "p=none: monitoring, no policy applied yet", found=policy)
    return Check("DMARC", PASS, found=policy)


def _reverse_name(ip: str) -> str:
    """C{10.2.0.192.in-addr.arpa} / C{...ip6.arpa} (RFC 1035 §3.5, RFC 3596 §2.5)."""
    return ipaddress.ip_address(ip).reverse_pointer


def _forward_type(ip: str) -> str:
    return AAAA if ipaddress.ip_address(ip).version == 6 else A


def _ptr_names(lookup: Lookup) -> list[str]:
    """The PTR names whose addresses are looked up: the first L{MAX_PTR_NAMES}, lower-cased."""
    names = []
    for name in lookup.answers:
        name = name.rstrip(".").lower()
        if name and name not in names:
            names.append(name)
    return names[:MAX_PTR_NAMES]


def _ptr(name: str, ip: str, lookup: Lookup, forward: Mapping[str, Lookup],
         domain: str) -> Check:
    """Reverse DNS, forward-confirmed: a PTR name of C{ip} whose own addresses
    include C{ip}.  Receivers check it (many refuse or spam-folder mail from an
    address without one); it is set where the address comes from, so every
    finding is a warning with that advice."""
    advice = (f"Reverse DNS is set by whoever gave you {ip} (your hosting provider's panel "
              f"or support), not in the DNS zone of {domain}.")
    if lookup.error is not None:
        return Check(name, WARN, f"PTR lookup for {ip} failed: {lookup.error}", advice=advice)
    names = _ptr_names(lookup)
    if not names:
        return Check(
            name, WARN,
            f"no PTR record for {ip}: ask your hosting provider to set reverse DNS to {domain}; "
            "many receivers reject or spam-folder mail from IPs without one",
            advice=advice,
        )
    for host in names:
        if any(_same_ip(answer, ip) for answer in forward[host].answers):
            return Check(name, PASS, f"{ip} → {host}", found=host)
    host = names[0]
    kind = _forward_type(ip)
    resolved = forward[host]
    if resolved.error is not None:
        why = f"the {kind} lookup of {host} failed ({resolved.error})"
    elif resolved.answers:
        why = f"{host} resolves to {_listing(resolved.answers, quoted=False)}, not {ip}"
    else:
        why = f"{host} has no {kind} record"
    return Check(
        name, WARN,
        f"PTR for {ip} is {host}, but {why}: ask your hosting provider to set reverse DNS "
        f"to {domain}",
        advice=advice,
        found=host,
    )
