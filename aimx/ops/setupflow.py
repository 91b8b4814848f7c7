"""What the setup wizard decides, without doing it (L0, pure).

docs/install.md, "aimx setup": the domain rules, the trusted-senders prompt's parsing,
the checklist and its glyphs, the re-entry decision, the config setup writes (fresh,
or an existing one moved to a new domain) and the fixed texts of the closing
screens.  L{aimx.cli.setup} does the I/O and the sequencing.
"""

import attrs

from aimx.core.config import Config, MailboxConfig, ascii_lower
from aimx.errors import AimxError

CATCHALL_NAME = "catchall"
CATCHALL_USER = "aimx-catchall"
CATCHALL_HOME = "/var/lib/aimx-catchall"
MAX_SENDER_ATTEMPTS = 5

#: The six checklist titles, in step order.
TITLES = (
    "Preflight checks on port 25",
    "Set up domain and DNS",
    "Set up TLS certificate",
    "Set up trust policy",
    "Install AIMX",
    "Set up MCP for agent(s)",
)

PENDING, RUNNING, DONE, SKIPPED, HANDOFF, ERROR = (
    "pending", "running", "done", "skipped", "handoff", "error",
)
#: Each state's glyph on a colour terminal and its ASCII form.
GLYPHS = {
    PENDING: ("☐", "[ ]"),
    RUNNING: ("◐", "[~]"),
    DONE: ("☑", "[x]"),
    SKIPPED: ("☒", "[-]"),
    HANDOFF: ("⎘", "[*]"),
    ERROR: ("✗", "[!]"),
}

BANNER = "🐦‍⬛ AIMX setup"
TAGLINE = "Self-hosted email (SMTP + MCP server) for AI agents."
COMPLETE_BANNER = "🐦‍⬛ AIMX setup — complete"
HANDOFF_COMMAND = "  → aimx agents setup"
BOX_WIDTH = 29

_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
_SENDER_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_+*?"
)
_YES = ("1", "true", "yes")


class DomainError(AimxError):
    """The domain breaks a rule of L{validate_domain}; the message is the reason."""

    code = "VALIDATION"


class SenderError(AimxError):
    """One trusted-sender entry is invalid: C{invalid sender '<entry>': <reason>}."""

    code = "VALIDATION"

    def __init__(self, entry: str, reason: str):
        super().__init__(f"invalid sender '{entry}': {reason}")
        self.entry = entry
        self.reason = reason


# -- input rules ----------------------------------------------------------------


def validate_domain(domain: str) -> None:
    """Check a mail domain: non-empty, at most 253 characters, two labels or more,
    each label 1-63 ASCII letters, digits or C{-}, not starting or ending with C{-}.

    Case is not folded: the domain is used as given.

    @raise DomainError: the first rule broken.
    """
    if not domain:
        raise DomainError("domain cannot be empty")
    if len(domain) > 253:
        raise DomainError(f"domain is {len(domain)} characters long; the maximum is 253")
    labels = domain.split(".")
    if len(labels) < 2:
        raise DomainError(
            f"'{domain}' needs at least two labels (e.g. agent.example.com)"
        )
    for label in labels:
        if not label:
            raise DomainError(f"'{domain}' has an empty label")
        if len(label) > 63:
            raise DomainError(f"label '{label}' is {len(label)} characters long; the maximum is 63")
        bad = next((c for c in label if c not in _LABEL_CHARS), None)
        if bad is not None:
            raise DomainError(
                f"label '{label}' contains invalid character '{bad}' "
                "(allowed: ASCII letters, digits and '-')"
            )
        if label.startswith("-") or label.endswith("-"):
            raise DomainError(f"label '{label}' cannot start or end with '-'")


def validate_sender(entry: str) -> None:
    """Check one trusted-sender pattern: exactly one C{@}, non-empty local and
    domain parts, only ASCII letters, digits and C{. - _ + * ?}.

    @raise SenderError: naming the entry and the rule broken.
    """
    if entry.count("@") != 1:
        raise SenderError(entry, "must contain exactly one '@'")
    local, domain = entry.split("@")
    if not local:
        raise SenderError(entry, "the part before '@' is empty")
    if not domain:
        raise SenderError(entry, "the part after '@' is empty")
    bad = next((c for c in entry if c != "@" and c not in _SENDER_CHARS), None)
    if bad is not None:
        raise SenderError(
            entry, f"invalid character '{bad}' (allowed: ASCII letters, digits and . - _ + * ?)"
        )


def parse_senders(text: str) -> tuple[str, ...]:
    """The entries of the trusted-senders prompt, split on commas and whitespace.

    @return: the entries in input order; empty for a blank line.
    @raise SenderError: the first invalid entry.
    """
    entries = tuple(text.replace(",", " ").split())
    for entry in entries:
        validate_sender(entry)
    return entries


def sender_abort_message(error: SenderError) -> str:
    """The error after L{MAX_SENDER_ATTEMPTS} invalid answers in a row."""
    return (
        f"trusted-senders prompt aborted after {MAX_SENDER_ATTEMPTS} attempts; "
        f"last error: {error}"
    )


def trust_policy(senders: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """C{(trust, trusted_senders)} for the confirmed entries: none without any."""
    return ("verified", senders) if senders else ("none", ())


def answered_yes(answer: str) -> bool:
    """A C{[Y/n]} answer: blank or anything not starting with C{n}/C{N} is yes."""
    return not answer.strip().lower().startswith("n")


def noninteractive(environ) -> bool:
    """Whether C{AIMX_NONINTERACTIVE} is C{1}, C{true} or C{yes}."""
    return environ.get("AIMX_NONINTERACTIVE", "").strip().lower() in _YES


# -- the checklist --------------------------------------------------------------


def glyph(state: str, colour: bool) -> str:
    """A checklist state's glyph, or its ASCII form when colour is off."""
    unicode, ascii_form = GLYPHS[state]
    return unicode if colour else ascii_form


def checklist_lines(states, colour: bool, paint=lambda state, text: text) -> list[str]:
    """The six checklist lines, C{  <glyph> <title>}.

    @param states: one state per step, in step order.
    @param paint: C{(state, glyph) -> text}, to colour a glyph.
    """
    return [
        f"  {paint(state, glyph(state, colour))} {title}"
        for state, title in zip(states, TITLES, strict=True)
    ]


# -- re-entry -------------------------------------------------------------------


def already_configured(service_running: bool, cert_exists: bool, dkim_key_exists: bool) -> bool:
    """Re-entry: the service runs and both the certificate and the DKIM key exist.

    Setup then verifies DNS, refreshes config and directories, and neither
    replaces the certificate nor reinstalls the service.
    """
    return service_running and cert_exists and dkim_key_exists


# -- the config setup writes ----------------------------------------------------


def catchall_mailbox(domain: str) -> MailboxConfig:
    """C{[mailboxes.catchall]}: C{*@<domain>}, owned by C{aimx-catchall}."""
    return MailboxConfig(name=CATCHALL_NAME, address=f"*@{domain}", owner=CATCHALL_USER)


def fresh_config(
    domain: str, data_dir: str, trust: str = "none", trusted_senders: tuple[str, ...] = ()
) -> Config:
    """The config of a first setup: the domain, the data dir, selector C{aimx},
    the trust answer and the catchall."""
    return Config(
        domain=domain,
        data_dir=data_dir,
        dkim_selector="aimx",
        trust=trust,
        trusted_senders=trusted_senders,
        mailboxes=[catchall_mailbox(domain)],
    )


def _moved(address: str, old: str, new: str) -> str:
    local, at, domain = address.rpartition("@")
    if at and ascii_lower(domain) == ascii_lower(old):
        return f"{local}@{new}"
    return address


def update_config(config: Config, domain: str, data_dir: str | None = None) -> Config:
    """An existing config brought in line with this setup.

    A different domain replaces the old one, also in every mailbox address ending
    C{@<old domain>}; a missing catchall is added; C{data_dir}, when given, replaces
    the file's.  Everything else (trust, senders, hooks, other mailboxes) is kept.

    @raise DomainError: a mailbox named C{catchall} exists but is not the catchall.
    """
    mailboxes = list(config.mailboxes)
    if config.domain != domain:
        mailboxes = [
            attrs.evolve(mb, address=_moved(mb.address, config.domain, domain))
            for mb in mailboxes
        ]
    updated = attrs.evolve(
        config,
        domain=domain,
        mailboxes=mailboxes,
        data_dir=config.data_dir if data_dir is None else data_dir,
        file_data_dir=None,
    )
    if updated.catchall() is None:
        taken = updated.mailbox(CATCHALL_NAME)
        if taken is not None:
            raise DomainError(
                f"mailbox '{CATCHALL_NAME}' has address '{taken.address}', not "
                f"'*@{domain}'; fix or rename it in config.toml and re-run setup"
            )
        updated = attrs.evolve(updated, mailboxes=[*mailboxes, catchall_mailbox(domain)])
    return updated


# -- fixed screens --------------------------------------------------------------


def handoff_lines(agent_names) -> list[str]:
    """Step 6: the bundled agents and the boxed C{aimx agents setup} command.

    Nothing is run: agent wiring is per user, so the operator does it as a
    regular user.  The three box lines have the same width.
    """
    rule = "─" * BOX_WIDTH
    return [
        "AIMX bundles MCP and skill files for the following AI agents:",
        "",
        *(f"  • {name}" for name in agent_names),
        "",
        "Wire them up as the regular user who runs your agents (not root), with the",
        "guided agents setup:",
        "",
        f"  ┌{rule}┐",
        f"  │{HANDOFF_COMMAND:<{BOX_WIDTH}}│",
        f"  └{rule}┘",
        "",
    ]


def closing_lines(domain: str, done_glyph: str) -> list[str]:
    """The last lines of a successful setup."""
    return [
        f"{done_glyph} AIMX has been set up successfully.",
        f"AIMX is now running at @{domain} and ready to send and receive email.",
        "Once MCP is wired up, ask your agent, for example:",
        (
            f'  claude -p "Set up agent@{domain} and respond to me via email the moment you '
            'receive my instructions via email."'
        ),
    ]
