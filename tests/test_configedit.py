"""Control-command config edits, the in-place rewrite of config.toml and the
authorisation predicate (pure)."""

import json
import os

import attrs

from twisted.trial.unittest import SynchronousTestCase

from aimx.core import configedit
from aimx.core.authz import ACCEPT, REJECT, ROOT_BYPASS, authorize, visible
from aimx.core.config import load_text, make_hook, to_toml
from aimx.errors import (
    ConfigError,
    MailboxError,
    MalformedError,
    NoEntry,
    ProtocolError,
    ValidationError,
)

CONFIG = """domain = "test.local"

[mailboxes.alice]
address = "alice@test.local"
owner = "alice"

[mailboxes.bob]
address = "bob@test.local"
owner = "bob"

[mailboxes.catchall]
address = "*@test.local"
owner = "aimx-catchall"
"""


def config():
    return load_text(CONFIG, "config.toml")[0]


def body(**fields):
    return json.dumps({"cmd": ["/bin/true"], **fields})


class NameTests(SynchronousTestCase):
    def test_reserved_and_bad_names(self):
        """Reserved names, '..', '/', NUL, leading dots and uppercase are VALIDATION."""
        cases = {
            "catchall": "reserved for the wildcard catchall slot",
            "aimx-catchall": "reserved",
            "..": "cannot contain '..'",
            "a/b": "invalid character '/'",
            "a\x00b": "invalid character '\x00'",
            ".x": "cannot start or end with '.'",
            "Foo": "invalid character 'F'",
            "": "cannot be empty",
        }
        for name, reason in cases.items():
            e = self.assertRaises(ValidationError, configedit.check_mailbox_name, name)
            self.assertIn(reason, str(e))
        configedit.check_mailbox_name("eve.bot-1_x")

    def test_owner_argument(self):
        """An owner that is not a Linux username is MALFORMED, with the spec's text."""
        e = self.assertRaises(MalformedError, configedit.check_owner_argument, "bad owner")
        self.assertEqual(
            str(e), 'invalid Owner value: "bad owner" (must match [a-z_][a-z0-9_-]*[$]?)'
        )
        self.assertRaises(MalformedError, configedit.check_owner_argument, "a" * 33)
        self.assertRaises(MalformedError, configedit.check_owner_argument, "")
        configedit.check_owner_argument("alice")
        configedit.check_owner_argument("svc$")

    def test_root_owner_refused(self):
        """A created mailbox cannot be owned by root (aimx decision)."""
        self.assertRaises(ValidationError, configedit.check_new_owner, "x", "root")
        configedit.check_new_owner("x", "alice")


class RoleNameTests(SynchronousTestCase):
    ROLES = ("postmaster", "abuse", "hostmaster", "webmaster", "security", "noc",
             "mailer-daemon", "root", "admin")

    def test_closed_list(self):
        """The role list is exactly RFC 2142's operator names plus three system names."""
        self.assertEqual(set(configedit.ROLE_NAMES), set(self.ROLES))

    def test_every_role_refused_for_non_root(self):
        """Each role name is VALIDATION for a non-root creator, naming the reason."""
        for name in self.ROLES:
            e = self.assertRaises(ValidationError, configedit.check_role_name, name,
                                  by_root=False)
            source = "system name" if name in ("mailer-daemon", "root", "admin") else "RFC 2142"
            self.assertEqual(
                str(e),
                f"mailbox name '{name}' is a role address ({source}); only root can create it",
            )

    def test_exact_text(self):
        """The refusal for postmaster reads as documented."""
        e = self.assertRaises(ValidationError, configedit.check_role_name, "postmaster",
                              by_root=False)
        self.assertEqual(
            str(e), "mailbox name 'postmaster' is a role address (RFC 2142); only root can "
            "create it"
        )

    def test_case_insensitive(self):
        """Case variants are roles too (ASCII); the refusal quotes the name as given."""
        for name in ("Postmaster", "POSTMASTER", "pOsTmAsTeR", "Abuse", "MAILER-DAEMON",
                     "Root", "ADMIN", "NoC"):
            self.assertIsNotNone(configedit.role_name_source(name), name)
            e = self.assertRaises(ValidationError, configedit.check_role_name, name,
                                  by_root=False)
            self.assertIn(f"mailbox name '{name}' is a role address", str(e))

    def test_root_may_create(self):
        """Root creates any role name, in any case."""
        for name in self.ROLES + ("Postmaster",):
            configedit.check_role_name(name, by_root=True)

    def test_near_misses_allowed(self):
        """Names that only resemble a role are ordinary names for everyone."""
        for name in ("admins", "postmaster2", "abuse-desk", "my-admin", "roots", "nocs",
                     "mailer", "daemon", "mailer_daemon", "web-master", "postmaster.bot",
                     "sec", ""):
            self.assertIsNone(configedit.role_name_source(name), name)
            configedit.check_role_name(name, by_root=False)


class MailboxEditTests(SynchronousTestCase):
    def test_add(self):
        """A new mailbox gets <name>@<domain> and the owner, and survives a rewrite."""
        new = configedit.add_mailbox(config(), "eve", "alice")
        self.assertEqual(new.mailbox("eve").address, "eve@test.local")
        self.assertEqual(to_toml(new)["mailboxes"]["eve"], {"address": "eve@test.local",
                                                            "owner": "alice"})
        self.assertIsNone(config().mailbox("eve"))

    def test_add_existing(self):
        """Adding a configured name is MAILBOX `already exists`."""
        e = self.assertRaises(MailboxError, configedit.add_mailbox, config(), "alice", "alice")
        self.assertEqual(str(e), "mailbox 'alice' already exists")

    def test_remove(self):
        """Removing drops only that stanza."""
        new = configedit.remove_mailbox(config(), "bob")
        self.assertEqual([mb.name for mb in new.mailboxes], ["alice", "catchall"])


class HookRequestTests(SynchronousTestCase):
    def assertRefused(self, error, text, event="on_receive", name=None, data=None):
        e = self.assertRaises(
            error, configedit.parse_hook_request, event, name, body() if data is None else data
        )
        self.assertIn(text, str(e))
        return e

    def test_minimal(self):
        """A minimal body gives the defaults and the derived name."""
        hook = configedit.parse_hook_request("on_receive", None, body())
        self.assertEqual((hook.name, hook.explicit_name, hook.type, hook.timeout_secs),
                         ("9d0373b47d73", False, "cmd", 60))

    def test_derived_name(self):
        """An anonymous hook's name is the 12-hex derivation of docs/hooks.md."""
        hook = configedit.parse_hook_request(
            "on_receive", None, json.dumps({"cmd": ["/bin/echo", "via-daemon"]})
        )
        self.assertRegex(hook.name, "^[0-9a-f]{12}$")
        self.assertEqual(hook.name, make_hook("on_receive", ["/bin/echo", "via-daemon"]).name)

    def test_event(self):
        """An unknown event is VALIDATION with the spec's text."""
        e = self.assertRefused(ValidationError, "invalid event 'on_send'", event="on_send")
        self.assertEqual(str(e), "invalid event 'on_send': expected 'on_receive' or 'after_send'")

    def test_name(self):
        """A name outside the rule is VALIDATION."""
        for name in ("-bad", "", "has space", "x" * 129, "über"):
            self.assertRefused(ValidationError, "invalid hook name", name=name)
        self.assertEqual(configedit.parse_hook_request("on_receive", "a.b-c_9", body()).name,
                         "a.b-c_9")

    def test_single_hook_rules(self):
        """cmd, type, fire_on_untrusted and timeout rules, in the spec's texts."""
        self.assertRefused(ValidationError, "non-absolute `cmd[0]` 'echo'",
                           data=json.dumps({"cmd": ["echo"]}))
        self.assertRefused(ValidationError, "hook has empty `cmd`", data=json.dumps({"cmd": []}))
        self.assertRefused(ValidationError, "hook has blank `cmd[0]`",
                           data=json.dumps({"cmd": [" "]}))
        self.assertRefused(ValidationError, "unsupported type 'fax'", data=body(type="fax"))
        self.assertRefused(ValidationError, "exceeds the max of 600", data=body(timeout_secs=601))
        self.assertRefused(ValidationError, "`timeout_secs = 0`: must be > 0",
                           data=body(timeout_secs=0))
        e = self.assertRefused(ValidationError, "`on_receive` only", event="after_send",
                               data=body(fire_on_untrusted=True))
        self.assertIn("fire_on_untrusted", str(e))
        self.assertEqual(configedit.parse_hook_request("on_receive", None,
                                                       body(timeout_secs=600)).timeout_secs, 600)

    def test_legacy_keys(self):
        """Removed keys are PROTOCOL with their migration texts."""
        self.assertRefused(ProtocolError, "docs/hooks.md", data=body(template="x"))
        e = self.assertRefused(ProtocolError, "`template`", data=body(template="x"))
        self.assertIn("template hooks were removed", str(e))
        self.assertRefused(ProtocolError, "`params`", data=body(params={}))
        self.assertRefused(ProtocolError, "`run_as`", data=body(run_as="root"))
        self.assertRefused(ProtocolError, "`origin`", data=body(origin="x"))
        self.assertRefused(ProtocolError, "renamed to `fire_on_untrusted`",
                           data=body(dangerously_support_untrusted=True))
        self.assertRefused(ProtocolError, "removed field 'stdin'", data=body(stdin="email"))

    def test_bad_bodies(self):
        """Unknown keys, wrong types, non-objects and bad JSON are PROTOCOL."""
        for data in (body(foo=1), "[]", "{", json.dumps({"cmd": "/bin/true"}),
                     json.dumps({"cmd": [1]}), body(fire_on_untrusted="yes"),
                     body(timeout_secs="5"), body(timeout_secs=-1), body(type=1),
                     json.dumps({})):
            self.assertRefused(ProtocolError, "invalid HOOK-CREATE body: ", data=data)

    def test_order(self):
        """The event is checked before the name, the name before the body."""
        self.assertRefused(ValidationError, "invalid event", event="x", name="-", data="{")
        self.assertRefused(ValidationError, "invalid hook name", name="-", data="{")


class HookEditTests(SynchronousTestCase):
    def test_add_and_persist(self):
        """An added anonymous hook is written without a name key."""
        hook = configedit.parse_hook_request("on_receive", None, body())
        new = configedit.add_hook(config(), "alice", hook)
        self.assertEqual(to_toml(new)["mailboxes"]["alice"]["hooks"],
                         [{"event": "on_receive", "type": "cmd", "cmd": ["/bin/true"]}])

    def test_duplicates(self):
        """Colliding effective names are VALIDATION with the load-time texts."""
        named = configedit.parse_hook_request("on_receive", "dup", body())
        with_one = configedit.add_hook(config(), "alice", named)
        e = self.assertRaises(ValidationError, configedit.add_hook, with_one, "bob", named)
        self.assertIn("duplicate hook name 'dup' on mailboxes 'alice' and 'bob'", str(e))
        anonymous = configedit.parse_hook_request("on_receive", None, body())
        with_anon = configedit.add_hook(config(), "alice", anonymous)
        e = self.assertRaises(ValidationError, configedit.add_hook, with_anon, "bob", anonymous)
        self.assertIn("anonymous hooks on mailboxes", str(e))
        clash = configedit.parse_hook_request("on_receive", anonymous.name, body())
        e = self.assertRaises(ValidationError, configedit.add_hook, with_anon, "bob", clash)
        self.assertIn("collides with the derived name", str(e))

    def test_add_to_missing(self):
        """A mailbox removed meanwhile is ENOENT."""
        hook = configedit.parse_hook_request("on_receive", None, body())
        self.assertRaises(NoEntry, configedit.add_hook, config(), "ghost", hook)

    def test_catchall(self):
        """Hooks on the catchall are MAILBOX errors."""
        c = config()
        e = self.assertRaises(MailboxError, configedit.check_hook_target, c, c.mailbox("catchall"))
        self.assertIn("hooks on the catchall are forbidden", str(e))
        configedit.check_hook_target(c, c.mailbox("alice"))

    def test_find_and_remove(self):
        """Hooks are found by effective name and removed from their mailbox."""
        hook = configedit.parse_hook_request("on_receive", "h1", body())
        c = configedit.add_hook(config(), "bob", hook)
        self.assertEqual(configedit.find_hook(c, "h1").name, "bob")
        self.assertIsNone(configedit.find_hook(c, "h2"))
        self.assertEqual(configedit.remove_hook(c, "bob", "h1").mailbox("bob").hooks, ())
        e = self.assertRaises(NoEntry, configedit.remove_hook, c, "alice", "h1")
        self.assertEqual(str(e), "hook 'h1' not found")

    def test_rows(self):
        """Rows are sorted by mailbox, event, name and filtered by mailbox."""
        c = config()
        for mailbox, event, name in (("bob", "on_receive", "z"), ("alice", "after_send", "b"),
                                     ("alice", "on_receive", "c"), ("alice", "after_send", "a")):
            hook = configedit.parse_hook_request(event, name, body())
            c = configedit.add_hook(c, mailbox, hook)
        rows = configedit.hook_rows(c, lambda mb: True)
        self.assertEqual([r["name"] for r in rows], ["a", "b", "c", "z"])
        self.assertEqual(list(rows[0]), ["name", "mailbox", "event", "cmd", "fire_on_untrusted",
                                         "fire_on_review", "timeout_secs"])
        self.assertEqual(configedit.hook_rows(c, lambda mb: mb.name == "bob")[0]["name"], "z")
        self.assertEqual(configedit.hook_rows(c, lambda mb: False), [])


class AuthorizeTests(SynchronousTestCase):
    def test_decisions(self):
        """Root bypasses; the owner is accepted; others, absent and orphans are rejected."""
        alice = config().mailbox("alice")
        self.assertEqual(authorize(0, "root", None, None).decision, ROOT_BYPASS)
        self.assertEqual(authorize(1001, "alice", alice, 1001).decision, ACCEPT)
        bob = authorize(1002, "bob", alice, 1001)
        self.assertEqual((bob.decision, bob.no_such_mailbox), (REJECT, False))
        self.assertIn("caller 'bob' is not the owner of mailbox 'alice' (owner: 'alice')",
                      bob.reason)
        self.assertIn("has no resolvable username", authorize(1003, None, alice, 1001).reason)
        self.assertTrue(authorize(1002, "bob", None, None).no_such_mailbox)
        self.assertTrue(authorize(1002, "bob", alice, None).no_such_mailbox)

    def test_visible(self):
        """Rows are visible to root and to their owner only."""
        self.assertTrue(visible(0, None))
        self.assertTrue(visible(5, 5))
        self.assertFalse(visible(5, 6))
        self.assertFalse(visible(5, None))


CONTRIB = os.path.join(os.path.dirname(__file__), os.pardir, "contrib", "config.toml")

#: A hand-written file: comments above tables, inside them and between hooks.
ANNOTATED = """# top comment
domain = "agent.example.com"

# Mail to any unknown address at the domain lands here.
[mailboxes.catchall]
address = "*@agent.example.com"
owner = "aimx-catchall"

# Alice's box
[mailboxes.alice]
address = "alice@agent.example.com"
owner = "alice"   # her user

# log every mail
[[mailboxes.alice.hooks]]
name = "log"
event = "on_receive"
cmd = ["/bin/true"]
# timeout_secs = 30

# notify after send
[[mailboxes.alice.hooks]]
name = "notify"
event = "after_send"
cmd = ["/bin/true", "x"]

# Bob's box
[mailboxes.bob]
address = "bob@agent.example.com"
owner = "bob"

[upgrade]
release_manifest_url = "https://example.com/manifest"
"""


def comment_lines(text: str) -> list[str]:
    """Every line of C{text} holding a comment (no value in these files has a C{#})."""
    return [line for line in text.splitlines() if "#" in line]


def rewritten(text: str, edit) -> str:
    """C{text} rewritten to C{edit(config)}; checks that it loads as exactly that."""
    new = edit(load_text(text, "config.toml")[0])
    out = configedit.rewrite_text(text, "config.toml", new)
    assert load_text(out, "config.toml")[0] == new.as_written(), out
    return out


def hook(name, event="on_receive", cmd=("/bin/true",)):
    return make_hook(event, cmd, name=name)


class RewriteTextTests(SynchronousTestCase):
    """config.toml edited in place: only what changes changes (README "Later decisions")."""

    def test_contrib_round_trip(self):
        """The annotated example keeps every comment and table through four edits,
        and the last edit gives back the original bytes."""
        with open(CONTRIB) as f:
            original = f.read()
        steps = [
            lambda c: configedit.add_mailbox(c, "eve", "eve"),
            lambda c: configedit.add_hook(c, "eve", hook("eve_log")),
            lambda c: configedit.remove_hook(c, "eve", "eve_log"),
            lambda c: configedit.remove_mailbox(c, "eve"),
        ]
        text = original
        for step in steps[:3]:
            text = rewritten(text, step)
            self.assertTrue(text.startswith(original), text)
            self.assertEqual(comment_lines(text), comment_lines(original))
        self.assertIn("\n\n[mailboxes.eve]\naddress = \"eve@agent.example.com\"\n"
                      'owner = "eve"\n', text)
        self.assertEqual(rewritten(text, steps[3]), original)

    def test_added_tables(self):
        """A new mailbox goes after the last mailbox table, a hook after its mailbox's
        last hook: both before the next table's comment, set off by a blank line."""
        text = rewritten(ANNOTATED, lambda c: configedit.add_mailbox(c, "zed", "zed"))
        self.assertIn('owner = "bob"\n\n[mailboxes.zed]\naddress = "zed@agent.example.com"\n'
                      'owner = "zed"\n\n[upgrade]\n', text)
        text = rewritten(ANNOTATED, lambda c: configedit.add_hook(
            c, "alice", hook("h2", "after_send", ("/bin/echo", "a b")))
        )
        self.assertIn('cmd = ["/bin/true", "x"]\n\n[[mailboxes.alice.hooks]]\nname = "h2"\n'
                      'event = "after_send"\ntype = "cmd"\ncmd = ["/bin/echo", "a b"]\n'
                      "\n# Bob's box\n", text)
        self.assertEqual(text.replace(text[text.index("[[mailboxes.alice.hooks]]\nname = \"h2"):
                                           text.index("# Bob's box")], ""), ANNOTATED)

    def test_deleted_tables_take_their_comments(self):
        """A deleted table takes the comments directly above it and inside it; the
        next table's comment stays."""
        text = rewritten(ANNOTATED, lambda c: configedit.remove_mailbox(c, "alice"))
        self.assertEqual(text, ANNOTATED[:ANNOTATED.index("# Alice's box")]
                         + ANNOTATED[ANNOTATED.index("# Bob's box"):])
        text = rewritten(ANNOTATED, lambda c: configedit.remove_hook(c, "alice", "log"))
        self.assertEqual(text, ANNOTATED[:ANNOTATED.index("# log every mail")]
                         + ANNOTATED[ANNOTATED.index("# notify after send"):])
        text = rewritten(ANNOTATED, lambda c: configedit.remove_hook(c, "alice", "notify"))
        self.assertEqual(text, ANNOTATED[:ANNOTATED.index("# notify after send")]
                         + ANNOTATED[ANNOTATED.index("# Bob's box"):])

    def test_changed_keys(self):
        """Changed values are replaced in place (inline comments kept); new keys go
        after their table's last key; only those lines differ (setup's domain move)."""
        def move(c):
            mailboxes = [attrs.evolve(mb, address=mb.address.replace("agent.example.com",
                                                                     "new.example"))
                         for mb in c.mailboxes]
            mailboxes[2] = attrs.evolve(mailboxes[2], trust="verified")
            return attrs.evolve(c, domain="new.example", data_dir="/srv/aimx",
                                mailboxes=mailboxes)

        text = rewritten(ANNOTATED, move)
        expected = (
            ANNOTATED.replace("agent.example.com", "new.example")
            .replace('domain = "new.example"\n',
                     'domain = "new.example"\ndata_dir = "/srv/aimx"\n')
            .replace('owner = "bob"\n', 'owner = "bob"\ntrust = "verified"\n')
        )
        self.assertEqual(text, expected)
        self.assertIn('address = "alice@new.example"\nowner = "alice"   # her user\n', text)
        again = rewritten(text, lambda c: attrs.evolve(c, mailboxes=[
            attrs.evolve(mb, trust=None) for mb in c.mailboxes
        ]))
        self.assertEqual(again, expected.replace('trust = "verified"\n', ""))

    def test_unchanged(self):
        """An edit that changes nothing gives the text back as it was."""
        self.assertEqual(rewritten(ANNOTATED, lambda c: c), ANNOTATED)

    def test_quoted_name(self):
        """A quoted table name (a dot inside the key) edits like any other."""
        text = ANNOTATED.replace("[mailboxes.bob]", '[mailboxes."b.o.b"]')
        added = rewritten(text, lambda c: configedit.add_hook(c, "b.o.b", hook("bh")))
        self.assertIn('[mailboxes."b.o.b"]\naddress = "bob@agent.example.com"\nowner = "bob"\n'
                      '\n[[mailboxes."b.o.b".hooks]]\nname = "bh"\n', added)
        self.assertEqual(rewritten(added, lambda c: configedit.remove_hook(c, "b.o.b", "bh")),
                         text)
        gone = rewritten(text, lambda c: configedit.remove_mailbox(c, "b.o.b"))
        self.assertNotIn("b.o.b", gone)
        self.assertIn("[upgrade]", gone)

    def test_dotted_keys(self):
        """A mailbox written as dotted keys gets dotted keys: hooks as an inline array."""
        z = 'z.address = "z@t.local"\nz.owner = "bob"\n'
        text = ('domain = "t.local"\n[mailboxes]\nx.address = "x@t.local"\n'
                'x.owner = "bob"   # dotted\n' + z)
        added = rewritten(text, lambda c: configedit.add_hook(c, "x", hook("xh")))
        self.assertEqual(added, text.replace(
            z, 'x.hooks = [{name = "xh", event = "on_receive", type = "cmd", '
            'cmd = ["/bin/true"]}]\n' + z))
        self.assertEqual(rewritten(added, lambda c: configedit.remove_hook(c, "x", "xh")), text)
        self.assertEqual(rewritten(text, lambda c: configedit.remove_mailbox(c, "x")),
                         'domain = "t.local"\n[mailboxes]\n' + z)
        top = 'domain = "t.local"\nmailboxes.x.address = "x@t.local"\nmailboxes.x.owner = "b"\n'
        self.assertEqual(
            rewritten(top, lambda c: attrs.evolve(c, mailboxes=[
                attrs.evolve(c.mailbox("x"), trust="verified")])),
            top + 'mailboxes.x.trust = "verified"\n',
        )

    def test_inline_mailbox(self):
        """A mailbox written as an inline table has its value rewritten, comment kept."""
        text = ('domain = "t.local"\n[mailboxes]\n'
                'y = { address = "y@t.local", owner = "bob" }  # inline\n')
        added = rewritten(text, lambda c: configedit.add_hook(c, "y", hook("yh")))
        self.assertEqual(added, text.replace(
            '{ address = "y@t.local", owner = "bob" }',
            '{address = "y@t.local", owner = "bob", hooks = [{name = "yh", '
            'event = "on_receive", type = "cmd", cmd = ["/bin/true"]}]}'))
        self.assertEqual(rewritten(text, lambda c: configedit.remove_mailbox(c, "y")),
                         'domain = "t.local"\n[mailboxes]\n')
        added = rewritten(text, lambda c: configedit.add_mailbox(c, "z", "bob"))
        self.assertEqual(added, text + '\n[mailboxes.z]\naddress = "z@t.local"\nowner = "bob"\n')

    def test_inline_hooks(self):
        """Hooks kept as an inline array stay one: the array is rewritten, or removed
        with its last hook."""
        text = ('domain = "t.local"\n[mailboxes.a]\naddress = "a@t.local"\nowner = "bob"\n'
                'hooks = [ { name = "i1", event = "on_receive", cmd = ["/bin/true"] } ]\n'
                '# end\n')
        added = rewritten(text, lambda c: configedit.add_hook(c, "a", hook("i2")))
        self.assertIn('hooks = [{name = "i1", event = "on_receive", type = "cmd", '
                      'cmd = ["/bin/true"]}, {name = "i2", event = "on_receive", '
                      'type = "cmd", cmd = ["/bin/true"]}]\n# end\n', added)
        self.assertEqual(rewritten(text, lambda c: configedit.remove_hook(c, "a", "i1")),
                         text.replace(text.splitlines(True)[4], ""))

    def test_hook_tables_in_odd_places(self):
        """Hook tables before their mailbox's table and after other tables: a new one
        follows the last, a deleted one leaves the rest in place."""
        text = ('domain = "t.local"\n\n[[mailboxes.a.hooks]]\nname = "first"\n'
                'event = "on_receive"\ncmd = ["/bin/true"]\n\n[mailboxes.a]\n'
                'address = "a@t.local"\nowner = "bob"\n\n[mailboxes.b]\n'
                'address = "b@t.local"\nowner = "bob"\n\n[[mailboxes.a.hooks]]\n'
                'name = "last"\nevent = "after_send"\ncmd = ["/bin/true"]\n')
        added = rewritten(text, lambda c: configedit.add_hook(c, "a", hook("third")))
        self.assertEqual(added, text + '\n[[mailboxes.a.hooks]]\nname = "third"\n'
                                       'event = "on_receive"\ntype = "cmd"\n'
                                       'cmd = ["/bin/true"]\n')
        self.assertEqual(rewritten(text, lambda c: configedit.remove_hook(c, "a", "last")),
                         text[:text.index("\n[[mailboxes.a.hooks]]\nname = \"last")])
        self.assertEqual(rewritten(text, lambda c: configedit.remove_mailbox(c, "a")),
                         'domain = "t.local"\n\n[mailboxes.b]\naddress = "b@t.local"\n'
                         'owner = "bob"\n')

    def test_crlf_and_no_final_newline(self):
        """Added lines follow a CRLF file's line ends; a missing final newline is supplied."""
        text = 'domain = "t.local"\r\n\r\n[mailboxes.a]\r\naddress = "a@t.local"\r\nowner = "b"'
        added = rewritten(text, lambda c: configedit.add_mailbox(c, "z", "bob"))
        self.assertEqual(added, text + '\r\n\r\n[mailboxes.z]\r\naddress = "z@t.local"\r\n'
                                       'owner = "bob"\r\n')

    def test_inline_mailboxes_refused(self):
        """`mailboxes = { ... }` cannot take a table: refused, naming the file and why."""
        text = 'domain = "t.local"\nmailboxes = { a = { address = "a@t.local", owner = "b" } }\n'
        for edit in (lambda c: configedit.add_mailbox(c, "z", "bob"),
                     lambda c: configedit.remove_mailbox(c, "a"),
                     lambda c: configedit.add_hook(c, "a", hook("h"))):
            new = edit(load_text(text, "config.toml")[0])
            e = self.assertRaises(ConfigError, configedit.rewrite_text, text,
                                  "/etc/aimx/config.toml", new)
            self.assertEqual(str(e), "/etc/aimx/config.toml: cannot edit in place: `mailboxes` "
                                     "is an inline table; write each mailbox as a "
                                     "[mailboxes.<name>] table to let aimx edit it")

    def test_text_that_does_not_load_refused(self):
        """A file that does not load is not edited: the error names it and the reason."""
        e = self.assertRaises(ConfigError, configedit.rewrite_text, 'trust = "x"\n',
                              "/etc/aimx/config.toml", config())
        self.assertEqual(str(e), "/etc/aimx/config.toml: the file does not load, so it is "
                                 "not edited: missing field `domain`")
