"""What the mailbox and hook verbs share (L3): the daemon on demand, the config, output.

A verb is C{async def verb(args, session) -> int}.  L{run} executes it with the
reactor; tests call L{execute} with a L{Session} whose C{connect} is a fake.

The wording every verb shares lives here too: what to say when the daemon is
not running (L{start_advice}), that a mailbox or hook is missing (the same words
whether the daemon or the direct edit found out), and the refusal to delete
without C{--yes} when nobody is at a terminal to confirm.
"""

import os
import re
import shutil
import sys
from datetime import datetime, timezone

from twisted.internet import defer, error
from twisted.protocols import amp

from aimx.cli.term import Terminal
from aimx.control import client
from aimx.control.commands import ERRORS, socket_path
from aimx.errors import AimxError, ConfigError
from aimx.core import audit
from aimx.store import audit as auditfiles
from aimx.store import configfile
from aimx.host import initsystem
from aimx.store.passwd import Passwd

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


def start_advice(environ, system: initsystem.System) -> str:
    """How to start the daemon this CLI would talk to: one or two sentences.

    A runtime dir of its own (C{AIMX_RUNTIME_DIR}, as the demo and tests use)
    belongs to a daemon started by hand; otherwise the installed service, if
    any, is started by its init system.

    @param environ: the environment (C{AIMX_RUNTIME_DIR}).
    @param system: the host, to find the init system and the service file.
    """
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

    @param connect: C{() -> Deferred[ControlClient]}; may fail with
        L{DaemonNotRunning} or L{client.ConnectFailed}.
    @param euid: the caller's effective uid.
    @param environ: the process environment (C{AIMX_NONINTERACTIVE}, C{AIMX_RUNTIME_DIR}).
    @param system: the host (init system, service files) for L{start_advice}.
    @param sleep: C{seconds -> Deferred} firing that much later (polling verbs);
        by default it fires at once.
    """

    def __init__(self, args, *, connect, euid: int, term: Terminal, environ, passwd=None,
                 system=None, sleep=None):
        self.args = args
        self.connect = connect
        self.euid = euid
        self.term = term
        self.environ = environ
        self.passwd = passwd or Passwd()
        self.system = system or initsystem.System()
        self.sleep = sleep or (lambda seconds: defer.succeed(None))
        self._client = None
        self._config = False
        self._config_error = None

    @property
    def root(self) -> bool:
        return self.euid == 0

    @property
    def username(self) -> str | None:
        return self.passwd.username(self.euid)

    @property
    def config_path(self) -> str:
        return configfile.config_path(self.args.config_dir)

    async def call(self, command, **arguments) -> dict:
        """Send one command to the daemon, connecting on first use.

        @raise aimx.errors.DaemonNotRunning: nothing answers on the socket.
        @raise CliError: a missing mailbox or hook (L{mailbox_missing}, L{hook_missing}).
        @raise DaemonError: the daemon answered with another error code.
        """
        if self._client is None:
            try:
                self._client = await self.connect()
            except client.ConnectFailed as e:
                raise CliError(str(e), exit_code=2) from None
        try:
            return await self._client.call(command, **arguments)
        except tuple(ERRORS) as e:
            if e.code in _MISSING_CODES and _MISSING.fullmatch(str(e)):
                raise CliError(str(e)) from None
            raise DaemonError(e.code, str(e)) from None
        except (amp.RemoteAmpError, amp.UnknownRemoteError, amp.UnhandledCommand) as e:
            raise CliError(f"malformed response from aimx daemon: {e}") from None
        except (error.ConnectionDone, error.ConnectionLost):
            raise CliError("lost the connection to the aimx daemon") from None

    def config(self):
        """config.toml with the C{--data-dir} override, or C{None} when unreadable."""
        if self._config is False:
            try:
                self._config, _ = configfile.load(
                    self.args.config_dir, data_dir_override=self.args.data_dir
                )
            except AimxError as e:
                self._config, self._config_error = None, e
        return self._config

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
            self._audit(config.effective_audit_dir, audit.changes(old, config, self.euid))

    def _audit(self, directory: str, records: list[dict]) -> None:
        """Append records to the audit log directly (no daemon runs to write them)."""
        if not records:
            return
        now = datetime.now(timezone.utc)
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
    from twisted.internet import reactor, task

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
