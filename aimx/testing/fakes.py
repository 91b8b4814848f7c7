"""The test kit: fakes and builders the suite shares (test support; production never
imports this module).

Each fake stands in for one seam the code already injects: the passwd database
(C{passwd=}, C{resolve_owner=}, C{owner_exists=}), the clocks (C{clock=}, C{now=}),
the resolver, a reactor that listens in memory, a terminal, the program runner
(C{runner=}, C{run=}), the control client (C{connect=} answers one), and the outbox
and indexes SEND asks (C{outbox=}, C{index=}).  The builders make the inputs tests
need over and over: config.toml text from keyword arguments, and raw messages.
"""

import datetime
import io
import itertools
import os
from collections.abc import Iterable, Mapping

import tomli_w
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from aimx.auditlog import AuditLog
from aimx.auth.resolver import DnsNoRecord
from aimx.control import wire
from aimx.core import audit
from aimx.core.config import Config, load_text
from aimx.core.delivery import RcptResult
from aimx.store import audit as audit_files
from aimx.store.passwd import Owner

__all__ = [
    "DOMAIN", "FakePasswd", "Clock", "FakeNow", "FakeResolver", "FakeReactor",
    "ListeningPort", "TTY", "FakeRunner", "FakeControlClient", "FakeAsyncControlClient",
    "FakeOutbox", "audit_log", "clock_at",
    "hook_table", "mailbox_table", "config_text", "config",
    "message", "part", "multipart", "multipart_message",
]

#: The domain the builders default to.
DOMAIN = "test.local"


# -- passwd ------------------------------------------------------------------------


class FakePasswd:
    """A passwd database from a table of user names to ids.

    Has the shape of L{aimx.store.passwd.Passwd}: C{owner(name)} and
    C{username(uid)}; C{exists} fits C{owner_exists=} and C{owner} fits
    C{resolve_owner=}.

    @param users: name to uid, or to C{(uid, gid)}; a bare uid is its own gid.
        C{root} (0) is always known.
    @param homes: name to home directory (others have none).
    @param groups: group name to its members' names.
    """

    def __init__(self, users: Mapping[str, int | tuple[int, int]] = (),
                 homes: Mapping[str, str] = (), groups: Mapping[str, Iterable[str]] = ()):
        self.homes = dict(homes)
        self.groups = {name: set(members) for name, members in dict(groups).items()}
        self.users: dict[str, tuple[int, int]] = {"root": (0, 0)}
        for name, ids in dict(users).items():
            self.users[name] = (ids, ids) if isinstance(ids, int) else tuple(ids)

    def owner(self, name: str) -> Owner:
        """The owner C{name}; both ids C{None} when unknown."""
        uid, gid = self.users.get(name, (None, None))
        return Owner(name, uid, gid)

    def username(self, uid: int) -> str | None:
        """The first name with C{uid}, or C{None}."""
        return next((name for name, (u, _) in self.users.items() if u == uid), None)

    def exists(self, name: str) -> bool:
        """Whether C{name} is a known user."""
        return name in self.users

    def home(self, name: str) -> str | None:
        """The home directory of C{name}, or C{None}."""
        return self.homes.get(name)

    def in_group(self, uid: int, group: str) -> bool:
        """Whether the user with C{uid} is a member of C{group}."""
        return self.username(uid) in self.groups.get(group, ())


# -- time --------------------------------------------------------------------------


class FakeNow:
    """A C{now()} callable (aware UTC datetimes) that moves only when told.

    For the wall-clock seams (C{now=}); reactor time is L{Clock}'s.
    """

    def __init__(self, start: datetime.datetime = datetime.datetime(
            2025, 1, 1, tzinfo=datetime.timezone.utc)):
        self.now = start

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)


# -- DNS -------------------------------------------------------------------------


class FakeResolver:
    """DNS answers from a table, in the shape of L{aimx.auth.resolver.Resolver}.

    A name without records of the type asked for raises L{DnsNoRecord}; an
    exception added as an answer is raised instead.
    """

    def __init__(self):
        self.records: dict[tuple[str, str], list] = {}

    def add(self, rdtype: str, name: str, *answers) -> None:
        """More answers for C{(rdtype, name)}: TXT strings, C{(preference, host)}, IPs."""
        self.records.setdefault((rdtype, name), []).extend(answers)

    def _get(self, rdtype: str, name: str) -> list:
        answers = self.records.get((rdtype, name))
        if not answers:
            raise DnsNoRecord(name)
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        return list(answers)

    def txt(self, name: str) -> list[str]:
        return self._get("TXT", name)

    def mx(self, name: str) -> list[tuple[int, str]]:
        return self._get("MX", name)

    def addresses(self, name: str, ipv6: bool = False) -> list[str]:
        return self._get("AAAA" if ipv6 else "A", name)

    def ptr(self, name: str) -> list[str]:
        return self._get("PTR", name)


# -- listening -------------------------------------------------------------------


class ListeningPort:
    """A port L{FakeReactor} listens on: its address, and whether it was stopped."""

    def __init__(self, address):
        self.address = address
        self.stopped = False

    def getHost(self):
        return self.address

    def stopListening(self) -> defer.Deferred:
        self.stopped = True
        return defer.succeed(None)


class FakeReactor(MemoryReactorClock):
    """A memory reactor and clock whose C{listenTCP} hands out L{ListeningPort}s.

    Listening on port C{n} binds C{40000 + n} (a stand-in for the port the kernel
    picks) and records the call in C{tcpServers} as L{MemoryReactorClock} does.

    @ivar ports: the ports handed out, in order.
    @ivar refused: port number to the exception its C{listenTCP} raises.
    """

    def __init__(self):
        super().__init__()
        self.ports: list[ListeningPort] = []
        self.refused: dict[int, Exception] = {}

    def listenTCP(self, port, factory, backlog=50, interface=""):
        if port in self.refused:
            raise self.refused[port]
        super().listenTCP(port, factory, backlog, interface)
        kind = IPv6Address if ":" in interface else IPv4Address
        self.ports.append(ListeningPort(kind("TCP", interface or "0.0.0.0", 40000 + port)))
        return self.ports[-1]


# -- terminals -------------------------------------------------------------------


class TTY(io.StringIO):
    """A text stream that says it is a terminal (colour, prompts)."""

    def isatty(self) -> bool:
        return True


# -- programs ----------------------------------------------------------------------


class FakeRunner:
    """A program runner (L{aimx.host.programs}: C{(argv, capture=True) -> Completed})
    that records each argv and starts nothing.

    @param answers: an argv tuple, or a program name (C{argv[0]}), to its answer.
    @param default: the answer for any other argv.
    An answer is a result, an exception instance (raised), or a callable taking
    the argv (its return value is the result; it may raise).
    @ivar calls: each argv, as a list.
    @ivar options: each call's keyword arguments (C{capture=...}).
    """

    def __init__(self, answers: Mapping = (), default=None):
        self.answers = dict(answers)
        self.default = default
        self.calls: list[list[str]] = []
        self.options: list[dict] = []

    def __call__(self, argv, **options):
        argv = list(argv)
        self.calls.append(argv)
        self.options.append(options)
        answer = self.answers.get(tuple(argv), self.answers.get(argv[0], self.default))
        if isinstance(answer, BaseException):
            raise answer
        return answer(argv) if callable(answer) else answer


class FakeStreamer:
    """A streamer (L{aimx.host.programs}: C{(argv, on_line) -> exit status}) that
    records each argv and gives C{on_line} the lines it was made with.

    @ivar calls: each argv, as a list.
    """

    def __init__(self, lines=(), status: int = 0):
        self.lines = list(lines)
        self.status = status
        self.calls: list[list[str]] = []

    def __call__(self, argv, on_line) -> int:
        self.calls.append(list(argv))
        for line in self.lines:
            on_line(line)
        return self.status


# -- the control client ------------------------------------------------------------


class _UnexpectedCommand(AssertionError):
    pass


class FakeControlClient:
    """A control client with canned answers, as C{connect()} gives the CLI.

    @param answers: command class to its answer: a response dict, an exception
        (the call fails with it), a Deferred (returned as is), or a callable
        taking the arguments dict and returning one of those.
    @param default: the answer for commands not in C{answers}; by default such a
        call fails the test.
    @ivar calls: C{(command class, arguments)} per call, in order.
    @ivar attached: C{(path, content)} of every descriptor passed (SEND's
        C{attachments}), read while the call runs.
    @ivar closed: whether C{close()} was called.
    """

    _NONE = object()

    def __init__(self, answers: Mapping = (), default=_NONE):
        self.answers = dict(answers)
        self.default = default
        self.calls: list[tuple[type, dict]] = []
        self.attached: list[tuple[str, bytes]] = []
        self.closed = False

    def _answer(self, command, arguments: dict):
        # The wire must accept them: a wire command, or its AMP form (aimx doctor's).
        if issubclass(command, wire.Command):
            command.request(arguments, wire.SentDescriptors(itertools.count()))
        else:
            command.makeArguments(arguments, None)
        for fd, path in arguments.get("attachments") or ():
            self.attached.append((path, os.pread(fd, 1 << 20, 0)))
        self.calls.append((command, arguments))
        answer = self.answers.get(command, self.default)
        if answer is self._NONE:
            raise _UnexpectedCommand(f"unexpected {command.commandName.decode()} {arguments}")
        return answer(arguments) if callable(answer) else answer

    def call(self, command, **arguments) -> defer.Deferred:
        """Answer like L{aimx.control.client}: a Deferred."""
        try:
            answer = self._answer(command, arguments)
        except _UnexpectedCommand:
            raise
        except Exception as e:
            return defer.fail(e)
        if isinstance(answer, defer.Deferred):
            return answer
        if isinstance(answer, BaseException):
            return defer.fail(answer)
        return defer.succeed(answer)

    def names(self) -> list[str]:
        """The wire names of the commands called, in order."""
        return [command.commandName.decode() for command, _ in self.calls]

    def close(self) -> None:
        self.closed = True


class FakeAsyncControlClient(FakeControlClient):
    """L{FakeControlClient} shaped like L{aimx.control.aioclient.ControlClient}: the
    MCP tools' client, C{call} is a coroutine."""

    async def call(self, command, **arguments):
        answer = self._answer(command, arguments)
        if isinstance(answer, BaseException):
            raise answer
        return answer


# -- what SEND talks to ------------------------------------------------------------


class FakeOutbox:
    """The outbox (L{aimx.outbox.Outbox}) as the control commands see it: sends nothing,
    records each draft; C{answer} may be an exception to raise or a Deferred to wait for.
    Notices (L{aimx.outbox.Outbox.send_notice}) are recorded in C{notices} as C{(draft,
    sender, rcpts)} and answered C{notice_status} (or C{notice_answer} raised)."""

    def __init__(self):
        self.drafts = []
        self.answer = None
        self.notices = []
        self.notice_status = "delivered"
        self.notice_answer = None

    async def send_notice(self, config, draft, *, sender, rcpts, message_id):
        self.notices.append((draft, sender, list(rcpts)))
        if self.notice_answer is not None:
            raise self.notice_answer
        return [RcptResult(rcpt, self.notice_status, "fake") for rcpt in rcpts]

    async def send(self, config, sub, draft):
        self.drafts.append(draft)
        if isinstance(self.answer, Exception):
            raise self.answer
        if isinstance(self.answer, defer.Deferred):
            await self.answer
        return {"message_id": "<m@test.local>", "deliveries": []}


def audit_log(case, live, clock: Clock, records: Iterable[tuple[datetime.datetime, dict]] = ()):
    """A started L{aimx.auditlog.AuditLog} of C{live}'s config on C{clock}, its disk
    work run at once, whose day files first hold C{records} (C{(time, a builder's
    value)}); stopped at the test's end.

    @param case: the test case (for its cleanup).
    """
    lines = [(audit.day(at), audit.line(audit.stamped(record, at))) for at, record in records]
    if lines:
        audit_files.append(live.current.effective_audit_dir, lines)
    log = AuditLog(config=lambda: live.current, clock=clock,
                   run_in_thread=lambda f, *a: defer.maybeDeferred(f, *a))
    log.startService()
    case.addCleanup(log.stopService)
    return log


def clock_at(when: datetime.datetime) -> Clock:
    """A L{Clock} whose time is C{when}."""
    clock = Clock()
    clock.advance(when.timestamp())
    return clock


# -- config ------------------------------------------------------------------------


def hook_table(event: str = "on_receive", cmd: Iterable[str] = ("/bin/true",),
               **fields) -> dict:
    """One C{[[mailboxes.<name>.hooks]]} table (C{name}, C{fire_on_untrusted}, ...)."""
    return {"event": event, "cmd": list(cmd), **fields}


def mailbox_table(address: str, owner: str = "root", **fields) -> dict:
    """One C{[mailboxes.<name>]} table; C{hooks} is a list of L{hook_table}s."""
    return {"address": address, "owner": owner, **fields}


def config_text(domain: str = DOMAIN, *, data_dir: str | None = None,
                mailboxes: Mapping[str, dict] | None = None, owner: str = "root",
                catchall: bool = False, extra: str = "", **top) -> str:
    """config.toml text built from keyword arguments.

    @param mailboxes: name to L{mailbox_table} (or a dict of its fields, where
        C{address} defaults to C{<name>@<domain>} and C{owner} to C{owner});
        default: C{alice} and C{bob}; none: C{{}}.
    @param data_dir: C{None}: no C{data_dir} key (the default).
    @param catchall: add a C{catchall} mailbox for C{*@<domain>}.
    @param extra: text appended as is (for what the schema cannot say: legacy
        or malformed keys).
    @param top: more top-level keys (C{trust}, C{trusted_senders}, ...).
    """
    if mailboxes is None:
        mailboxes = {"alice": {}, "bob": {}}
    tables = {}
    for name, fields in mailboxes.items():
        fields = dict(fields)
        fields.setdefault("address", f"{name}@{domain}")
        fields.setdefault("owner", owner)
        tables[name] = mailbox_table(**fields)
    if catchall:
        tables["catchall"] = mailbox_table(f"*@{domain}", owner)
    document = {"domain": domain, **({} if data_dir is None else {"data_dir": data_dir}), **top}
    if tables:
        document["mailboxes"] = tables
    return tomli_w.dumps(document) + extra


def config(domain: str = DOMAIN, **kwargs) -> Config:
    """The L{Config} that L{config_text} with the same arguments loads to."""
    return load_text(config_text(domain, **kwargs), "config.toml")[0]


# -- messages ----------------------------------------------------------------------


def message(body: str | bytes = "Hi\r\n", *, sender: str | None = "Alice <alice@example.com>",
            to: str | None = f"alice@{DOMAIN}", subject: str | None = "Test",
            message_id: str | None = "m1@example.com", date: str | None = None,
            headers: Iterable[str] = (), top: Iterable[str] = (), nl: str = "\r\n") -> bytes:
    """A raw message: header lines, a blank line, C{body}; ready to sign or send.

    A standard header whose value is C{None} is left out (C{Date} by default).

    @param headers: more C{"Name: value"} lines after the standard ones (a
        C{Content-Type} for L{multipart} bodies, ...).
    @param top: lines before the standard ones (as a relay prepends C{Received}).
    @param nl: the line ending of the header block (the body is taken as is).
    """
    standard = [("From", sender), ("To", to), ("Subject", subject),
                ("Message-ID", None if message_id is None else f"<{message_id}>"),
                ("Date", date)]
    lines = [*top, *(f"{name}: {value}" for name, value in standard if value is not None),
             *headers]
    head = nl.join(lines) + nl + nl
    if isinstance(body, str):
        body = body.encode("utf-8")
    return head.encode("utf-8") + body


def part(body: str = "Hello.", content_type: str = "text/plain; charset=utf-8",
         headers: Iterable[str] = ()) -> str:
    """One MIME part (headers, blank line, body) for L{multipart}."""
    return "\r\n".join([f"Content-Type: {content_type}", *headers]) + "\r\n\r\n" + body


def multipart(*parts: str, boundary: str = "BOUND") -> str:
    """The body of a multipart entity holding C{parts} (use with the header
    C{Content-Type: multipart/<subtype>; boundary="<boundary>"})."""
    return "".join(f"--{boundary}\r\n{p}\r\n" for p in parts) + f"--{boundary}--\r\n"


def multipart_message(*parts: str, subtype: str = "mixed", boundary: str = "BOUND",
                      headers: Iterable[str] = (), **fields) -> bytes:
    """A L{message} whose body is a multipart of C{parts} (L{part}); C{fields} as
    L{message}'s."""
    return message(multipart(*parts, boundary=boundary), headers=[
        "MIME-Version: 1.0", f'Content-Type: multipart/{subtype}; boundary="{boundary}"',
        *headers], **fields)
