"""`aimx doctor` on a healthy, a half-configured and a broken install (issue 7; docs/cli.md, "aimx doctor").

Each test builds a real install in scratch dirs: config.toml, mailbox directories,
DKIM keys, a loopback FixtureDNS with (or without) the right records and, for the
healthy one, the daemon running in-process so the VERSION probe crosses the real
control socket, and its port-25 checks find their far ends on loopback: gmail.com's MX
(fixture DNS) is the daemon itself, and a verifier probes the daemon back. The verb
runs in-process on the reactor with its DNS lookups in threads; only the host is faked
(systemctl and `hostname -I` answer from a table).
"""

import functools
import io
import ipaddress
import os
import pwd
import socket
import subprocess
import sys

from twisted.internet import defer, reactor, threads

import aimx.cli
from aimx.cli import doctor as cli
from aimx.cli.session import Session, execute
from aimx.cli.term import Terminal
from aimx.control import client
from aimx.control.wire import SOCKET_NAME
from aimx.ops import doctor as core
from aimx.ops import portcheck
from aimx.ops.version import version_fields
from aimx.store import demo, keys
from aimx.host.initsystem import System
from aimx.host.programs import Completed
from aimx.testing import fakes
from aimx.testing.fakes import FakeRunner
from aimx.verifier.service import Verifier
from tests.integration.base import DaemonTestCase, reserve_port
from tests.integration.test_portcheck import MX_HOST

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOMAIN = "agent.example.com"
IPV4, IPV6 = "192.0.2.10", "2001:db8::10"
IS_ACTIVE = ("systemctl", "is-active", "--quiet", "aimx")
HOSTNAME_I = ("hostname", "-I")
# Mailboxes must not be root's (that is a warning of its own).
OWNER = pwd.getpwuid(os.geteuid()) if os.geteuid() else pwd.getpwnam("nobody")


def config_text(data_dir: str, *, alice_owner=OWNER.pw_name, mailboxes=(), **top) -> str:
    """alice (owned by C{alice_owner}), the catchall and C{mailboxes}; C{top}: more keys."""
    return fakes.config_text(DOMAIN, data_dir=data_dir, owner=OWNER.pw_name, **top, mailboxes={
        "alice": {"owner": alice_owner}, "catchall": {"address": f"*@{DOMAIN}"},
        **dict(mailboxes)})


class DoctorTests(DaemonTestCase):
    def make_dirs(self, *names, mode=0o700):
        for name in names:
            for part in ("inbox", "sent"):
                path = os.path.join(self.data_dir, part, name)
                os.makedirs(path, exist_ok=True)
                os.chown(path, OWNER.pw_uid, OWNER.pw_gid)
                os.chmod(path, mode)

    def publish(self, *, ipv6=False, key=True, dmarc="v=DMARC1; p=reject"):
        """The records setup tells the operator to add, and reverse DNS for the server's
        addresses (which the hosting provider sets)."""
        spf = f"v=spf1 ip4:{IPV4}" + (f" ip6:{IPV6}" if ipv6 else "") + " -all"
        self.dns.add_a(DOMAIN, IPV4)
        self.dns.add_ptr(ipaddress.ip_address(IPV4).reverse_pointer, DOMAIN)
        if ipv6:
            self.dns.add_aaaa(DOMAIN, IPV6)
            self.dns.add_ptr(ipaddress.ip_address(IPV6).reverse_pointer, DOMAIN)
        self.dns.add_mx(DOMAIN, 10, DOMAIN)
        self.dns.add_txt(DOMAIN, spf)
        if key:
            self.dns.add_txt(f"aimx._domainkey.{DOMAIN}",
                             "v=DKIM1; k=rsa; p=" + keys.local_public_key_b64(self.config_dir))
        self.dns.add_txt(f"_dmarc.{DOMAIN}", dmarc)

    async def doctor(self, *, running: bool, hostname="192.0.2.10 fe80::1 2001:db8::10\n",
                     mx_port: int | None = None):
        """Run the verb in-process; returns (exit code, stdout, stderr).

        @param mx_port: the port of gmail.com's MX (C{AIMX_SMTP_OUT_PORT}); default a
            reserved port nothing listens on, so the connection is refused.
        """
        root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "run/systemd/system"))
        runner = FakeRunner({IS_ACTIVE: Completed(0 if running else 3),
                             HOSTNAME_I: Completed(0, hostname)}, default=Completed(0))
        args = aimx.cli.arguments.parser().parse_args(["doctor"])
        args.config_dir, args.data_dir = self.config_dir, None
        environ = {**self.environ, "AIMX_RUNTIME_DIR": self.runtime_dir,
                   "AIMX_SMTP_OUT_PORT": str(mx_port or reserve_port(self))}
        out, err = io.StringIO(), io.StringIO()
        path = os.path.join(self.runtime_dir, SOCKET_NAME)
        session = Session(
            args, connect=lambda: defer.Deferred.fromCoroutine(client.connect(reactor, path)),
            euid=os.geteuid(), term=Terminal(out, err, io.StringIO(), environ), environ=environ,
        )
        verb = functools.partial(cli.doctor, clock=reactor, system=System(root, runner),
                                 run_in_thread=threads.deferToThread)
        code = await execute(verb, args, session)
        return code, out.getvalue(), err.getvalue()

    async def test_healthy(self):
        """Everything right, daemon up, one mail: every DNS and port-25 check passes,
        exit 0 (acceptance 14)."""
        self.write_config(config_text(self.data_dir, enable_ipv6=True))
        self.make_dirs("alice", "catchall")
        self.publish(ipv6=True)
        self.start_daemon()
        reply = await self.smtp(b"Subject: hi\r\n\r\nHello.\r\n", [f"alice@{DOMAIN}"])
        self.assertEqual(reply[0], 250)
        # gmail.com's MX is the daemon itself; a verifier of our own probes it back.
        self.dns.add_mx("gmail.com", 5, MX_HOST)
        self.dns.add_a(MX_HOST, "127.0.0.1")
        verifier = Verifier(reactor, http=("127.0.0.1", 0), smtp=None, probe_port=self.port,
                            hostname="verifier.test", allow_private=True)
        verifier.startService()
        self.addCleanup(verifier.stopService)
        verify_host = f"http://127.0.0.1:{verifier.http_port.address.port}"
        self.write_config(config_text(self.data_dir, enable_ipv6=True, verify_host=verify_host))

        code, out, err = await self.doctor(running=True, mx_port=self.port)
        self.assertEqual((code, err), (0, ""))
        for text in (DOMAIN, "catchall", "alice", "Mailbox", "Logs", "aimx logs"):
            self.assertIn(text, out)
        self.assertNotIn("Recent logs", out)
        self.assertIn("DKIM key:         present\n", out)
        self.assertIn("SMTP server:      running\n", out)
        version = version_fields()
        self.assertIn(f"Server version:   {version['tag']} ({version['git_hash']})\n", out)
        self.assertIn("Total:            2 (1 messages, 1 unread)\n", out)
        self.assertIn(f"  alice     owner={OWNER.pw_name}  [OK]  uid={OWNER.pw_uid}\n", out)
        self.assertIn(
            "DNS\n  A: [OK]\n  AAAA: [OK]\n  MX: [OK]\n  SPF: [OK]\n  SPF (IPv6): [OK]\n"
            f"  DKIM: [OK]\n  DMARC: [OK]\n  PTR: [OK] - {IPV4} → {DOMAIN}\n"
            f"  PTR (IPv6): [OK] - {IPV6} → {DOMAIN}\n\nPort 25\n"
            f"  Outbound: [OK] - {MX_HOST} [127.0.0.1]:{self.port} (MX of gmail.com) sent its "
            "220 banner\n"
            "  Inbound: [OK] - the verifier reached 127.0.0.1 on port 25\n\nLogs\n", out)
        self.assertIn("Checks\n  All checks passed.\n", out)

    async def test_half_configured(self):
        """Config written but no key, DNS half published, daemon down: warnings, exit 0."""
        self.write_config(config_text(self.data_dir))
        self.make_dirs("catchall")
        self.make_dirs("alice", mode=0o755)
        os.makedirs(os.path.join(self.data_dir, "inbox", "old"))
        for path in keys.dkim_paths(self.config_dir):
            os.unlink(path)
        self.dns.add_a(DOMAIN, IPV4)
        self.dns.add_mx(DOMAIN, 10, "mx.other.net")
        self.dns.add_txt(f"_dmarc.{DOMAIN}", "v=DMARC1; p=none")

        code, out, err = await self.doctor(running=False)
        self.assertEqual((code, err), (0, ""))
        self.assertIn("DKIM key:         MISSING - run `aimx dkim-keygen`\n", out)
        self.assertIn("SMTP server:      not running\n", out)
        self.assertIn("Server version:   (daemon not running)\n", out)
        dns = out.split("\nDNS\n")[1].split("\n\nPort 25\n")[0]
        self.assertEqual(dns.splitlines(), [
            "  A: [OK]",
            ('  MX: [FAIL] - MX record found but does not point to agent.example.com: '
             '["10 mx.other.net."]'),
            f"         → Add: MX  {DOMAIN}  10 {DOMAIN}.",
            "  SPF: [FAIL] - No SPF record found",
            f"         → Add: TXT  {DOMAIN}  v=spf1 ip4:{IPV4} -all",
            "  DKIM: [FAIL] - No DKIM record found",
            ("         !! Outbound DKIM signatures will FAIL verification at receivers until "
             "DNS matches."),
            "  DMARC: [OK] - p=none: monitoring, no policy applied yet",
            (f"  PTR: [WARN] - no PTR record for {IPV4}: ask your hosting provider to set "
             f"reverse DNS to {DOMAIN}; many receivers reject or spam-folder mail from IPs "
             "without one"),
            (f"         → Reverse DNS is set by whoever gave you {IPV4} (your hosting "
             f"provider's panel or support), not in the DNS zone of {DOMAIN}."),
        ])
        self.assertIn("  [WARN] mailbox 'alice' inbox dir mode is 0755, expected 0700\n", out)
        self.assertIn("  [WARN] mailbox 'alice' sent dir mode is 0755, expected 0700\n", out)
        self.assertIn("  [WARN] storage directory `inbox/old/` has no matching mailbox", out)
        self.assertIn("  Summary: 0 fail, 3 warn, 0 info\n", out)
        # No MX for gmail.com in this DNS, no verifier configured: said, not failed.
        self.assertIn("Port 25\n  Outbound: [FAIL] - gmail.com has no MX record\n"
                      f"         → {portcheck.OUTBOUND_UNCHECKED}\n"
                      f"  Inbound: [WARN] - {portcheck.INBOUND_NOT_CHECKED}\n", out)

    async def test_dmarc_next_step(self):
        """DMARC at p=none, DKIM and SPF verifying: no suggestion before mail has gone
        out, then an Info finding to move to quarantine (exit 0 either way)."""
        self.write_config(config_text(self.data_dir))
        self.make_dirs("alice", "catchall")
        self.publish(dmarc="v=DMARC1; p=none")
        code, out, _ = await self.doctor(running=False)
        self.assertEqual(code, 0)
        self.assertIn("  DMARC: [OK] - p=none: monitoring, no policy applied yet\n", out)
        self.assertIn("Checks\n  All checks passed.\n", out)

        with open(os.path.join(self.data_dir, "sent", "alice", "s.md"), "w") as f:
            f.write('+++\nsubject = "x"\n+++\nHello.\n')
        code, out, _ = await self.doctor(running=False)
        self.assertEqual(code, 0)
        self.assertIn("  [INFO] DMARC is at p=none and mail has gone out (1 sent) with the DKIM "
                      "and SPF records in place: time to tighten it\n"
                      "        → once a message you sent shows dkim=pass and spf=pass in the "
                      "receiver's Authentication-Results header, publish `v=DMARC1; "
                      f"p=quarantine` at _dmarc.{DOMAIN} (later p=reject)\n", out)
        self.assertIn("  Summary: 0 fail, 0 warn, 1 info\n", out)

    async def test_backup_mx(self):
        """A configured backup MX is shown and checked: missing, then at a preference
        above aimx's with an address."""
        backup = "mx2.example.net"
        self.write_config(config_text(self.data_dir, backup_mx=backup))
        self.make_dirs("alice", "catchall")
        self.publish()
        code, out, _ = await self.doctor(running=False)
        self.assertEqual(code, 0)
        self.assertIn(f"Backup MX:        {backup}\n", out)
        self.assertIn(f"  MX: [OK]\n  MX (backup): [FAIL] - {backup} is not among the MX "
                      f"records of {DOMAIN}\n         → Add: MX  {DOMAIN}  20 {backup}.\n", out)
        self.dns.add_mx(DOMAIN, 20, backup)
        self.dns.add_a(backup, "198.51.100.7")
        _, out, _ = await self.doctor(running=False)
        self.assertIn("  MX: [OK]\n  MX (backup): [OK]\n", out)

    async def test_broken(self):
        """Unknown owner, missing storage, failing DNS, stale socket: [FAIL]s, exit 1."""
        self.write_config(config_text(self.data_dir, alice_owner="nosuchuser123",
                                      mailboxes={"bob": {}}))
        self.make_dirs("catchall", "bob")
        os.rmdir(os.path.join(self.data_dir, "sent", "bob"))
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(os.path.join(self.runtime_dir, SOCKET_NAME))
        stale.close()
        self.dns.add_servfail(DOMAIN)

        code, out, err = await self.doctor(running=False)
        self.assertEqual(code, 1)
        self.assertIn(f"Error: {core.FAILING}", err)
        sock = os.path.join(self.runtime_dir, SOCKET_NAME)
        self.assertIn(f"Server version:   (daemon not reachable on {sock})\n", out)
        self.assertIn("  alice     owner=nosuchuser123  [FAIL]  user not found\n", out)
        self.assertIn(f"  bob       owner={OWNER.pw_name}  [OK]  uid={OWNER.pw_uid}\n", out)
        self.assertIn(f"  A: [FAIL] - A record lookup failed: {DOMAIN} A: ", out)
        self.assertIn(f"  MX: [FAIL] - MX lookup failed: {DOMAIN} MX: ", out)
        self.assertIn("  DMARC: [FAIL] - No DMARC record found\n", out)
        self.assertIn("  [FAIL] mailbox 'bob' sent directory is missing: ", out)
        self.assertIn("  [WARN] mailbox 'alice' owner 'nosuchuser123' does not resolve", out)
        self.assertIn("  [WARN] mailbox 'alice' has a config entry but no storage", out)
        self.assertIn("  [WARN] config load: mailbox 'alice' owner 'nosuchuser123'", out)
        self.assertIn("  Summary: 1 fail, 3 warn, 0 info\n", out)

    async def test_demo(self):
        """A demo (its state file in the runtime dir): checked as its daemon runs, with
        its DNS server, its loopback address and its sender domain's MX, so a healthy
        demo has no failure; no service unit, yet the answering daemon is running."""
        self.write_config(config_text(self.data_dir))
        self.make_dirs("alice", "catchall")
        # As `aimx demo` publishes its own records: the server is at 127.0.0.1 (not at
        # the address `hostname -I` gives).
        self.publish_loopback()
        self.start_daemon()
        # The sender domain's MX: the daemon itself answers the banner.
        self.dns.add_mx("sender.test", 10, MX_HOST)
        self.dns.add_a(MX_HOST, "127.0.0.1")
        demo.write(self.runtime_dir, demo.DemoState(
            domain=DOMAIN, host="127.0.0.1", port=self.port,
            dns_port=int(self.dns.nameservers.rsplit(":", 1)[1]), mx_port=self.port,
            sender_domain="sender.test", selector="demo", sender_key="/nonexistent",
            config_dir=self.config_dir, data_dir=self.data_dir, log="/nonexistent",
            directory=os.path.dirname(self.config_dir),
        ))
        # Neither the environment's DNS nor its MX port: the demo's state says.
        self.environ = {"AIMX_NAMESERVERS": "127.0.0.1:9"}

        code, out, err = await self.doctor(running=False)
        self.assertEqual((code, err), (0, ""))
        self.assertNotIn("FAIL", out)
        self.assertIn(f"SMTP server:      running (aimx demo on 127.0.0.1:{self.port}, "
                      f"{os.path.dirname(self.config_dir)})\n", out)
        self.assertIn(
            f"DNS\n  (the demo's DNS server, {self.dns.nameservers}, for a server at "
            "127.0.0.1)\n  A: [OK]\n  MX: [OK]\n  SPF: [OK]\n  DKIM: [OK]\n  DMARC: [OK]\n"
            "\nPort 25\n"
            f"  Outbound: [OK] - {MX_HOST} [127.0.0.1]:{self.port} (MX of sender.test) sent "
            "its 220 banner\n"
            f"  Inbound: [WARN] - not checked: the demo listens on 127.0.0.1:{self.port} only, "
            "where nothing outside can connect\n\nLogs\n", out)
        self.assertIn("Checks\n  All checks passed.\n", out)

    def publish_loopback(self):
        self.dns.add_a(DOMAIN, "127.0.0.1")
        self.dns.add_mx(DOMAIN, 10, DOMAIN)
        self.dns.add_txt(DOMAIN, "v=spf1 ip4:127.0.0.1 -all")
        self.dns.add_txt(f"aimx._domainkey.{DOMAIN}",
                         "v=DKIM1; k=rsa; p=" + keys.local_public_key_b64(self.config_dir))
        self.dns.add_txt(f"_dmarc.{DOMAIN}", f"v=DMARC1; p=reject; rua=mailto:postmaster@{DOMAIN}")

    async def test_daemon_without_service(self):
        """A daemon that answers with no service unit (`aimx serve` by hand) is running,
        never "not running" beside its own version."""
        self.write_config(config_text(self.data_dir))
        self.make_dirs("alice", "catchall")
        self.start_daemon()
        _, out, _ = await self.doctor(running=False)
        sock = os.path.join(self.runtime_dir, SOCKET_NAME)
        version = version_fields()
        self.assertIn(f"SMTP server:      running (not as the aimx service; answers on "
                      f"{sock})\nClient version:   {version['tag']} ({version['git_hash']})\n"
                      f"Server version:   {version['tag']} ({version['git_hash']})\n", out)

    async def test_no_server_ip(self):
        """`hostname -I` without an IPv4 address: the DNS section is skipped."""
        self.write_config(config_text(self.data_dir))
        self.make_dirs("alice", "catchall")
        _, out, _ = await self.doctor(running=False, hostname="fe80::1\n")
        self.assertIn("DNS\n  skipped - could not determine server IP\n", out)

    def test_console_script(self):
        """`aimx doctor` is a built verb: without a config it is `Error: …`, exit 1."""
        os.unlink(os.path.join(self.config_dir, "config.toml"))
        env = dict(os.environ, PYTHONPATH=REPO, AIMX_CONFIG_DIR=self.config_dir, NO_COLOR="1")
        result = subprocess.run([sys.executable, "-m", "aimx", "doctor"], capture_output=True,
                                env=env, check=False, timeout=60, cwd=REPO)
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"Error: Config file not found at", result.stderr)
        self.assertNotIn(b"not built yet", result.stderr)
        self.assertNotIn(b"\x1b", result.stderr)
