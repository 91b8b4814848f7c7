"""`aimx doctor`: findings, verdict, collected facts and the rendered report (docs/cli.md, "aimx doctor").

The verb runs in-process with a fake host (L{aimx.testing.fakes.FakeRunner}: no real
systemctl or hostname), a fake control client and a task.Clock; DNS is covered by
tests.test_dnscheck and tests.integration.test_doctor. Acceptance cases are named
in the docstrings.
"""

import functools
import io
import os
import pwd

import attrs
from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

import aimx.cli
from aimx.cli import doctor as cli
from aimx.cli.session import Session, execute
from aimx.cli.term import Terminal
from aimx.control import commands
from aimx.ops import doctor as core
from aimx.core.config import load_text
from aimx.ops.dnscheck import FAIL, MISSING, PASS, WARN, Check, DnsRecord
from aimx.ops.doctor import ABSENT, DIR, NOT_DIR, DirState, Facts, MailboxFacts
from aimx.ops.portcheck import INBOUND_UNCHECKED, OUTBOUND_BLOCKED, ProbeResult
from aimx.errors import DaemonNotRunning
from aimx.store import demo as demo_state
from aimx.store import keys, passwd
from aimx.host import initsystem
from aimx.store.passwd import Owner
from aimx.host.programs import Completed
from aimx.testing import fakes
from aimx.testing.fakes import FakeControlClient
from tests.test_initsystem import HostTestCase

DOMAIN = "agent.example.com"
MX = "gmail-smtp-in.l.google.com [192.0.2.25]:25 (MX of gmail.com)"


def mailbox_owner() -> pwd.struct_passwd:
    """A user to own the fixture's mailboxes: not root (root-owned mailboxes warn)."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    return pwd.getpwnam("nobody")


OWNER = mailbox_owner()
USER = OWNER.pw_name
IS_ACTIVE = ("systemctl", "is-active", "--quiet", "aimx")


def box(name="alice", *, uid=1000, gid=1000, inbox=None, sent=None, **kw) -> MailboxFacts:
    """A mailbox whose directories are right unless told otherwise."""
    ok = DirState(f"/d/inbox/{name}", DIR, uid, gid, 0o700)
    fields = dict(
        name=name, address=f"{name}@{DOMAIN}", owner=name, catchall=False, uid=uid, gid=gid,
        inbox=inbox or ok, sent=sent or attrs.evolve(ok, path=f"/d/sent/{name}"),
        trust="none", senders=0, hooks=0, total=0, unread=0,
    )
    fields.update(kw)
    return MailboxFacts(**fields)


def ids(found) -> list[tuple[str, str]]:
    return [(f.id, f.severity) for f in found]


class FindingsTests(SynchronousTestCase):
    def test_healthy(self):
        """Right owners, directories and modes: no finding, exit 0."""
        facts = Facts([box("alice"), box("catchall", catchall=True)])
        self.assertEqual(core.findings(facts), [])
        self.assertIsNone(core.verdict(facts, []))

    def test_orphan_owner(self):
        """An unresolvable owner warns, skips its directory checks and fails the exit."""
        facts = Facts([box(uid=None, gid=None, sent=DirState("/d/sent/alice", ABSENT))])
        found = core.findings(facts)
        self.assertEqual(ids(found), [("MAILBOX-OWNER-ORPHAN", core.WARN)])
        self.assertIn("owner 'alice' does not resolve via getpwnam", found[0].message)
        self.assertEqual(core.verdict(facts, found), core.ORPHANS)

    def test_orphan_catchall_does_not_fail(self):
        """A catchall owned by a missing user (not aimx-catchall) only warns."""
        facts = Facts([box("catchall", catchall=True, owner="ghost", uid=None, gid=None)])
        found = core.findings(facts)
        self.assertEqual(ids(found), [("MAILBOX-OWNER-ORPHAN", core.WARN)])
        self.assertIsNone(core.verdict(facts, found))

    def test_missing_dirs(self):
        """Each missing directory fails; both missing also flags the config entry."""
        one = Facts([box(sent=DirState("/d/sent/alice", ABSENT))])
        found = core.findings(one)
        self.assertEqual(ids(found), [("MAILBOX-DIR-MISSING", core.FAIL)])
        self.assertEqual(found[0].message,
                         "mailbox 'alice' sent directory is missing: /d/sent/alice")
        self.assertEqual(core.verdict(one, found), core.FAILING)
        both = Facts([box(inbox=DirState("/i", ABSENT), sent=DirState("/s", ABSENT))])
        self.assertEqual(ids(core.findings(both)), [
            ("MAILBOX-DIR-MISSING", core.FAIL), ("MAILBOX-DIR-MISSING", core.FAIL),
            ("ORPHAN-CONFIG", core.WARN),
        ])

    def test_not_a_dir(self):
        """Something else at a mailbox path fails."""
        found = core.findings(Facts([box(inbox=DirState("/d/inbox/alice", NOT_DIR))]))
        self.assertEqual(ids(found), [("MAILBOX-DIR-NOT-DIR", core.FAIL)])

    def test_owner_drift(self):
        """Another uid fails with a chown fix; the group is then not compared."""
        wrong = DirState("/d/inbox/alice", DIR, 0, 0, 0o700)
        found = core.findings(Facts([box(inbox=wrong)]))
        self.assertEqual(ids(found), [("MAILBOX-DIR-OWNER-DRIFT", core.FAIL)])
        self.assertEqual(found[0].fix,
                         "chown the directory: `sudo chown -R alice:alice /d/inbox/alice`")

    def test_group_and_mode_drift(self):
        """Right uid, other gid and mode 0755: two warnings, exit 0."""
        drifted = DirState("/d/inbox/alice", DIR, 1000, 4, 0o755)
        facts = Facts([box(inbox=drifted)])
        found = core.findings(facts)
        self.assertEqual(ids(found), [("MAILBOX-DIR-GROUP-DRIFT", core.WARN),
                                      ("MAILBOX-DIR-MODE-DRIFT", core.WARN)])
        self.assertEqual(found[1].message,
                         "mailbox 'alice' inbox dir mode is 0755, expected 0700")
        self.assertIsNone(core.verdict(facts, found))

    def test_stray_storage(self):
        """A directory with no configured mailbox is orphan storage."""
        found = core.findings(Facts([box()], stray=["inbox/old", "sent/old"]))
        self.assertEqual(ids(found), [("ORPHAN-STORAGE", core.WARN)] * 2)
        self.assertIn("`inbox/old/`", found[0].message)
        self.assertIn("[mailboxes.old]", found[0].fix)

    def test_catchall_user_missing(self):
        """A catchall owned by an unresolvable aimx-catchall fails."""
        facts = Facts([box("catchall", catchall=True, owner="aimx-catchall", uid=None,
                           gid=None)])
        found = core.findings(facts)
        self.assertEqual(ids(found), [("MAILBOX-OWNER-ORPHAN", core.WARN),
                                      ("CATCHALL-USER-MISSING", core.FAIL)])
        self.assertEqual(core.verdict(facts, found), core.FAILING)

    def test_hook_drop_missing(self):
        """Without unshare, a mailbox of another owner with hooks fails; root's own
        hooks, or no hooks, need no drop."""
        facts = Facts([box(hooks=1), box("r", owner="root", uid=0, gid=0, hooks=1),
                       box("quiet")], hook_drop=False)
        found = core.findings(facts)
        self.assertEqual(ids(found), [("HOOK-DROP-MISSING", core.FAIL)])
        self.assertIn("(alice)", found[0].message)
        self.assertEqual(core.verdict(facts, found), core.FAILING)
        self.assertEqual(core.findings(Facts([box("quiet")], hook_drop=False)), [])
        self.assertEqual(core.findings(Facts([box(hooks=1)])), [])

    def test_legacy_hook_user(self):
        """A leftover aimx-hook user is information only."""
        facts = Facts([box()], legacy_hook_user=True)
        found = core.findings(facts)
        self.assertEqual(ids(found), [("LEGACY-AIMX-HOOK-USER", core.INFO)])
        self.assertIsNone(core.verdict(facts, found))

    def test_load_warnings(self):
        """Config load warnings become ORPHAN-MAILBOX-OWNER and ROOT-OWNED-MAILBOX."""
        _, warnings = load_text(
            f'domain = "{DOMAIN}"\n'
            f'[mailboxes.a]\naddress = "a@{DOMAIN}"\nowner = "nosuchuser123"\n'
            f'[mailboxes.r]\naddress = "r@{DOMAIN}"\nowner = "root"\n',
            "config.toml", owner_exists=lambda owner: False,
        )
        found = core.findings(Facts([], load_warnings=warnings))
        self.assertEqual(ids(found), [("ORPHAN-MAILBOX-OWNER", core.WARN),
                                      ("ROOT-OWNED-MAILBOX", core.WARN)])
        self.assertTrue(found[0].message.startswith("config load: mailbox 'a' owner"))

    def test_fail_wins_over_orphans(self):
        """With both a failing check and an orphan owner the failing-checks error is given."""
        facts = Facts([box(uid=None), box("bob", sent=DirState("/s", ABSENT))])
        self.assertEqual(core.verdict(facts, core.findings(facts)), core.FAILING)

    def test_table(self):
        """Framed table, widths from the widest cell, numbers right-aligned."""
        lines = core.mailbox_table((box("alice", total=12, unread=3, senders=2, hooks=1),
                                    box("catchall", address=f"*@{DOMAIN}", trust="verified")))
        self.assertEqual(lines, [
            "  +----------+-------------------------+-------+--------+----------+---------+-------+",
            "  | Mailbox  | Address                 | Total | Unread | Trust    | Senders | Hooks |",
            "  +----------+-------------------------+-------+--------+----------+---------+-------+",
            "  | alice    | alice@agent.example.com |    12 |      3 | none     |       2 |     1 |",
            "  | catchall | *@agent.example.com     |     0 |      0 | verified |       0 |     0 |",
            "  +----------+-------------------------+-------+--------+----------+---------+-------+",
        ])


def config_text(data_dir: str, *, owner=USER, alice=(), catchall_only=False, **top) -> str:
    """The catchall and alice (owned by C{owner}; C{alice}: more of her table's keys);
    C{top}: more top-level keys."""
    top.setdefault("trusted_senders", ["*@example.org", "boss@example.com"])
    mailboxes = {"catchall": {"address": f"*@{DOMAIN}"}}
    if not catchall_only:
        mailboxes["alice"] = {"owner": owner, **dict(alice)}
    return fakes.config_text(DOMAIN, data_dir=data_dir, owner=USER, mailboxes=mailboxes, **top)


MESSAGE = b'+++\nid = "x"\nread = %s\n+++\n\nHello\n'


def dns_checks(dmarc="none", dkim=PASS, spf=PASS) -> list[Check]:
    """DNS checks with the DMARC policy found and the DKIM and SPF verdicts."""
    return [Check("A", PASS), Check("SPF", spf), Check("SPF (IPv6)", PASS), Check("DKIM", dkim),
            Check("DMARC", PASS, found=dmarc), Check("PTR", WARN, "no PTR record")]


class DmarcNextStepTests(SynchronousTestCase):
    def test_next_step(self):
        """Mail sent and DKIM and SPF verifying: from none the next step is quarantine
        (then reject), from quarantine it is reject (issue 16)."""
        first = core.dmarc_next_step(dns_checks("none"), 3, DOMAIN)
        self.assertEqual((first.id, first.severity), ("DMARC-NEXT-STEP", core.INFO))
        self.assertIn("DMARC is at p=none and mail has gone out (3 sent)", first.message)
        self.assertIn(f"publish `v=DMARC1; p=quarantine` at _dmarc.{DOMAIN} (later p=reject)",
                      first.fix)
        self.assertIn("dkim=pass and spf=pass", first.fix)
        second = core.dmarc_next_step(dns_checks("quarantine"), 1, DOMAIN)
        self.assertTrue(second.fix.endswith(f"publish `v=DMARC1; p=reject` at _dmarc.{DOMAIN}"))

    def test_not_yet(self):
        """Nothing sent, DKIM or SPF not verifying, already reject, or no valid DMARC
        record: no suggestion."""
        for checks, sent in ((dns_checks(), 0), (dns_checks(dkim=FAIL), 5),
                             (dns_checks(spf=MISSING), 5), (dns_checks("reject"), 5),
                             ([Check("DKIM", PASS), Check("SPF", PASS),
                               Check("DMARC", MISSING, "No DMARC record found")], 5),
                             ([Check("DMARC", PASS, found="none")], 5), ([], 5)):
            self.assertIsNone(core.dmarc_next_step(checks, sent, DOMAIN), (checks, sent))


class StoreMixin:
    def make_store(self, mailboxes=("alice", "catchall")):
        root = os.path.abspath(self.mktemp())
        self.config_dir = os.path.join(root, "etc")
        self.data_dir = os.path.join(root, "data")
        self.runtime_dir = os.path.join(root, "run")
        os.makedirs(self.config_dir)
        os.makedirs(self.runtime_dir)
        for name in mailboxes:
            for part in ("inbox", "sent"):
                path = os.path.join(self.data_dir, part, name)
                os.makedirs(path)
                os.chown(path, OWNER.pw_uid, OWNER.pw_gid)
                os.chmod(path, 0o700)
        self.write_config(config_text(self.data_dir))

    def write_config(self, text):
        with open(os.path.join(self.config_dir, "config.toml"), "w") as f:
            f.write(text)

    def put(self, relative: str, data: bytes = b"") -> str:
        path = os.path.join(self.data_dir, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return path


class CollectTests(StoreMixin, SynchronousTestCase):
    def collect(self, resolve=passwd.owner, **kw):
        alice = {"trust": "verified", "trusted_senders": [],
                 "hooks": [fakes.hook_table("on_receive", ["/bin/true"])]}
        config, warnings = load_text(config_text(self.data_dir, alice=alice), "config.toml")
        return cli.collect(config, warnings, resolve, **kw)

    def test_no_unshare(self):
        """unshare looked for where the daemon looks: absent there, no hook drop."""
        self.make_store()
        self.assertFalse(self.collect(unshare_path=self.mktemp()).hook_drop)

    def test_mailboxes(self):
        """Sorted by name, with effective trust, sender and hook counts and inbox counts."""
        self.make_store()
        self.put("inbox/alice/a.md", MESSAGE % b"false")
        self.put("inbox/alice/b.md", MESSAGE % b"true")
        self.put("inbox/alice/c/c.md", MESSAGE % b"false")
        self.put("sent/alice/s.md", MESSAGE % b"false")
        facts = self.collect()
        alice, catchall = facts.mailboxes
        self.assertEqual((alice.name, alice.trust, alice.senders, alice.hooks, alice.total,
                          alice.unread, alice.catchall), ("alice", "verified", 0, 1, 3, 2, False))
        self.assertEqual(alice.sent_messages, 1)
        self.assertEqual((catchall.name, catchall.trust, catchall.senders, catchall.catchall),
                         ("catchall", "none", 2, True))
        self.assertEqual((alice.uid, alice.gid), (OWNER.pw_uid, OWNER.pw_gid))

    def test_dir_states(self):
        """Directories are stat'ed without following links: mode, missing, not a directory."""
        self.make_store()
        inbox = os.path.join(self.data_dir, "inbox", "alice")
        os.chmod(inbox, 0o750)
        os.rmdir(os.path.join(self.data_dir, "sent", "alice"))
        os.rmdir(os.path.join(self.data_dir, "sent", "catchall"))
        os.symlink(inbox, os.path.join(self.data_dir, "sent", "catchall"))
        alice, catchall = self.collect().mailboxes
        st = os.stat(inbox)
        self.assertEqual(alice.inbox, DirState(inbox, DIR, st.st_uid, st.st_gid, 0o750))
        self.assertEqual(alice.sent.kind, ABSENT)
        self.assertEqual(catchall.sent.kind, NOT_DIR)

    def test_stray_and_users(self):
        """Unconfigured directories (not files) are stray; aimx-hook is looked up."""
        self.make_store()
        os.makedirs(os.path.join(self.data_dir, "inbox", "old"))
        os.makedirs(os.path.join(self.data_dir, "sent", "gone"))
        self.put("inbox/README.md")
        looked_up = []

        def resolve(name):
            looked_up.append(name)
            return Owner(name, 7, 7) if name == "aimx-hook" else passwd.owner(name)

        facts = self.collect(resolve)
        self.assertTrue(facts.hook_drop)  # util-linux is on every test machine
        self.assertEqual(facts.stray, ("inbox/old", "sent/gone"))
        self.assertTrue(facts.legacy_hook_user)
        self.assertIn("aimx-hook", looked_up)

    def test_no_data_dir(self):
        """A data dir that does not exist: every directory absent, nothing stray."""
        self.make_store(mailboxes=())
        facts = self.collect()
        self.assertEqual(facts.stray, ())
        self.assertEqual({mb.inbox.kind for mb in facts.mailboxes}, {ABSENT})


VERSION = {"tag": "9.8.7", "git_hash": "abc1234", "target": "x", "build_date": "2025-01-01"}


class VerbTests(StoreMixin, HostTestCase):
    def setUp(self):
        self.make_store()
        keys.generate_dkim_key(self.config_dir, bits=1024)
        self.environ = {"AIMX_RUNTIME_DIR": self.runtime_dir}
        self.connects = 0
        self.control = FakeControlClient({commands.Version: VERSION})
        self.outbound = ProbeResult(True, detail=f"{MX} sent its 220 banner")
        self.inbound = ProbeResult(True, detail="the verifier reached 192.0.2.9 on port 25")
        self.probed = []

    async def probe_out(self, reactor, domain, settings, *, resolver, run_in_thread):
        self.probed.append(("outbound", domain, settings.out_port))
        return self.outbound

    async def probe_in(self, reactor, verify_host):
        self.probed.append(("inbound", verify_host))
        return self.inbound

    def connect(self):
        self.connects += 1
        return defer.succeed(self.control)

    def start(self, *, running=True, clock=None, connect=None, resolve=passwd.owner,
              euid=None):
        """Start the verb; fires with (exit code, stdout, stderr)."""
        system = self.host(initsystem.SYSTEMD, {IS_ACTIVE: Completed(0 if running else 3)})
        args = aimx.cli.arguments.parser().parse_args(["doctor"])
        args.config_dir, args.data_dir = self.config_dir, None
        out, err = io.StringIO(), io.StringIO()
        term = Terminal(out, err, io.StringIO(), self.environ)
        s = Session(args, connect=connect or self.connect,
                    euid=os.geteuid() if euid is None else euid, term=term,
                    environ=self.environ)
        verb = functools.partial(cli.doctor, clock=clock or task.Clock(), system=system,
                                 run_in_thread=defer.maybeDeferred, resolve=resolve,
                                 probes=(self.probe_out, self.probe_in))
        d = defer.Deferred.fromCoroutine(execute(verb, args, s))
        return d.addCallback(lambda code: (code, out.getvalue(), err.getvalue()))

    def doctor(self, **kw):
        return self.successResultOf(self.start(**kw))

    def test_healthy(self):
        """Healthy fixture: every section, the table, exit 0 (acceptance 14)."""
        self.put("inbox/alice/a.md", MESSAGE % b"false")
        code, out, err = self.doctor()
        self.assertEqual((code, err), (0, ""))
        for text in (DOMAIN, "catchall", "alice", "Mailbox", "Logs", "aimx logs",
                     "All checks passed."):
            self.assertIn(text, out)
        self.assertNotIn("Recent logs", out)
        config_path = os.path.join(self.config_dir, "config.toml")
        self.assertIn(
            "Configuration\n"
            f"Domain:           {DOMAIN}\n"
            f"Config file:      {config_path}\n"
            f"Data directory:   {self.data_dir}\n"
            "DKIM selector:    aimx\n"
            "Backup MX:        (none)\n"
            "DKIM key:         present\n"
            "Global trust:     none\n"
            "Trusted senders:  *@example.org, boss@example.com\n"
            "\nService\n"
            "SMTP server:      running\n", out)
        self.assertIn("Server version:   9.8.7 (abc1234)\n", out)
        self.assertIn("Mailboxes\nTotal:            2 (1 messages, 1 unread)\n\n  +---", out)
        self.assertIn(f"Ownership\n  alice     owner={USER}  [OK]  uid={OWNER.pw_uid}\n", out)
        ownership = out.split("Ownership\n")[1].split("\n\n")[0]
        self.assertEqual(ownership.count("owner="), 1, "the catchall is not listed")
        self.assertEqual(self.control.calls, [(commands.Version, {})])
        self.assertTrue(self.control.closed)

    def test_port25_without_verifier(self):
        """Port 25: outbound checked against gmail.com's MX; inbound explained, not run."""
        code, out, _ = self.doctor()
        self.assertEqual(code, 0)
        self.assertIn(
            "\nPort 25\n"
            f"  Outbound: [OK] - {MX} sent its 220 banner\n"
            "  Inbound: [WARN] - not checked: no verifier configured (verify_host)\n"
            "    Checking inbound port 25 needs a verifier on another host, outside this "
            "network,\n", out)
        self.assertIn("    On that other host run:  twistd -n aimx-verifier\n"
                      "      (HTTPS through a reverse proxy in front of it, or --http "
                      "0.0.0.0:3025)\n"
                      '    then set verify_host = "https://<that host>" in config.toml, or '
                      "pass --verify-host.\n\nLogs\n", out)
        self.assertIn("All checks passed.", out)
        self.assertEqual(self.probed, [("outbound", "gmail.com", 25)])

    def test_port25_configured(self):
        """outbound_check_domain and verify_host from config.toml; AIMX_SMTP_OUT_PORT."""
        self.write_config(config_text(self.data_dir, verify_host="https://v.example/",
                                      outbound_check_domain="example.net"))
        self.environ["AIMX_SMTP_OUT_PORT"] = "2525"
        code, out, _ = self.doctor()
        self.assertEqual(code, 0)
        self.assertIn(f"  Outbound: [OK] - {MX} sent its 220 banner\n"
                      "  Inbound: [OK] - the verifier reached 192.0.2.9 on port 25\n", out)
        self.assertEqual(sorted(self.probed), [("inbound", "https://v.example"),
                                               ("outbound", "example.net", 2525)])

    def test_port25_failures_inform(self):
        """Failed checks show the reason and the advice, and (like DNS) keep exit 0."""
        self.write_config(config_text(self.data_dir, verify_host="https://v.example"))
        self.outbound = ProbeResult(False, detail=f"cannot connect to {MX}: connection refused")
        self.inbound = ProbeResult(False, error="https://v.example/probe: connection refused")
        code, out, _ = self.doctor()
        self.assertEqual(code, 0)
        self.assertIn(
            f"  Outbound: [FAIL] - cannot connect to {MX}: connection refused\n"
            f"         → {OUTBOUND_BLOCKED}\n"
            "  Inbound: [FAIL] - https://v.example/probe: connection refused\n"
            f"         → {INBOUND_UNCHECKED}\n", out)

    def test_port25_unusable_config(self):
        """A verify_host or check domain that cannot be used fails that check only."""
        self.write_config(config_text(self.data_dir, verify_host="ftp://v.example",
                                      outbound_check_domain="x"))
        code, out, _ = self.doctor()
        self.assertEqual(code, 0)
        self.assertIn("  Outbound: [FAIL] - invalid outbound check domain 'x': 'x' needs at "
                      "least two labels", out)
        self.assertIn("  Inbound: [FAIL] - verify-host must start with http:// or https:// "
                      "(got: ftp://v.example)\n", out)
        self.assertEqual(self.probed, [])

    def test_daemon_not_running(self):
        """No socket and the service stopped: no probe, `(daemon not running)` (acceptance 16)."""
        code, out, _ = self.doctor(running=False)
        self.assertIn("SMTP server:      not running\n", out)
        self.assertIn("Server version:   (daemon not running)\n", out)
        self.assertEqual((code, self.connects), (0, 0))

    def test_daemon_without_service(self):
        """No service, but the daemon answers the probe: running, with where it answers."""
        path = os.path.join(self.runtime_dir, "aimx.sock")
        open(path, "w").close()
        code, out, _ = self.doctor(running=False)
        self.assertIn(f"SMTP server:      running (not as the aimx service; answers on "
                      f"{path})\n", out)
        self.assertIn("Server version:   9.8.7 (abc1234)\n", out)
        self.assertEqual(code, 0)

    def test_stopped_demo(self):
        """A demo's state file but no demo answering: said so, and its DNS server and MX
        (gone with it) are not asked anything."""
        demo_state.write(self.runtime_dir, demo_state.DemoState(
            domain=DOMAIN, host="127.0.0.1", port=2525, dns_port=5353, mx_port=2526,
            sender_domain="sender.localhost", selector="demo", sender_key="/d/sender.key",
            config_dir=self.config_dir, data_dir=self.data_dir, log="/d/aimx.log",
            directory="/d",
        ))
        code, out, _ = self.doctor(running=False)
        self.assertEqual(code, 0)
        self.assertIn("SMTP server:      not running (the aimx demo in /d has stopped; "
                      "`aimx demo` starts a new one)\n", out)
        self.assertIn("DNS\n  skipped - the demo is not running (its DNS server stopped with "
                      "it)\n\nPort 25\n  skipped - the demo is not running\n\nLogs\n", out)
        self.assertEqual((self.probed, self.runner.calls), ([], [list(IS_ACTIVE)]))

    def test_config_only_root_reads(self):
        """A config this (non-root) user cannot read: one line saying to re-run as root."""
        real_access = os.access
        config = os.path.join(self.config_dir, "config.toml")

        def unreadable(*args, **kwargs):
            raise cli.ConfigError(f"{config}: cannot read: Permission denied")

        self.patch(cli.os, "access", lambda p, mode: p != config and real_access(p, mode))
        self.patch(cli.configfile, "load", unreadable)
        code, out, err = self.doctor(euid=1000)
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(err, f"Error: aimx doctor needs to read {config}, which this user "
                              "cannot read; re-run it as root (sudo aimx doctor)\n")

    def test_socket_without_daemon(self):
        """A socket path but nobody answering: `(daemon not reachable on <socket>)`."""
        path = os.path.join(self.runtime_dir, "aimx.sock")
        open(path, "w").close()

        def refused():
            return defer.fail(DaemonNotRunning("refused"))

        code, out, _ = self.doctor(running=False, connect=refused)
        self.assertIn(f"Server version:   (daemon not reachable on {path})\n", out)
        self.assertEqual(code, 0)

    def test_probe_timeout(self):
        """The daemon gets 500 ms to answer; then the probe is reported failed."""
        clock = task.Clock()
        self.control = FakeControlClient({commands.Version: defer.Deferred()})
        d = self.start(clock=clock)
        self.assertNoResult(d)
        clock.advance(0.49)
        self.assertNoResult(d)
        clock.advance(0.01)
        code, out, _ = self.successResultOf(d)
        self.assertIn("Server version:   (daemon probe failed: no answer within 500 ms)\n", out)
        self.assertTrue(self.control.closed)
        self.assertEqual(code, 0)

    def test_probe_error(self):
        """Any other probe failure is shown, never fatal."""
        self.control = FakeControlClient({commands.Version: RuntimeError("bad frame")})
        code, out, _ = self.doctor()
        self.assertIn("Server version:   (daemon probe failed: bad frame)\n", out)
        self.assertEqual(code, 0)

    def test_config_missing(self):
        """No config.toml: `Error: …`, exit 1, nothing else printed."""
        os.unlink(os.path.join(self.config_dir, "config.toml"))
        code, out, err = self.doctor()
        self.assertEqual((code, out), (1, ""))
        self.assertIn("Error: Config file not found at", err)

    def test_unknown_owner(self):
        """An owner that does not exist: `user not found`, exit 1 (acceptance 15)."""
        self.write_config(config_text(self.data_dir, owner="nosuchuser123"))
        code, out, err = self.doctor()
        self.assertEqual(code, 1)
        self.assertIn("  alice     owner=nosuchuser123  [FAIL]  user not found\n", out)
        self.assertIn("[WARN] mailbox 'alice' owner 'nosuchuser123' does not resolve", out)
        self.assertIn("[WARN] config load: mailbox 'alice' owner 'nosuchuser123'", out)
        self.assertIn(f"Error: {core.ORPHANS}", err)

    def test_mode_drift_only_warns(self):
        """inbox/<m> at 0755: a [WARN] MAILBOX-DIR-MODE-DRIFT line, exit 0 (acceptance 15)."""
        inbox = os.path.join(self.data_dir, "inbox", "alice")
        os.chmod(inbox, 0o755)
        code, out, err = self.doctor()
        self.assertEqual((code, err), (0, ""))
        self.assertIn(
            "Checks\n"
            "  [WARN] mailbox 'alice' inbox dir mode is 0755, expected 0700\n"
            f"        → tighten permissions: `sudo chmod 0700 {inbox}`\n"
            "\n  Summary: 0 fail, 1 warn, 0 info\n", out)

    def test_sent_missing_fails(self):
        """A missing sent/<m>: a [FAIL] finding, exit 1 (acceptance 15)."""
        os.rmdir(os.path.join(self.data_dir, "sent", "alice"))
        code, out, err = self.doctor()
        self.assertEqual(code, 1)
        self.assertIn("  [FAIL] mailbox 'alice' sent directory is missing:", out)
        self.assertIn(f"Error: {core.FAILING}", err)

    def test_info_finding(self):
        """An info finding is badged [INFO] and does not fail."""
        def resolve(name):
            return Owner(name, 7, 7) if name == "aimx-hook" else passwd.owner(name)

        code, out, _ = self.doctor(resolve=resolve)
        self.assertIn("  [INFO] stale 'aimx-hook' system user is still present", out)
        self.assertIn("Summary: 0 fail, 0 warn, 1 info", out)
        self.assertEqual(code, 0)

    def test_dkim_key_missing(self):
        """Without private.key: `MISSING - run \\`aimx dkim-keygen\\``."""
        os.unlink(keys.dkim_paths(self.config_dir)[0])
        _, out, _ = self.doctor()
        self.assertIn("DKIM key:         MISSING - run `aimx dkim-keygen`\n", out)

    def test_dns_skipped_without_ip(self):
        """No IPv4 from `hostname -I`: the DNS section says it was skipped."""
        _, out, _ = self.doctor()
        self.assertIn("DNS\n  skipped - could not determine server IP\n", out)
        self.assertIn(["hostname", "-I"], self.runner.calls)

    def test_only_catchall(self):
        """No non-catchall mailbox: the Ownership section says so."""
        self.write_config(config_text(self.data_dir, catchall_only=True))
        code, out, _ = self.doctor()
        self.assertIn("Ownership\n  (no non-catchall mailboxes)\n", out)
        self.assertIn("[WARN] storage directory `inbox/alice/`", out)
        self.assertEqual(code, 0)

    def test_no_colour(self):
        """NO_COLOR (even with CLICOLOR_FORCE): no escapes, ASCII marks (cli.md acceptance 26)."""
        os.chmod(os.path.join(self.data_dir, "inbox", "alice"), 0o755)
        self.environ.update(NO_COLOR="1", CLICOLOR_FORCE="1")
        _, out, _ = self.doctor()
        self.assertNotIn("\x1b", out)
        self.assertIn("[OK]", out)
        self.assertIn("\n  [WARN] mailbox 'alice' inbox dir mode is 0755", out)
        self.assertNotIn("[[", out)

    def test_colour(self):
        """With colour forced: glyph marks and escapes (the contrast to NO_COLOR)."""
        os.chmod(os.path.join(self.data_dir, "inbox", "alice"), 0o755)
        self.environ.update(CLICOLOR_FORCE="1")
        _, out, _ = self.doctor()
        self.assertIn("\x1b[", out)
        self.assertIn("✓", out)
        self.assertIn("⚠", out)
        self.assertNotIn("[OK]", out)
        self.assertIn("\n  [\x1b[33m⚠\x1b[0m] mailbox 'alice' inbox dir mode is 0755", out)


class DnsLinesTests(SynchronousTestCase):
    def lines(self, checks, environ=None):
        return cli.dns_lines(Terminal(io.StringIO(), io.StringIO(), None, environ or {}), checks)

    def test_lines(self):
        """Pass (with its message, if any), warn with its advice, fail with the record
        to add, DKIM with the red warning line."""
        spf = DnsRecord("TXT", DOMAIN, "v=spf1 ip4:1.2.3.4 -all")
        dkim = DnsRecord("TXT", f"aimx._domainkey.{DOMAIN}", "v=DKIM1; k=rsa; p=K")
        lines = self.lines([
            Check("A", PASS),
            Check("SPF", MISSING, "No SPF record found", spf),
            Check("DKIM", FAIL, "DKIM record found but public key does not match local key", dkim),
            Check("DMARC", PASS, "p=none: monitoring, no policy applied yet"),
            Check("PTR", WARN, "no PTR record for 1.2.3.4", advice="Set by your provider."),
        ])
        self.assertEqual(lines, [
            "  A: [OK]",
            "  SPF: [FAIL] - No SPF record found",
            f"         → Add: TXT  {DOMAIN}  v=spf1 ip4:1.2.3.4 -all",
            "  DKIM: [FAIL] - DKIM record found but public key does not match local key",
            f"         → Add: TXT  aimx._domainkey.{DOMAIN}  v=DKIM1; k=rsa; p=K",
            ("         !! Outbound DKIM signatures will FAIL verification at receivers until "
             "DNS matches."),
            "  DMARC: [OK] - p=none: monitoring, no policy applied yet",
            "  PTR: [WARN] - no PTR record for 1.2.3.4",
            "         → Set by your provider.",
        ])

    def test_long_record_as_strings(self):
        """A record to add whose TXT value is over 255 bytes is shown as quoted strings."""
        value = "v=DKIM1; k=rsa; p=" + "K" * 400
        lines = self.lines([Check("DKIM", MISSING, "No DKIM record found",
                                  DnsRecord("TXT", "n", value))])
        self.assertEqual(lines[1], f'         → Add: TXT  n  "{value[:255]}" "{value[255:]}"')

    def test_no_record_no_add(self):
        """A failed check without a known record has no `→ Add:` line."""
        lines = self.lines([Check("DKIM", MISSING, "No DKIM record found")])
        self.assertEqual(len(lines), 2)
        self.assertNotIn("Add:", "".join(lines))

    def test_colour(self):
        """With colour: the label is dim and `!!` red."""
        lines = self.lines([Check("DKIM", MISSING, "x", DnsRecord("TXT", "n", "v"))],
                           {"CLICOLOR_FORCE": "1"})
        self.assertEqual(lines[0], "  DKIM: \x1b[31m✗\x1b[0m - x")
        self.assertEqual(lines[1], "         \x1b[2m→ Add:\x1b[0m TXT  n  v")
        self.assertTrue(lines[2].startswith("         \x1b[31;1m!!\x1b[0m "))

