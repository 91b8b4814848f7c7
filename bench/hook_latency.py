#!/usr/bin/env python3
"""Latency from publishing a message to the start of its on_receive hook (run by hand).

  PYTHONPATH=. python bench/hook_latency.py [--messages 200] [--burst 1000]
                                           [--max-processes 16] [--owner USER]
                                           [--ballast MB]

In one process, with the real reactor: Inbound (durable MailStore, fixture DNS
on loopback) stores each message, the daemon's listener hands it to a
HookRunner, and the hook is C{/usr/bin/date +%s.%N}, so its stdout is the
moment it started running.  "Published" is the moment MailStore.store_inbound
returned in its worker thread (the file is linked and fsynced), so the figure
covers everything aimx adds: the hop back to the reactor, the queue, the owner
lookup, the guarded open of the file for stdin, the spawn (chdir, setsid), the
privilege drop when root runs the hook as --owner, and the exec.

  sequential   one message at a time, each hook finished before the next
  burst        --burst messages delivered at once (started as fast as a
               Cooperator allows, not in one reactor turn); hooks queue behind
               --max-processes (the latency then includes the wait in line)
  direct       for comparison: /usr/bin/date spawned straight from the
               reactor (posix_spawn, no cwd, no session, no drop)

"stall" is the longest gap between two turns of a 5 ms LoopingCall during the
phase: how long the reactor was held (the fixture DNS server runs in a process
of its own, so its answers are not counted).  --ballast touches that many MiB first,
to stand for a big daemon (a fork copies its page tables; vfork does not).
Root may pass --owner USER to include the uid/gid drop.  The script only uses
HookRunner's public API, so PYTHONPATH=<another checkout> measures that one.
"""

import argparse
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from twisted.internet import defer, protocol, task, threads

from aimx.auth.resolver import Resolver
from aimx.core.address import Envelope
from aimx.core.config import Config, MailboxConfig, make_hook
from aimx.hooks import HookRunner
from aimx.smtp.inbound import Inbound
from aimx.store.mailstore import MailStore

DATE = ["/usr/bin/date", "+%s.%N"]


class TimedStore(MailStore):
    """A MailStore that notes when each message was published."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.published = {}

    def store_inbound(self, *args, **kwargs):
        stored = super().store_inbound(*args, **kwargs)
        self.published[stored.id] = time.time()
        return stored


def envelope(n: int) -> Envelope:
    raw = (
        f"From: Bench <bench@example.org>\r\nTo: box@bench.test\r\nSubject: bench {n}\r\n"
        f"Message-ID: <bench-{n}-{time.time_ns()}@example.org>\r\n\r\nHello {n}\r\n"
    ).encode()
    return Envelope("127.0.0.1", "bench.test", "bench@example.org", ("box@bench.test",), raw)


def summary(name: str, latencies_ms: list[float], extra: str = "") -> str:
    cuts = statistics.quantiles(latencies_ms, n=100, method="inclusive")
    return (
        f"{name:<11} n={len(latencies_ms):<5} p50={cuts[49]:7.2f} ms  p99={cuts[98]:7.2f} ms  "
        f"max={max(latencies_ms):7.2f} ms{extra}"
    )


class DateProtocol(protocol.ProcessProtocol):
    def __init__(self):
        self.out = b""
        self.done = defer.Deferred()

    def outReceived(self, data):
        self.out += data

    def processEnded(self, reason):
        self.done.callback(float(self.out))


async def direct(reactor, n: int) -> list[float]:
    latencies = []
    for _ in range(n):
        proto = DateProtocol()
        start = time.time()
        reactor.spawnProcess(proto, DATE[0], DATE, env={})
        latencies.append((await proto.done - start) * 1000)
    return latencies


class StallProbe:
    """The longest gap between turns of a 5 ms LoopingCall since the last reset."""

    def __init__(self, reactor):
        self.worst = 0.0
        self.last = reactor.seconds()
        self.loop = task.LoopingCall(self.tick)
        self.loop.clock = reactor
        self.loop.start(0.005)

    def tick(self):
        now = self.loop.clock.seconds()
        self.worst = max(self.worst, now - self.last)
        self.last = now

    def take(self) -> str:
        worst, self.worst = self.worst, 0.0
        return f"  stall={worst * 1000:.0f} ms"


async def main(reactor, args):
    ballast = bytearray(args.ballast << 20)
    for page in range(0, len(ballast), 4096):
        ballast[page] = 1
    root = tempfile.mkdtemp(prefix="aimx-hook-bench-")
    os.chmod(root, 0o755)
    dns = subprocess.Popen([sys.executable, "-m", "aimx.loopback.dns"], stdout=subprocess.PIPE)
    nameservers = dns.stdout.readline().split()[-1].decode()
    try:
        hook = make_hook("on_receive", DATE, fire_on_untrusted=True)
        box = MailboxConfig("box", "box@bench.test", args.owner, hooks=[hook])
        config = Config("bench.test", data_dir=root, mailboxes=[box])
        store = TimedStore(root)
        inbound = Inbound(
            config=lambda: config,
            store=store,
            resolver=Resolver.from_env({"AIMX_NAMESERVERS": nameservers}),
            run_in_thread=lambda f, *a: threads.deferToThreadPool(
                reactor, reactor.getThreadPool(), f, *a
            ),
        )
        runner = HookRunner(
            reactor, config=lambda: config, environ=os.environ,
            max_processes=args.max_processes,
        )
        latencies: list[float] = []
        fired: list[defer.Deferred] = []

        def listener(ingested):
            stored_id = ingested.stored.id

            def record(results):
                started = float(results[0].stdout)
                latencies.append((started - store.published[stored_id]) * 1000)

            fired.append(runner.on_received(ingested).addCallback(record))

        inbound.listeners.append(listener)

        probe = StallProbe(reactor)
        for n in range(args.messages):
            await inbound.deliver(envelope(n))
            await fired.pop()
        print(summary("sequential", latencies, probe.take()))

        latencies.clear()
        start = time.time()
        deliveries = []

        def arrive():
            # As SMTP sessions would: not all in one turn of the reactor.
            for n in range(args.burst):
                deliveries.append(inbound.deliver(envelope(args.messages + n)))
                yield

        await task.cooperate(arrive()).whenDone()
        await defer.gatherResults(deliveries)
        await defer.gatherResults(fired)
        wall = time.time() - start
        print(summary("burst", latencies,
                      f"  ({args.burst} msgs, max_processes={args.max_processes}, {wall:.1f} s)"
                      + probe.take()))

        print(summary("direct", await direct(reactor, args.messages), probe.take()))
        probe.loop.stop()
    finally:
        dns.terminate()
        dns.wait()
        shutil.rmtree(root, True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--max-processes", type=int, default=16)
    parser.add_argument("--owner", default=pwd.getpwuid(os.geteuid()).pw_name)
    parser.add_argument("--ballast", type=int, default=0, metavar="MB")
    args = parser.parse_args()
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, args)))
