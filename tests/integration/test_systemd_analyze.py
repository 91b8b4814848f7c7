"""The rendered systemd files checked by systemd's own tools (aimx.ops.units).

C{systemd-analyze verify} loads aimx.service, aimx.socket and the socket drop-in
and must have nothing to say; C{systemd-analyze security --offline=yes} rates the
unit's exposure, which must stay at most L{MAX_EXPOSURE} (the shipped unit
before the sandbox: 9.6 UNSAFE).  Neither needs systemd running, only its
C{systemd-analyze} (250 or later for C{--offline}); without it the tests are
skipped with the reason.
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
