"""Tests for aimx.hooks: the process protocol on a clock, the queue on fake processes.

Real hook processes are in tests.integration.test_hook_processes.
"""

import os
import signal

from twisted.internet import task
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from aimx import hooks
from aimx.core import events
from aimx.core.address import Envelope
from aimx.core.authresults import AuthResults
from aimx.core.config import Config, HookRate, MailboxConfig, make_hook
from aimx.core.hookspec import HookEvent
from aimx.core.message import parse_message
from aimx.hooks import HookProtocol, HookRunner, ProcessGroups
from aimx.logs import event_line
from aimx.core.received import Ingested, Prepared, Stored
from aimx.core.trust import Verdict
from aimx.store.passwd import Owner

DOMAIN = "test.com"


def sh(script: str, *args: str) -> list[str]:
    """A hook argv running C{script} with C{/bin/sh}; C{args} become C{$0}, C{$1}, ..."""
    return ["/bin/sh", "-c", script, *args]


class FakeTransport:
    """The bits of a process transport that L{HookProtocol} uses."""

    def __init__(self, pid: int):
        self.pid = pid
        self.written = b""
        self.stdin_closed = False

    def write(self, data: bytes):
        self.written += data

    def closeStdin(self):
        self.stdin_closed = True


def exited(code: int) -> Failure:
    return Failure(ProcessDone(0) if code == 0 else ProcessTerminated(exitCode=code))


def killed(signum: int) -> Failure:
    return Failure(ProcessTerminated(signal=signum))


class FakeGroups:
    """Process groups that live until told otherwise; records the signals sent."""

    def __init__(self, live: bool = True):
        self.live = live
        self.signals = []

    def signal(self, pgid: int, signum: int) -> bool:
        self.signals.append((pgid, signum))
        return self.live

    def alive(self, pgid: int) -> bool:
        return self.live


class HookProtocolTests(SynchronousTestCase):
    """Output tails and the timeout of one process, on a clock."""

    def setUp(self):
        self.clock = task.Clock()
        self.groups = FakeGroups()
        self.signals = self.groups.signals
        self.protocol = HookProtocol(10, self.clock, self.groups)
        self.transport = FakeTransport(4242)
        self.protocol.makeConnection(self.transport)

    def test_nothing_written_to_stdin(self):
        """The daemon writes nothing to the child: stdin is the stored file itself."""
        self.assertEqual(self.transport.written, b"")

    def test_exit_before_deadline(self):
        """A hook that exits in time leaves no timer and is not timed out."""
        self.groups.live = False
        self.protocol.processEnded(exited(3))
        self.assertEqual((self.protocol.exit_code, self.protocol.timed_out), (3, False))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(self.protocol.gone.called)

    def test_term_then_kill_five_seconds_later(self):
        """At the deadline SIGTERM goes to the group, SIGKILL 5 s later (case 6)."""
        self.clock.advance(9.9)
        self.assertEqual(self.signals, [])
        self.clock.advance(0.1)
        self.assertEqual(self.signals, [(4242, signal.SIGTERM)])
        self.assertTrue(self.protocol.timed_out)
        self.clock.advance(4.9)
        self.assertEqual(len(self.signals), 1)
        self.clock.advance(0.1)
        self.assertEqual(self.signals[-1], (4242, signal.SIGKILL))
        self.assertTrue(self.protocol.gone.called)
        self.protocol.processEnded(killed(signal.SIGKILL))
        self.assertEqual(self.protocol.exit_code, -1)
        self.assertTrue(self.protocol.ended.called)

    def test_term_suffices(self):
        """A group that dies on SIGTERM gets no SIGKILL."""
        self.clock.advance(10)
        self.groups.live = False
        self.protocol.processEnded(killed(signal.SIGTERM))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.protocol.exit_code, -1)
        self.assertNotIn(signal.SIGKILL, [s for _, s in self.signals])

    def test_trapped_term_exit_zero(self):
        """A child trapping SIGTERM and exiting 0 reports exit 0, timed out (§4)."""
        self.clock.advance(10)
        self.groups.live = False
        self.protocol.processEnded(exited(0))
        self.assertEqual((self.protocol.exit_code, self.protocol.timed_out), (0, True))

    def test_grandchild_outliving_leader(self):
        """A group that outlives its leader is still signalled at the deadline."""
        self.protocol.processEnded(exited(0))
        self.assertTrue(self.protocol.ended.called)
        self.assertFalse(self.protocol.gone.called)
        self.clock.advance(10)
        self.assertIn((4242, signal.SIGTERM), self.signals)
        self.assertFalse(self.protocol.timed_out)
        self.clock.advance(5)
        self.assertEqual(self.signals[-1], (4242, signal.SIGKILL))
        self.assertTrue(self.protocol.gone.called)

    def test_output_tail_capped(self):
        """Only the last 64 KiB of each stream are kept."""
        for i in range(100):
            self.protocol.childDataReceived(1, bytes([i]) * 1024)
        self.protocol.childDataReceived(2, b"short")
        out = self.protocol.output[1]
        self.assertEqual(len(out), hooks.OUTPUT_CAP)
        self.assertEqual(bytes(out[-1024:]), bytes([99]) * 1024)
        self.assertEqual(bytes(self.protocol.output[2]), b"short")


class ProcessGroupsTests(SynchronousTestCase):
    """Telling whether a process group still has running members."""

    def test_running_group(self):
        """A group with a running member is alive."""
        self.assertTrue(ProcessGroups().alive(os.getpgrp()))


class FakeProcesses:
    """A spawner that only connects the protocol to a fake transport."""

    def __init__(self):
        self.running: list[tuple[HookProtocol, list[str]]] = []
        self.spawned = 0
        self.peak = 0

    def spawn(self, protocol, argv, *, env, cwd, stdin):
        self.spawned += 1
        self.env = env
        protocol.makeConnection(FakeTransport(self.spawned))
        self.running.append((protocol, argv))
        self.peak = max(self.peak, len(self.running))

    def finish_oldest(self):
        protocol, args = self.running.pop(0)
        protocol.processEnded(exited(0))
        return args


class QueueTests(SynchronousTestCase):
    """Bounded concurrency and per-delivery order, with fake processes."""

    def runner(self, processes, mailbox, max_processes=16) -> HookRunner:
        config = Config(DOMAIN, data_dir="/nonexistent", mailboxes=[mailbox])
        return HookRunner(
            None,
            config=lambda: config,
            environ={},
            clock=task.Clock(),
            max_processes=max_processes,
            resolve_owner=lambda name: Owner(name, 1000, 1000),
            euid=1000,
            groups=FakeGroups(live=False),
            spawn=processes.spawn,
        )

    def event(self, mailbox, n=0) -> HookEvent:
        return HookEvent(
            events.ON_RECEIVE, mailbox, filepath="", id=f"m{n}", from_="", to="",
            subject="", message_id="", date="", trusted="true",
        )

    def test_burst_queues(self):
        """1 000 trusted messages at once run at most 16 hooks at a time, and all run."""
        mailbox = MailboxConfig("alice", "alice@test.com", "alice",
                                hooks=[make_hook("on_receive", ["/bin/true"])])
        processes = FakeProcesses()
        runner = self.runner(processes, mailbox)
        done = [runner.dispatch(self.event(mailbox, n)) for n in range(1000)]
        self.assertEqual(processes.spawned, 16)
        while processes.running:
            processes.finish_oldest()
        self.assertEqual((processes.spawned, processes.peak), (1000, 16))
        self.assertEqual(len([d for d in done if d.called]), 1000)
        self.assertTrue(runner.idle().called)

    def test_on_received_next_turn(self):
        """The listener spawns on the next reactor turn, with the stored message's values."""
        mailbox = MailboxConfig("alice", "alice@test.com", "alice",
                                hooks=[make_hook("on_receive", ["/bin/true"])])
        processes = FakeProcesses()
        runner = self.runner(processes, mailbox)
        raw = b"From: Bob <bob@x.com>\r\nTo: alice@test.com\r\nSubject: Hi\r\n\r\nbody\r\n"
        ingested = Ingested(
            rcpt="alice@test.com",
            mailbox=mailbox,
            stored=Stored("2025-01-01-000000-hi", "/d/2025-01-01-000000-hi.md",
                          received_at="2025-01-01T00:00:00.5+00:00"),
            policy="verified",
            verdict=Verdict("true", True, "bob@x.com"),
            prepared=Prepared(Envelope(None, None, None, ("alice@test.com",), raw),
                              parse_message(raw), auth=None),
            parsed=parse_message(raw),
        )
        done = runner.on_received(ingested)
        self.assertEqual(processes.spawned, 0)
        runner.clock.advance(0)
        self.assertEqual(processes.spawned, 1)
        env = processes.env
        self.assertEqual(
            (env["AIMX_FROM"], env["AIMX_SUBJECT"], env["AIMX_ID"], env["AIMX_DATE"]),
            ("Bob <bob@x.com>", "Hi", "2025-01-01-000000-hi", "2025-01-01T00:00:00.5+00:00"),
        )
        processes.finish_oldest()
        self.assertEqual([r.exit_code for r in self.successResultOf(done)], [0])

    def test_privilege_change_only_as_root(self):
        """Only a root daemon runs cmd through unshare, and not for a root owner; a
        daemon that is not root asks for no uid change at all."""
        hook = make_hook("on_receive", ["/bin/true", "x"])
        unshare = ["/usr/bin/unshare", "--setgid=2001", "--setuid=2000", "--"]
        for euid, uid, argv in ((1000, 2000, []), (0, 0, []), (0, 2000, unshare)):
            mailbox = MailboxConfig("alice", "alice@test.com", "alice", hooks=[hook])
            config = Config(DOMAIN, data_dir="/nonexistent", mailboxes=[mailbox])
            processes = FakeProcesses()
            runner = HookRunner(
                None, config=lambda: config, environ={}, clock=task.Clock(),
                resolve_owner=lambda name: Owner(name, uid, uid + 1), euid=euid,
                groups=FakeGroups(live=False), spawn=processes.spawn, unshare_path="/usr/bin",
            )
            runner.dispatch(self.event(mailbox))
            self.assertEqual(processes.finish_oldest(), argv + ["/bin/true", "x"], (euid, uid))

    def test_owner_home(self):
        """As root, a hook dropping to its owner gets the owner's HOME; as the owner
        itself (no drop) the daemon's HOME stays."""
        mailbox = MailboxConfig("alice", "alice@test.com", "alice",
                                hooks=[make_hook("on_receive", ["/bin/true"])])
        for euid, expected in ((0, "/home/alice"), (1000, "/daemon-home")):
            processes = FakeProcesses()
            config = Config(DOMAIN, data_dir="/nonexistent", mailboxes=[mailbox])
            runner = HookRunner(
                None, config=lambda: config, environ={"HOME": "/daemon-home"},
                clock=task.Clock(), resolve_owner=lambda name: Owner(name, 1000, 1000),
                resolve_home=lambda name: f"/home/{name}", euid=euid,
                groups=FakeGroups(live=False), spawn=processes.spawn,
            )
            runner.dispatch(self.event(mailbox))
            self.assertEqual(processes.env["HOME"], expected)
            processes.finish_oldest()

    def test_delivery_in_order(self):
        """The hooks of one delivery start one after another, in config order."""
        mailbox = MailboxConfig("alice", "alice@test.com", "alice", hooks=[
            make_hook("on_receive", ["/bin/a"]), make_hook("on_receive", ["/bin/b"]),
        ])
        processes = FakeProcesses()
        runner = self.runner(processes, mailbox)
        results = []
        runner.dispatch(self.event(mailbox)).addCallback(results.extend)
        self.assertEqual(len(processes.running), 1)
        self.assertEqual(processes.finish_oldest()[-1], "/bin/a")
        self.assertEqual(processes.finish_oldest()[-1], "/bin/b")
        self.assertEqual([r.exit_code for r in results], [0, 0])

    def test_deliveries_in_parallel(self):
        """Hooks of different deliveries run at the same time."""
        mailbox = MailboxConfig("alice", "alice@test.com", "alice",
                                hooks=[make_hook("on_receive", ["/bin/true"])])
        processes = FakeProcesses()
        runner = self.runner(processes, mailbox, max_processes=2)
        runner.dispatch(self.event(mailbox, 1))
        runner.dispatch(self.event(mailbox, 2))
        runner.dispatch(self.event(mailbox, 3))
        self.assertEqual(len(processes.running), 2)
        processes.finish_oldest()
        self.assertEqual((len(processes.running), processes.spawned), (2, 3))
        processes.finish_oldest()
        processes.finish_oldest()


class PlanAuditTests(SynchronousTestCase):
    """on_received decides, records and fires: the review gate and the sender's rate,
    on a clock, with fake processes."""

    def setUp(self):
        self.mailbox = MailboxConfig(
            "alice", "alice@test.com", "alice", hook_rate_per_sender=HookRate(2),
            hooks=[make_hook("on_receive", ["/bin/true"], name="notify"),
                   make_hook("on_receive", ["/bin/true"], name="triage", fire_on_review=True)])
        self.processes = FakeProcesses()
        self.clock = task.Clock()
        self.records = []
        config = Config(DOMAIN, data_dir="/nonexistent", mailboxes=[self.mailbox])
        self.runner = HookRunner(
            None, config=lambda: config, environ={}, clock=self.clock,
            resolve_owner=lambda name: Owner(name, 1000, 1000), euid=1000,
            groups=FakeGroups(live=False), audit=self.records.append,
            spawn=self.processes.spawn)

    def receive(self, sender: str, risk_reasons=(), trusted="true") -> list:
        """Deliver one message from C{sender}; the audited (hook, fired, skipped) rows."""
        raw = f"From: {sender}\r\nSubject: Hi\r\n\r\nbody\r\n".encode()
        parsed = parse_message(raw)
        ingested = Ingested(
            rcpt="alice@test.com", mailbox=self.mailbox,
            stored=Stored("2025-01-01-000000-hi", "/d/hi.md"), policy="verified",
            verdict=Verdict(trusted, True, sender.lower()),
            prepared=Prepared(Envelope("203.0.113.9", "mx.x.com", sender,
                                       ("alice@test.com",), raw),
                              parsed, AuthResults("pass", "pass", "pass"), "f00d"),
            parsed=parsed, risk_reasons=tuple(risk_reasons))
        with capturedLogs() as events:
            self.runner.on_received(ingested)
            self.clock.advance(0)
            while self.processes.running:
                self.processes.finish_oldest()
        self.skips = [line for line in (event_line(e, journal=True) for e in events)
                      if "hook skipped" in line]
        return [(h["name"], h["fired"], h.get("skipped")) for h in self.records[-1]["hooks"]]

    def test_review_gate(self):
        """A copy stored for review fires only the fire_on_review hook; the audit record
        carries the verdict, the reasons and the raw message's hash."""
        self.assertEqual(self.receive("bob@x.com", ["guard:tool-call"]),
                         [("notify", False, "review"), ("triage", True, None)])
        self.assertEqual(self.processes.spawned, 1)
        self.assertEqual(self.skips, [
            "<6>aimx.hook: hook skipped hook_name=notify event=on_receive mailbox=alice "
            "skipped=review risk=review fire_on_review=false email_id=2025-01-01-000000-hi"])
        record = self.records[-1]
        self.assertEqual(
            {k: record[k] for k in ("event", "mailbox", "sender", "trusted", "risk",
                                    "risk_reasons", "sha256", "peer")},
            {"event": "inbound", "mailbox": "alice", "sender": "bob@x.com", "trusted": "true",
             "risk": "review", "risk_reasons": ["guard:tool-call"], "sha256": "f00d",
             "peer": "203.0.113.9"})

    def test_rate_per_sender(self):
        """Two messages an hour per sender fire hooks; the third is stored but fires none
        (audited as "rate") until the first falls out of the rolling hour; another
        sender is counted apart."""
        fired = [("notify", True, None), ("triage", True, None)]
        held = [("notify", False, "rate"), ("triage", False, "rate")]
        self.assertEqual(self.receive("Bob@x.com"), fired)
        self.clock.advance(600)
        self.assertEqual(self.receive("bob@x.com"), fired)
        self.clock.advance(600)
        self.assertEqual(self.receive("bob@x.com"), held)
        self.assertEqual(self.skips, [
            f"<6>aimx.hook: hook skipped hook_name={name} event=on_receive mailbox=alice "
            "skipped=rate sender=bob@x.com per_hour=2 email_id=2025-01-01-000000-hi"
            for name in ("notify", "triage")])
        self.assertEqual(self.receive("carol@x.com"), fired)
        self.assertEqual(self.skips, [])
        self.assertEqual(self.processes.spawned, 6)
        self.clock.advance(3600 - 1200 - 1)
        self.assertEqual(self.receive("bob@x.com"), held)
        self.clock.advance(1)  # the first fire is an hour old: out of the window
        self.assertEqual(self.receive("bob@x.com"), fired)
        self.assertEqual(self.receive("bob@x.com"), held)

    def test_gated_mail_not_counted(self):
        """Mail whose hooks the trust gate holds back does not use up the sender's rate."""
        gated = [("notify", False, "trust"), ("triage", False, "trust")]
        for _ in range(3):
            self.assertEqual(self.receive("bob@x.com", trusted="none"), gated)
            self.assertEqual([line.split(" skipped=")[1].split()[:2] for line in self.skips],
                             [["trust", "trusted=none"]] * 2)
        for _ in range(2):
            self.assertEqual([f for _, f, _ in self.receive("bob@x.com")], [True, True])
        self.assertEqual(self.processes.spawned, 4)
