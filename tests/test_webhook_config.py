"""Webhook hooks in config.toml and HOOK-CREATE bodies (docs/hooks.md, "Webhooks")."""

import json

from twisted.trial.unittest import SynchronousTestCase

from aimx.core import configedit, webhookurl
from aimx.core.config import derive_hook_name, load_text, make_hook, to_toml
from aimx.errors import ConfigError, NoEntry, ProtocolError, ValidationError

PATH = "/etc/aimx/config.toml"
CONFIG = """domain = "test.com"

[mailboxes.alice]
address = "alice@test.com"
owner = "alice"
"""
URL = "https://agents.example/mail"


def load(text: str):
    return load_text(text, PATH)[0]


def with_hook(lines: str) -> str:
    return CONFIG + f"\n# the agent's endpoint\n[[mailboxes.alice.hooks]]\n{lines}\n"


def body(**fields):
    return json.dumps({"type": "webhook", "url": URL, **fields})


class LoadTests(SynchronousTestCase):
    def test_webhook_loads(self):
        """Every webhook key is read; the name hashes the url where a command's hashes cmd."""
        config = load(with_hook(
            'event = "on_receive"\ntype = "webhook"\nurl = "http://10.0.0.5/hook"\n'
            'secret_file = "/etc/aimx/webhooks/s.secret"\ntimeout_secs = 10\n'
            "fire_on_untrusted = true\nallow_insecure = true\nallow_private = true\n"
            "disabled = true"))
        (hook,) = config.mailbox("alice").hooks
        self.assertEqual(
            (hook.type, hook.url, hook.secret_file, hook.timeout_secs, hook.fire_on_untrusted,
             hook.allow_insecure, hook.allow_private, hook.disabled, hook.cmd),
            ("webhook", "http://10.0.0.5/hook", "/etc/aimx/webhooks/s.secret", 10, True,
             True, True, True, ()))
        self.assertEqual(hook.name,
                         derive_hook_name("on_receive", ["http://10.0.0.5/hook"], True))

    def test_command_names_unchanged(self):
        """A command hook's derived name is what it always was (docs/hooks.md vectors)."""
        self.assertEqual(make_hook("on_receive", ["/bin/true"]).name, "9d0373b47d73")
        self.assertNotEqual(make_hook("on_receive", (), hook_type="webhook", url=URL).name,
                            make_hook("on_receive", (), hook_type="webhook",
                                      url=URL + "2").name)

    def test_refusals(self):
        """Each broken webhook names its problem."""
        cases = [
            ('url = "ftp://x.example/"', "must start with https://"),
            ('url = "http://agents.example/"', "plain http://"),
            ('url = "https://u:p@agents.example/"', "must not carry credentials"),
            ('url = "https://127.0.0.1/"', "a loopback address (127.0.0.1)"),
            ('url = "https://[::ffff:10.1.2.3]/"', "a private address (10.1.2.3)"),
            ('url = "https://a b.example/"', "without spaces"),
            (f'url = "{URL}"\ncmd = ["/bin/true"]', "a webhook has `url`, not `cmd`"),
            (f'url = "{URL}"\nsecret_file = "rel.secret"', "relative `secret_file`"),
            (f'url = "{URL}"\ntimeout_secs = 601', "exceeds the max of 600"),
            (f'url = "{URL}"\nallow_privat = true', "unknown field `allow_privat`"),
            ("", "missing field `url`"),
        ]
        for lines, text in cases:
            e = self.assertRaises(ConfigError, load, with_hook(
                f'event = "on_receive"\ntype = "webhook"\n{lines}'))
            self.assertIn(text, str(e), lines)

    def test_webhook_keys_on_a_command(self):
        """A command hook with C{url} is refused, not silently ignored."""
        e = self.assertRaises(ConfigError, load, with_hook(
            f'event = "on_receive"\ncmd = ["/bin/true"]\nurl = "{URL}"'))
        self.assertIn('url: only for `type = "webhook"`', str(e))

    def test_round_trip(self):
        """to_toml writes what it read; default flags are left out."""
        config = load(with_hook(f'event = "after_send"\ntype = "webhook"\nurl = "{URL}"'))
        self.assertEqual(to_toml(config)["mailboxes"]["alice"]["hooks"],
                         [{"event": "after_send", "type": "webhook", "url": URL}])
        self.assertEqual(load_text(CONFIG, PATH)[0].mailboxes[0].hooks, ())


class UrlTests(SynchronousTestCase):
    def test_refusal(self):
        """Non-public and own addresses are refused; a public one is not."""
        for address, kind in (("127.0.0.2", "loopback"), ("169.254.1.1", "link-local"),
                              ("192.168.1.1", "private"), ("100.64.0.1", "non-public"),
                              ("::1", "loopback"), ("fe80::1", "link-local"),
                              ("0.0.0.0", "unspecified"), ("224.0.0.1", "multicast")):
            self.assertIn(kind, webhookurl.refusal(address, ()), address)
        self.assertIsNone(webhookurl.refusal("93.184.216.34", ()))
        self.assertIn("own addresses", webhookurl.refusal("93.184.216.34", ("93.184.216.34",)))

    def test_parse(self):
        """Host, port and literal-ness of a URL."""
        self.assertEqual(webhookurl.parse("https://Agents.Example:8443/x?y"),
                         webhookurl.Target("https", "agents.example", 8443, False))
        self.assertEqual(webhookurl.parse("http://[::1]/"),
                         webhookurl.Target("http", "::1", 80, True))
        self.assertRaises(ValueError, webhookurl.parse, "https://" + "a" * 2100 + ".example/")


class RequestTests(SynchronousTestCase):
    def test_webhook_request(self):
        """A HOOK-CREATE body with C{url} makes a webhook; its secret is parsed apart."""
        secret = "whsec_" + "QUJD" * 8
        request = body(secret=secret, allow_private=True, timeout_secs=10)
        hook = configedit.parse_hook_request("on_receive", None, request)
        self.assertEqual((hook.type, hook.url, hook.allow_private, hook.timeout_secs, hook.cmd),
                         ("webhook", URL, True, 10, ()))
        self.assertEqual(configedit.request_secret(request), b"ABC" * 8)
        self.assertIsNone(configedit.request_secret(body()))

    def test_refused_bodies(self):
        """Bad fields are refused; the secret's text is never quoted back."""
        e = self.assertRaises(ValidationError, configedit.request_secret,
                              body(secret="whsec_c2hvcnQ="))
        self.assertNotIn("c2hvcnQ", str(e))
        self.assertRaises(ValidationError, configedit.request_secret, body(secret="nope"))
        self.assertRaises(ProtocolError, configedit.parse_hook_request, "on_receive", None,
                          body(allow_private="yes"))
        self.assertRaises(ProtocolError, configedit.parse_hook_request, "on_receive", None,
                          json.dumps({"type": "webhook"}))
        self.assertRaises(ProtocolError, configedit.parse_hook_request, "on_receive", None,
                          json.dumps({"cmd": ["/bin/true"], "url": URL}))
        e = self.assertRaises(ValidationError, configedit.parse_hook_request, "on_receive",
                              None, body(url="https://10.0.0.1/"))
        self.assertIn("allow_private", str(e))

    def test_disable_in_place(self):
        """Setting C{disabled} edits the hook's table and keeps the comments around it."""
        text = with_hook(f'event = "on_receive"\ntype = "webhook"\nurl = "{URL}"')
        config = load(text)
        name = config.mailbox("alice").hooks[0].name
        disabled = configedit.set_disabled(config, name, True)
        written = configedit.rewrite_text(text, PATH, disabled)
        self.assertIn("# the agent's endpoint", written)
        self.assertIn("disabled = true", written)
        self.assertTrue(load(written).mailbox("alice").hooks[0].disabled)
        enabled = configedit.rewrite_text(written, PATH, configedit.set_disabled(
            load(written), name, False))
        self.assertNotIn("disabled", enabled)
        self.assertRaises(NoEntry, configedit.set_disabled, config, "ghost", True)

    def test_rows(self):
        """HOOK-LIST rows say a webhook's type and url, and when it is disabled."""
        config = load(with_hook(
            f'event = "on_receive"\ntype = "webhook"\nurl = "{URL}"\ndisabled = true'))
        (row,) = configedit.hook_rows(config, lambda mb: True)
        self.assertEqual((row["type"], row["url"], row["disabled"], row["cmd"]),
                         ("webhook", URL, True, []))
