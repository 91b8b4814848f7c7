"""``aimx doctor`` (L3): report on the installation, exit 1 when a check fails.

docs/cli.md, "aimx doctor". This module collects the facts (config, keys, service
state, the daemon's version, mailbox directories, DNS, port 25) and prints the
sections; the conclusions are L{aimx.ops.doctor}'s and the DNS verdicts
L{aimx.ops.dnscheck}'s. The setup wizard prints its DNS verification with
L{dns_lines}.

The Port 25 section runs the checks of C{aimx portcheck} without binding anything:
outbound to a well-known domain's MX (banner and QUIT), inbound only through the
operator's own verifier (C{verify_host}); without one it says how to set one up.
Like the DNS section it informs and never changes the exit code.

A demo (C{$AIMX_RUNTIME_DIR} holds the state file of C{aimx demo},
L{aimx.store.demo}) is checked as its daemon runs: DNS through the demo's DNS
server against its loopback address, the outbound check against the sender
domain's MX, and no inbound check (nothing outside can reach 127.0.0.1); it has no
service unit, so the daemon answering is what says it runs.
"""

import functools
import os
import shutil
import stat

from twisted.internet import defer

from aimx.auth import dnsverify
from aimx.auth.resolver import Resolver
from aimx.cli import session
from aimx.cli.session import CliError
from aimx.control.commands import Version
from aimx.control.wire import socket_path
from aimx.ops import doctor as core
from aimx.core.config import Config
from aimx.ops.dnscheck import PASS, WARN, Check, ExpectedDns
from aimx.ops.portcheck import (
    INBOUND_NOT_CHECKED,
    NO_VERIFIER,
    CheckDomainError,
    ProbeResult,
    VerifyHostError,
    inbound_message,
    outbound_message,
    resolve_check_domain,
    resolve_verify_host,
    settings_from_environ,
)
from aimx.ops.version import version_fields
from aimx.errors import ConfigError, DaemonNotRunning
from aimx.hooks import UNSHARE_PATH
from aimx.store import configfile, keys, passwd
from aimx.host import initsystem
from aimx.store import demo as demo_state
from aimx.store.mailboxdirs import mailbox_dirs
from aimx.store.mailstore import count_messages
from aimx.verifier.client import inbound_probe, outbound_probe

#: Seconds the daemon has to answer the VERSION probe.
PROBE_TIMEOUT = 0.5
DKIM_WARNING = "Outbound DKIM signatures will FAIL verification at receivers until DNS matches."
LOGS_HINT = "Run `aimx logs` to view recent logs, or `aimx logs --follow` to tail."
_GREEN, _YELLOW, _RED, _BOLD, _CYAN = "32", "33", "31", "1", "36"


def main(args) -> int:
    from twisted.internet import reactor, threads

    verb = functools.partial(
        doctor, clock=reactor, system=initsystem.System(), run_in_thread=threads.deferToThread
    )
    return session.run(verb, args)


async def doctor(args, s: session.Session, *, clock, system: initsystem.System, run_in_thread,
                 resolver: Resolver | None = None, resolve=passwd.owner, reactor=None,
                 probes=(outbound_probe, inbound_probe)) -> int:
    """The verb.

    @param clock: bounds the daemon VERSION probe.
    @param system: the host (service state, C{hostname -I}).
    @param run_in_thread: runs the blocking DNS verification off the reactor.
    @param resolver: for the DNS checks; default L{Resolver.public}.
    @param resolve: owner name -> L{aimx.store.passwd.Owner} (the passwd database).
    @param reactor: for the port-25 checks; default C{clock}.
    @param probes: C{(outbound, inbound)} probe functions of L{aimx.verifier.client}.
    """
    config, warnings = _load(args, s)
    demo = demo_state.read(os.path.dirname(socket_path(s.environ)))
    # A demo is checked with the settings its daemon runs with (its DNS, its MX port).
    environ = s.environ if demo is None else {**s.environ, **demo.environment()}
    if resolver is None:
        resolver = Resolver.public(environ)
    facts = collect(config, warnings, resolve)
    running = initsystem.is_running(system)
    stopped = False
    if demo is not None:
        # A demo's DNS server and MX stop with it: ask them nothing when it is gone.
        server = await _server_version(s, clock, running)
        stopped = server[1]
    if stopped:
        dns, ports = defer.succeed(None), defer.succeed(None)
    else:
        dns = run_in_thread(_verify_dns, config, args.config_dir, system, resolver, demo)
        ports = defer.Deferred.fromCoroutine(_port25(
            config, environ, clock if reactor is None else reactor, run_in_thread, probes, demo
        ))
    if demo is None:
        server = await _server_version(s, clock, running)
    checks = await dns
    port_results = await ports

    term = s.term
    _configuration(term, config, args.config_dir)
    _service(term, running, server, socket_path(s.environ), demo)
    _mailboxes(term, facts)
    _ownership(term, facts)
    _heading(term, "DNS")
    if stopped:
        term.say(f"  {term.yellow('skipped')} - the demo is not running (its DNS server "
                 "stopped with it)")
    elif demo is not None:
        term.say("  " + term.dim(f"(the demo's DNS server, {demo.host}:{demo.dns_port}, "
                                 f"for a server at {demo.host})"))
    if checks is None and not stopped:
        term.say(f"  {term.yellow('skipped')} - could not determine server IP")
    for line in dns_lines(term, checks or []):
        term.say(line)
    _heading(term, "Port 25")
    if stopped:
        term.say(f"  {term.yellow('skipped')} - the demo is not running")
    else:
        for line in port_lines(term, *port_results, demo):
            term.say(line)
    _heading(term, "Logs")
    term.say("  " + term.dim(LOGS_HINT))
    found = core.findings(facts)
    # A demo's DNS is its own loopback server: nothing there is the operator's to tighten.
    next_step = None if demo is not None else core.dmarc_next_step(
        checks or [], sum(mb.sent_messages for mb in facts.mailboxes), config.domain)
    if next_step is not None:
        found.append(next_step)
    _checks(term, found)
    error = core.verdict(facts, found)
    if error is not None:
        raise CliError(error)
    return 0


def _load(args, s: session.Session) -> tuple[Config, list[str]]:
    """config.toml and its load warnings; a config only root may read says so."""
    try:
        return configfile.load(args.config_dir, data_dir_override=args.data_dir)
    except ConfigError:
        path = s.config_path
        if not s.root and os.path.exists(path) and not os.access(path, os.R_OK):
            raise CliError(
                f"aimx doctor needs to read {path}, which this user cannot read; re-run "
                "it as root (sudo aimx doctor)"
            ) from None
        raise


def collect(config: Config, warnings: list[str], resolve=passwd.owner,
            unshare_path: str = UNSHARE_PATH) -> core.Facts:
    """The facts doctor's findings are made of: owners, mailbox directories, counts.

    @param warnings: the config load warnings.
    @param resolve: owner name -> L{aimx.store.passwd.Owner}.
    @param unshare_path: where the daemon looks for C{unshare}.
    """
    mailboxes = []
    for mb in sorted(config.mailboxes, key=lambda mb: mb.name):
        owner = resolve(mb.owner)
        inbox, sent = mailbox_dirs(config.data_dir, mb.name)
        total, unread = count_messages(inbox)
        sent_total, _ = count_messages(sent, read_state=False)
        mailboxes.append(core.MailboxFacts(
            name=mb.name, address=mb.address, owner=mb.owner,
            catchall=mb.is_catchall(config.domain), uid=owner.uid, gid=owner.gid,
            inbox=_dir_state(inbox), sent=_dir_state(sent),
            trust=config.effective_trust(mb),
            senders=len(config.effective_trusted_senders(mb)), hooks=len(mb.hooks),
            total=total, unread=unread, sent_messages=sent_total,
        ))
    configured = {mb.name for mb in config.mailboxes}
    stray = [
        f"{root}/{name}"
        for root in ("inbox", "sent")
        for name in _subdirs(os.path.join(config.data_dir, root))
        if name not in configured
    ]
    return core.Facts(
        mailboxes=mailboxes,
        stray=stray,
        legacy_hook_user=resolve(core.LEGACY_HOOK_USER).uid is not None,
        hook_drop=shutil.which("unshare", path=unshare_path) is not None,
        load_warnings=warnings,
    )


def _dir_state(path: str) -> core.DirState:
    try:
        st = os.lstat(path)
    except OSError:
        return core.DirState(path, core.ABSENT)
    if not stat.S_ISDIR(st.st_mode):
        return core.DirState(path, core.NOT_DIR)
    return core.DirState(path, core.DIR, st.st_uid, st.st_gid, st.st_mode & 0o777)


def _subdirs(directory: str) -> list[str]:
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))


def _verify_dns(config: Config, config_dir: str, system, resolver,
                demo: demo_state.DemoState | None = None) -> list[Check] | None:
    """The DNS checks (blocking); C{None} when the server has no IPv4 address.

    A demo's server address is the loopback address it listens on.
    """
    if demo is not None:
        ipv4, ipv6 = demo.host, None
    else:
        ipv4, ipv6 = dnsverify.server_addresses(system)
    if ipv4 is None:
        return None
    expected = ExpectedDns(
        domain=config.domain,
        ipv4=ipv4,
        ipv6=ipv6 if config.enable_ipv6 else None,
        selector=config.dkim_selector,
        dkim_key=dnsverify.local_dkim_key(config_dir),
        backup_mx=config.backup_mx,
    )
    return dnsverify.verify(expected, resolver)


async def _port25(config: Config, environ, reactor, run_in_thread, probes,
                  demo: demo_state.DemoState | None = None):
    """The outbound and inbound checks: C{(outbound, inbound)}, C{inbound} C{None}
    when no verifier is configured or for a demo.  A config value that cannot be used
    is that check's failure, not doctor's.  A demo's outbound check goes to the MX of
    its sender domain, the only mail server a demo can reach."""
    outbound_probe, inbound_probe = probes
    settings = settings_from_environ(environ)

    async def outbound() -> ProbeResult:
        try:
            domain = (demo.sender_domain if demo is not None
                      else resolve_check_domain(None, config.outbound_check_domain))
        except CheckDomainError as e:
            return ProbeResult(False, error=str(e))
        return await outbound_probe(reactor, domain, settings,
                                    resolver=Resolver.from_env(environ),
                                    run_in_thread=run_in_thread)

    async def inbound() -> ProbeResult | None:
        if demo is not None:
            return None
        try:
            verify_host = resolve_verify_host(None, config.verify_host)
        except VerifyHostError as e:
            return ProbeResult(False, error=str(e))
        if verify_host is None:
            return None
        return await inbound_probe(reactor, verify_host)

    both = defer.gatherResults([defer.Deferred.fromCoroutine(outbound()),
                                defer.Deferred.fromCoroutine(inbound())])
    return tuple(await both)


def port_lines(term, outbound: ProbeResult, inbound: ProbeResult | None,
               demo: demo_state.DemoState | None = None) -> list[str]:
    """The Port 25 section: a line per check, the advice under a failed one, and how
    to get an inbound check when no verifier is configured (a demo cannot have one)."""
    lines = []
    for label, result, advice in (("Outbound", outbound, outbound_message),
                                  ("Inbound", inbound, inbound_message)):
        if result is None and demo is not None:
            lines.append(f"  {label}: {term.mark('warn')} - not checked: the demo listens on "
                         f"{demo.smtp} only, where nothing outside can connect")
            continue
        if result is None:
            lines.append(f"  {label}: {term.mark('warn')} - {INBOUND_NOT_CHECKED}")
            lines.extend("    " + term.dim(line) for line in NO_VERIFIER)
            continue
        mark = term.mark("ok" if result.ok else "fail")
        lines.append(f"  {label}: {mark} - {result.reason}" if result.reason
                     else f"  {label}: {mark}")
        if not result.ok:
            lines.append("         " + term.dim(f"→ {advice(result)}"))
    return lines


async def _server_version(s: session.Session, clock, running: bool) -> tuple[str, bool]:
    """The Server version text and whether it is a dim remark rather than a version.

    The daemon is asked only when its socket exists or the service runs.
    """
    path = socket_path(s.environ)
    if not (running or os.path.exists(path)):
        return "(daemon not running)", True

    async def ask():
        control = await s.connect()
        try:
            return await control.call(Version)
        finally:
            control.close()

    probe = defer.Deferred.fromCoroutine(ask())
    probe.addTimeout(PROBE_TIMEOUT, clock)
    try:
        version = await probe
    except DaemonNotRunning:
        return f"(daemon not reachable on {path})", True
    except defer.TimeoutError:
        return f"(daemon probe failed: no answer within {int(PROBE_TIMEOUT * 1000)} ms)", True
    except Exception as e:  # informational only: no failure may stop the report
        return f"(daemon probe failed: {e})", True
    return f"{version['tag']} ({version['git_hash']})", False


def dns_lines(term, checks: list[Check]) -> list[str]:
    """The DNS verification lines, without a heading.

    A check's message follows its mark; a failed check is followed by the record
    to add (when known; a long TXT value as its quoted strings) and, for DKIM, a
    red warning line; a check's advice (PTR: where reverse DNS is set) comes last.
    """
    lines = []
    for check in checks:
        mark = term.mark({PASS: "ok", WARN: "warn"}.get(check.status, "fail"))
        lines.append(f"  {check.name}: {mark} - {check.message}" if check.message
                     else f"  {check.name}: {mark}")
        record = check.record
        if check.failed and record is not None:
            lines.append(
                f"         {term.dim('→ Add:')} {record.type}  {record.name}  {record.shown}"
            )
        if check.failed and check.name == "DKIM":
            lines.append(f"         {term.style('!!', _RED, _BOLD)} {DKIM_WARNING}")
        if check.advice is not None:
            lines.append("         " + term.dim(f"→ {check.advice}"))
    return lines


def _heading(term, title: str) -> None:
    term.say()
    term.say(term.bold(title))


def _field(term, label: str, value: str) -> None:
    term.say(f"{label + ':':<18}{value}")


def _configuration(term, config: Config, config_dir: str) -> None:
    term.say(term.bold("Configuration"))
    _field(term, "Domain", config.domain)
    _field(term, "Config file", os.path.abspath(configfile.config_path(config_dir)))
    _field(term, "Data directory", config.data_dir)
    _field(term, "DKIM selector", config.dkim_selector)
    _field(term, "Backup MX", config.backup_mx or "(none)")
    if os.path.exists(keys.dkim_paths(config_dir)[0]):
        _field(term, "DKIM key", term.style("present", _GREEN))
    else:
        _field(term, "DKIM key", term.yellow("MISSING - run `aimx dkim-keygen`"))
    _field(term, "Global trust", config.trust)
    _field(term, "Trusted senders", ", ".join(config.trusted_senders) or "(none)")


def _service(term, running: bool, server: tuple[str, bool], socket: str,
             demo: demo_state.DemoState | None = None) -> None:
    """The Service section.  The daemon runs when the service does or when it answered
    the version probe (a demo, or C{aimx serve} started by hand, has no service)."""
    _heading(term, "Service")
    text, remark = server
    if demo is not None and not remark:
        _field(term, "SMTP server", term.style("running", _GREEN)
               + f" (aimx demo on {demo.smtp}, {demo.directory})")
    elif demo is not None:
        _field(term, "SMTP server", term.yellow("not running")
               + f" (the aimx demo in {demo.directory} has stopped; `aimx demo` starts a "
               "new one)")
    elif running:
        _field(term, "SMTP server", term.style("running", _GREEN))
    elif not remark:
        _field(term, "SMTP server", term.style("running", _GREEN)
               + f" (not as the aimx service; answers on {socket})")
    else:
        _field(term, "SMTP server", term.yellow("not running"))
    client = version_fields()
    _field(term, "Client version", f"{client['tag']} ({client['git_hash']})")
    _field(term, "Server version", term.dim(text) if remark else text)


def _mailboxes(term, facts: core.Facts) -> None:
    _heading(term, "Mailboxes")
    boxes = facts.mailboxes
    messages = sum(mb.total for mb in boxes)
    unread = sum(mb.unread for mb in boxes)
    _field(term, "Total", f"{len(boxes)} ({messages} messages, {unread} unread)")
    if boxes:
        term.say()
        for line in core.mailbox_table(boxes):
            term.say(line)


def _ownership(term, facts: core.Facts) -> None:
    _heading(term, "Ownership")
    rows = [mb for mb in facts.mailboxes if not mb.catchall]
    if not rows:
        term.say("  " + term.dim("(no non-catchall mailboxes)"))
        return
    width = max(8, *(len(mb.name) for mb in rows))
    for mb in rows:
        if mb.uid is None:
            status = f"{term.mark('fail')}  user not found"
        else:
            status = f"{term.mark('ok')}  uid={mb.uid}"
        term.say(f"  {mb.name:<{width}}  owner={mb.owner}  {status}")


_BADGES = {core.FAIL: "fail", core.WARN: "warn"}


def _checks(term, found: list[core.Finding]) -> None:
    _heading(term, "Checks")
    if not found:
        term.say("  " + term.style("All checks passed.", _GREEN))
        return
    for finding in found:
        kind = _BADGES.get(finding.severity)
        if kind is None:
            badge = f"[{term.style('INFO', _CYAN)}]"
        else:
            # Without colour the mark is already `[FAIL]`/`[WARN]`: no second brackets.
            badge = f"[{term.mark(kind)}]" if term.colour else term.mark(kind)
        term.say(f"  {badge} {finding.message}")
        if finding.fix:
            term.say("        " + term.dim(f"→ {finding.fix}"))
    count = {severity: sum(f.severity == severity for f in found)
             for severity in (core.FAIL, core.WARN, core.INFO)}
    term.say()
    term.say(f"  Summary: {count[core.FAIL]} fail, {count[core.WARN]} warn, "
             f"{count[core.INFO]} info")
