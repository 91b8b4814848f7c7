"""Real hook processes under the real reactor (aimx.hooks): environment, stdin, outcomes,
order, identity; each test spawns /bin/sh hooks in a scratch data dir.

The process protocol, the queue and the timeouts on a clock are in tests.test_hooks.
"""

import grp
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
from datetime import datetime

from twisted.internet import defer, reactor, task
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from aimx import hooks
from aimx.core import events
from aimx.core.config import Config, MailboxConfig, derive_hook_name, make_hook
from aimx.logs import event_line
from aimx.ops import logline
from aimx.core.hookspec import HookEvent
from aimx.hooks import HookRunner, ProcessGroups
from tests.test_hooks import DOMAIN, sh


STEM = "2025-01-01-000000-hello-world"
STORED = b"+++\nid = \"" + STEM.encode() + b"\"\nsubject = \"Hello World\"\n+++\n\nHi there.\n"
PATH = "/usr/local/bin:/usr/bin:/bin"
SECRET = b"ROOT-ONLY-SECRET\n"


class ProcessGroupsTests(SynchronousTestCase):
    """Process groups of real children: zombies and groups that are gone."""

    def test_zombie_group(self):
        """A group whose only member is a zombie is not alive, nor signalled."""
        child = subprocess.Popen(["/bin/true"], start_new_session=True)
        self.addCleanup(child.wait)
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        self.assertTrue(ProcessGroups().signal(child.pid, 0))
        self.assertFalse(ProcessGroups().alive(child.pid))

    def test_no_group(self):
        """A group that does not exist is neither alive nor signalled."""
        child = subprocess.Popen(["/bin/true"], start_new_session=True)
        child.wait()
        self.assertFalse(ProcessGroups().signal(child.pid, signal.SIGTERM))
        self.assertFalse(ProcessGroups().alive(child.pid))


class ProcessTestCase(TestCase):
    """Real hook processes under the real reactor, in a scratch data dir."""

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="aimx-hooks-")
        self.addCleanup(shutil.rmtree, self.root, True)
        os.chmod(self.root, 0o755)
        self.data_dir = os.path.join(self.root, "data")
        self.out = os.path.join(self.root, "out")
        os.makedirs(self.out)
        os.chmod(self.out, 0o777)
        # Traversable like /var/lib/aimx, whatever umask an earlier test left.
        for box in ("inbox", "sent"):
            os.makedirs(os.path.join(self.data_dir, box, "alice"), mode=0o755)
            for path in (self.data_dir, os.path.join(self.data_dir, box)):
                os.chmod(path, 0o755)
        self.stored = os.path.join(self.data_dir, "inbox", "alice", STEM + ".md")
        with open(self.stored, "wb") as f:
            f.write(STORED)
        self.owner = pwd.getpwuid(os.geteuid()).pw_name
        self.environ = {"PATH": PATH, "HOME": "/daemon-home", "AIMX_LEAK_SENTINEL_HOOK": "leaked"}
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def mailbox(self, *hook_list, name="alice", owner=None, address=None) -> MailboxConfig:
        return MailboxConfig(
            name, address or f"{name}@{DOMAIN}", owner or self.owner, hooks=hook_list
        )

    def runner(self, mailbox: MailboxConfig, **kwargs) -> HookRunner:
        config = Config(DOMAIN, data_dir=self.data_dir, mailboxes=[mailbox])
        runner = HookRunner(reactor, config=lambda: config, environ=self.environ, **kwargs)
        self.addCleanup(runner.idle)
        return runner

    def received(self, mailbox: MailboxConfig, trusted="none", **values) -> HookEvent:
        fields = dict(
            filepath=self.stored, id=STEM, from_="alice@gmail.com", to="alice@test.com",
            subject="Hello World", message_id="m1@gmail.com", date="2025-01-01T00:00:00Z",
        )
        fields.update(values)
        return HookEvent(events.ON_RECEIVE, mailbox, trusted=trusted, **fields)

    def fire(self, mailbox: MailboxConfig, trusted="none", **values) -> defer.Deferred:
        """Fire the mailbox's on_receive hooks for the stored message."""
        return self.runner(mailbox).dispatch(self.received(mailbox, trusted, **values))

    def path(self, name: str) -> str:
        return os.path.join(self.out, name)

    def read(self, name: str) -> bytes:
        with open(self.path(name), "rb") as f:
            return f.read()

    def lines(self) -> list[str]:
        return [event_line(e, journal=True) for e in self.events
                if e.get("log_namespace") == "aimx.hook"]

    def line(self, needle: str) -> str:
        [found] = [line for line in self.lines() if needle in line]
        return found

    def result(self, hook_name: str) -> logline.Line:
        """The logged result of the hook C{hook_name}'s run, read back."""
        [found] = [line for line in map(logline.read, self.lines())
                   if line.message == "hook result" and line.fields["hook_name"] == hook_name]
        return found


class GateAndEnvironmentTests(ProcessTestCase):
    """Which hooks run, and what they are given (hooks.md cases 1-5)."""

    @defer.inlineCallbacks
    def test_trust_gate(self):
        """Default hooks fire only on trusted mail; fire_on_untrusted always (case 1)."""
        cases = [("true", False, True), ("none", False, False), ("none", True, True),
                 ("false", True, True), ("false", False, False)]
        for i, (trusted, flag, fires) in enumerate(cases):
            hook = make_hook("on_receive", sh('touch "$0"', self.path(f"M{i}")),
                             fire_on_untrusted=flag)
            yield self.fire(self.mailbox(hook), trusted)
            self.assertEqual(os.path.exists(self.path(f"M{i}")), fires, (trusted, flag))

    @defer.inlineCallbacks
    def test_gated_hook_logged(self):
        """A gated hook logs why it did not fire, with the message id."""
        hook = make_hook("on_receive", ["/bin/true"], name="quiet")
        yield self.fire(self.mailbox(hook), "none")
        self.assertEqual(
            self.line("skipped"),
            f"<6>aimx.hook: hook skipped hook_name=quiet event=on_receive mailbox=alice "
            f"skipped=trust trusted=none fire_on_untrusted=false email_id={STEM}",
        )

    @defer.inlineCallbacks
    def test_no_hooks_logged(self):
        """A mailbox without on_receive hooks says so."""
        yield self.fire(self.mailbox(make_hook("after_send", ["/bin/true"])), "true")
        self.assertIn("<6>aimx.hook: no hooks event=on_receive mailbox=alice", self.lines())

    @defer.inlineCallbacks
    def test_environment(self):
        """The env is PATH, HOME and the AIMX_* values; no leak, no SEND_STATUS (cases 2, 4)."""
        hook = make_hook("on_receive", ["/usr/bin/env"], name="hook_explicit",
                         fire_on_untrusted=True)
        [result] = yield self.fire(self.mailbox(hook))
        env = dict(line.split("=", 1) for line in result.stdout.decode().splitlines())
        self.assertEqual(
            env,
            {
                "PATH": PATH,
                "HOME": "/daemon-home",
                "AIMX_HOOK_NAME": "hook_explicit",
                "AIMX_EVENT": "on_receive",
                "AIMX_MAILBOX": "alice",
                "AIMX_FROM": "alice@gmail.com",
                "AIMX_TO": "alice@test.com",
                "AIMX_SUBJECT": "Hello World",
                "AIMX_FILEPATH": self.stored,
                "AIMX_MESSAGE_ID": "m1@gmail.com",
                "AIMX_ID": STEM,
                "AIMX_DATE": "2025-01-01T00:00:00Z",
            },
        )

    @defer.inlineCallbacks
    def test_derived_name(self):
        """An unnamed hook sees its §2 derived name (case 3)."""
        cmd = sh('printf %s "$AIMX_HOOK_NAME"')
        hook = make_hook("on_receive", cmd, fire_on_untrusted=True)
        [result] = yield self.fire(self.mailbox(hook))
        self.assertEqual(result.stdout.decode(), derive_hook_name("on_receive", cmd, True))

    @defer.inlineCallbacks
    def test_working_directory(self):
        """on_receive hooks run in the mailbox's inbox directory."""
        hook = make_hook("on_receive", ["/bin/pwd"], fire_on_untrusted=True)
        [result] = yield self.fire(self.mailbox(hook))
        self.assertEqual(result.stdout.decode().strip(), os.path.dirname(self.stored))

    @defer.inlineCallbacks
    def test_stdin_is_the_file(self):
        """stdin is byte-identical to the stored .md (case 5)."""
        hook = make_hook("on_receive", sh('cat > "$0"', self.path("OUT")), fire_on_untrusted=True)
        yield self.fire(self.mailbox(hook))
        self.assertEqual(self.read("OUT"), STORED)

    @defer.inlineCallbacks
    def test_stdin_ignored(self):
        """A hook that never reads a large stdin still finishes with exit 0 (case 5)."""
        with open(self.stored, "wb") as f:
            f.write(b"x" * (4 * 1024 * 1024))
        hook = make_hook("on_receive", ["/bin/true"], fire_on_untrusted=True)
        [result] = yield self.fire(self.mailbox(hook))
        self.assertEqual((result.exit_code, result.timed_out), (0, False))

    @defer.inlineCallbacks
    def test_missing_file_empty_stdin(self):
        """A stored file that has gone gives empty stdin, not an error."""
        os.unlink(self.stored)
        hook = make_hook("on_receive", ["/bin/cat"], fire_on_untrusted=True)
        [result] = yield self.fire(self.mailbox(hook))
        self.assertEqual((result.exit_code, result.stdout), (0, b""))

    @defer.inlineCallbacks
    def test_only_standard_descriptors(self):
        """The hook inherits stdin, stdout and stderr only, not even a descriptor the
        daemon left inheritable."""
        leaked = os.open(os.devnull, os.O_RDONLY)
        self.addCleanup(os.close, leaked)
        os.set_inheritable(leaked, True)
        hook = make_hook("on_receive", sh("ls /proc/$$/fd"), fire_on_untrusted=True)
        [result] = yield self.fire(self.mailbox(hook))
        self.assertEqual(result.stdout.split(), [b"0", b"1", b"2"])

    @defer.inlineCallbacks
    def test_new_session(self):
        """The hook leads a new session and its own process group (sid == pgid == pid)."""
        hook = make_hook("on_receive", sh("cat /proc/$$/stat"), fire_on_untrusted=True)
        [result] = yield self.fire(self.mailbox(hook))
        self.assertEqual(session(result.stdout), 3 * [int(result.stdout.split()[0])])

    @defer.inlineCallbacks
    def test_default_signal_dispositions(self):
        """SIGPIPE and SIGXFSZ, which Python ignores in the daemon, are not ignored in the hook."""
        hook = make_hook("on_receive", sh("grep SigIgn /proc/$$/status"), fire_on_untrusted=True)
        [result] = yield self.fire(self.mailbox(hook))
        ignored = int(result.stdout.split()[1], 16)
        self.assertFalse(ignored & (1 << (signal.SIGPIPE - 1)))
        self.assertFalse(ignored & (1 << (signal.SIGXFSZ - 1)))


class HostileInputTests(ProcessTestCase):
    """Header text reaches hooks literally and executes nothing."""

    subject = "$(touch {canary}) `touch {canary}` 'q' \"d\" ${{HOME}}\nnext\0line; touch {canary}"

    @defer.inlineCallbacks
    def test_values_literal(self):
        """$(), backticks, quotes, newlines in Subject/From arrive verbatim; NUL is dropped."""
        canary = self.path("PWNED")
        subject = self.subject.format(canary=canary)
        from_ = f'"$(touch {canary})" <a`touch {canary}`@x.com>'
        hook = make_hook(
            "on_receive",
            sh('printf %s "$AIMX_SUBJECT" > "$0"; printf %s "$AIMX_FROM" > "$1"',
               self.path("S"), self.path("F")),
            fire_on_untrusted=True,
        )
        yield self.fire(self.mailbox(hook), subject=subject, from_=from_)
        self.assertEqual(self.read("S").decode(), subject.replace("\0", ""))
        self.assertEqual(self.read("F").decode(), from_)
        self.assertFalse(os.path.exists(canary))

    @defer.inlineCallbacks
    def test_argv_not_expanded(self):
        """$AIMX_SUBJECT inside an argv element reaches the program literally."""
        hook = make_hook("on_receive", ["/bin/echo", "$AIMX_SUBJECT", "$(id)"],
                         fire_on_untrusted=True)
        [result] = yield self.fire(self.mailbox(hook))
        self.assertEqual(result.stdout, b"$AIMX_SUBJECT $(id)\n")


class OutcomeTests(ProcessTestCase):
    """Exit codes, output, timeouts and their log lines (cases 6-10)."""

    @defer.inlineCallbacks
    def test_success_line(self):
        """The structured line of a successful fire (case 9)."""
        hook = make_hook("on_receive", ["/bin/true"], name="ok", fire_on_untrusted=True)
        yield self.fire(self.mailbox(hook))
        line = self.line("exit_code=")
        self.assertRegex(
            line,
            f"^<6>aimx.hook: hook result hook_name=ok event=on_receive mailbox=alice "
            f"owner={self.owner} sandbox=setuid email_id={STEM} exit_code=0 "
            'duration_ms=[0-9]+ timed_out=false stderr_tail=""$',
        )
        self.assertIn("<6>aimx.hook: firing hook_name=ok event=on_receive mailbox=alice",
                      self.lines()[0])
        [event] = [e for e in self.events if "duration_ms" in e]
        self.assertEqual(
            {k: event[k] for k in ("hook_name", "mailbox", "event", "email_id", "exit_code",
                                   "timed_out")},
            {"hook_name": "ok", "mailbox": "alice", "event": "on_receive", "email_id": STEM,
             "exit_code": 0, "timed_out": False},
        )

    @defer.inlineCallbacks
    def test_nonzero_exit(self):
        """Exit 3 with stderr boom: exit_code=3, stderr_tail, and a warning (case 8)."""
        hook = make_hook("on_receive", sh("echo boom >&2; exit 3"), name="b", fire_on_untrusted=True)
        [result] = yield self.fire(self.mailbox(hook))
        self.assertEqual((result.exit_code, result.stderr), (3, b"boom\n"))
        line = self.line("stderr_tail=")
        self.assertTrue(line.startswith("<4>aimx.hook: hook result hook_name=b "), line)
        self.assertIn('exit_code=3 duration_ms=', line)
        self.assertTrue(line.endswith('stderr_tail="boom\\n"'), line)

    @defer.inlineCallbacks
    def test_large_output(self):
        """100 KiB on stdout and on stderr: no deadlock, the tails are kept (case 7)."""
        script = "yes out | head -c 102400; printf END; yes err | head -c 102400 >&2; printf TAIL >&2"
        hook = make_hook("on_receive", sh(script), fire_on_untrusted=True)
        [result] = yield self.fire(self.mailbox(hook))
        self.assertEqual(result.exit_code, 0)
        self.assertEqual(len(result.stdout), hooks.OUTPUT_CAP)
        self.assertTrue(result.stdout.endswith(b"out\nEND"))
        self.assertTrue(result.stderr.endswith(b"err\nTAIL"))
        tail = self.line("stderr_tail=").split("stderr_tail=", 1)[1]
        self.assertIn("...", tail)
        self.assertTrue(tail.endswith('err\\nTAIL"'))

    @defer.inlineCallbacks
    def test_timeout(self):
        """timeout_secs = 1 stops `sleep 5 && touch M` before it touches M, logged (case 6)."""
        hook = make_hook("on_receive", sh('sleep 5 && touch "$0"', self.path("M")),
                         name="slow", fire_on_untrusted=True, timeout_secs=1)
        [result] = yield self.fire(self.mailbox(hook))
        self.assertEqual((result.timed_out, result.exit_code), (True, -1))
        line = self.line("stderr_tail=")
        self.assertTrue(line.startswith("<4>aimx.hook: hook result hook_name=slow "), line)
        self.assertIn("timed_out=true", line)
        self.assertTrue(line.endswith(" timeout_ms=1000"), line)
        self.assertFalse(os.path.exists(self.path("M")))

    @defer.inlineCallbacks
    def test_term_ignored(self):
        """A group ignoring SIGTERM is killed the grace period after the timeout (case 6)."""
        self.patch(hooks, "KILL_GRACE", 1)
        hook = make_hook("on_receive", sh("trap '' TERM; sleep 30"), fire_on_untrusted=True,
                         timeout_secs=1)
        start = reactor.seconds()
        [result] = yield self.fire(self.mailbox(hook))
        self.assertGreaterEqual(reactor.seconds() - start, 1.9)
        self.assertEqual((result.timed_out, result.exit_code), (True, -1))

    @defer.inlineCallbacks
    def test_detached_grandchild_killed(self):
        """A grandchild left running by a hook that exited is gone after the timeout."""
        self.patch(hooks, "KILL_GRACE", 1)
        hook = make_hook(
            "on_receive", sh('sleep 30 </dev/null >/dev/null 2>&1 & echo $! > "$0"', self.path("PID")),
            fire_on_untrusted=True, timeout_secs=1,
        )
        mailbox = self.mailbox(hook)
        runner = self.runner(mailbox)
        [result] = yield runner.dispatch(self.received(mailbox))
        self.assertEqual((result.exit_code, result.timed_out), (0, False))
        pid = int(self.read("PID"))
        self.assertTrue(running(pid))
        yield runner.idle()
        self.assertFalse(running(pid))

    @defer.inlineCallbacks
    def test_grandchild_holding_pipes(self):
        """A grandchild holding the output pipes makes the fire time out, and is killed."""
        hook = make_hook("on_receive", sh('sleep 30 & echo $! > "$0"', self.path("PID")),
                         fire_on_untrusted=True, timeout_secs=1)
        mailbox = self.mailbox(hook)
        runner = self.runner(mailbox)
        [result] = yield runner.dispatch(self.received(mailbox))
        self.assertTrue(result.timed_out)
        yield runner.idle()
        self.assertFalse(running(int(self.read("PID"))))

    @defer.inlineCallbacks
    def test_missing_executable(self):
        """A missing program is logged as an exec error and the next hook still runs."""
        mailbox = self.mailbox(
            make_hook("on_receive", ["/nonexistent/hook"], name="gone", fire_on_untrusted=True),
            make_hook("on_receive", sh('touch "$0"', self.path("NEXT")), fire_on_untrusted=True),
        )
        results = yield self.fire(mailbox)
        self.assertEqual(results[0].error[0], "spawn-failed")
        line = self.line("hook result hook_name=gone")
        self.assertTrue(line.startswith("<4>aimx.hook: hook result "), line)
        self.assertIn("sandbox=- email_id=", line)
        self.assertIn("exit_code=-1", line)
        self.assertTrue(line.endswith(
            'exec_error=spawn-failed error="exec /nonexistent/hook: No such file or directory"'
        ), line)
        self.assertTrue(os.path.exists(self.path("NEXT")))

    @defer.inlineCallbacks
    def test_missing_directory(self):
        """A mailbox directory that has gone is an exec error naming the chdir."""
        box = os.path.dirname(self.stored)
        shutil.rmtree(box)
        hook = make_hook("on_receive", ["/bin/true"], name="nodir", fire_on_untrusted=True)
        [result] = yield self.fire(self.mailbox(hook))
        self.assertEqual(result.error[0], "spawn-failed")
        self.assertEqual(
            (self.result("nodir").fields["exec_error"], self.result("nodir").fields["error"]),
            ("spawn-failed", f"chdir {box}: No such file or directory"),
        )

    @defer.inlineCallbacks
    def test_relative_cmd_at_fire_time(self):
        """A relative cmd[0] that slipped past validation is skipped with a warning."""
        hook = make_hook("on_receive", ["true"], name="rel", fire_on_untrusted=True)
        results = yield self.fire(self.mailbox(hook))
        self.assertEqual(results, [])
        self.assertIn("<4>aimx.hook: hook not fired hook_name=rel mailbox=alice "
                      "reason=\"cmd[0] 'true'", self.line("not fired"))

    @defer.inlineCallbacks
    def test_catchall_refused(self):
        """A catchall with a hook in memory fires nothing and warns."""
        hook = make_hook("on_receive", sh('touch "$0"', self.path("M")), fire_on_untrusted=True)
        catchall = self.mailbox(hook, name="catchall", address=f"*@{DOMAIN}")
        yield self.fire(catchall, "true")
        self.assertFalse(os.path.exists(self.path("M")))
        self.assertEqual(
            self.line("catchall"),
            "<4>aimx.hook: hooks on the catchall are forbidden, not fired mailbox=catchall "
            "hooks=1",
        )


class OrderTests(ProcessTestCase):
    """Sequencing within a delivery, overlap across deliveries, the process cap (case 13)."""

    @defer.inlineCallbacks
    def test_sequential_within_delivery(self):
        """B starts only after A has finished."""
        mailbox = self.mailbox(
            make_hook("on_receive", sh('sleep 0.3; touch "$0"', self.path("A")), fire_on_untrusted=True),
            make_hook("on_receive", sh('test -e "$0" && touch "$1"', self.path("A"), self.path("B")),
                      fire_on_untrusted=True),
        )
        results = yield self.fire(mailbox)
        self.assertEqual([r.exit_code for r in results], [0, 0])
        self.assertTrue(os.path.exists(self.path("B")))

    @defer.inlineCallbacks
    def test_deliveries_overlap(self):
        """The hooks of two deliveries run at the same time."""
        # Each hook announces itself, then waits (up to 5 s) for the other.
        script = 'touch "$0/$AIMX_ID"; i=0; while [ $(ls "$0" | wc -l) -lt 2 ] && [ $i -lt 50 ]; ' \
                 'do sleep 0.1; i=$((i+1)); done; [ $(ls "$0" | wc -l) -ge 2 ]'
        mailbox = self.mailbox(make_hook("on_receive", sh(script, self.out), fire_on_untrusted=True))
        runner = self.runner(mailbox)
        results = yield defer.gatherResults([
            runner.dispatch(self.received(mailbox, id="one")),
            runner.dispatch(self.received(mailbox, id="two")),
        ])
        self.assertEqual([r.exit_code for [r] in results], [0, 0])

    @defer.inlineCallbacks
    def test_process_cap(self):
        """With max_processes=2, ten deliveries never run more than two hooks at once."""
        script = 'touch "$0/run/$AIMX_ID"; ls "$0/run" | wc -l >> "$0/counts"; sleep 0.1; ' \
                 'rm "$0/run/$AIMX_ID"'
        os.mkdir(self.path("run"))
        mailbox = self.mailbox(make_hook("on_receive", sh(script, self.out), fire_on_untrusted=True))
        runner = self.runner(mailbox, max_processes=2)
        yield defer.gatherResults(
            [runner.dispatch(self.received(mailbox, id=f"m{i}")) for i in range(10)]
        )
        counts = [int(n) for n in self.read("counts").split()]
        self.assertEqual(len(counts), 10)
        self.assertLessEqual(max(counts), 2)


class AfterSendTests(ProcessTestCase):
    """after_send hooks (cases 11, 12)."""

    def send(self, mailbox, status, filepath):
        return self.runner(mailbox).after_send(
            mailbox, status, from_="alice@test.com", to="bob@example.com", subject="Hi",
            message_id="<out1@test.com>", filepath=filepath,
        )

    @defer.inlineCallbacks
    def test_delivered(self):
        """Status, From, To, the sent copy on stdin, the sent dir as cwd."""
        copy = os.path.join(self.data_dir, "sent", "alice", "2025-04-15-123023-hi.md")
        with open(copy, "wb") as f:
            f.write(b"sent copy")
        mailbox = self.mailbox(
            make_hook("after_send", ["/usr/bin/env"], name="env"),
            make_hook("after_send", sh("pwd; cat"), name="cat"),
        )
        env_result, cat_result = yield self.send(mailbox, "delivered", copy)
        env = dict(line.split("=", 1) for line in env_result.stdout.decode().splitlines())
        self.assertEqual(env["AIMX_SEND_STATUS"], "delivered")
        self.assertEqual((env["AIMX_FROM"], env["AIMX_TO"]), ("alice@test.com", "bob@example.com"))
        self.assertEqual((env["AIMX_FILEPATH"], env["AIMX_ID"]), (copy, "2025-04-15-123023-hi"))
        self.assertEqual(env["AIMX_EVENT"], "after_send")
        datetime.fromisoformat(env["AIMX_DATE"])
        self.assertTrue(env["AIMX_DATE"].endswith("+00:00"))
        self.assertEqual(cat_result.stdout, os.path.dirname(copy).encode() + b"\nsent copy")

    @defer.inlineCallbacks
    def test_deferred(self):
        """Deferred: empty FILEPATH, empty stdin, the log names the message id."""
        hook = make_hook("after_send", sh('printf "%s|%s|" "$AIMX_SEND_STATUS" "$AIMX_FILEPATH"; cat'),
                         name="d")
        [result] = yield self.send(self.mailbox(hook), "deferred", "")
        self.assertEqual(result.stdout, b"deferred||")
        self.assertIn("message_id=<out1@test.com> exit_code=0", self.line("stderr_tail="))

    @defer.inlineCallbacks
    def test_failing_hook_changes_nothing(self):
        """A failing after_send hook only shows in its result and the log (case 12)."""
        hook = make_hook("after_send", sh("exit 1"))
        [result] = yield self.send(self.mailbox(hook), "delivered", "")
        self.assertEqual(result.exit_code, 1)


class IdentityTests(ProcessTestCase):
    """Who the hook runs as (docs/hooks.md, "How a hook runs")."""

    @defer.inlineCallbacks
    def test_owner_missing_as_root(self):
        """A root daemon does not spawn for a missing owner (case 16)."""
        hook = make_hook("on_receive", sh('touch "$0"', self.path("M")), name="h",
                         fire_on_untrusted=True)
        mailbox = self.mailbox(hook, owner="aimx-no-such-user")
        runner = self.runner(mailbox, euid=0)
        [result] = yield runner.dispatch(self.received(mailbox))
        self.assertEqual((result.exit_code, result.sandbox), (-1, "-"))
        self.assertFalse(os.path.exists(self.path("M")))
        line = self.line("stderr_tail=")
        self.assertIn("sandbox=- email_id=", line)
        self.assertTrue(line.endswith(
            "exec_error=user-not-found error=\"user 'aimx-no-such-user' not found on this "
            "host\""), line)

    @defer.inlineCallbacks
    def test_owner_missing_not_root(self):
        """A non-root daemon runs the hook as itself, with a warning."""
        hook = make_hook("on_receive", ["/usr/bin/id", "-u"], fire_on_untrusted=True)
        mailbox = self.mailbox(hook, owner="aimx-no-such-user")
        runner = self.runner(mailbox, euid=4321)
        [result] = yield runner.dispatch(self.received(mailbox))
        self.assertEqual(result.stdout.strip(), str(os.geteuid()).encode())
        self.assertIn(
            f"<4>aimx.hook: hook owner not found, running the hook as the daemon's user "
            f"hook_name={hook.name} mailbox=alice owner=aimx-no-such-user",
            self.lines(),
        )

    @defer.inlineCallbacks
    def test_privilege_drop(self):
        """As root: owner uid, primary gid only, daemon's groups gone (security.md case 9),
        and the owner's HOME, not the daemon's."""
        if os.geteuid() != 0:
            raise SkipTest("the uid/gid drop needs the suite to run as root")
        user = hook_user()
        old_groups = os.getgroups()
        self.addCleanup(os.setgroups, old_groups)
        os.setgroups([0, 4, 27])
        # Like the store: the directory and the file are the owner's.
        os.chown(os.path.dirname(self.stored), user.pw_uid, user.pw_gid)
        os.chown(self.stored, user.pw_uid, user.pw_gid)
        script = 'id -u > "$0/uid"; id -G > "$0/groups"; pwd > "$0/cwd"; cat > "$0/stdin"; ' \
                 'printf %s "$HOME" > "$0/home"'
        hook = make_hook("on_receive", sh(script, self.out), fire_on_untrusted=True)
        [result] = yield self.fire(self.mailbox(hook, owner=user.pw_name))
        self.assertEqual(result.exit_code, 0, (result.error, result.stderr))
        self.assertEqual(self.read("uid").strip(), str(user.pw_uid).encode())
        self.assertEqual(self.read("groups").split(), [str(user.pw_gid).encode()])
        self.assertEqual(self.read("cwd").strip(), os.path.dirname(self.stored).encode())
        self.assertEqual(self.read("stdin"), STORED)
        self.assertEqual(self.read("home"), user.pw_dir.encode())
        self.assertEqual(os.stat(self.path("uid")).st_uid, user.pw_uid)

    def as_root(self) -> pwd.struct_passwd:
        """A non-root owner for the drop, with the mailbox directory theirs (root only)."""
        if os.geteuid() != 0:
            raise SkipTest("the uid/gid drop needs the suite to run as root")
        user = pwd.getpwnam("nobody")
        os.chown(os.path.dirname(self.stored), user.pw_uid, user.pw_gid)
        os.chown(self.stored, user.pw_uid, user.pw_gid)
        return user

    @defer.inlineCallbacks
    def test_all_ids_dropped(self):
        """Real, effective, saved and filesystem uid and gid are the owner's, with no
        supplementary group: nothing lets the hook get root back."""
        user = self.as_root()
        hook = make_hook("on_receive", sh("grep -E '^(Uid|Gid|Groups):' /proc/$$/status"),
                         fire_on_untrusted=True)
        [result] = yield self.fire(self.mailbox(hook, owner=user.pw_name))
        lines = result.stdout.decode().splitlines()
        ids = {line.split(":")[0]: line.split()[1:] for line in lines}
        self.assertEqual(ids, {"Uid": 4 * [str(user.pw_uid)], "Gid": 4 * [str(user.pw_gid)],
                               "Groups": []})

    @defer.inlineCallbacks
    def test_dropped_session_and_descriptors(self):
        """Through the drop too: a new session, descriptors 0-2 only, stdin the file."""
        user = self.as_root()
        leaked = os.open(os.devnull, os.O_RDONLY)
        self.addCleanup(os.close, leaked)
        os.set_inheritable(leaked, True)
        hook = make_hook("on_receive", sh("cat /proc/$$/stat; ls /proc/$$/fd; cat"),
                         fire_on_untrusted=True)
        [result] = yield self.fire(self.mailbox(hook, owner=user.pw_name))
        stat_line, rest = result.stdout.split(b"\n", 1)
        self.assertEqual(session(stat_line), 3 * [int(stat_line.split()[0])])
        self.assertEqual(rest, b"0\n1\n2\n" + STORED)

    @defer.inlineCallbacks
    def test_dropped_exec_errors(self):
        """Through the drop, a missing or non-executable program is an exec error, as
        in a direct spawn, and nothing is started."""
        user = self.as_root()
        plain = self.path("plain")
        with open(plain, "w") as f:
            f.write("#!/bin/sh\n")
        mailbox = self.mailbox(
            make_hook("on_receive", ["/nonexistent/hook"], name="gone", fire_on_untrusted=True),
            make_hook("on_receive", [plain], name="plain", fire_on_untrusted=True),
            make_hook("on_receive", [self.out], name="dir", fire_on_untrusted=True),
            owner=user.pw_name,
        )
        results = yield self.fire(mailbox)
        self.assertEqual([(r.exit_code, r.sandbox, r.error[0]) for r in results],
                         3 * [(-1, "-", "spawn-failed")])
        self.assertEqual(
            [(line.fields["hook_name"], line.priority, line.fields["exec_error"],
              line.fields["error"])
             for line in map(logline.read, self.lines()) if "exec_error" in line.fields],
            [("gone", logline.WARNING, "spawn-failed",
              "exec /nonexistent/hook: No such file or directory"),
             ("plain", logline.WARNING, "spawn-failed", f"exec {plain}: Permission denied"),
             ("dir", logline.WARNING, "spawn-failed", f"exec {self.out}: Permission denied")],
        )

    @defer.inlineCallbacks
    def test_dropped_exec_denied_to_owner(self):
        """A program only root may reach is not run: the exec as the owner fails in
        unshare, exit 126 with its reason in the log."""
        user = self.as_root()
        private = os.path.join(self.root, "private")
        os.mkdir(private, 0o700)
        program = os.path.join(private, "hook")
        shutil.copy("/bin/true", program)
        hook = make_hook("on_receive", [program], name="hidden", fire_on_untrusted=True)
        [result] = yield self.fire(self.mailbox(hook, owner=user.pw_name))
        self.assertEqual(result.exit_code, 126)
        line = self.result("hidden")
        self.assertEqual((line.priority, line.fields["exit_code"], line.fields["stderr_tail"]),
                         (logline.WARNING, "126",
                          f"unshare: failed to execute {program}: Permission denied\n"))

    @defer.inlineCallbacks
    def test_no_unshare(self):
        """A root daemon without unshare runs no hook of another owner, and says why."""
        user = self.as_root()
        hook = make_hook("on_receive", sh('touch "$0"', self.path("M")), name="h",
                         fire_on_untrusted=True)
        mailbox = self.mailbox(hook, owner=user.pw_name)
        runner = self.runner(mailbox, unshare_path=self.out)
        [result] = yield runner.dispatch(self.received(mailbox))
        self.assertEqual((result.exit_code, result.error[0]), (-1, "spawn-failed"))
        self.assertFalse(os.path.exists(self.path("M")))
        self.assertEqual(
            (self.result("h").fields["exec_error"], self.result("h").fields["error"]),
            ("spawn-failed", f"unshare (util-linux) not found in {self.out}: cannot run as "
                             "nobody"),
        )


class StdinSourceTests(ProcessTestCase):
    """stdin when the owner has swapped the stored file (security review).

    The daemon opens the file below the mailbox directory's descriptor without
    following a symlink and without blocking; anything but a regular file of the
    user the hook runs as gives empty stdin, and the daemon never reads it.
    """

    def as_nobody(self) -> str:
        """Give the mailbox to C{nobody} with the store's modes; the owner name."""
        if os.geteuid() != 0:
            raise SkipTest("opening stdin as the owner needs the suite to run as root")
        user = pwd.getpwnam("nobody")
        box = os.path.dirname(self.stored)
        for path, mode in ((box, 0o700), (self.stored, 0o600)):
            os.chown(path, user.pw_uid, user.pw_gid)
            os.chmod(path, mode)
        return user.pw_name

    def secret(self, directory=None) -> str:
        """A root-only (when root) file holding L{SECRET}."""
        path = os.path.join(directory or self.root, STEM + ".md")
        with open(path, "wb") as f:
            f.write(SECRET)
        os.chmod(path, 0o600)
        return path

    def cat(self, name="cat"):
        return make_hook("on_receive", sh('cat > "$0"', self.path(name)), name=name,
                         fire_on_untrusted=True)

    def assert_empty_stdin(self, results, why, name="cat"):
        self.assertEqual(results[-1].exit_code, 0, (results[-1].error, results[-1].stderr))
        self.assertEqual(self.read(name), b"")
        self.assertEqual(
            logline.read(self.line("hook stdin")).fields,
            {"hook_name": name, "mailbox": "alice", "path": self.stored, "error": why},
        )

    @defer.inlineCallbacks
    def test_owner_modes_byte_identical(self):
        """As root, a 0600 file of the owner's reaches the owner's hook unchanged."""
        owner = self.as_nobody()
        [result] = yield self.fire(self.mailbox(self.cat(), owner=owner))
        self.assertEqual(result.exit_code, 0, (result.error, result.stderr))
        self.assertEqual(self.read("cat"), STORED)
        self.assertEqual([line for line in self.lines() if "hook stdin" in line], [])

    @defer.inlineCallbacks
    def test_file_of_another_owner(self):
        """As root, a file in the owner's mailbox that is not the owner's is not handed on."""
        owner = self.as_nobody()
        os.chown(self.stored, 0, 0)
        [result] = yield self.fire(self.mailbox(self.cat(), owner=owner))
        self.assertEqual(self.read("cat"), b"")
        self.assert_empty_stdin([result], f"owned by uid 0, not {pwd.getpwnam(owner).pw_uid}")

    @defer.inlineCallbacks
    def test_symlink_swapped_by_earlier_hook(self):
        """A hook replacing the file by a symlink to a root-only file leaks nothing.

        The first hook, as the owner, swaps C{$AIMX_FILEPATH} for a symlink to a
        0600 root file; the second hook's stdin is empty, not the secret.
        """
        owner = self.as_nobody()
        swap = make_hook(
            "on_receive",
            sh('ln -s "$0" "$AIMX_FILEPATH.l" && mv -f "$AIMX_FILEPATH.l" "$AIMX_FILEPATH"',
               self.secret()),
            name="swap", fire_on_untrusted=True,
        )
        results = yield self.fire(self.mailbox(swap, self.cat(), owner=owner))
        self.assertEqual([r.exit_code for r in results], [0, 0], [r.stderr for r in results])
        self.assertTrue(os.path.islink(self.stored))
        self.assertNotIn(SECRET.strip(), self.read("cat"))
        self.assert_empty_stdin(results, "Too many levels of symbolic links")

    @defer.inlineCallbacks
    def test_bundle_directory_swapped(self):
        """A bundle directory swapped for a symlink to a root-only one is not followed."""
        owner = self.as_nobody()
        private = os.path.join(self.root, "private")
        os.mkdir(private, 0o700)
        self.secret(private)
        box = os.path.dirname(self.stored)
        os.unlink(self.stored)
        os.symlink(private, os.path.join(box, STEM))
        self.stored = os.path.join(box, STEM, STEM + ".md")
        results = yield self.fire(self.mailbox(self.cat(), owner=owner))
        self.assertNotIn(SECRET.strip(), self.read("cat"))
        self.assert_empty_stdin(results, "Not a directory")

    @defer.inlineCallbacks
    def test_symlink_not_followed(self):
        """Without a privilege drop too, a symlink at the path is not followed."""
        os.unlink(self.stored)
        os.symlink(self.secret(), self.stored)
        results = yield self.fire(self.mailbox(self.cat()))
        self.assert_empty_stdin(results, "Too many levels of symbolic links")

    @defer.inlineCallbacks
    def test_directory(self):
        """A directory at the path gives empty stdin."""
        os.unlink(self.stored)
        os.mkdir(self.stored)
        results = yield self.fire(self.mailbox(self.cat()))
        self.assert_empty_stdin(results, "not a regular file")

    @defer.inlineCallbacks
    def test_device(self):
        """A device node at the path gives empty stdin, unread.

        /dev/null's numbers: a regression reading /dev/zero would exhaust memory.
        """
        os.unlink(self.stored)
        try:
            os.mknod(self.stored, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except PermissionError:
            raise SkipTest("mknod needs CAP_MKNOD")
        os.chmod(self.stored, 0o666)
        results = yield self.fire(self.mailbox(self.cat()))
        self.assert_empty_stdin(results, "not a regular file")

    @defer.inlineCallbacks
    def fifo(self, owner):
        """A FIFO at the path: the hook runs at once with empty stdin, the reactor keeps turning.

        Opening the FIFO for reading blocks until a writer comes; should anything
        do that on the reactor, a writer turns up after 3 s, so this fails (a
        tick gap, the byte on stdin) instead of hanging.
        """
        os.unlink(self.stored)
        os.mkfifo(self.stored)
        os.chmod(self.stored, 0o666)  # whatever the umask: openable by the owner
        self.unblock_later(self.stored, 3)
        ticks = []
        ticker = task.LoopingCall(lambda: ticks.append(reactor.seconds()))
        ticker.start(0.02)
        hook = make_hook("on_receive", sh('cat > "$0"; sleep 0.3', self.path("cat")),
                         name="cat", fire_on_untrusted=True, timeout_secs=10)
        try:
            results = yield self.fire(self.mailbox(hook, owner=owner))
        finally:
            ticker.stop()
        self.assert_empty_stdin(results, "not a regular file")
        gaps = [b - a for a, b in zip(ticks, ticks[1:])]
        self.assertGreater(len(ticks), 5)
        self.assertLess(max(gaps), 1.0)
        self.assertLess(results[0].duration_ms, 3000)

    def unblock_later(self, fifo: str, delay: float):
        done = threading.Event()

        def write():
            if done.wait(delay):
                return
            try:
                fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
            except OSError:
                return
            os.write(fd, b"X")
            os.close(fd)

        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        self.addCleanup(thread.join)
        self.addCleanup(done.set)

    def test_fifo(self):
        """A FIFO swapped in by the owner blocks neither the hook nor the daemon."""
        return self.fifo(self.owner)

    test_fifo.timeout = 30

    def test_fifo_as_owner(self):
        """The same with the privilege drop (root only)."""
        return self.fifo(self.as_nobody())

    test_fifo_as_owner.timeout = 30


def hook_user() -> pwd.struct_passwd:
    """A non-root user, preferably one with supplementary groups (initgroups would add them)."""
    members = {name for group in grp.getgrall() for name in group.gr_mem}
    users = [u for u in pwd.getpwall() if u.pw_uid != 0]
    return next((u for u in users if u.pw_name in members), None) or pwd.getpwnam("nobody")


def session(stat: bytes) -> list[int]:
    """The process group and session ids in a C{/proc/<pid>/stat} line, and the pid."""
    fields = stat.rsplit(b")", 1)[1].split()
    return [int(stat.split()[0]), int(fields[2]), int(fields[3])]


def running(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
