"""Running real programs through the host seam (aimx.host.initsystem.run_program);
everything else in tests.test_initsystem runs on a fake runner.
"""

from twisted.trial.unittest import SynchronousTestCase

from aimx.host import initsystem


class RunProgramTests(SynchronousTestCase):
    def test_missing_program(self):
        """A program that does not exist is exit status 127, not an exception."""
        done = initsystem.run_program(["/nonexistent/aimx-test-program"])
        self.assertEqual(done.returncode, 127)
        self.assertIn("aimx-test-program", done.stderr)

    def test_captures(self):
        """Output and exit status of a real (harmless) program are captured."""
        done = initsystem.run_program(["sh", "-c", "echo out; echo err >&2; exit 3"])
        self.assertEqual((done.returncode, done.stdout, done.stderr), (3, "out\n", "err\n"))
