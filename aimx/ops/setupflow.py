"""What the setup wizard decides, without doing it (L0, pure).

docs/install.md, "aimx setup": the domain rules, the backup MX answer, the
trusted-senders prompt's parsing, the checklist and its glyphs, the re-entry
decision, the config setup writes (fresh, or an existing one moved to a new
domain), the notes beside the DNS records, the first mailbox's owner rules and
the texts of the closing screens.  L{aimx.cli.setup} does the I/O and the
sequencing.
"""

import attrs

from aimx.core.config import Config, MailboxConfig, ascii_lower, host_name_problem
from aimx.core.configedit import valid_owner_name
from aimx.errors import AimxError
from aimx.ops.dnscheck import DMARC_POLICIES, ExpectedDns

CATCHALL_NAME = "catchall"
CATCHALL_USER = "aimx-catchall"
CATCHALL_HOME = "/var/lib/aimx-catchall"
MAX_SENDER_ATTEMPTS = 5
#: The answer (prompt or C{--backup-mx}) that removes a configured backup MX.
NO_BACKUP_MX = "none"
CREATE_LATER = "Create one later with `sudo aimx mailboxes create NAME --owner USER`."

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
    """Check a mail domain (L{aimx.core.config.host_name_problem}'s rules).

    Case is not folded: the domain is used as given.

    @raise DomainError: the first rule broken.
    """
    problem = host_name_problem(domain)
    if problem is not None:
        raise DomainError(problem)


def backup_mx_answer(answer: str, current: str | None, domain: str | None) -> str | None:
    """The backup MX after an answer to its prompt (or C{--backup-mx}).

    @param current: the configured backup MX, kept by a blank answer.
    @param domain: the mail domain, which the backup cannot be; C{None} while unknown.
    @return: the host, or C{None} for none (L{NO_BACKUP_MX}).
    @raise DomainError: not a host name, or the domain itself.
    """
    answer = answer.strip()
    if not answer:
        return current
    if answer.lower() == NO_BACKUP_MX:
        return None
    problem = host_name_problem(answer, "backup MX")
    if problem is not None:
        raise DomainError(problem)
    if domain is not None and ascii_lower(answer) == ascii_lower(domain):
        raise DomainError(f"the backup MX must be another server than {domain} itself")
    return answer


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
    domain: str, data_dir: str, trust: str = "none", trusted_senders: tuple[str, ...] = (),
    backup_mx: str | None = None,
) -> Config:
    """The config of a first setup: the domain, the data dir, selector C{aimx},
    the trust answer, the backup MX answer and the catchall."""
    return Config(
        domain=domain,
        data_dir=data_dir,
        dkim_selector="aimx",
        trust=trust,
        trusted_senders=trusted_senders,
        backup_mx=backup_mx,
        mailboxes=[catchall_mailbox(domain)],
    )


def _moved(address: str, old: str, new: str) -> str:
    local, at, domain = address.rpartition("@")
    if at and ascii_lower(domain) == ascii_lower(old):
        return f"{local}@{new}"
    return address


def update_config(config: Config, domain: str, data_dir: str | None = None, *,
                  backup_mx: str | None) -> Config:
    """An existing config brought in line with this setup (docs/install.md, "aimx setup": a re-run).

    A different domain replaces the old one, also in every mailbox address ending
    C{@<old domain>}; a missing catchall is added; C{data_dir}, when given, replaces
    the file's; C{backup_mx} is the wizard's answer (the file's value unless the
    operator changed it).  Everything else (trust, senders, hooks, other mailboxes)
    is kept.

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
        backup_mx=backup_mx,
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


# -- the DNS guidance -----------------------------------------------------------


def dns_notes(expected: ExpectedDns) -> list[str]:
    """What setup prints under the record table: the records that need a word
    (a TXT value split into strings, DMARC's start and its path), reverse DNS,
    which is not a record of the zone, and the backup MX's part."""
    notes = []
    split = [r for r in expected.records() if len(r.strings) > 1]
    for record in split:
        notes.append(
            f"The value for {record.name} is longer than 255 bytes, the most one DNS "
            "string holds: publish it as one TXT record made of the quoted strings shown. "
            "A DNS panel that asks for a single value splits it itself: paste it there "
            "without the quotes."
        )
    steps = ", then ".join(f'"v=DMARC1; p={policy}"' for policy in DMARC_POLICIES[1:])
    notes.append(
        f'DMARC starts at "p=none" with no reports: receivers apply no policy while you '
        f"check that mail flows. Once mail you send passes DKIM and SPF, change it to "
        f"{steps}; `aimx doctor` tells you when."
    )
    ips = " and ".join(ip for _, ip in expected.reverse())
    if ips:
        notes.append(
            f"Reverse DNS (PTR): ask your hosting provider to point {ips} to "
            f"{expected.domain}. It is set where the address comes from (their panel or "
            "support), not in your DNS zone; many receivers refuse or spam-folder mail "
            "from an address without it."
        )
    if expected.backup_mx:
        notes.append(
            f"The backup MX {expected.backup_mx} must accept mail for {expected.domain} "
            "and pass it on to this server (a stock Postfix does: aimx's "
            "docs/backup-mx.md and contrib/postfix-backup-mx/)."
        )
    return ["Notes:", *(f"  • {note}" for note in notes)]


# -- the first mailbox ------------------------------------------------------------


def default_owner(sudo_user: str | None) -> str | None:
    """The first mailbox's default owner: the user who ran C{sudo aimx setup}."""
    return sudo_user if sudo_user and sudo_user != "root" else None


def owner_problem(owner: str, exists) -> str | None:
    """Why C{owner} cannot own the first mailbox, or C{None}.

    Root is refused as C{aimx mailboxes create} refuses it (a root-owned mailbox
    is configured by hand or not at all), and so is the catchall's service user.

    @param exists: C{name -> bool}, whether a user resolves in the passwd
        database; asked only about a valid user name.
    """
    if owner == "root":
        return ("root cannot own it: root-owned mailboxes can only be configured by hand "
                "in config.toml; choose the user who runs your agent")
    if owner == CATCHALL_USER:
        return f"{CATCHALL_USER} is the catchall's service user; choose the user who runs your agent"
    if not valid_owner_name(owner):
        return f"'{owner}' is not a valid user name ([a-z_][a-z0-9_-]*[$]?)"
    if not exists(owner):
        return (f"user '{owner}' does not exist; create it first (e.g. `sudo useradd "
                f"--create-home {owner}`)")
    return None


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


def closing_lines(domain: str, done_glyph: str, *, dns_verified: bool = True,
                  restart_pending: bool = False, mailbox: str | None = None) -> list[str]:
    """The last lines of a successful setup.

    @param dns_verified: every DNS record verified during setup.
    @param restart_pending: a re-run changed config.toml under the running daemon.
    @param mailbox: the name of the mailbox setup created, if any.
    """
    if restart_pending:
        state = "Restart aimx (as shown above) so that it runs with the new configuration."
    elif dns_verified:
        state = f"AIMX is now running at @{domain} and ready to send and receive email."
    else:
        state = (f"AIMX is now running at @{domain}; mail flows once the DNS records above "
                 "verify (`aimx doctor` checks them).")
    task = (f"Use {mailbox}@{domain}" if mailbox is not None
            else f"Set up agent@{domain}")
    return [
        f"{done_glyph} AIMX has been set up successfully.",
        state,
        "Once MCP is wired up, ask your agent, for example:",
        (
            f'  claude -p "{task} and respond to me via email the moment you '
            'receive my instructions via email."'
        ),
    ]
