"""What `aimx uninstall` does with a real control socket (aimx.host.initsystem.remove_runtime).

A daemon that still answers on its socket keeps its runtime files; a socket
nobody listens on any more (a crash) is deleted with the pid file and the empty
runtime dir.  The socket is bound through its directory's descriptor: trial's
paths are longer than a socket address.
"""

import os
import socket

from twisted.trial.unittest import SynchronousTestCase

from aimx.host import initsystem


class RuntimeFilesTests(SynchronousTestCase):
    def setUp(self):
        self.root = os.path.abspath(self.mktemp())
        self.runtime = os.path.join(self.root, "run", "aimx")
        os.makedirs(self.runtime)
        with open(os.path.join(self.runtime, "aimx.pid"), "w") as f:
            f.write("42\n")
        self.system = initsystem.System(root=self.root, runner=None)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(self.listener.close)
        dir_fd = os.open(self.runtime, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self.listener.bind(f"/proc/self/fd/{dir_fd}/aimx.sock")
        finally:
            os.close(dir_fd)

    def test_running_daemon_keeps_them(self):
        """Something listening on aimx.sock: an error, and every file stays."""
        self.listener.listen(1)
        self.assertRaises(initsystem.ServiceError, initsystem.remove_runtime, self.system,
                          "/run/aimx")
        self.assertEqual(sorted(os.listdir(self.runtime)), ["aimx.pid", "aimx.sock"])

    def test_stale_socket_removed(self):
        """A socket file nobody listens on: it, the pid file and the directory go."""
        self.listener.close()
        self.assertEqual(initsystem.remove_runtime(self.system, "/run/aimx"),
                         ["/run/aimx/aimx.sock", "/run/aimx/aimx.pid", "/run/aimx"])
        self.assertFalse(os.path.exists(self.runtime))
