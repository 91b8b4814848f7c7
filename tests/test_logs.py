"""Tests for L{aimx.logs}: log values that cannot forge or garble a line."""

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogPublisher, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from aimx import logs


class EscapeTests(SynchronousTestCase):
    def test_controls(self):
        """NUL, CR, LF, ESC, DEL, C1, line separators and bidi overrides are escaped."""
        self.assertEqual(logs.escape("a\r\nb\x00c\x1b[31md\x7f\x85"),
                         "a\\r\\nb\\x00c\\x1b[31md\\x7f\\x85")
        self.assertEqual(logs.escape("x\u2028y\u202ez\u2066"), "x\\u2028y\\u202ez\\u2066")

    def test_plain_text_untouched(self):
        """Ordinary text, non-ASCII letters included, stays as it is."""
        for text in ("alice@example.com", "Jörg <jörg@bücher.de>", "日本語", "a\\nb"):
            self.assertEqual(logs.escape(text), text)


class LoggerTests(SynchronousTestCase):
    def setUp(self):
        self.publisher = LogPublisher()
        self.events = EventLoggingObserver()
        self.publisher.addObserver(self.events)
        self.log = logs.Logger(namespace="aimx.test", observer=self.publisher)

    def test_values_escaped(self):
        """A forged log line in a value stays on one line; exceptions too."""
        self.log.info("rcpt={rcpt} error={error} n={n}",
                      rcpt="a@x\r\n2026-12-07 [aimx.ingest] stored email id=forged",
                      error=ValueError("bad\x1b]0;title\x07"), n=3)
        [event] = self.events
        text = formatEvent(event)
        self.assertNotIn("\n", text)
        self.assertNotIn("\x1b", text)
        self.assertIn("a@x\\r\\n2026-12-07", text)
        self.assertIn("n=3", text)

    def test_failure_kept(self):
        """log.failure still carries the failure for the traceback."""
        try:
            1 / 0
        except ZeroDivisionError:
            self.log.failure("boom {what}", what="x\ny")
        [event] = self.events
        self.assertTrue(event["log_failure"].check(ZeroDivisionError))
        self.assertEqual(event["what"], "x\\ny")


class FailureEscapeTests(SynchronousTestCase):
    def test_exception_text_escaped(self):
        """A failure whose exception text holds a line break is logged on one line;
        its type still matches."""
        publisher = LogPublisher()
        events = EventLoggingObserver()
        publisher.addObserver(events)
        log = logs.Logger(namespace="aimx.test", observer=publisher)
        try:
            raise ValueError("bad header\r\n2026-12-07 [aimx.ingest] stored email id=forged")
        except ValueError:
            log.failure("parse failed")
        [event] = events
        failure = event["log_failure"]
        self.assertTrue(failure.check(ValueError))
        self.assertIn("bad header\\r\\n2026-12-07", failure.getTraceback())
        self.assertNotIn("\r\n2026-12-07", failure.getTraceback())
