"""What the verbs that talk to the daemon share (L3): the daemon on demand, the config, output.

A verb is C{async def verb(args, session) -> int}.  L{run_blocking} executes one
that only talks to the daemon, over the blocking client and without Twisted (the
listings start in about twice C{python -c pass}, bench/cli_start.py); L{run}
executes one that needs the reactor for more.  Tests call L{execute} with a
L{Session} whose C{connect} is a fake.  This module imports what those quick
verbs need and nothing else: the config, the init system and the passwd
database are imported where they are used.

The wording every verb shares lives here too: what to say when the daemon is
not running (L{start_advice}), that a mailbox or hook is missing (the same words
whether the daemon or the direct edit found out), and the refusal to delete
without C{--yes} when nobody is at a terminal to confirm.
"""

import os
import re
import shutil
import sys
import time
from datetime import datetime, timezone

from aimx.cli.term import Terminal
from aimx.control.wire import ERRORS, MalformedResponse, socket_path
from aimx.errors import AimxError, ConfigError, ConnectFailed, DaemonNotRunning

DEFAULT_RUNTIME_DIR = "/run/aimx"

#: The daemon's reasons that mean "no such mailbox/hook (for you)" (docs/security.md,
#: "The control socket"): the CLI prints them without their code, as it does when it finds out itself.
_MISSING = re.compile(r"mailbox '.*' does not exist|hook '.*' not found", re.DOTALL)
_MISSING_CODES = ("MAILBOX", "ENOENT")


class CliError(AimxError):
    """A verb failure: printed as C{Error: <message>}, exits with C{exit_code}."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class DaemonError(AimxError):
    """The daemon refused a command; printed as C{[<CODE>] <reason>}."""

    def __init__(self, code: str, reason: str):
        super().__init__(f"[{code}] {reason}")
        self.code = code
        self.reason = reason


def mailbox_missing(name: str) -> CliError:
    """C{mailbox '<name>' does not exist}: absent, or (for non-root) not the caller's."""
    return CliError(f"mailbox '{name}' does not exist")


def hook_missing(name: str) -> CliError:
    """C{hook '<name>' not found}."""
    return CliError(f"hook '{name}' not found")


def start_advice(environ, system) -> str:
    """How to start the daemon this CLI would talk to: one or two sentences.

    A runtime dir of its own (C{AIMX_RUNTIME_DIR}, as the demo and tests use)
    belongs to a daemon started by hand; otherwise the installed service, if
    any, is started by its init system.

    @param environ: the environment (C{AIMX_RUNTIME_DIR}).
    @param system: the host (L{aimx.host.initsystem.System}), to find the init
        system and the service file.
    """
    from aimx.host import initsystem

    runtime = environ.get("AIMX_RUNTIME_DIR")
    if runtime and os.path.normpath(runtime) != DEFAULT_RUNTIME_DIR:
        return (
            f"Start the aimx that uses {runtime} (`aimx serve --runtime-dir {runtime}` with "
            "its --config-dir); if it was `make demo`, run that again and use the "
            "AIMX_RUNTIME_DIR it prints."
        )
    init = initsystem.detect_init(system)
    service_file = initsystem.service_file(init)
    if service_file is not None and os.path.exists(system.path(service_file)):
        if init == initsystem.OPENRC:
            return "Start it with `sudo rc-service aimx start`."
        return "Start it with `sudo systemctl start aimx`."
    return "Start it with `sudo aimx serve`, or install it as a service with `sudo aimx setup`."


class Session:
    """One CLI invocation's view of the world.

    @param connect: C{() -> awaitable client}, the client having an awaitable
        C{call(command, **arguments)} and C{close()}; may fail with
        L{DaemonNotRunning} or L{ConnectFailed}.
    @param euid: the caller's effective uid.
    @param environ: the process environment (C{AIMX_NONINTERACTIVE}, C{AIMX_RUNTIME_DIR}).
    @param passwd: the passwd database (default L{aimx.store.passwd.Passwd}).
    @param system: the host (init system, service files) for L{start_advice}
        (default L{aimx.host.initsystem.System}).
    @param sleep: C{seconds -> awaitable} done that much later (polling verbs);
        by default it is done at once.
    """

    def __init__(self, args, *, connect, euid: int, term: Terminal, environ, passwd=None,
                 system=None, sleep=None):
        self.args = args
        self.connect = connect
        self.euid = euid
        self.term = term
        self.environ = environ
        self._passwd = passwd
        self._system = system
        self.sleep = sleep or _at_once
        self._client = None
        self._config = False
        self._config_error = None

    @property
    def passwd(self):
        if self._passwd is None:
            from aimx.store.passwd import Passwd

            self._passwd = Passwd()
        return self._passwd

    @property
    def system(self):
        if self._system is None:
            from aimx.host import initsystem

            self._system = initsystem.System()
        return self._system

    @property
    def root(self) -> bool:
        return self.euid == 0

    @property
    def username(self) -> str | None:
        return self.passwd.username(self.euid)

    @property
    def config_path(self) -> str:
        from aimx.store import configfile

        return configfile.config_path(self.args.config_dir)

    async def call(self, command, **arguments) -> dict:
        """Send one command to the daemon, connecting on first use.

        @raise aimx.errors.DaemonNotRunning: nothing answers on the socket.
        @raise CliError: a missing mailbox or hook (L{mailbox_missing}, L{hook_missing}),
            a reply that is not an answer, a lost connection.
        @raise DaemonError: the daemon answered with another error code.
        """
        if self._client is None:
            try:
                self._client = await self.connect()
            except ConnectFailed as e:
                raise CliError(str(e), exit_code=2) from None
        try:
            return await self._client.call(command, **arguments)
        except tuple(ERRORS) as e:
            if e.code in _MISSING_CODES and _MISSING.fullmatch(str(e)):
                raise CliError(str(e)) from None
            raise DaemonError(e.code, str(e)) from None
        except MalformedResponse as e:
            raise CliError(f"malformed response from aimx daemon: {e}") from None

    def config(self):
        """config.toml with the C{--data-dir} override, or C{None} when unreadable."""
        if self._config is False:
            from aimx.store import configfile

            try:
                self._config, _ = configfile.load(
                    self.args.config_dir, data_dir_override=self.args.data_dir
                )
            except AimxError as e:
                self._config, self._config_error = None, e
        return self._config

    async def call_running(self, command, without: str = "", **arguments) -> dict:
        """L{call} for a command only the daemon answers: the daemon down is a
        L{CliError} (exit 2) saying how to start it, then C{without}."""
        try:
            return await self.call(command, **arguments)
        except DaemonNotRunning as e:
            raise CliError(self.not_running(e, without), exit_code=2) from None

    def not_running(self, error, without: str = "") -> str:
        """The daemon-down message: that it is not running, and how to start it.

        @param error: the L{aimx.errors.DaemonNotRunning} (it names the socket).
        @param without: a last sentence on what works without the daemon.
        """
        text = f"{error}. {start_advice(self.environ, self.system)}"
        return f"{text} {without}" if without else text

    def pending_note(self) -> str:
        """After a direct edit (daemon down): when the change takes effect."""
        return (
            "Note: aimx daemon not running; the change takes effect when it starts. "
            + start_advice(self.environ, self.system)
        )

    def confirm_delete(self, prompt: str, show=None) -> bool:
        """Ask before a delete (no C{--yes}): C{show()} prints what goes, then the prompt.

        Nobody can answer without a terminal on stdin, so the delete is refused
        then (exit 2) rather than cancelled as if someone had said no.  A no at
        the terminal prints C{Cancelled.}.

        @param prompt: a C{[y/N]} question.
        @return: whether the answer was yes.
        @raise CliError: stdin is not a terminal.
        """
        if not self.term.interactive:
            raise CliError("refusing to delete without --yes (stdin is not a terminal)",
                           exit_code=2)
        if show is not None:
            show()
        if self.term.confirm(prompt):
            return True
        self.term.say("Cancelled.")
        return False

    def root_config(self, problem: str):
        """The config for a root direct edit (daemon down).

        @param problem: the error when the caller is not root or cannot read it.
        @raise CliError: C{problem}.
        """
        if not self.root:
            raise CliError(problem)
        config = self.config()
        if config is None:
            # Root, daemon down, and no usable config: say what is wrong with it.
            raise CliError(f"the daemon is not running and {self._config_error}")
        return config

    def write_config(self, config) -> None:
        """Rewrite config.toml directly (root, daemon down), and record the mailboxes and
        hooks it creates or deletes in the audit log, as the daemon would.

        @raise CliError: the write failed.
        """
        from aimx.store import configfile

        try:
            old, _ = configfile.load(self.args.config_dir)
        except ConfigError:
            old = None
        try:
            configfile.write_atomic(self.args.config_dir, config)
        except ConfigError as e:
            raise CliError(f"refusing to write an invalid config: {e}") from None
        except OSError as e:
            raise CliError(f"failed to write {self.config_path}: {e}") from None
        if old is not None:
            self._audit(old, config)

    def _audit(self, old, new) -> None:
        """Append the changes from C{old} to C{new} to the audit log directly (no daemon
        runs to record them); a failure is a warning."""
        from aimx.core import audit
        from aimx.store import audit as auditfiles

        records = audit.changes(old, new, self.euid)
        if not records:
            return
        now = datetime.now(timezone.utc)
        directory = new.effective_audit_dir
        try:
            auditfiles.append(directory, [(audit.day(now), audit.line(audit.stamped(r, now)))
                                          for r in records])
        except OSError as e:
            self.term.warn(f"Warning: could not write the audit log in {directory}: {e}")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def restart_hint(term: Terminal) -> None:
    """After a direct config edit: tell root how to restart the daemon."""
    if shutil.which("systemctl") is None and shutil.which("rc-service") is not None:
        command = "sudo rc-service aimx restart"
    else:
        command = "sudo systemctl restart aimx"
    term.hint("Hint: Restart the daemon for the change to take effect:")
    term.say(f"  {command}")


async def execute(verb, args, session: Session) -> int:
    """Run a verb; an L{AimxError} becomes C{Error: ...} and its exit code."""
    try:
        return await verb(args, session)
    except AimxError as e:
        session.term.error(str(e))
        return getattr(e, "exit_code", 1)
    finally:
        session.close()


def run(verb, args) -> int:
    """Execute a verb with the global reactor and return its exit code."""
    from twisted.internet import defer, reactor, task

    from aimx.control import client

    term = Terminal(sys.stdout, sys.stderr, sys.stdin, os.environ)
    session = Session(
        args,
        connect=lambda: defer.Deferred.fromCoroutine(
            client.connect(reactor, socket_path(os.environ))
        ),
        euid=os.geteuid(),
        term=term,
        environ=os.environ,
        sleep=lambda seconds: task.deferLater(reactor, seconds, lambda: None),
    )
    outcome = []

    async def main(_reactor):
        try:
            outcome.append(await execute(verb, args, session))
        except BaseException as e:
            outcome.append(e)

    try:
        task.react(lambda r: defer.Deferred.fromCoroutine(main(r)))
    except SystemExit:
        pass
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


async def _at_once(seconds: float) -> None:
    """The default L{Session.sleep}: no wait."""


class _Answered:
    """A blocking connection behind the awaitable C{call} the verbs use: a call has
    its answer when it returns, so awaiting it never suspends."""

    def __init__(self, connection):
        self._connection = connection

    async def call(self, command, **arguments) -> dict:
        return self._connection.call(command, **arguments)

    def close(self) -> None:
        self._connection.close()


def blocking_connect(path: str):
    """A L{Session}'s C{connect} over L{aimx.control.blockingclient} (L{aimx.control.wire} commands)."""
    from aimx.control import blockingclient

    async def connect():
        return _Answered(blockingclient.connect(path))

    return connect


async def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def to_the_end(steps):
    """The result of a coroutine whose every await completes before it returns (it never
    suspends), run without an event loop.

    @raise RuntimeError: it suspended after all.
    """
    try:
        steps.send(None)
    except StopIteration as done:
        return done.value
    steps.close()
    raise RuntimeError(f"{steps.__qualname__} awaited something that is not blocking")


def run_blocking(verb, args) -> int:
    """Execute a verb that only talks to the daemon and return its exit code.

    Its commands (those of L{aimx.control.wire}) go through the blocking client
    and its sleeps are C{time.sleep}, so it runs to its end with no event loop
    and no Twisted (L{to_the_end}).  Ctrl-C ends it with exit code 130.
    """
    session = Session(
        args,
        connect=blocking_connect(socket_path(os.environ)),
        euid=os.geteuid(),
        term=Terminal(sys.stdout, sys.stderr, sys.stdin, os.environ),
        environ=os.environ,
        sleep=_sleep,
    )
    try:
        return to_the_end(execute(verb, args, session))
    except KeyboardInterrupt:
        return 130
