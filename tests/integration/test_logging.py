"""The daemon's log as journald gets it (docs/logging.md): a real `aimx serve` whose
stderr is "the journal" (C{JOURNAL_STREAM} names the file it writes to), driven
through a delivery, refusals, hook runs and a failure.  Every line must be one
event: C{<N>}, a namespace, a message, C{key=value} fields; and each event has its
priority."""

import os
import signal
import subprocess
import sys

from twisted.internet import defer, threads

from aimx.ops import logline
from aimx.testing.fakes import hook_table, message
from tests.integration.base import DOMAIN, REPO, DaemonTestCase, base_config
from tests.test_logs import NAMESPACES

_LINE = r"<[0-7]>[A-Za-z0-9_.-]+: \S"


class JournalLogTests(DaemonTestCase):
    def setUp(self):
        super().setUp()
        self.write_config(base_config(
            self.data_dir,
            catchall=False,
            mailboxes={"alice": {"trust": "verified", "trusted_senders": ["*@company.com"]}},
            hooks=[
                ("alice", hook_table(cmd=["/bin/sh", "-c", "echo 'fine <3>x=1' >&2"],
                                     name="ok", fire_on_untrusted=True)),
                ("alice", hook_table(cmd=["/bin/sh", "-c", "printf 'boom\\nline 2' >&2; exit 3"],
                                     name="bad", fire_on_untrusted=True)),
            ],
        ))

    def lines(self) -> list[logline.Line]:
        return [logline.read(text) for text in self.served_log().splitlines()]

    def event(self, namespace: str, message: str, **fields) -> logline.Line:
        """The one line of C{namespace} saying C{message} with C{fields}."""
        found = [line for line in self.lines()
                 if (line.namespace, line.message) == (namespace, message)
                 and fields.items() <= line.fields.items()]
        self.assertEqual(len(found), 1, (namespace, message, fields, self.served_log()))
        return found[0]

    @defer.inlineCallbacks
    def test_every_line_one_event_with_its_priority(self):
        """Delivery (info), refusals and a trust failure (notice), a failing hook
        (warning), a store failure (err): one line each, <N> first."""
        proc = yield defer.Deferred.fromCoroutine(self.serve("--bind", "127.0.0.1:0",
                                                             journal=True))
        # A delivery: untrusted (no signature), so a notice for trust; both hooks run.
        reply = yield self.smtp(message(message_id="m1@example.com"), [f"alice@{DOMAIN}"])
        self.assertEqual(reply[0], 250)
        yield defer.Deferred.fromCoroutine(self.log_says(proc, "hook result hook_name=bad"))
        # Refusals: a relay recipient and an unknown command; a HELO name of an attacker.
        replies = yield self.dialogue([
            b"EHLO evil\x1b[2J<3>aimx.inbound: stored mailbox=root\r\n",
            b"MAIL FROM:<a@example.com>\r\n",
            b"RCPT TO:<x@elsewhere.example>\r\n",
            b"FROB\r\n",
            b"QUIT\r\n",
        ])
        self.assertTrue(any(r.startswith(b"550") for r in replies), replies)
        # A failure: alice's inbox is not a directory.
        os.rename(os.path.join(self.data_dir, "inbox", "alice"),
                  os.path.join(self.data_dir, "alice-moved"))
        with open(os.path.join(self.data_dir, "inbox", "alice"), "w") as f:
            f.write("not a directory")
        reply = yield self.smtp(message(message_id="m2@example.com"), [f"alice@{DOMAIN}"])
        self.assertEqual(reply[0], 451)
        yield defer.Deferred.fromCoroutine(self.log_says(proc, "succeeded=0 failed=1"))
        yield defer.Deferred.fromCoroutine(self.log_says(proc, 'helo="evil'))

        text = self.served_log()
        for line in text.splitlines():
            self.assertRegex(line, _LINE)
        namespaces = {line.namespace for line in self.lines()}
        self.assertEqual({n for n in namespaces if n.startswith("aimx")} - NAMESPACES, set())

        def priority(namespace, message, **fields):
            return self.event(namespace, message, **fields).priority

        self.assertEqual(priority("aimx.smtp", "listening"), logline.INFO)
        self.assertEqual(priority("aimx.inbound", "stored email", mailbox="alice"), logline.INFO)
        self.assertEqual(priority("aimx.trust", "trust eval", mailbox="alice", result="false"),
                         logline.NOTICE)
        self.assertEqual(priority("aimx.hook", "hook result", hook_name="ok", exit_code="0"),
                         logline.INFO)
        bad = self.event("aimx.hook", "hook result", hook_name="bad", exit_code="3")
        self.assertEqual((bad.priority, bad.fields["stderr_tail"]),
                         (logline.WARNING, "boom\nline 2"))
        ok = self.event("aimx.hook", "hook result", hook_name="ok")
        self.assertEqual(ok.fields["stderr_tail"], "fine <3>x=1\n")
        refused = self.event("aimx.smtp", "RCPT refused", reason="relay")
        self.assertEqual((refused.priority, refused.fields["rcpt"]),
                         (logline.NOTICE, "x@elsewhere.example"))
        self.assertEqual(priority("aimx.smtp", "refused", peer="127.0.0.1"), logline.NOTICE)
        self.assertEqual(priority("aimx.inbound", "not stored", rcpt=f"alice@{DOMAIN}"),
                         logline.ERR)
        # The attacker's HELO name stayed in its field.
        ended = [line for line in self.lines() if line.fields.get("helo", "").startswith("evil")]
        self.assertEqual(ended[0].fields["helo"], "evil\x1b[2J<3>aimx.inbound: stored mailbox=root")
        self.assertNotIn("\x1b", text)
        self.assertEqual([line for line in self.lines() if line.fields.get("mailbox") == "root"],
                         [])


class TwistdTests(DaemonTestCase):
    async def test_twistd_writes_the_journal_form(self):
        """`twistd -n aimx`, as the service runs it, writes aimx's lines to stdout: its
        own start-up lines and stray prints included, each one <N>-prefixed line."""
        self.serve_log = os.path.abspath(self.mktemp()) + ".log"
        with open(self.serve_log, "wb") as log:
            st = os.fstat(log.fileno())
            env = dict(os.environ, PYTHONPATH=REPO, **self.environ,
                       JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
            proc = subprocess.Popen(
                [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                 "--nodaemon", "--pidfile=", "aimx", "--bind", "127.0.0.1:0",
                 "--config-dir", self.config_dir, "--runtime-dir", self.runtime_dir],
                env=env, cwd=REPO, stdout=log, stderr=log)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        [address] = await self.ready(proc)
        await self.log_says(proc, "aimx.dkim: DKIM DNS check")  # the reactor runs
        proc.send_signal(signal.SIGTERM)
        # twistd ends by the signal it stopped for, once shut down.
        self.assertEqual(await threads.deferToThread(proc.wait, 40), -signal.SIGTERM)
        lines = self.served_log().splitlines()
        for text in lines:
            self.assertRegex(text, _LINE)
        self.assertIn(f"<6>aimx.smtp: listening address={address} tls=disabled", lines)
        self.assertTrue(any(t.startswith("<6>twisted.") and ": twistd " in t
                            and t.endswith(" starting up.") for t in lines), lines)
        self.assertEqual(lines[-1], "<6>twisted.scripts._twistd_unix.UnixAppLogger: "
                                    "Server Shut Down.")
