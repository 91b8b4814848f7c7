"""Tests for L{aimx.ops.logline}: one event, one line, read back as written."""

import datetime

from twisted.trial.unittest import SynchronousTestCase

from aimx.ops import logline

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 6, 1, 12, 30, 0, tzinfo=datetime.timezone(
    datetime.timedelta(hours=2)))
#: Values an attacker chooses: a subject, an address, a hook's stderr.
HOSTILE = [
    "a\r\n<3>aimx.smtp: forged mailbox=root",
    "x\ny",
    "\x00nul",
    "<3>at the start",
    "mailbox=root",
    'quote " inside',
    'end\\',
    "\\\"",
    "tab\there",
    "\x1b[31mred\x1b[0m",
    "\x85next line (C1)",
    "line\u2028separator\u2029para",
    "bidi\u202eevil\u2066",
    "non-ASCII Jörg <jörg@bücher.de> 日本語",
    "",
    " ",
    "=",
    "k=v k2=v2",
    '"',
    '"quoted" mailbox=root "',
]


class RenderTests(SynchronousTestCase):
    def test_journal_form(self):
        """<N>, the namespace, the message, the fields; no time."""
        line = logline.render(logline.NOTICE, "aimx.smtp", "RCPT refused",
                              [("peer", "203.0.113.9"), ("rcpt", "x@y"), ("n", 3)])
        self.assertEqual(line, "<5>aimx.smtp: RCPT refused peer=203.0.113.9 rcpt=x@y n=3")

    def test_file_form(self):
        """The time to the millisecond with its offset, the priority's name."""
        line = logline.render(logline.ERR, "aimx.inbound", "not stored", [("rcpt", "a@b")],
                              time=NOW)
        self.assertEqual(line, "2026-06-01T12:30:00.000+02:00 err aimx.inbound: not stored "
                               "rcpt=a@b")

    def test_values(self):
        """Booleans, numbers, None and sequences as text."""
        line = logline.render(logline.INFO, "aimx.x", "m", [
            ("t", True), ("f", False), ("i", -1), ("x", 1.5), ("none", None),
            ("rcpts", ("a@x", "b@y")), ("exc", ValueError("bad thing"))])
        self.assertEqual(line, '<6>aimx.x: m t=true f=false i=-1 x=1.5 none="" rcpts=a@x,b@y '
                               'exc="bad thing"')

    def test_hostile_values_stay_in_their_field(self):
        """No value can end the line, add a field or a priority; each reads back whole."""
        for value in HOSTILE:
            for time in (None, NOW):
                line = logline.render(logline.INFO, "aimx.smtp", "received",
                                      [("rcpt", value), ("mailbox", "alice")], time)
                self.assertNotRegex(line, "[\x00-\x1f\x7f-\x9f\u2028\u2029]")
                self.assertEqual(line.count("\n"), 0)
                read = logline.read(line)
                self.assertEqual(read.fields, {"rcpt": value, "mailbox": "alice"}, line)
                self.assertEqual((read.priority, read.namespace, read.message),
                                 (logline.INFO, "aimx.smtp", "received"))

    def test_hostile_message(self):
        """A message (another program's text) is quoted when it holds = or a control."""
        for text in HOSTILE:
            line = logline.render(logline.INFO, "twisted", text, [("mailbox", "alice")])
            read = logline.read(line)
            self.assertEqual((read.message, read.fields), (text, {"mailbox": "alice"}))
        self.assertEqual(logline.render(6, "twisted", "Starting factory <F>", []),
                         "<6>twisted: Starting factory <F>")

    def test_hostile_namespace_and_key(self):
        """A namespace or key that is not a name is made one."""
        line = logline.render(6, "a b\n<3>c", "m", [("k y\n", "v"), ("1x", "w")])
        self.assertEqual(line, "<6>a_b__3_c: m _k_y_=v _1x=w")

    def test_long_value_cut(self):
        """Past MAX_VALUE escaped characters a value keeps its start and end."""
        value = "h" * 1000 + "m" * 1000 + "t" * 1000
        line = logline.render(6, "aimx.hook", "hook result", [("stderr_tail", value)])
        tail = logline.fields(line)["stderr_tail"]
        self.assertEqual(tail, "h" * 510 + "..." + "t" * 510)
        self.assertEqual(len(line.split("=", 1)[1]), logline.MAX_VALUE + 1)

    def test_long_escaped_value_cut_between_escapes(self):
        """A value of controls is cut on escape boundaries: it reads back as its own
        start and end."""
        value = "\x00" * 5000
        line = logline.render(6, "aimx.hook", "m", [("v", value), ("after", "x")])
        read = logline.read(line)
        self.assertEqual(read.fields["after"], "x")
        head, _, tail = read.fields["v"].partition("...")
        self.assertEqual((set(head), set(tail)), ({"\x00"}, {"\x00"}))
        self.assertLessEqual(len(line), logline.MAX_VALUE + 40)

    def test_traceback_longer(self):
        """A traceback keeps up to MAX_TRACEBACK characters."""
        value = "frame\n" * 4000
        line = logline.render(3, "aimx.x", "m", [("traceback", value), ("other", value)])
        quoted = line.split("traceback=", 1)[1].split(" other=")[0]
        self.assertEqual(len(quoted), logline.MAX_TRACEBACK + 2 - 1)
        traceback = logline.read(line).fields["traceback"]
        self.assertTrue(traceback.startswith("frame\n") and traceback.endswith("frame\n"))
        self.assertLess(len(line), 48 * 1024)


class ReadTests(SynchronousTestCase):
    def test_file_line(self):
        """Time, priority, namespace, message and fields of a file line."""
        line = logline.read('2026-06-01T12:30:00.250+02:00 warning aimx.hook: hook result '
                            'mailbox=alice stderr_tail="boom\\n"')
        self.assertEqual(line.time, NOW.replace(microsecond=250000))
        self.assertEqual((line.priority, line.namespace, line.message, line.fields),
                         (logline.WARNING, "aimx.hook", "hook result",
                          {"mailbox": "alice", "stderr_tail": "boom\n"}))

    def test_journalctl_line(self):
        """A journalctl line: no time or priority of ours, its fields all the same."""
        line = logline.read("Jun 01 12:30:00 host twistd[12]: aimx.hook: firing mailbox=alice "
                            'rcpt="a mailbox=bob"')
        self.assertEqual((line.time, line.priority), (None, None))
        self.assertEqual(line.fields, {"mailbox": "alice", "rcpt": "a mailbox=bob"})

    def test_not_ours(self):
        """A line of something else has no time, priority or namespace."""
        line = logline.read('Traceback (most recent call last):')
        self.assertEqual((line.time, line.priority, line.namespace, line.fields),
                         (None, None, "", {}))

    def test_unterminated_quote_swallows_the_rest(self):
        """A quote left open (a line cut short) hides what follows it."""
        self.assertEqual(logline.fields('<6>a: m k="open mailbox=root'), {})

    def test_quote_unquote(self):
        """quote and unquote are inverses; bare values stay bare."""
        for value in HOSTILE:
            self.assertEqual(logline.unquote(logline.quote(value)), value)
        self.assertEqual(logline.quote("alice@example.com"), "alice@example.com")
        self.assertEqual(logline.quote(""), '""')


class PriorityTests(SynchronousTestCase):
    def test_names_and_numbers(self):
        """journalctl's names and 0-7."""
        self.assertEqual([logline.priority(p) for p in ("err", "WARNING", "5", "debug", "0")],
                         [3, 4, 5, 7, 0])

    def test_invalid(self):
        """Anything else is refused with the choices."""
        for text in ("8", "error", "-1", "", "warn"):
            e = self.assertRaises(ValueError, logline.priority, text)
            self.assertIn("emerg, alert, crit, err, warning, notice, info, debug", str(e))


class SinceTests(SynchronousTestCase):
    def test_words(self):
        """now, today, yesterday in the given zone."""
        midnight = NOW.replace(hour=0, minute=0)
        self.assertEqual(logline.since("now", NOW), NOW)
        self.assertEqual(logline.since("today", NOW), midnight)
        self.assertEqual(logline.since(" Yesterday ", NOW), midnight - datetime.timedelta(1))

    def test_relative(self):
        """-1h, -30min, 2d ago, '10 s ago'."""
        cases = {"-1h": 3600, "-30min": 1800, "-5m": 300, "2d ago": 172800,
                 "10 s ago": 10, "1 week ago": 604800}
        for text, seconds in cases.items():
            self.assertEqual(logline.since(text, NOW), NOW - datetime.timedelta(0, seconds))

    def test_dates(self):
        """A date, a date and time (local), RFC 3339 with an offset or Z."""
        tz = NOW.tzinfo
        self.assertEqual(logline.since("2026-05-01", NOW), datetime.datetime(2026, 5, 1,
                                                                             tzinfo=tz))
        self.assertEqual(logline.since("2026-05-01 08:15", NOW),
                         datetime.datetime(2026, 5, 1, 8, 15, tzinfo=tz))
        self.assertEqual(logline.since("2026-05-01T08:15:30Z", NOW),
                         datetime.datetime(2026, 5, 1, 8, 15, 30, tzinfo=UTC))
        self.assertEqual(logline.since("2026-05-01T08:15:30-05:00", NOW),
                         datetime.datetime(2026, 5, 1, 13, 15, 30, tzinfo=UTC))

    def test_invalid(self):
        """Other forms are refused, naming the ones taken."""
        for text in ("", "1h", "-1 fortnight", "2026-13-01", "tomorrow-ish", "2026-05-01 8:15"):
            e = self.assertRaises(ValueError, logline.since, text, NOW)
            self.assertIn("YYYY-MM-DD", str(e))


class FilterTests(SynchronousTestCase):
    LINES = [
        "2026-06-01T10:00:00.000+02:00 info aimx.smtp: received mailbox=alice",
        "2026-06-01T11:00:00.000+02:00 err aimx.inbound: not stored mailbox=bob",
        "Traceback (most recent call last):",
        '2026-06-01T12:00:00.000+02:00 notice aimx.trust: trust eval mailbox=alice '
        'sender="x mailbox=bob"',
        "2026-06-01T12:30:00.000+02:00 debug aimx.control: authorization mailbox=alice",
    ]

    def select(self, **kw):
        return list(logline.Filter(**kw).select(self.LINES))

    def test_none(self):
        """No filter: every line; an empty filter is false."""
        self.assertEqual(self.select(), self.LINES)
        self.assertFalse(logline.Filter())
        self.assertTrue(logline.Filter(mailbox="a"))

    def test_priority(self):
        """That priority and more urgent; a continuation goes with its line."""
        self.assertEqual(self.select(priority=logline.ERR), self.LINES[1:3])
        self.assertEqual(self.select(priority=logline.INFO), self.LINES[:4])

    def test_since(self):
        """At or after the time; a continuation goes with its line."""
        self.assertEqual(self.select(since=NOW.replace(hour=11, minute=0)), self.LINES[1:])
        self.assertEqual(self.select(since=NOW.replace(hour=12, minute=0)), self.LINES[3:])

    def test_mailbox(self):
        """The field, not the text: a quoted mailbox= is not one."""
        self.assertEqual(self.select(mailbox="alice"), self.LINES[0:1] + self.LINES[3:])
        self.assertEqual(self.select(mailbox="bob"), self.LINES[1:3])

    def test_combined(self):
        """All of them at once."""
        self.assertEqual(self.select(priority=logline.NOTICE, since=NOW.replace(hour=11, minute=0),
                                     mailbox="alice"), [self.LINES[3]])

    def test_unknown_time_before_any(self):
        """Lines before the first of ours: info, time unknown."""
        lines = ["garbage", *self.LINES]
        self.assertEqual(list(logline.Filter(priority=6).select(lines))[:1], ["garbage"])
        self.assertNotIn("garbage", list(logline.Filter(since=NOW.replace(hour=0))
                                         .select(lines)))
