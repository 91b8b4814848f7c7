"""What C{aimx doctor} concludes from the state it collected (L0, pure).

docs/cli.md, "aimx doctor": the findings of the Checks section, the exit verdict and
the Mailboxes table. Collecting the facts (stat, passwd, message counts) is
L{aimx.cli.doctor}'s job.
"""

import attrs

from aimx.ops.dnscheck import DMARC_POLICIES, PASS, Check

FAIL, WARN, INFO = "fail", "warn", "info"
DIR, NOT_DIR, ABSENT = "dir", "not-dir", "absent"
CATCHALL_USER = "aimx-catchall"
LEGACY_HOOK_USER = "aimx-hook"

FAILING = "aimx doctor found failing checks (see Checks section above)"
ORPHANS = "aimx doctor found mailboxes with unresolvable owners (see Ownership section)"


@attrs.frozen
class DirState:
    """A mailbox directory as C{lstat} saw it.

    @ivar kind: L{DIR}, L{NOT_DIR} (something else is there) or L{ABSENT}.
    @ivar mode: the permission bits (C{& 0o777}); ids and mode only for a L{DIR}.
    """

    path: str
    kind: str
    uid: int | None = None
    gid: int | None = None
    mode: int | None = None


@attrs.frozen
class MailboxFacts:
    """One configured mailbox.

    @ivar uid: the owner's uid (C{root} is 0), C{None} when the owner does not resolve.
    @ivar gid: the owner's primary gid, likewise.
    @ivar trust: the effective trust policy.
    @ivar senders: how many effective trusted-sender patterns it has.
    @ivar total: messages in its inbox; C{unread} of them unread.
    @ivar sent_messages: messages in its sent folder.
    """

    name: str
    address: str
    owner: str
    catchall: bool
    uid: int | None
    gid: int | None
    inbox: DirState
    sent: DirState
    trust: str
    senders: int
    hooks: int
    total: int
    unread: int
    sent_messages: int = 0


@attrs.frozen
class Facts:
    """Everything the findings depend on.

    @ivar mailboxes: sorted by name.
    @ivar stray: directories under C{inbox/} or C{sent/} with no configured mailbox,
        as C{"inbox/<name>"}.
    @ivar legacy_hook_user: whether the user C{aimx-hook} exists.
    @ivar hook_drop: whether util-linux C{unshare}, through which a root daemon runs a
        hook as its mailbox's owner (docs/hooks.md), is installed.
    @ivar load_warnings: the config load warnings (docs/configuration.md).
    """

    mailboxes: tuple[MailboxFacts, ...] = attrs.field(converter=tuple)
    stray: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    legacy_hook_user: bool = False
    hook_drop: bool = True
    load_warnings: tuple[str, ...] = attrs.field(default=(), converter=tuple)


@attrs.frozen
class Finding:
    """One line of the Checks section; C{fix} is the remedy shown under it, if any."""

    id: str
    severity: str
    message: str
    fix: str | None = None


def findings(facts: Facts) -> list[Finding]:
    """Every finding, in order: mailbox directories, stray storage, mailboxes without
    storage, the catchall user, the hook drop, the legacy hook user, then the config
    load warnings."""
    out = []
    for mb in facts.mailboxes:
        out += _mailbox(mb)
    for stray in facts.stray:
        name = stray.split("/", 1)[1]
        out.append(Finding(
            "ORPHAN-STORAGE", WARN,
            f"storage directory `{stray}/` has no matching mailbox in config.toml",
            f"remove the stale directory or add a matching `[mailboxes.{name}]` block to "
            "config.toml",
        ))
    for mb in facts.mailboxes:
        if mb.inbox.kind == ABSENT and mb.sent.kind == ABSENT:
            out.append(Finding(
                "ORPHAN-CONFIG", WARN,
                f"mailbox '{mb.name}' has a config entry but no storage directories "
                "(inbox/sent both missing)",
                "re-run `sudo aimx setup` to create its storage, or remove the "
                f"`[mailboxes.{mb.name}]` block from config.toml",
            ))
    if any(mb.catchall and mb.owner == CATCHALL_USER and mb.uid is None
           for mb in facts.mailboxes):
        out.append(Finding(
            "CATCHALL-USER-MISSING", FAIL,
            f"catchall mailbox is configured with owner '{CATCHALL_USER}' but that system "
            "user does not resolve",
            "re-run `sudo aimx setup` to create the catchall service user",
        ))
    owners = sorted({mb.owner for mb in facts.mailboxes if mb.hooks and mb.owner != "root"})
    if owners and not facts.hook_drop:
        out.append(Finding(
            "HOOK-DROP-MISSING", FAIL,
            "util-linux `unshare` is not in /usr/bin or /bin, so the daemon runs no hook "
            f"as its mailbox's owner ({', '.join(owners)}): those hooks do not run",
            "install util-linux 2.32 or later (`apt-get install util-linux`)",
        ))
    if facts.legacy_hook_user:
        out.append(Finding(
            "LEGACY-AIMX-HOOK-USER", INFO,
            f"stale '{LEGACY_HOOK_USER}' system user is still present; aimx no longer "
            "manages it",
            f"remove via `sudo userdel {LEGACY_HOOK_USER}` when safe",
        ))
    for warning in facts.load_warnings:
        # The loader warns about exactly two things: root-owned and orphan-owned mailboxes.
        kind = "ROOT-OWNED-MAILBOX" if "is owned by root" in warning else "ORPHAN-MAILBOX-OWNER"
        out.append(Finding(kind, WARN, f"config load: {warning}"))
    return out


def _mailbox(mb: MailboxFacts) -> list[Finding]:
    if mb.uid is None:
        return [Finding(
            "MAILBOX-OWNER-ORPHAN", WARN,
            f"mailbox '{mb.name}' owner '{mb.owner}' does not resolve via getpwnam",
            "create the user (`sudo useradd --system --no-create-home --shell "
            f"/usr/sbin/nologin {mb.owner}`) or change the mailbox's owner in config.toml",
        )]
    out = []
    for label, state in (("inbox", mb.inbox), ("sent", mb.sent)):
        where = f"mailbox '{mb.name}' {label}"
        if state.kind == ABSENT:
            out.append(Finding(
                "MAILBOX-DIR-MISSING", FAIL, f"{where} directory is missing: {state.path}",
                "re-run `sudo aimx setup` to re-create mailbox storage directories",
            ))
            continue
        if state.kind == NOT_DIR:
            out.append(Finding(
                "MAILBOX-DIR-NOT-DIR", FAIL, f"{where} path is not a directory: {state.path}"
            ))
            continue
        if state.uid != mb.uid:
            out.append(Finding(
                "MAILBOX-DIR-OWNER-DRIFT", FAIL,
                f"{where} dir is owned by uid {state.uid} but config owner '{mb.owner}' "
                f"resolves to uid {mb.uid}",
                f"chown the directory: `sudo chown -R {mb.owner}:{mb.owner} {state.path}`",
            ))
        elif state.gid != mb.gid:
            out.append(Finding(
                "MAILBOX-DIR-GROUP-DRIFT", WARN,
                f"{where} dir group gid {state.gid} does not match owner '{mb.owner}' "
                f"primary gid {mb.gid}",
                f"chgrp the directory: `sudo chgrp -R {mb.gid} {state.path}`",
            ))
        if state.mode != 0o700:
            out.append(Finding(
                "MAILBOX-DIR-MODE-DRIFT", WARN,
                f"{where} dir mode is {state.mode:04o}, expected 0700",
                f"tighten permissions: `sudo chmod 0700 {state.path}`",
            ))
    return out


def dmarc_next_step(checks: list[Check], sent: int, domain: str) -> Finding | None:
    """The next DMARC policy to publish, once mail has flowed (an Info finding).

    Setup proposes C{p=none}: receivers then apply no policy, and a mistake in
    DKIM or SPF costs no mail.  The rule to tighten is simple: the policy is not
    yet C{reject}, the DKIM and SPF records verify, and at least one message has
    been sent (some C{sent/} folder holds one).  The operator confirms on a
    received copy that DKIM and SPF pass, then moves one step: C{none} to
    C{quarantine}, C{quarantine} to C{reject}.

    @param checks: the DNS checks (L{aimx.ops.dnscheck.ExpectedDns.evaluate}).
    @param sent: messages in every mailbox's sent folder.
    """
    dmarc = next((c for c in checks if c.name == "DMARC"), None)
    if dmarc is None or dmarc.status != PASS or dmarc.found not in DMARC_POLICIES[:-1]:
        return None
    auth = [c for c in checks if c.name.startswith(("DKIM", "SPF"))]
    if sent == 0 or not auth or any(c.status != PASS for c in auth):
        return None
    following = DMARC_POLICIES[DMARC_POLICIES.index(dmarc.found) + 1]
    later = " (later p=reject)" if following != DMARC_POLICIES[-1] else ""
    return Finding(
        "DMARC-NEXT-STEP", INFO,
        f"DMARC is at p={dmarc.found} and mail has gone out ({sent} sent) with the DKIM "
        "and SPF records in place: time to tighten it",
        "once a message you sent shows dkim=pass and spf=pass in the receiver's "
        f"Authentication-Results header, publish `v=DMARC1; p={following}` at "
        f"_dmarc.{domain}{later}",
    )


def verdict(facts: Facts, found: list[Finding]) -> str | None:
    """The error doctor exits 1 with, or C{None} for exit 0.

    Any Fail finding fails; so does a non-catchall mailbox whose owner does not resolve.
    """
    if any(f.severity == FAIL for f in found):
        return FAILING
    if any(not mb.catchall and mb.uid is None for mb in facts.mailboxes):
        return ORPHANS
    return None


_COLUMNS = ("Mailbox", "Address", "Total", "Unread", "Trust", "Senders", "Hooks")
_RIGHT = (False, False, True, True, False, True, True)


def mailbox_table(mailboxes: tuple[MailboxFacts, ...]) -> list[str]:
    """The Mailboxes table: a framed row per mailbox, numbers right-aligned."""
    rows = [
        (mb.name, mb.address, str(mb.total), str(mb.unread), mb.trust, str(mb.senders),
         str(mb.hooks))
        for mb in mailboxes
    ]
    widths = [max(len(cell) for cell in column) for column in zip(_COLUMNS, *rows)]
    frame = "  +" + "".join("-" * (w + 2) + "+" for w in widths)

    def line(cells):
        padded = (c.rjust(w) if right else c.ljust(w)
                  for c, w, right in zip(cells, widths, _RIGHT))
        return "  |" + "".join(f" {c} |" for c in padded)

    return [frame, line(_COLUMNS), frame, *map(line, rows), frame]
