"""aimx for the benchmarks: ``twistd -n --pidfile= -y bench/aimx_bench.tac``.

The same service tree as ``twistd -n aimx`` (built by L{aimx.service.makeService}
from the flags in C{AIMX_ARGS}, like the repository's ``aimx.tac``), with two
bench-only switches read from the environment:

  AIMX_BENCH_NODEDUP=1
      Do not remember Message-IDs after storing (C{MailStore._remember} is a
      no-op; the duplicate lookup itself still runs on every message).  The load
      generators send the same corpus file again and again, so with dedup on
      every message after the first would be acknowledged but not stored, and
      the end-to-end count in the mailbox directory would never be reached.

  AIMX_BENCH_PROBE=FILE[,INTERVAL_MS]
      A reactor-stall probe: a LoopingCall every INTERVAL_MS (default 5 ms)
      measures how late it runs.  Every 0.25 s it rewrites FILE (JSON: ticks,
      max lateness and when it happened, a histogram, the 10 worst stalls).
      Reset the counters with SIGUSR1.  Off unless set: the throughput runs do
      not carry its cost.

  AIMX_BENCH_LOG=off
      aimx's log observer (the one ``twistd -n aimx`` uses, L{aimx.logs.observer})
      is replaced by one that drops every event (the events are still built and
      published; nothing is formatted or written).  For A/B runs that price aimx's
      per-message logging; never for the recorded figures.

  AIMX_BENCH_WORKERS=N
      N worker processes instead of the default for this machine
      (L{aimx.smtp.preppool.default_size}); 0: prepared in the daemon's threads.
      For A/B runs.

  AIMX_BENCH_THREADS=N
      reactor.suggestThreadPoolSize(N): the size of the thread pool that runs
      prepare/store (Twisted's default is 10).  For A/B runs only.

Nothing here changes aimx's code on disk; the patch is applied in memory.
"""

import json
import os
import shlex
import signal
import time

from twisted.application import internet, service
from twisted.internet import reactor
from twisted.logger import ILogObserver

from aimx import logs
from aimx.service import Options, build, makeService
from aimx.store import mailstore

if os.environ.get("AIMX_BENCH_NODEDUP") == "1":
    mailstore.MailStore._remember = lambda self, *args: None


class StallProbe:
    """Lateness of a LoopingCall on the reactor thread."""

    EDGES_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)

    def __init__(self, path: str, interval: float):
        self.path = path
        self.interval = interval
        self.reset()

    def reset(self, *_):
        self.ticks = 0
        self.max_ms = 0.0
        self.max_at = None
        self.hist = [0] * (len(self.EDGES_MS) + 1)
        self.worst = []
        self.last = time.monotonic()
        self.since = time.time()

    def tick(self):
        now = time.monotonic()
        late = (now - self.last - self.interval) * 1e3
        self.last = now
        self.ticks += 1
        if late < 0:
            late = 0.0
        i = 0
        while i < len(self.EDGES_MS) and late > self.EDGES_MS[i]:
            i += 1
        self.hist[i] += 1
        if late > self.max_ms:
            self.max_ms, self.max_at = late, time.time()
        if late > 20:
            self.worst = sorted(self.worst + [(round(late, 1), time.time())], reverse=True)[:10]

    def dump(self):
        data = {
            "pid": os.getpid(),
            "since": self.since,
            "written": time.time(),
            "interval_ms": self.interval * 1e3,
            "ticks": self.ticks,
            "max_late_ms": round(self.max_ms, 2),
            "max_at": self.max_at,
            "hist_le_ms": dict(
                zip([str(e) for e in self.EDGES_MS] + ["inf"], self.hist)
            ),
            "worst": self.worst,
        }
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, self.path)


options = Options()
options.parseOptions(shlex.split(os.environ.get("AIMX_ARGS", "")))
application = service.Application("aimx-bench")
if os.environ.get("AIMX_BENCH_WORKERS"):
    build(options, workers=int(os.environ["AIMX_BENCH_WORKERS"])).setServiceParent(application)
else:
    makeService(options).setServiceParent(application)
if os.environ.get("AIMX_BENCH_THREADS"):
    reactor.suggestThreadPoolSize(int(os.environ["AIMX_BENCH_THREADS"]))
application.setComponent(ILogObserver, (lambda event: None)
                         if os.environ.get("AIMX_BENCH_LOG") == "off" else logs.observer())

_probe = os.environ.get("AIMX_BENCH_PROBE")
if _probe:
    _path, _, _ms = _probe.partition(",")
    probe = StallProbe(_path, float(_ms or 5) / 1e3)
    internet.TimerService(probe.interval, probe.tick).setServiceParent(application)
    internet.TimerService(0.25, probe.dump).setServiceParent(application)
    signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(probe.reset))
