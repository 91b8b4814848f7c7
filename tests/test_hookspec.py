"""Tests for aimx.core.hookspec: selection, gate, environment and log text."""

from datetime import datetime, timezone

from twisted.trial.unittest import SynchronousTestCase

from aimx.core import events, hookspec
from aimx.core.config import MailboxConfig, derive_hook_name, make_hook
from aimx.core.hookspec import HookEvent

DOMAIN = "test.com"


def mailbox(*hooks, name="alice", address=None) -> MailboxConfig:
    return MailboxConfig(name, address or f"{name}@{DOMAIN}", "alice", hooks=hooks)


def received(box: MailboxConfig, trusted: str = "none", **values) -> HookEvent:
    fields = dict(
        filepath="/data/inbox/alice/2025-01-01-000000-hello.md",
        id="2025-01-01-000000-hello",
        from_="alice@gmail.com",
        to="alice@test.com",
        subject="Hello World",
        message_id="m1@gmail.com",
        date="2025-01-01T00:00:00Z",
        trusted=trusted,
    )
    fields.update(values)
    return HookEvent(events.ON_RECEIVE, box, **fields)


def sent(box: MailboxConfig, status: str = "delivered", filepath: str = "") -> HookEvent:
    return hookspec.sent(
        box,
        status,
        from_="alice@test.com",
        to="bob@example.com",
        subject="Hi",
        message_id="<out1@test.com>",
        filepath=filepath,
        now=datetime(2025, 4, 15, 12, 30, 23, tzinfo=timezone.utc),
    )


class SelectionTests(SynchronousTestCase):
    """Which hooks of a mailbox belong to an event."""

    def test_event_and_config_order(self):
        """Only the event's hooks, in config order."""
        a = make_hook("on_receive", ["/bin/a"])
        b = make_hook("after_send", ["/bin/b"])
        c = make_hook("on_receive", ["/bin/c"])
        box = mailbox(a, b, c)
        self.assertEqual(hookspec.hooks_for(received(box)), (a, c))
        self.assertEqual(hookspec.hooks_for(sent(box)), (b,))

    def test_catchall_with_hooks_refused(self):
        """A catchall that somehow has hooks fires none of them (§1)."""
        hook = make_hook("on_receive", ["/bin/true"])
        catchall = mailbox(hook, name="catchall", address=f"*@{DOMAIN.upper()}")
        self.assertTrue(hookspec.refuses_catchall(received(catchall), DOMAIN))
        self.assertFalse(hookspec.refuses_catchall(received(mailbox(hook)), DOMAIN))
        empty = mailbox(name="catchall", address=f"*@{DOMAIN}")
        self.assertFalse(hookspec.refuses_catchall(received(empty), DOMAIN))

    def test_argv_rechecked(self):
        """An empty, blank or relative cmd[0] is refused at fire time."""
        self.assertEqual(hookspec.argv_error(make_hook("on_receive", [])), "empty cmd")
        self.assertEqual(hookspec.argv_error(make_hook("on_receive", [" "])), "empty cmd")
        self.assertIn("not an absolute path", hookspec.argv_error(make_hook("on_receive", ["echo"])))
        self.assertIsNone(hookspec.argv_error(make_hook("on_receive", ["/bin/echo"])))


class GateTests(SynchronousTestCase):
    """The trust gate (docs/hooks.md)."""

    def test_table(self):
        """Default hooks fire only for trusted == "true"; fire_on_untrusted always."""
        default = make_hook("on_receive", ["/bin/true"])
        flagged = make_hook("on_receive", ["/bin/true"], fire_on_untrusted=True)
        for trusted, default_fires in (("none", False), ("true", True), ("false", False)):
            event = received(mailbox(default, flagged), trusted)
            self.assertEqual(hookspec.gated(event, default),
                             None if default_fires else hookspec.TRUST, trusted)
            self.assertIsNone(hookspec.gated(event, flagged), trusted)

    def test_after_send_ungated(self):
        """Nothing gates after_send hooks."""
        hook = make_hook("after_send", ["/bin/true"])
        self.assertIsNone(hookspec.gated(sent(mailbox(hook)), hook))

    def test_review_gate(self):
        """risk = "review" holds back a hook without fire_on_review; the trust gate
        comes first; fire_on_review alone does not pass untrusted mail."""
        default = make_hook("on_receive", ["/bin/true"])
        review = make_hook("on_receive", ["/bin/true"], fire_on_review=True)
        both = make_hook("on_receive", ["/bin/true"], fire_on_untrusted=True,
                         fire_on_review=True)
        box = mailbox(default, review, both)
        for trusted, risk, expected in (
            ("true", "review", (hookspec.RISK, None, None)),
            ("true", None, (None, None, None)),
            ("none", "review", (hookspec.TRUST, hookspec.TRUST, None)),
        ):
            event = received(box, trusted, risk=risk)
            self.assertEqual(tuple(hookspec.gated(event, h) for h in box.hooks), expected)


class PlanTests(SynchronousTestCase):
    """Which hooks of an event fire, and why the others do not."""

    def test_plan(self):
        """Config order; each gate, a bad argv and the catchall named; the rate holds
        back only the hooks that would fire."""
        good = make_hook("on_receive", ["/bin/true"], name="good")
        gated_ = make_hook("on_receive", ["/bin/true"], name="gated")
        relative = make_hook("on_receive", ["true"], name="relative", fire_on_review=True)
        sending = make_hook("after_send", ["/bin/true"], name="sending")
        box = mailbox(good, gated_, relative, sending)
        planned = hookspec.plan(received(box, "true", risk="review"), DOMAIN)
        self.assertEqual([(p.hook.name, p.skipped) for p in planned],
                         [("good", hookspec.RISK), ("gated", hookspec.RISK),
                          ("relative", hookspec.ARGV)])
        self.assertFalse(hookspec.fires(planned))
        planned = hookspec.plan(received(box, "true"), DOMAIN)
        self.assertTrue(hookspec.fires(planned))
        self.assertEqual([p.skipped for p in hookspec.over_rate(planned)],
                         [hookspec.RATE, hookspec.RATE, hookspec.ARGV])
        catchall = mailbox(good, name="catchall", address=f"*@{DOMAIN}")
        self.assertEqual([p.skipped for p in hookspec.plan(received(catchall, "true"), DOMAIN)],
                         [hookspec.CATCHALL])
        self.assertEqual([p.skipped for p in hookspec.plan(sent(box), DOMAIN)], [None])

    def test_rate_window(self):
        """Fewer than per_hour fires in the hour before now let the next fire; a fire
        exactly an hour old no longer counts."""
        self.assertTrue(hookspec.rate_allows([], 5000.0, 1))
        self.assertFalse(hookspec.rate_allows([1500.0, 2000.0], 5000.0, 2))
        self.assertTrue(hookspec.rate_allows([1500.0, 2000.0], 5000.0, 3))
        self.assertTrue(hookspec.rate_allows([1500.0, 2000.0], 5100.0, 2))


class ArgvTests(SynchronousTestCase):
    """What the daemon execs for a hook."""

    def test_own_ids(self):
        """Without a drop, cmd itself."""
        self.assertEqual(hookspec.argv(("/bin/echo", "a b"), None, None), ["/bin/echo", "a b"])

    def test_drop(self):
        """With a drop, unshare with the numeric gid then uid, and cmd after C{--}."""
        self.assertEqual(
            hookspec.argv(("/bin/echo", "--setuid=0"), (1000, 100), "/usr/bin/unshare"),
            ["/usr/bin/unshare", "--setgid=100", "--setuid=1000", "--", "/bin/echo",
             "--setuid=0"],
        )


class EnvironmentTests(SynchronousTestCase):
    """The child's environment (§5)."""

    daemon_env = {"PATH": "/usr/bin:/bin", "HOME": "/root", "AIMX_LEAK_SENTINEL_HOOK": "leaked"}

    def test_on_receive(self):
        """PATH and HOME from the daemon, then the AIMX_* values; nothing else."""
        hook = make_hook("on_receive", ["/bin/env"], name="hook_explicit")
        env = hookspec.environment(received(mailbox(hook)), hook, self.daemon_env)
        self.assertEqual(
            env,
            {
                "PATH": "/usr/bin:/bin",
                "HOME": "/root",
                "AIMX_HOOK_NAME": "hook_explicit",
                "AIMX_EVENT": "on_receive",
                "AIMX_MAILBOX": "alice",
                "AIMX_FROM": "alice@gmail.com",
                "AIMX_TO": "alice@test.com",
                "AIMX_SUBJECT": "Hello World",
                "AIMX_FILEPATH": "/data/inbox/alice/2025-01-01-000000-hello.md",
                "AIMX_MESSAGE_ID": "m1@gmail.com",
                "AIMX_ID": "2025-01-01-000000-hello",
                "AIMX_DATE": "2025-01-01T00:00:00Z",
            },
        )

    def test_derived_name(self):
        """An unnamed hook gets its §2 derived name in AIMX_HOOK_NAME."""
        cmd = ["/bin/sh", "-c", "env > out"]
        hook = make_hook("on_receive", cmd, fire_on_untrusted=True)
        env = hookspec.environment(received(mailbox(hook)), hook, {})
        self.assertEqual(env["AIMX_HOOK_NAME"], derive_hook_name("on_receive", cmd, True))
        self.assertRegex(env["AIMX_HOOK_NAME"], "^[0-9a-f]{12}$")

    def test_no_path_no_home(self):
        """PATH and HOME are only copied when the daemon has them."""
        hook = make_hook("on_receive", ["/bin/true"])
        env = hookspec.environment(received(mailbox(hook)), hook, {"USER": "root"})
        self.assertEqual({k for k in env if not k.startswith("AIMX_")}, set())

    def test_owner_home(self):
        """A hook run as the owner gets the owner's HOME instead of the daemon's."""
        hook = make_hook("on_receive", ["/bin/true"])
        env = hookspec.environment(received(mailbox(hook)), hook,
                                   {"PATH": "/bin", "HOME": "/root"}, home="/home/alice")
        self.assertEqual((env["PATH"], env["HOME"]), ("/bin", "/home/alice"))
        env = hookspec.environment(received(mailbox(hook)), hook, {}, home="/home/alice")
        self.assertEqual(env["HOME"], "/home/alice")

    def test_hostile_values_verbatim(self):
        """$(), backticks, quotes and newlines pass verbatim; NUL is dropped."""
        hook = make_hook("on_receive", ["/bin/true"])
        subject = "$(touch /tmp/x) `id` 'q' \"d\" ${HOME}\nnext\0line"
        event = received(mailbox(hook), subject=subject, from_="\"$(id)\" <a`b`@x.com>")
        env = hookspec.environment(event, hook, {})
        self.assertEqual(env["AIMX_SUBJECT"], "$(touch /tmp/x) `id` 'q' \"d\" ${HOME}\nnextline")
        self.assertEqual(env["AIMX_FROM"], "\"$(id)\" <a`b`@x.com>")

    def test_after_send(self):
        """after_send: AIMX_SEND_STATUS, the sent copy, its stem, the fire time."""
        hook = make_hook("after_send", ["/bin/true"])
        path = "/data/sent/alice/2025-04-15-123023-hi.md"
        env = hookspec.environment(sent(mailbox(hook), filepath=path), hook, {})
        self.assertEqual(env["AIMX_SEND_STATUS"], "delivered")
        self.assertEqual(env["AIMX_EVENT"], "after_send")
        self.assertEqual(env["AIMX_FILEPATH"], path)
        self.assertEqual(env["AIMX_ID"], "2025-04-15-123023-hi")
        self.assertEqual(env["AIMX_MESSAGE_ID"], "<out1@test.com>")
        self.assertEqual(env["AIMX_DATE"], "2025-04-15T12:30:23+00:00")
        self.assertEqual((env["AIMX_FROM"], env["AIMX_TO"]), ("alice@test.com", "bob@example.com"))

    def test_deferred_send(self):
        """A deferred send has no file: FILEPATH and ID are empty."""
        hook = make_hook("after_send", ["/bin/true"])
        env = hookspec.environment(sent(mailbox(hook), "deferred"), hook, {})
        self.assertEqual(
            (env["AIMX_SEND_STATUS"], env["AIMX_FILEPATH"], env["AIMX_ID"]), ("deferred", "", "")
        )


class ResultFieldsTests(SynchronousTestCase):
    """The fields of the event logged after a fire (§6)."""

    def fields(self, event, stderr=b""):
        hook = make_hook("on_receive", ["/bin/true"], name="notify")
        return hookspec.result_fields(event, hook, sandbox="setuid", exit_code=0,
                                      duration_ms=12, timed_out=False, stderr=stderr)

    def test_every_field_in_order(self):
        """Every field of §6, in order (case 9)."""
        self.assertEqual(
            list(self.fields(received(mailbox())).items()),
            [("hook_name", "notify"), ("event", "on_receive"), ("mailbox", "alice"),
             ("owner", "alice"), ("sandbox", "setuid"),
             ("email_id", "2025-01-01-000000-hello"), ("exit_code", 0),
             ("duration_ms", 12), ("timed_out", False), ("stderr_tail", "")],
        )

    def test_ident(self):
        """email_id; message_id when nothing was persisted; an empty email_id else."""
        box = mailbox()
        self.assertEqual(self.fields(sent(box, "deferred"))["message_id"], "<out1@test.com>")
        self.assertNotIn("email_id", self.fields(sent(box, "deferred")))
        empty = hookspec.sent(
            box, "deferred", from_="", to="", subject="", message_id="", filepath="",
            now=datetime.now(timezone.utc),
        )
        self.assertEqual(self.fields(empty)["email_id"], "")

    def test_lossy_decode(self):
        """Invalid UTF-8 in stderr is replaced, not an error."""
        self.assertEqual(self.fields(received(mailbox()), b"a\xffb")["stderr_tail"], "a\ufffdb")
