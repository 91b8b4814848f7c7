"""The one program runner (aimx.host.programs) with real (harmless) programs."""

import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from aimx.host import programs


class RunProgramTests(SynchronousTestCase):
    def test_missing_program(self):
        """A program that does not exist is exit status 127, not an exception."""
        done = programs.run_program(["/nonexistent/aimx-test-program"])
        self.assertEqual(done.returncode, 127)
        self.assertIn("aimx-test-program", done.stderr)

    def test_captures(self):
        """Output and exit status of a real (harmless) program are captured."""
        done = programs.run_program(["sh", "-c", "echo out; echo err >&2; exit 3"])
        self.assertEqual((done.returncode, done.stdout, done.stderr), (3, "out\n", "err\n"))


class StreamProgramTests(SynchronousTestCase):
    def test_lines_as_they_come(self):
        """Each line of its output, with its end, then its exit status."""
        lines = []
        status = programs.stream_program(["sh", "-c", "echo a; printf 'b\\nc'; exit 4"],
                                         lines.append)
        self.assertEqual((status, lines), (4, ["a\n", "b\n", "c"]))

    def test_missing_program(self):
        """A program that does not exist is exit status 127, not an exception."""
        self.assertEqual(programs.stream_program(["/nonexistent/aimx-x"], self.fail), 127)

    def test_interrupted(self):
        """An exception from the reader (Ctrl-C) kills the program and is raised."""

        def interrupt(line):
            raise KeyboardInterrupt

        self.assertRaises(KeyboardInterrupt, programs.stream_program,
                          ["sh", "-c", "echo a; exec sleep 60"], interrupt)


class OwnEnvironmentTests(SynchronousTestCase):
    """With an environment of its own: its PATH, its variables, no stdin."""

    def program(self, script: str) -> dict:
        bindir = os.path.abspath(self.mktemp())
        os.makedirs(bindir)
        path = os.path.join(bindir, "tool")
        with open(path, "w") as f:
            f.write("#!/bin/sh\n" + script)
        os.chmod(path, stat.S_IRWXU)
        return {"PATH": bindir, "ONLY": "this"}

    def test_found_on_its_path(self):
        """argv[0] is looked up on the given PATH; the program sees only that environment."""
        environ = self.program('echo "$ONLY $HOME $1"; read line || echo "no stdin" >&2\n')
        done = programs.run_program(["tool", "arg"], environ=environ)
        self.assertEqual((done.returncode, done.stdout, done.stderr),
                         (0, "this  arg\n", "no stdin\n"))
