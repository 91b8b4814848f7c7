"""`aimx hooks create --webhook`, `hooks status` and `hooks retry` as processes against
a real daemon (docs/cli.md, "aimx hooks"; docs/hooks.md, "Webhooks")."""

import os
import re
import shutil
import tempfile

from twisted.internet import defer, reactor, task

from aimx.core import webhook
from aimx.store import webhookfiles
from tests.integration.base import SecondUid, base_config, load_toml, reserve_port
from tests.integration.test_cli_control import CliTestCase

URL = "https://agents.example/mail"
SHOWN = "Webhook secret (shown once; your receiver verifies with it): "


class WebhookCreateTests(CliTestCase):
    def setUp(self):
        super().setUp()
        self.start_daemon()

    @defer.inlineCallbacks
    def test_generated_secret_shown_once(self):
        """The name and the generated secret are printed, the secret once; it is stored
        root-only where the daemon keeps it, and config.toml names no secret."""
        result = yield self.aimx("hooks", "create", "--mailbox", "alice", "--event",
                                 "on_receive", "--webhook", URL, "--name", "agent")
        self.assertEqual((result.returncode, result.stderr), (0, ""))
        self.assertIn("Hook created: agent (live via daemon)\n", result.stdout)
        (secret,) = re.findall(re.escape(SHOWN) + r"(\S+)", result.stdout)
        self.assertEqual(result.stdout.count(secret[6:]), 1)
        self.assertEqual(len(webhook.parse_secret(secret)), webhook.SECRET_BYTES)
        with open(webhook.secret_path(self.config_dir, "agent", None)) as f:
            self.assertEqual(f.read().strip(), secret)
        (hook,) = load_toml(self.config_path)["mailboxes"]["alice"]["hooks"]
        self.assertEqual(hook, {"event": "on_receive", "type": "webhook", "url": URL,
                                "name": "agent"})
        listing = yield self.aimx("hooks", "list")
        self.assertIn("agent", listing.stdout)
        self.assertNotIn(secret[6:], listing.stdout)


class WebhookStatusTests(CliTestCase):
    """A webhook to a loopback port that refuses, with one dead letter in the spool."""

    def setUp(self):
        super().setUp()
        secret = os.path.join(self.config_dir, "agent.secret")
        with open(secret, "w") as f:
            f.write(webhook.make_secret(bytes(32)) + "\n")
        url = f"http://127.0.0.1:{reserve_port(self)}/h"
        hook = {"name": "agent", "event": "on_receive", "type": "webhook", "url": url,
                "allow_insecure": True, "allow_private": True, "secret_file": secret}
        self.write_config(base_config(self.data_dir, hooks=[("alice", hook)]))
        webhookfiles.save(self.data_dir, {
            "id": "msg_dead", "hook": "agent", "mailbox": "alice", "url": url,
            "event": "on_receive", "email_id": "x", "attempts": webhook.ATTEMPTS, "created": 0,
            "next_at": 0, "last_error": "HTTP 500", "dead": True}, b"{}")
        self.start_daemon()

    @defer.inlineCallbacks
    def test_status_then_retry(self):
        """status lists the dead letter with its last error; retry re-queues it, and
        status then shows it failing again (the port refuses)."""
        result = yield self.aimx("hooks", "status")
        self.assertEqual(result.returncode, 0, result.stderr)
        header, row = result.stdout.splitlines()
        self.assertEqual(header.split(), ["NAME", "PENDING", "FAILING", "DEAD", "LAST", "ERROR"])
        self.assertEqual(row.split(), ["agent", "0", "0", "1", "HTTP", "500"])
        named = yield self.aimx("hooks", "status", "agent", "--json")
        self.assertIn('"dead": 1', named.stdout)
        retried = yield self.aimx("hooks", "retry", "agent")
        self.assertEqual((retried.returncode, retried.stdout),
                         (0, "Re-queued 1 dead-lettered delivery of agent\n"))
        for _ in range(400):  # the attempt is started by the daemon's reactor
            if webhookfiles.load(self.data_dir)[0][0]["attempts"]:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        yield self.daemon.webhooks.idle()
        again = yield self.aimx("hooks", "status", "agent")
        fields = again.stdout.splitlines()[1].split()
        self.assertEqual(fields[:4], ["agent", "0", "1", "0"])
        self.assertIn("refused", again.stdout.lower())
        unknown = yield self.aimx("hooks", "retry", "nope")
        self.assertEqual((unknown.returncode, unknown.stderr),
                         (1, "Error: hook 'nope' not found\n"))


class SecretFileTests(SecondUid, CliTestCase):
    """--secret-file is read with the caller's own rights (root only: nobody calls)."""

    def setUp(self):
        super().setUp()
        self.write_config(base_config(self.data_dir, mailboxes={"nob": {"owner": "nobody"}}))
        self.directory = tempfile.mkdtemp(prefix="aimx-secret-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        os.chmod(self.directory, 0o755)
        return self.daemon.reload()

    def secret(self, name: str, mode: int) -> tuple[str, str]:
        text = webhook.make_secret(bytes([len(name)]) * 32)
        path = os.path.join(self.directory, name)
        with open(path, "w") as f:
            f.write(text + "\n")
        os.chmod(path, mode)
        return path, text

    def create(self, name, path):
        return self.as_nobody_cli("hooks", "create", "--mailbox", "nob", "--event",
                                  "on_receive", "--webhook", URL, "--name", name,
                                  "--secret-file", path)

    @defer.inlineCallbacks
    def test_unreadable_by_caller(self):
        """A root-only file the daemon could read is refused by the CLI; nothing is made."""
        path, _ = self.secret("root.secret", 0o600)
        result = yield self.create("w1", path)
        self.assertEqual((result.returncode, result.stderr),
                         (1, f"Error: cannot read --secret-file {path}: Permission denied\n"))
        self.assertNotIn("hooks", load_toml(self.config_path)["mailboxes"]["nob"])
        self.assertFalse(os.path.exists(webhook.secret_path(self.config_dir, "w1", None)))

    @defer.inlineCallbacks
    def test_readable_by_caller(self):
        """The caller's own readable file: stored by the daemon as given, not printed."""
        path, text = self.secret("mine.secret", 0o644)
        result = yield self.create("w2", path)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("Hook created: w2 (live via daemon)", result.stdout)
        self.assertNotIn(SHOWN, result.stdout)
        self.assertNotIn(text[6:], result.stdout + result.stderr)
        with open(webhook.secret_path(self.config_dir, "w2", None)) as f:
            self.assertEqual(f.read().strip(), text)
