#!/usr/bin/env python3
"""aimx outbound-send benchmark: SEND over the control socket vs a bare Twisted SMTP client.

  PYTHONPATH=/work/main /work/venv/bin/python bench/send_bench.py [-n 200] [-c 8] [-r 3]

Everything runs on 127.0.0.1, in the scratch directory /tmp/aimx-sendbench (wiped at start):
  - the shared kit's dns_stub.py: sink.test MX 10 mx.sink.test., mx.sink.test A 127.0.0.1
    (plus aimx._domainkey.bench.local TXT, so the daemon's start-up DKIM check passes);
  - Postfix's smtp-sink, the receiving MX (it discards: the protocol ceiling);
  - the aimx daemon, `python -m aimx serve` (domain bench.local, mailbox agent owned by
    root, a fresh RSA-2048 DKIM key) with AIMX_NAMESERVERS -> the stub and
    AIMX_SMTP_OUT_PORT -> the sink.  Every process is killed by PID at exit.

aimx: this process submits unsigned messages built with aimx.core.compose (a ~4 KiB
Markdown body, unique Message-ID and Subject each, all composed before timing) with
commands.Send on a persistent AMP connection (one per concurrent worker).  The daemon
checks, renders Markdown->HTML, DKIM-signs, resolves MX (cached after the first send),
delivers over SMTP to the sink, writes the sent copy (fsynced) and then answers: the
timed span is callRemote(Send) -> answer.
Anchor (the floor): the same final message -- assembled by aimx's assemble() and signed
once up front with dkimpy, so its per-message cost is SMTP only -- sent by Twisted's stock
ESMTPSender (ESMTPSenderFactory, no retry), one connection per message, as aimx does; the
timed span is one full SMTP transaction (connect .. QUIT, connection closed).
anchor-nd: the same with TCP_NODELAY set on the socket.  Stock Twisted (and aimx) leave
Nagle on, and the DATA tail then waits for the peer's delayed ACK (~40 ms on Linux);
anchor-nd is the floor without that stall.

Per round: latency (N sequential sends: p50/p95/p99/max, share >= 40 ms) and throughput
(N sends with C in flight: msg/s) for each target, the order rotated every round.  The
figures are medians over R rounds [min-max]; ratios are taken round by round, then the
median.  Daemon CPU per message is utime+stime from /proc/<pid>/stat around each run;
"client CPU" is this process's own CPU (the AMP client for aimx; the whole SMTP client
for the anchors).  The sent/agent directory is emptied between runs (untimed).
"""

import argparse
import atexit
import io
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

W = "/tmp/aimx-sendbench"
KIT = os.environ.get("KIT", "/work/shared/bench")
SINK = "/usr/sbin/smtp-sink"
SENDER, RCPT = "agent@bench.local", "dest@sink.test"
PROCS: list[subprocess.Popen] = []


def agent_body() -> str:
    """A ~4 KiB Markdown report of the kind an agent sends: prose, lists, one table, one code block."""
    parts = ["Hi Dana,\n\nHere is the **nightly summary** for the `ingest` pipeline. Seven shards "
             "ran; one needs a human decision, the rest is for the record.\n"]
    for i in range(1, 8):
        parts.append(
            f"\n## Shard {i}\n\nThe run started at 02:{10 * i:02d} UTC and finished after "
            f"{12 + i} minutes. The upstream API answered slowly for the first few minutes, so "
            f"the `fetch` step retried {i * 7} times before settling; nothing was lost, but the "
            f"retries pushed the run past its usual window. Peak memory was {200 + 17 * i} MiB.\n\n"
            f"- rows in: {10000 + i * 331}, rows out: {10000 + i * 347}\n"
            f"- rejected: {i - 1} (schema drift in `events.v{i}`), quarantined for review\n"
            f"- trend: see [the dashboard](https://dash.example.com/jobs/{1000 + i})\n")
    parts.append("\n## Totals\n\n| shard | rows | rejected | minutes |\n| --- | ---: | ---: | ---: |\n"
                 + "".join(f"| {i} | {10000 + i * 347} | {i - 1} | {12 + i} |\n" for i in range(1, 8))
                 + "\n## Needs a decision\n\nShard 3 rejected rows whose `ts` field is a string. "
                 "I can coerce them and rerun; the coercion is reversible, since the original values "
                 "are kept in `ts_raw` and the quarantine table keeps its own copy for 30 days. "
                 "A dry run, for the record:\n\n```\n$ ingest --shard 3 --since 24h --coerce ts\n"
                 "dry run: 2 rows would change, 0 rejected\n```\n\n"
                 "Reply *yes* and I will run it tonight; otherwise the rows stay quarantined.\n\n"
                 "-- the ingest agent\n")
    return "".join(parts)


# ------------------------------------------------------------------ processes
def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1."""
    while True:
        with socket.socket() as t, socket.socket(type=socket.SOCK_DGRAM) as u:
            t.bind(("127.0.0.1", 0))
            try:
                u.bind(t.getsockname())
                return t.getsockname()[1]
            except OSError:
                continue


def spawn(name: str, argv: list[str], env=None) -> subprocess.Popen:
    with open(f"{W}/{name}.log", "wb") as log:
        PROCS.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=env, cwd=W))
    return PROCS[-1]


def stop_all() -> None:
    while PROCS:
        p = PROCS.pop()
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def wait_until(ok, what: str, proc: subprocess.Popen, log: str, timeout=30.0) -> None:
    end = time.monotonic() + timeout
    while not ok():
        if proc.poll() is not None or time.monotonic() > end:
            tail = Path(f"{W}/{log}.log").read_text(errors="replace")[-2000:]
            raise SystemExit(f"{what} did not come up (rc={proc.poll()}); {log}.log:\n{tail}")
        time.sleep(0.05)


def tcp_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def cpu_s(pid: int) -> float:
    """utime+stime of a process, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_everything(py: str) -> tuple[subprocess.Popen, int, str]:
    """DNS stub, sink, aimx; returns (aimx process, sink port, control socket path)."""
    from aimx.store import keys
    etc, data, run = f"{W}/etc", f"{W}/data", f"{W}/run"
    for d in (etc, data, run):
        os.makedirs(d)
    with open(f"{etc}/config.toml", "w") as f:
        f.write('domain = "bench.local"\n[mailboxes.agent]\n'
                'address = "agent@bench.local"\nowner = "root"\n')
    txt = keys.generate_dkim_key(etc, 2048)
    dns_port, sink_port, smtp_port = free_port(), free_port(), free_port()
    chunks = " ".join('"%s"' % txt[i:i + 250] for i in range(0, len(txt), 250))
    dns = spawn("dns", [py, f"{KIT}/dns_stub.py", "--port", str(dns_port), "--domain", "sink.test",
                        "--record", "aimx._domainkey.bench.local", "TXT", chunks])
    sink = spawn("sink", [SINK, "-u", "nobody", f"127.0.0.1:{sink_port}", "1024"])
    wait_until(lambda: tcp_open(dns_port), "dns_stub", dns, "dns")
    wait_until(lambda: tcp_open(sink_port), "smtp-sink", sink, "sink")
    env = dict(os.environ, AIMX_NAMESERVERS=f"127.0.0.1:{dns_port}",
               AIMX_SMTP_OUT_PORT=str(sink_port))
    aimx = spawn("aimx", [py, "-m", "aimx", "serve", "--bind", f"127.0.0.1:{smtp_port}",
                          "--config-dir", etc, "--data-dir", data, "--runtime-dir", run], env)
    sock = f"{run}/aimx.sock"
    wait_until(lambda: os.path.exists(sock) and tcp_open(smtp_port), "aimx", aimx, "aimx")
    return aimx, sink_port, sock


def anchor_message(sample: bytes) -> bytes:
    """C{sample} as aimx would put it on the wire: assembled by aimx, signed once by dkimpy."""
    import dkim

    from aimx.core.assemble import assemble
    from aimx.core.submission import check_header_block
    from aimx.outbox import SIGNED_HEADERS
    from aimx.store import configfile, keys
    config, _ = configfile.load(f"{W}/etc", data_dir_override=f"{W}/data")
    lines, body = check_header_block(sample)
    wire = assemble(lines, body, text_only=False, html_body=None,
                    signature=config.effective_signature).wire
    sig = dkim.sign(wire, b"aimx", b"bench.local", keys.load_dkim_private_key(f"{W}/etc"),
                    canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=[h.encode() for h in SIGNED_HEADERS])
    return sig + wire


def clean_sent() -> int | None:
    """Empty sent/agent; return size_bytes (what aimx put on the wire) of a sent copy."""
    d, size = f"{W}/data/sent/agent", None
    for name in os.listdir(d) if os.path.isdir(d) else []:
        p = os.path.join(d, name)
        for line in Path(p).read_text(errors="replace").splitlines() if size is None and os.path.isfile(p) else ():
            if line.startswith("size_bytes ="):  # TOML frontmatter
                size = int(line.partition("=")[2])
        shutil.rmtree(p) if os.path.isdir(p) else os.unlink(p)
    return size


# ------------------------------------------------------------------ measuring
def pct(sorted_s: list[float], q: float) -> float:
    return sorted_s[max(0, math.ceil(q * len(sorted_s)) - 1)]


async def run_batch(send_one, n: int, conc: int) -> tuple[list[float], float]:
    """n sends, conc in flight; (per-send seconds, wall seconds)."""
    from twisted.internet import defer
    times: list[float] = []
    todo = iter(range(n))

    async def worker(w):
        for i in todo:
            t = time.perf_counter()
            await send_one(w, i)
            times.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await defer.gatherResults([defer.Deferred.fromCoroutine(worker(w)) for w in range(conc)],
                              consumeErrors=True)
    return times, time.perf_counter() - t0


TARGETS = ("aimx", "anchor", "anchor-nd")


async def bench(reactor, a, aimx, sink_port, sock):
    from twisted.internet import defer
    from twisted.mail import smtp

    from aimx.control import client, commands
    from aimx.core.compose import compose
    body = agent_body()
    seq = iter(range(10**9))

    def message() -> bytes:
        return compose(from_=f"Ingest agent <{SENDER}>", to=[RCPT], body=body,
                       subject=f"Nightly ingest report #{next(seq)}", now=datetime.now(UTC))

    conns = [await client.connect(reactor, sock) for _ in range(max(a.concurrency, 1))]
    failures, pending = [], []

    async def aimx_send(w, i):
        reply = await conns[w].call(commands.Send, message=pending.pop()).addTimeout(60, reactor)
        if any(d["status"] != "delivered" for d in reply.get("deliveries") or []):
            failures.append(reply)

    # warm-up: imports, thread pool, DNS cache; then the anchor's message and aimx's size
    pending[:] = [message() for _ in range(5)]
    await run_batch(aimx_send, 5, 1)
    if failures:
        raise SystemExit(f"aimx did not deliver: {failures[0]}")
    aimx_size = clean_sent()
    final = anchor_message(message())
    lf = final.replace(b"\r\n", b"\n")  # ESMTPSender turns LF into CRLF (aimx does the same)

    class Sender(smtp.ESMTPSender):
        def connectionMade(self):
            self.transport.setTcpNoDelay(self.factory.nodelay)
            super().connectionMade()

    class OneShot(smtp.ESMTPSenderFactory):
        """One connection, no retry; C{closed} fires when it is gone (after QUIT), as in aimx."""
        protocol = Sender

        def clientConnectionLost(self, connector, reason):
            super().clientConnectionLost(connector, reason)
            self.closed.callback(None)

        clientConnectionFailed = clientConnectionLost

    def anchor(nodelay: bool):
        async def send(w, i):
            sent = defer.Deferred()
            f = OneShot(None, None, SENDER, [RCPT], io.BytesIO(lf), sent, retries=0,
                        requireAuthentication=False, requireTransportSecurity=False)
            f.domain, f.nodelay, f.closed = b"bench.local", nodelay, defer.Deferred()
            reactor.connectTCP("127.0.0.1", sink_port, f, timeout=60)
            await sent.addTimeout(60, reactor)
            await f.closed.addTimeout(60, reactor)
        return send

    senders = dict(zip(TARGETS, (aimx_send, anchor(False), anchor(True))))
    await run_batch(senders["anchor-nd"], 5, 1)
    rows = []
    for r in range(a.rounds):
        order = TARGETS[r % 3:] + TARGETS[:r % 3]  # rotated every round
        res = {}
        for kind, conc in (("lat", 1), ("thr", a.concurrency)):
            for name in order:
                clean_sent()
                pending[:] = [message() for _ in range(a.n)]
                d0, c0 = cpu_s(aimx.pid), time.process_time()
                times, wall = await run_batch(senders[name], a.n, conc)
                d1, c1 = cpu_s(aimx.pid), time.process_time()
                s = sorted(times)
                res[name, kind] = dict(p50=pct(s, .5), p95=pct(s, .95), p99=pct(s, .99),
                                       max=s[-1], rate=a.n / wall, cli=(c1 - c0) / a.n,
                                       slow=100 * sum(t >= .04 for t in s) / a.n,
                                       dcpu=(d1 - d0) / a.n)
        rows.append(res)
        print(f"round {r + 1}: " + "; ".join(
            f"{t} p50 {res[t, 'lat']['p50'] * 1e3:.2f} ms, {res[t, 'thr']['rate']:.0f} msg/s"
            for t in TARGETS), flush=True)
    for c in conns:
        c.close()
    return rows, len(final), aimx_size, len(body.encode()), failures


def report(a, rows, size, aimx_size, body_size, failures) -> str:
    def col(name, kind, key, scale=1.0):
        v = [r[name, kind][key] * scale for r in rows]
        return f"{statistics.median(v):.2f} [{min(v):.2f}-{max(v):.2f}]"

    def ratio(kind, key, base):
        v = [r["aimx", kind][key] / r[base, kind][key] for r in rows]
        return statistics.median(v), f"{statistics.median(v):.2f}x [{min(v):.2f}-{max(v):.2f}]"

    def line(label, kind, key, scale, targets=TARGETS, ratios=True):
        cells = [col(t, kind, key, scale) if t in targets else "-" for t in TARGETS]
        if ratios:
            cells += [ratio(kind, key, "anchor")[1], ratio(kind, key, "anchor-nd")[1]]
        return f"{label:30}" + "".join(f" {c:>25}" for c in cells)

    c = a.concurrency
    out = [f"aimx send bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: N={a.n}, C={c}, "
           f"R={a.rounds}; Markdown body {body_size} B -> {size} B signed on the wire "
           f"(aimx's sent copy: size_bytes={aimx_size}); median [min-max] of rounds",
           f"{'':30}" + "".join(f" {h:>25}" for h in (*TARGETS, "aimx/anchor", "aimx/anchor-nd"))]
    for key in ("p50", "p95", "p99", "max"):
        out.append(line(f"latency {key} ms", "lat", key, 1e3))
    out.append(line("% sends >= 40 ms", "lat", "slow", 1, ratios=False))
    out.append(line(f"throughput msg/s, C={c}", "thr", "rate", 1))
    for kind, label in (("lat", "sequential"), ("thr", f"C={c}")):
        out.append(line(f"daemon CPU ms/msg, {label}", kind, "dcpu", 1e3, ("aimx",), False))
    for kind, label in (("lat", "sequential"), ("thr", f"C={c}")):
        out.append(line(f"client CPU ms/msg, {label}", kind, "cli", 1e3, TARGETS, False))
    for base in ("anchor", "anchor-nd"):
        out.append(f"=> aimx p50 = {ratio('lat', 'p50', base)[0]:.2f}x {base} p50; aimx p99 = "
                   f"{ratio('lat', 'p99', base)[0]:.2f}x {base} p99; aimx msgs/s = "
                   f"{ratio('thr', 'rate', base)[0]:.2f}x {base} msgs/s")
    out.append("(anchor: stock Twisted ESMTPSender like aimx's; anchor-nd: the same with TCP_NODELAY; "
               "ratios are medians of per-round ratios)")
    if failures:
        out.append(f"!! {len(failures)} aimx sends not delivered, e.g. {failures[0]}")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=200, help="messages per run (200)")
    ap.add_argument("-c", "--concurrency", type=int, default=8, help="sends in flight (8)")
    ap.add_argument("-r", "--rounds", type=int, default=3, help="interleaved rounds (3)")
    a = ap.parse_args()
    for tool in (SINK, f"{KIT}/dns_stub.py"):
        if not os.path.exists(tool):
            raise SystemExit(f"missing {tool} (apt-get install postfix; KIT=...)")
    shutil.rmtree(W, ignore_errors=True)
    os.makedirs(W)
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = []
    try:
        aimx, sink_port, sock = start_everything(sys.executable)
        from twisted.internet import defer, task

        def go(reactor):
            d = defer.Deferred.fromCoroutine(bench(reactor, a, aimx, sink_port, sock))
            return d.addCallback(result.append)

        try:
            task.react(go)
        except SystemExit as e:
            if e.code or not result:
                raise
        table = report(a, *result[0])
        print(table)
        with open(f"{W}/results.txt", "w") as f:
            f.write(table + "\n")
        print(f"written to {W}/results.txt; logs in {W}/*.log")
    finally:
        stop_all()


if __name__ == "__main__":
    main()
