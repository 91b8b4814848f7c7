"""``aimx setup [domain] [--verify-host URL] [--outbound-check-domain DOMAIN]
[--backup-mx HOST] [--mailbox NAME [--owner USER] | --no-mailbox]`` (L3): the guided
install wizard.

docs/install.md, "aimx setup", in order: port-25 occupancy, Step 1 preflight probes (the
outbound check against a well-known domain's MX; the inbound one only against the
operator's own verifier, else skipped with an explanation),
Step 2 domain, optional backup MX, DKIM key and DNS records (verified through our
resolver in a loop, reverse DNS included), Step 3 the self-signed STARTTLS
certificate, Step 4 the trust policy, Step 5 the catchall user, config.toml, mailbox
directories, README and the service, which must then answer (an SMTP greeting on
port 25, VERSION on its control socket) before anything is called ready; then the
offer of a first mailbox (MAILBOX-CREATE to that service) and Step 6, the hand-off
to C{aimx agents setup}.  The decisions are L{aimx.ops.setupflow}'s; this module
prompts, prints and writes.

Everything outside the process is injected into L{setup}: stdin/stdout/stderr, euid,
environment and the control-socket connection through the L{Session}, the host
(L{initsystem.System}: every host path and every program, C{useradd} and C{id}
included), the reactor, the thread runner for DNS, the passwd lookup and the
readiness poll.

Files are written whole or not at all (temporary name + rename, or exclusive
create), and a step that fails removes what it half made, so an interrupted
wizard (Ctrl-C, end of input, an error) can simply be run again: it reuses the
DKIM key and certificate it finds, and keeps an existing config's trust policy.
End of input at a prompt means quit; at the DNS prompt it means "skip" (C{q}), and
at the first-mailbox prompts (the service already runs) "no mailbox".
"""

import contextlib
import functools
import os
import signal
import sys

from twisted.internet import defer, task
from twisted.python.failure import Failure

from aimx.agents import AGENTS
from aimx.auth import dnsverify
from aimx.auth.resolver import Resolver
from aimx.cli.doctor import dns_lines
from aimx.cli.portcheck import checked, not_checked
from aimx.cli.session import CliError, DaemonError, Session, execute, restart_hint
from aimx.cli.term import Terminal
from aimx.control import client
from aimx.control.commands import MailboxCreate, Version
from aimx.control.wire import socket_path
from aimx.core import configedit
from aimx.ops import setupflow as flow
from aimx.ops import units
from aimx.core.config import DEFAULT_DATA_DIR, to_toml
from aimx.ops.dnscheck import WARN, ExpectedDns, passed, table_lines
from aimx.ops.portcheck import (
    COMPATIBLE_PROVIDERS,
    ProbeTarget,
    inbound_message,
    outbound_message,
    resolve_check_domain,
    resolve_verify_host,
    settings_from_environ,
)
from aimx.errors import AimxError, ConfigError, DaemonNotRunning
from aimx.store import configfile, datadir, keys, passwd, safefs
from aimx.host import initsystem, programs
from aimx.store.mailboxdirs import create_dirs
from aimx.verifier.client import (
    TemporaryResponder,
    detect_occupancy,
    inbound_probe,
    outbound_probe,
)
from aimx.verifier.smtp import smtp_handshake

NOT_ROOT = (
    "`aimx setup` requires root. Run with: sudo aimx setup\n"
    "\n"
    "To wire aimx into your AI agents as a regular user, run `aimx agents setup` "
    "instead (no root needed)."
)
PREFLIGHT_FAILED = (
    "Port 25 checks failed. Your VPS provider may block SMTP traffic.\n"
    "Fix the issues above and run `sudo aimx setup` again."
)
NO_DOMAIN = "No domain entered. Setup cancelled."
NO_DNS_ACCESS = "Setup cancelled. You need DNS access to proceed."
RESUME = "Files written so far are complete; run `sudo aimx setup` again to continue."
END_OF_INPUT = f"End of input: setup cancelled. {RESUME}"
INTERRUPTED = f"Setup interrupted. {RESUME}"
NOT_READY = (
    "aimx was started but does not answer: {reason}.\n"
    "Look at `aimx logs` and `{status}`, fix what they show, then run `sudo aimx setup` "
    "again."
)
#: The readiness poll: every 500 ms, 1 s per attempt, 15 s in all (a small
#: machine's first start of the daemon, Python and Twisted imported cold).
READY_INTERVAL = 0.5
READY_ATTEMPT = 1.0
READY_TIMEOUT = 15.0

_GREEN, _YELLOW, _RED, _ACCENT = "32", "33", "31", "38;2;185;83;28"
_PAINT = {flow.DONE: _GREEN, flow.SKIPPED: _YELLOW, flow.ERROR: _RED, flow.HANDOFF: _ACCENT}


def main(args) -> int:
    from twisted.internet import reactor, threads

    console = Console(sys.stdin)
    term = Terminal(sys.stdout, sys.stderr, console, os.environ)
    s = Session(
        args, euid=os.geteuid(), term=term, environ=os.environ,
        connect=lambda: defer.Deferred.fromCoroutine(
            client.connect(reactor, socket_path(os.environ))
        ),
    )
    verb = functools.partial(
        setup, reactor=reactor, system=initsystem.System(), run_in_thread=threads.deferToThread
    )
    return run(reactor, verb, args, s, console)


def run(reactor, verb, args, s: Session, console: "Console | None" = None) -> int:
    """Run the verb on a running C{reactor}; Ctrl-C interrupts it cleanly.

    Twisted's SIGINT handler would stop the reactor under the wizard's feet.  Ours
    raises C{KeyboardInterrupt} when the wizard waits at a prompt (blocking, so the
    reactor could not act), and otherwise cancels the wizard, which unwinds
    (closing the temporary responder) and reports the interruption.
    """
    outcome, running, interrupted = [], [], []

    def interrupt(signum, frame):
        if console is not None and console.prompting:
            raise KeyboardInterrupt
        interrupted.append(signum)
        for d in running:
            reactor.callFromThread(d.cancel)

    def start():
        # Before the wizard's first line: it may print and probe before its first wait.
        signal.signal(signal.SIGINT, interrupt)
        signal.signal(signal.SIGTERM, interrupt)
        d = defer.Deferred.fromCoroutine(execute(verb, args, s))
        running.append(d)
        if interrupted:  # while the wizard ran up to its first wait
            reactor.callFromThread(d.cancel)
        d.addBoth(outcome.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    if not outcome:  # the reactor was stopped under the wizard
        s.term.error(INTERRUPTED)
        return 1
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]


class Console:
    """Standard input for the prompts.

    On a terminal a line is read with line editing (C{readline}).  End of input
    reads as C{""}.  L{prompting} is true from just before a prompt is printed
    until its answer is read: L{run}'s Ctrl-C handler then interrupts the read.
    """

    def __init__(self, stream):
        self.stream = stream
        self.prompting = False

    @contextlib.contextmanager
    def prompt(self):
        """Mark the time spent printing a prompt and reading its answer."""
        self.prompting = True
        try:
            yield
        finally:
            self.prompting = False

    def readline(self) -> str:
        if self.stream.isatty():
            import readline  # noqa: F401 (gives input() line editing)

            try:
                return input() + "\n"
            except EOFError:
                return ""
        return self.stream.readline()


def cancellable(awaitable) -> defer.Deferred:
    """C{awaitable} as a Deferred that fails with C{CancelledError} when cancelled.

    The probes report every failure as a result, cancellation included; this keeps
    an interrupted wizard from reading that as "port 25 blocked".  Cancelling also
    cancels the work, whose outcome is then dropped.
    """
    work = defer.ensureDeferred(awaitable)
    cancelled = []

    def cancel(_):
        cancelled.append(True)
        work.cancel()

    result = defer.Deferred(cancel)

    def forward(outcome):
        if not cancelled:
            if isinstance(outcome, Failure):
                result.errback(outcome)
            else:
                result.callback(outcome)

    work.addBoth(forward)
    return result


def outbound_advice(result) -> str:
    """Setup's words for a failed outbound check: when blocked, the providers that
    allow port 25 too."""
    lines = [outbound_message(result)]
    if result.error is None:
        lines.append("  Providers known to allow SMTP on port 25:")
        lines.extend(f"    - {provider}" for provider in COMPATIBLE_PROVIDERS)
    return "\n".join(lines)


# -- the readiness poll ---------------------------------------------------------


class NotAnswering(Exception):
    """One readiness attempt found the service not answering (yet); the message says how."""


async def wait_for(clock, attempts, *, interval: float = READY_INTERVAL,
                   timeout: float = READY_TIMEOUT) -> str | None:
    """Run each attempt in turn, retrying it every C{interval} seconds until it succeeds.

    @param attempts: C{() -> awaitable}s that fail with L{NotAnswering} until
        the service answers them.
    @param timeout: seconds for all of them together.
    @return: C{None} when every attempt succeeded in time, else the last failure's
        reason.
    """
    deadline = clock.seconds() + timeout
    for attempt in attempts:
        while True:
            try:
                await attempt()
                break
            except NotAnswering as e:
                if clock.seconds() + interval > deadline:
                    return str(e)
            await task.deferLater(clock, interval, lambda: None)
    return None


async def smtp_greets(reactor, port: int, host: str = "127.0.0.1") -> None:
    """One attempt: the listener sends a C{220} greeting (then QUIT).

    @raise NotAnswering: no connection, or no 220 in time.
    """
    result = await smtp_handshake(
        reactor, ProbeTarget(host, port), ehlo_name=None, connect_timeout=READY_ATTEMPT,
        io_timeout=READY_ATTEMPT, budget=2 * READY_ATTEMPT,
    )
    if not result.ok:
        raise NotAnswering(f"no SMTP greeting on port {port}: {result.reason}")


async def control_answers(reactor, path: str) -> None:
    """One attempt: the daemon answers VERSION on its control socket.

    @raise NotAnswering: nothing listens there, or no answer in time.
    """
    try:
        control = await client.connect(reactor, path)
    except (DaemonNotRunning, client.ConnectFailed) as e:
        raise NotAnswering(f"no answer on the control socket: {e}") from None
    try:
        call = control.call(Version)
        call.addTimeout(READY_ATTEMPT, reactor)
        await call
    except Exception as e:  # a timeout, a closed connection: not answering yet
        raise NotAnswering(f"no answer on the control socket {path}: {e}") from None
    finally:
        control.close()


def service_ready(reactor, socket: str, port: int = 25):
    """The production readiness poll: aimx greets on C{127.0.0.1:<port>}, then
    answers on its control socket C{socket}; C{() -> awaitable (reason or None)}."""
    return lambda: wait_for(reactor, [
        functools.partial(smtp_greets, reactor, port),
        functools.partial(control_answers, reactor, socket),
    ])


# -- the prompts ----------------------------------------------------------------


def _read(term: Terminal, prompt: str) -> str | None:
    """Print C{prompt} and read one answer (C{None} at end of input), interruptibly."""
    prompt_context = getattr(term.stdin, "prompt", contextlib.nullcontext)
    with prompt_context():
        return term.ask(prompt)


def _ask(term: Terminal, prompt: str) -> str:
    """One answer; end of input cancels setup."""
    answer = _read(term, prompt)
    if answer is None:
        term.say()
        raise CliError(END_OF_INPUT)
    return answer


def ask_domain(term: Terminal) -> str:
    """The domain prompt, its confirmation and the DNS-access question.

    @raise CliError: nothing entered (or end of input), or no DNS access.
    """
    while True:
        term.say("Enter the domain you want to use for email")
        term.say("(e.g. agent.example.com).")
        answer = _read(term, "> ")
        domain = (answer or "").strip()
        if not domain:
            if answer is None:
                term.say()
            raise CliError(NO_DOMAIN)
        try:
            flow.validate_domain(domain)
        except flow.DomainError as e:
            term.say(f"{term.mark('fail')} {e}")
            continue
        term.say(f"Domain: {term.bold(domain)}")
        if flow.answered_yes(_ask(term, "Confirm? [Y/n] ")):
            break
    question = (
        f"You will need to add MX, SPF and DKIM records for {domain}. "
        "Do you control this domain's DNS? [Y/n] "
    )
    if not flow.answered_yes(_ask(term, question)):
        raise CliError(NO_DNS_ACCESS)
    return domain


def ask_trust(term: Terminal, config_path: str) -> tuple[str, tuple[str, ...]]:
    """The trusted-senders prompt.

    @return: C{(trust, trusted_senders)}.
    @raise CliError: five invalid answers in a row, or end of input.
    """
    failures = 0
    while True:
        term.say("Enter the sender addresses you trust, comma-separated")
        term.say("(e.g. you@example.com, *@company.com); only their mail triggers hooks.")
        term.say("Leave blank to disable the trust model and hooks.")
        try:
            senders = flow.parse_senders(_ask(term, "> "))
        except flow.SenderError as e:
            failures += 1
            if failures >= flow.MAX_SENDER_ATTEMPTS:
                raise CliError(flow.sender_abort_message(e)) from None
            term.say(f"{term.mark('fail')} {e}")
            continue
        failures = 0
        if not senders:
            term.say(term.yellow(
                f"{term.mark('warn')} No trusted senders configured: hooks will NOT fire "
                "for inbound email."
            ))
            term.say(term.yellow(
                f"  To add them later, set trust and trusted_senders in {config_path}."
            ))
            if flow.answered_yes(_ask(term, "Leave hooks disabled? [Y/n] ")):
                return flow.trust_policy(())
            continue
        term.say("Trusted senders:")
        for sender in senders:
            term.say(f"  - {sender}")
        if flow.answered_yes(_ask(term, "Confirm? [Y/n] ")):
            return flow.trust_policy(senders)


def _arrow(term: Terminal) -> str:
    return term.style("→", _ACCENT) + " " if term.colour else "[>] "


async def dns_loop(term: Terminal, verify) -> bool:
    """Verify DNS on Enter until it passes or the operator skips.

    @param verify: C{() -> awaitable list of Check}.
    @return: whether every record verified; C{False} when skipped with C{q} or at
        end of input (which never loops).
    """
    while True:
        term.say("  Press Enter to verify DNS records now.")
        term.say("  Press q to skip and run `aimx doctor` later.")
        answer = _read(term, _arrow(term))
        if answer is None or answer.strip().lower() == "q":
            if answer is None:
                term.say()
            term.say("Update your DNS records, then run `aimx doctor` to re-verify them.")
            return False
        checks = await verify()
        term.say()
        term.say("DNS Verification:")
        term.say()
        for line in dns_lines(term, checks):
            term.say(line)
        term.say()
        if passed(checks):
            warned = any(check.status == WARN for check in checks)
            term.success("All DNS records verified" + ("; see the warnings above." if warned
                                                       else "."))
            return True
        term.say("Some DNS records are not yet correct.")
        term.say("DNS propagation can take up to 48 hours.")
        term.say()


# -- the verb -------------------------------------------------------------------


async def setup(args, s: Session, *, reactor, system: initsystem.System, run_in_thread,
                detect=detect_occupancy, probes=(outbound_probe, inbound_probe),
                resolve=passwd.owner, ready=None, resolver: Resolver | None = None,
                executable: str = sys.executable) -> int:
    """The verb.

    @param reactor: for the temporary responder, the probes and the readiness poll.
    @param system: the host: service state and files, C{hostname -I}, C{id},
        C{useradd}; the TLS files and the catchall home are under its root.
    @param run_in_thread: runs the blocking DNS verification off the reactor.
    @param detect: C{port -> Occupancy} (C{ss -tlnp}).
    @param probes: C{(outbound, inbound)} probe functions of L{aimx.verifier.client}.
    @param resolver: for the DNS checks; default L{Resolver.public} of the session's
        environment.  The outbound port-25 check resolves its MX with
        L{Resolver.from_env} (the daemon's resolver, C{AIMX_NAMESERVERS} honoured).
    @param resolve: owner name -> L{aimx.store.passwd.Owner} (the passwd database).
    @param ready: C{() -> awaitable (str | None)}, the readiness poll once the
        service runs: C{None} when it answers, else what did not; default
        L{service_ready} (127.0.0.1:25 and the session's control socket).
    @param executable: the Python whose C{twistd} the service runs.
    """
    wizard = Wizard(
        args, s, reactor=reactor, system=system, run_in_thread=run_in_thread, detect=detect,
        probes=probes, resolve=resolve,
        ready=ready or service_ready(reactor, socket_path(s.environ)),
        resolver=resolver, executable=executable,
    )
    try:
        return await wizard.run()
    except (KeyboardInterrupt, defer.CancelledError):
        s.term.say()
        raise CliError(INTERRUPTED) from None


class Wizard:
    """One run of the wizard: its inputs, what it learnt so far, the checklist."""

    def __init__(self, args, s: Session, *, reactor, system, run_in_thread, detect, probes,
                 resolve, ready, resolver, executable):
        self.args = args
        self.session = s
        self.term = s.term
        self.environ = s.environ
        self.reactor = reactor
        self.system = system
        self.run_in_thread = run_in_thread
        self.detect = detect
        self.probes = probes
        self.resolve = resolve
        self.ready = ready
        self.resolver = resolver
        self.executable = executable
        self.states = [flow.PENDING] * len(flow.TITLES)
        self.config_dir = os.path.abspath(args.config_dir)
        self.config_path = configfile.config_path(self.config_dir)
        self.private_key = keys.dkim_paths(self.config_dir)[0]
        self.cert = system.path(keys.DEFAULT_TLS_CERT)
        self.cert_key = system.path(keys.DEFAULT_TLS_KEY)
        self.runtime_dir = os.path.abspath(
            s.environ.get("AIMX_RUNTIME_DIR") or units.DEFAULT_RUNTIME_DIR
        )
        self.domain = args.domain
        self.existing = None
        self.data_dir = None
        self.reentry = False
        self.trust = flow.trust_policy(())
        self.backup_mx = None
        self.config = None
        self.first_mailbox = None
        self.dns_verified = False
        self.restart_pending = False

    # -- output ----------------------------------------------------------------

    def _paint(self, state: str, text: str) -> str:
        code = _PAINT.get(state)
        return self.term.style(text, code) if code else text

    def _checklist(self) -> None:
        for line in flow.checklist_lines(self.states, self.term.colour, self._paint):
            self.term.say(line)

    async def _step(self, number: int, body) -> None:
        """Run one step under its header; mark it done, skipped (C{body} returned a
        reason) or failed, and redraw the checklist."""
        term = self.term
        term.say()
        term.say(term.bold(f"Step {number}: {flow.TITLES[number - 1]}"))
        self.states[number - 1] = flow.RUNNING
        try:
            skipped = await body()
        except BaseException:
            self.states[number - 1] = flow.ERROR
            term.say()
            self._checklist()
            raise
        term.say()
        if skipped is None:
            self.states[number - 1] = flow.DONE
            term.say(f"{term.mark('ok')} Step {number} complete.")
        else:
            self.states[number - 1] = flow.SKIPPED
            term.say(f"{term.mark('warn')} Step {number} skipped ({skipped}).")
        term.say()
        self._checklist()
        term.say()

    # -- the run ---------------------------------------------------------------

    async def run(self) -> int:
        term = self.term
        config = self.session.config()  # best effort, for the port-25 checks only
        verify_host = resolve_verify_host(
            self.args.verify_host, config.verify_host if config is not None else None
        )
        check_domain = resolve_check_domain(
            self.args.outbound_check_domain,
            config.outbound_check_domain if config is not None else None,
        )
        if not self.session.root:
            raise CliError(NOT_ROOT)
        if self.domain is not None:
            try:
                flow.validate_domain(self.domain)
            except flow.DomainError as e:
                raise CliError(f"invalid domain '{self.domain}': {e}") from None
        self._backup_mx_flag()
        self.first_mailbox = self._mailbox_flags()
        settings = settings_from_environ(self.environ)

        term.say()
        term.say(term.bold(flow.BANNER))
        term.say(term.dim(flow.TAGLINE))
        term.say()
        self._checklist()
        term.say()

        occupancy = self.detect(settings.port)
        if occupancy.other:
            raise CliError(
                f"Port 25 is occupied by {occupancy.name}. Stop the process and run "
                "`aimx setup` again."
            )
        await self._step(
            1, lambda: self._preflight(check_domain, verify_host, settings, occupancy)
        )
        await self._step(2, self._domain_and_dns)
        await self._step(3, self._tls)
        await self._step(4, self._trust)
        await self._step(5, self._install)
        term.say(term.bold("First mailbox"))
        mailbox = await self._first_mailbox()
        term.say()

        self.states[5] = flow.HANDOFF
        term.say()
        term.say(term.bold(flow.COMPLETE_BANNER))
        term.say()
        self._checklist()
        term.say()
        term.say(term.bold(f"Step 6: {flow.TITLES[5]}"))
        for line in flow.handoff_lines(agent.display for agent in AGENTS):
            term.say(line)
        done = self._paint(flow.DONE, flow.glyph(flow.DONE, term.colour))
        closing = flow.closing_lines(self.domain, done, dns_verified=self.dns_verified,
                                     restart_pending=self.restart_pending, mailbox=mailbox)
        for line in closing:
            term.say(line)
        return 0

    # -- the flags -------------------------------------------------------------

    def _backup_mx_flag(self) -> None:
        """Check C{--backup-mx} before anything is probed or written."""
        if self.args.backup_mx is None:
            return
        try:
            flow.backup_mx_answer(self.args.backup_mx, None, self.domain)
        except flow.DomainError as e:
            raise CliError(f"invalid --backup-mx '{self.args.backup_mx}': {e}") from None

    def _mailbox_flags(self) -> tuple[str, str] | None:
        """C{(name, owner)} of C{--mailbox} (the owner from C{--owner}, else the user
        behind sudo), checked before anything is probed or written."""
        name, owner = self.args.mailbox, self.args.owner
        if name is None:
            if owner is not None:
                raise CliError("--owner goes with --mailbox NAME")
            return None
        try:
            configedit.check_mailbox_name(name)
        except AimxError as e:
            raise CliError(f"invalid --mailbox '{name}': {e}") from None
        owner = owner or flow.default_owner(self.environ.get("SUDO_USER"))
        if owner is None:
            raise CliError("--mailbox needs --owner USER (setup was not run through sudo)")
        problem = flow.owner_problem(owner, self._user_exists)
        if problem is not None:
            raise CliError(f"invalid --owner: {problem}")
        return name, owner

    def _user_exists(self, name: str) -> bool:
        return self.resolve(name).uid is not None

    # -- step 1 ----------------------------------------------------------------

    async def _preflight(self, check_domain, verify_host, settings, occupancy):
        outbound, inbound = self.probes
        term = self.term
        ok = await checked(
            term, "Outbound port 25",
            cancellable(outbound(
                self.reactor, check_domain, settings,
                resolver=Resolver.from_env(self.environ), run_in_thread=self.run_in_thread,
            )),
            outbound_advice,
        )

        async def probe_inbound() -> bool:
            return await checked(
                term, "Inbound port 25", cancellable(inbound(self.reactor, verify_host)),
                inbound_message,
            )

        if verify_host is None:
            not_checked(term)
        elif occupancy.aimx:
            term.say("`aimx serve` is already running on port 25; probing the live daemon.")
            ok = await probe_inbound() and ok
        else:
            async with TemporaryResponder(self.reactor, settings):
                ok = await probe_inbound() and ok
        if not ok:
            raise CliError(PREFLIGHT_FAILED)

    # -- step 2 ----------------------------------------------------------------

    async def _domain_and_dns(self):
        term = self.term
        if self.domain is None:
            self.domain = ask_domain(term)
        term.say()
        term.say(f"aimx setup for {term.bold(self.domain)}")
        self.existing = self._load_existing()
        self.data_dir = os.path.abspath(
            self.args.data_dir
            or (self.existing.data_dir if self.existing is not None else DEFAULT_DATA_DIR)
        )
        self._make_dirs()
        selector = self.existing.dkim_selector if self.existing is not None else "aimx"
        ipv6_enabled = self.existing is not None and self.existing.enable_ipv6

        running = initsystem.is_running(self.system)
        self.reentry = flow.already_configured(
            running, os.path.exists(self.cert), os.path.exists(self.private_key)
        )
        if self.reentry:
            term.success(
                "Existing aimx configuration detected. Skipping install, proceeding to "
                "verification."
            )
        ipv4, ipv6 = dnsverify.server_addresses(self.system)
        if ipv4 is None:
            raise CliError("Could not determine server IPv4 address")
        self.backup_mx = self._ask_backup_mx()
        if os.path.exists(self.private_key):
            term.say(f"Using the existing DKIM key {self.private_key}.")
        else:
            self._generate_dkim()
        expected = ExpectedDns(
            domain=self.domain,
            ipv4=ipv4,
            ipv6=ipv6 if ipv6_enabled else None,
            selector=selector,
            dkim_key=dnsverify.local_dkim_key(self.config_dir),
            backup_mx=self.backup_mx,
        )
        resolver = self.resolver or Resolver.public(self.environ)

        term.say()
        term.say(term.bold("DNS"))
        term.say("Add these records at your domain registrar or DNS provider:")
        term.say()
        for line in table_lines(expected.records()):
            term.say(line)
        term.say()
        for line in flow.dns_notes(expected):
            term.say(line)
        term.say()
        self.dns_verified = await dns_loop(
            term, lambda: self.run_in_thread(dnsverify.verify, expected, resolver)
        )
        # The domain is set up either way; the checklist shows the records are not (yet).
        return None if self.dns_verified else "DNS records not verified yet"

    def _ask_backup_mx(self) -> str | None:
        """The backup MX: C{--backup-mx}, else asked (the configured one is kept on
        Enter), else (C{AIMX_NONINTERACTIVE}) the configured one."""
        current = self.existing.backup_mx if self.existing is not None else None
        term = self.term
        if self.args.backup_mx is not None:
            try:
                return flow.backup_mx_answer(self.args.backup_mx, current, self.domain)
            except flow.DomainError as e:
                raise CliError(f"invalid --backup-mx '{self.args.backup_mx}': {e}") from None
        if flow.noninteractive(self.environ):
            return current
        term.say()
        term.say(f"A backup MX is another mail server that accepts mail for {self.domain} "
                 "while this one is down and passes it on when it is back. Most setups "
                 "have none.")
        if current is None:
            prompt = "Backup MX host (Enter for none): "
        else:
            prompt = (f"Backup MX host [{current}] (Enter keeps it, "
                      f"`{flow.NO_BACKUP_MX}` removes it): ")
        while True:
            try:
                return flow.backup_mx_answer(_ask(term, prompt), current, self.domain)
            except flow.DomainError as e:
                term.say(f"{term.mark('fail')} {e}")

    def _load_existing(self):
        """The existing config.toml, C{None} when there is none.

        @raise CliError: it exists but does not load (nothing has been written yet).
        """
        if not os.path.lexists(self.config_path):
            return None
        try:
            config, _ = configfile.load(self.config_dir)
        except AimxError as e:
            raise CliError(
                f"the existing config does not load: {e}\n"
                "Fix it (or move it aside to start afresh), then run `sudo aimx setup` again."
            ) from None
        return config

    def _make_dirs(self) -> None:
        """The config dir (0755, proven writable) and the data dir (0755)."""
        try:
            os.makedirs(self.config_dir, mode=0o755, exist_ok=True)
            os.chmod(self.config_dir, 0o755)
            probe = os.path.join(self.config_dir, f".aimx-setup.{os.getpid()}")
            safefs.create_path(probe, b"", mode=0o600, durable=False)
            os.unlink(probe)
        except OSError as e:
            raise CliError(
                f"cannot write to the config directory {self.config_dir}: "
                f"{e.strerror or e}. Make it writable for root (or point AIMX_CONFIG_DIR "
                "at a writable directory) and run `sudo aimx setup` again."
            ) from None
        try:
            os.makedirs(self.data_dir, mode=0o755, exist_ok=True)
        except OSError as e:
            raise CliError(
                f"cannot create the data directory {self.data_dir}: {e.strerror or e}"
            ) from None

    def _generate_dkim(self) -> None:
        """A new DKIM key pair; on failure nothing of it is left behind."""
        private, public = keys.dkim_paths(self.config_dir)
        directory = os.path.dirname(private)
        had_directory = os.path.isdir(directory)
        self.term.say("Generating a DKIM key (RSA, 2048 bits)...")
        try:
            keys.generate_dkim_key(self.config_dir)
        except OSError as e:
            for path in (private, public):
                with contextlib.suppress(OSError):
                    os.unlink(path)
            if not had_directory:
                with contextlib.suppress(OSError):
                    os.rmdir(directory)
            raise CliError(
                f"cannot write the DKIM key pair in {directory}: {e.strerror or e}"
            ) from None
        self.term.say(f"Generated a DKIM key: {private} (public half {public}).")

    # -- the first mailbox ------------------------------------------------------

    async def _first_mailbox(self) -> str | None:
        """Offer the first mailbox, once the service answers.

        It is created through the service (MAILBOX-CREATE on its control socket), as
        C{aimx mailboxes create} does, so it takes mail at once.  Not offered when a
        mailbox besides the catchall exists, with C{--no-mailbox}, under
        C{AIMX_NONINTERACTIVE} without C{--mailbox}, or when a re-run changed
        config.toml under the running daemon (its write would undo the change).

        @return: the name of the mailbox created (or found, as C{--mailbox} asked).
        """
        term, config = self.term, self.config
        wanted = self.first_mailbox
        if self.args.no_mailbox:
            term.say(f"Not offered (--no-mailbox). {flow.CREATE_LATER}")
            return None
        if self.restart_pending:
            message = ("aimx still runs with the previous configuration, so no mailbox is "
                       f"created now: restart it first (see above). {flow.CREATE_LATER}")
            if wanted is not None:
                raise CliError(message)
            term.say(message)
            return None
        if wanted is not None:
            name, owner = wanted
            present = config.mailbox(name)
            if present is None:
                await self._create(name, owner)
            elif present.owner == owner:
                term.say(f"Mailbox '{name}' ({present.address}, owner {owner}) already exists.")
            else:
                raise CliError(f"mailbox '{name}' already exists, owned by {present.owner}")
            return name
        others = [mb.name for mb in config.mailboxes if not mb.is_catchall(config.domain)]
        if others:
            term.say(f"Mailboxes already configured: {', '.join(others)}. To add one: "
                     "`sudo aimx mailboxes create NAME --owner USER`.")
            return None
        if flow.noninteractive(self.environ):
            term.say(f"No mailbox created (AIMX_NONINTERACTIVE). {flow.CREATE_LATER}")
            return None
        return await self._ask_first_mailbox()

    async def _ask_first_mailbox(self) -> str | None:
        """The prompts: a name (Enter or end of input: none), then its owner."""
        term, domain = self.term, self.domain
        term.say(f"Mail to any address at {domain} lands in the catchall mailbox until you "
                 "create others.")
        term.say("A mailbox is NAME@" + domain + ", owned by the Linux user who runs your "
                 "agent: the mail files and the hooks are that user's.")
        default = flow.default_owner(self.environ.get("SUDO_USER"))
        if default is not None and not self._user_exists(default):
            default = None
        while True:
            answer = _read(term, "Mailbox name (e.g. agent; Enter to skip): ")
            name = (answer or "").strip()
            owner = None
            if name:
                try:
                    configedit.check_mailbox_name(name)
                except AimxError as e:
                    term.say(f"{term.mark('fail')} {e}")
                    continue
                owner = self._ask_owner(f"{name}@{domain}", default)
            if owner is None:
                if answer is None or name:
                    term.say()
                term.say(f"No mailbox created. {flow.CREATE_LATER}")
                return None
            try:
                await self._create(name, owner)
            except (CliError, DaemonError) as e:  # the service refused: say why, ask again
                term.say(f"{term.mark('fail')} {e}")
                continue
            return name

    def _ask_owner(self, address: str, default: str | None) -> str | None:
        """The owner prompt; C{None} at end of input."""
        term = self.term
        prompt = (f"Owner of {address} [{default}]: " if default is not None
                  else f"Owner of {address} (a Linux user): ")
        while True:
            answer = _read(term, prompt)
            if answer is None:
                return None
            owner = answer.strip() or default
            if not owner:
                continue
            problem = flow.owner_problem(owner, self._user_exists)
            if problem is None:
                return owner
            term.say(f"{term.mark('fail')} {problem}")

    async def _create(self, name: str, owner: str) -> None:
        """MAILBOX-CREATE through the running service.

        @raise CliError: no service answers, or (as L{DaemonError}) it refused.
        """
        try:
            reply = await self.session.call(MailboxCreate, name=name, owner=owner)
        except DaemonNotRunning as e:
            raise CliError(f"cannot create mailbox '{name}': {e}") from None
        self.term.success(f"Mailbox '{name}' created: {reply['address']} (owner: {owner}).")

    # -- step 3 ----------------------------------------------------------------

    async def _tls(self):
        term = self.term
        directory = os.path.dirname(self.cert)
        if self.reentry:
            term.say(f"TLS certificate already exists at {self.cert}.")
            return "TLS certificate already exists"
        if os.path.exists(self.cert) and os.path.exists(self.cert_key):
            term.say(f"Existing TLS certificate kept: {self.cert}")
            return None
        term.say("Generating self-signed TLS certificate...")
        try:
            keys.generate_self_signed(self.cert, self.cert_key, self.domain)
        except OSError as e:
            if not os.path.exists(self.cert):
                with contextlib.suppress(OSError):
                    os.unlink(self.cert_key)
            raise CliError(f"Failed to generate TLS certificate: {e}") from None
        term.say(f"TLS certificate generated in {directory}/")
        return None

    # -- step 4 ----------------------------------------------------------------

    async def _trust(self):
        term = self.term
        if os.path.lexists(self.config_path):
            term.say("Existing trust policy preserved.")
            return "existing trust policy preserved"
        if flow.noninteractive(self.environ):
            term.warn(
                "Warning: No trusted senders configured (AIMX_NONINTERACTIVE): trust = "
                f'"none", so hooks will NOT fire for inbound email. Set trust and '
                f"trusted_senders in {self.config_path} to enable them."
            )
            return None
        self.trust = ask_trust(term, self.config_path)
        return None

    # -- step 5 ----------------------------------------------------------------

    def _new_config(self):
        """The config to save, validated as the daemon would load it."""
        if self.existing is None:
            trust, senders = self.trust
            config = flow.fresh_config(self.domain, self.data_dir, trust, senders,
                                       backup_mx=self.backup_mx)
        else:
            data_dir = self.data_dir if self.data_dir != self.existing.data_dir else None
            try:
                config = flow.update_config(self.existing, self.domain, data_dir,
                                            backup_mx=self.backup_mx)
            except flow.DomainError as e:
                raise CliError(str(e)) from None
        try:
            configfile.render(config, self.config_path)
        except AimxError as e:
            raise CliError(f"refusing to write an invalid config: {e}") from None
        return config

    async def _install(self):
        term = self.term
        if self.reentry:
            term.say("aimx is already installed and running; refreshing its configuration "
                     "and directories.")
        config = self._new_config()
        self.config = config
        self._catchall_user()
        owners = self._owners(config)
        changed = self.existing is None or to_toml(config) != to_toml(self.existing)
        if changed:
            try:
                configfile.write_atomic(self.config_dir, config)
            except ConfigError as e:
                raise CliError(f"refusing to write an invalid config: {e}") from None
            except OSError as e:
                raise CliError(f"failed to write {self.config_path}: {e.strerror or e}") from None
            term.say(f"Configuration saved to {self.config_path}")
        else:
            term.say(f"Configuration unchanged: {self.config_path}")
        self._mailbox_dirs(config, owners)
        try:
            datadir.write_readme(self.data_dir)
        except OSError as e:
            raise CliError(f"cannot write {datadir.readme_path(self.data_dir)}: {e}") from None

        if self.reentry:
            self.restart_pending = changed
            if changed:
                restart_hint(term)
            await self._wait_ready("  Checking that aimx answers on port 25 and its control "
                                   "socket... ")
            return "aimx already installed"
        term.say()
        term.say("Installing and starting the aimx service...")
        params = units.UnitParams(
            twistd=initsystem.find_twistd(self.executable),
            data_dir=self.data_dir,
            config_dir=self.config_dir,
            runtime_dir=self.runtime_dir,
        )
        try:
            initsystem.install(self.system, params)
        except OSError as e:
            raise CliError(f"cannot write the service file: {e}") from None
        await self._wait_ready("  Waiting for aimx to answer on port 25 and its control "
                               "socket... ")
        term.say("aimx is running and answering.")
        return None

    async def _wait_ready(self, label: str) -> None:
        """Print C{label}, then ✓ once the service answers, or ✗ and fail saying
        what did not answer and where to look."""
        term = self.term
        term.out.write(label)
        term.out.flush()
        reason = await self.ready()
        if reason is not None:
            term.say(term.mark("fail"))
            status = ("rc-service aimx status" if initsystem.detect_init(self.system)
                      == initsystem.OPENRC else "systemctl status aimx")
            raise CliError(NOT_READY.format(reason=reason, status=status))
        term.say(term.mark("ok"))

    def _catchall_user(self) -> None:
        """Create C{aimx-catchall} if needed, before anything is chowned to it;
        (re)create its home, 0700."""
        term, system, user = self.term, self.system, flow.CATCHALL_USER
        term.say()
        term.say(term.bold("Catchall"))
        if system.run("id", user).returncode == 0:
            term.say(f"System user {user} already present; skipping creation.")
        else:
            done = system.run(
                "useradd", "--system", "--no-create-home", "--home-dir", flow.CATCHALL_HOME,
                "--shell", "/usr/sbin/nologin", "--user-group", user,
            )
            if done.returncode == programs.NOT_RUN:  # no useradd (Alpine/BusyBox)
                done = system.run(
                    "adduser", "-S", "-H", "-h", flow.CATCHALL_HOME, "-s", "/sbin/nologin", user
                )
            if done.returncode != 0:
                detail = done.stderr.strip() or f"exit status {done.returncode}"
                raise CliError(f"Failed to create system user {user}: {detail}")
            term.say(f"Created system user {user}")
        owner = self.resolve(user)
        if owner.uid is None:
            raise CliError(f"system user {user} does not resolve; create it and run "
                           "`sudo aimx setup` again")
        home = system.path(flow.CATCHALL_HOME)
        try:
            os.makedirs(home, exist_ok=True)
            os.chown(home, owner.uid, owner.gid)
            os.chmod(home, 0o700)
        except OSError as e:
            raise CliError(f"cannot prepare {home}: {e.strerror or e}") from None
        term.say(f"Home directory {home} (0700)")
        term.say()

    def _owners(self, config) -> dict:
        """Every mailbox's owner, resolved (before anything is written).

        @raise CliError: an owner does not exist.
        """
        owners = {}
        for mb in config.mailboxes:
            owner = self.resolve(mb.owner)
            if owner.uid is None:
                raise CliError(
                    f"mailbox '{mb.name}' is owned by '{mb.owner}', which does not exist. "
                    f"Create it with `useradd --system --no-create-home --shell "
                    f"/usr/sbin/nologin {mb.owner}` and run `sudo aimx setup` again."
                )
            owners[mb.name] = owner
        return owners

    def _mailbox_dirs(self, config, owners: dict) -> None:
        """C{inbox/<name>} and C{sent/<name>} of every mailbox: owner's, 0700."""
        try:
            for warning in datadir.prepare(self.data_dir):
                self.term.warn(f"Warning: {warning}")
        except AimxError as e:
            raise CliError(str(e)) from None
        for mb in config.mailboxes:
            create_dirs(self.data_dir, mb.name, owners[mb.name])
        names = ", ".join(mb.name for mb in config.mailboxes)
        self.term.say(f"Mailbox directories ready in {self.data_dir} (0700): {names}")
