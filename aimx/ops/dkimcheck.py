"""The start-up DKIM DNS sanity check's decision (L0, pure; docs/install.md, "DNS records")."""


def p_value(record: str) -> str | None:
    """The non-empty C{p=} value of a DKIM record, whitespace removed, or C{None}."""
    for tag in record.split(";"):
        tag = tag.strip()
        if tag.startswith("p="):
            value = "".join(tag[2:].split())
            return value or None
    return None


def outcome(local: str, txts: list[str]) -> tuple[str, str | None]:
    """Compare the published records with the local public key.

    @param local: base64 of the local key's SubjectPublicKeyInfo DER.
    @param txts: the TXT strings found at C{<selector>._domainkey.<domain>}.
    @return: C{("match"|"mismatch"|"norecord"|"noptag", dns_p)}; C{dns_p} is the
        first published C{p=} for a mismatch, else C{None}.
    """
    dkim = [t for t in txts if "v=DKIM1" in t]
    if not dkim:
        return "norecord", None
    published = [p for p in map(p_value, dkim) if p]
    if local in published:
        return "match", None
    if published:
        return "mismatch", published[0]
    return "noptag", None


def report(fqdn: str, domain: str, local: str, txts: list[str] | None, error: str = ""):
    """The log line for a check, or C{None} when DNS matches the local key.

    @param txts: the TXT strings, or C{None} when the lookup failed with C{error}.
    @return: C{(level, text)} with level C{"error"} or C{"warn"}, or C{None}.
    """
    if txts is None:
        return "warn", (
            f"Warning: DKIM DNS sanity check skipped: {error}. Verify manually with "
            f"`dig +short TXT {fqdn}` once DNS has propagated."
        )
    kind, dns_p = outcome(local, txts)
    if kind == "match":
        return None
    if kind == "norecord":
        return "warn", (
            f"Warning: No DKIM TXT record found at {fqdn}. Outbound mail will FAIL DKIM "
            f"verification at receivers. Run `sudo aimx setup {domain}` to publish the record."
        )
    if kind == "noptag":
        return "warn", (
            f"Warning: DKIM TXT record at {fqdn} has no non-empty p= value. Outbound mail "
            f"will FAIL DKIM verification. Re-run `sudo aimx setup {domain}`."
        )
    return "error", "\n".join(
        [
            "ERROR: DKIM key mismatch between on-disk private key and DNS-published public key",
            f"  DNS record at {fqdn} advertises a different p= value than the local public.key.",
            "  Outbound signatures will FAIL DKIM verification at receivers.",
            f"  Run `sudo aimx setup {domain}` to republish the DNS record.",
            f"  (DNS p= first 32 chars: {dns_p[:32]}…)",
            f"  (Local p= first 32 chars: {local[:32]}…)",
        ]
    )
