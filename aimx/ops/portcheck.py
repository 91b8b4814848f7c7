"""The port-25 check, pure parts (L0): spec/setup-and-ops.md §3 and "Common facts".

Shared by C{aimx portcheck}, C{aimx setup}'s preflight, C{aimx doctor} and the
verifier service (C{twistd aimx-verifier}):

  - the outbound check's target: the lowest-preference MX of a well-known domain
    (C{outbound_check_domain}, default L{DEFAULT_OUTBOUND_CHECK_DOMAIN}), whose
    port 25 is asked for its 220 banner and then told QUIT, nothing else;
  - the verifier base URL (precedence, validation; there is no default: the
    inbound check runs only against a verifier the operator runs elsewhere) and
    its C{<url>/probe};
  - who holds port 25, from C{ss -tlnp} output;
  - the SMTP dialogues: the temporary responder's replies and the prober's
    banner[/EHLO]/QUIT exchange, as sans-IO state;
  - the verifier's answers and how the caller reads them;
  - which caller addresses the verifier may probe back.

Test hooks (environment, read by L{settings_from_environ}):
C{AIMX_PORTCHECK_BIND=HOST:PORT} is where the temporary responder listens and whose
port the occupancy check inspects (default C{0.0.0.0:25});
C{AIMX_SMTP_OUT_PORT=N} is the MX port the outbound check connects to (default 25;
the same hook redirects outbound MX delivery).  Its DNS goes through
L{aimx.auth.resolver.Resolver}, so C{AIMX_NAMESERVERS} redirects that too.
"""

import ipaddress
import json
import re

import attrs

from aimx.ops.setupflow import DomainError, validate_domain
from aimx.errors import AimxError

SMTP_PORT = 25

#: Whose MX the outbound check connects to when nothing else is configured: a
#: domain whose mail servers always answer on port 25.  Only a TCP connection, the
#: banner and QUIT: no EHLO, no mail, nothing about this host is sent.
DEFAULT_OUTBOUND_CHECK_DOMAIN = "gmail.com"

# Timeouts in seconds (spec §3.1, §3.2).
OUTBOUND_CONNECT_TIMEOUT = 10
OUTBOUND_IO_TIMEOUT = 5
OUTBOUND_BUDGET = 30
INBOUND_HTTP_TIMEOUT = 60
PROBE_BACK_BUDGET = 45
RESPONDER_READ_TIMEOUT = 30

CLIENT_IP_HEADER = "X-AIMX-Client-IP"
RESPONDER_BANNER = "220 localhost ESMTP aimx"
MAX_SMTP_LINE = 1024

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


# -- who holds port 25 ----------------------------------------------------------


@attrs.frozen
class Occupancy:
    """Who listens on port 25: C{free}, C{aimx} or C{other} (then C{name})."""

    kind: str = attrs.field(validator=attrs.validators.in_(("free", "aimx", "other")))
    name: str | None = None

    @property
    def free(self) -> bool:
        return self.kind == "free"

    @property
    def aimx(self) -> bool:
        return self.kind == "aimx"

    @property
    def other(self) -> bool:
        return self.kind == "other"


FREE = Occupancy("free")
AIMX = Occupancy("aimx")


def held_by(name: str) -> Occupancy:
    return Occupancy("other", name)


_USERS = re.compile(r"users:\((.*)\)")
_USER = re.compile(r'\("([^"]*)"(?:,pid=(\d+))?')
_AIMX_ENTRY_POINTS = ("aimx", "aimx.tac")
_HOSTING_PROCESSES = ("twistd",)


def ss_command(port: int = SMTP_PORT) -> list[str]:
    """The occupancy probe: listening TCP sockets on C{port}, with their processes."""
    return ["ss", "-tlnp", "sport", "=", f":{port}"]


def is_aimx_process(name: str, argv) -> bool:
    """Whether a listener named C{name} (comm) running C{argv} is aimx itself.

    [py] the Python daemon runs as C{aimx serve} (comm C{aimx}), C{twistd -n aimx}
    (comm C{twistd}) or under an interpreter (comm C{python3}, argv naming aimx).

    @param argv: the process's command line, C{None} when unreadable.
    """
    if name == "aimx":
        return True
    if name not in _HOSTING_PROCESSES and not name.startswith("python"):
        return False
    return any(arg.rsplit("/", 1)[-1] in _AIMX_ENTRY_POINTS for arg in (argv or ())[1:])


def parse_occupancy(ss_output: str, argv_of=lambda pid: None) -> Occupancy:
    """Classify C{ss -tlnp sport = :25} output.

    No data line -> free; the first line with C{users:(...)} -> aimx when one of its
    processes is aimx (under socket activation systemd holds aimx's socket too),
    else other(the first process's name); data lines without a process ->
    other(C{unknown}).

    @param argv_of: C{pid -> argv | None}, to recognise aimx under twistd/python.
    """
    lines = [line for line in ss_output.splitlines()[1:] if line.strip()]
    if not lines:
        return FREE
    for line in lines:
        match = _USERS.search(line)
        holders = _USER.findall(match.group(1)) if match else []
        if holders:
            if any(is_aimx_process(name, argv_of(int(pid)) if pid else None)
                   for name, pid in holders):
                return AIMX
            return held_by(holders[0][0])
    return held_by("unknown")


# -- the SMTP dialogues ---------------------------------------------------------


def responder_reply(line: str, hostname: str = "localhost",
                    unknown: str = "502 Not implemented") -> tuple[str, bool]:
    """The temporary responder's reply to one command line (spec §3.1).

    @return: C{(reply, close_after)}.
    """
    verb = line.strip().upper()
    if verb.startswith(("EHLO", "HELO")):
        return f"250 {hostname}", False
    if verb.startswith("QUIT"):
        return "221 Bye", True
    return unknown, False


class ProbeDialogue:
    """The prober's side of banner -> EHLO -> QUIT (or banner -> QUIT), without I/O.

    Feed each received line (without its line end) to L{received}; send what it
    returns.  When L{finished}, close the connection; L{ok} tells the verdict and
    L{reason} why it failed.  The success point is a C{250} to EHLO, or with no
    EHLO name the C{220} banner itself: QUIT's reply is read best-effort and never
    changes the verdict.

    @ivar answered: the peer sent at least one line (it speaks, if not our way).
    """

    def __init__(self, ehlo_name: str | None):
        """
        @param ehlo_name: the EHLO argument; C{None} to send nothing but QUIT after
            the banner (the outbound check to a third party's MX).
        """
        self.ehlo_name = ehlo_name
        self.state = "banner"
        self.ok = False
        self.answered = False
        self.reason = "connection closed before the banner"

    @property
    def finished(self) -> bool:
        return self.state in ("failed", "done")

    def _fail(self, reason: str) -> None:
        self.state = "failed"
        self.reason = reason

    def received(self, line: str) -> str | None:
        """Advance on one reply line; return the command to send, if any."""
        self.answered = True
        if self.state == "banner":
            if line.startswith("220-"):
                return None
            if line.startswith("220"):
                if self.ehlo_name is None:
                    self.state = "quit"
                    self.ok = True
                    self.reason = None
                    return "QUIT"
                self.state = "ehlo"
                self.reason = "connection closed after EHLO"
                return f"EHLO {self.ehlo_name}"
            self._fail(f"answered {line[:100]!r} instead of a 220 banner")
        elif self.state == "ehlo":
            if line.startswith("250-"):
                return None
            if line.startswith("250 ") or line == "250":
                self.state = "quit"
                self.ok = True
                self.reason = None
                return "QUIT"
            self._fail(f"unexpected EHLO reply: {line[:100]!r}")
        elif self.state == "quit":
            self.state = "done"
        return None

    def timed_out(self, seconds: float) -> str:
        """Why the wait for the next line failed, for L{lost}."""
        waiting = "banner" if self.state == "banner" else "reply"
        return f"no {waiting} within {seconds:g} s"

    def lost(self, reason: str | None = None) -> None:
        """The connection ended (or timed out) before L{finished}."""
        if not self.finished:
            if not self.ok:
                self._fail(reason or self.reason)
            else:
                self.state = "done"


# -- the verifier's answers -----------------------------------------------------


def health_body() -> bytes:
    """C{GET /health}: C{{"status":"ok","service":"aimx-verifier"}}."""
    return _compact({"status": "ok", "service": "aimx-verifier"})


def probe_body(reachable: bool, ip: str) -> bytes:
    """C{GET /probe}: C{{"reachable":<bool>,"ip":"<caller ip>"}}."""
    return _compact({"reachable": reachable, "ip": ip})


def _compact(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def probe_passed(body: bytes) -> bool:
    """AIMX's pass rule: the body contains C{"reachable":true} (or with a space)."""
    return b'"reachable":true' in body or b'"reachable": true' in body


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


def read_probe_response(status: int, body: bytes) -> ProbeResult:
    """Interpret the verifier's C{/probe} answer (a non-2xx status is a failure)."""
    if not 200 <= status < 300:
        return ProbeResult(False, error=f"the verifier answered HTTP {status}")
    try:
        ip = str(canonical_ip(json.loads(body).get("ip")))
    except (ValueError, AttributeError, TypeError):
        ip = None  # only an address parsed as one is shown to the operator
    if probe_passed(body):
        if ip is not None:
            return ProbeResult(True, detail=f"the verifier reached {ip} on port 25")
        return PASSED
    if ip is not None:
        return ProbeResult(False, detail=f"the verifier could not reach {ip} on port 25")
    return ProbeResult(False, detail="the verifier did not report the port reachable")


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


# -- whom the verifier probes ---------------------------------------------------


def canonical_ip(text: str):
    """Parse an address; an IPv4-mapped IPv6 address becomes its IPv4 form.

    Otherwise C{::ffff:127.0.0.1} would slip past the loopback check.

    @raise ValueError: not an IP address.
    """
    ip = ipaddress.ip_address(text.strip().split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_ULA = ipaddress.ip_network("fc00::/7")


def is_blocked_target(ip) -> bool:
    """Addresses a public verifier never probes: loopback, unspecified, link-local,
    private (RFC 1918 and the other special IPv4 blocks, RFC 4193), CGNAT (RFC 6598),
    multicast, broadcast."""
    ip = canonical_ip(str(ip))
    return (
        ip.is_loopback
        or ip.is_unspecified
        or ip.is_link_local
        or ip.is_multicast
        or (ip.version == 4 and (ip.is_private or ip in _CGNAT))
        or (ip.version == 6 and ip in _ULA)
    )


def caller_ip(peer: str, header: str | None, allow_private: bool = False):
    """The address C{/probe} connects back to, or C{None} (answer 400).

    A non-loopback TCP peer is authoritative (the service is exposed directly; the
    header is ignored so a client cannot pick its target).  A loopback peer is a
    reverse proxy, which must name the client in C{X-AIMX-Client-IP}; a private or
    loopback value there is refused.  With C{allow_private} (tests, private
    networks) private values are accepted and a loopback peer without the header is
    probed itself.
    """
    peer_ip = canonical_ip(peer)
    if not peer_ip.is_loopback:
        return peer_ip
    if header is None:
        return peer_ip if allow_private else None
    try:
        ip = canonical_ip(header)
    except ValueError:
        return None
    if is_blocked_target(ip) and not allow_private:
        return None
    return ip
