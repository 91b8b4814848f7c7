"""The systemd unit and OpenRC script renderers (aimx.ops.units; docs/install.md, "The service")."""

import os

from twisted.trial.unittest import SynchronousTestCase

from aimx.ops import bind, units

CONTRIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "contrib")
VENV_TWISTD = "/opt/aimx/venv/bin/twistd"


def _directives(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#")
    return dict(pairs)


#: The sandbox of the default unit (README, "The service sandbox").
SANDBOX = {
    "UMask": "0077",
    "ProtectSystem": "strict",
    "ReadWritePaths": "/var/lib/aimx /etc/aimx -/home -/root",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "PrivateMounts": "yes",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE CAP_CHOWN CAP_FOWNER CAP_DAC_OVERRIDE "
                             "CAP_SETUID CAP_SETGID CAP_KILL",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "ProtectProc": "invisible",
    "RestrictNamespaces": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
    "SystemCallFilter": "@system-service seccomp landlock_create_ruleset landlock_add_rule "
                        "landlock_restrict_self",
    "SystemCallErrorNumber": "EPERM",
}


class SystemdUnitTests(SynchronousTestCase):
    def test_directives(self):
        """The unit carries the AIMX directives, with ExecStart running twistd (acceptance 13),
        and the sandbox."""
        unit = units.systemd_unit(units.UnitParams(twistd=VENV_TWISTD))
        self.assertEqual(
            _directives(unit),
            {
                "Description": "aimx SMTP server",
                "After": "network-online.target nss-lookup.target",
                "Wants": "network-online.target",
                "StartLimitBurst": "5",
                "StartLimitIntervalSec": "60s",
                "Type": "simple",
                "User": "root",
                "ExecStart": f"{VENV_TWISTD} --nodaemon --pidfile= aimx --data-dir /var/lib/aimx",
                "Restart": "on-failure",
                "RestartSec": "5s",
                "LimitNOFILE": "65536",
                "TasksMax": "4096",
                "RuntimeDirectory": "aimx",
                "RuntimeDirectoryMode": "0755",
                "StandardOutput": "journal",
                "StandardError": "journal",
                **SANDBOX,
                "WantedBy": "multi-user.target",
            },
        )
        self.assertEqual(
            [line for line in unit.splitlines() if line.startswith("[")],
            ["[Unit]", "[Service]", "[Install]"],
        )

    def test_capabilities_are_the_used_ones(self):
        """The bounding set is exactly the capabilities the daemon uses: port 25, giving
        files to owners and setting their modes, writing into owners' directories,
        running hooks as the owner and killing them at their timeout."""
        unit = _directives(units.systemd_unit(units.UnitParams(twistd=VENV_TWISTD)))
        self.assertEqual(
            set(unit["CapabilityBoundingSet"].split()),
            {"CAP_NET_BIND_SERVICE", "CAP_CHOWN", "CAP_FOWNER", "CAP_DAC_OVERRIDE",
             "CAP_SETUID", "CAP_SETGID", "CAP_KILL"},
        )
        self.assertNotIn("AmbientCapabilities", unit)
        self.assertLessEqual(set(units.CAPABILITIES), set(units.ALL_CAPABILITIES))
        self.assertEqual(len(set(units.ALL_CAPABILITIES)), 41)

    def test_hooks_keep_what_agent_recipes_need(self):
        """Hooks run in the daemon's sandbox: homes stay writable, the network open,
        and memory writable and executable (node, Python)."""
        unit = _directives(units.systemd_unit(units.UnitParams(twistd=VENV_TWISTD)))
        for absent in ("ProtectHome", "MemoryDenyWriteExecute", "PrivateNetwork",
                       "IPAddressDeny", "PrivateUsers", "ProcSubset"):
            self.assertNotIn(absent, unit)
        self.assertIn("-/home", unit["ReadWritePaths"].split())
        self.assertIn("-/root", unit["ReadWritePaths"].split())
        self.assertIn("AF_INET6", unit["RestrictAddressFamilies"].split())
        # A refused system call fails with EPERM instead of killing the hook.
        self.assertEqual(unit["SystemCallErrorNumber"], "EPERM")

    def test_custom_dirs(self):
        """A custom data dir is used verbatim; non-default config/runtime dirs become flags;
        the data and config dirs are the writable ones, the runtime dir is systemd's."""
        unit = units.systemd_unit(units.UnitParams(
            twistd=VENV_TWISTD, data_dir="/srv/mail", config_dir="/srv/etc",
            runtime_dir="/run/aimx-test",
        ))
        directives = _directives(unit)
        self.assertEqual(
            directives["ExecStart"],
            f"{VENV_TWISTD} --nodaemon --pidfile= aimx --data-dir /srv/mail "
            "--config-dir /srv/etc --runtime-dir /run/aimx-test",
        )
        self.assertEqual(directives["ReadWritePaths"], "/srv/mail /srv/etc -/home -/root")
        self.assertEqual(directives["RuntimeDirectory"], "aimx-test")

    def test_runtime_dir_outside_run(self):
        """A runtime dir outside /run is no RuntimeDirectory= but a writable path."""
        directives = _directives(units.systemd_unit(units.UnitParams(
            twistd=VENV_TWISTD, runtime_dir="/var/run-aimx",
        )))
        self.assertNotIn("RuntimeDirectory", directives)
        self.assertNotIn("RuntimeDirectoryMode", directives)
        self.assertEqual(directives["ReadWritePaths"],
                         "/var/lib/aimx /etc/aimx /var/run-aimx -/home -/root")
        nested = units.UnitParams(twistd=VENV_TWISTD, runtime_dir="/run/aimx/test/")
        self.assertEqual(nested.runtime_directory(), "aimx/test")

    def test_unsafe_paths_refused(self):
        """A relative path, or one needing quotes or a % escape, never reaches a service file."""
        for params in (
            units.UnitParams(twistd="twistd"),
            units.UnitParams(twistd=VENV_TWISTD, data_dir="/var/lib/my mail"),
            units.UnitParams(twistd=VENV_TWISTD, config_dir="/etc/a%i"),
            units.UnitParams(twistd='/opt/"x"/twistd'),
            units.UnitParams(twistd=VENV_TWISTD, runtime_dir="run/aimx"),
        ):
            self.assertRaises(units.UnitError, units.systemd_unit, params)
            self.assertRaises(units.UnitError, units.openrc_script, params)


class OpenrcScriptTests(SynchronousTestCase):
    def test_script(self):
        """openrc-run shebang, supervise-daemon, twistd command and the /run/aimx checkpath."""
        script = units.openrc_script(units.UnitParams(twistd=VENV_TWISTD, data_dir="/srv/mail"))
        lines = script.splitlines()
        self.assertEqual(lines[0], "#!/sbin/openrc-run")
        self.assertIn('description="aimx SMTP server"', lines)
        self.assertIn(f"command={VENV_TWISTD}", lines)
        self.assertIn('command_args="--nodaemon --pidfile= aimx --data-dir /srv/mail"', lines)
        self.assertIn("supervisor=supervise-daemon", lines)
        self.assertIn("depend() {\n\tafter net\n}\n", script)
        self.assertIn("\tcheckpath -d -m 0755 -o root:root /run/aimx || return 1", lines)

    def test_output_goes_to_the_log_file(self):
        """supervise-daemon writes stdout and stderr to the file `aimx logs` reads on OpenRC."""
        directives = _directives(units.openrc_script(units.UnitParams(twistd=VENV_TWISTD)))
        self.assertEqual(directives["output_log"], '"/var/log/aimx/aimx.log"')
        self.assertEqual(directives["error_log"], '"/var/log/aimx/aimx.log"')

    def test_sandbox(self):
        """What OpenRC can sandbox: umask 077 and a bounding set of the used capabilities
        (every other one dropped)."""
        directives = _directives(units.openrc_script(units.UnitParams(twistd=VENV_TWISTD)))
        self.assertEqual(directives["umask"], "077")
        dropped = directives["capabilities"].strip('"').split(",")
        self.assertTrue(all(cap.startswith("!cap_") for cap in dropped))
        kept = {cap.upper() for cap in units.ALL_CAPABILITIES} - {
            cap[1:].upper() for cap in dropped}
        self.assertEqual(kept, set(units.CAPABILITIES))

    def test_sandbox_asked_of_supervise_daemon(self):
        """start_pre keeps capabilities and adds --no-new-privs only when supervise-daemon
        accepts them (OpenRC before 0.45, or built without libcap, would refuse to start
        the service); no_new_privs=yes is never used (misspelt by OpenRC 0.45 to 0.51)."""
        script = units.openrc_script(units.UnitParams(twistd=VENV_TWISTD))
        self.assertNotIn("no_new_privs", _directives(script))
        start_pre = script[script.index("start_pre() {"):]
        self.assertIn(
            '\tif ! supervise-daemon "${RC_SVCNAME}" --capabilities "${capabilities}" --help '
            "\\\n\t\t\t>/dev/null 2>&1; then\n", start_pre)
        self.assertIn("\t\tunset capabilities\n", start_pre)
        self.assertIn(
            '\tif supervise-daemon "${RC_SVCNAME}" --no-new-privs --help >/dev/null 2>&1; then\n'
            '\t\tsupervise_daemon_args="${supervise_daemon_args-${start_stop_daemon_args}}'
            ' --no-new-privs"\n', start_pre)

    def test_runtime_dir_override(self):
        """A non-default runtime dir is both passed to the daemon and created by checkpath."""
        script = units.openrc_script(
            units.UnitParams(twistd=VENV_TWISTD, runtime_dir="/run/aimx-2")
        )
        self.assertIn("--runtime-dir /run/aimx-2", script)
        self.assertIn("checkpath -d -m 0755 -o root:root /run/aimx-2 ||", script)


class SocketActivationTests(SynchronousTestCase):
    def test_socket(self):
        """aimx.socket listens on port 25 as one IPv6 socket that takes IPv4 too."""
        socket_unit = units.systemd_socket()
        self.assertEqual(
            _directives(socket_unit),
            {"Description": "aimx SMTP socket", "ListenStream": "25", "BindIPv6Only": "both",
             "WantedBy": "sockets.target"},
        )
        self.assertEqual([line for line in socket_unit.splitlines() if line.startswith("[")],
                         ["[Unit]", "[Socket]", "[Install]"])

    def test_dropin(self):
        """The drop-in needs the socket and reruns the unit's command adopting it (INET6)."""
        params = units.UnitParams(twistd=VENV_TWISTD, data_dir="/srv/mail",
                                  runtime_dir="/run/aimx-2")
        dropin = units.systemd_socket_dropin(params)
        lines = dropin.splitlines()
        self.assertIn("Requires=aimx.socket", lines)
        self.assertIn("After=aimx.socket", lines)
        # An empty ExecStart= first: a drop-in otherwise adds a second command.
        [clear, command] = [line for line in lines if line.startswith("ExecStart=")]
        self.assertEqual(clear, "ExecStart=")
        unit_command = _directives(units.systemd_unit(params))["ExecStart"]
        self.assertEqual(command, f"ExecStart={unit_command} --bind {units.SOCKET_BIND}")
        self.assertEqual(bind.parse(units.SOCKET_BIND).description, "systemd:domain=INET6:index=0")
        self.assertRaises(units.UnitError, units.systemd_socket_dropin,
                          units.UnitParams(twistd="twistd"))


class ContribTests(SynchronousTestCase):
    def assertContrib(self, name, text):
        with open(os.path.join(CONTRIB, name)) as f:
            self.assertEqual(f.read(), text, f"contrib/{name} drifted from aimx.ops.units")

    def test_contrib_service(self):
        """contrib/aimx.service is exactly the rendered unit for the default paths."""
        self.assertContrib(
            "aimx.service", units.systemd_unit(units.UnitParams(twistd=units.DEFAULT_TWISTD))
        )

    def test_contrib_openrc(self):
        """contrib/aimx.openrc is exactly the rendered script for the default paths."""
        self.assertContrib(
            "aimx.openrc", units.openrc_script(units.UnitParams(twistd=units.DEFAULT_TWISTD))
        )

    def test_contrib_socket(self):
        """contrib/aimx.socket and its drop-in are exactly the rendered files."""
        self.assertContrib("aimx.socket", units.systemd_socket())
        self.assertContrib(
            os.path.join("aimx.service.d", "socket.conf"),
            units.systemd_socket_dropin(units.UnitParams(twistd=units.DEFAULT_TWISTD)),
        )
