"""`aimx setup`: the pure decisions, the prompts, and the wizard in a fake world
(docs/install.md, "aimx setup").

The wizard runs in-process without a real reactor: the temporary responder "binds"
on a memory reactor, the port-25 probes are canned, the host is a temporary root
with a fake runner (systemctl, hostname -I, id and useradd are never run), owners
resolve from that host, DNS answers come from a dict, and the readiness poll is a
stub.  tests.integration.test_setup runs it end to end on loopback.  Acceptance
cases of setup-and-ops.md are named in the docstrings.
"""

import datetime
import functools
import io
import ipaddress
import os
import pwd
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from twisted.internet import defer, error, task
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

import aimx.cli
from aimx.agents import AGENTS
from aimx.cli import setup as cli
from aimx.cli.session import Session, execute
from aimx.cli.term import Terminal
from aimx.ops import setupflow as flow
from aimx.core import configedit
from aimx.core.config import Config, MailboxConfig, load_text, make_hook
from aimx.ops.dnscheck import ExpectedDns, Lookup, table_lines
from aimx.ops.portcheck import (
    INBOUND_UNCHECKED,
    OUTBOUND_BLOCKED,
    OUTBOUND_UNCHECKED,
    PASSED,
    ProbeResult,
)
from aimx.ops.portholder import AIMX, FREE, held_by
from aimx.store import configfile, keys, passwd
from aimx.host import initsystem
from aimx.store.passwd import Owner
from aimx.host.programs import Completed
from aimx.host.initsystem import System
from aimx.control.commands import MailboxCreate
from aimx.errors import DaemonNotRunning, MailboxError
from aimx.testing.fakes import FakeControlClient, FakeReactor, FakeResolver

DOMAIN = "agent.example.com"
IPV4, IPV6 = "192.0.2.10", "2001:db8::10"
PTR4 = "10.2.0.192.in-addr.arpa"
IS_ACTIVE = ("systemctl", "is-active", "--quiet", "aimx")
#: Who "aimx-catchall" is in these tests: a real account chown can use.
CATCHALL = pwd.getpwnam("nobody") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
#: Interactive answers after a positional domain: no backup MX, skip DNS, no senders,
#: keep hooks off (then end of input: no first mailbox).
SKIP_ALL = "\nq\n\nY\n"
USERADD = [
    "useradd", "--system", "--no-create-home", "--home-dir", "/var/lib/aimx-catchall",
    "--shell", "/usr/sbin/nologin", "--user-group", "aimx-catchall",
]


# -- fakes -------------------------------------------------------------------------


class FakeHost:
    """The host's programs and passwd database, as the wizard sees them."""

    def __init__(self, *, hostname=f"{IPV4} fe80::1 {IPV6}\n", running=False):
        self.hostname = hostname
        self.running = running
        self.users: set[str] = set()
        self.missing: set[str] = set()
        self.useradd_result = Completed(0)
        self.restart_result = Completed(0)
        self.on_restart = None
        self.calls: list[list[str]] = []

    def __call__(self, argv, capture=True):
        self.calls.append(list(argv))
        key = tuple(argv)
        if key == ("hostname", "-I"):
            return Completed(0, self.hostname)
        if key == IS_ACTIVE:
            return Completed(0 if self.running else 3)
        if argv[0] in self.missing:
            return Completed(127, "", f"{argv[0]}: command not found")
        if argv[0] == "id":
            known = argv[1] in self.users
            return Completed(0 if known else 1, "", "" if known else "no such user")
        if argv[0] in ("useradd", "adduser"):
            if self.useradd_result.returncode == 0:
                self.users.add(argv[-1])
            return self.useradd_result
        if key == ("systemctl", "restart", "aimx"):
            if self.restart_result.returncode == 0:
                if self.on_restart is not None:
                    self.on_restart()
                self.running = True
            return self.restart_result
        return Completed(0)

    def resolve(self, name: str) -> Owner:
        if name in self.users:
            return Owner(name, CATCHALL.pw_uid, CATCHALL.pw_gid)
        return passwd.owner(name)

    def service_calls(self) -> list[list[str]]:
        """The calls that install or start the service."""
        probes = (IS_ACTIVE, ("rc-service", "aimx", "status"))
        return [c for c in self.calls if c[0] in ("systemctl", "rc-update", "rc-service")
                and tuple(c) not in probes]


class SetupResolver(FakeResolver):
    """The DNS the wizard checks."""

    def publish(self, config_dir, *, ipv6=False, spf=None, dkim=None, dmarc=None):
        """The records setup asks for (each overridable), and reverse DNS for IPV4."""
        self.add("A", DOMAIN, IPV4)
        if ipv6:
            self.add("AAAA", DOMAIN, IPV6)
        self.add("MX", DOMAIN, (10, DOMAIN))
        ips = f"ip4:{IPV4}" + (f" ip6:{IPV6}" if ipv6 else "")
        self.add("TXT", DOMAIN, spf or f"v=spf1 {ips} -all")
        key = keys.local_public_key_b64(config_dir)
        self.add("TXT", f"aimx._domainkey.{DOMAIN}", dkim or f"v=DKIM1; k=rsa; p={key}")
        self.add("TXT", f"_dmarc.{DOMAIN}", dmarc or "v=DMARC1; p=none")
        self.add("PTR", PTR4, DOMAIN)


class _Interrupting(io.StringIO):
    """Standard input that raises KeyboardInterrupt once the scripted lines run out."""

    def readline(self, *args):
        line = super().readline(*args)
        if not line:
            raise KeyboardInterrupt
        return line


# -- the pure part ------------------------------------------------------------------


class DomainRuleTests(SynchronousTestCase):
    def test_valid(self):
        """Two labels or more of letters, digits and inner hyphens; case kept."""
        for domain in ("agent.example.com", "a.b", "Mail-1.Example.COM", "x" * 63 + ".io",
                       ".".join(["a" * 62] * 4)):
            flow.validate_domain(domain)

    def test_invalid(self):
        """Each rule has its reason."""
        cases = {
            "": "cannot be empty",
            "localhost": "at least two labels",
            "a..b": "empty label",
            "agent.example.com.": "empty label",
            "x" * 64 + ".io": "maximum is 63",
            ("a" * 63 + ".") * 4 + "io": "maximum is 253",
            "bad_domain.com": "invalid character '_'",
            "ex ample.com": "invalid character ' '",
            "bücher.de": "invalid character 'ü'",
            "-agent.example.com": "cannot start or end with '-'",
            "agent-.example.com": "cannot start or end with '-'",
        }
        for domain, reason in cases.items():
            with self.assertRaises(flow.DomainError, msg=domain) as caught:
                flow.validate_domain(domain)
            self.assertIn(reason, str(caught.exception))


class SenderRuleTests(SynchronousTestCase):
    def test_parse(self):
        """Commas and whitespace both separate; order is kept; blank is empty."""
        self.assertEqual(flow.parse_senders("you@example.com, *@company.com"),
                         ("you@example.com", "*@company.com"))
        self.assertEqual(flow.parse_senders(" a@b.c,d+x@e.f  g?h@i.j ,"),
                         ("a@b.c", "d+x@e.f", "g?h@i.j"))
        self.assertEqual(flow.parse_senders("   "), ())

    def test_invalid(self):
        """One @, both parts non-empty, ASCII alnum and . - _ + * ? only."""
        cases = {
            "bad": "exactly one '@'",
            "a@b@c": "exactly one '@'",
            "@example.com": "before '@' is empty",
            "you@": "after '@' is empty",
            "yo!u@example.com": "invalid character '!'",
            "you@exämple.com": "invalid character 'ä'",
        }
        for entry, reason in cases.items():
            with self.assertRaises(flow.SenderError) as caught:
                flow.parse_senders(f"ok@example.com {entry}")
            self.assertTrue(str(caught.exception).startswith(f"invalid sender '{entry}': "))
            self.assertIn(reason, str(caught.exception))

    def test_abort_message(self):
        """The five-attempts error carries the last reason."""
        e = flow.SenderError("bad", "must contain exactly one '@'")
        self.assertEqual(
            flow.sender_abort_message(e),
            "trusted-senders prompt aborted after 5 attempts; last error: invalid sender "
            "'bad': must contain exactly one '@'",
        )

    def test_policy(self):
        """No senders: none; some: verified."""
        self.assertEqual(flow.trust_policy(()), ("none", ()))
        self.assertEqual(flow.trust_policy(("a@b.c",)), ("verified", ("a@b.c",)))


class AnswerTests(SynchronousTestCase):
    def test_yes_default(self):
        """[Y/n]: blank or anything not starting with n is yes."""
        for answer in ("", "  ", "y", "Y", "yes", "sure"):
            self.assertTrue(flow.answered_yes(answer), answer)
        for answer in ("n", "N", "no", " nope"):
            self.assertFalse(flow.answered_yes(answer), answer)

    def test_noninteractive(self):
        """AIMX_NONINTERACTIVE is on for 1, true, yes."""
        for value in ("1", "true", "yes", "TRUE", "Yes"):
            self.assertTrue(flow.noninteractive({"AIMX_NONINTERACTIVE": value}), value)
        for value in ("", "0", "false", "no", "on"):
            self.assertFalse(flow.noninteractive({"AIMX_NONINTERACTIVE": value}), value)
        self.assertFalse(flow.noninteractive({}))


class ChecklistTests(SynchronousTestCase):
    def test_ascii(self):
        """Without colour the glyphs are [ ] [~] [x] [-] [*] [!]."""
        states = [flow.DONE, flow.SKIPPED, flow.RUNNING, flow.PENDING, flow.ERROR, flow.HANDOFF]
        self.assertEqual(flow.checklist_lines(states, colour=False), [
            "  [x] Preflight checks on port 25",
            "  [-] Set up domain and DNS",
            "  [~] Set up TLS certificate",
            "  [ ] Set up trust policy",
            "  [!] Install AIMX",
            "  [*] Set up MCP for agent(s)",
        ])

    def test_glyphs(self):
        """With colour: ☐ ◐ ☑ ☒ ⎘ ✗, painted by the caller."""
        self.assertEqual(
            [flow.glyph(s, True) for s in (flow.PENDING, flow.RUNNING, flow.DONE, flow.SKIPPED,
                                           flow.HANDOFF, flow.ERROR)],
            ["☐", "◐", "☑", "☒", "⎘", "✗"],
        )
        lines = flow.checklist_lines([flow.DONE] * 6, True, lambda s, g: f"<{g}>")
        self.assertEqual(lines[0], "  <☑> Preflight checks on port 25")

    def test_reentry(self):
        """Re-entry needs the running service, the certificate and the DKIM key."""
        self.assertTrue(flow.already_configured(True, True, True))
        for partial in ((False, True, True), (True, False, True), (True, True, False)):
            self.assertFalse(flow.already_configured(*partial))


class ConfigTests(SynchronousTestCase):
    def load(self, config: Config) -> Config:
        return load_text(configfile.render(config, "config.toml").decode(), "config.toml")[0]

    def test_fresh(self):
        """Fresh: domain, data dir, selector aimx, the trust answer, the catchall (acceptance 12)."""
        config = self.load(flow.fresh_config(DOMAIN, "/srv/aimx", "verified", ("a@b.c",)))
        self.assertEqual((config.domain, config.data_dir, config.dkim_selector),
                         (DOMAIN, "/srv/aimx", "aimx"))
        self.assertEqual((config.trust, config.trusted_senders), ("verified", ("a@b.c",)))
        self.assertEqual(config.mailboxes, (
            MailboxConfig("catchall", f"*@{DOMAIN}", "aimx-catchall"),
        ))
        self.assertEqual(config.catchall().name, "catchall")

    def test_update_moves_domain(self):
        """A new domain moves every @old address; trust, hooks and other domains stay."""
        hook = make_hook(event="on_receive", cmd=["/bin/true"])
        old = Config(
            domain="old.example.com", trust="verified", trusted_senders=["x@y.z"],
            enable_ipv6=True, dkim_selector="s2",
            mailboxes=[
                MailboxConfig("alice", "alice@OLD.example.com", "alice", hooks=[hook]),
                MailboxConfig("ext", "ext@elsewhere.org", "ext"),
                MailboxConfig("catchall", "*@old.example.com", "aimx-catchall"),
            ],
        )
        new = self.load(flow.update_config(old, DOMAIN, backup_mx=None))
        self.assertEqual(new.domain, DOMAIN)
        self.assertEqual([mb.address for mb in new.mailboxes],
                         [f"alice@{DOMAIN}", "ext@elsewhere.org", f"*@{DOMAIN}"])
        self.assertEqual(new.mailbox("alice").hooks, (hook,))
        self.assertEqual((new.trust, new.trusted_senders, new.enable_ipv6, new.dkim_selector),
                         ("verified", ("x@y.z",), True, "s2"))

    def test_update_adds_catchall(self):
        """A config without a catchall gets one; data_dir is replaced only when given."""
        old = Config(domain=DOMAIN, data_dir="/a",
                     mailboxes=[MailboxConfig("bob", f"bob@{DOMAIN}", "bob")])
        new = flow.update_config(old, DOMAIN, backup_mx=None)
        self.assertEqual([mb.name for mb in new.mailboxes], ["bob", "catchall"])
        self.assertEqual(new.data_dir, "/a")
        self.assertEqual(flow.update_config(old, DOMAIN, "/b", backup_mx=None).data_dir, "/b")
        self.assertEqual(flow.update_config(new, DOMAIN, backup_mx=None), new)

    def test_backup_mx(self):
        """The backup MX answer is written, fresh or into an existing config, and loads."""
        fresh = self.load(flow.fresh_config(DOMAIN, "/srv", backup_mx="mx2.example.net"))
        self.assertEqual(fresh.backup_mx, "mx2.example.net")
        self.assertIsNone(self.load(flow.fresh_config(DOMAIN, "/srv")).backup_mx)
        moved = flow.update_config(fresh, DOMAIN, backup_mx="mx3.example.net")
        self.assertEqual(self.load(moved).backup_mx, "mx3.example.net")
        self.assertIsNone(self.load(flow.update_config(fresh, DOMAIN, backup_mx=None)).backup_mx)

    def test_update_catchall_name_taken(self):
        """A mailbox named catchall that is not the catchall is an error, not overwritten."""
        old = Config(domain=DOMAIN, mailboxes=[MailboxConfig("catchall", f"c@{DOMAIN}", "c")])
        with self.assertRaises(flow.DomainError) as caught:
            flow.update_config(old, DOMAIN, backup_mx=None)
        self.assertIn(f"mailbox 'catchall' has address 'c@{DOMAIN}'", str(caught.exception))


class ScreenTests(SynchronousTestCase):
    def test_handoff(self):
        """All eight agents in registry order; the three box lines are equally wide (acceptance 11)."""
        lines = flow.handoff_lines(agent.display for agent in AGENTS)
        names = ["Claude Code", "Codex CLI", "OpenCode", "Gemini CLI", "Goose", "OpenClaw",
                 "Hermes", "NanoClaw"]
        bullets = [line[4:] for line in lines if line.startswith("  • ")]
        self.assertEqual(bullets, names)
        box = [line for line in lines if line[2:3] in ("┌", "│", "└")]
        self.assertEqual(len(box), 3)
        self.assertEqual(len({len(line) for line in box}), 1)
        self.assertEqual(box[0], "  ┌" + "─" * 29 + "┐")
        self.assertEqual(box[1], "  │  → aimx agents setup" + " " * 8 + "│")
        self.assertIn("not root", "\n".join(lines))

    def test_closing(self):
        """The success line with the done glyph, the domain, the claude example."""
        lines = flow.closing_lines(DOMAIN, "[x]")
        self.assertEqual(lines[0], "[x] AIMX has been set up successfully.")
        self.assertEqual(lines[1], f"AIMX is now running at @{DOMAIN} and ready to send and "
                                   "receive email.")
        self.assertIn(f'claude -p "Set up agent@{DOMAIN} and respond to me via email', lines[3])
        self.assertNotIn("Your agents now have access", "\n".join(lines))

    def test_closing_says_what_is_missing(self):
        """Unverified DNS or a pending restart: never "ready"; a created mailbox is used."""
        unverified = flow.closing_lines(DOMAIN, "[x]", dns_verified=False)
        self.assertEqual(unverified[1], f"AIMX is now running at @{DOMAIN}; mail flows once the "
                                        "DNS records above verify (`aimx doctor` checks them).")
        restart = flow.closing_lines(DOMAIN, "[x]", restart_pending=True)
        self.assertIn("Restart aimx", restart[1])
        for lines in (unverified, restart):
            self.assertNotIn("ready", "\n".join(lines))
        mailbox = flow.closing_lines(DOMAIN, "[x]", mailbox="bot")
        self.assertIn(f'claude -p "Use bot@{DOMAIN} and respond', mailbox[3])


class BackupMxAnswerTests(SynchronousTestCase):
    def test_answers(self):
        """Blank keeps the current one, `none` (any case) removes it, a host name sets it."""
        self.assertIsNone(flow.backup_mx_answer("", None, DOMAIN))
        self.assertEqual(flow.backup_mx_answer("  ", "mx2.example.net", DOMAIN), "mx2.example.net")
        self.assertIsNone(flow.backup_mx_answer(" None ", "mx2.example.net", DOMAIN))
        self.assertEqual(flow.backup_mx_answer(" mx3.Example.net ", None, DOMAIN),
                         "mx3.Example.net")

    def test_refused(self):
        """Not a host name, or the domain itself (any case): the reason."""
        for answer, reason in (("mx2", "at least two labels"),
                               ("mx_2.example.net", "invalid character '_'"),
                               ("mx2.example.net.", "empty label"),
                               (DOMAIN.upper(), f"another server than {DOMAIN}")):
            with self.assertRaises(flow.DomainError, msg=answer) as caught:
                flow.backup_mx_answer(answer, None, DOMAIN)
            self.assertIn(reason, str(caught.exception))
        self.assertEqual(flow.backup_mx_answer(DOMAIN, None, None), DOMAIN)  # domain unknown yet


class DnsNotesTests(SynchronousTestCase):
    def test_notes(self):
        """DMARC's path, reverse DNS at the provider for each address; nothing on splits
        or a backup when there is none."""
        notes = "\n".join(flow.dns_notes(expected_dns(ipv6=IPV6)))
        self.assertIn('DMARC starts at "p=none" with no reports', notes)
        self.assertIn('"v=DMARC1; p=quarantine", then "v=DMARC1; p=reject"; `aimx doctor` tells '
                      "you when", notes)
        self.assertIn(f"point {IPV4} and {IPV6} to {DOMAIN}", notes)
        self.assertIn("not in your DNS zone", notes)
        self.assertNotIn("255 bytes", notes)
        self.assertNotIn("backup", notes)

    def test_split_and_backup(self):
        """A DKIM value over 255 bytes and a backup MX each get their note."""
        key = "A" * 392
        notes = "\n".join(flow.dns_notes(ExpectedDns(DOMAIN, IPV4, None, "aimx", key,
                                                     backup_mx="mx2.example.net")))
        self.assertIn(f"The value for aimx._domainkey.{DOMAIN} is longer than 255 bytes", notes)
        self.assertIn(f"The backup MX mx2.example.net must accept mail for {DOMAIN}", notes)

    def test_loopback_has_no_reverse_note(self):
        """A loopback address (a demo) gets no reverse DNS note."""
        notes = "\n".join(flow.dns_notes(ExpectedDns(DOMAIN, "127.0.0.1", None, "aimx", "K")))
        self.assertNotIn("PTR", notes)


class OwnerRuleTests(SynchronousTestCase):
    def test_default_owner(self):
        """The user behind sudo, never root."""
        self.assertEqual(flow.default_owner("alice"), "alice")
        for value in (None, "", "root"):
            self.assertIsNone(flow.default_owner(value))

    def test_problems(self):
        """root, aimx-catchall, a bad name and an unknown user are refused, with the reason;
        existence is asked only about a valid name."""
        asked = []

        def exists(name):
            asked.append(name)
            return name == "alice"

        self.assertIsNone(flow.owner_problem("alice", exists))
        self.assertIn("root-owned mailboxes can only be configured by hand",
                      flow.owner_problem("root", exists))
        self.assertIn("catchall's service user", flow.owner_problem("aimx-catchall", exists))
        self.assertIn("not a valid user name", flow.owner_problem("../x", exists))
        self.assertIn("user 'bob' does not exist; create it first",
                      flow.owner_problem("bob", exists))
        self.assertEqual(asked, ["alice", "bob"])


# -- the prompts --------------------------------------------------------------------


def terminal(stdin: str, environ=None) -> tuple[Terminal, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return Terminal(out, err, io.StringIO(stdin), environ or {}), out, err


class DomainPromptTests(SynchronousTestCase):
    def test_accept(self):
        """Domain, confirm (blank = yes), DNS access (blank = yes)."""
        term, out, _ = terminal(f" {DOMAIN} \n\n\n")
        self.assertEqual(cli.ask_domain(term), DOMAIN)
        text = out.getvalue()
        self.assertIn("Enter the domain you want to use for email\n(e.g. agent.example.com).\n> ",
                      text)
        self.assertIn(f"Domain: {DOMAIN}\nConfirm? [Y/n] ", text)
        self.assertIn("MX, SPF and DKIM records", text)

    def test_invalid_then_valid(self):
        """An invalid domain prints ✗ and its reason, then asks again."""
        term, out, _ = terminal(f"localhost\n{DOMAIN}\ny\ny\n")
        self.assertEqual(cli.ask_domain(term), DOMAIN)
        self.assertIn("[FAIL] 'localhost' needs at least two labels", out.getvalue())
        self.assertEqual(out.getvalue().count("Enter the domain"), 2)

    def test_not_confirmed(self):
        """n at Confirm asks for the domain again."""
        term, _, _ = terminal(f"wrong.example.com\nn\n{DOMAIN}\n\n\n")
        self.assertEqual(cli.ask_domain(term), DOMAIN)

    def test_empty_and_end_of_input(self):
        """A blank answer or end of input cancels: No domain entered."""
        for stdin in ("\n", "   \n", ""):
            term, _, _ = terminal(stdin)
            with self.assertRaises(cli.CliError) as caught:
                cli.ask_domain(term)
            self.assertEqual(str(caught.exception), cli.NO_DOMAIN)

    def test_no_dns_access(self):
        """n to the DNS-access question cancels setup."""
        term, _, _ = terminal(f"{DOMAIN}\nY\nn\n")
        with self.assertRaises(cli.CliError) as caught:
            cli.ask_domain(term)
        self.assertEqual(str(caught.exception), cli.NO_DNS_ACCESS)

    def test_end_of_input_at_confirm(self):
        """End of input at a [Y/n] prompt quits rather than defaulting to yes."""
        for stdin in (f"{DOMAIN}\n", f"{DOMAIN}\ny\n"):
            term, _, _ = terminal(stdin)
            with self.assertRaises(cli.CliError) as caught:
                cli.ask_domain(term)
            self.assertEqual(str(caught.exception), cli.END_OF_INPUT)


class TrustPromptTests(SynchronousTestCase):
    def ask(self, stdin):
        term, out, _ = terminal(stdin)
        return cli.ask_trust(term, "/etc/aimx/config.toml"), out.getvalue()

    def test_senders_confirmed(self):
        """`you@example.com, *@company.com` + Y: verified with both (acceptance 9)."""
        result, out = self.ask("you@example.com, *@company.com\nY\n")
        self.assertEqual(result, ("verified", ("you@example.com", "*@company.com")))
        self.assertIn("Trusted senders:\n  - you@example.com\n  - *@company.com\nConfirm? [Y/n] ",
                      out)
        self.assertIn("you@example.com, *@company.com", out)  # the examples in the prompt
        self.assertIn("Leave blank to disable the trust model and hooks.\n> ", out)

    def test_empty_confirmed(self):
        """Empty + Y: trust none, after the no-trusted-senders warning (acceptance 9)."""
        result, out = self.ask("\nY\n")
        self.assertEqual(result, ("none", ()))
        self.assertIn("[WARN] No trusted senders configured: hooks will NOT fire", out)
        self.assertIn("/etc/aimx/config.toml", out)
        self.assertIn("Leave hooks disabled? [Y/n] ", out)

    def test_five_invalid(self):
        """Five invalid lines abort with the attempts count and last error (acceptance 9)."""
        term, out, _ = terminal("bad\n" * 5 + "ok@example.com\nY\n")
        with self.assertRaises(cli.CliError) as caught:
            cli.ask_trust(term, "config.toml")
        self.assertEqual(
            str(caught.exception),
            "trusted-senders prompt aborted after 5 attempts; last error: invalid sender "
            "'bad': must contain exactly one '@'",
        )
        self.assertEqual(out.getvalue().count("[FAIL] invalid sender 'bad'"), 4)

    def test_counter_resets(self):
        """Declining resets the count: 4 invalid, a declined list, 4 invalid, then a list."""
        stdin = "bad\n" * 4 + "a@b.c\nn\n" + "bad\n" * 4 + "\nn\n" + "bad\n" * 4 + "a@b.c\n\n"
        result, _ = self.ask(stdin)
        self.assertEqual(result, ("verified", ("a@b.c",)))

    def test_end_of_input(self):
        """End of input at the senders prompt or its confirmation quits."""
        for stdin in ("", "a@b.c\n", "\n"):
            term, _, _ = terminal(stdin)
            with self.assertRaises(cli.CliError) as caught:
                cli.ask_trust(term, "config.toml")
            self.assertEqual(str(caught.exception), cli.END_OF_INPUT)


def expected_dns(ipv6=None, key="KEY") -> ExpectedDns:
    return ExpectedDns(domain=DOMAIN, ipv4=IPV4, ipv6=ipv6, selector="aimx", dkim_key=key)


def answers(ip=IPV4, **override) -> dict:
    """Lookups for which every check of L{expected_dns} (at C{ip}) passes, some overridden."""
    found = {
        ("A", DOMAIN): Lookup([ip]),
        ("MX", DOMAIN): Lookup([f"10 {DOMAIN}."]),
        ("TXT", DOMAIN): Lookup([f"v=spf1 ip4:{ip} -all"]),
        ("TXT", f"aimx._domainkey.{DOMAIN}"): Lookup(["v=DKIM1; k=rsa; p=KEY"]),
        ("TXT", f"_dmarc.{DOMAIN}"): Lookup(["v=DMARC1; p=reject"]),
        ("PTR", ipaddress.ip_address(ip).reverse_pointer): Lookup([DOMAIN]),
    }
    for name, lookup in override.items():
        key = {"spf": ("TXT", DOMAIN), "dkim": ("TXT", f"aimx._domainkey.{DOMAIN}"),
               "dmarc": ("TXT", f"_dmarc.{DOMAIN}"), "a": ("A", DOMAIN),
               "ptr": ("PTR", ipaddress.ip_address(ip).reverse_pointer)}[name]
        found[key] = lookup
    return found


class DnsLoopTests(SynchronousTestCase):
    def loop(self, stdin, *results):
        """Run the loop; each verification returns the next of C{results}."""
        term, out, _ = terminal(stdin)
        pending = list(results)
        calls = []

        async def verify():
            calls.append(1)
            return pending.pop(0)

        ok = self.successResultOf(defer.Deferred.fromCoroutine(cli.dns_loop(term, verify)))
        return ok, out.getvalue(), len(calls)

    def test_end_of_input_is_q(self):
        """End of input leaves the loop like q, without verifying ([py] never loops)."""
        ok, out, calls = self.loop("")
        self.assertEqual((ok, calls), (False, 0))
        self.assertIn("  Press Enter to verify DNS records now.\n"
                      "  Press q to skip and run `aimx doctor` later.\n[>] \n", out)
        self.assertIn("run `aimx doctor` to re-verify", out)

    def test_q(self):
        """q or Q skips."""
        for answer in ("q\n", "Q\n", " q \n"):
            self.assertEqual(self.loop(answer)[0::2], (False, 0))

    def test_retry_until_verified(self):
        """Enter verifies; a failure loops with the propagation hint; a pass ends it."""
        expected = expected_dns()
        failing = expected.evaluate(answers(a=Lookup()))
        passing = expected.evaluate(answers())
        ok, out, calls = self.loop("\n\n", failing, passing)
        self.assertEqual((ok, calls), (True, 2))
        self.assertIn("\nDNS Verification:\n\n  A: [FAIL] - No A record found\n"
                      f"         → Add: A  {DOMAIN}  {IPV4}\n", out)
        self.assertIn("Some DNS records are not yet correct.\n"
                      "DNS propagation can take up to 48 hours.\n", out)
        self.assertIn("\n  PTR: [OK] - 192.0.2.10 → agent.example.com\n\n"
                      "All DNS records verified.\n", out)
        self.assertNotIn("ready", out)

    def test_warnings_noted(self):
        """Verification passes with a warning (no PTR): the closing line points at it."""
        checks = expected_dns().evaluate(answers(ptr=Lookup()))
        ok, out, _ = self.loop("\n", checks)
        self.assertTrue(ok)
        self.assertIn("  PTR: [WARN] - no PTR record for 192.0.2.10: ask your hosting provider "
                      f"to set reverse DNS to {DOMAIN}; many receivers reject or spam-folder "
                      "mail from IPs without one\n"
                      "         → Reverse DNS is set by whoever gave you 192.0.2.10 (your "
                      "hosting provider's panel or support), not in the DNS zone of "
                      f"{DOMAIN}.\n\nAll DNS records verified; see the warnings above.\n", out)

    def test_spf_lookalikes(self):
        """ip4:1.2.3.45-style lookalikes fail "does not include"; /32 passes (acceptance 4)."""
        expected = ExpectedDns(DOMAIN, "1.2.3.4", None, "aimx", "KEY")
        for spf in ("v=spf1 ip4:1.2.3.45 -all", "v=spf1 ip4:11.2.3.4 -all"):
            checks = expected.evaluate(answers("1.2.3.4", spf=Lookup([spf])))
            ok, out, _ = self.loop("\nq\n", checks)
            self.assertFalse(ok)
            self.assertIn("  SPF: [FAIL] - SPF record found but does not include 1.2.3.4", out)
        checks = expected.evaluate(answers("1.2.3.4", spf=Lookup(["v=spf1 ip4:1.2.3.4/32 -all"])))
        self.assertTrue(self.loop("\n", checks)[0])

    def test_dmarc_none_monitoring(self):
        """DMARC p=none, the start setup proposes, passes as monitoring (issue 16)."""
        checks = expected_dns().evaluate(answers(dmarc=Lookup(["v=DMARC1; p=none"])))
        ok, out, _ = self.loop("\n", checks)
        self.assertTrue(ok)
        self.assertIn("  DMARC: [OK] - p=none: monitoring, no policy applied yet\n", out)

    def test_dkim_lines(self):
        """Mismatched key: fail and the !! line; missing: the → Add line (acceptance 6)."""
        expected = expected_dns()
        mismatch = expected.evaluate(answers(dkim=Lookup(["v=DKIM1; k=rsa; p=OTHER"])))
        _, out, _ = self.loop("\nq\n", mismatch)
        self.assertIn("  DKIM: [FAIL] - DKIM record found but public key does not match local key\n",
                      out)
        self.assertIn("         !! Outbound DKIM signatures will FAIL verification", out)
        missing = expected.evaluate(answers(dkim=Lookup()))
        _, out, _ = self.loop("\nq\n", missing)
        self.assertIn("  DKIM: [FAIL] - No DKIM record found\n"
                      f"         → Add: TXT  aimx._domainkey.{DOMAIN}  v=DKIM1; k=rsa; p=KEY\n", out)

    def test_long_dkim_added_as_strings(self):
        """A 2048-bit key's missing record is shown as quoted strings of <= 255 bytes."""
        key = keys.local_public_key_b64(self.key_dir(2048))
        expected = expected_dns(key=key)
        _, out, _ = self.loop("\nq\n", expected.evaluate(answers(dkim=Lookup())))
        [line] = [li for li in out.splitlines() if "→ Add: TXT  aimx._domainkey" in li]
        shown = line.split(f"aimx._domainkey.{DOMAIN}  ", 1)[1]
        strings = shown[1:-1].split('" "')
        self.assertEqual(len(strings), 2)
        self.assertTrue(all(len(s.encode()) <= 255 for s in strings))
        self.assertEqual("".join(strings), f"v=DKIM1; k=rsa; p={key}")

    def key_dir(self, bits: int) -> str:
        directory = self.mktemp()
        keys.generate_dkim_key(directory, bits=bits)
        return directory


class ReadinessPollTests(SynchronousTestCase):
    def poll(self, *succeed_on: int | None):
        """Run L{cli.wait_for} over attempts that answer on their Nth try (None: never)."""
        clock = task.Clock()
        tries = []

        def attempt(index, succeed):
            async def once():
                tries.append((index, clock.seconds()))
                if succeed is None or sum(i == index for i, _ in tries) < succeed:
                    raise cli.NotAnswering(f"attempt {index} not answering")
            return once

        attempts = [attempt(i, n) for i, n in enumerate(succeed_on)]
        d = defer.Deferred.fromCoroutine(cli.wait_for(clock, attempts))
        clock.pump([cli.READY_INTERVAL] * 40)
        return self.successResultOf(d), tries

    def test_ready(self):
        """Each attempt in turn, every 500 ms: the greeting on the third try, then the
        control socket on its second: ready after 1.5 s."""
        self.assertEqual(self.poll(3, 2),
                         (None, [(0, 0.0), (0, 0.5), (0, 1.0), (1, 1.0), (1, 1.5)]))

    def test_timeout(self):
        """Every 500 ms for up to 15 s, then the last failure; later attempts never run."""
        reason, tries = self.poll(None, 1)
        self.assertEqual(reason, "attempt 0 not answering")
        self.assertEqual(tries, [(0, i * 0.5) for i in range(31)])

    def test_one_budget(self):
        """The second attempt has what the first left of the 15 s."""
        reason, tries = self.poll(25, None)
        self.assertEqual(reason, "attempt 1 not answering")
        self.assertEqual(tries[-1], (1, 15.0))

    def test_greeting_attempt(self):
        """The SMTP attempt connects to 127.0.0.1:<port> within 1 s; a refusal is
        "not answering", with the reason."""
        reactor = MemoryReactorClock()
        d = defer.Deferred.fromCoroutine(cli.smtp_greets(reactor, 25))
        [(host, port, factory, timeout, _bind)] = reactor.tcpClients
        self.assertEqual((host, port, timeout), ("127.0.0.1", 25, cli.READY_ATTEMPT))
        factory.clientConnectionFailed(reactor.connectors[0],
                                       Failure(error.ConnectionRefusedError()))
        failure = self.failureResultOf(d, cli.NotAnswering)
        self.assertEqual(str(failure.value), "no SMTP greeting on port 25: cannot connect to "
                                             "127.0.0.1:25: connection refused")


class ConsoleTests(SynchronousTestCase):
    def test_pipe(self):
        """Not a terminal: plain readline; `prompting` covers printing and reading."""
        seen = []
        console = None

        class Stream(io.StringIO):
            def readline(self, *args):
                seen.append(console.prompting)
                return super().readline(*args)

        class Out(io.StringIO):
            def write(self, text):
                seen.append(("write", console.prompting))
                return super().write(text)

        console = cli.Console(Stream("one\n"))
        term = Terminal(Out(), io.StringIO(), console, {})
        self.assertEqual(cli._read(term, "> "), "one")
        self.assertIsNone(cli._read(term, "> "))
        self.assertEqual(seen, [("write", True), True] * 2)
        self.assertFalse(console.prompting)

    def test_plain_stdin(self):
        """Any other stdin (tests) is read without the prompt marker."""
        term, _, _ = terminal("x\n")
        self.assertEqual(cli._read(term, "> "), "x")


class CancellableTests(SynchronousTestCase):
    def test_results_pass(self):
        """Success and failure of the work come through unchanged."""
        self.assertEqual(self.successResultOf(cli.cancellable(defer.succeed(3))), 3)
        self.failureResultOf(cli.cancellable(defer.fail(ValueError())), ValueError)

    def test_cancel_fails_even_if_swallowed(self):
        """Cancelled: CancelledError, although the work turned it into a result."""
        inner = defer.Deferred()
        finished = []

        async def probe():
            try:
                await inner
            except defer.CancelledError:
                finished.append(True)
                return PASSED

        d = cli.cancellable(probe())
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(finished, [True])


# -- the wizard ---------------------------------------------------------------------


class WizardTestCase(SynchronousTestCase):
    """A systemd host under a temporary root, nothing configured yet."""

    def setUp(self):
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.root, "run/systemd/system"))
        self.config_dir = os.path.join(self.root, "etc/aimx")
        self.data_dir = os.path.join(self.root, "var/lib/aimx")
        self.runtime_dir = os.path.join(self.root, "run/aimx")
        self.host = FakeHost()
        self.resolver = SetupResolver()
        self.reactor = FakeReactor()
        self.results = {"outbound": PASSED, "inbound": PASSED}
        self.probed = []
        self.ready_result = None
        self.ready_calls = 0
        self.environ = {"AIMX_RUNTIME_DIR": self.runtime_dir}
        self.control = FakeControlClient(
            {MailboxCreate: lambda args: {"address": f"{args['name']}@{DOMAIN}"}})

    def path(self, absolute: str) -> str:
        return os.path.join(self.root, absolute.lstrip("/"))

    def fast_dkim_key(self):
        """Save the wizard a 2048-bit key generation."""
        keys.generate_dkim_key(self.config_dir, bits=1024)

    async def outbound(self, reactor, domain, settings, *, resolver, run_in_thread):
        self.probed.append(("outbound", domain))
        return self.results["outbound"]

    async def inbound(self, reactor, verify_host):
        self.probed.append(("inbound", verify_host))
        return self.results["inbound"]

    async def ready(self):
        self.ready_calls += 1
        result = self.ready_result
        return await result if isinstance(result, defer.Deferred) else result

    def start(self, *argv, stdin=SKIP_ALL, euid=0, environ=None, occupancy=AIMX,
              data_dir=True):
        """Start the verb; return its Deferred and the output streams."""
        args = aimx.cli.arguments.parser().parse_args(["setup", *argv])
        args.config_dir = self.config_dir
        args.data_dir = self.data_dir if data_dir else None
        env = {**self.environ, **(environ or {})}
        out, err = io.StringIO(), io.StringIO()
        stream = stdin if hasattr(stdin, "readline") else io.StringIO(stdin)
        session = Session(args, connect=lambda: defer.succeed(self.control), euid=euid,
                          term=Terminal(out, err, stream, env), environ=env)
        verb = functools.partial(
            cli.setup, reactor=self.reactor, system=System(self.root, self.host),
            run_in_thread=lambda f, *a: defer.maybeDeferred(f, *a),
            detect=lambda port: occupancy, probes=(self.outbound, self.inbound),
            resolve=self.host.resolve, ready=self.ready, resolver=self.resolver,
        )
        return defer.Deferred.fromCoroutine(execute(verb, args, session)), out, err

    def wizard(self, *argv, **kw) -> tuple[int, str, str]:
        """Run the verb to the end: (exit code, stdout, stderr)."""
        d, out, err = self.start(*argv, **kw)
        return self.successResultOf(d), out.getvalue(), err.getvalue()

    def config(self) -> Config:
        return configfile.load(self.config_dir)[0]

    def assertNothingWritten(self):
        for path in (self.config_dir, self.data_dir, self.path("/etc/ssl/aimx"),
                     self.path("/etc/systemd/system"), self.path("/var/lib/aimx-catchall")):
            self.assertFalse(os.path.exists(path), path)

    def mode(self, path: str) -> int:
        return os.stat(path).st_mode & 0o777


class RefusalTests(WizardTestCase):
    def test_not_root(self):
        """Non-root, with or without a domain: exit 1, `requires root`, agents hint (acceptance 1)."""
        for argv in ((), (DOMAIN,)):
            code, out, err = self.wizard(*argv, euid=1000)
            self.assertEqual(code, 1)
            self.assertIn("Error: `aimx setup` requires root. Run with: sudo aimx setup\n", err)
            self.assertIn("`aimx agents setup`", err)
            self.assertEqual(out, "")
        self.assertEqual(self.probed, [])
        self.assertNothingWritten()

    def test_verify_host_checked_before_root(self):
        """--verify-host foo: exit 1 naming the rule, for root and non-root alike (acceptance 2)."""
        for euid in (0, 1000):
            code, _, err = self.wizard(DOMAIN, "--verify-host", "foo", euid=euid)
            self.assertEqual(code, 1)
            self.assertIn("verify-host must start with http:// or https:// (got: foo)", err)
        code, _, err = self.wizard(DOMAIN, "--verify-host", "/")
        self.assertIn("verify-host cannot be empty", err)
        self.assertNothingWritten()

    def test_probe_targets(self):
        """Outbound asks the check domain's MX (gmail.com unless given); inbound asks
        the validated verify host (acceptance 2)."""
        self.results["inbound"] = ProbeResult(False)
        for given, base in (("https://v.example.com/", "https://v.example.com"),
                            ("http://[::1]:3025/probe", "http://[::1]:3025/probe")):
            self.probed.clear()
            self.assertEqual(self.wizard(DOMAIN, "--verify-host", given)[0], 1)
            self.assertEqual(self.probed, [("outbound", "gmail.com"), ("inbound", base)])
        self.probed.clear()
        self.wizard(DOMAIN, "--verify-host", "https://v.example.com",
                    "--outbound-check-domain", "example.net")
        self.assertEqual(self.probed[0], ("outbound", "example.net"))

    def test_checks_from_config(self):
        """Without the flags, config.toml's verify_host and outbound_check_domain are used."""
        os.makedirs(self.config_dir)
        with open(os.path.join(self.config_dir, "config.toml"), "w") as f:
            f.write(f'domain = "{DOMAIN}"\nverify_host = "https://mine.example.org/"\n'
                    'outbound_check_domain = "example.net"\n')
        self.results["outbound"] = ProbeResult(False)
        self.wizard(DOMAIN)
        self.assertEqual(self.probed, [("outbound", "example.net"),
                                       ("inbound", "https://mine.example.org")])

    def test_bad_check_domain(self):
        """An invalid --outbound-check-domain stops setup before anything, like --verify-host."""
        for euid in (0, 1000):
            code, _, err = self.wizard(DOMAIN, "--outbound-check-domain", "nodot", euid=euid)
            self.assertEqual(code, 1)
            self.assertIn("Error: invalid outbound check domain 'nodot':", err)
        self.assertEqual(self.probed, [])
        self.assertNothingWritten()

    def test_no_verifier(self):
        """No verify host: the outbound check passes, the inbound one is explained and
        skipped, nothing is bound, and setup goes on past Step 1."""
        code, out, err = self.wizard(DOMAIN, stdin="", occupancy=FREE)
        self.assertIn("  Outbound port 25... [OK]\n"
                      "  Inbound port 25... [WARN] - not checked: no verifier configured "
                      "(verify_host)\n"
                      "    Checking inbound port 25 needs a verifier on another host", out)
        self.assertIn("    On that other host run:  twistd -n aimx-verifier\n", out)
        self.assertIn("[OK] Step 1 complete.", out)
        self.assertEqual(self.probed, [("outbound", "gmail.com")])
        self.assertEqual(self.reactor.ports, [], "no temporary responder")
        self.assertNotIn("Port 25 checks failed", err)

    def test_invalid_domain(self):
        """An invalid positional domain fails before any probe or write."""
        code, out, err = self.wizard("bad_domain.com")
        self.assertEqual(code, 1)
        self.assertIn("Error: invalid domain 'bad_domain.com': label 'bad_domain' contains "
                      "invalid character '_'", err)
        self.assertEqual((self.probed, out), ([], ""))
        self.assertNothingWritten()

    def test_port_held_by_another_program(self):
        """Port 25 held by postfix: exit 1 naming it; no probes, nothing written."""
        code, _, err = self.wizard(DOMAIN, occupancy=held_by("postfix"))
        self.assertEqual(code, 1)
        self.assertIn("Error: Port 25 is occupied by postfix. Stop the process and run "
                      "`aimx setup` again.", err)
        self.assertEqual(self.probed, [])
        self.assertNothingWritten()

    def test_preflight_failure(self):
        """Outbound blocked: both probes run, exit 1, providers listed, nothing on disk (acceptance 7)."""
        self.results["outbound"] = ProbeResult(False, detail="cannot connect: connection refused")
        code, out, err = self.wizard(DOMAIN, "--verify-host", "https://v.example",
                                     occupancy=FREE)
        self.assertEqual(code, 1)
        self.assertIn("  Outbound port 25... [FAIL] - cannot connect: connection refused\n"
                      "  Inbound port 25... [OK]\n", out)
        self.assertIn(OUTBOUND_BLOCKED, err)
        for provider in ("Hetzner Cloud", "OVH / OVHcloud", "BuyVM (Frantech)",
                         "Vultr (on request)", "Linode/Akamai (on request)"):
            self.assertIn(provider, err)
        self.assertIn("Error: Port 25 checks failed. Your VPS provider may block SMTP traffic.\n"
                      "Fix the issues above and run `sudo aimx setup` again.", err)
        self.assertIn("  [!] Preflight checks on port 25\n", out)
        self.assertTrue(self.reactor.ports[-1].stopped, "the temporary responder was released")
        self.assertNothingWritten()

    def test_inbound_failure_reason(self):
        """A failed inbound check names the reason on its line, the advice on stderr."""
        self.results["inbound"] = ProbeResult(False, error="https://x/probe: connection refused")
        code, out, err = self.wizard(DOMAIN, "--verify-host", "https://x")
        self.assertEqual(code, 1)
        self.assertIn("  Inbound port 25... [FAIL] - https://x/probe: connection refused\n", out)
        self.assertIn(INBOUND_UNCHECKED, err)
        self.assertNothingWritten()

    def test_outbound_inconclusive(self):
        """No MX for the check domain: the check could not run; no provider list."""
        self.results["outbound"] = ProbeResult(False, error="gmail.com has no MX record")
        code, out, err = self.wizard(DOMAIN)
        self.assertEqual(code, 1)
        self.assertIn("  Outbound port 25... [FAIL] - gmail.com has no MX record\n", out)
        self.assertIn(OUTBOUND_UNCHECKED, err)
        self.assertNotIn("Hetzner", err)
        self.assertIn("Error: Port 25 checks failed.", err)
        self.assertNothingWritten()

    def test_bind_failure(self):
        """Port 25 cannot be bound for the responder: the bind error, nothing written."""
        self.reactor.refused[25] = error.CannotListenError("0.0.0.0", 25, OSError(13, "denied"))
        code, _, err = self.wizard(DOMAIN, "--verify-host", "https://v.example", occupancy=FREE)
        self.assertEqual(code, 1)
        self.assertIn("Error: Cannot bind port 25 for preflight:", err)
        self.assertNothingWritten()

    def test_live_daemon_probed(self):
        """aimx already holds port 25: no responder, the live daemon is probed."""
        self.results["outbound"] = ProbeResult(False)
        _, out, _ = self.wizard(DOMAIN, "--verify-host", "https://v.example", occupancy=AIMX)
        self.assertIn("`aimx serve` is already running on port 25; probing the live daemon.\n"
                      "  Inbound port 25... [OK]\n", out)
        self.assertEqual(self.reactor.ports, [])
        self.assertEqual([p[0] for p in self.probed], ["outbound", "inbound"])

    def test_domain_cancelled(self):
        """No positional domain and end of input: cancelled after preflight, nothing written."""
        code, _, err = self.wizard(stdin="")
        self.assertEqual(code, 1)
        self.assertIn(f"Error: {cli.NO_DOMAIN}", err)
        self.assertNothingWritten()

    def test_no_ipv4(self):
        """hostname -I without an IPv4 address: a clear error before any key is made."""
        self.host.hostname = f"{IPV6}\n"
        code, _, err = self.wizard(DOMAIN)
        self.assertEqual(code, 1)
        self.assertIn("Error: Could not determine server IPv4 address", err)
        self.assertFalse(os.path.exists(os.path.join(self.config_dir, "dkim")))

    def test_broken_existing_config(self):
        """An existing config that does not load stops setup before anything is written."""
        os.makedirs(self.config_dir)
        with open(os.path.join(self.config_dir, "config.toml"), "w") as f:
            f.write('domain = "x.example.com"\ntrust = "verfied"\n')
        code, _, err = self.wizard(DOMAIN)
        self.assertEqual(code, 1)
        self.assertIn("the existing config does not load:", err)
        self.assertIn("invalid top-level trust value 'verfied'", err)
        self.assertEqual(os.listdir(self.config_dir), ["config.toml"])


class FreshInstallTests(WizardTestCase):
    def test_fresh_install(self):
        """A pristine host: every step done, everything written as the spec says (acceptance 9, 12, 13)."""
        code, out, err = self.wizard(
            DOMAIN, "--verify-host", "https://v.example", occupancy=FREE,
            stdin="\nq\nyou@example.com, *@company.com\nY\n")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(self.probed, [("outbound", "gmail.com"),
                                       ("inbound", "https://v.example")])
        config = self.config()
        self.assertEqual((config.domain, config.data_dir, config.dkim_selector),
                         (DOMAIN, self.data_dir, "aimx"))
        self.assertEqual((config.trust, config.trusted_senders),
                         ("verified", ("you@example.com", "*@company.com")))
        self.assertEqual(config.mailbox("catchall"),
                         MailboxConfig("catchall", f"*@{DOMAIN}", "aimx-catchall"))
        config_file = os.path.join(self.config_dir, "config.toml")
        self.assertEqual((self.mode(self.config_dir), self.mode(config_file)), (0o755, 0o640))
        with open(config_file) as f:
            self.assertIn('[mailboxes.catchall]\naddress = "*@agent.example.com"\n'
                          'owner = "aimx-catchall"\n', f.read())

        # The catchall user, created before anything was chowned to it (acceptance 12).
        useradd = self.host.calls.index(USERADD)
        self.assertLess(self.host.calls.index(["id", "aimx-catchall"]), useradd)
        home = self.path("/var/lib/aimx-catchall")
        self.assertEqual(self.mode(home), 0o700)
        for part in ("inbox", "sent"):
            directory = os.path.join(self.data_dir, part, "catchall")
            st = os.stat(directory)
            self.assertEqual((st.st_uid, st.st_gid, st.st_mode & 0o777),
                             (CATCHALL.pw_uid, CATCHALL.pw_gid, 0o700))
            self.assertEqual(self.mode(os.path.join(self.data_dir, part)), 0o755)
        self.assertEqual((os.stat(home).st_uid, os.stat(home).st_gid),
                         (CATCHALL.pw_uid, CATCHALL.pw_gid))
        readme = os.path.join(self.data_dir, "README.md")
        self.assertEqual(self.mode(readme), 0o644)
        with open(readme) as f:
            self.assertTrue(f.readline().startswith("<!-- aimx-readme-version:"))

        # Keys and certificate.
        private, public = keys.dkim_paths(self.config_dir)
        self.assertEqual((self.mode(private), self.mode(public)), (0o600, 0o644))
        self.assertCertificate()

        # The service: unit written, enabled, restarted, readiness awaited (acceptance 13).
        with open(self.path("/etc/systemd/system/aimx.service")) as f:
            unit = f.read()
        twistd = initsystem.find_twistd(sys.executable)
        self.assertIn(
            f"ExecStart={twistd} --nodaemon --pidfile= aimx --data-dir {self.data_dir} "
            f"--config-dir {self.config_dir} --runtime-dir {self.runtime_dir}\n", unit)
        # This runtime dir lies outside /run, so it is writable rather than systemd's
        # RuntimeDirectory= (tests/test_units.py has the default unit).
        writable = f"{self.data_dir} {self.config_dir} {self.runtime_dir} -/home -/root"
        for line in ("Restart=on-failure", "StartLimitBurst=5", f"ReadWritePaths={writable}",
                     "User=root", "ProtectSystem=strict"):
            self.assertIn(line + "\n", unit)
        self.assertNotIn("RuntimeDirectory=", unit)
        self.assertTrue(os.path.isabs(twistd))
        self.assertEqual(self.host.service_calls(), [
            ["systemctl", "daemon-reload"], ["systemctl", "enable", "aimx"],
            ["systemctl", "reset-failed", "aimx"], ["systemctl", "restart", "aimx"],
        ])
        self.assertEqual(self.ready_calls, 1)

        # What the operator saw.
        self.assertIn("\n🐦‍⬛ AIMX setup\n" + flow.TAGLINE + "\n\n  [ ] Preflight checks on port 25\n",
                      out)
        for n in range(1, 6):
            self.assertIn(f"\nStep {n}: {flow.TITLES[n - 1]}\n", out)
        for n in (1, 3, 4, 5):
            self.assertIn(f"\n[OK] Step {n} complete.\n", out)
        # q at the DNS prompt: the domain is set up, its records are not verified yet.
        self.assertIn("\n[WARN] Step 2 skipped (DNS records not verified yet).\n", out)
        self.assertIn(f"aimx setup for {DOMAIN}\n", out)
        self.assertIn("Backup MX host (Enter for none): ", out)
        # The key is generated once, in Step 2, and said so once (issue 16).
        self.assertIn(f"Generating a DKIM key (RSA, 2048 bits)...\nGenerated a DKIM key: "
                      f"{private} (public half {public}).\n", out)
        self.assertEqual(out.count("DKIM key"), 2)
        self.assertNotIn("already exists", out)
        self.assertIn("Generating self-signed TLS certificate...\nTLS certificate generated in "
                      f"{self.path('/etc/ssl/aimx')}/\n", out)
        self.assertIn("Catchall\nCreated system user aimx-catchall\n"
                      f"Home directory {home} (0700)\n", out)
        self.assertIn("Installing and starting the aimx service...\n  Waiting for aimx to "
                      "answer on port 25 and its "
                      "control socket... [OK]\naimx is running and answering.\n", out)
        # "ready" is said once, at the end, after the service answered and the DNS
        # records were checked; here they were skipped, so it is not said at all.
        self.assertNotIn("ready to", out)
        self.assertNotIn("is ready", out)
        self.assertIn("\nFirst mailbox\n", out)
        self.assertIn("No mailbox created. Create one later with `sudo aimx mailboxes create "
                      "NAME --owner USER`.\n", out)
        self.assertEqual(self.control.calls, [])
        self.assertIn(
            "\n🐦‍⬛ AIMX setup — complete\n\n"
            + "\n".join(f"  [{'-' if n == 1 else 'x'}] {t}" for n, t in enumerate(flow.TITLES[:5]))
            + "\n  [*] Set up MCP for agent(s)\n\nStep 6: Set up MCP for agent(s)\n", out)
        self.assertIn("\n".join(flow.handoff_lines(a.display for a in AGENTS)), out)
        closing = flow.closing_lines(DOMAIN, "[x]", dns_verified=False)
        self.assertTrue(out.endswith("\n".join(closing) + "\n"))
        self.assertTrue(self.reactor.ports[-1].stopped)

        # The 2048-bit key's TXT value, as the quoted strings to publish.
        key = keys.local_public_key_b64(self.config_dir)
        [row] = [line for line in out.splitlines() if line.startswith("  TXT  aimx._domainkey")]
        strings = row.split(None, 2)[2][1:-1].split('" "')
        self.assertEqual(len(strings), 2)
        self.assertTrue(all(len(s.encode()) <= 255 for s in strings))
        self.assertEqual("".join(strings), f"v=DKIM1; k=rsa; p={key}")
        self.assertIn(f"  • The value for aimx._domainkey.{DOMAIN} is longer than 255 bytes", out)

    def assertCertificate(self):
        cert_path, key_path = self.path("/etc/ssl/aimx/cert.pem"), self.path("/etc/ssl/aimx/key.pem")
        self.assertEqual((self.mode(cert_path), self.mode(key_path)), (0o644, 0o600))
        cert, key = keys.load_tls_pair(cert_path, key_path)
        self.assertEqual(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value, DOMAIN)
        self.assertEqual(cert.issuer, cert.subject)
        self.assertEqual(key.key_size, 2048)
        self.assertIsInstance(cert.signature_hash_algorithm, hashes.SHA256)
        days = (cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)).days
        self.assertIn(days, (3649, 3650))
        self.assertEqual(cert.public_key().public_numbers(), key.public_key().public_numbers())
        self.assertIsInstance(cert, x509.Certificate)

    def test_dns_table(self):
        """The record table: A, MX, SPF, DKIM, DMARC with the local key, never a PTR (acceptance 3)."""
        self.fast_dkim_key()
        code, out, _ = self.wizard(DOMAIN)
        self.assertEqual(code, 0)
        key = keys.local_public_key_b64(self.config_dir)
        table = table_lines(ExpectedDns(DOMAIN, IPV4, None, "aimx", key).records())
        self.assertIn("DNS\nAdd these records at your domain registrar or DNS provider:\n\n"
                      + "\n".join(table) + "\n\n", out)
        self.assertEqual([line.split()[0] for line in table[2:]], ["A", "MX", "TXT", "TXT", "TXT"])
        self.assertIn(f"  TXT  {DOMAIN:<45} v=spf1 ip4:{IPV4} -all\n", out)
        self.assertIn(f"  TXT  {'_dmarc.' + DOMAIN:<45} v=DMARC1; p=none\n", out)
        self.assertNotIn("rua=", out)
        self.assertNotIn("PTR ", out)  # no record row: reverse DNS is the provider's
        self.assertIn("\n".join(table) + "\n\n" + "\n".join(flow.dns_notes(
            ExpectedDns(DOMAIN, IPV4, None, "aimx", key))) + "\n\n", out)

    def test_dns_table_ipv6(self):
        """enable_ipv6 in the existing config: AAAA second and ip6 in SPF (acceptance 3)."""
        self.fast_dkim_key()
        with open(os.path.join(self.config_dir, "config.toml"), "w") as f:
            f.write(f'domain = "{DOMAIN}"\nenable_ipv6 = true\n')
        code, out, _ = self.wizard(DOMAIN, stdin="\nq\n")
        self.assertEqual(code, 0)
        rows = [line for line in out.splitlines() if line.startswith(("  A ", "  AAAA", "  MX ",
                                                                      "  TXT "))]
        self.assertEqual([row.split()[0] for row in rows], ["A", "AAAA", "MX", "TXT", "TXT", "TXT"])
        self.assertIn(f"v=spf1 ip4:{IPV4} ip6:{IPV6} -all", rows[3])

    def test_dns_verified(self):
        """Published records verify on Enter: every check passes."""
        self.fast_dkim_key()
        self.resolver.publish(self.config_dir)
        code, out, _ = self.wizard(DOMAIN, stdin="\n\n\nY\n")
        self.assertEqual(code, 0)
        self.assertIn("\nDNS Verification:\n\n  A: [OK]\n  MX: [OK]\n  SPF: [OK]\n  DKIM: [OK]\n"
                      "  DMARC: [OK] - p=none: monitoring, no policy applied yet\n"
                      f"  PTR: [OK] - {IPV4} → {DOMAIN}\n\nAll DNS records verified.\n", out)
        self.assertTrue(out.endswith("\n".join(flow.closing_lines(DOMAIN, "[x]")) + "\n"))
        self.assertEqual(out.count("ready to"), 1)
        self.assertNotIn("is ready", out)

    def test_noninteractive(self):
        """AIMX_NONINTERACTIVE=1: no trust prompt, trust none, the warning on stderr (acceptance 10)."""
        self.fast_dkim_key()
        code, out, err = self.wizard(DOMAIN, stdin="", environ={"AIMX_NONINTERACTIVE": "1"})
        self.assertEqual(code, 0)
        self.assertIn("No trusted senders configured", err)
        self.assertNotIn("Leave blank to disable", out)
        self.assertIn("Update your DNS records, then run `aimx doctor`", out)  # EOF = q
        config = self.config()
        self.assertEqual((config.trust, config.trusted_senders), ("none", ()))
        with open(os.path.join(self.config_dir, "config.toml")) as f:
            self.assertNotIn("trust", f.read())
        self.assertIn(flow.handoff_lines(a.display for a in AGENTS)[0], out)

    def test_interactive_domain(self):
        """Without the positional domain the prompt asks for it."""
        self.fast_dkim_key()
        code, out, _ = self.wizard(stdin=f"{DOMAIN}\nY\nY\n" + SKIP_ALL)
        self.assertEqual(code, 0)
        self.assertEqual(self.config().domain, DOMAIN)
        self.assertIn("Enter the domain you want to use for email", out)

    def test_colour(self):
        """On a colour terminal: the Unicode glyphs, the accent arrow, ✓ marks."""
        self.fast_dkim_key()
        code, out, _ = self.wizard(DOMAIN, environ={"CLICOLOR_FORCE": "1"})
        self.assertEqual(code, 0)
        self.assertIn("\x1b[1m🐦‍⬛ AIMX setup\x1b[0m", out)
        self.assertIn("  ☐ Preflight checks on port 25", out)
        self.assertIn("\x1b[32m☑\x1b[0m Preflight checks on port 25", out)
        self.assertIn("\x1b[38;2;185;83;28m⎘\x1b[0m Set up MCP for agent(s)", out)
        self.assertIn("\x1b[38;2;185;83;28m→\x1b[0m ", out)
        self.assertIn("\x1b[32m✓\x1b[0m Step 1 complete.", out)
        self.assertIn("  │  → aimx agents setup        │", out)
        self.assertIn("\x1b[32m☑\x1b[0m AIMX has been set up successfully.", out)
        self.assertNotIn("[x]", out)

    def test_data_dir_from_existing_config(self):
        """No --data-dir: the existing config's data_dir is used and kept."""
        self.fast_dkim_key()
        other = os.path.join(self.root, "srv/mail")
        with open(os.path.join(self.config_dir, "config.toml"), "w") as f:
            f.write(f'domain = "{DOMAIN}"\ndata_dir = "{other}"\n')
        code, _, _ = self.wizard(DOMAIN, stdin="\nq\n", data_dir=False)
        self.assertEqual(code, 0)
        self.assertEqual(self.config().data_dir, other)
        self.assertTrue(os.path.isdir(os.path.join(other, "inbox", "catchall")))


class CatchallUserTests(WizardTestCase):
    def setUp(self):
        super().setUp()
        self.fast_dkim_key()

    def test_present(self):
        """An existing aimx-catchall is not created again."""
        self.host.users.add("aimx-catchall")
        code, out, _ = self.wizard(DOMAIN)
        self.assertEqual(code, 0)
        self.assertIn("System user aimx-catchall already present; skipping creation.", out)
        self.assertFalse([c for c in self.host.calls if c[0] in ("useradd", "adduser")])

    def test_adduser_fallback(self):
        """No useradd (BusyBox): adduser -S -H -h ... -s /sbin/nologin."""
        self.host.missing.add("useradd")
        self.assertEqual(self.wizard(DOMAIN)[0], 0)
        self.assertIn(["adduser", "-S", "-H", "-h", "/var/lib/aimx-catchall", "-s",
                       "/sbin/nologin", "aimx-catchall"], self.host.calls)

    def test_useradd_fails(self):
        """useradd fails: its message, and no config or mailbox directory is written."""
        self.host.useradd_result = Completed(9, "", "useradd: group aimx-catchall exists")
        code, _, err = self.wizard(DOMAIN)
        self.assertEqual(code, 1)
        self.assertIn("Error: Failed to create system user aimx-catchall: useradd: group "
                      "aimx-catchall exists", err)
        self.assertFalse(os.path.exists(os.path.join(self.config_dir, "config.toml")))
        self.assertFalse(os.path.exists(os.path.join(self.data_dir, "inbox")))
        self.assertEqual(self.host.service_calls(), [])

    def test_orphan_owner(self):
        """A mailbox of the existing config whose owner does not exist: useradd advice."""
        with open(os.path.join(self.config_dir, "config.toml"), "w") as f:
            f.write(f'domain = "{DOMAIN}"\n[mailboxes.bot]\naddress = "bot@{DOMAIN}"\n'
                    'owner = "nosuchuser123"\n')
        code, _, err = self.wizard(DOMAIN, stdin="\nq\n")
        self.assertEqual(code, 1)
        self.assertIn("mailbox 'bot' is owned by 'nosuchuser123', which does not exist", err)
        self.assertIn("useradd --system --no-create-home --shell /usr/sbin/nologin "
                      "nosuchuser123", err)


class ReentryTests(WizardTestCase):
    def setUp(self):
        super().setUp()
        self.fast_dkim_key()

    def test_reentry(self):
        """Service running, cert and key present: steps 3-5 skipped, no reinstall (acceptance 8)."""
        code, _, _ = self.wizard(DOMAIN, stdin="\nq\na@b.c\nY\n")
        self.assertEqual(code, 0)
        self.assertTrue(self.host.running)
        unit = self.path("/etc/systemd/system/aimx.service")
        os.utime(unit, (0, 0))
        before = self.config()
        self.host.calls.clear()

        code, out, err = self.wizard(DOMAIN, stdin="\nq\n")
        self.assertEqual((code, err), (0, ""))
        self.assertIn("Existing aimx configuration detected. Skipping install, proceeding to "
                      "verification.\n", out)
        self.assertIn("[WARN] Step 3 skipped (TLS certificate already exists).", out)
        self.assertIn("[WARN] Step 4 skipped (existing trust policy preserved).", out)
        self.assertIn("[WARN] Step 5 skipped (aimx already installed).", out)
        self.assertIn("  [-] Set up TLS certificate\n  [-] Set up trust policy\n"
                      "  [-] Install AIMX\n", out)
        self.assertIn("Existing trust policy preserved.", out)
        self.assertNotIn("Waiting for aimx", out)
        # Nothing is installed again, but the running service must still answer.
        self.assertIn("aimx is already installed and running; refreshing its configuration and "
                      "directories.\n", out)
        self.assertEqual(out.count("already installed and running"), 1)
        self.assertIn("(0700): catchall\n  Checking that aimx answers on port 25 and its "
                      "control socket... [OK]\n", out)
        self.assertEqual(self.host.service_calls(), [])
        self.assertEqual(self.ready_calls, 2)
        self.assertEqual(os.stat(unit).st_mtime, 0)
        self.assertEqual(self.config(), before)
        self.assertEqual((before.trust, before.trusted_senders), ("verified", ("a@b.c",)))
        self.assertIn("Configuration unchanged:", out)

    def test_partial_reentry(self):
        """A config but no running service: trust kept, the service installed."""
        with open(os.path.join(self.config_dir, "config.toml"), "w") as f:
            f.write(f'domain = "{DOMAIN}"\ntrust = "verified"\ntrusted_senders = ["x@y.z"]\n'
                    '# a comment\n')
        code, out, _ = self.wizard(DOMAIN, stdin="\nq\n")
        self.assertEqual(code, 0)
        self.assertIn("Existing trust policy preserved.", out)
        config = self.config()
        self.assertEqual((config.trust, config.trusted_senders), ("verified", ("x@y.z",)))
        self.assertEqual(config.catchall().address, f"*@{DOMAIN}")
        self.assertIn(["systemctl", "restart", "aimx"], self.host.calls)

    def test_domain_moved(self):
        """Re-running with another domain moves the mailboxes to it."""
        with open(os.path.join(self.config_dir, "config.toml"), "w") as f:
            f.write('domain = "old.example.com"\n[mailboxes.catchall]\n'
                    'address = "*@old.example.com"\nowner = "aimx-catchall"\n'
                    f'[mailboxes.ops]\naddress = "ops@old.example.com"\nowner = "{CATCHALL.pw_name}"\n')
        code, _, _ = self.wizard(DOMAIN, stdin="\nq\n")
        self.assertEqual(code, 0)
        config = self.config()
        self.assertEqual(config.domain, DOMAIN)
        self.assertEqual(sorted(mb.address for mb in config.mailboxes),
                         [f"*@{DOMAIN}", f"ops@{DOMAIN}"])
        self.assertTrue(os.path.isdir(os.path.join(self.data_dir, "sent", "ops")))


    def test_rerun_edits_in_place(self):
        """A re-run edits config.toml in place: the domain move changes the domain and
        address values and adds data_dir; every comment and the layout stay."""
        original = (
            '# my aimx\ndomain = "old.example.com"   # moving soon\n\n# catch everything\n'
            '[mailboxes.catchall]\naddress = "*@old.example.com"\nowner = "aimx-catchall"\n\n'
            '# the ops team\n[mailboxes.ops]\naddress = "ops@old.example.com"  # shared\n'
            f'owner = "{CATCHALL.pw_name}"\n'
        )
        path = os.path.join(self.config_dir, "config.toml")
        with open(path, "w") as f:
            f.write(original)
        code, out, _ = self.wizard(DOMAIN, stdin="\nq\n")
        self.assertEqual(code, 0)
        self.assertIn(f"Configuration saved to {path}", out)
        with open(path) as f:
            text = f.read()
        self.assertEqual(text, original.replace("old.example.com", DOMAIN).replace(
            "# moving soon\n", f'# moving soon\ndata_dir = "{self.data_dir}"\n'))
        self.assertEqual(self.mode(path), 0o640)


    def test_rerun_layout_refused(self):
        """A config.toml whose layout cannot take the edit stops setup with the file
        named; the file is left as it was."""
        path = os.path.join(self.config_dir, "config.toml")
        original = ('domain = "old.example.com"\nmailboxes = { catchall = { address = '
                    '"*@old.example.com", owner = "aimx-catchall" } }\n')
        with open(path, "w") as f:
            f.write(original)
        code, _, err = self.wizard(DOMAIN, stdin="\nq\n")
        self.assertEqual(code, 1)
        self.assertIn(f"Error: refusing to write an invalid config: {path}: cannot edit in "
                      "place: `mailboxes` is an inline table", err)
        with open(path) as f:
            self.assertEqual(f.read(), original)


class BackupMxTests(WizardTestCase):
    def setUp(self):
        super().setUp()
        self.fast_dkim_key()

    def test_asked(self):
        """An invalid answer is refused with its reason; a host is written to the config
        and its MX record proposed at 20, after aimx's 10 (issue 16)."""
        code, out, _ = self.wizard(DOMAIN, stdin="mx2\nmx2.example.net\n" + SKIP_ALL[1:])
        self.assertEqual(code, 0)
        self.assertIn("Backup MX host (Enter for none): [FAIL] 'mx2' needs at least two labels",
                      out)
        self.assertEqual(self.config().backup_mx, "mx2.example.net")
        self.assertIn(f"  MX   {DOMAIN:<45} 10 {DOMAIN}.\n  MX   {DOMAIN:<45} 20 "
                      "mx2.example.net.\n", out)
        self.assertIn("The backup MX mx2.example.net must accept mail for", out)

    def test_verified(self):
        """The backup's MX record and address verify with the others."""
        self.resolver.publish(self.config_dir)
        self.resolver.add("MX", DOMAIN, (20, "mx2.example.net"))
        self.resolver.add("A", "mx2.example.net", "198.51.100.7")
        code, out, _ = self.wizard(DOMAIN, "--backup-mx", "mx2.example.net",
                                   stdin="\n\nY\n")
        self.assertEqual(code, 0)
        self.assertIn("  MX: [OK]\n  MX (backup): [OK]\n  SPF: [OK]\n", out)
        self.assertIn("All DNS records verified.\n", out)

    def test_rerun_keeps_or_removes(self):
        """On a re-run Enter keeps the configured backup and `none` removes it."""
        self.assertEqual(self.wizard(DOMAIN, "--backup-mx", "mx2.example.net")[0], 0)
        self.host.running = False  # a partial re-run: the prompts are the same
        code, out, _ = self.wizard(DOMAIN, stdin="\nq\n")
        self.assertEqual(code, 0)
        self.assertIn("Backup MX host [mx2.example.net] (Enter keeps it, `none` removes it): ",
                      out)
        self.assertEqual(self.config().backup_mx, "mx2.example.net")
        code, _, _ = self.wizard(DOMAIN, stdin="none\nq\n")
        self.assertEqual(code, 0)
        self.assertIsNone(self.config().backup_mx)
        with open(os.path.join(self.config_dir, "config.toml")) as f:
            self.assertNotIn("backup_mx", f.read())

    def test_flag_refused_before_anything(self):
        """A --backup-mx that is not a host name, or is the domain: exit 1, nothing done."""
        for value in ("mx2", DOMAIN):
            code, _, err = self.wizard(DOMAIN, "--backup-mx", value)
            self.assertEqual(code, 1)
            self.assertIn(f"Error: invalid --backup-mx '{value}': ", err)
        self.assertEqual(self.probed, [])
        self.assertFalse(os.path.exists(os.path.join(self.config_dir, "config.toml")))

    def test_noninteractive_not_asked(self):
        """AIMX_NONINTERACTIVE: no backup MX question."""
        code, out, _ = self.wizard(DOMAIN, stdin="", environ={"AIMX_NONINTERACTIVE": "1"})
        self.assertEqual(code, 0)
        self.assertNotIn("Backup MX host", out)
        self.assertIsNone(self.config().backup_mx)


class FirstMailboxTests(WizardTestCase):
    def setUp(self):
        super().setUp()
        self.fast_dkim_key()
        self.host.users.add("alice")

    def created(self) -> list[dict]:
        return [args for command, args in self.control.calls if command is MailboxCreate]

    def test_asked_with_sudo_user(self):
        """Name, then the owner (Enter: the user behind sudo): MAILBOX-CREATE to the
        running service, and the closing example uses it."""
        code, out, err = self.wizard(DOMAIN, stdin=SKIP_ALL + "bot\n\n",
                                     environ={"SUDO_USER": "alice"})
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(self.created(), [{"name": "bot", "owner": "alice"}])
        self.assertIn(f"Mailbox name (e.g. agent; Enter to skip): Owner of bot@{DOMAIN} "
                      "[alice]: Mailbox 'bot' created: bot@agent.example.com "
                      "(owner: alice).\n", out)
        self.assertIn(f'claude -p "Use bot@{DOMAIN} and respond', out)
        self.assertLess(out.index("aimx is running and answering."), out.index("First mailbox"))

    def test_bad_answers_asked_again(self):
        """A bad name, root, an unknown user, then a refusal by the service: each says
        why and asks again."""
        self.control.answers[MailboxCreate] = lambda args: (
            MailboxError("mailbox 'taken' already exists") if args["name"] == "taken"
            else {"address": f"{args['name']}@{DOMAIN}"})
        stdin = SKIP_ALL + "Bad/Name\nbot\nroot\nnobody123\n\nalice\n"
        code, out, _ = self.wizard(DOMAIN, stdin=stdin.replace("bot", "taken", 1) + "bot\nalice\n")
        self.assertEqual(code, 0)
        self.assertIn("[FAIL] Mailbox name contains invalid character", out)
        self.assertIn("[FAIL] root cannot own it", out)
        self.assertIn("[FAIL] user 'nobody123' does not exist", out)
        self.assertIn("[FAIL] [MAILBOX] mailbox 'taken' already exists", out)
        self.assertEqual(self.created(), [{"name": "taken", "owner": "alice"},
                                          {"name": "bot", "owner": "alice"}])

    def test_skipped(self):
        """Enter at the name, end of input at the owner: nothing created, the hint."""
        for stdin in (SKIP_ALL + "\n", SKIP_ALL + "bot\n"):
            code, out, _ = self.wizard(DOMAIN, stdin=stdin)
            self.assertEqual(code, 0)
            self.assertIn("No mailbox created. Create one later with `sudo aimx mailboxes "
                          "create NAME --owner USER`.", out)
        self.assertEqual(self.created(), [])

    def test_flags(self):
        """--mailbox and --owner: created without a question; a re-run finds it."""
        code, out, _ = self.wizard(DOMAIN, "--mailbox", "bot", "--owner", "alice")
        self.assertEqual(code, 0)
        self.assertNotIn("Mailbox name", out)
        self.assertEqual(self.created(), [{"name": "bot", "owner": "alice"}])
        # What the service would have written: the mailbox in config.toml.
        configfile.write_atomic(self.config_dir, configedit.add_mailbox(self.config(), "bot",
                                                                        "alice"))
        self.control.calls.clear()
        code, out, _ = self.wizard(DOMAIN, "--mailbox", "bot", stdin="\nq\n",
                                   environ={"SUDO_USER": "alice"})
        self.assertEqual(code, 0)
        self.assertIn(f"Mailbox 'bot' (bot@{DOMAIN}, owner alice) already exists.", out)
        self.assertEqual(self.created(), [])

    def test_flags_refused_before_anything(self):
        """Bad --mailbox/--owner combinations fail before any probe or write."""
        cases = (
            (("--owner", "alice"), "--owner goes with --mailbox NAME"),
            (("--mailbox", "bot"), "--mailbox needs --owner USER"),
            (("--mailbox", "a..b", "--owner", "alice"), "invalid --mailbox 'a..b'"),
            (("--mailbox", "bot", "--owner", "root"), "invalid --owner: root cannot own it"),
            (("--mailbox", "bot", "--owner", "nobody123"), "user 'nobody123' does not exist"),
        )
        for argv, message in cases:
            code, _, err = self.wizard(DOMAIN, *argv)
            self.assertEqual(code, 1, argv)
            self.assertIn(message, err)
        self.assertEqual(self.probed, [])
        self.assertRaises(SystemExit, aimx.cli.arguments.parser().parse_args,
                          ["setup", "--mailbox", "x", "--no-mailbox"])

    def test_not_offered(self):
        """--no-mailbox, AIMX_NONINTERACTIVE, or a mailbox besides the catchall: no offer."""
        code, out, _ = self.wizard(DOMAIN, "--no-mailbox")
        self.assertEqual(code, 0)
        self.assertIn("Not offered (--no-mailbox).", out)
        code, out, _ = self.wizard(DOMAIN, stdin="\nq\n", environ={"AIMX_NONINTERACTIVE": "1"})
        self.assertIn("No mailbox created (AIMX_NONINTERACTIVE).", out)
        configfile.write_atomic(self.config_dir, configedit.add_mailbox(self.config(), "ops",
                                                                        "alice"))
        code, out, _ = self.wizard(DOMAIN, stdin="\nq\n")
        self.assertEqual(code, 0)
        self.assertIn("Mailboxes already configured: ops.", out)
        self.assertNotIn("Mailbox name", out)
        self.assertEqual(self.created(), [])

    def test_not_under_a_stale_daemon(self):
        """A re-run that changed config.toml under the running daemon creates nothing
        (the daemon's write would undo the change); with --mailbox that is an error."""
        self.assertEqual(self.wizard(DOMAIN, "--no-mailbox")[0], 0)
        code, out, _ = self.wizard(DOMAIN, stdin="mx2.example.net\nq\n")
        self.assertEqual(code, 0)
        self.assertIn("aimx still runs with the previous configuration", out)
        self.assertIn("Restart aimx (as shown above)", out)
        code, _, err = self.wizard(DOMAIN, "--mailbox", "bot", "--owner", "alice",
                                   stdin="none\nq\n")
        self.assertEqual(code, 1)
        self.assertIn("aimx still runs with the previous configuration", err)
        self.assertEqual(self.created(), [])

    def test_service_gone(self):
        """The service stopped answering before the mailbox: a clear error, exit 1."""
        self.control.answers[MailboxCreate] = DaemonNotRunning(
            "aimx daemon not running (no socket at /run/aimx/aimx.sock)")
        code, _, err = self.wizard(DOMAIN, "--mailbox", "bot", "--owner", "alice")
        self.assertEqual(code, 1)
        self.assertIn("Error: cannot create mailbox 'bot': aimx daemon not running", err)


class InterruptionTests(WizardTestCase):
    def test_end_of_input_then_rerun(self):
        """End of input at the trust prompt: no config; the re-run reuses key and cert."""
        code, _, err = self.wizard(DOMAIN, stdin="\nq\n")
        self.assertEqual(code, 1)
        self.assertIn(f"Error: {cli.END_OF_INPUT}", err)
        self.assertFalse(os.path.exists(os.path.join(self.config_dir, "config.toml")))
        self.assertFalse(os.path.exists(self.path("/etc/systemd/system/aimx.service")))
        private = keys.dkim_paths(self.config_dir)[0]
        with open(private, "rb") as f:
            key = f.read()
        self.assertTrue(os.path.exists(self.path("/etc/ssl/aimx/cert.pem")))

        code, out, _ = self.wizard(DOMAIN)
        self.assertEqual(code, 0)
        with open(private, "rb") as f:
            self.assertEqual(f.read(), key)
        self.assertNotIn("Generating DKIM keypair", out)
        self.assertIn("Existing TLS certificate kept:", out)
        self.assertEqual(self.config().trust, "none")

    def test_ctrl_c_at_a_prompt(self):
        """Ctrl-C at the trust prompt: `Setup interrupted`, no config written."""
        code, out, err = self.wizard(DOMAIN, stdin=_Interrupting("\nq\n"))
        self.assertEqual(code, 1)
        self.assertIn(f"Error: {cli.INTERRUPTED}", err)
        self.assertIn("  [!] Set up trust policy\n", out)
        self.assertFalse(os.path.exists(os.path.join(self.config_dir, "config.toml")))

    def test_cancelled_while_waiting(self):
        """Cancelled (Ctrl-C) while waiting for the service: interrupted, exit 1."""
        self.fast_dkim_key()
        self.ready_result = defer.Deferred()
        d, _, err = self.start(DOMAIN)
        self.assertNoResult(d)
        d.cancel()
        self.assertEqual(self.successResultOf(d), 1)
        self.assertIn(f"Error: {cli.INTERRUPTED}", err.getvalue())

    def test_readiness_timeout(self):
        """The service never answers: ✗, what did not answer and where to look, exit 1,
        no "ready" and no mailbox offer; the config is complete."""
        self.fast_dkim_key()
        self.ready_result = "no SMTP greeting on port 25: connection refused"
        code, out, err = self.wizard(DOMAIN)
        self.assertEqual(code, 1)
        self.assertIn("  Waiting for aimx to answer on port 25 and its control socket... "
                      "[FAIL]\n", out)
        self.assertEqual(err, "Error: aimx was started but does not answer: no SMTP greeting "
                              "on port 25: connection refused.\nLook at `aimx logs` and "
                              "`systemctl status aimx`, fix what they show, then run `sudo "
                              "aimx setup` again.\n")
        self.assertNotIn("ready to", out)
        self.assertNotIn("First mailbox", out)
        self.assertEqual(self.config().domain, DOMAIN)

    def test_reentry_not_answering(self):
        """A re-run finds the service running but not answering: it fails the same way
        (OpenRC's status command)."""
        self.fast_dkim_key()
        os.rmdir(self.path("/run/systemd/system"))
        os.makedirs(self.path("/sbin"))
        open(self.path("/sbin/openrc"), "w").close()
        self.assertEqual(self.wizard(DOMAIN)[0], 0)
        self.ready_result = "no answer on the control socket: aimx daemon not running"
        code, out, err = self.wizard(DOMAIN, stdin="\nq\n")
        self.assertEqual(code, 1)
        self.assertIn("  Checking that aimx answers on port 25 and its control socket... "
                      "[FAIL]\n", out)
        self.assertIn("no answer on the control socket: aimx daemon not running.\n"
                      "Look at `aimx logs` and `rc-service aimx status`", err)

    def test_restart_fails_then_rerun(self):
        """The service fails to restart; the re-run keeps the trust answer and installs it."""
        self.fast_dkim_key()
        self.host.restart_result = Completed(1, "", "Job for aimx.service failed.")
        code, _, err = self.wizard(DOMAIN, stdin="\nq\na@b.c\nY\n")
        self.assertEqual(code, 1)
        self.assertIn("Error: Failed to restart aimx: Job for aimx.service failed.", err)
        self.host.restart_result = Completed(0)
        code, out, _ = self.wizard(DOMAIN, stdin="\nq\n")
        self.assertEqual(code, 0)
        self.assertIn("[WARN] Step 4 skipped (existing trust policy preserved).", out)
        self.assertIn("aimx is running and answering.", out)
        self.assertEqual(self.config().trusted_senders, ("a@b.c",))

    def test_unknown_init(self):
        """Neither systemd nor OpenRC: the manual-start error after the config is saved."""
        self.fast_dkim_key()
        os.rmdir(self.path("/run/systemd/system"))
        code, _, err = self.wizard(DOMAIN)
        self.assertEqual(code, 1)
        self.assertIn("Could not detect init system (systemd or OpenRC). Start aimx serve "
                      "manually.", err)
        self.assertEqual(self.config().domain, DOMAIN)

    def test_openrc(self):
        """OpenRC: the init script, rc-update and rc-service (acceptance 13)."""
        self.fast_dkim_key()
        os.rmdir(self.path("/run/systemd/system"))
        os.makedirs(self.path("/sbin"))
        open(self.path("/sbin/openrc"), "w").close()
        self.assertEqual(self.wizard(DOMAIN)[0], 0)
        with open(self.path("/etc/init.d/aimx")) as f:
            script = f.read()
        self.assertTrue(script.startswith("#!/sbin/openrc-run\n"))
        self.assertIn("supervisor=supervise-daemon", script)
        self.assertIn(f"checkpath -d -m 0755 -o root:root {self.runtime_dir}", script)
        self.assertEqual(self.host.service_calls(), [
            ["rc-update", "add", "aimx", "default"], ["rc-service", "aimx", "restart"]])


class RegistrationTests(SynchronousTestCase):
    def test_parsed(self):
        """`aimx setup [domain] --verify-host URL` parses; the domain is optional."""
        args = aimx.cli.arguments.parser().parse_args(["setup", DOMAIN, "--verify-host", "https://v"])
        self.assertEqual((args.verb, args.domain, args.verify_host), ("setup", DOMAIN, "https://v"))
        self.assertIsNone(aimx.cli.arguments.parser().parse_args(["setup"]).domain)

    def test_help_hides_domain(self):
        """`aimx setup --help` lists its options and never the positional domain."""
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        self.assertRaises(SystemExit, aimx.cli.main, ["setup", "--help"])
        self.assertIn(
            "usage: aimx setup [--verify-host URL] [--outbound-check-domain DOMAIN] "
            "[--backup-mx HOST] [--mailbox NAME [--owner USER] | --no-mailbox]\n",
            out.getvalue(),
        )
        self.assertNotIn("positional arguments", out.getvalue())
        self.assertNotIn("[domain]", out.getvalue())
        self.assertFalse(hasattr(aimx.cli, "NOT_BUILT"))
