"""Init detection, service install/removal and log reading (aimx.host.initsystem).

Every test runs against a temporary root and a fake program runner
(L{aimx.testing.fakes.FakeRunner}): no real systemctl, rc-service or journalctl is
ever started.
"""

import datetime
import os
import stat

import attrs
from twisted.trial.unittest import SynchronousTestCase

from aimx.host import initsystem, logfile
from aimx.host.initsystem import System
from aimx.host.programs import Completed
from aimx.ops import logline, units
from aimx.testing.fakes import FakeRunner, FakeStreamer


def captured(runner: FakeRunner) -> list[bool]:
    """Whether each run captured its output."""
    return [options.get("capture", True) for options in runner.options]


PARAMS = units.UnitParams(twistd="/opt/aimx/bin/twistd")


class HostTestCase(SynchronousTestCase):
    def host(self, init, results=None) -> System:
        """A temporary root that looks like a host running C{init}."""
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        if init == initsystem.SYSTEMD:
            os.makedirs(os.path.join(self.root, "run/systemd/system"))
        elif init == initsystem.OPENRC:
            os.makedirs(os.path.join(self.root, "sbin"))
            open(os.path.join(self.root, "sbin/openrc"), "w").close()
        self.runner = FakeRunner(results or {}, default=Completed(0))
        return System(root=self.root, runner=self.runner)

    def under_root(self, path, text=None, mode=None):
        full = os.path.join(self.root, path.lstrip("/"))
        if text is not None:
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "w") as f:
                f.write(text)
        if mode is not None:
            os.chmod(full, mode)
        return full


class DetectTests(HostTestCase):
    def test_systemd_wins(self):
        """/run/systemd/system means systemd even when /sbin/openrc exists too."""
        system = self.host(initsystem.SYSTEMD)
        self.under_root("/sbin/openrc", "")
        self.assertEqual(initsystem.detect_init(system), initsystem.SYSTEMD)

    def test_openrc(self):
        """/sbin/openrc without /run/systemd/system means OpenRC."""
        self.assertEqual(initsystem.detect_init(self.host(initsystem.OPENRC)), initsystem.OPENRC)

    def test_unknown(self):
        """Neither marker: unknown."""
        self.assertEqual(initsystem.detect_init(self.host(None)), initsystem.UNKNOWN)


class RunningTests(HostTestCase):
    def test_systemd(self):
        """systemd: `systemctl is-active --quiet aimx` exit status decides."""
        system = self.host(initsystem.SYSTEMD)
        self.assertTrue(initsystem.is_running(system))
        self.assertEqual(self.runner.calls, [["systemctl", "is-active", "--quiet", "aimx"]])
        system = self.host(initsystem.SYSTEMD, {
            ("systemctl", "is-active", "--quiet", "aimx"): Completed(3)})
        self.assertFalse(initsystem.is_running(system))

    def test_openrc(self):
        """OpenRC: `rc-service aimx status` exit status decides."""
        system = self.host(initsystem.OPENRC, {("rc-service", "aimx", "status"): Completed(3)})
        self.assertFalse(initsystem.is_running(system))
        self.assertEqual(self.runner.calls, [["rc-service", "aimx", "status"]])

    def test_unknown(self):
        """Unknown init: not running, and nothing is run."""
        system = self.host(None)
        self.assertFalse(initsystem.is_running(system))
        self.assertEqual(self.runner.calls, [])


class InstallTests(HostTestCase):
    def test_systemd(self):
        """The unit is written 0644, then daemon-reload, enable, reset-failed, restart."""
        system = self.host(initsystem.SYSTEMD)
        self.assertEqual(initsystem.install(system, PARAMS), units.SYSTEMD_UNIT)
        path = self.under_root(units.SYSTEMD_UNIT)
        with open(path) as f:
            self.assertEqual(f.read(), units.systemd_unit(PARAMS))
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o644)
        self.assertEqual(self.runner.calls, [
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "aimx"],
            ["systemctl", "reset-failed", "aimx"],
            ["systemctl", "restart", "aimx"],
        ])

    def test_systemd_ignores_enable_failure(self):
        """Failures before the restart are ignored; a reinstall replaces the unit."""
        system = self.host(initsystem.SYSTEMD, {
            ("systemctl", "enable", "aimx"): Completed(1, "", "boom"),
            ("systemctl", "reset-failed", "aimx"): Completed(1)})
        self.under_root(units.SYSTEMD_UNIT, "old")
        initsystem.install(system, PARAMS)
        with open(self.under_root(units.SYSTEMD_UNIT)) as f:
            self.assertEqual(f.read(), units.systemd_unit(PARAMS))
        self.assertEqual(os.listdir(os.path.dirname(self.under_root(units.SYSTEMD_UNIT))),
                         ["aimx.service"])

    def test_restart_failure(self):
        """A failed restart is the error `Failed to restart aimx`."""
        system = self.host(initsystem.SYSTEMD, {
            ("systemctl", "restart", "aimx"): Completed(1, "", "Unit failed.\n")})
        e = self.assertRaises(initsystem.ServiceError, initsystem.install, system, PARAMS)
        self.assertEqual(str(e), "Failed to restart aimx: Unit failed.")

    def test_openrc(self):
        """The script is written executable, added to the default runlevel, restarted."""
        system = self.host(initsystem.OPENRC)
        self.assertEqual(initsystem.install(system, PARAMS), units.OPENRC_SCRIPT)
        path = self.under_root(units.OPENRC_SCRIPT)
        with open(path) as f:
            self.assertEqual(f.read(), units.openrc_script(PARAMS))
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o755)
        self.assertEqual(self.runner.calls, [
            ["rc-update", "add", "aimx", "default"],
            ["rc-service", "aimx", "restart"],
        ])

    def test_unknown(self):
        """Unknown init: the spec's error, nothing written or run."""
        system = self.host(None)
        e = self.assertRaises(initsystem.ServiceError, initsystem.install, system, PARAMS)
        self.assertEqual(
            str(e),
            "Could not detect init system (systemd or OpenRC). Start aimx serve manually.",
        )
        self.assertEqual(os.listdir(self.root), [])
        self.assertEqual(self.runner.calls, [])

    def test_unit_error_writes_nothing(self):
        """A path that cannot go into a unit fails before any file or command."""
        system = self.host(initsystem.SYSTEMD)
        params = units.UnitParams(twistd="/opt/aimx/bin/twistd", data_dir="relative")
        self.assertRaises(units.UnitError, initsystem.install, system, params)
        self.assertFalse(os.path.exists(self.under_root("/etc")))
        self.assertEqual(self.runner.calls, [])


class RemoveTests(HostTestCase):
    def test_systemd(self):
        """stop, disable, delete the unit, daemon-reload, reset-failed."""
        system = self.host(initsystem.SYSTEMD, {("systemctl", "stop", "aimx"): Completed(5)})
        path = self.under_root(units.SYSTEMD_UNIT, "unit")
        self.assertTrue(initsystem.remove(system))
        self.assertFalse(os.path.exists(path))
        self.assertEqual(self.runner.calls, [
            ["systemctl", "stop", "aimx"],
            ["systemctl", "disable", "aimx"],
            ["systemctl", "daemon-reload"],
            ["systemctl", "reset-failed", "aimx"],
        ])

    def test_openrc(self):
        """rc-service stop, rc-update del, delete the script."""
        system = self.host(initsystem.OPENRC)
        path = self.under_root(units.OPENRC_SCRIPT, "script")
        self.assertTrue(initsystem.remove(system))
        self.assertFalse(os.path.exists(path))
        self.assertEqual(self.runner.calls, [
            ["rc-service", "aimx", "stop"],
            ["rc-update", "del", "aimx", "default"],
        ])

    def test_absent(self):
        """No service file: nothing is run."""
        system = self.host(initsystem.SYSTEMD)
        self.assertFalse(initsystem.remove(system))
        self.assertEqual(self.runner.calls, [])

    def test_unknown(self):
        """Unknown init: an error naming both files to remove by hand."""
        e = self.assertRaises(initsystem.ServiceError, initsystem.remove, self.host(None))
        self.assertIn("/etc/systemd/system/aimx.service or /etc/init.d/aimx manually", str(e))

    def test_socket_stopped_files_kept(self):
        """Socket activation: aimx.socket is stopped and disabled before the service (it
        would start aimx again), its hand-installed files stay and are listed."""
        system = self.host(initsystem.SYSTEMD)
        self.under_root(units.SYSTEMD_UNIT, "unit")
        socket_unit = self.under_root(units.SYSTEMD_SOCKET, "socket")
        dropin = self.under_root(units.SYSTEMD_SOCKET_DROPIN, "dropin")
        self.assertTrue(initsystem.remove(system))
        self.assertEqual(self.runner.calls[:3], [
            ["systemctl", "stop", "aimx.socket"],
            ["systemctl", "disable", "aimx.socket"],
            ["systemctl", "stop", "aimx"],
        ])
        self.assertTrue(os.path.exists(socket_unit) and os.path.exists(dropin))
        self.assertEqual(initsystem.socket_files(system),
                         [units.SYSTEMD_SOCKET, units.SYSTEMD_SOCKET_DROPIN])

    def test_socket_without_unit(self):
        """A socket left without its unit is still stopped, so port 25 is freed."""
        system = self.host(initsystem.SYSTEMD)
        self.under_root(units.SYSTEMD_SOCKET, "socket")
        self.assertFalse(initsystem.remove(system))
        self.assertEqual(self.runner.calls, [
            ["systemctl", "stop", "aimx.socket"], ["systemctl", "disable", "aimx.socket"]])

    def test_no_socket_files(self):
        """Without socket activation there is nothing left by hand."""
        self.assertEqual(initsystem.socket_files(self.host(initsystem.SYSTEMD)), [])


def _quiet(directory, name):
    """No daemon answers (remove_runtime's probe, faked)."""
    return False


class RemoveRuntimeTests(HostTestCase):
    def test_stale_files_and_directory(self):
        """A crashed daemon's socket and pid file go, then the empty /run/aimx."""
        system = self.host(initsystem.OPENRC)
        pid = self.under_root("/run/aimx/aimx.pid", "42\n")
        os.mknod(os.path.join(os.path.dirname(pid), "aimx.sock"), stat.S_IFSOCK | 0o666)
        self.assertEqual(initsystem.remove_runtime(system, "/run/aimx", _quiet),
                         ["/run/aimx/aimx.sock", "/run/aimx/aimx.pid", "/run/aimx"])
        self.assertFalse(os.path.exists(os.path.dirname(pid)))

    def test_other_files_stay(self):
        """Anything aimx did not make stays, and so does the directory holding it; an
        aimx.pid that is a symlink, or an aimx.sock that is a file, is not aimx's either."""
        system = self.host(initsystem.OPENRC)
        other = self.under_root("/run/aimx/notes.txt", "mine")
        target = self.under_root("/etc/important", "x")
        os.symlink(target, self.under_root("/run/aimx/aimx.pid"))
        self.under_root("/run/aimx/aimx.sock", "a file")
        self.assertEqual(initsystem.remove_runtime(system, "/run/aimx", _quiet), [])
        self.assertTrue(os.path.exists(other))
        self.assertTrue(os.path.islink(self.under_root("/run/aimx/aimx.pid")))
        self.assertTrue(os.path.isfile(self.under_root("/run/aimx/aimx.sock")))
        self.assertTrue(os.path.exists(target))

    def test_directory_outside_run_stays(self):
        """A runtime dir outside /run was the operator's: emptied of aimx's files only."""
        system = self.host(initsystem.SYSTEMD)
        pid = self.under_root("/srv/aimx-run/aimx.pid", "42\n")
        self.assertEqual(initsystem.remove_runtime(system, "/srv/aimx-run", _quiet),
                         ["/srv/aimx-run/aimx.pid"])
        self.assertTrue(os.path.isdir(os.path.dirname(pid)))

    def test_nothing_there(self):
        """No runtime dir (systemd removed it when the service stopped): nothing to do."""
        self.assertEqual(
            initsystem.remove_runtime(self.host(initsystem.SYSTEMD), "/run/aimx", _quiet), [])

    def test_running_daemon(self):
        """A daemon still answering on the socket: an error, nothing deleted."""
        system = self.host(initsystem.OPENRC)
        pid = self.under_root("/run/aimx/aimx.pid", "42\n")
        asked = []

        def answers(directory, name):
            asked.append((directory, name))
            return True

        e = self.assertRaises(initsystem.ServiceError, initsystem.remove_runtime, system,
                              "/run/aimx", answers)
        self.assertEqual(str(e), "aimx still answers on /run/aimx/aimx.sock (not started by "
                                 "the service); stop it, then remove /run/aimx")
        self.assertEqual(asked, [(os.path.dirname(pid), "aimx.sock")])
        self.assertTrue(os.path.exists(pid))


SINCE = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.timezone.utc)
LOG = (
    "2026-06-01T11:00:00.000+00:00 info aimx.inbound: stored email mailbox=alice\n"
    "2026-06-01T12:00:00.000+00:00 err aimx.inbound: not stored mailbox=bob\n"
    "2026-06-01T12:00:01.000+00:00 notice aimx.trust: trust eval mailbox=alice "
    'sender="x mailbox=bob"\n'
    "2026-06-01T12:00:02.000+00:00 info aimx.hook: firing mailbox=alice\n"
)
JOURNAL = [
    "Jun 01 11:00:00 host twistd[7]: aimx.inbound: stored email mailbox=alice\n",
    "Jun 01 12:00:00 host twistd[7]: aimx.inbound: not stored mailbox=bob\n",
    'Jun 01 12:00:01 host twistd[7]: aimx.trust: trust eval mailbox=alice sender="x '
    'mailbox=bob"\n',
    "Jun 01 12:00:02 host twistd[7]: aimx.hook: firing mailbox=alice\n",
]


class Enough(Exception):
    """Raised by a test's writer to end a follow."""


class JournalCommandTests(SynchronousTestCase):
    def test_default(self):
        """The last N lines (spec acceptance 19's argv)."""
        self.assertEqual(initsystem.journal_command(50),
                         ["journalctl", "-u", "aimx", "-n", "50", "--no-pager"])

    def test_priority_since_follow(self):
        """-p as a number, --since as @<epoch>, -f last."""
        chosen = logline.Filter(priority=logline.NOTICE, since=SINCE, mailbox="alice")
        self.assertEqual(
            initsystem.journal_command(7, chosen, follow=True),
            ["journalctl", "-u", "aimx", "-n", "7", "--no-pager", "-p", "5",
             "--since", f"@{int(SINCE.timestamp())}", "-f"])

    def test_all_and_cursor(self):
        """No count: every line (-n all when following); after a cursor."""
        self.assertEqual(initsystem.journal_command(None),
                         ["journalctl", "-u", "aimx", "--no-pager"])
        self.assertEqual(initsystem.journal_command(None, follow=True, cursor="s=1;i=2"),
                         ["journalctl", "-u", "aimx", "-n", "all", "--no-pager",
                          "--after-cursor", "s=1;i=2", "-f"])


class TailTests(HostTestCase):
    def test_journalctl(self):
        """systemd: `journalctl -u aimx -n N --no-pager`, output returned as is."""
        system = self.host(initsystem.SYSTEMD, {
            ("journalctl", "-u", "aimx", "-n", "200", "--no-pager"): Completed(0, "a\nb")})
        self.assertEqual(initsystem.tail_log(system, 200), "a\nb")
        self.assertEqual(captured(self.runner), [True])

    def test_journalctl_priority_since(self):
        """--priority and --since are journalctl's -p and --since."""
        system = self.host(initsystem.SYSTEMD)
        initsystem.tail_log(system, 5, logline.Filter(priority=3, since=SINCE))
        self.assertEqual(self.runner.calls, [[
            "journalctl", "-u", "aimx", "-n", "5", "--no-pager", "-p", "3",
            "--since", f"@{int(SINCE.timestamp())}"]])

    def test_journalctl_mailbox(self):
        """--mailbox: every line journalctl shows, aimx keeps the last N with the field
        (a quoted mailbox= inside a value is not one)."""
        system = self.host(initsystem.SYSTEMD, {
            ("journalctl", "-u", "aimx", "--no-pager", "-p", "6"): Completed(0, "".join(JOURNAL))})
        chosen = logline.Filter(priority=6, mailbox="alice")
        self.assertEqual(initsystem.tail_log(system, 2, chosen), "".join(JOURNAL[2:]))
        self.assertEqual(initsystem.tail_log(system, 9, logline.Filter(priority=6,
                                                                       mailbox="bob")),
                         JOURNAL[1])

    def test_journalctl_failure(self):
        """A failing journalctl is an error carrying its stderr."""
        system = self.host(initsystem.SYSTEMD, {
            ("journalctl", "-u", "aimx", "-n", "50", "--no-pager"):
                Completed(1, "", "No journal files were found.\n")})
        e = self.assertRaises(initsystem.ServiceError, initsystem.tail_log, system, 50)
        self.assertEqual(str(e), "journalctl exited non-zero: No journal files were found.")

    def test_openrc_log_files(self):
        """OpenRC: the /var/log/aimx/*.log files in name order, last N lines."""
        system = self.host(initsystem.OPENRC)
        self.under_root("/var/log/aimx/aimx.log", "1\n2\n3\n")
        self.under_root("/var/log/aimx/b.log", "4\n5")
        self.under_root("/var/log/aimx/other.txt", "ignored\n")
        self.under_root("/var/log/messages", "syslog\n")
        self.assertEqual(initsystem.tail_log(system, 3), "3\n4\n5\n")
        self.assertEqual(initsystem.tail_log(system, 0), "")
        self.assertEqual(initsystem.tail_log(system, 100), "1\n2\n3\n4\n5\n")
        self.assertEqual(self.runner.calls, [])

    def test_openrc_filtered(self):
        """OpenRC: the file's lines filtered by aimx, then the last N."""
        system = self.host(initsystem.OPENRC)
        self.under_root("/var/log/aimx/aimx.log", LOG)
        lines = LOG.splitlines(keepends=True)
        chosen = logline.Filter(priority=logline.NOTICE, mailbox="alice")
        self.assertEqual(initsystem.tail_log(system, 5, chosen), lines[2])
        self.assertEqual(initsystem.tail_log(system, 1, logline.Filter(since=SINCE)), lines[3])

    def test_openrc_messages(self):
        """OpenRC without aimx log files: /var/log/messages."""
        system = self.host(initsystem.OPENRC)
        self.under_root("/var/log/messages", "x\ny\nz\n")
        self.assertEqual(initsystem.tail_log(system, 2), "y\nz\n")

    def test_openrc_no_source(self):
        """OpenRC with neither source: `no log source found`."""
        e = self.assertRaises(
            initsystem.ServiceError, initsystem.tail_log, self.host(initsystem.OPENRC), 5
        )
        self.assertEqual(
            str(e),
            "no log source found for unit 'aimx': checked /var/log/aimx and /var/log/messages",
        )

    def test_unknown(self):
        """Unknown init: no log source."""
        e = self.assertRaises(initsystem.ServiceError, initsystem.tail_log, self.host(None), 5)
        self.assertIn("could not detect init system", str(e))


class TailFileTests(SynchronousTestCase):
    """A log file of its own (the demo's), read from its end."""

    def write(self, data: bytes) -> str:
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_last_lines(self):
        """The last N lines; all of a shorter file; none for 0; a last line without LF."""
        path = self.write(b"1\n2\n3\n4\n5")
        self.assertEqual(initsystem.tail_file(path, 2), "4\n5\n")
        self.assertEqual(initsystem.tail_file(path, 100), "1\n2\n3\n4\n5\n")
        self.assertEqual(initsystem.tail_file(path, 0), "")
        self.assertEqual(initsystem.tail_file(self.write(b""), 5), "")

    def test_many_blocks(self):
        """A log longer than one read block: the lines asked for, whole, none cut by a
        block boundary."""
        lines = [f"line {i:07d} " + "x" * 50 + "\n" for i in range(20000)]
        path = self.write("".join(lines).encode())
        self.assertGreater(os.path.getsize(path), 10 * logfile._TAIL_BLOCK)
        self.assertEqual(initsystem.tail_file(path, 3), "".join(lines[-3:]))
        self.assertEqual(initsystem.tail_file(path, 2000), "".join(lines[-2000:]))
        self.assertEqual(initsystem.tail_file(path, 20000), "".join(lines))

    def test_filtered(self):
        """--priority, --since and --mailbox on the file's lines, then the last N."""
        path = self.write(LOG.encode())
        lines = LOG.splitlines(keepends=True)
        self.assertEqual(initsystem.tail_file(path, 9, logline.Filter(mailbox="alice")),
                         lines[0] + lines[2] + lines[3])
        self.assertEqual(initsystem.tail_file(path, 1, logline.Filter(mailbox="alice")),
                         lines[3])
        self.assertEqual(initsystem.tail_file(path, 9, logline.Filter(priority=3)), lines[1])
        self.assertEqual(initsystem.tail_file(path, 9, logline.Filter(since=SINCE)),
                         "".join(lines[1:]))

    def test_undecodable(self):
        """Bytes that are not UTF-8 are replaced, not an error."""
        self.assertEqual(initsystem.tail_file(self.write(b"a\xff\n"), 1), "a\ufffd\n")

    def test_missing(self):
        """A log that cannot be read is an error naming it."""
        path = os.path.abspath(self.mktemp())
        e = self.assertRaises(initsystem.ServiceError, initsystem.tail_file, path, 5)
        self.assertEqual(str(e), f"cannot read the log {path}: No such file or directory")


class FollowTests(HostTestCase):
    def streamed(self, lines=(), status=0) -> System:
        system = self.host(initsystem.SYSTEMD)
        self.streamer = FakeStreamer(lines, status)
        return attrs.evolve(system, streamer=self.streamer)

    def test_systemd(self):
        """systemd: `journalctl ... -f` on the terminal (not captured), -n, -p and
        --since passed."""
        system = self.host(initsystem.SYSTEMD)
        initsystem.follow_log(system, 10, self.fail, logline.Filter(priority=4, since=SINCE))
        self.assertEqual(self.runner.calls, [[
            "journalctl", "-u", "aimx", "-n", "10", "--no-pager", "-p", "4",
            "--since", f"@{int(SINCE.timestamp())}", "-f"]])
        self.assertEqual(captured(self.runner), [False])

    def test_failure(self):
        """journalctl exiting non-zero is an error."""
        system = self.host(initsystem.SYSTEMD, {"journalctl": Completed(1)})
        self.assertRaises(initsystem.ServiceError, initsystem.follow_log, system, 5, self.fail)

    def test_systemd_mailbox(self):
        """--mailbox: the last N lines with the field, then journalctl -f after the last
        entry's cursor, each line it writes filtered by aimx."""
        system = self.streamed(JOURNAL)
        self.runner.answers[("journalctl", "-u", "aimx", "--no-pager", "-p", "6",
                             "--show-cursor")] = Completed(0, "".join(JOURNAL)
                                                           + "-- cursor: s=ab;i=12\n")
        written = []
        initsystem.follow_log(system, 1, written.append,
                              logline.Filter(priority=6, mailbox="alice"))
        self.assertEqual(self.streamer.calls, [[
            "journalctl", "-u", "aimx", "-n", "all", "--no-pager", "-p", "6",
            "--after-cursor", "s=ab;i=12", "-f"]])
        self.assertEqual(written, [JOURNAL[3], JOURNAL[0], JOURNAL[2], JOURNAL[3]])

    def test_systemd_mailbox_empty_journal(self):
        """No entry yet (no cursor): follow from now on."""
        system = self.streamed()
        initsystem.follow_log(system, 5, lambda text: None, logline.Filter(mailbox="a"))
        self.assertEqual(self.streamer.calls, [[
            "journalctl", "-u", "aimx", "-n", "0", "--no-pager", "-f"]])

    def test_systemd_mailbox_failure(self):
        """The followed journalctl exiting non-zero is an error."""
        system = self.streamed(status=1)
        self.assertRaises(initsystem.ServiceError, initsystem.follow_log, system, 5,
                          lambda text: None, logline.Filter(mailbox="a"))

    def test_openrc_file(self):
        """OpenRC: aimx's own log file, its last lines, then each one added."""
        system = self.host(initsystem.OPENRC)
        path = self.under_root(units.OPENRC_LOG, LOG)
        written = []

        def write(text):
            written.append(text)
            if len(written) == 1:  # the tail: now the daemon logs two more lines
                with open(path, "a") as f:
                    f.write("2026-06-01T13:00:00.000+00:00 info aimx.hook: firing mailbox=bob\n"
                            "2026-06-01T13:00:01.000+00:00 info aimx.hook: firing mailbox=alice\n")
            else:
                raise Enough()

        self.assertRaises(Enough, initsystem.follow_log, system, 1, write,
                          logline.Filter(mailbox="alice"))
        self.assertEqual(written, [LOG.splitlines(keepends=True)[3],
                                   "2026-06-01T13:00:01.000+00:00 info aimx.hook: firing "
                                   "mailbox=alice\n"])

    def test_openrc_no_file(self):
        """OpenRC without aimx's log file: an error naming it."""
        system = self.host(initsystem.OPENRC)
        e = self.assertRaises(initsystem.ServiceError, initsystem.follow_log, system, 5,
                              self.fail)
        self.assertIn("cannot read the log", str(e))
        self.assertIn("/var/log/aimx/aimx.log", str(e))

    def test_unknown(self):
        """Unknown init: nothing to follow."""
        e = self.assertRaises(initsystem.ServiceError, initsystem.follow_log, self.host(None),
                              5, self.fail)
        self.assertIn("could not detect init system", str(e))


class FindTwistdTests(SynchronousTestCase):
    def setUp(self):
        self.bin = os.path.abspath(self.mktemp())
        os.makedirs(self.bin)
        self.python = os.path.join(self.bin, "python")

    def executable(self, name):
        path = os.path.join(self.bin, name)
        with open(path, "w") as f:
            f.write("#!/bin/sh\n")
        os.chmod(path, 0o755)
        return path

    def test_beside_interpreter(self):
        """twistd next to the interpreter wins over PATH, canonicalised."""
        real = self.executable("twistd-real")
        os.symlink(real, os.path.join(self.bin, "twistd"))
        found = initsystem.find_twistd(self.python, which=lambda name: "/usr/bin/twistd")
        self.assertEqual(found, real)

    def test_path(self):
        """Otherwise the twistd on PATH."""
        other = self.executable("elsewhere")
        self.assertEqual(initsystem.find_twistd(self.python, which=lambda name: other), other)

    def test_none(self):
        """No twistd anywhere: an error, so no unit points at a missing program."""
        e = self.assertRaises(
            initsystem.ServiceError, initsystem.find_twistd, self.python, which=lambda name: None
        )
        self.assertIn("cannot find twistd", str(e))
