"""The port-25 check's settings and results (L0, pure; docs/cli.md, "aimx portcheck").
Who holds the port is L{aimx.ops.portholder}, the SMTP dialogues
L{aimx.ops.probedialogue}, the verifier's answers L{aimx.ops.verifierwire}.

Shared by C{aimx portcheck}, C{aimx setup}'s preflight, C{aimx doctor} and the
verifier service (C{twistd aimx-verifier}):

  - the outbound check's target: the lowest-preference MX of a well-known domain
    (C{outbound_check_domain}, default L{DEFAULT_OUTBOUND_CHECK_DOMAIN}), whose
    port 25 is asked for its 220 banner and then told QUIT, nothing else;
  - the verifier base URL (precedence, validation; there is no default: the
    inbound check runs only against a verifier the operator runs elsewhere) and
    its C{<url>/probe};
  - the settings the test hooks change, and a probe's result with the
    operator's advice.

Test hooks (environment, read by L{settings_from_environ}):
C{AIMX_PORTCHECK_BIND=HOST:PORT} is where the temporary responder listens and whose
port the occupancy check inspects (default C{0.0.0.0:25});
C{AIMX_SMTP_OUT_PORT=N} is the MX port the outbound check connects to (default 25;
the same hook redirects outbound MX delivery).  Its DNS goes through
L{aimx.auth.resolver.Resolver}, so C{AIMX_NAMESERVERS} redirects that too.
"""

import attrs

from aimx.ops.setupflow import DomainError, validate_domain
from aimx.errors import AimxError

SMTP_PORT = 25

#: Whose MX the outbound check connects to when nothing else is configured: a
#: domain whose mail servers always answer on port 25.  Only a TCP connection, the
#: banner and QUIT: no EHLO, no mail, nothing about this host is sent.
DEFAULT_OUTBOUND_CHECK_DOMAIN = "gmail.com"

# Timeouts in seconds.
OUTBOUND_CONNECT_TIMEOUT = 10
OUTBOUND_IO_TIMEOUT = 5
OUTBOUND_BUDGET = 30
INBOUND_HTTP_TIMEOUT = 60
PROBE_BACK_BUDGET = 45


OUTBOUND_BLOCKED = "Outbound port 25 is blocked. Your VPS provider may restrict SMTP traffic."
OUTBOUND_UNCHECKED = (
    "Outbound port 25 could not be checked. Fix the reason above, or check against "
    "another domain's MX: set outbound_check_domain in config.toml or pass "
    "--outbound-check-domain."
)
INBOUND_UNREACHABLE = (
    "Inbound port 25 is not reachable. Check your firewall and VPS provider settings."
)
INBOUND_UNCHECKED = (
    "Inbound port 25 could not be checked. Is the verifier at verify_host running "
    "and reachable from here?"
)
INBOUND_NOT_CHECKED = "not checked: no verifier configured (verify_host)"
#: What the operator is told when no verifier is configured (stdout, not an error).
NO_VERIFIER = (
    "Checking inbound port 25 needs a verifier on another host, outside this network,",
    "that connects back to this host's port 25. aimx uses no hosted service for it.",
    "On that other host run:  twistd -n aimx-verifier",
    "  (HTTPS through a reverse proxy in front of it, or --http 0.0.0.0:3025)",
    'then set verify_host = "https://<that host>" in config.toml, or pass --verify-host.',
)
COMPATIBLE_PROVIDERS = (
    "Hetzner Cloud",
    "OVH / OVHcloud",
    "BuyVM (Frantech)",
    "Vultr (on request)",
    "Linode/Akamai (on request)",
)


class VerifyHostError(AimxError):
    """The verify host is empty or not an http(s) URL."""

    code = "VALIDATION"


class CheckDomainError(AimxError):
    """The outbound check domain is not a valid domain name."""

    code = "VALIDATION"


class SettingsError(AimxError):
    """A portcheck test hook in the environment is malformed."""

    code = "VALIDATION"


# -- the verify host --------------------------------------------------------------


def validate_verify_host(value: str) -> str:
    """The verifier base URL with trailing C{/} stripped.

    @raise VerifyHostError: empty, or not C{http://}/C{https://}.
    """
    trimmed = value.rstrip("/")
    if not trimmed:
        raise VerifyHostError("verify-host cannot be empty")
    if not trimmed.startswith(("http://", "https://")):
        raise VerifyHostError(
            f"verify-host must start with http:// or https:// (got: {trimmed})"
        )
    return trimmed


def resolve_verify_host(flag: str | None, configured: str | None) -> str | None:
    """C{--verify-host} > C{config.verify_host}, validated; C{None} when neither is set.

    There is no default: without a verifier of the operator's own, the inbound
    check is not run (and the operator is told how to run one, L{NO_VERIFIER}).

    @param flag: the command-line value, C{None} when not given.
    @param configured: C{verify_host} from config.toml, C{None} when unset or unreadable.
    @raise VerifyHostError: the winning value is invalid.
    """
    if flag is not None:
        return validate_verify_host(flag)
    if configured is not None:
        return validate_verify_host(configured)
    return None


def resolve_check_domain(flag: str | None, configured: str | None) -> str:
    """C{--outbound-check-domain} > C{config.outbound_check_domain} >
    L{DEFAULT_OUTBOUND_CHECK_DOMAIN}, checked with the mail-domain rules.

    @raise CheckDomainError: the winning value is not a domain name.
    """
    domain = next(v for v in (flag, configured, DEFAULT_OUTBOUND_CHECK_DOMAIN) if v is not None)
    try:
        validate_domain(domain)
    except DomainError as e:
        raise CheckDomainError(f"invalid outbound check domain '{domain}': {e}") from None
    return domain


def lowest_mx(records) -> str | None:
    """The exchange to try first: the lowest preference (RFC 5321 §5.1).

    @param records: C{(preference, host)} pairs, hosts without the final dot.
    @return: the host; C{None} when there is none or it is a null MX (RFC 7505:
        C{.}), i.e. the domain takes no mail.
    """
    if not records:
        return None
    host = min(records)[1]
    return None if host in ("", ".") else host


@attrs.frozen
class ProbeTarget:
    """Where a probe connects: a host and a port.

    @ivar host: a hostname or an IP literal, IPv6 without brackets.
    """

    host: str
    port: int = SMTP_PORT

    @property
    def ipv6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if self.ipv6 else self.host
        return f"{host}:{self.port}"


def probe_url(verify_host: str) -> str:
    """The inbound probe's URL: C{<verify host>/probe}."""
    return f"{verify_host}/probe"


# -- test hooks -----------------------------------------------------------------


@attrs.frozen
class ProbeSettings:
    """Which ports the check uses; production is port 25 everywhere.

    @ivar bind_host: where the temporary responder listens.
    @ivar port: "port 25" on this host: responder port and the occupancy check's port.
    @ivar out_port: the MX port the outbound check connects to.
    """

    bind_host: str = "0.0.0.0"
    port: int = SMTP_PORT
    out_port: int = SMTP_PORT

    @property
    def bind(self) -> str:
        host = f"[{self.bind_host}]" if ":" in self.bind_host else self.bind_host
        return f"{host}:{self.port}"


def parse_port(raw: str, name: str, allow_zero: bool = False) -> int:
    """A TCP port number; 0 (any free port) only with C{allow_zero}.

    @raise SettingsError: naming C{name}.
    """
    low = 0 if allow_zero else 1
    if not raw.isdigit() or not low <= int(raw) < 65536:
        raise SettingsError(f"{name} must be a port number ({low}-65535), not {raw!r}")
    return int(raw)


def parse_hostport(value: str, name: str, allow_zero: bool = False) -> tuple[str, int]:
    """C{HOST:PORT} (IPv6 in brackets) -> C{(host, port)}, host without brackets.

    @raise SettingsError: naming C{name}.
    """
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise SettingsError(f"{name} must be HOST:PORT, not {value!r}")
    return host.strip("[]"), parse_port(port, name, allow_zero)


def settings_from_environ(environ) -> ProbeSettings:
    """Read C{AIMX_PORTCHECK_BIND} and C{AIMX_SMTP_OUT_PORT}.

    @raise SettingsError: a value is malformed.
    """
    host, port = parse_hostport(
        environ.get("AIMX_PORTCHECK_BIND", "0.0.0.0:25"), "AIMX_PORTCHECK_BIND"
    )
    out_port = parse_port(environ.get("AIMX_SMTP_OUT_PORT", "25"), "AIMX_SMTP_OUT_PORT")
    return ProbeSettings(bind_host=host, port=port, out_port=out_port)


# -- results and advice ----------------------------------------------------------


@attrs.frozen
class ProbeResult:
    """One probe's outcome.

    @ivar ok: the probe passed.
    @ivar error: the check itself could not run or was inconclusive (unresolvable
        host, no MX, HTTP failure, a server that answered but not with 220);
        C{None} when the answer was a plain "not reachable".
    @ivar detail: what happened, for the operator: why it did not pass, or what
        answered when it did.
    """

    ok: bool
    error: str | None = None
    detail: str | None = None

    @property
    def reason(self) -> str | None:
        """The text for the check's line: the detail, else the error."""
        return self.detail or self.error


PASSED = ProbeResult(True)


def outbound_message(result: ProbeResult) -> str:
    """The operator's advice for a failed outbound check (the reason is on its line)."""
    if result.error is not None:
        return OUTBOUND_UNCHECKED
    return OUTBOUND_BLOCKED


def mx_label(host: str, ip: str, port: int, domain: str) -> str:
    """How the outbound check names its peer: C{mx.example [192.0.2.1]:25 (MX of example)}."""
    return f"{host} [{ip}]:{port} (MX of {domain})"


def outbound_passed(label: str) -> ProbeResult:
    """The outbound check's success, naming who answered."""
    return ProbeResult(True, detail=f"{label} sent its 220 banner")


def inbound_message(result: ProbeResult) -> str:
    """The operator's advice for a failed inbound check (the reason is on its line)."""
    if result.error is not None:
        return INBOUND_UNCHECKED
    return INBOUND_UNREACHABLE
