"""The operator verbs dkim-keygen, logs and uninstall (docs/cli.md).

Service and log access go through aimx.host.initsystem with a temporary root and
L{aimx.testing.fakes.FakeRunner}: no real init system is touched.
"""

import argparse
import base64
import importlib
import io
import os
import runpy
import stat
import sys

from cryptography.hazmat.primitives import serialization
from twisted.trial.unittest import SkipTest, SynchronousTestCase

import aimx.cli
from aimx.cli import arguments, dkimkeygen, logs, uninstall
from aimx.cli.term import Terminal
from aimx.host import initsystem, package
from aimx.host.programs import Completed
from aimx.ops import units, version
from aimx.store import configfile, demo, keys
from tests.test_initsystem import HostTestCase, captured

DOMAIN = "agent.example.com"


def _config_text(data_dir="/srv/aimx-data"):
    return f'domain = "{DOMAIN}"\ndata_dir = "{data_dir}"\n'


class CliTestCase(SynchronousTestCase):
    def parse(self, argv):
        """Parse with the real top-level parser (as aimx.cli.main does)."""
        args = aimx.cli.arguments.parser().parse_args(argv)
        args.config_dir = args.config_dir or self.config_dir
        return args

    def terminal(self, stdin=""):
        self.out, self.err = io.StringIO(), io.StringIO()
        return Terminal(self.out, self.err, io.StringIO(stdin), {})


# -- dkim-keygen -----------------------------------------------------------------


class DkimKeygenTests(CliTestCase):
    def setUp(self):
        self.config_dir = os.path.abspath(self.mktemp())
        os.makedirs(self.config_dir)
        self.private, self.public = keys.dkim_paths(self.config_dir)

    def write_config(self):
        with open(configfile.config_path(self.config_dir), "w") as f:
            f.write(_config_text())

    def keygen(self, *argv):
        return dkimkeygen.run(self.parse(["dkim-keygen", *argv]), self.terminal())

    def read(self, path):
        with open(path, "rb") as f:
            return f.read()

    def spki_b64(self):
        key = serialization.load_pem_private_key(self.read(self.private), password=None)
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def test_needs_config(self):
        """Without config.toml: exit 1 with the load error, no key written."""
        self.assertEqual(self.keygen(), 1)
        self.assertIn("Error: Config file not found at", self.err.getvalue())
        self.assertFalse(os.path.exists(os.path.dirname(self.private)))

    def test_generates(self):
        """PKCS#1 private key 0600, SPKI public key 0644, the record printed (acceptance 17)."""
        self.write_config()
        self.assertEqual(self.keygen(), 0)
        self.assertIn(b"-----BEGIN RSA PRIVATE KEY-----", self.read(self.private))
        self.assertIn(b"-----BEGIN PUBLIC KEY-----", self.read(self.public))
        self.assertEqual(stat.S_IMODE(os.stat(self.private).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.public).st_mode), 0o644)
        self.assertEqual(
            self.out.getvalue(),
            "DKIM keypair generated successfully.\n\n"
            "Add this DNS TXT record:\n"
            f"  aimx._domainkey.{DOMAIN}\n"
            f"  v=DKIM1; k=rsa; p={self.spki_b64()}\n\n",
        )
        self.assertEqual(self.err.getvalue(), "")
        # The daemon's loader takes the key.
        self.assertEqual(keys.load_dkim_private_key(self.config_dir), self.read(self.private))

    def test_modes_ignore_umask(self):
        """The final modes hold whatever the umask (0 or 077)."""
        self.write_config()
        for umask in (0o000, 0o077):
            old = os.umask(umask)
            try:
                self.assertEqual(self.keygen("--force"), 0)
            finally:
                os.umask(old)
            self.assertEqual(stat.S_IMODE(os.stat(self.private).st_mode), 0o600)
            self.assertEqual(stat.S_IMODE(os.stat(self.public).st_mode), 0o644)

    def test_existing_kept(self):
        """Second run: exit 0, the warning on stderr, keys unchanged, record still printed."""
        self.write_config()
        self.keygen()
        before = self.read(self.private), self.read(self.public)
        self.assertEqual(self.keygen(), 0)
        self.assertEqual(
            self.err.getvalue(), "Warning: DKIM keys already exist. Use --force to overwrite.\n"
        )
        self.assertEqual((self.read(self.private), self.read(self.public)), before)
        self.assertNotIn("generated", self.out.getvalue())
        self.assertIn(f"p={self.spki_b64()}", self.out.getvalue())

    def test_force(self):
        """--force replaces both keys."""
        self.write_config()
        self.keygen()
        before = self.read(self.private), self.read(self.public)
        self.assertEqual(self.keygen("--force"), 0)
        self.assertNotEqual(self.read(self.private), before[0])
        self.assertNotEqual(self.read(self.public), before[1])
        self.assertIn("DKIM keypair generated successfully.", self.out.getvalue())

    def test_selector(self):
        """--selector names the printed record only; config.toml is not touched."""
        self.write_config()
        self.assertEqual(self.keygen("--selector", "s2026"), 0)
        self.assertIn(f"  s2026._domainkey.{DOMAIN}\n", self.out.getvalue())
        self.assertEqual(self.read(configfile.config_path(self.config_dir)).decode(),
                         _config_text())

    def test_stale_public_key_replaced(self):
        """A public.key without its private key is replaced, not an error."""
        self.write_config()
        os.makedirs(os.path.dirname(self.public))
        with open(self.public, "w") as f:
            f.write("stale")
        self.assertEqual(self.keygen(), 0)
        self.assertIn(f"p={self.spki_b64()}", self.out.getvalue())

    def test_pkcs1_public_key(self):
        """A PKCS#1 `BEGIN RSA PUBLIC KEY` public.key gives the same SPKI record."""
        self.write_config()
        self.keygen()
        key = serialization.load_pem_public_key(self.read(self.public))
        with open(self.public, "wb") as f:
            f.write(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1))
        self.assertEqual(self.keygen(), 0)
        self.assertIn(f"p={self.spki_b64()}\n", self.out.getvalue())

    def test_permission_denied(self):
        """Permission denied names the dkim dir and suggests sudo or AIMX_CONFIG_DIR."""
        self.write_config()

        def denied(config_dir, force=False):
            raise PermissionError(13, "Permission denied")

        self.patch(keys, "generate_dkim_key", denied)
        self.assertEqual(self.keygen(), 1)
        message = self.err.getvalue()
        self.assertIn(f"Permission denied writing to {self.config_dir}/dkim", message)
        self.assertIn("sudo aimx dkim-keygen", message)
        self.assertIn("AIMX_CONFIG_DIR=<writable-path>", message)

    def test_read_only_config_dir(self):
        """A real read-only AIMX_CONFIG_DIR fails for non-root (acceptance 18)."""
        if os.geteuid() == 0:
            raise SkipTest("root writes to read-only directories")
        self.write_config()
        os.chmod(self.config_dir, 0o555)
        self.addCleanup(os.chmod, self.config_dir, 0o755)
        self.assertEqual(self.keygen(), 1)
        self.assertIn(self.config_dir, self.err.getvalue())
        self.assertIn("AIMX_CONFIG_DIR", self.err.getvalue())

    def test_main_with_env(self):
        """`aimx dkim-keygen` through aimx.cli.main honours AIMX_CONFIG_DIR."""
        self.write_config()
        self.patch(os, "environ", dict(os.environ, AIMX_CONFIG_DIR=self.config_dir))
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        self.assertEqual(aimx.cli.main(["dkim-keygen"]), 0)
        self.assertIn("_domainkey", out.getvalue())
        self.assertTrue(os.path.exists(self.private))


# -- logs ------------------------------------------------------------------------


class LogsTests(CliTestCase, HostTestCase):
    config_dir = "/nonexistent"

    def logs(self, system, *argv):
        return logs.run(self.parse(["logs", *argv]), self.terminal(), system)

    def test_default(self):
        """systemd: `journalctl -u aimx -n 50 --no-pager`, printed verbatim (acceptance 19)."""
        system = self.host(initsystem.SYSTEMD, {
            ("journalctl", "-u", "aimx", "-n", "50", "--no-pager"): Completed(0, "l1\nl2\n")})
        self.assertEqual(self.logs(system), 0)
        self.assertEqual(
            self.runner.calls, [["journalctl", "-u", "aimx", "-n", "50", "--no-pager"]]
        )
        self.assertEqual(self.out.getvalue(), "l1\nl2\n")

    def test_lines(self):
        """-n 200 and --lines 7 reach journalctl."""
        system = self.host(initsystem.SYSTEMD)
        self.logs(system, "-n", "200")
        self.logs(system, "--lines", "7")
        self.assertEqual([call[4] for call in self.runner.calls], ["200", "7"])

    def test_negative_lines(self):
        """A negative count is a usage error (exit 2)."""
        self.patch(sys, "stderr", io.StringIO())
        e = self.assertRaises(SystemExit, self.parse, ["logs", "-n", "-3"])
        self.assertEqual(e.code, 2)

    def test_missing_final_newline(self):
        """Output without a final newline gets one."""
        system = self.host(initsystem.SYSTEMD, {
            ("journalctl", "-u", "aimx", "-n", "50", "--no-pager"): Completed(0, "last")})
        self.logs(system)
        self.assertEqual(self.out.getvalue(), "last\n")

    def test_empty(self):
        """Empty output prints nothing at all."""
        self.assertEqual(self.logs(self.host(initsystem.SYSTEMD)), 0)
        self.assertEqual(self.out.getvalue(), "")

    def test_tail_failure(self):
        """journalctl failing: a hint then `Error:` on stderr, exit 1."""
        system = self.host(initsystem.SYSTEMD, {
            ("journalctl", "-u", "aimx", "-n", "50", "--no-pager"): Completed(1, "", "denied")})
        self.assertEqual(self.logs(system), 1)
        self.assertEqual(self.out.getvalue(), "")
        hint, error = self.err.getvalue().splitlines()
        self.assertIn("journalctl -u aimx", hint)
        self.assertIn("/var/log/messages", hint)
        self.assertEqual(error, "Error: journalctl exited non-zero: denied")

    def test_follow(self):
        """--follow runs `journalctl ... -f` on the terminal."""
        system = self.host(initsystem.SYSTEMD)
        self.assertEqual(self.logs(system, "--follow"), 0)
        self.assertEqual(self.runner.calls,
                         [["journalctl", "-u", "aimx", "-n", "50", "--no-pager", "-f"]])
        self.assertEqual(captured(self.runner), [False])

    def test_priority_since(self):
        """--priority (a name or 0-7) and --since reach journalctl as -p N and
        --since @<epoch>."""
        system = self.host(initsystem.SYSTEMD)
        self.logs(system, "-p", "warning", "--since", "2026-06-01T12:00:00Z")
        self.logs(system, "--priority", "5", "-S", "2026-06-01 12:00:00+02:00")
        self.assertEqual(self.runner.calls, [
            ["journalctl", "-u", "aimx", "-n", "50", "--no-pager", "-p", "4",
             "--since", "@1780315200"],
            ["journalctl", "-u", "aimx", "-n", "50", "--no-pager", "-p", "5",
             "--since", "@1780308000"],
        ])

    def test_bad_priority_or_since(self):
        """An unknown priority or time is a usage error (exit 2) naming the forms."""
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        for argv in (["-p", "warn"], ["--since", "last week"]):
            e = self.assertRaises(SystemExit, self.parse, ["logs", *argv])
            self.assertEqual(e.code, 2)
        self.assertIn("emerg, alert, crit, err, warning, notice, info, debug", err.getvalue())
        self.assertIn("YYYY-MM-DD", err.getvalue())

    def test_mailbox(self):
        """--mailbox: journalctl's lines, the ones with mailbox=NAME kept by aimx."""
        system = self.host(initsystem.SYSTEMD, {
            ("journalctl", "-u", "aimx", "--no-pager"): Completed(
                0, "t h twistd[1]: aimx.hook: firing mailbox=alice\n"
                   't h twistd[1]: aimx.smtp: RCPT refused rcpt="mailbox=alice"\n')})
        self.assertEqual(self.logs(system, "--mailbox", "alice"), 0)
        self.assertEqual(self.out.getvalue(), "t h twistd[1]: aimx.hook: firing mailbox=alice\n")

    def test_follow_interrupted(self):
        """Ctrl-C while following ends quietly with 130."""
        system = self.host(initsystem.SYSTEMD)

        def interrupted(argv, capture=True):
            raise KeyboardInterrupt

        system = initsystem.System(root=system.root, runner=interrupted)
        self.assertEqual(self.logs(system, "-f"), 130)
        self.assertEqual(self.err.getvalue(), "")

    def test_follow_openrc_without_file(self):
        """OpenRC follows aimx's log file; without one: error, exit 1."""
        self.assertEqual(self.logs(self.host(initsystem.OPENRC), "-f"), 1)
        self.assertIn("Error: cannot read the log ", self.err.getvalue())
        self.assertIn("/var/log/aimx/aimx.log", self.err.getvalue())

    def test_openrc_file(self):
        """OpenRC: the last N lines of /var/log/aimx/aimx.log."""
        system = self.host(initsystem.OPENRC)
        self.under_root(units.OPENRC_LOG, "".join(f"line {i}\n" for i in range(100)))
        self.assertEqual(self.logs(system, "-n", "2"), 0)
        self.assertEqual(self.out.getvalue(), "line 98\nline 99\n")

    def test_unknown_init(self):
        """Unknown init: hint + error, exit 1."""
        self.assertEqual(self.logs(self.host(None)), 1)
        self.assertIn("Error: could not detect init system", self.err.getvalue())

    def test_help(self):
        """`aimx logs --help` lists -n, --lines and --follow (cli.md acceptance 3) and the
        filters."""
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        e = self.assertRaises(SystemExit, aimx.cli.main, ["logs", "--help"])
        self.assertEqual(e.code, 0)
        for flag in ("-n", "--lines", "--follow", "--priority", "--since", "--mailbox"):
            self.assertIn(flag, out.getvalue())


class DemoLogsTests(CliTestCase, HostTestCase):
    """`aimx logs` with AIMX_RUNTIME_DIR naming a running demo: the demo's log file,
    whatever the init system."""

    config_dir = "/nonexistent"

    def setUp(self):
        self.run_dir = os.path.abspath(self.mktemp())
        os.makedirs(self.run_dir)
        self.log = os.path.join(self.run_dir, "aimx.log")
        with open(self.log, "w") as f:
            f.write("".join(f"event {i}\n" for i in range(60)))
        demo.write(self.run_dir, demo.DemoState(
            domain="demo.localhost", host="127.0.0.1", port=2525, dns_port=5353, mx_port=2526,
            sender_domain="sender.localhost", selector="demo", sender_key="/d/sender.key",
            config_dir="/d/etc", data_dir="/d/data", log=self.log, directory="/d",
        ))
        self.environ = {"AIMX_RUNTIME_DIR": self.run_dir}

    def logs(self, system, *argv):
        return logs.run(self.parse(["logs", *argv]), self.terminal(), system, self.environ)

    def test_tail(self):
        """The last 50 lines of the demo's log (journald not asked), and where it is."""
        system = self.host(initsystem.SYSTEMD)
        self.assertEqual(self.logs(system), 0)
        self.assertEqual(self.out.getvalue(), "".join(f"event {i}\n" for i in range(10, 60)))
        self.assertEqual(self.err.getvalue(), f"(the log of the aimx demo in /d: {self.log})\n")
        self.assertEqual(self.runner.calls, [])
        self.assertEqual(self.logs(system, "-n", "1"), 0)
        self.assertTrue(self.out.getvalue().endswith("event 59\n"))

    def test_follow(self):
        """--follow: the demo log's last N lines, then each line added (on any init
        system), until Ctrl-C (exit 130)."""
        log = self.log

        class Screen(io.StringIO):
            def write(self, text):
                super().write(text)
                if "event 60" in text:
                    raise KeyboardInterrupt
                with open(log, "a") as f:  # the daemon logs on
                    f.write("event 60\n")

        system = self.host(None)
        self.terminal()
        self.out = Screen()
        term = Terminal(self.out, self.err, io.StringIO(), {})
        code = logs.run(self.parse(["logs", "--follow", "-n", "2"]), term, system, self.environ)
        self.assertEqual(code, 130)
        self.assertEqual(self.out.getvalue(), "event 58\nevent 59\nevent 60\n")
        self.assertEqual(self.runner.calls, [])

    def test_filtered(self):
        """--priority, --since and --mailbox filter the demo's log file."""
        lines = [
            "2026-06-01T12:00:00.000+00:00 info aimx.hook: firing mailbox=alice\n",
            "2026-06-01T12:00:01.000+00:00 err aimx.inbound: not stored mailbox=bob\n",
            "2026-06-01T12:00:02.000+00:00 notice aimx.trust: trust eval mailbox=alice\n",
        ]
        with open(self.log, "w") as f:
            f.write("".join(lines))
        system = self.host(None)
        self.assertEqual(self.logs(system, "--priority", "notice"), 0)
        self.assertEqual(self.out.getvalue(), lines[1] + lines[2])
        self.logs(system, "--mailbox", "alice", "--since", "2026-06-01T12:00:01Z")
        self.assertEqual(self.out.getvalue(), lines[2])

    def test_log_gone(self):
        """A demo whose log cannot be read: an error naming it, exit 1."""
        os.unlink(self.log)
        self.assertEqual(self.logs(self.host(initsystem.SYSTEMD)), 1)
        self.assertIn(f"Error: cannot read the log {self.log}: ", self.err.getvalue())

    def test_bad_state(self):
        """A demo.json that is not a demo's: said, exit 1, no other log shown."""
        with open(os.path.join(self.run_dir, "demo.json"), "w") as f:
            f.write("{}")
        self.assertEqual(self.logs(self.host(initsystem.SYSTEMD)), 1)
        self.assertIn("is not an aimx demo state file", self.err.getvalue())
        self.assertEqual(self.runner.calls, [])

    def test_no_demo(self):
        """A runtime dir without demo.json: the init system's log, as ever."""
        os.unlink(os.path.join(self.run_dir, "demo.json"))
        system = self.host(initsystem.SYSTEMD)
        self.assertEqual(self.logs(system), 0)
        self.assertEqual(self.runner.calls,
                         [["journalctl", "-u", "aimx", "-n", "50", "--no-pager"]])


# -- uninstall -------------------------------------------------------------------


PIP = package.Removal(package.VENV_PIP, "sudo /opt/aimx/bin/pip uninstall aimx",
                      note="The virtual environment /opt/aimx stays; delete it if nothing "
                      "else uses it.")


class UninstallTests(CliTestCase, HostTestCase):
    def setUp(self):
        base = os.path.abspath(self.mktemp())
        self.config_dir = os.path.join(base, "etc")
        self.data_dir = os.path.join(base, "data")
        os.makedirs(os.path.join(self.config_dir, "dkim"))
        os.makedirs(os.path.join(self.data_dir, "inbox"))
        with open(configfile.config_path(self.config_dir), "w") as f:
            f.write(_config_text(self.data_dir))
        self.program = os.path.join(base, "bin", "aimx")
        os.makedirs(os.path.dirname(self.program))
        with open(self.program, "w") as f:
            f.write("#!/usr/bin/python3\n")
        self.package_asked = 0

    def find_package(self, removal=PIP):
        def find():
            self.package_asked += 1
            return removal
        return find

    def uninstall(self, system, *argv, euid=0, stdin="", removal=PIP,
                  runtime_dir=units.DEFAULT_RUNTIME_DIR):
        return uninstall.run(
            self.parse(["uninstall", *argv]), self.terminal(stdin), system,
            euid=euid, runtime_dir=runtime_dir, find_package=self.find_package(removal),
        )

    def systemd_host(self, results=None):
        system = self.host(initsystem.SYSTEMD, results)
        self.unit = self.under_root(units.SYSTEMD_UNIT, "unit")
        return system

    def test_non_root(self):
        """Non-root: refused before anything happens (acceptance 23)."""
        system = self.systemd_host()
        self.assertEqual(self.uninstall(system, "--yes", euid=1000), 1)
        self.assertEqual(
            self.err.getvalue(),
            "Error: `aimx uninstall` requires root. Run with: sudo aimx uninstall\n",
        )
        self.assertTrue(os.path.exists(self.unit))
        self.assertEqual(self.runner.calls, [])
        self.assertEqual(self.package_asked, 0)

    def test_declined(self):
        """Answer `n`: `Uninstall cancelled.`, exit 1, unit still there."""
        system = self.systemd_host()
        self.assertEqual(self.uninstall(system, stdin="n\n"), 1)
        self.assertIn("Proceed with uninstall? (y/N) ", self.out.getvalue())
        self.assertEqual(self.err.getvalue(), "Error: Uninstall cancelled.\n")
        self.assertTrue(os.path.exists(self.unit))
        self.assertEqual(self.runner.calls, [])

    def test_yes_word_is_not_yes(self):
        """Only y/Y confirms: `yes` cancels, as does end of input."""
        system = self.systemd_host()
        self.assertEqual(self.uninstall(system, stdin="yes\n"), 1)
        self.assertEqual(self.uninstall(system, stdin=""), 1)
        self.assertTrue(os.path.exists(self.unit))

    def test_confirmed(self):
        """Answer `Y`: the service is torn down."""
        system = self.systemd_host()
        self.assertEqual(self.uninstall(system, stdin="Y\n"), 0)
        self.assertFalse(os.path.exists(self.unit))

    def test_yes(self):
        """--yes on systemd: unit removed; config, data and the package (its console
        script) kept, and the command that removes the package printed (acceptance 23,
        as issue 16 changes it)."""
        system = self.systemd_host()
        self.assertEqual(self.uninstall(system, "-y"), 0)
        self.assertFalse(os.path.exists(self.unit))
        self.assertTrue(os.path.exists(self.program))
        self.assertTrue(os.path.exists(configfile.config_path(self.config_dir)))
        self.assertTrue(os.path.isdir(os.path.join(self.data_dir, "inbox")))
        self.assertEqual(self.runner.calls, [
            ["systemctl", "stop", "aimx"],
            ["systemctl", "disable", "aimx"],
            ["systemctl", "daemon-reload"],
            ["systemctl", "reset-failed", "aimx"],
        ])
        self.assertEqual(
            self.out.getvalue(),
            "\nUninstall\n"
            "This will stop the aimx daemon and remove its service file and runtime files.\n"
            f"Config ({self.config_dir}) and mailbox data ({self.data_dir}) will be kept, "
            "and so will the aimx package: the command that removes it is shown at the end.\n"
            "\nUninstall complete.\n\n"
            "Removed: /etc/systemd/system/aimx.service\n"
            "The aimx package stays installed (pip, in a virtual environment). To remove it:\n"
            "  sudo /opt/aimx/bin/pip uninstall aimx\n"
            "The virtual environment /opt/aimx stays; delete it if nothing else uses it.\n"
            f"To wipe config and data manually: sudo rm -rf {self.config_dir} {self.data_dir}\n",
        )
        self.assertEqual(self.err.getvalue(), "")

    def test_openrc(self):
        """OpenRC: rc-service stop, rc-update del, script removed, and the runtime files
        the daemon left (OpenRC's checkpath made the directory) removed with it."""
        system = self.host(initsystem.OPENRC)
        script = self.under_root(units.OPENRC_SCRIPT, "script")
        pid = self.under_root("/run/aimx/aimx.pid", "123\n")
        self.assertEqual(self.uninstall(system, "--yes"), 0)
        self.assertFalse(os.path.exists(script))
        self.assertFalse(os.path.exists(os.path.dirname(pid)))
        self.assertEqual(self.runner.calls[0], ["rc-service", "aimx", "stop"])
        out = self.out.getvalue()
        self.assertIn("Removed: /etc/init.d/aimx\nRemoved: /run/aimx/aimx.pid\n"
                      "Removed: /run/aimx\n", out)

    def test_socket_activation_files_kept(self):
        """The socket-activation files were copied by hand: the socket is stopped and
        disabled first, the files stay, and the exact `rm` is printed."""
        system = self.systemd_host()
        socket_unit = self.under_root(units.SYSTEMD_SOCKET, "socket")
        dropin = self.under_root(units.SYSTEMD_SOCKET_DROPIN, "dropin")
        self.assertEqual(self.uninstall(system, "--yes"), 0)
        self.assertTrue(os.path.exists(socket_unit))
        self.assertTrue(os.path.exists(dropin))
        self.assertEqual(self.runner.calls[:3], [
            ["systemctl", "stop", "aimx.socket"],
            ["systemctl", "disable", "aimx.socket"],
            ["systemctl", "stop", "aimx"],
        ])
        self.assertIn(
            "Socket activation (aimx.socket) is stopped and disabled; its files were "
            "installed by hand and stay. Remove them with:\n"
            "  sudo rm /etc/systemd/system/aimx.socket "
            "/etc/systemd/system/aimx.service.d/socket.conf\n",
            self.out.getvalue(),
        )

    def test_unit_absent(self):
        """No unit: the skip line, the package command still printed, exit 0."""
        system = self.host(initsystem.SYSTEMD)
        self.assertEqual(self.uninstall(system, "--yes"), 0)
        out = self.out.getvalue()
        self.assertIn("aimx.service is not installed; skipping service teardown.\n", out)
        self.assertNotIn("Removed:", out)
        self.assertIn("Uninstall complete.", out)
        self.assertIn("  sudo /opt/aimx/bin/pip uninstall aimx\n", out)

    def test_unknown_init(self):
        """Unknown init: exit 1 with the manual-removal error; nothing else happens."""
        self.assertEqual(self.uninstall(self.host(None), "--yes"), 1)
        self.assertIn("/etc/systemd/system/aimx.service or /etc/init.d/aimx manually",
                      self.err.getvalue())
        self.assertNotIn("Uninstall complete.", self.out.getvalue())
        self.assertEqual(self.package_asked, 0)

    def test_packages(self):
        """Each installer's command is shown as detected; a user's install says who runs
        it; a source checkout has nothing to run."""
        cases = [
            (package.Removal(package.APT, "sudo apt remove python3-aimx"),
             "The aimx package stays installed (a Debian package). To remove it:\n"
             "  sudo apt remove python3-aimx\n"),
            (package.Removal(package.PIPX, "PIPX_HOME=/home/al/.local/share/pipx pipx "
                             "uninstall aimx", user="al"),
             "The aimx package stays installed (pipx; run it as al). To remove it:\n"
             "  PIPX_HOME=/home/al/.local/share/pipx pipx uninstall aimx\n"),
            (package.Removal(package.SOURCE, None, note="aimx runs from /src/aimx and is "
                             "not an installed package; nothing to uninstall there."),
             "Removed: /etc/systemd/system/aimx.service\naimx runs from /src/aimx and is "
             "not an installed package; nothing to uninstall there.\nTo wipe"),
        ]
        for removal, expected in cases:
            self.uninstall(self.systemd_host(), "--yes", removal=removal)
            self.assertIn(expected, self.out.getvalue())

    def test_no_config(self):
        """Without a readable config the data dir shown is --data-dir, else /var/lib/aimx."""
        os.unlink(configfile.config_path(self.config_dir))
        self.uninstall(self.systemd_host(), stdin="n\n")
        self.assertIn("mailbox data (/var/lib/aimx) will be kept", self.out.getvalue())
        self.uninstall(self.systemd_host(), "--data-dir", "/srv/x", stdin="n\n")
        self.assertIn("mailbox data (/srv/x) will be kept", self.out.getvalue())


class ProgramPathTests(SynchronousTestCase):
    def setUp(self):
        self.bin = os.path.abspath(self.mktemp())
        os.makedirs(self.bin)
        self.python = os.path.join(self.bin, "python3")
        self.script = os.path.join(self.bin, "aimx")
        for path in (self.python, self.script):
            open(path, "w").close()

    def test_console_script(self):
        """argv[0] naming the aimx script: that path as run (pipx's link stays a link,
        so the uninstall command can name pipx's bin directory)."""
        link = os.path.join(self.bin, "link")
        os.makedirs(link)
        os.symlink(self.script, os.path.join(link, "aimx"))
        found = uninstall.program_path(os.path.join(link, "aimx"), self.python, lambda n: None)
        self.assertEqual(found, os.path.join(link, "aimx"))

    def test_module_run_uses_path(self):
        """`python -m aimx` (argv[0] a module file): the aimx on PATH."""
        argv0 = "/usr/lib/python3/site-packages/aimx/__main__.py"
        self.assertEqual(uninstall.program_path(argv0, self.python, lambda n: self.script),
                         self.script)
        self.assertIsNone(uninstall.program_path(argv0, self.python, lambda n: None))

    def test_never_the_interpreter(self):
        """A candidate that resolves to the Python interpreter is refused."""
        os.unlink(self.script)
        os.symlink(self.python, self.script)
        self.assertIsNone(uninstall.program_path(self.script, self.python, lambda n: None))

    def test_missing(self):
        """A candidate that is not a file is refused."""
        os.unlink(self.script)
        self.assertIsNone(uninstall.program_path(self.script, self.python, lambda n: None))


class RegistrationTests(SynchronousTestCase):
    def test_top_level_help(self):
        """The three verbs stay in the Server administration group of `aimx --help`."""
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        self.assertRaises(SystemExit, aimx.cli.main, ["--help"])
        admin = out.getvalue().split("Server administration:")[1]
        for verb in ("logs", "dkim-keygen", "uninstall"):
            self.assertIn(f"  {verb} ", admin)

    def test_built(self):
        """They parse as real verbs, and every verb of the table has a module that runs it
        and arguments in the grammar; every verb of the grammar is dispatched."""
        for verb in ("logs", "dkim-keygen", "uninstall"):
            self.assertEqual(aimx.cli.arguments.parser().parse_args([verb]).verb, verb)
        for verb, name in aimx.cli.VERBS.items():
            module = importlib.import_module(f"aimx.cli.{name}")
            self.assertTrue(callable(module.main), module)
            self.assertIn(verb, arguments.VERBS)
        self.assertEqual(set(arguments.VERBS) - set(aimx.cli.VERBS),
                         {"serve", "mcp", "ingest", "demo"})


def _helps(parser, path=()):
    """C{path -> help text} of a parser and of every subcommand below it."""
    helps = {path: parser.format_help()}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                helps.update(_helps(sub, path + (name,)))
    return helps


class ParserTests(SynchronousTestCase):
    """The parser is built with the running verb's arguments only, and says the same."""

    def test_top_level_help(self):
        """`aimx --help` (no verb) is the same without any verb's arguments."""
        self.assertEqual(arguments.parser_for(None).format_help(),
                         arguments.parser().format_help())

    def test_each_verb_alone(self):
        """Built for one verb (or an alias), every help text of that verb and its actions is
        the whole parser's, and the verb parses as in the whole parser."""
        whole = _helps(arguments.parser())
        for verb, (_, aliases) in arguments.VERBS.items():
            for word in (verb, *aliases):
                alone = _helps(arguments.parser_for(word))
                mine = {path: text for path, text in alone.items() if path[:1] == (word,)}
                self.assertTrue(mine, word)
                self.assertEqual(mine, {path: whole[path] for path in mine}, word)
        args = arguments.parser_for("mail").parse_args(["mail", "list", "box", "--limit", "7"])
        self.assertEqual((args.verb, args.action, args.mailbox, args.limit),
                         ("mail", "list", "box", 7))

    def test_typo(self):
        """A mistyped verb is compared with every verb, as by the whole parser."""
        errors = []
        for parser in (arguments.parser(), arguments.parser_for("mailboxs")):
            err = io.StringIO()
            self.patch(sys, "stderr", err)
            self.assertRaises(SystemExit, parser.parse_args, ["mailboxs", "list"])
            errors.append(err.getvalue())
        self.assertEqual(errors[0], errors[1])
        self.assertIn("invalid choice: 'mailboxs' (choose from 'serve', 'mcp'", errors[0])

    def test_other_verbs_not_built(self):
        """Only the verb that runs is built, with its aliases; no verb, every verb by name."""
        for word in ("mailboxes", "mailbox"):
            [sub] = [a for a in arguments.parser_for(word)._actions
                     if isinstance(a, argparse._SubParsersAction)]
            self.assertEqual(sorted(sub.choices), ["mailbox", "mailboxes"])
            self.assertEqual(len(sub.choices["mailboxes"]._actions), 4)
        [sub] = [a for a in arguments.parser_for(None)._actions
                 if isinstance(a, argparse._SubParsersAction)]
        self.assertEqual(list(sub.choices)[:4], ["serve", "mcp", "ingest", "demo"])
        self.assertEqual(len(sub.choices["mail"]._actions), 1)  # --help alone

    def test_global_errors(self):
        """A top-level error with a verb named is the whole parser's (its usage line)."""
        errors = []
        for parser in (arguments.parser(), arguments.parser_for("mail")):
            err = io.StringIO()
            self.patch(sys, "stderr", err)
            self.assertRaises(SystemExit, parser.parse_args, ["--bogus", "mail", "list", "x"])
            errors.append(err.getvalue())
        self.assertEqual(errors[0], errors[1])


# -- --version -------------------------------------------------------------------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class VersionTests(SynchronousTestCase):
    def version(self, *argv):
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        self.assertEqual(aimx.cli.main(list(argv)), 0)
        return out.getvalue()

    def test_without_commit(self):
        """No known commit: `aimx <version>` and nothing else."""
        self.patch(version, "COMMIT", None)
        for flag in ("--version", "-V"):
            self.assertEqual(self.version(flag), f"aimx {aimx.__version__}\n")

    def test_with_commit(self):
        """A commit stamped at build time follows in parentheses."""
        self.patch(version, "COMMIT", "0123456789ab")
        self.assertEqual(self.version("--version"), f"aimx {aimx.__version__} (0123456789ab)\n")

    def test_fields(self):
        """VERSION's fields: `unknown` for what the build did not record, never today's date."""
        self.patch(version, "COMMIT", None)
        self.patch(version, "BUILD_DATE", None)
        fields = version.version_fields()
        self.assertEqual((fields["tag"], fields["git_hash"], fields["build_date"]),
                         (aimx.__version__, "unknown", "unknown"))
        self.patch(version, "COMMIT", "0123456789ab")
        self.patch(version, "BUILD_DATE", "2026-01-02")
        fields = version.version_fields()
        self.assertEqual((fields["git_hash"], fields["build_date"]),
                         ("0123456789ab", "2026-01-02"))

    def test_build_stamp(self):
        """setup.py's build step writes the commit and date that aimx.ops.version reads."""
        build = runpy.run_path(os.path.join(REPO, "setup.py"), run_name="aimx_setup")
        namespace = {}
        exec(build["stamp_text"]("0123456789ab", "2026-01-02"), namespace)
        self.assertEqual((namespace["COMMIT"], namespace["BUILD_DATE"]),
                         ("0123456789ab", "2026-01-02"))
        namespace = {}
        exec(build["stamp_text"](None, "2026-01-02"), namespace)
        self.assertIsNone(namespace["COMMIT"])


# -- completion ------------------------------------------------------------------


class CompletionTests(SynchronousTestCase):
    def test_unknown_shell(self):
        """Another shell is a usage error."""
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        e = self.assertRaises(SystemExit, aimx.cli.main, ["completion", "fish"])
        self.assertEqual(e.code, 2)
        self.assertIn("fish", err.getvalue())
