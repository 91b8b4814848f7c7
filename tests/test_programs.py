"""The one program runner without starting anything: a program not on the given PATH, a
timeout (real programs are run in tests.integration.test_programs)."""

import subprocess

from twisted.trial.unittest import SynchronousTestCase

from aimx.host import programs


class OwnEnvironmentTests(SynchronousTestCase):
    """With an environment of its own: its PATH, its variables, no stdin."""

    def test_not_on_its_path(self):
        """Not on the given PATH (though maybe on ours): 127, saying so."""
        done = programs.run_program(["sh", "-c", "true"], environ={"PATH": self.mktemp()})
        self.assertEqual((done.returncode, done.stderr), (programs.NOT_RUN, "sh: not found"))

    def test_timeout(self):
        """A program past its timeout (killed by subprocess.run) is -9, and stderr says why."""
        calls = []

        def run(argv, **kwargs):
            calls.append(kwargs["timeout"])
            raise subprocess.TimeoutExpired(argv, kwargs["timeout"])

        self.patch(subprocess, "run", run)
        done = programs.run_program(["sh"], environ={"PATH": "/bin:/usr/bin"}, timeout=120)
        self.assertEqual((calls, done.returncode, done.stderr), ([120], -9, "timed out after 120s"))
