"""The daemon's C{--bind} grammar (L0, pure): what the operator wrote -> a Twisted
server endpoint description, and the readiness log line that names a bound address.

A C{--bind} value is one of::

    HOST:PORT                        tcp:PORT:interface=HOST (empty HOST: 0.0.0.0)
    [IPV6]:PORT                      tcp:PORT:interface=IPV6, its colons escaped
    tcp:PORT[:interface=H][:backlog=N]                          passed through
    tcp6:PORT[:interface=H][:backlog=N]                         passed through
    systemd:domain=INET|INET6:index=N   (or name=NAME)          passed through

so C{HOST:PORT} works as it always has and anything else is Twisted's own endpoint
syntax (C{twisted.internet.endpoints.serverFromString}: C{:} separates arguments,
C{=} a keyword from its value, a backslash escapes the next character).  Only the
stream types that give SMTP a client address are taken: C{unix:} has no peer IP for
SPF, C{ssl:} would be implicit TLS where port 25 speaks STARTTLS.  Values are
checked here so a typo is a usage error before anything starts, not a traceback
at bind time.

Readiness (docs/design.md, "Listeners and readiness"): the daemon logs one
L{LISTENING} event per bound address (C{aimx.smtp: listening address=...}), then
the control socket's, and only then writes C{aimx.pid}; L{logged_addresses} reads
those lines back.
"""

import re

import attrs

from aimx.errors import AimxError
from aimx.ops import logline

DEFAULT = "0.0.0.0:25"
#: C{<runtime_dir>/aimx.pid}: written once every listener is bound (readiness).
PID_NAME = "aimx.pid"
#: The endpoint types C{--bind} takes.
PREFIXES = ("tcp", "tcp6", "systemd")
#: Endpoint types Twisted knows that cannot carry inbound SMTP, and why.
_REFUSED = {
    "unix": "a UNIX socket gives SMTP no client address (SPF needs one)",
    "ssl": "port 25 speaks STARTTLS on a plain TCP socket, not implicit TLS",
}
_TCP_KEYWORDS = ("interface", "backlog")
_SYSTEMD_DOMAINS = ("INET", "INET6")
#: The message of the C{aimx.smtp} event naming one bound address (its field
#: C{address}, as L{address_text} writes it).
LISTENING = "listening"


class BindError(AimxError):
    """A C{--bind} value that is not in the grammar; the message says why."""

    code = "CONFIG"


@attrs.frozen
class Bind:
    """One C{--bind} value.

    @ivar text: the value as the operator wrote it (start-up errors quote it).
    @ivar description: the Twisted server endpoint description it stands for.
    """

    text: str
    description: str


def escape(value: str) -> str:
    """C{value} as one argument of an endpoint description (C{\\}, C{:}, C{=} escaped)."""
    return re.sub(r"([\\:=])", r"\\\1", value)


def _split(description: str) -> tuple[list[str], dict[str, str]]:
    """Positional and keyword arguments, tokenised as Twisted's C{_parse} does.

    After a C{:} both C{:} and C{=} are operators; after an C{=} only C{:} is (so a
    value may hold C{=}); a backslash takes the next character literally.
    """
    args: list[str] = []
    kw: dict[str, str] = {}
    parts: list[str] = []
    current = ""
    operators = ":="
    chars = iter(description)
    for char in chars:
        if char == "\\":
            escaped = next(chars, None)
            if escaped is None:
                raise BindError("ends in a lone backslash")
            current += escaped
        elif char in operators:
            parts.append(current)
            current = ""
            if char == ":":
                _add(parts, args, kw)
                parts = []
                operators = ":="
            else:
                operators = ":"
        else:
            current += char
    parts.append(current)
    _add(parts, args, kw)
    return args, kw


def _add(parts: list[str], args: list[str], kw: dict[str, str]) -> None:
    if len(parts) == 1:
        args.append(parts[0])
    else:
        key, value = parts[0], parts[1]
        if key in kw:
            raise BindError(f"{key}= given twice")
        kw[key] = value


def _port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) > 65535:
        raise BindError(f"port must be a number 0-65535, not {text!r}")
    return int(text)


def _check_tcp(args: list[str], kw: dict[str, str]) -> None:
    if len(args) != 2:
        raise BindError("takes one port (tcp:PORT:interface=HOST)")
    _port(args[1])
    for key in kw:
        if key not in _TCP_KEYWORDS:
            raise BindError(f"unknown parameter {key}= (interface=, backlog=)")
    backlog = kw.get("backlog")
    if backlog is not None and not (backlog.isascii() and backlog.isdigit() and int(backlog)):
        raise BindError(f"backlog= must be a positive number, not {backlog!r}")


def _check_systemd(args: list[str], kw: dict[str, str]) -> None:
    if len(args) != 1:
        raise BindError("takes keywords only (systemd:domain=INET:index=0)")
    for key in kw:
        if key not in ("domain", "index", "name"):
            raise BindError(f"unknown parameter {key}= (domain=, index=, name=)")
    if kw.get("domain") not in _SYSTEMD_DOMAINS:
        raise BindError("needs domain=INET or domain=INET6 (the family of the socket "
                        "systemd passes)")
    if ("index" in kw) == ("name" in kw):
        raise BindError("needs one of index=N or name=NAME")
    index = kw.get("index")
    if index is not None and not (index.isascii() and index.isdigit()):
        raise BindError(f"index= must be a number, not {index!r}")
    if "name" in kw and not kw["name"]:
        raise BindError("name= is empty")


def _endpoint(value: str, prefix: str) -> Bind:
    args, kw = _split(value)
    args[0] = prefix
    (_check_systemd if prefix == "systemd" else _check_tcp)(args, kw)
    # Twisted matches plugin prefixes (tcp6, systemd) in any case but tcp only in
    # lower case: write the prefix as Twisted spells it, the rest as given.
    return Bind(text=value, description=prefix + value[len(prefix):])


def _hostport(value: str) -> Bind:
    host, sep, port = value.rpartition(":")
    if not sep:
        raise BindError("must be HOST:PORT ([::1]:25 for IPv6) or an endpoint "
                        f"({', '.join(p + ':' for p in PREFIXES)})")
    if value.startswith("[") and value.endswith("]"):
        raise BindError("needs a port after the brackets ([::1]:25)")
    if host.startswith("[") or host.endswith("]"):
        if not (host.startswith("[") and host.endswith("]")):
            raise BindError("unbalanced brackets (IPv6 is [::1]:25)")
        host = host[1:-1]
    return Bind(text=value, description=f"tcp:{_port(port)}:interface={escape(host or '0.0.0.0')}")


def parse(value: str) -> Bind:
    """One C{--bind} value.

    @raise BindError: not in the grammar (the message quotes the value).
    """
    head = value.split(":", 1)[0]
    prefix = head.lower()
    try:
        if ":" in value and prefix in _REFUSED:
            raise BindError(f"{prefix}: endpoints cannot take SMTP: {_REFUSED[prefix]}")
        if ":" in value and prefix in PREFIXES:
            return _endpoint(value, prefix)
        return _hostport(value)
    except BindError as e:
        raise BindError(f"--bind {value!r}: {e}") from None


def parse_all(values: list[str]) -> tuple[Bind, ...]:
    """Every C{--bind} value in order; none given means L{DEFAULT}.

    @raise BindError: the first value not in the grammar.
    """
    return tuple(parse(value) for value in (values or [DEFAULT]))


def address_text(host: str, port: int) -> str:
    """C{host:port}, an IPv6 host in brackets (C{[::1]:25}): a C{--bind} value again."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def logged_addresses(log_text: str) -> list[str]:
    """The addresses the daemon's L{LISTENING} lines in C{log_text} name, in order.

    @return: C{host:port} strings as L{address_text} wrote them.
    """
    lines = map(logline.read, log_text.splitlines())
    return [line.fields["address"] for line in lines
            if line.namespace == "aimx.smtp" and line.message == LISTENING
            and "address" in line.fields]


def split_address(address: str) -> tuple[str, int]:
    """L{address_text}'s C{host:port} -> C{(host, port)}, brackets removed."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)
