"""Hook processes (L2): run a mailbox's hooks for an event, as the mailbox owner.

L{HookRunner.on_received} is the L{aimx.smtp.inbound.Inbound} listener: it decides
which hooks fire (L{hookspec.plan}: the trust and review gates, the sender's
hook rate), records that verdict in the audit log, starts the hooks and returns
at once, so the SMTP reply never waits for them.
L{HookRunner.after_send} is what the outbound path awaits.  The hooks of one event
run one after another (docs/hooks.md); at most C{max_processes} hook processes
run at once and the others wait their turn in arrival order.

No interpreter starts per hook (docs/design.md, "Hooks").  The child is started by
the standard library's C spawn (L{subprocess.Popen}: vfork, then chdir to the
mailbox directory, a new session, every descriptor but 0-2 closed, exec), with
the environment exactly L{hookspec.environment}.  A root daemon runs C{cmd}
through util-linux C{unshare --setgid --setuid}, which clears the supplementary
groups, sets the owner's primary gid, then uid (docs/security.md), and only then
execs C{cmd}, so the program is looked up and checked with the owner's rights
alone (L{hookspec.argv}).  C{Popen(user=...)} would make the same calls but must fork
the whole daemon (its page tables: milliseconds per 100 MB, on the reactor);
C{setpriv} keeps root's capabilities until its exec; C{spawnProcess(uid=...)}
calls initgroups.  Twisted reaps the child and reads its output as for any
process it spawned (L{_PopenProcess}).

stdin is the stored file, opened by the daemon with L{safefs.open_owned}: no
symlink followed below the mailbox directory, no blocking on a FIFO, and only a
regular file of the user the hook runs as; anything else gives empty stdin
(C{/dev/null}) and a warning, a missing file gives it silently.  The reactor
never reads it.
"""

import errno
import functools
import os
import shutil
import signal
import stat
import subprocess
from datetime import datetime, timezone

import attrs
from twisted.internet import defer, process, task
from twisted.internet.protocol import ProcessProtocol

from aimx.idle import Pending
from aimx.core import audit, events, hookspec
from aimx.core.config import MailboxConfig
from aimx.core.hookspec import HookEvent
from aimx.logs import Logger
from aimx.store import passwd, safefs

log = Logger(namespace="aimx.hook")

#: Bytes of stdout and of stderr kept (the last ones).
OUTPUT_CAP = 65536
#: Seconds between SIGTERM and SIGKILL at a timeout.
KILL_GRACE = 5
#: A fire taking longer than this (and not timed out) is logged as slow.
SLOW_MS = 5000
#: Default number of hook processes running at once.
MAX_PROCESSES = 16
#: Senders whose fires are remembered before the ones with none left in the hour go.
RATE_SWEEP = 10_000
#: Where a root daemon looks for unshare (not in the daemon's PATH).
UNSHARE_PATH = "/usr/bin:/bin"


class _PopenProcess(process.Process):
    """A Twisted process transport whose child L{subprocess.Popen} starts.

    Twisted makes the output pipes, reads them, reaps the child on SIGCHLD and
    calls C{processEnded} once both are done, as for C{spawnProcess}; only the
    start is Popen's: chdir, setsid and closing the other descriptors happen in C
    between vfork and exec, where Twisted's posix_spawn path can do neither chdir
    nor setsid and its fork path runs Python in a forked copy of the daemon.
    An exec or chdir failure raises here, from the child's error pipe.
    """

    def __init__(self, reactor, argv, env, cwd, proto, stdin: int):
        super().__init__(reactor, argv[0], argv, env, cwd, proto,
                         childFDs={0: stdin, 1: "r", 2: "r"})

    def _fork(self, path, uid, gid, executable, args, environment, fdmap):
        # Process.__init__ starts the child here, between making the pipes and
        # registering the pid for reaping.
        self._popen = subprocess.Popen(
            args, stdin=fdmap[0], stdout=fdmap[1], stderr=fdmap[2], cwd=path,
            env=environment, close_fds=True, start_new_session=True,
        )
        self.pid = self._popen.pid

    def processEnded(self, status):
        # Reaped by Twisted: Popen must never wait for this pid (it may be reused).
        self._popen.returncode = os.waitstatus_to_exitcode(status)
        super().processEnded(status)


def spawn_process(reactor, protocol, argv: list[str], *, env: dict, cwd: str,
                  stdin: int) -> None:
    """Start C{argv} in C{cwd} in a new session, connected to C{protocol}.

    @param stdin: the child's descriptor 0 (the caller still closes its own).
    @raise OSError: the chdir or the exec failed (C{filename} says which).
    @raise ValueError: a NUL in C{argv}.
    """
    _PopenProcess(reactor, argv, env, cwd, protocol, stdin)


@attrs.frozen
class HookResult:
    """The outcome of one fire: logged, and never changes what the caller does.

    @ivar exit_code: the exit status; -1 when killed by a signal or not run.
    @ivar duration_ms: from the start of this hook's dispatch to reaping.
    @ivar sandbox: C{setuid}, or C{-} when the hook was not run.
    @ivar stdout: the last L{OUTPUT_CAP} bytes.
    @ivar stderr: the last L{OUTPUT_CAP} bytes.
    @ivar error: C{(kind, message)} of an exec error (C{user-not-found},
        C{spawn-failed}), else L{None}.
    """

    hook: str
    exit_code: int
    duration_ms: int
    timed_out: bool = False
    sandbox: str = "-"
    stdout: bytes = b""
    stderr: bytes = b""
    error: tuple[str, str] | None = None


class ProcessGroups:
    """Signals process groups and tells whether anything of one still runs."""

    def signal(self, pgid: int, signum: int) -> bool:
        """Signal a group; C{False} when it has no member left."""
        try:
            os.killpg(pgid, signum)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # a member changed identity (a setuid program); it is still there
        return True

    def alive(self, pgid: int) -> bool:
        """Whether the group has a member that is not a zombie.

        Zombies count for C{killpg} until their new parent reaps them, yet no
        signal can touch them; so a group that answers is looked for in C{/proc}.
        """
        if not self.signal(pgid, 0):
            return False
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    state, _, group = f.read().rsplit(b")", 1)[1].split()[:3]
            except (OSError, ValueError):
                continue
            if state != b"Z" and int(group) == pgid:
                return True
        return False


class HookProtocol(ProcessProtocol):
    """One hook process: keeps the output tails, enforces the timeout.

    At the deadline (C{timeout} seconds after spawn) the whole process group gets
    SIGTERM, and SIGKILL L{KILL_GRACE} seconds later if anything of it is left.
    A group that outlives its leader (a detached grandchild) is still signalled at
    the deadline, so nothing a hook starts outlives its timeout.

    @ivar ended: fires with this protocol once the process has exited and its
        pipes are closed.
    @ivar gone: fires once nothing of the process group is left to signal.
    @ivar output: the kept bytes of stdout (1) and stderr (2).
    """

    def __init__(self, timeout: float, clock, groups: ProcessGroups):
        self.timeout = timeout
        self.clock = clock
        self.groups = groups
        self.output = {1: bytearray(), 2: bytearray()}
        self.exit_code = -1
        self.timed_out = False
        self.ended = defer.Deferred()
        self.gone = defer.Deferred()
        self._timer = None

    def connectionMade(self):
        self.pgid = self.transport.pid
        self._timer = self.clock.callLater(self.timeout, self._terminate)

    def childDataReceived(self, childFD, data):
        kept = self.output[childFD]
        kept += data
        if len(kept) > OUTPUT_CAP:
            del kept[:-OUTPUT_CAP]

    def processEnded(self, reason):
        if reason.value.exitCode is not None:  # None: killed by a signal
            self.exit_code = reason.value.exitCode
        if not (self._timer.active() and self.groups.alive(self.pgid)):
            if self._timer.active():
                self._timer.cancel()
            self._gone()
        self.ended.callback(self)

    def _terminate(self):
        self.timed_out = not self.ended.called
        if self.groups.signal(self.pgid, signal.SIGTERM):
            self._timer = self.clock.callLater(KILL_GRACE, self._kill)
        else:
            self._gone()

    def _kill(self):
        self.groups.signal(self.pgid, signal.SIGKILL)
        self._gone()

    def _gone(self):
        if not self.gone.called:
            self.gone.callback(None)


class SenderRates:
    """When each sender's mail last fired a mailbox's hooks, for C{hook_rate_per_sender}.

    In memory only (docs/guardrails.md, "Hook rate"): a restart starts every
    window afresh.  A sender with no fire in the last hour is forgotten (all of
    them once more than L{RATE_SWEEP} are remembered).
    """

    def __init__(self):
        self._fired: dict[tuple[str, str], list[float]] = {}

    def admit(self, mailbox: str, sender: str, now: float, per_hour: int) -> bool:
        """Whether C{sender}'s mail may fire C{mailbox}'s hooks at C{now}; counts it if so."""
        key = (mailbox, sender)
        fired = [t for t in self._fired.get(key, ()) if t > now - hookspec.HOUR]
        allowed = hookspec.rate_allows(fired, now, per_hour)
        if allowed:
            fired.append(now)
        if fired:
            self._fired[key] = fired
        else:
            self._fired.pop(key, None)
        if len(self._fired) > RATE_SWEEP:
            self._fired = {k: v for k, v in self._fired.items() if v[-1] > now - hookspec.HOUR}
        return allowed


class HookRunner:
    """Fires the hooks of mailbox events; see the module docstring.

    @param reactor: runs the processes (L{spawn_process}).
    @param config: returns the live configuration (data dir, catchall domain).
    @param environ: the daemon's environment; only C{PATH} and C{HOME} reach hooks
        (C{HOME} is the owner's own when the hook drops to the owner).
    @param clock: times fires and timeouts; the reactor by default.
    @param max_processes: hook processes running at once; further hooks queue.
    @param resolve_owner: owner name -> L{aimx.store.passwd.Owner}, per fire.
    @param resolve_home: owner name -> home directory or C{None}, per fire.
    @param euid: the daemon's effective uid; only root drops to the owner.
    @param groups: signals hook process groups.
    @param audit: C{record -> None} for each inbound verdict (L{aimx.auditlog}),
        or C{None}.
    @param spawn: L{spawn_process} without its reactor.
    @param unshare_path: where to find C{unshare}, which a root daemon drops
        privileges with; without it a root daemon runs no hook of another owner.
    @param webhooks: spools the C{type = "webhook"} hooks' events
        (L{aimx.webhooks.Webhooks}); C{None}: they are skipped.
    """

    def __init__(
        self,
        reactor,
        *,
        config,
        environ,
        clock=None,
        max_processes: int = MAX_PROCESSES,
        resolve_owner=passwd.owner,
        resolve_home=passwd.home,
        euid: int | None = None,
        groups: ProcessGroups = ProcessGroups(),
        audit=None,
        spawn=None,
        unshare_path: str = UNSHARE_PATH,
        webhooks=None,
    ):
        self.reactor = reactor
        self.config = config
        self.environ = environ
        self.clock = reactor if clock is None else clock
        self.slots = defer.DeferredSemaphore(max_processes)
        self.resolve_owner = resolve_owner
        self.resolve_home = resolve_home
        self.euid = os.geteuid() if euid is None else euid
        self.groups = groups
        self.audit = audit
        self.rates = SenderRates()
        self.spawn = functools.partial(spawn_process, reactor) if spawn is None else spawn
        self.unshare = shutil.which("unshare", path=unshare_path)
        self.unshare_path = unshare_path
        self.webhooks = webhooks
        self._pending = Pending()

    def on_received(self, ingested) -> defer.Deferred:
        """Decide and record which on_receive hooks fire for one published message,
        then fire them.

        The hooks start on the next turn of the reactor, so not even their spawn
        comes before the SMTP reply of this delivery.  A sender past the mailbox's
        C{hook_rate_per_sender} fires none (its mail is stored all the same).

        @param ingested: an L{aimx.smtp.inbound.Ingested}, not a duplicate.
        @return: fires with the L{HookResult}s when all are done (C{aimx ingest}
            waits for it; the daemon does not).
        """
        parsed, stored, mailbox = ingested.parsed, ingested.stored, ingested.mailbox
        event = HookEvent(
            events.ON_RECEIVE,
            mailbox,
            filepath=stored.path,
            id=stored.id,
            from_=parsed.from_,
            to=parsed.to,
            subject=parsed.subject,
            message_id=parsed.message_id,
            date=parsed.date or stored.received_at,
            trusted=ingested.trusted,
            risk="review" if ingested.risk_reasons else None,
        )
        author = parsed.identity.author
        sender = author.address if author is not None else (
            ingested.prepared.envelope.mail_from or "").lower()
        planned = hookspec.plan(event, self.config().domain)
        rate = mailbox.hook_rate_per_sender
        if rate is not None and hookspec.fires(planned) and not self.rates.admit(
                mailbox.name, sender, self.clock.seconds(), rate.per_hour):
            planned = hookspec.over_rate(planned)
            for p in planned:
                if p.skipped == hookspec.RATE:
                    log.info("hook skipped", hook_name=p.hook.name, event=event.event,
                             mailbox=mailbox.name, skipped=hookspec.RATE, sender=sender,
                             per_hour=rate.per_hour, email_id=stored.id)
        if self.audit is not None:
            self.audit(audit.inbound(ingested, planned, sender))
        started = task.deferLater(self.clock, 0, self.dispatch, event, planned)
        self._pending.track(started)
        return started

    def after_send(
        self,
        mailbox: MailboxConfig,
        status: str,
        *,
        from_: str,
        to: str,
        subject: str,
        message_id: str,
        filepath: str = "",
    ) -> defer.Deferred:
        """Fire the sending mailbox's after_send hooks (no trust gate).

        @param status: C{delivered}, C{failed}, C{deferred} or C{partial}
            (C{AIMX_SEND_STATUS}).
        @param from_: the raw C{From:} header of the submission.
        @param to: the raw C{To:} header.
        @param message_id: the outbound Message-ID, with C{<>}.
        @param filepath: the sent copy; C{""} when none was written.
        @return: fires with the L{HookResult}s once all hooks have finished; the
            send result goes back to the client after that.
        """
        now = datetime.fromtimestamp(self.clock.seconds(), timezone.utc)
        return self.dispatch(
            hookspec.sent(
                mailbox, status, from_=from_, to=to, subject=subject,
                message_id=message_id, filepath=filepath, now=now,
            )
        )

    def dispatch(self, event: HookEvent, planned=None) -> defer.Deferred:
        """Fire the hooks of one event one after another; never fails.

        @param planned: which hooks fire (L{hookspec.plan}); planned here when C{None}.
        @return: fires with the L{HookResult} of each hook that was run.
        """
        done = defer.Deferred.fromCoroutine(self._dispatch(event, planned))
        self._pending.track(done)
        return done

    def idle(self) -> defer.Deferred:
        """Fires once no hook is queued or running and no hook process is left."""
        return self._pending.idle()

    async def _dispatch(self, event: HookEvent, planned) -> list[HookResult]:
        config, mailbox = self.config(), event.mailbox
        if planned is None:
            planned = hookspec.plan(event, config.domain)
        if planned and planned[0].skipped == hookspec.CATCHALL:
            log.warn("hooks on the catchall are forbidden, not fired",
                     mailbox=mailbox.name, hooks=len(mailbox.hooks))
            return []
        if not planned:
            log.info("no hooks", event=event.event, mailbox=mailbox.name)
        results = []
        for hook, skipped in ((p.hook, p.skipped) for p in planned):
            if skipped in (hookspec.TRUST, hookspec.RISK):
                gate = ({"trusted": event.trusted, "fire_on_untrusted": False}
                        if skipped == hookspec.TRUST
                        else {"risk": event.risk, "fire_on_review": False})
                log.info("hook skipped", hook_name=hook.name, event=event.event,
                         mailbox=mailbox.name, skipped=skipped, **gate, email_id=event.id)
                continue
            if skipped == hookspec.ARGV:
                log.warn("hook not fired", hook_name=hook.name, mailbox=mailbox.name,
                         reason=hookspec.argv_error(hook))
                continue
            if skipped is not None:
                continue  # the sender's rate: logged when planned (on_received)
            if hook.disabled or hook.type == "webhook":
                await self._spool(event, hook)
                continue
            await self.slots.acquire()
            try:
                results.append(await self._fire(event, hook, config.data_dir))
            except Exception:
                log.failure("hook fire crashed", hook_name=hook.name, mailbox=mailbox.name)
            finally:
                self.slots.release()
        return results

    async def _spool(self, event: HookEvent, hook) -> None:
        """A webhook's event goes to its spool (docs/hooks.md, "Webhooks"); a disabled
        hook's goes nowhere."""
        if hook.disabled or self.webhooks is None:
            log.info("hook skipped", hook_name=hook.name, event=event.event,
                     mailbox=event.mailbox.name,
                     skipped="disabled" if hook.disabled else "no webhook delivery",
                     email_id=event.id)
            return
        try:
            await self.webhooks.enqueue(event, hook)
        except Exception:
            log.failure("webhook not queued", hook_name=hook.name, mailbox=event.mailbox.name)

    async def _fire(self, event: HookEvent, hook, data_dir: str) -> HookResult:
        start = self.clock.seconds()
        owner_name = event.mailbox.owner
        log.info(
            "firing",
            hook_name=hook.name,
            event=event.event,
            mailbox=event.mailbox.name,
            owner=owner_name,
        )
        owner = self.resolve_owner(owner_name)
        drop = home = None
        if owner.uid is None:
            if self.euid == 0:
                error = ("user-not-found", f"user '{owner_name}' not found on this host")
                return self._report(event, hook, start, error=error)
            log.warn("hook owner not found, running the hook as the daemon's user",
                     hook_name=hook.name, mailbox=event.mailbox.name, owner=owner_name)
        elif self.euid == 0 and owner.uid != 0:
            drop = (owner.uid, owner.gid)
            home = self.resolve_home(owner_name)
            why = self._unrunnable(hook.cmd[0], owner_name)
            if why is not None:
                return self._report(event, hook, start, error=("spawn-failed", why))
        box = "inbox" if event.event == events.ON_RECEIVE else "sent"
        cwd = os.path.join(data_dir, box, event.mailbox.name)
        protocol = HookProtocol(hook.timeout_secs, self.clock, self.groups)
        stdin = self._stdin(event, hook, cwd, self.euid if drop is None else drop[0])
        try:
            self.spawn(
                protocol,
                hookspec.argv(hook.cmd, drop, self.unshare),
                env=hookspec.environment(event, hook, self.environ, home=home),
                cwd=cwd,
                stdin=stdin,
            )
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            return self._report(event, hook, start, error=("spawn-failed", _failure(e, cwd)))
        finally:
            os.close(stdin)
        self._pending.track(protocol.gone)
        await protocol.ended
        return self._report(event, hook, start, protocol)

    def _unrunnable(self, program: str, owner: str) -> str | None:
        """Why a hook cannot be started through unshare, checked before it is.

        unshare's failure to exec would only be its exit status (126/127) and a
        line on the hook's stderr, so a missing or non-executable program is
        reported here as an exec error, as a direct spawn's is.  What only the
        owner's rights reveal (a directory they cannot search) still ends as
        unshare's exit status and message.
        """
        if self.unshare is None:
            return f"unshare (util-linux) not found in {self.unshare_path}: cannot run as {owner}"
        try:
            st = os.stat(program)
        except OSError as e:
            return f"exec {program}: {e.strerror}"
        if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o111:
            return f"exec {program}: {os.strerror(errno.EACCES)}"
        return None

    def _stdin(self, event: HookEvent, hook, cwd: str, uid: int) -> int:
        """A descriptor for the hook's stdin: the stored file when it is C{uid}'s own
        regular file (L{safefs.open_owned}), else C{/dev/null}."""
        if event.filepath:
            try:
                return safefs.open_owned(cwd, os.path.relpath(event.filepath, cwd), uid)
            except FileNotFoundError:
                pass
            except (safefs.Refused, OSError) as e:
                log.warn(
                    "hook stdin not opened, piping an empty payload",
                    hook_name=hook.name,
                    mailbox=event.mailbox.name,
                    path=event.filepath,
                    error=str(e) if isinstance(e, safefs.Refused) else e.strerror,
                )
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    def _report(self, event, hook, start, protocol=None, error=None) -> HookResult:
        """Build the result and log it (one event, docs/hooks.md "What the log says")."""
        duration_ms = int((self.clock.seconds() - start) * 1000)
        if protocol is None:
            result = HookResult(hook.name, -1, duration_ms, error=error)
        else:
            result = HookResult(
                hook.name,
                protocol.exit_code,
                duration_ms,
                protocol.timed_out,
                "setuid",
                bytes(protocol.output[1]),
                bytes(protocol.output[2]),
            )
        fields = hookspec.result_fields(
            event,
            hook,
            sandbox=result.sandbox,
            exit_code=result.exit_code,
            duration_ms=duration_ms,
            timed_out=result.timed_out,
            stderr=result.stderr,
        )
        # One event per fire; what went wrong raises it to a warning.
        if error is not None:
            fields.update(exec_error=error[0], error=error[1])
        if result.timed_out:
            fields["timeout_ms"] = hook.timeout_secs * 1000
        elif duration_ms > SLOW_MS:
            fields["slow"] = True
        wrong = error is not None or result.exit_code != 0 or "timeout_ms" in fields
        (log.warn if wrong or "slow" in fields else log.info)("hook result", **fields)
        return result



def _failure(error: Exception, cwd: str) -> str:
    """The text of a failed spawn: which step (Popen names the path) and why."""
    if isinstance(error, OSError) and error.filename is not None:
        step = "chdir" if error.filename == cwd else "exec"
        return f"{step} {error.filename}: {error.strerror}"
    return str(error)
