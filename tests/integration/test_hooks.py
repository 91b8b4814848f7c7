"""on_receive hooks end to end: SMTP (or C{aimx ingest}) -> store -> hook process."""

import os
import shutil
import sys
import tempfile

from twisted.internet import defer, threads, utils
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher

from aimx.logs import event_line
from aimx.testing.fakes import hook_table, message
from tests.integration.base import DOMAIN, DaemonTestCase, base_config

PATH = "/usr/local/bin:/usr/bin:/bin"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def release(fifo: str) -> None:
    """Let a reader blocked on C{fifo} go on: open it for writing (once the reader has
    it open) and close it, which it reads as end of file."""
    with open(fifo, "wb"):
        pass


def hook(mailbox: str, script: str, *args: str, name=None, untrusted=True) -> list:
    """An on_receive hook of C{mailbox} running C{script} with /bin/sh, for
    L{base_config}'s C{hooks} (lists add up)."""
    fields = {"name": name} if name else {}
    if untrusted:
        fields["fire_on_untrusted"] = True
    return [(mailbox, hook_table("on_receive", ["/bin/sh", "-c", script, *args], **fields))]


class HookDaemonTestCase(DaemonTestCase):
    """A daemon whose hooks write into C{self.out}; its PATH and a sentinel in its env."""

    def setUp(self):
        super().setUp()
        self.out = tempfile.mkdtemp(prefix="aimx-hook-out-")
        self.addCleanup(shutil.rmtree, self.out, True)
        self.environ.update(PATH=PATH, HOME="/daemon-home", AIMX_LEAK_SENTINEL_HOOK="leaked")
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def start(self, hooks: list, **top):
        self.write_config(base_config(self.data_dir, hooks=hooks, **top))
        daemon = self.start_daemon()
        self.addCleanup(daemon.hooks.idle)
        return daemon

    def path(self, name: str) -> str:
        return os.path.join(self.out, name)

    def read(self, name: str) -> str:
        with open(self.path(name), encoding="utf-8") as f:
            return f.read()

    def hook_lines(self) -> list[str]:
        return [event_line(e, journal=True) for e in self.events
                if e.get("log_namespace") == "aimx.hook"]


class TrustGateTests(HookDaemonTestCase):
    """Only mail from an allow-listed sender with an aligned DKIM signature fires a default hook."""

    def setUp(self):
        super().setUp()
        self.start(
            hook("alice", 'touch "$0/fired"', self.out, name="notify", untrusted=False),
            trust="verified", trusted_senders=["*@company.com"],
        )
        self.dns.add_txt("company.com", "v=spf1 ip4:127.0.0.1 -all")
        self.dns.add_txt("_dmarc.company.com", "v=DMARC1; p=reject")

    @defer.inlineCallbacks
    def test_trusted_fires(self):
        """A signed, aligned, allow-listed message fires the hook."""
        private = self.publish_dkim("company.com")
        raw = self.sign(message(sender="Boss <boss@company.com>"), private, "company.com")
        reply = yield self.smtp(raw, [f"alice@{DOMAIN}"], mail_from="boss@company.com")
        yield self.daemon.hooks.idle()
        self.assertEqual(reply[0], 250)
        self.assertTrue(os.path.exists(self.path("fired")))
        self.assertTrue(any("hook_name=notify" in line and "exit_code=0" in line
                            for line in self.hook_lines()))

    @defer.inlineCallbacks
    def test_forged_sender(self):
        """Unsigned mail forged as the allow-listed sender fires nothing, and says why."""
        self.dns.add_txt("evil.example", "v=spf1 ip4:127.0.0.1 -all")
        raw = message(sender="Boss <boss@company.com>")
        yield self.smtp(raw, [f"alice@{DOMAIN}"], mail_from="x@evil.example")
        yield self.daemon.hooks.idle()
        self.assertFalse(os.path.exists(self.path("fired")))
        [skip] = [line for line in self.hook_lines() if "skipped" in line]
        self.assertTrue(skip.startswith(
            "<6>aimx.hook: hook skipped hook_name=notify event=on_receive mailbox=alice "
            "skipped=trust trusted=false fire_on_untrusted=false email_id="
        ), skip)

    @defer.inlineCallbacks
    def test_unaligned_signature(self):
        """A valid signature by a domain not aligned with From fires nothing."""
        private = self.publish_dkim("attacker.org")
        raw = self.sign(message(sender="boss@company.com"), private, "attacker.org")
        yield self.smtp(raw, [f"alice@{DOMAIN}"], mail_from="x@attacker.org")
        yield self.daemon.hooks.idle()
        self.assertFalse(os.path.exists(self.path("fired")))
        self.assertEqual(self.only_mail("alice")[0]["dkim"], "pass")


class DeliveryTests(HookDaemonTestCase):
    """How hooks relate to the SMTP reply, recipients and duplicates."""

    @defer.inlineCallbacks
    def test_reply_does_not_wait(self):
        """The 250 comes while the hook still runs; its marker appears later (inbound
        case 26). The hook blocks reading a FIFO the test writes only after the reply."""
        gate = self.path("gate")
        os.mkfifo(gate)
        self.start(hook("alice", 'cat "$0/gate" >/dev/null; touch "$0/done"', self.out))
        reply = yield self.smtp(message(), [f"alice@{DOMAIN}"])
        self.assertEqual(reply[0], 250)
        self.assertFalse(os.path.exists(self.path("done")))
        self.assertEqual(len(self.inbox("alice")), 1)
        yield threads.deferToThread(release, gate)
        yield self.daemon.hooks.idle()
        self.assertTrue(os.path.exists(self.path("done")))

    @defer.inlineCallbacks
    def test_each_recipient_its_own_file(self):
        """Mail to alice and bob fires each one's hook with its own file; TO is the header (case 14)."""
        script = 'printf "%s|%s" "$AIMX_FILEPATH" "$AIMX_TO" > "$0/$AIMX_MAILBOX"'
        self.start(hook("alice", script, self.out, name="a") + hook("bob", script, self.out, name="b"))
        raw = message(to=f"alice@{DOMAIN}, Bob <bob@{DOMAIN}>")
        yield self.smtp(raw, [f"alice@{DOMAIN}", f"bob@{DOMAIN}"])
        yield self.daemon.hooks.idle()
        to = f"alice@{DOMAIN}, Bob <bob@{DOMAIN}>"
        self.assertEqual(self.read("alice"), f"{self.inbox('alice')[0]}|{to}")
        self.assertEqual(self.read("bob"), f"{self.inbox('bob')[0]}|{to}")

    @defer.inlineCallbacks
    def test_duplicate_not_fired_again(self):
        """Re-delivery of the same Message-ID does not fire the hook again (case 15)."""
        self.start(hook("alice", 'echo "$AIMX_ID" >> "$0/fires"', self.out))
        yield self.smtp(message(), [f"alice@{DOMAIN}"])
        yield self.smtp(message(), [f"alice@{DOMAIN}"])
        yield self.daemon.hooks.idle()
        self.assertEqual(len(self.read("fires").splitlines()), 1)

    @defer.inlineCallbacks
    def test_failing_hook(self):
        """A hook exiting 3: the mail is stored, the reply is 250, the log says so (case 8)."""
        self.start(hook("alice", "echo boom >&2; exit 3", name="boom"))
        reply = yield self.smtp(message(), [f"alice@{DOMAIN}"])
        yield self.daemon.hooks.idle()
        self.assertEqual(reply[0], 250)
        self.assertEqual(len(self.inbox("alice")), 1)
        [result] = [line for line in self.hook_lines() if "hook result" in line]
        self.assertTrue(result.startswith("<4>aimx.hook: hook result hook_name=boom "), result)
        self.assertIn(' exit_code=3 ', result)
        self.assertTrue(result.endswith(' stderr_tail="boom\\n"'), result)

    @defer.inlineCallbacks
    def test_environment(self):
        """The hook env has PATH, the daemon's HOME, the AIMX_* values, no sentinel (case 4)."""
        self.start(hook("alice", '/usr/bin/env > "$0/env"', self.out, name="hook_explicit"))
        yield self.smtp(message(subject="Hello World", sender="alice@gmail.com"), [f"alice@{DOMAIN}"])
        yield self.daemon.hooks.idle()
        env = dict(line.split("=", 1) for line in self.read("env").splitlines())
        [path] = self.inbox("alice")
        self.assertNotIn("AIMX_LEAK_SENTINEL_HOOK", env)
        self.assertNotIn("AIMX_SEND_STATUS", env)
        self.assertEqual((env["PATH"], env["HOME"]), (PATH, "/daemon-home"))
        self.assertEqual(env["AIMX_HOOK_NAME"], "hook_explicit")
        self.assertEqual(env["AIMX_FROM"], "alice@gmail.com")
        self.assertEqual(env["AIMX_SUBJECT"], "Hello World")
        self.assertEqual(env["AIMX_MAILBOX"], "alice")
        self.assertEqual(env["AIMX_EVENT"], "on_receive")
        self.assertEqual(env["AIMX_FILEPATH"], path)
        self.assertEqual(env["AIMX_ID"], os.path.basename(path)[:-3])
        self.assertEqual(env["AIMX_MESSAGE_ID"], "m1@example.com")

    @defer.inlineCallbacks
    def test_hostile_headers(self):
        """Subject and From full of $(), backticks, quotes, a newline and NUL run nothing."""
        canary = self.path("PWNED")
        self.start(hook(
            "alice", 'printf %s "$AIMX_SUBJECT" > "$0/subject"; printf %s "$AIMX_FROM" > "$0/from"',
            self.out,
        ))
        subject = (f"$(touch {canary}) `touch {canary}` 'q' \"d\" ; touch {canary} \0nul "
                   "=?utf-8?q?new=0Aline?=")
        sender = f'"$(touch {canary}) `id`" <x@example.com>'
        yield self.smtp(message(subject=subject, sender=sender), [f"alice@{DOMAIN}"])
        yield self.daemon.hooks.idle()
        fields, _ = self.only_mail("alice")
        self.assertIn("\0", fields["subject"])
        self.assertIn("\n", fields["subject"])
        self.assertEqual(self.read("subject"), fields["subject"].replace("\0", ""))
        self.assertEqual(self.read("from"), fields["from"])
        self.assertIn("$(touch", self.read("from"))
        self.assertFalse(os.path.exists(canary))


class IngestTests(HookDaemonTestCase):
    """C{aimx ingest} runs on_receive hooks and exits after they finish."""

    @defer.inlineCallbacks
    def test_hooks_awaited(self):
        """The verb's exit comes after a 1 s hook has written its marker."""
        self.write_config(base_config(self.data_dir, hooks=hook(
            "alice", 'sleep 1; cat > "$0/stdin"', self.out, name="sync"
        )))
        env = {"PATH": PATH, "PYTHONPATH": ROOT, "AIMX_NAMESERVERS": self.dns.nameservers}
        script = "import sys; sys.stdin = open(sys.argv[1]); from aimx.cli import main; " \
                 "sys.exit(main(sys.argv[2:]))"
        raw = os.path.join(self.out, "raw.eml")
        with open(raw, "wb") as f:
            f.write(message())
        _, err, code = yield utils.getProcessOutputAndValue(
            sys.executable,
            ["-c", script, raw, "--config-dir", self.config_dir, "ingest", f"alice@{DOMAIN}"],
            env=env,
            path=ROOT,
        )
        self.assertEqual(code, 0, err)
        [path] = self.inbox("alice")
        with open(path) as f:
            self.assertEqual(self.read("stdin"), f.read())
        self.assertRegex(err, rb"(?m)^\S+ info aimx.hook: hook result hook_name=sync "
                              rb"event=on_receive mailbox=alice ")
        self.assertIn(b"exit_code=0", err)
