"""aimx's logging (L2): the logger its code uses and the observer that writes lines.

Every event becomes one line in the format of L{aimx.ops.logline} (docs/logging.md):
aimx's own events (namespaces C{aimx.*}) carry a constant message and their
fields as C{key=value}; any other event (Twisted's, stdout and stderr under twistd)
its formatted text.  A failure (C{log.failure}) is folded into the same line, as
C{exception=} (its type and text) and C{traceback=} (escaped, so one line): journald
makes one entry of each line of a stream, and a traceback spread over lines would
become entries of their own, without the event's priority, that C{journalctl -p err}
does not show.

The priority is the event's level (C{debug} 7, C{info} 6, C{warn} 4, C{error} 3,
C{critical} 2) unless the event names one: L{Logger.notice} logs at C{info} for
Twisted with the syslog priority I{notice} (5), which refusals use.  When the stream
written to is the journal -- C{$JOURNAL_STREAM} names its device and inode, as
systemd.exec(5) says a program should check -- lines start with C{<N>} and have no
time; otherwise they start with the local time and the priority's name.
"""

import datetime
import os
import sys
import threading

from twisted.logger import ILogObserver, LogLevel, formatEvent
from twisted.logger import Logger as _TwistedLogger
from zope.interface import implementer

from aimx.ops import logline

#: The event key that carries a syslog priority other than its level's.
PRIORITY_KEY = "log_priority"
#: Keys Twisted's legacy observers add to an event they see (the event is shared).
_LEGACY = frozenset({"message", "time", "system", "format", "isError", "failure", "why"})
_BY_LEVEL = {
    LogLevel.debug: logline.DEBUG,
    LogLevel.info: logline.INFO,
    LogLevel.warn: logline.WARNING,
    LogLevel.error: logline.ERR,
    LogLevel.critical: logline.CRIT,
}


class Logger(_TwistedLogger):
    """C{twisted.logger.Logger} with L{notice}, and failures at C{error}.

    aimx's namespaces are C{aimx.<area>} (docs/logging.md lists them); messages are
    constant texts, the values go in fields.
    """

    def notice(self, format=None, **kwargs):
        """An event of syslog priority I{notice}: a refusal, a trust failure (Twisted
        sees it at C{info})."""
        self.emit(LogLevel.info, format, **{PRIORITY_KEY: logline.NOTICE}, **kwargs)

    def failure(self, format, failure=None, level=LogLevel.error, **kwargs):
        """Log a failure (the current exception by default) at C{error}, not Twisted's
        C{critical}: an aimx failure is an error of one operation."""
        super().failure(format, failure, level, **kwargs)


def priority_of(event: dict) -> int:
    """The syslog priority of a Twisted log event."""
    named = event.get(PRIORITY_KEY)
    if isinstance(named, int) and 0 <= named <= logline.DEBUG:
        return named
    return _BY_LEVEL.get(event.get("log_level"), logline.INFO)


def _fields(event: dict, namespace: str):
    """The event's own fields (aimx's events), then its failure's."""
    if namespace.startswith("aimx."):
        for key, value in event.items():
            if not key.startswith("log_") and key not in _LEGACY:
                yield key, value
    failure = event.get("log_failure")
    if failure is not None:
        yield "exception", f"{failure.type.__name__}: {failure.getErrorMessage()}"
        yield "traceback", failure.getTraceback().rstrip("\n")


def _message(event: dict, namespace: str) -> str:
    if namespace.startswith("aimx.") and event.get("log_format") is not None:
        return event["log_format"]
    try:
        return formatEvent(event)
    except Exception as e:  # formatEvent reports its own errors; be sure anyway
        return f"unformattable event: {e!r}"


def event_line(event: dict, journal: bool, tz: datetime.tzinfo | None = None) -> str:
    """A Twisted log event as one line (L{aimx.ops.logline.render}).

    @param journal: the journal form (C{<N>} first, no time).
    @param tz: the zone of the time; C{None}: the local one.
    """
    namespace = event.get("log_namespace") or "-"
    if namespace == "log_legacy":  # twisted.python.log.msg: Twisted's own old calls
        namespace = "twisted"
    time = None
    if not journal:
        stamp = event.get("log_time")
        if not isinstance(stamp, (int, float)):
            stamp = 0.0
        time = datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).astimezone(tz)
    return logline.render(priority_of(event), namespace, _message(event, namespace),
                          _fields(event, namespace), time)


def is_journal(fd: int, environ) -> bool:
    """Whether C{fd} is the journal stream C{$JOURNAL_STREAM} (C{device:inode}) names."""
    dev, _, ino = environ.get("JOURNAL_STREAM", "").partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


@implementer(ILogObserver)
class LineObserver:
    """Writes each event as one line to a binary stream, flushed at once.

    One lock keeps lines from threads whole; text that cannot be encoded is written
    with backslash escapes, so writing never fails (Twisted drops an observer that
    raises).
    """

    def __init__(self, out, journal: bool):
        self.out = out
        self.journal = journal
        self._lock = threading.Lock()

    def __call__(self, event: dict) -> None:
        try:
            line = event_line(event, self.journal)
        except Exception as e:
            line = logline.render(logline.ERR, "aimx.logs", "unwritable event",
                                  [("exception", repr(e))], None if self.journal
                                  else datetime.datetime.now().astimezone())
        data = (line + "\n").encode("utf-8", "backslashreplace")
        with self._lock:
            self.out.write(data)
            self.out.flush()


def observer(stream=None, environ=None) -> LineObserver:
    """The observer for C{stream} (a text file with a binary C{buffer}, stdout by
    default: twistd's C{--logger}), in the journal form when it is the journal.

    @param environ: where C{JOURNAL_STREAM} is read; C{os.environ} by default.
    """
    stream = sys.stdout if stream is None else stream
    environ = os.environ if environ is None else environ
    return LineObserver(stream.buffer, is_journal(stream.fileno(), environ))


def use_for_twistd(options) -> None:
    """Have twistd log through L{observer} (its C{--logger}), unless its command line
    chose a log already (C{--logger}, C{--logfile}, C{--syslog}).

    @param options: twistd's C{ServerOptions}, the parent of aimx's own; it turns
        the name into the factory after aimx's options are parsed.
    """
    if not (options.get("logger") or options.get("logfile") or options.get("syslog")):
        options["logger"] = f"{__name__}.observer"
