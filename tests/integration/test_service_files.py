"""The rendered service files run by the tools that read them (aimx.ops.units).

C{systemd-analyze verify} loads aimx.service, aimx.socket and the socket drop-in
and must have nothing to say; C{systemd-analyze security --offline=yes} rates the
unit's exposure, which must stay at most L{MAX_EXPOSURE} (the shipped unit
before the sandbox: 9.6 UNSAFE).  Neither needs systemd running, only its
C{systemd-analyze} (250 or later for C{--offline}); without it the tests are
skipped with the reason.  The OpenRC script's C{start_pre} runs in C{sh} against
stand-ins for supervise-daemon of each generation (Debian 12's 0.45.2, built
without libcap, answers like the second one).
"""

import os
import re
import shutil
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from aimx.host.initsystem import ServiceError, find_twistd
from aimx.host.programs import run_program
from aimx.ops import units

#: The highest exposure the unit may be rated (issue 16; 0 is best, 10 worst).
MAX_EXPOSURE = 4.5

_EXPOSURE = re.compile(r"Overall exposure level for aimx\.service: (\d+\.\d+)")


def _analyze() -> str:
    """The path of a systemd-analyze that can rate a unit file, or skip."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        raise SkipTest("systemd-analyze is not installed")
    usage = run_program([analyze, "--help"], timeout=60)
    if "--offline" not in usage.stdout:
        raise SkipTest("this systemd-analyze has no --offline (systemd 250 or later)")
    return analyze


class SystemdAnalyzeTests(SynchronousTestCase):
    def setUp(self):
        self.program = _analyze()
        try:
            # verify checks that ExecStart= names an executable, so a real twistd.
            twistd = find_twistd(sys.executable)
        except ServiceError as e:
            raise SkipTest(str(e)) from None
        params = units.UnitParams(twistd=twistd)
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.dir, "aimx.service.d"))
        self.unit = self.write("aimx.service", units.systemd_unit(params))
        self.socket = self.write("aimx.socket", units.systemd_socket())
        self.write(os.path.join("aimx.service.d", "socket.conf"),
                   units.systemd_socket_dropin(params))

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def analyze(self, *argv: str):
        return run_program([self.program, "--no-pager", *argv], timeout=120)

    def test_verify(self):
        """systemd-analyze verify loads the unit, its socket and the drop-in silently."""
        done = self.analyze("verify", "--man=no", self.unit, self.socket)
        self.assertEqual((done.returncode, done.stdout, done.stderr), (0, "", ""))

    def test_exposure(self):
        """The unit, with the socket drop-in beside it, is rated at most MAX_EXPOSURE."""
        done = self.analyze("security", "--offline=yes", self.unit)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stderr, "")
        found = _EXPOSURE.search(done.stdout)
        self.assertIsNotNone(found, done.stdout[-500:])
        self.assertLessEqual(float(found.group(1)), MAX_EXPOSURE, done.stdout)

    def test_exposure_without_dropin(self):
        """The unit alone (as `aimx setup` installs it) is rated at most MAX_EXPOSURE too."""
        shutil.rmtree(os.path.join(self.dir, "aimx.service.d"))
        done = self.analyze("security", "--offline=yes", self.unit)
        found = _EXPOSURE.search(done.stdout)
        self.assertIsNotNone(found, done.stdout[-500:] + done.stderr)
        self.assertLessEqual(float(found.group(1)), MAX_EXPOSURE, done.stdout)


#: openrc-run's helpers that start_pre calls, then start_pre, then what it left.
_OPENRC_RUN = """\
checkpath() { :; }
ewarn() { echo "ewarn: $*" >&2; }
. "$1"
start_pre
echo "capabilities=${capabilities-UNSET}"
echo "supervise_daemon_args=${supervise_daemon_args-UNSET}"
"""

#: supervise-daemon stand-ins: C{--help} succeeds unless an option before it is
#: refused; the first argument must be the service name, as in OpenRC.
_SUPERVISE_DAEMON = """\
#!/bin/sh
[ "$1" = "$RC_SVCNAME" ] || exit 1
for arg in "$@"; do
    case "$arg" in
        --capabilities) [ -n "$CAPS" ] || { echo "Capabilities support not enabled" >&2; exit 1; } ;;
        --no-new-privs) [ -n "$NNP" ] || { echo "unrecognized option" >&2; exit 1; } ;;
    esac
done
"""


class OpenrcStartPreTests(SynchronousTestCase):
    def setUp(self):
        self.sh = shutil.which("sh")
        if self.sh is None:
            raise SkipTest("no sh")
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.script = os.path.join(self.dir, "aimx")
        with open(self.script, "w", encoding="utf-8") as f:
            f.write(units.openrc_script(units.UnitParams(twistd="/usr/bin/twistd")))
        fake = os.path.join(self.dir, "supervise-daemon")
        with open(fake, "w", encoding="utf-8") as f:
            f.write(_SUPERVISE_DAEMON)
        os.chmod(fake, 0o755)

    def start_pre(self, caps: bool, nnp: bool, **environ: str) -> tuple[dict, str]:
        env = {"PATH": f"{self.dir}:/usr/bin:/bin", "RC_SVCNAME": "aimx",
               "CAPS": "1" if caps else "", "NNP": "1" if nnp else "", **environ}
        done = run_program([self.sh, "-c", _OPENRC_RUN, "sh", self.script], environ=env,
                           timeout=60)
        self.assertEqual(done.returncode, 0, done.stderr)
        return dict(line.split("=", 1) for line in done.stdout.splitlines()), done.stderr

    def test_current_openrc(self):
        """OpenRC 0.52 and later with libcap: both kept, nothing to warn about."""
        found, warnings = self.start_pre(caps=True, nnp=True)
        self.assertEqual(found["capabilities"],
                         _capabilities(units.openrc_script(units.UnitParams(twistd="/x"))))
        self.assertEqual(found["supervise_daemon_args"], " --no-new-privs")
        self.assertEqual(warnings, "")

    def test_without_libcap(self):
        """OpenRC 0.45-0.51 without libcap (Debian 12): no capabilities, so the service
        starts; no new privileges still set."""
        found, warnings = self.start_pre(caps=False, nnp=True)
        self.assertEqual(found["capabilities"], "UNSET")
        self.assertEqual(found["supervise_daemon_args"], " --no-new-privs")
        self.assertIn("cannot limit capabilities", warnings)

    def test_before_045(self):
        """An OpenRC older than 0.45: neither option is passed."""
        found, warnings = self.start_pre(caps=False, nnp=False)
        self.assertEqual(found, {"capabilities": "UNSET", "supervise_daemon_args": "UNSET"})
        self.assertIn("cannot set no_new_privs", warnings)

    def test_operator_arguments_kept(self):
        """Arguments from /etc/conf.d/aimx (or their start-stop-daemon fallback) stay."""
        found, _ = self.start_pre(caps=True, nnp=True, start_stop_daemon_args="--nicelevel 5")
        # start_pre sees only what the script and conf.d set; the environment stands in.
        self.assertEqual(found["supervise_daemon_args"], "--nicelevel 5 --no-new-privs")


def _capabilities(script: str) -> str:
    [line] = [line for line in script.splitlines() if line.startswith("capabilities=")]
    return line.split("=", 1)[1].strip('"')
