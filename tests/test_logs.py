"""Tests for L{aimx.logs}: events as one line each, their priorities, the observer."""

import ast
import datetime
import io
import os

from twisted.scripts.twistd import ServerOptions
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, LogPublisher, Logger as TwistedLogger
from twisted.trial.unittest import SynchronousTestCase

import aimx
from aimx import logs
from aimx.ops import logline

UTC = datetime.timezone.utc
#: The namespaces docs/logging.md lists.
NAMESPACES = {"aimx.webhook", "aimx.daemon", "aimx.config", "aimx.smtp", "aimx.inbound", "aimx.trust",
              "aimx.hook", "aimx.send", "aimx.held", "aimx.control", "aimx.index",
              "aimx.dkim", "aimx.verifier", "aimx.audit"}


class _Events(SynchronousTestCase):
    def setUp(self):
        self.publisher = LogPublisher()
        self.events = EventLoggingObserver()
        self.publisher.addObserver(self.events)
        self.log = logs.Logger(namespace="aimx.test", observer=self.publisher)

    def line(self, journal=True) -> str:
        return logs.event_line(self.events[-1], journal, UTC)


class PriorityTests(_Events):
    def test_levels(self):
        """debug 7, info 6, warn 4, error 3, critical 2, notice 5."""
        self.log.debug("d")
        self.log.info("i")
        self.log.notice("n")
        self.log.warn("w")
        self.log.error("e")
        self.log.critical("c")
        self.assertEqual([logs.priority_of(e) for e in self.events], [7, 6, 5, 4, 3, 2])

    def test_notice_is_info_for_twisted(self):
        """A notice is an info event to Twisted's own filters."""
        self.log.notice("refused")
        self.assertIs(self.events[0]["log_level"], LogLevel.info)

    def test_failure_is_an_error(self):
        """log.failure logs at error (err), not critical."""
        try:
            1 / 0
        except ZeroDivisionError:
            self.log.failure("boom")
        self.assertIs(self.events[0]["log_level"], LogLevel.error)
        self.assertTrue(self.line().startswith("<3>aimx.test: boom "))


class EventLineTests(_Events):
    def test_fields_in_order(self):
        """An aimx event: its constant message, then its fields as key=value."""
        self.log.info("stored email", id="2026-x", mailbox="alice", attachments=0)
        self.assertEqual(self.line(), "<6>aimx.test: stored email id=2026-x mailbox=alice "
                                      "attachments=0")

    def test_file_form(self):
        """Not the journal: the time and the priority's name first."""
        self.log.warn("slow", duration_ms=6000)
        self.events[-1]["log_time"] = 1780000000.5
        self.assertEqual(self.line(journal=False),
                         "2026-05-28T20:26:40.500+00:00 warning aimx.test: slow duration_ms=6000")

    def test_hostile_values(self):
        """Network text cannot forge a line, a field or a priority."""
        self.log.notice("RCPT refused", rcpt="a@x\r\n<3>aimx.inbound: stored email id=forged",
                        helo='x" mailbox=root "', mailbox="alice")
        line = self.line()
        self.assertNotIn("\n", line)
        read = logline.read(line)
        self.assertEqual((read.priority, read.namespace, read.fields["mailbox"]),
                         (logline.NOTICE, "aimx.test", "alice"))
        self.assertEqual(read.fields["rcpt"], "a@x\r\n<3>aimx.inbound: stored email id=forged")

    def test_failure_folded(self):
        """A failure is one line: its exception and its traceback, escaped."""
        try:
            raise ValueError("bad header\r\n<3>aimx.inbound: stored email id=forged")
        except ValueError:
            self.log.failure("parse failed", mailbox="alice")
        line = self.line()
        self.assertNotIn("\n", line)
        read = logline.read(line)
        self.assertEqual(read.fields["exception"],
                         "ValueError: bad header\r\n<3>aimx.inbound: stored email id=forged")
        self.assertTrue(read.fields["traceback"].startswith("Traceback"))
        self.assertIn('raise ValueError("bad header', read.fields["traceback"])
        self.assertEqual(read.fields["mailbox"], "alice")

    def test_foreign_event(self):
        """Another library's event: its formatted text (quoted when it holds =), no
        fields of its own."""
        log = TwistedLogger(namespace="twisted.internet.tcp", observer=self.publisher)
        log.info("Starting factory {factory!r}", factory="F")
        self.assertEqual(self.line(), "<6>twisted.internet.tcp: Starting factory 'F'")
        log.info("{text}", text="x=1\ny")
        self.assertEqual(self.line(), '<6>twisted.internet.tcp: "x=1\\ny"')

    def test_legacy_event(self):
        """An event of twisted.python.log.msg is in namespace twisted."""
        event = {"log_namespace": "log_legacy", "log_level": LogLevel.info,
                 "log_format": "{log_text}", "log_text": "Port starting on 25",
                 "log_time": 0.0, "system": "-"}
        self.assertEqual(logs.event_line(event, True), "<6>twisted: Port starting on 25")

    def test_legacy_keys_left_out(self):
        """Keys a legacy observer adds to the shared event are not fields."""
        self.log.info("m", mailbox="a")
        self.events[-1].update(message=(), time=1.0, system="-", format="%(x)s", isError=0)
        self.assertEqual(self.line(), "<6>aimx.test: m mailbox=a")


class ObserverTests(SynchronousTestCase):
    def test_one_line_each_never_failing(self):
        """Each event is written as a line; text that cannot be encoded is escaped."""
        out = io.BytesIO()
        observer = logs.LineObserver(out, journal=True)
        log = logs.Logger(namespace="aimx.test", observer=observer)
        log.info("a", name="surrogate \udcff")
        log.info("b")
        self.assertEqual(out.getvalue(), b'<6>aimx.test: a name="surrogate \\udcff"\n'
                                         b"<6>aimx.test: b\n")

    def test_journal_stream(self):
        """JOURNAL_STREAM names the stream by device and inode; anything else is not it."""
        path = self.mktemp()
        with open(path, "w") as f:
            st = os.fstat(f.fileno())
            right = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
            self.assertTrue(logs.is_journal(f.fileno(), right))
            self.assertTrue(logs.observer(f, right).journal)
            self.assertFalse(logs.observer(f, {}).journal)
            for value in (f"{st.st_dev}:{st.st_ino + 1}", "", "1", "a:b", f"{st.st_dev}:"):
                self.assertFalse(logs.is_journal(f.fileno(), {"JOURNAL_STREAM": value}))

    def test_file_form_written(self):
        """Off the journal, the observer writes the time first."""
        path = self.mktemp()
        with open(path, "w") as f:
            log = logs.Logger(namespace="aimx.test", observer=logs.observer(f, {}))
            log.error("x")
        with open(path) as f:
            line = logline.read(f.read().rstrip("\n"))
        self.assertEqual((line.priority, line.namespace), (logline.ERR, "aimx.test"))
        self.assertIsNotNone(line.time)


class TwistdTests(SynchronousTestCase):
    def test_twistd_aimx_logs_through_us(self):
        """`twistd aimx` gets aimx's observer as its --logger."""
        options = ServerOptions()
        options.parseOptions(["--nodaemon", "aimx", "--bind", "127.0.0.1:0"])
        self.assertIs(options["logger"], logs.observer)

    def test_operator_choice_kept(self):
        """A --logfile or --logger on twistd's command line is kept."""
        options = ServerOptions()
        options.parseOptions(["--nodaemon", "--logfile", "x.log", "aimx"])
        self.assertIsNone(options["logger"])
        options = ServerOptions()
        options.parseOptions(["--nodaemon", "--logger", "twisted.logger.textFileLogObserver",
                              "aimx"])
        self.assertEqual(options["logger"].__name__, "textFileLogObserver")


def _log_calls():
    """C{(path, line, call)} for every logging call in aimx's code."""
    root = os.path.dirname(aimx.__file__)
    for folder, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in ("debug", "info", "notice", "warn", "error",
                                               "failure", "critical")
                        and "log" in ast.unparse(node.func.value).lower()):
                    yield os.path.relpath(path, root), node.lineno, node


class CallSiteTests(SynchronousTestCase):
    def test_constant_messages(self):
        """Every message is a constant without placeholders or '='; values go in fields,
        never under a key a legacy observer adds."""
        wrong = []
        for path, line, call in _log_calls():
            message = call.args[0] if call.args else None
            if isinstance(message, ast.Constant) and isinstance(message.value, str):
                if "{" in message.value or "=" in message.value:
                    wrong.append(f"{path}:{line}: {message.value!r}")
            elif not (isinstance(message, ast.Attribute) and message.attr == "LISTENING"):
                wrong.append(f"{path}:{line}: message is not a constant")
            for keyword in call.keywords:
                if keyword.arg in logs._LEGACY:
                    wrong.append(f"{path}:{line}: field {keyword.arg}")
        self.assertEqual(wrong, [])

    def test_known_namespaces(self):
        """Every logger of aimx is in one of the namespaces docs/logging.md lists."""
        used = set()
        root = os.path.dirname(aimx.__file__)
        for folder, _, files in os.walk(root):
            for name in files:
                if name.endswith(".py"):
                    with open(os.path.join(folder, name), encoding="utf-8") as f:
                        tree = ast.parse(f.read())
                    for node in ast.walk(tree):
                        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith(
                                "Logger"):
                            [keyword] = [k for k in node.keywords if k.arg == "namespace"]
                            used.add(keyword.value.value)
        self.assertEqual(used - NAMESPACES, set())
        with open(os.path.join(os.path.dirname(root), "docs", "logging.md")) as f:
            doc = f.read()
        self.assertEqual({n for n in NAMESPACES if f"`{n}`" not in doc}, set())
