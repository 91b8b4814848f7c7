"""Tests for aimx.core.config and aimx.store.configfile (docs/configuration.md)."""

import os

import attrs
import tomli_w
from twisted.trial.unittest import SynchronousTestCase

from aimx.core import config as cfg
from aimx.core import configedit
from aimx.core.config import (
    Config,
    MailboxConfig,
    derive_hook_name,
    load_text,
    make_hook,
    resolve_mailbox,
    to_toml,
    validate_hooks,
    validate_mailbox_name,
)
from aimx.errors import ConfigError
from aimx.store import configfile

PATH = "/etc/aimx/config.toml"
BASE = 'domain = "test.com"\n'
CATCHALL = '[mailboxes.catchall]\naddress = "*@test.com"\nowner = "aimx-catchall"\n'
ALICE = '[mailboxes.alice]\naddress = "alice@test.com"\nowner = "alice"\n'
BOB = '[mailboxes.bob]\naddress = "bob@test.com"\nowner = "bob"\n'


def hook(body: str, mailbox: str = "alice") -> str:
    """A hook block for C{mailbox} with the given key lines."""
    return f"[[mailboxes.{mailbox}.hooks]]\n{body}\n"


def load(text: str, owner_exists=lambda owner: True):
    """Load config text under a fixed path."""
    return load_text(text, PATH, owner_exists=owner_exists)


class _Case(SynchronousTestCase):
    def error(self, text: str, owner_exists=lambda owner: True) -> str:
        """The message of the ConfigError that loading C{text} raises."""
        e = self.assertRaises(ConfigError, load, text, owner_exists)
        message = str(e)
        self.assertTrue(message.startswith(PATH + ": "), message)
        return message


class DeriveHookNameTests(SynchronousTestCase):
    def test_vectors(self):
        """The derived names match known vectors (docs/hooks.md)."""
        vectors = [
            ("on_receive", ["/bin/true"], False, "9d0373b47d73"),
            ("on_receive", ["/bin/true"], True, "4315591c7fd4"),
            ("after_send", ["/bin/true"], False, "d744b8ef2901"),
            ("on_receive", ["/bin/echo", "a b"], False, "998053293ba5"),
            ("on_receive", ["/bin/echo a", "b"], False, "c5c7ef53bf71"),
        ]
        for event, cmd, fire, name in vectors:
            self.assertEqual(derive_hook_name(event, cmd, fire), name)

    def test_loaded_hook_gets_derived_name(self):
        """A hook without C{name} gets the derived name, not marked explicit."""
        config, _ = load(BASE + ALICE + hook('event = "on_receive"\ncmd = ["/bin/true"]'))
        (h,) = config.mailbox("alice").hooks
        self.assertEqual((h.name, h.explicit_name), ("9d0373b47d73", False))

    def test_timeout_not_hashed(self):
        """C{timeout_secs} does not change the derived name."""
        self.assertEqual(
            make_hook("on_receive", ["/bin/true"], timeout_secs=5).name, "9d0373b47d73"
        )


class DefaultsTests(SynchronousTestCase):
    def test_minimal_config(self):
        """Acceptance 1: domain + catchall loads with every default."""
        config, warnings = load(BASE + CATCHALL)
        self.assertEqual(warnings, [])
        self.assertEqual(config.domain, "test.com")
        self.assertEqual(config.data_dir, "/var/lib/aimx")
        self.assertEqual(config.dkim_selector, "aimx")
        self.assertEqual(config.trust, "none")
        self.assertEqual(config.trusted_senders, ())
        self.assertFalse(config.enable_ipv6)
        self.assertIsNone(config.signature)
        self.assertEqual(config.effective_signature, "")
        self.assertIsNone(config.verify_host)
        self.assertIsNone(config.outbound_check_domain)
        self.assertEqual(config.catchall().name, "catchall")
        self.assertEqual(config.max_sessions_per_ip, 20)

    def test_explicit_values(self):
        """Set top-level keys are kept; an empty signature disables it."""
        config, _ = load(
            BASE
            + 'data_dir = "/srv/aimx"\ndkim_selector = "s1"\nenable_ipv6 = true\n'
            + 'signature = ""\nverify_host = "https://v.example"\n'
            + 'outbound_check_domain = "example.net"\n'
        )
        self.assertEqual(config.data_dir, "/srv/aimx")
        self.assertEqual(config.dkim_selector, "s1")
        self.assertTrue(config.enable_ipv6)
        self.assertEqual(config.effective_signature, "")
        self.assertEqual(config.verify_host, "https://v.example")
        self.assertEqual(config.outbound_check_domain, "example.net")

    def test_upgrade_accepted(self):
        """An C{[upgrade]} table is accepted and kept for rewrites."""
        config, _ = load(BASE + '[upgrade]\nrelease_manifest_url = "file:///m.json"\n')
        self.assertEqual(config.release_manifest_url, "file:///m.json")

    def test_mailboxes_in_file_order(self):
        """Mailboxes keep the order of the file."""
        config, _ = load(BASE + BOB + CATCHALL + ALICE)
        self.assertEqual([mb.name for mb in config.mailboxes], ["bob", "catchall", "alice"])


class TrustTests(_Case):
    def test_invalid_top_level(self):
        """Acceptance 2: a misspelt top-level trust value is rejected."""
        message = self.error('trust = "verfied"\n' + BASE)
        self.assertIn(
            "invalid top-level trust value 'verfied': expected one of [\"none\", \"verified\"]",
            message,
        )

    def test_invalid_mailbox_value(self):
        """A bad mailbox trust value names the mailbox."""
        message = self.error(BASE + ALICE + 'trust = "all"\n')
        self.assertIn(
            "invalid trust value 'all' on mailbox 'alice': expected one of "
            '["none", "verified"]',
            message,
        )

    def test_inheritance(self):
        """Mailbox trust and senders replace the top-level ones; absent inherits."""
        config, _ = load(
            'trust = "verified"\ntrusted_senders = ["*@a.org"]\n'
            + BASE
            + ALICE
            + 'trust = "none"\ntrusted_senders = []\n'
            + BOB
        )
        alice, bob = config.mailbox("alice"), config.mailbox("bob")
        self.assertEqual(config.effective_trust(alice), "none")
        self.assertEqual(config.effective_trusted_senders(alice), ())
        self.assertEqual(config.effective_trust(bob), "verified")
        self.assertEqual(config.effective_trusted_senders(bob), ("*@a.org",))


class LegacySchemaTests(_Case):
    def test_hook_template_block(self):
        """Acceptance 3: a C{[[hook_template]]} block is refused."""
        message = self.error(BASE + '[[hook_template]]\nname = "x"\nrun_as = "root"\n')
        self.assertIn(
            "[[hook_template]] blocks are not supported; template hooks were removed. "
            "See docs/hooks.md for the supported raw-cmd schema",
            message,
        )

    def test_hook_template_subtable(self):
        """A C{[[hook_template.x]]} header is refused the same way."""
        self.assertIn("template hooks were removed", self.error(BASE + "[[hook_template.x]]\n"))

    def test_scan_precedes_toml_parse(self):
        """The legacy scan runs on text that is not even valid TOML."""
        self.assertIn("docs/hooks.md", self.error("[[hook_template]]\nthis is = = broken\n"))

    def test_legacy_on_receive_array(self):
        """C{[[mailboxes.<n>.on_receive]]} asks for a migration to hooks."""
        message = self.error(BASE + ALICE + "[[mailboxes.alice.on_receive]]\ncmd = 'x'\n")
        self.assertIn(
            "mailbox 'alice' uses the legacy `on_receive` schema; migrate to "
            '`[[mailboxes.alice.hooks]]` with `event = "on_receive"`',
            message,
        )

    def test_legacy_on_receive_match(self):
        """C{[mailboxes.<n>.on_receive.match]} asks for a migration to hooks."""
        message = self.error(BASE + ALICE + "[mailboxes.alice.on_receive.match]\nfrom = 'x'\n")
        self.assertIn(
            "mailbox 'alice' uses the legacy `on_receive.match` schema; migrate to "
            '`[[mailboxes.alice.hooks]]` with `event = "on_receive"`',
            message,
        )

    def test_run_as(self):
        """Acceptance 4: a hook with C{run_as} is refused."""
        message = self.error(
            BASE + ALICE + hook('event = "on_receive"\ncmd = ["/bin/true"]\nrun_as = "ops"')
        )
        self.assertIn(
            "hook sets `run_as`; the field was removed — hooks now run as the mailbox's "
            "`owner`",
            message,
        )

    def test_origin(self):
        """Acceptance 4: a hook with C{origin} is refused."""
        message = self.error(
            BASE + ALICE + hook('origin = "mcp"\nevent = "on_receive"\ncmd = ["/bin/true"]')
        )
        self.assertIn("hook sets `origin`; the field was removed", message)

    def test_dangerously_support_untrusted(self):
        """Acceptance 4: the old flag name points to C{fire_on_untrusted}."""
        message = self.error(
            BASE
            + ALICE
            + hook('event = "on_receive"\ncmd = ["/bin/true"]\ndangerously_support_untrusted=true')
        )
        self.assertIn(
            "hook sets `dangerously_support_untrusted`; the field was renamed to "
            "`fire_on_untrusted`",
            message,
        )

    def test_template(self):
        """Acceptance 4: a hook with C{template} is refused."""
        message = self.error(BASE + ALICE + hook('event = "on_receive"\ntemplate = "x"'))
        self.assertIn(
            "hook sets `template`; template hooks were removed. See docs/hooks.md for the "
            "supported raw-cmd schema",
            message,
        )

    def test_params(self):
        """A hook with C{params} is refused as a template hook."""
        message = self.error(BASE + ALICE + hook('event = "on_receive"\nparams = 1'))
        self.assertIn("hook sets `params`; template hooks were removed", message)

    def test_only_inside_hook_blocks(self):
        """Legacy key names outside hook blocks are ordinary ignored keys."""
        config, _ = load(BASE + 'origin = "x"\n' + ALICE + 'run_as = "y"\n')
        self.assertEqual(config.mailbox("alice").owner, "alice")


class StdinTests(_Case):
    def test_named_hook(self):
        """Acceptance 5: every C{stdin} value on a named hook is refused by name."""
        for value in ("none", "email", "email_json"):
            message = self.error(
                BASE
                + ALICE
                + hook(f'name = "named_hook"\nevent = "on_receive"\ncmd = ["/bin/true"]\n'
                       f'stdin = "{value}"')
            )
            self.assertIn(
                "hook 'named_hook' carries removed field 'stdin' — remove this line and "
                "restart aimx serve; the email is always piped to hooks",
                message,
            )

    def test_unnamed_hook_derived_name(self):
        """Acceptance 5: an unnamed hook is named by its derived name."""
        message = self.error(
            BASE + ALICE + hook('event = "on_receive"\ncmd = ["/bin/true"]\nstdin = "none"')
        )
        self.assertIn("hook '9d0373b47d73' carries removed field 'stdin'", message)

    def test_before_typed_decode(self):
        """The stdin check wins over a type error in the same hook."""
        message = self.error(BASE + ALICE + hook('event = 5\ncmd = ["/bin/true"]\nstdin = 1'))
        self.assertIn("always piped", message)


class CatchallTests(_Case):
    def test_catchall_with_hook(self):
        """Acceptance 6: the catchall may not have hooks."""
        message = self.error(
            BASE + CATCHALL + hook('event = "on_receive"\ncmd = ["/bin/true"]', "catchall")
        )
        self.assertIn(
            "mailbox 'catchall' is the catchall but has hooks attached; catchall does not "
            "support hooks",
            message,
        )

    def test_detection_by_address_case_insensitive(self):
        """The catchall is found by its address, ASCII case-insensitively, not its name."""
        text = BASE + '[mailboxes.any]\naddress = "*@TEST.Com"\nowner = "aimx-catchall"\n'
        message = self.error(text + hook('event = "on_receive"\ncmd = ["/bin/true"]', "any"))
        self.assertIn("catchall does not support hooks", message)

    def test_name_alone_is_not_catchall(self):
        """A mailbox keyed C{catchall} with a concrete address may have hooks."""
        text = BASE + '[mailboxes.catchall]\naddress = "c@test.com"\nowner = "c"\n'
        config, _ = load(text + hook('event = "on_receive"\ncmd = ["/bin/true"]', "catchall"))
        self.assertIsNone(config.catchall())


class HookValidationTests(_Case):
    def hook_error(self, body: str) -> str:
        """The load error for one hook on alice."""
        return self.error(BASE + ALICE + hook(body))

    def test_timeout_zero(self):
        """Acceptance 7: C{timeout_secs = 0} is refused."""
        message = self.hook_error('event = "on_receive"\ncmd = ["/bin/true"]\ntimeout_secs = 0')
        self.assertIn(
            "hook '<anonymous>' on mailbox 'alice' has `timeout_secs = 0`: must be > 0", message
        )

    def test_timeout_over_max(self):
        """Acceptance 7: C{timeout_secs = 700} is refused."""
        message = self.hook_error(
            'name = "t"\nevent = "on_receive"\ncmd = ["/bin/true"]\ntimeout_secs = 700'
        )
        self.assertIn(
            "hook 't' on mailbox 'alice' has `timeout_secs = 700` which exceeds the max of 600",
            message,
        )

    def test_timeout_max_loads(self):
        """Acceptance 7: C{timeout_secs = 600} loads."""
        config, _ = load(
            BASE + ALICE + hook('event = "on_receive"\ncmd = ["/bin/true"]\ntimeout_secs = 600')
        )
        self.assertEqual(config.mailbox("alice").hooks[0].timeout_secs, 600)

    def test_timeout_negative(self):
        """A negative timeout is a type error naming the key."""
        message = self.hook_error('event = "on_receive"\ncmd = ["/bin/true"]\ntimeout_secs = -1')
        self.assertIn("mailboxes.alice.hooks[0].timeout_secs: expected a non-negative integer",
                      message)

    def test_fire_on_untrusted_after_send(self):
        """Acceptance 8: the flag on an C{after_send} hook is refused."""
        message = self.hook_error(
            'event = "after_send"\ncmd = ["/bin/true"]\nfire_on_untrusted = true'
        )
        self.assertIn(
            "hook '<anonymous>' on mailbox 'alice' sets `fire_on_untrusted = true` on event "
            "'after_send': fire_on_untrusted is on_receive only",
            message,
        )

    def test_fire_on_untrusted_on_receive(self):
        """Acceptance 8: the flag on an C{on_receive} hook loads."""
        config, _ = load(
            BASE
            + ALICE
            + hook('event = "on_receive"\ncmd = ["/bin/true"]\nfire_on_untrusted = true')
        )
        self.assertTrue(config.mailbox("alice").hooks[0].fire_on_untrusted)

    def test_empty_cmd(self):
        """Acceptance 9: an empty argv is refused."""
        message = self.hook_error('event = "on_receive"\ncmd = []')
        self.assertIn(
            "hook '<anonymous>' on mailbox 'alice' has empty `cmd`: `cmd` must be a non-empty "
            'argv array, e.g. `cmd = ["/bin/echo", "hi"]`',
            message,
        )

    def test_blank_cmd0(self):
        """A blank program is refused."""
        message = self.hook_error('event = "on_receive"\ncmd = ["  ", "x"]')
        self.assertIn("hook '<anonymous>' on mailbox 'alice' has blank `cmd[0]`", message)

    def test_relative_cmd0(self):
        """Acceptance 9: a relative program is refused."""
        message = self.hook_error('event = "on_receive"\ncmd = ["echo", "hi"]')
        self.assertIn(
            "hook '<anonymous>' on mailbox 'alice' has non-absolute `cmd[0]` 'echo': hooks fire "
            "from /var/lib/aimx/... so PATH lookup is brittle; use an absolute path "
            "(e.g. `/bin/echo` instead of `echo`)",
            message,
        )

    def test_minimal_hook(self):
        """Acceptance 10: a minimal hook loads with its defaults."""
        config, _ = load(BASE + ALICE + hook('event = "on_receive"\ncmd = ["/bin/true"]'))
        (h,) = config.mailbox("alice").hooks
        self.assertEqual(
            (h.event, h.cmd, h.fire_on_untrusted, h.timeout_secs, h.type),
            ("on_receive", ("/bin/true",), False, 60, "cmd"),
        )

    def test_bad_event(self):
        """Acceptance 11: an unknown event is a load error."""
        message = self.hook_error('event = "on_send"\ncmd = ["/bin/true"]')
        self.assertIn(
            "mailboxes.alice.hooks[0].event: unknown variant `on_send`, expected on_receive or "
            "after_send",
            message,
        )

    def test_bad_type(self):
        """Acceptance 11: a non-cmd type is refused."""
        message = self.hook_error('event = "on_receive"\ntype = "fax"\ncmd = ["/bin/true"]')
        self.assertIn(
            "hook '<anonymous>' on mailbox 'alice' has unsupported type 'fax': only `cmd` "
            "and `webhook` are supported",
            message,
        )

    def test_invalid_names(self):
        """Acceptance 11: names outside the regex are refused."""
        for name in (".x", "-x", "has space", "über", "a" * 129, ""):
            message = self.hook_error(f'name = "{name}"\nevent = "on_receive"\ncmd = ["/bin/true"]')
            self.assertIn(
                f"invalid hook name '{name}' on mailbox 'alice': must match "
                "[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}",
                message,
            )

    def test_valid_names(self):
        """Acceptance 11: boundary names inside the regex load."""
        for name in ("a", "_", "9", "abc-123_def.ghi", "a" * 128):
            config, _ = load(
                BASE + ALICE + hook(f'name = "{name}"\nevent = "on_receive"\ncmd = ["/bin/true"]')
            )
            self.assertEqual(config.mailbox("alice").hooks[0].name, name)

    def test_missing_event_and_cmd(self):
        """Missing C{event} or C{cmd} is a missing-field error naming the hook."""
        self.assertIn(
            "mailboxes.alice.hooks[0]: missing field `event`", self.hook_error('cmd = ["/bin/t"]')
        )
        self.assertIn(
            "mailboxes.alice.hooks[0]: missing field `cmd`", self.hook_error('event = "on_receive"')
        )

    def test_wrong_types(self):
        """Wrong value types name the key."""
        strings = "hooks[0].cmd: expected an array of strings"
        cases = [
            ('event = "on_receive"\ncmd = "/bin/true"', strings),
            ('event = "on_receive"\ncmd = ["/bin/x", 1]', strings),
            ('event = "on_receive"\ncmd = ["/bin/x"]\ntimeout_secs = true',
             "hooks[0].timeout_secs: expected an integer"),
            ('event = "on_receive"\ncmd = ["/bin/x"]\ntimeout_secs = 1.5',
             "hooks[0].timeout_secs: expected an integer"),
            ('event = "on_receive"\ncmd = ["/bin/x"]\nfire_on_untrusted = "yes"',
             "hooks[0].fire_on_untrusted: expected a boolean"),
            ('name = 3\nevent = "on_receive"\ncmd = ["/bin/x"]',
             "hooks[0].name: expected a string"),
        ]
        for body, expected in cases:
            self.assertIn("mailboxes.alice." + expected, self.hook_error(body))

    def test_order_within_hook(self):
        """With several faults, the name is reported before the argv."""
        message = self.hook_error('name = "-x"\nevent = "on_receive"\ncmd = []\ntimeout_secs = 0')
        self.assertIn("invalid hook name '-x'", message)


class HookUniquenessTests(_Case):
    def test_duplicate_explicit(self):
        """Acceptance 12: the same explicit name on two mailboxes is refused."""
        body = 'name = "dup"\nevent = "on_receive"\ncmd = ["/bin/true"]'
        message = self.error(BASE + ALICE + hook(body) + BOB + hook(body, "bob"))
        self.assertIn(
            "duplicate hook name 'dup' on mailboxes 'alice' and 'bob': hook names must be "
            "globally unique",
            message,
        )

    def test_identical_anonymous(self):
        """Acceptance 12: identical anonymous hooks on two mailboxes are refused."""
        body = 'event = "on_receive"\ncmd = ["/bin/true"]'
        message = self.error(BASE + ALICE + hook(body) + BOB + hook(body, "bob"))
        self.assertIn(
            "anonymous hooks on mailboxes 'alice' and 'bob' have identical event/cmd and derive "
            "the same name '9d0373b47d73': set an explicit `name` on at least one to "
            "disambiguate",
            message,
        )

    def test_identical_anonymous_one_mailbox(self):
        """Two identical anonymous hooks on one mailbox collide too."""
        body = 'event = "on_receive"\ncmd = ["/bin/true"]'
        message = self.error(BASE + ALICE + hook(body) + hook(body))
        self.assertIn("anonymous hooks on mailboxes 'alice' and 'alice'", message)

    def test_explicit_vs_derived(self):
        """An explicit name equal to another hook's derived name is refused."""
        message = self.error(
            BASE
            + ALICE
            + hook('event = "on_receive"\ncmd = ["/bin/true"]')
            + BOB
            + hook('name = "9d0373b47d73"\nevent = "after_send"\ncmd = ["/bin/x"]', "bob")
        )
        self.assertIn(
            "explicit hook name '9d0373b47d73' on one mailbox collides with the derived name of "
            "an anonymous hook on another (mailboxes 'alice' and 'bob'): rename the explicit "
            "hook or set an explicit `name` on the anonymous one",
            message,
        )

    def test_flag_distinguishes(self):
        """The same argv with a different flag derives a different name and loads."""
        config, _ = load(
            BASE
            + ALICE
            + hook('event = "on_receive"\ncmd = ["/bin/true"]')
            + hook('event = "on_receive"\ncmd = ["/bin/true"]\nfire_on_untrusted = true')
        )
        names = [h.name for h in config.mailbox("alice").hooks]
        self.assertEqual(names, ["9d0373b47d73", "4315591c7fd4"])

    def test_validate_hooks_after_append(self):
        """validate_hooks checks a config changed in memory, without the path prefix."""
        config, _ = load(
            BASE + ALICE + hook('name = "dup"\nevent = "on_receive"\ncmd = ["/bin/a"]')
        )
        alice = config.mailbox("alice")
        extra = make_hook("after_send", ["/bin/b"], name="dup")
        changed = attrs.evolve(
            config, mailboxes=[attrs.evolve(alice, hooks=alice.hooks + (extra,))]
        )
        e = self.assertRaises(ConfigError, validate_hooks, changed)
        self.assertTrue(str(e).startswith("duplicate hook name 'dup'"))


class UnknownKeyTests(_Case):
    def test_unknown_hook_key(self):
        """Acceptance 13: an unknown key in a hook is refused."""
        message = self.error(BASE + ALICE + hook('event = "on_receive"\ncmd = ["/bin/t"]\nfoo = 1'))
        self.assertIn("mailboxes.alice.hooks[0]: unknown field `foo`", message)

    def test_unknown_top_and_mailbox_keys(self):
        """Acceptance 13: unknown top-level and mailbox keys are ignored."""
        config, _ = load('foo = 1\n' + BASE + ALICE + 'bar = "x"\nallow_root_catchall = true\n')
        self.assertEqual(config.mailbox("alice").address, "alice@test.com")


class OwnerTests(_Case):
    def test_invalid_owner(self):
        """Acceptance 14: an owner that cannot be a Linux user name is refused."""
        message = self.error(BASE + '[mailboxes.a]\naddress = "a@test.com"\nowner = "Bad User"\n')
        self.assertIn(
            "mailbox 'a' has invalid owner 'Bad User': must be 'root', 'aimx-catchall', or a "
            "valid Linux username matching [a-z_][a-z0-9_-]*[$]?",
            message,
        )

    def test_owner_too_long(self):
        """An owner longer than 32 characters is refused."""
        message = self.error(BASE + f'[mailboxes.a]\naddress = "a@x"\nowner = "{"u" * 33}"\n')
        self.assertIn("has invalid owner", message)

    def test_owner_forms_accepted(self):
        """Underscore, dash, digits and a trailing C{$} are valid owner names."""
        config, _ = load(BASE + '[mailboxes.a]\naddress = "a@x"\nowner = "_svc-1$"\n')
        self.assertEqual(config.mailbox("a").owner, "_svc-1$")

    def test_orphan_owner_warning(self):
        """Acceptance 14: a valid but unknown owner loads with the orphan warning."""
        text = BASE + '[mailboxes.a]\naddress = "a@test.com"\nowner = "nosuchuser123"\n'
        config, warnings = load(text, owner_exists=lambda owner: False)
        self.assertEqual(config.mailbox("a").owner, "nosuchuser123")
        self.assertEqual(
            warnings,
            [
                "mailbox 'a' owner 'nosuchuser123' does not resolve via getpwnam; mailbox "
                "marked inactive — create the user or update config.toml"
            ],
        )

    def test_reserved_owners_not_looked_up(self):
        """C{root} and C{aimx-catchall} are never passed to the passwd lookup."""
        looked_up = []
        load(BASE + CATCHALL + '[mailboxes.r]\naddress = "r@x"\nowner = "root"\n',
             owner_exists=looked_up.append)
        self.assertEqual(looked_up, [])

    def test_root_owner_warning(self):
        """Acceptance 15: a root-owned mailbox loads with the root warning."""
        config, warnings = load(BASE + '[mailboxes.r]\naddress = "r@test.com"\nowner = "root"\n')
        self.assertEqual(config.mailbox("r").owner, "root")
        self.assertEqual(
            warnings,
            [
                "mailbox 'r' is owned by root: its mail is root-only and its hooks run as root — "
                "use a regular user unless you mean it"
            ],
        )

    def test_empty_owner(self):
        """Acceptance 16: an empty owner is a missing required field."""
        message = self.error(BASE + '[mailboxes.a]\naddress = "a@test.com"\nowner = ""\n')
        self.assertIn(
            "mailbox 'a' is missing required field 'owner'; re-run 'sudo aimx setup' or "
            "hand-edit config.toml",
            message,
        )

    def test_blank_owner(self):
        """A whitespace-only owner counts as empty."""
        message = self.error(BASE + '[mailboxes.a]\naddress = "a@x"\nowner = "  "\n')
        self.assertIn("missing required field 'owner'", message)

    def test_absent_owner(self):
        """Acceptance 16: an absent owner is a missing-field error."""
        message = self.error(BASE + '[mailboxes.a]\naddress = "a@test.com"\n')
        self.assertIn("mailboxes.a: missing field `owner`", message)


class DecodeTests(_Case):
    def test_syntax_error(self):
        """A TOML syntax error names the file."""
        self.assertIn("line 1", self.error('domain = "x\n'))

    def test_missing_domain(self):
        """A file without C{domain} is a missing-field error."""
        self.assertEqual(self.error(CATCHALL), f"{PATH}: missing field `domain`")

    def test_missing_address(self):
        """A mailbox without C{address} is a missing-field error."""
        message = self.error(BASE + '[mailboxes.a]\nowner = "a"\n')
        self.assertIn("mailboxes.a: missing field `address`", message)

    def test_top_level_types(self):
        """Wrong top-level types name the key."""
        cases = [
            ("domain = 5\n", "domain: expected a string"),
            (BASE + 'enable_ipv6 = "no"\n', "enable_ipv6: expected a boolean"),
            (BASE + "trusted_senders = [1]\n", "trusted_senders: expected an array of strings"),
            (BASE + "mailboxes = 1\n", "mailboxes: expected a table"),
            (BASE + "upgrade = 1\n", "upgrade: expected a table"),
            (BASE + "[upgrade]\nrelease_manifest_url = 1\n",
             "upgrade.release_manifest_url: expected a string"),
            (BASE + "outbound_check_domain = true\n",
             "outbound_check_domain: expected a string"),
        ]
        for text, expected in cases:
            self.assertEqual(self.error(text), f"{PATH}: {expected}")

    def test_mailbox_types(self):
        """Wrong mailbox types name the key."""
        cases = [
            ("[mailboxes]\na = 1\n", "mailboxes.a: expected a table"),
            (ALICE + 'trusted_senders = "x"\n',
             "mailboxes.alice.trusted_senders: expected an array of strings"),
            (ALICE + "hooks = 1\n", "mailboxes.alice.hooks: expected an array"),
            (ALICE + "hooks = [1]\n", "mailboxes.alice.hooks[0]: expected a table"),
        ]
        for text, expected in cases:
            self.assertEqual(self.error(BASE + text), f"{PATH}: {expected}")


class SessionsPerIpTests(_Case):
    def test_set_value_loads(self):
        """C{max_sessions_per_ip} takes any integer >= 1, 1 included."""
        for value in (1, 3, 500):
            config, _ = load(f"max_sessions_per_ip = {value}\n" + BASE + CATCHALL)
            self.assertEqual(config.max_sessions_per_ip, value)

    def test_wrong_type(self):
        """A string, boolean, float or array is a type error naming the key and the file."""
        for value in ('"3"', "true", "2.5", "[3]"):
            self.assertEqual(
                self.error(f"max_sessions_per_ip = {value}\n" + BASE),
                f"{PATH}: max_sessions_per_ip: expected an integer",
            )

    def test_below_one(self):
        """Zero or a negative value is refused, naming the key, the file and the bound."""
        for value in (0, -1, -(2**63)):
            message = self.error(f"max_sessions_per_ip = {value}\n" + BASE)
            self.assertEqual(
                message,
                f"{PATH}: max_sessions_per_ip: expected an integer >= 1, got {value}",
            )

    def test_in_a_table_is_not_the_key(self):
        """The key inside a mailbox table is an unknown mailbox key, ignored."""
        config, _ = load(BASE + ALICE + "max_sessions_per_ip = 0\n")
        self.assertEqual(config.max_sessions_per_ip, 20)

    def test_default_not_written(self):
        """A rewrite omits the key at its default and writes any other value."""
        config, _ = load(BASE + CATCHALL)
        self.assertNotIn("max_sessions_per_ip", to_toml(config))
        config, _ = load("max_sessions_per_ip = 20\n" + BASE + CATCHALL)
        self.assertNotIn("max_sessions_per_ip", to_toml(config))
        config, _ = load("max_sessions_per_ip = 7\n" + BASE + CATCHALL)
        self.assertEqual(to_toml(config)["max_sessions_per_ip"], 7)

    def test_kept_by_control_edits(self):
        """A mailbox edit and its atomic rewrite keep a non-default value."""
        config, _ = load("max_sessions_per_ip = 7\n" + BASE + CATCHALL)
        edited = configedit.add_mailbox(config, "carol", "carol")
        directory = self.mktemp()
        os.makedirs(directory)
        configfile.write_atomic(directory, edited)
        again, _ = configfile.load(directory)
        self.assertEqual(again.max_sessions_per_ip, 7)
        self.assertEqual(again.mailbox("carol").owner, "carol")

    def test_contrib_example_loads(self):
        """contrib/config.toml loads and documents the key at its default."""
        path = os.path.join(os.path.dirname(__file__), os.pardir, "contrib", "config.toml")
        with open(path) as f:
            text = f.read()
        config, _ = load(text)
        self.assertIn("max_sessions_per_ip = 20", text)
        self.assertEqual(config.max_sessions_per_ip, 20)

    def test_contrib_guard_examples_load(self):
        """The commented [outbound], [approval] and per-mailbox examples are valid once
        uncommented."""
        path = os.path.join(os.path.dirname(__file__), os.pardir, "contrib", "config.toml")
        with open(path) as f:
            lines = f.read().split("\n")
        out, inside = [], False
        for line in lines:
            if line in ("# [outbound]", "# [approval]", "# [mailboxes.support.outbound]"):
                inside = True
            elif not line.startswith("# "):
                inside = False
            out.append(line[2:] if inside else line)
        config, _ = load("\n".join(out))
        self.assertEqual(config.approval,
                         cfg.ApprovalConfig("aimx-approvers", 7, "ops@owner.example"))
        policy = config.effective_outbound(config.mailbox("support"))
        self.assertEqual((policy.deny, policy.allow, policy.max_per_hour, policy.approval,
                          policy.attachment_roots),
                         (("*@competitor.example",), ("*@customer.example",
                                                      "alice@partner.example"), 20,
                          "new-recipients", ("/srv/support/outbox",)))


    def test_contrib_inbound_and_audit_examples_load(self):
        """The commented guards, hook rate and audit keys are valid once uncommented."""
        path = os.path.join(os.path.dirname(__file__), os.pardir, "contrib", "config.toml")
        with open(path) as f:
            lines = f.read().split("\n")
        keys = ("# guards = ", "# hook_rate_per_sender = ", "# audit_dir = ",
                "# audit_retention_days = ")
        out = [line[2:] if line.startswith(keys) else line for line in lines]
        self.assertEqual(sum(1 for line in lines if line.startswith(keys)), len(keys))
        config, _ = load("\n".join(out))
        support = config.mailbox("support")
        self.assertEqual((support.guards, support.hook_rate_per_sender),
                         ("default", cfg.HookRate(30)))
        self.assertEqual((config.effective_audit_dir, config.audit_retention_days),
                         ("/var/lib/aimx/audit", 90))


class BackupMxTests(_Case):
    def test_loads_and_round_trips(self):
        """backup_mx: a host name, kept as written, written back by to_toml and by an
        in-place edit; absent is None and not written."""
        config, _ = load('backup_mx = "MX2.example.net"\n' + BASE + CATCHALL)
        self.assertEqual(config.backup_mx, "MX2.example.net")
        self.assertEqual(to_toml(config)["backup_mx"], "MX2.example.net")
        self.assertEqual(load(tomli_w.dumps(to_toml(config)))[0], config)
        plain, _ = load(BASE + CATCHALL)
        self.assertIsNone(plain.backup_mx)
        self.assertNotIn("backup_mx", to_toml(plain))
        text = BASE + "# keep me\n" + CATCHALL
        edited = configedit.rewrite_text(text, PATH, attrs.evolve(plain, backup_mx="mx3.b.org"))
        self.assertIn("# keep me", edited)
        self.assertEqual(load(edited)[0].backup_mx, "mx3.b.org")
        self.assertEqual(load(configedit.rewrite_text(edited, PATH, plain))[0].backup_mx, None)

    def test_refused(self):
        """Not a string, not a host name, or the domain itself: an error naming the key
        and the file."""
        cases = (
            ("backup_mx = 5\n", "backup_mx: expected a string"),
            ('backup_mx = ""\n', "backup_mx: '' is not a host name: backup_mx cannot be empty"),
            ('backup_mx = "mx2"\n', "backup_mx: 'mx2' is not a host name: 'mx2' needs at least "
                                    "two labels"),
            ('backup_mx = "mx2.example.net."\n', "has an empty label"),
            ('backup_mx = "mx 2.example.net"\n', "invalid character ' '"),
            ('backup_mx = "TEST.com"\n', "backup_mx: 'TEST.com' is the domain itself; a backup "
                                         "MX is another server"),
        )
        for line, message in cases:
            error = self.error(line + BASE)
            self.assertTrue(error.startswith(f"{PATH}: backup_mx: "), error)
            self.assertIn(message, error)

    def test_contrib_documents_it(self):
        """contrib/config.toml describes the key (commented out: most setups have none)."""
        path = os.path.join(os.path.dirname(__file__), os.pardir, "contrib", "config.toml")
        with open(path) as f:
            text = f.read()
        self.assertIn('# backup_mx = "mx2.example.net"', text)
        self.assertIsNone(load(text)[0].backup_mx)
        self.assertEqual(load(text.replace("# backup_mx", "backup_mx"))[0].backup_mx,
                         "mx2.example.net")


class ValidationOrderTests(_Case):
    def test_empty_owner_before_trust(self):
        """Step 6 (empty owner) is reported before step 7 (trust)."""
        message = self.error(
            'trust = "x"\n' + BASE + '[mailboxes.a]\naddress = "a@x"\nowner = ""\n'
        )
        self.assertIn("missing required field 'owner'", message)

    def test_trust_before_post_parse(self):
        """Step 7 (trust) is reported before step 8 (catchall hooks)."""
        message = self.error(
            'trust = "x"\n' + BASE + CATCHALL
            + hook('event = "on_receive"\ncmd = ["/bin/true"]', "catchall")
        )
        self.assertIn("invalid top-level trust value 'x'", message)

    def test_post_parse_before_owner(self):
        """Step 8 (fire_on_untrusted) is reported before step 9 (owner)."""
        message = self.error(
            BASE + '[mailboxes.a]\naddress = "a@x"\nowner = "Bad"\n'
            + hook('event = "after_send"\ncmd = ["/bin/t"]\nfire_on_untrusted = true', "a")
        )
        self.assertIn("fire_on_untrusted is on_receive only", message)

    def test_owner_before_hooks(self):
        """Step 9 (owner) is reported before step 10 (hook checks)."""
        message = self.error(
            BASE + '[mailboxes.a]\naddress = "a@x"\nowner = "Bad"\n'
            + hook('event = "on_receive"\ncmd = []', "a")
        )
        self.assertIn("has invalid owner 'Bad'", message)


class ToTomlTests(SynchronousTestCase):
    def test_minimal_omits_defaults(self):
        """Unset keys are omitted; domain, data_dir, selector, ipv6 and mailboxes are written."""
        config, _ = load(BASE + CATCHALL)
        self.assertEqual(
            to_toml(config),
            {
                "domain": "test.com",
                "data_dir": "/var/lib/aimx",
                "dkim_selector": "aimx",
                "enable_ipv6": False,
                "mailboxes": {"catchall": {"address": "*@test.com", "owner": "aimx-catchall"}},
            },
        )

    def test_set_values_written(self):
        """Set optional keys, mailbox overrides and non-default hook keys are written."""
        config, _ = load(
            BASE
            + 'trust = "verified"\ntrusted_senders = ["*@a.org"]\nverify_host = "https://v"\n'
            + 'outbound_check_domain = "example.net"\n'
            + 'signature = ""\n[upgrade]\nrelease_manifest_url = "https://m"\n'
            + ALICE
            + 'trust = "none"\ntrusted_senders = []\n'
            + hook('name = "n"\nevent = "on_receive"\ncmd = ["/bin/a"]\n'
                   'fire_on_untrusted = true\ntimeout_secs = 5')
            + hook('event = "after_send"\ncmd = ["/bin/b"]')
        )
        doc = to_toml(config)
        self.assertEqual(doc["trust"], "verified")
        self.assertEqual(doc["trusted_senders"], ["*@a.org"])
        self.assertEqual(doc["verify_host"], "https://v")
        self.assertEqual(doc["outbound_check_domain"], "example.net")
        self.assertEqual(doc["signature"], "")
        self.assertEqual(doc["upgrade"], {"release_manifest_url": "https://m"})
        self.assertEqual(
            doc["mailboxes"]["alice"],
            {
                "address": "alice@test.com",
                "owner": "alice",
                "trust": "none",
                "trusted_senders": [],
                "hooks": [
                    {"name": "n", "event": "on_receive", "type": "cmd", "cmd": ["/bin/a"],
                     "fire_on_untrusted": True, "timeout_secs": 5},
                    {"event": "after_send", "type": "cmd", "cmd": ["/bin/b"]},
                ],
            },
        )

    def test_round_trip(self):
        """Dumping and reloading gives an equal config."""
        config, _ = load(
            BASE + 'signature = "Bye"\nmax_sessions_per_ip = 9\n' + CATCHALL + ALICE
            + hook('event = "on_receive"\ncmd = ["/bin/sh", "-c", "echo \\"$X\\""]')
        )
        again, _ = load(tomli_w.dumps(to_toml(config)))
        self.assertEqual(again, config)

    def test_data_dir_override_not_written(self):
        """An in-memory data_dir override is not serialised; the file's value is."""
        config, _ = load(BASE + 'data_dir = "/srv/a"\n')
        moved = config.with_data_dir("/tmp/x").with_data_dir("/tmp/y")
        self.assertEqual(moved.data_dir, "/tmp/y")
        self.assertEqual(to_toml(moved)["data_dir"], "/srv/a")
        self.assertEqual(to_toml(attrs.evolve(moved, mailboxes=()))["data_dir"], "/srv/a")


class ResolveMailboxTests(SynchronousTestCase):
    def setUp(self):
        self.config, _ = load(
            BASE
            + '[mailboxes.support]\naddress = "Support@test.com"\nowner = "s"\n'
            + ALICE
            + CATCHALL
        )

    def test_case_insensitive_local_part(self):
        """The local part is compared case-insensitively with the address's."""
        self.assertEqual(resolve_mailbox(self.config, "SUPPORT@test.com").name, "support")
        self.assertEqual(resolve_mailbox(self.config, "Alice@TEST.com").name, "alice")

    def test_plus_tag_dropped(self):
        """C{alice+tag@...} routes to alice."""
        self.assertEqual(resolve_mailbox(self.config, "alice+news@test.com").name, "alice")

    def test_routes_by_address_not_name(self):
        """Routing uses the configured address, not the table key."""
        config, _ = load(BASE + '[mailboxes.bot]\naddress = "agent@test.com"\nowner = "b"\n')
        self.assertEqual(resolve_mailbox(config, "agent@test.com").name, "bot")
        self.assertIsNone(resolve_mailbox(config, "bot@test.com"))

    def test_unknown_goes_to_catchall(self):
        """An unknown local part routes to the catchall."""
        self.assertEqual(resolve_mailbox(self.config, "nobody@test.com").name, "catchall")
        self.assertEqual(resolve_mailbox(self.config, "*@test.com").name, "catchall")

    def test_no_catchall(self):
        """Without a catchall an unknown local part routes nowhere."""
        config, _ = load(BASE + ALICE)
        self.assertIsNone(resolve_mailbox(config, "nobody@test.com"))

    def test_catchall_case_insensitive(self):
        """The catchall is detected ASCII case-insensitively against the domain."""
        config, _ = load(
            'domain = "Test.COM"\n[mailboxes.c]\naddress = "*@test.com"\nowner = "c"\n'
        )
        self.assertEqual(resolve_mailbox(config, "x@test.com").name, "c")
        self.assertTrue(config.mailboxes[0].is_catchall("TEST.com"))

    def test_first_match_wins(self):
        """Two mailboxes with one local part: the first in the file wins."""
        config, _ = load(
            BASE + '[mailboxes.b]\naddress = "x@test.com"\nowner = "b"\n'
            + '[mailboxes.a]\naddress = "X@test.com"\nowner = "a"\n'
        )
        self.assertEqual(resolve_mailbox(config, "x@test.com").name, "b")

    def test_non_ascii_not_folded(self):
        """Only ASCII letters fold: the Kelvin sign does not reach mailbox C{k}."""
        config, _ = load(BASE + '[mailboxes.k]\naddress = "k@test.com"\nowner = "k"\n')
        self.assertIsNone(resolve_mailbox(config, "\u212a@test.com"))

    def test_index_follows_evolve(self):
        """A config evolved with a new mailbox routes to it."""
        added = attrs.evolve(
            self.config,
            mailboxes=self.config.mailboxes + (MailboxConfig("new", "new@test.com", "n"),),
        )
        self.assertEqual(resolve_mailbox(added, "NEW@test.com").name, "new")
        self.assertEqual(added.mailbox("new").owner, "n")


class ConfigValueTests(SynchronousTestCase):
    def test_lookup(self):
        """mailbox() finds by name; unknown names give None."""
        config, _ = load(BASE + ALICE)
        self.assertEqual(config.mailbox("alice").local_part, "alice")
        self.assertIsNone(config.mailbox("bob"))
        self.assertIsNone(config.catchall())

    def test_hashable_and_equal(self):
        """Configs are frozen values: equal when built alike, and hashable."""
        a = Config(domain="x", mailboxes=[MailboxConfig("m", "m@x", "o")])
        b = Config(domain="x", mailboxes=(MailboxConfig("m", "m@x", "o"),))
        self.assertEqual(a, b)
        self.assertEqual(hash(a), hash(b))
        self.assertRaises(attrs.exceptions.FrozenInstanceError, setattr, a, "domain", "y")

    def test_no_default_signature(self):
        """Config() has no signature: nothing is appended unless one is configured."""
        config = Config(domain="x")
        self.assertEqual(config.effective_signature, "")
        self.assertEqual(config.data_dir, cfg.DEFAULT_DATA_DIR)


class MailboxNameTests(SynchronousTestCase):
    def assertRefused(self, name: str, message: str) -> None:
        """validate_mailbox_name(name) raises ConfigError(message)."""
        e = self.assertRaises(ConfigError, validate_mailbox_name, name)
        self.assertEqual(str(e), message)

    def test_empty(self):
        """An empty name is refused."""
        self.assertRefused("", "Mailbox name cannot be empty")

    def test_dot_dot(self):
        """C{..} is refused."""
        self.assertRefused("a..b", "Mailbox name cannot contain '..'")

    def test_leading_trailing_dot(self):
        """A leading or trailing dot is refused."""
        self.assertRefused(".a", "Mailbox name cannot start or end with '.'")
        self.assertRefused("a.", "Mailbox name cannot start or end with '.'")

    def test_reserved(self):
        """C{catchall} and C{aimx-catchall} are reserved."""
        for name in ("catchall", "aimx-catchall"):
            self.assertRefused(
                name, f"Mailbox name '{name}' is reserved for the wildcard catchall slot"
            )

    def test_invalid_character(self):
        """Upper case and other characters are refused, naming the character."""
        for name, char in (("Alice", "A"), ("a+b", "+"), ("a b", " ")):
            self.assertRefused(
                name, f"Mailbox name contains invalid character '{char}'; allowed: [a-z0-9._-]"
            )

    def test_valid(self):
        """Names from the allowed set pass."""
        for name in ("alice", "a.b", "x_1-2", "0"):
            self.assertIsNone(validate_mailbox_name(name))


class ConfigFileTests(SynchronousTestCase):
    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.path = configfile.config_path(self.dir)

    def write(self, data: bytes) -> None:
        """Put C{data} in config.toml."""
        with open(self.path, "wb") as f:
            f.write(data)

    def test_config_path(self):
        """config.toml lives directly in the config directory."""
        self.assertEqual(self.path, os.path.join(self.dir, "config.toml"))

    def test_missing_file(self):
        """A missing file gives the setup hint with its path."""
        e = self.assertRaises(ConfigError, configfile.load, self.dir)
        self.assertEqual(
            str(e), f"Config file not found at {self.path}. Run 'sudo aimx setup' first"
        )

    def test_bad_utf8(self):
        """Bytes that are not UTF-8 give an error naming the file."""
        self.write(b'domain = "\xff"\n')
        e = self.assertRaises(ConfigError, configfile.load, self.dir)
        self.assertIn(f"{self.path}: not valid UTF-8", str(e))

    def test_error_names_file(self):
        """Validation errors carry the file's path."""
        self.write(b'trust = "verfied"\ndomain = "test.com"\n')
        e = self.assertRaises(ConfigError, configfile.load, self.dir)
        self.assertTrue(str(e).startswith(f"{self.path}: invalid top-level trust value"))

    def test_passwd_lookup(self):
        """Unknown owners warn via getpwnam; root gives only the root warning."""
        self.write(
            (BASE + '[mailboxes.a]\naddress = "a@test.com"\nowner = "nosuchuser123"\n'
             + '[mailboxes.r]\naddress = "r@test.com"\nowner = "root"\n').encode()
        )
        _, warnings = configfile.load(self.dir)
        self.assertEqual(len(warnings), 2)
        self.assertIn("owner 'nosuchuser123' does not resolve via getpwnam", warnings[0])
        self.assertIn("mailbox 'r' is owned by root", warnings[1])

    def test_data_dir_override(self):
        """The data_dir override applies in memory only."""
        self.write((BASE + 'data_dir = "/srv/a"\n').encode())
        config, _ = configfile.load(self.dir, data_dir_override="/tmp/d")
        self.assertEqual(config.data_dir, "/tmp/d")
        configfile.write_atomic(self.dir, config)
        reread, _ = configfile.load(self.dir)
        self.assertEqual(reread.data_dir, "/srv/a")

    def read(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read()

    def test_write_atomic(self):
        """Acceptance 18 (file side), with the later decision: the write is 0640, leaves
        no temp and keeps the comments; the hook table is added at the end."""
        original = "# hand comment\n" + BASE + "# more\n" + ALICE
        self.write(original.encode())
        old_umask = os.umask(0o077)
        self.addCleanup(os.umask, old_umask)
        config, _ = configfile.load(self.dir)
        alice = config.mailbox("alice")
        new_hook = make_hook("on_receive", ["/bin/true"], name="added")
        changed = attrs.evolve(config, mailboxes=[attrs.evolve(alice, hooks=(new_hook,))])
        configfile.write_atomic(self.dir, changed)
        self.assertEqual(os.listdir(self.dir), ["config.toml"])
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o640)
        self.assertEqual(self.read().decode(), original + '\n[[mailboxes.alice.hooks]]\n'
                         'name = "added"\nevent = "on_receive"\ntype = "cmd"\n'
                         'cmd = ["/bin/true"]\n')
        reread, _ = configfile.load(self.dir)
        self.assertEqual(reread, changed)
        self.assertEqual(reread.mailbox("alice").hooks[0].name, "added")

    def test_write_without_file(self):
        """With no config.toml yet, the file is written from scratch."""
        config, _ = load(BASE + CATCHALL)
        configfile.write_atomic(self.dir, config)
        self.assertEqual(self.read().decode(), tomli_w.dumps(to_toml(config)))
        self.assertEqual(configfile.load(self.dir)[0], config)

    def test_failed_write_keeps_old_file(self):
        """An fsync or rename that fails leaves the old file byte for byte, and no temp."""
        self.write(("# keep me\n" + BASE + ALICE).encode())
        before = self.read()
        config, _ = configfile.load(self.dir)
        edited = configedit.add_mailbox(config, "carol", "carol")

        def fail(*args, **kwargs):
            raise OSError(28, "No space left on device")

        for name in ("fsync", "replace"):
            patched = self.patch(os, name, fail)
            e = self.assertRaises(OSError, configfile.write_atomic, self.dir, edited)
            patched.restore()
            self.assertEqual(e.errno, 28)
            self.assertEqual(self.read(), before)
            self.assertEqual(os.listdir(self.dir), ["config.toml"])
        configfile.write_atomic(self.dir, edited)
        self.assertTrue(self.read().startswith(before))

    def test_unloadable_file_not_edited(self):
        """A config.toml that does not load is refused, not overwritten."""
        self.write(b'domain = "test.com"\ntrust = "verfied"\n')
        before = self.read()
        e = self.assertRaises(ConfigError, configfile.write_atomic, self.dir,
                              Config(domain="test.com"))
        self.assertEqual(str(e), f"{self.path}: the file does not load, so it is not "
                                 "edited: invalid top-level trust value 'verfied': expected "
                                 'one of ["none", "verified"]')
        self.assertEqual(self.read(), before)

    def test_edit_that_would_reorder_refused(self):
        """An edit whose text would load with another mailbox order is refused with the
        file named, and nothing is written (the net under every in-place edit)."""
        self.write((BASE + '[[mailboxes.alice.hooks]]\nname = "early"\nevent = "on_receive"\n'
                    'cmd = ["/bin/true"]\n' + CATCHALL + ALICE).encode())
        before = self.read()
        config, _ = configfile.load(self.dir)
        edited = configedit.remove_hook(config, "alice", "early")
        e = self.assertRaises(ConfigError, configfile.write_atomic, self.dir, edited)
        self.assertEqual(str(e), f"{self.path}: cannot edit in place: the edited file would "
                                 "list the mailboxes as catchall, alice instead of alice, "
                                 "catchall; nothing was written (make the change by hand)")
        self.assertEqual(self.read(), before)
        self.assertEqual(os.listdir(self.dir), ["config.toml"])

    def test_write_refuses_unloadable(self):
        """write_atomic runs the load validation first: an invalid owner is never written."""
        self.write((BASE + ALICE).encode())
        with open(self.path, "rb") as f:
            before = f.read()
        config, _ = configfile.load(self.dir)
        bad = attrs.evolve(config, mailboxes=[attrs.evolve(config.mailbox("alice"),
                                                           owner="John.Doe")])
        e = self.assertRaises(ConfigError, configfile.write_atomic, self.dir, bad)
        self.assertIn("invalid owner 'John.Doe'", str(e))
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(os.listdir(self.dir), ["config.toml"])

    def test_write_failure_removes_temp(self):
        """A failed rename leaves no temp file and raises OSError."""
        os.makedirs(os.path.join(self.path, "occupied"))
        config = Config(domain="test.com")
        self.assertRaises(OSError, configfile.write_atomic, self.dir, config)
        self.assertEqual(os.listdir(self.dir), ["config.toml"])


class SenderPatternTests(SynchronousTestCase):
    def test_invalid_pattern_rejected(self):
        """An invalid trusted_senders pattern is a config error naming key and pattern."""
        text = 'domain = "t.com"\ntrusted_senders = ["{a,b@x.com"]\n'
        e = self.assertRaises(ConfigError, load_text, text, "/etc/aimx/config.toml")
        self.assertIn("/etc/aimx/config.toml", str(e))
        self.assertIn("trusted_senders", str(e))
        self.assertIn("{a,b@x.com", str(e))

    def test_invalid_mailbox_pattern_rejected(self):
        """A mailbox's own invalid pattern names the mailbox."""
        text = (
            'domain = "t.com"\n[mailboxes.a]\naddress = "a@t.com"\nowner = "root"\n'
            'trusted_senders = ["[z-a]@x"]\n'
        )
        e = self.assertRaises(ConfigError, load_text, text, "c.toml")
        self.assertIn("mailboxes.a.trusted_senders", str(e))

    def test_valid_patterns_load(self):
        """Valid glob patterns load."""
        text = 'domain = "t.com"\ntrusted_senders = ["*@x.com", "{a,b}@y.com", "!*@spam.com"]\n'
        load_text(text, "c.toml")


OUTBOUND = """[outbound]
allow = ["*@customer.example"]
max_per_hour = 20
approval = "new-recipients"

[approval]
approvers = "aimx-approvers"
expire_days = 3

[mailboxes.support]
address = "support@test.com"
owner = "alice"

[mailboxes.support.outbound]
allow = ["alice@partner.example"]
deny = ["*@competitor.example"]
max_recipients = 10
max_per_day = 100
attachment_roots = ["/srv/support/outbox"]
allow_raw_attachments = true
"""


class OutboundTableTests(_Case):
    def test_tables_decoded(self):
        """[outbound], [approval] and a mailbox's outbound table load as written."""
        config, _ = load(BASE + OUTBOUND)
        self.assertEqual(config.outbound, cfg.OutboundPolicy(
            allow=["*@customer.example"], max_per_hour=20, approval="new-recipients"))
        self.assertEqual(config.approval, cfg.ApprovalConfig("aimx-approvers", 3))
        self.assertEqual(config.mailbox("support").outbound, cfg.OutboundPolicy(
            allow=["alice@partner.example"], deny=["*@competitor.example"], max_recipients=10,
            max_per_day=100, attachment_roots=["/srv/support/outbox"],
            allow_raw_attachments=True))

    def test_mailbox_key_replaces_default_key(self):
        """A mailbox's key replaces the default's (lists too); unset keys inherit."""
        config, _ = load(BASE + OUTBOUND)
        policy = config.effective_outbound(config.mailbox("support"))
        self.assertEqual(policy.allow, ("alice@partner.example",))
        self.assertEqual((policy.max_per_hour, policy.approval), (20, "new-recipients"))
        bare, _ = load(BASE + ALICE)
        self.assertIsNone(bare.effective_outbound(bare.mailbox("alice")))
        self.assertEqual(bare.approval, cfg.ApprovalConfig(None, 7))

    def test_unknown_keys_refused(self):
        """A typo in a guard's table is refused, naming the field and the file."""
        self.assertIn(
            "outbound: unknown field `alow`, expected one of `allow`, `deny`",
            self.error(BASE + '[outbound]\nalow = ["*@x.example"]\n'))
        self.assertIn(
            "mailboxes.alice.outbound: unknown field `max_per_hours`",
            self.error(BASE + ALICE + '[mailboxes.alice.outbound]\nmax_per_hours = 3\n'))
        self.assertIn("approval: unknown field `notfy`",
                      self.error(BASE + '[approval]\nnotfy = "ops@x.example"\n'))

    def test_values_checked(self):
        """Counts >= 1, the approval mode, absolute roots, patterns and group names."""
        box = BASE + ALICE + "[mailboxes.alice.outbound]\n"
        for line, text in (
            ("max_recipients = 0", "mailboxes.alice.outbound.max_recipients: expected an "
                                   "integer >= 1, got 0"),
            ("max_per_day = true", "mailboxes.alice.outbound.max_per_day: expected an integer"),
            ('approval = "sometimes"', "mailboxes.alice.outbound.approval: unknown value "
                                       "'sometimes', expected one of \"never\", "
                                       "\"new-recipients\", \"always\""),
            ('attachment_roots = ["srv"]', "attachment_roots: 'srv' is not an absolute path"),
            ('deny = ["[z-a]"]', "mailboxes.alice.outbound.deny: invalid recipient pattern"),
            ("allow = 3", "mailboxes.alice.outbound.allow: expected an array of strings"),
        ):
            self.assertIn(text, self.error(box + line + "\n"))
        self.assertIn("approval.expire_days: expected an integer >= 1, got 0",
                      self.error(BASE + "[approval]\nexpire_days = 0\n"))
        self.assertIn("approval.approvers: 'Bad Group' is not a valid group name",
                      self.error(BASE + '[approval]\napprovers = "Bad Group"\n'))
        self.assertIn("outbound: expected a table", self.error(BASE + "outbound = 3\n"))

    def test_notify(self):
        """[approval] notify is one plain address of another domain than ours."""
        config, _ = load(BASE + '[approval]\nnotify = "ops@owner.example"\n')
        self.assertEqual(config.approval.notify, "ops@owner.example")
        self.assertEqual(to_toml(config)["approval"], {"notify": "ops@owner.example"})
        for value, text in (
            ("Ops <ops@owner.example>", "is not one plain address"),
            ("<ops@owner.example>", "is not one plain address"),
            ("ops@owner.example, eve@x.example", "is not one plain address"),
            ('\\"o p\\"@owner.example', "is not one plain address"),
            ("opé@owner.example", "is not one plain address"),
            ("ops", "is not one plain address"),
            ("ops@localhost", "approval.notify: 'localhost' needs at least two labels"),
            ("ops@TEST.com", "'ops@TEST.com' is in test.com, whose mail aimx itself signs"),
            ("ops@mail.test.com", "is in test.com, whose mail aimx itself signs"),
        ):
            self.assertIn(text, self.error(BASE + f'[approval]\nnotify = "{value}"\n'))
        self.assertIn("approval.notify: expected a string",
                      self.error(BASE + "[approval]\nnotify = 1\n"))

    def test_approval_address(self):
        """postmaster@<domain> is the approval address only while notify is set."""
        config, _ = load(BASE + '[approval]\nnotify = "ops@owner.example"\n')
        for addr, expected in (("postmaster@test.com", True), ("PostMaster@TEST.COM", True),
                               ("postmaster+x@test.com", False), ("postmaster@x.com", False),
                               ("ops@test.com", False), ("postmaster", False)):
            self.assertEqual(cfg.is_approval_address(config, addr), expected, addr)
        bare, _ = load(BASE)
        self.assertFalse(cfg.is_approval_address(bare, "postmaster@test.com"))

    def test_round_trip(self):
        """to_toml writes the tables back and they load as the same config."""
        config, _ = load(BASE + OUTBOUND)
        doc = to_toml(config)
        self.assertEqual(doc["approval"], {"approvers": "aimx-approvers", "expire_days": 3})
        self.assertEqual(doc["mailboxes"]["support"]["outbound"]["deny"],
                         ["*@competitor.example"])
        again, _ = load(tomli_w.dumps(doc))
        self.assertEqual(again, config)

    def test_edit_keeps_tables(self):
        """A mailbox added beside outbound tables keeps them; deleting one removes its table."""
        text = BASE + OUTBOUND
        config, _ = load(text)
        added = configedit.rewrite_text(text, PATH, configedit.add_mailbox(config, "bob", "bob"))
        self.assertIn(OUTBOUND, added)
        gone = configedit.rewrite_text(text, PATH, configedit.remove_mailbox(config, "support"))
        self.assertNotIn("[mailboxes.support.outbound]", gone)
        self.assertIn("[outbound]", gone)


GUARDED = BASE + ALICE + '''hook_rate_per_sender = { per_hour = 30 }

[[mailboxes.alice.guards]]
name = "wire-transfer"
pattern = 'wire\\s+\\$?\\d+'
fields = ["subject", "body", "from"]

[[mailboxes.alice.guards]]
use = "default"

[[mailboxes.alice.hooks]]
event = "on_receive"
cmd = ["/bin/true"]
fire_on_review = true
''' + BOB + 'guards = "default"\n'


class InboundGuardTableTests(_Case):
    def test_decoded(self):
        """Guard tables, the default set by entry or by value, and the hook rate load."""
        config, _ = load(GUARDED)
        alice, bob = config.mailbox("alice"), config.mailbox("bob")
        own = cfg.Guard("wire-transfer", r"wire\s+\$?\d+", ["subject", "body", "from"])
        self.assertEqual(alice.guards, (own, "default"))
        self.assertEqual(alice.effective_guards, (own, *cfg.guards.DEFAULT_GUARDS))
        self.assertEqual(alice.hook_rate_per_sender, cfg.HookRate(30))
        self.assertEqual(bob.guards, "default")
        self.assertEqual(bob.effective_guards, cfg.guards.DEFAULT_GUARDS)
        self.assertIsNone(bob.hook_rate_per_sender)
        self.assertTrue(alice.hooks[0].fire_on_review)
        self.assertEqual(load(BASE + ALICE)[0].mailbox("alice").effective_guards, ())

    def test_refused(self):
        """Typos, unknown fields, bad patterns, duplicate names and a bad rate name the key."""
        box = BASE + ALICE + "[[mailboxes.alice.guards]]\n"
        for body, text in (
            ('name = "x"\npatern = "y"', "mailboxes.alice.guards[0]: unknown field `patern`, "
                                         "expected one of `name`, `pattern`, `fields`"),
            ('name = "x"\npattern = "(a)\\\\1"',
             "mailboxes.alice.guards[0].pattern: not an RE2 pattern: invalid escape "
             "sequence: \\1"),
            ('name = "x"\npattern = "y"\nfields = ["headers"]',
             'mailboxes.alice.guards[0].fields: expected some of "subject", "body", "from"'),
            ('name = "bad name"\npattern = "y"', "mailboxes.alice.guards[0].name: 'bad name'"),
            ('pattern = "y"', "mailboxes.alice.guards[0]: missing field `name`"),
            ('use = "mine"', 'mailboxes.alice.guards[0].use: expected "default"'),
            ('use = "default"\nname = "x"', "mailboxes.alice.guards[0]: unknown field `name`"),
            ('name = "tool-call"\npattern = "y"\n[[mailboxes.alice.guards]]\nuse = "default"',
             "mailboxes.alice.guards: two guards are named 'tool-call'"),
        ):
            self.assertIn(text, self.error(box + body + "\n"))
        self.assertIn("mailboxes.alice.guards: unknown value 'defaults'",
                      self.error(BASE + ALICE + 'guards = "defaults"\n'))
        self.assertIn("mailboxes.alice.hook_rate_per_sender: unknown field `per_hours`",
                      self.error(BASE + ALICE + "hook_rate_per_sender = { per_hours = 3 }\n"))
        self.assertIn("mailboxes.alice.hook_rate_per_sender.per_hour: expected an integer >= 1",
                      self.error(BASE + ALICE + "hook_rate_per_sender = { per_hour = 0 }\n"))
        self.assertIn("`fire_on_review = true` on event 'after_send'", self.error(
            BASE + ALICE + hook('event = "after_send"\ncmd = ["/bin/true"]\n'
                                'fire_on_review = true')))

    def test_round_trip_and_edits(self):
        """to_toml writes the tables back; a hook added beside them keeps them."""
        config, _ = load(GUARDED)
        again, _ = load(tomli_w.dumps(to_toml(config)))
        self.assertEqual(again, config)
        hook_ = make_hook("on_receive", ["/bin/echo"])
        edited = configedit.rewrite_text(GUARDED, PATH, configedit.add_hook(config, "alice", hook_))
        self.assertEqual(load(edited)[0].mailbox("alice").guards, config.mailbox("alice").guards)
        self.assertEqual(len(load(edited)[0].mailbox("alice").hooks), 2)

    def test_fire_on_review_name(self):
        """fire_on_review changes a derived name only when set: existing names stay."""
        self.assertEqual(derive_hook_name("on_receive", ["/bin/true"], False, False),
                         "9d0373b47d73")
        review = make_hook("on_receive", ["/bin/true"], fire_on_review=True)
        self.assertNotIn(review.name, ("9d0373b47d73", "4315591c7fd4"))
        self.assertEqual(load(GUARDED)[0].mailbox("alice").hooks[0].name, review.name)


class AuditConfigTests(_Case):
    def test_defaults_and_values(self):
        """audit_dir defaults to <data_dir>/audit; retention to 90 days; both written back."""
        config, _ = load(BASE + 'data_dir = "/srv/aimx"\n')
        self.assertEqual((config.effective_audit_dir, config.audit_retention_days),
                         ("/srv/aimx/audit", 90))
        self.assertNotIn("audit_dir", to_toml(config))
        config, _ = load(BASE + 'audit_dir = "/var/log/aimx-audit"\naudit_retention_days = 7\n')
        self.assertEqual((config.effective_audit_dir, config.audit_retention_days),
                         ("/var/log/aimx-audit", 7))
        self.assertEqual(load(tomli_w.dumps(to_toml(config)))[0], config)
        self.assertIn("audit_dir: 'audit' is not an absolute path",
                      self.error(BASE + 'audit_dir = "audit"\n'))
        self.assertIn("audit_retention_days: expected an integer >= 1, got 0",
                      self.error(BASE + "audit_retention_days = 0\n"))
