#!/usr/bin/env python3
"""One big message into a fresh server: peak RSS growth and reactor stalls.

  stall_probe.py --port 2541 --pid PID --watch DIR --message BIG.eml
                 [--probe-file JSON] [--noop-interval 0.01] [--timeout 300]

1. reads VmHWM/VmRSS of PID (/proc/PID/status): the "before" figures;
2. resets the in-process probe of bench/aimx_bench.tac (SIGUSR1) when
   --probe-file is given;
3. opens a second SMTP connection and sends NOOP (RSET where NOOP is not
   implemented, as in Twisted's stock ESMTP) every --noop-interval seconds,
   timing each round trip (the reply comes from the reactor thread, so a slow
   one is a reactor stall as a client sees it);
4. sends the message with the kit's latency.py (--count 1 --warmup 0), which
   times the final "." to the 250 and to the file in --watch;
5. keeps pinging for --tail seconds, then reads VmHWM again and the probe file.

The growth VmHWM(after) - VmHWM(before) is compared with the message size as
received (LF -> CRLF, as on the wire, before dot-stuffing).  Use a freshly
started server: VmHWM is the high-water mark since the process started.
Prints human lines and one RESULT line.  Only talks to 127.0.0.1.
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
KIT = os.environ.get("AIMX_BENCH_KIT") or os.path.normpath(
    os.path.join(HERE, "..", "..", "shared", "bench"))


def status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS"):
                out[k] = int(v.split()[0])  # kB
    return out


class Pinger(threading.Thread):
    """NOOP round trips on their own SMTP connection."""

    def __init__(self, host, port, interval):
        super().__init__(daemon=True)
        self.interval = interval
        self.samples = []  # (seconds since start, rtt ms)
        self.stop = threading.Event()
        self.error = None
        self.sock = socket.create_connection((host, port), timeout=600)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.cmd = b"NOOP\r\n"
        self._line()                              # 220 greeting
        self.sock.sendall(b"EHLO probe.bench.test\r\n")
        while not self._line().startswith(b"250 "):
            pass

    def _line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def run(self):
        t0 = time.perf_counter()
        try:
            while not self.stop.is_set():
                t = time.perf_counter()
                self.sock.sendall(self.cmd)
                reply = self._line()
                rtt = (time.perf_counter() - t) * 1e3
                if not reply.startswith(b"250"):
                    if self.cmd == b"NOOP\r\n" and reply.startswith(b"500"):
                        self.cmd = b"RSET\r\n"      # Twisted's stock ESMTP has no NOOP
                        continue
                    raise RuntimeError("%r: %r" % (self.cmd, reply))
                self.samples.append((t - t0, rtt))
                self.stop.wait(self.interval)
            self.sock.sendall(b"QUIT\r\n")
        except Exception as e:  # reported, not raised: the main measurement goes on
            self.error = e
        finally:
            self.sock.close()


def wire_size(path):
    with open(path, "rb") as f:
        raw = f.read()
    return len(raw.replace(b"\r\n", b"\n")) + raw.replace(b"\r\n", b"\n").count(b"\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True, help="the server process")
    ap.add_argument("--watch", required=True, help="directory where the message's file appears")
    ap.add_argument("--message", required=True)
    ap.add_argument("--probe-file", help="JSON written by aimx_bench.tac (AIMX_BENCH_PROBE)")
    ap.add_argument("--noop-interval", type=float, default=0.01)
    ap.add_argument("--tail", type=float, default=1.0, help="seconds of pinging after the file")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--stall-ms", type=float, default=100, help="threshold reported as a stall")
    a = ap.parse_args()
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("loopback only")

    size = wire_size(a.message)
    before = status(a.pid)
    if a.probe_file:
        os.kill(a.pid, signal.SIGUSR1)
        time.sleep(0.6)                           # a dump after the reset
    pinger = Pinger(a.host, a.port, a.noop_interval)
    pinger.start()
    time.sleep(0.2)
    cmd = [sys.executable, os.path.join(KIT, "latency.py"), "--host", a.host,
           "--port", str(a.port), "--watch", a.watch, "--count", "1", "--warmup", "0",
           "--timeout", str(a.timeout), "--message", a.message]
    t_send = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    t_done = time.perf_counter()
    time.sleep(a.tail)
    pinger.stop.set()
    pinger.join(10)
    after = status(a.pid)
    sys.stdout.write(out.stdout)
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise SystemExit("latency.py failed (%d)" % out.returncode)
    lat = {}
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            lat = dict(kv.split("=", 1) for kv in line.split()[1:])

    rtts = [r for _t, r in pinger.samples]
    stalls = [r for r in rtts if r > a.stall_ms]
    probe = {}
    if a.probe_file:
        time.sleep(0.6)
        with open(a.probe_file) as f:
            probe = json.load(f)

    grow_kb = after["VmHWM"] - before["VmHWM"]
    mib = size / 2 ** 20
    print("message: %s, %d bytes as received (%.2f MiB)" % (a.message, size, mib))
    print("send + store: %.2f s wall (client: DATA content, '.', 250, file)" % (t_done - t_send))
    print("VmHWM before %.1f MiB, after %.1f MiB: growth %.1f MiB = %.2f x message"
          % (before["VmHWM"] / 1024, after["VmHWM"] / 1024, grow_kb / 1024, grow_kb / 1024 / mib))
    print("VmRSS before %.1f MiB, after %.1f MiB" % (before["VmRSS"] / 1024, after["VmRSS"] / 1024))
    if rtts:
        srt = sorted(rtts)
        print("%s on a second connection: %d round trips, median %.2f ms, p99 %.1f ms, "
              "max %.1f ms, %d over %.0f ms%s"
              % (pinger.cmd.decode().strip(), len(rtts), statistics.median(rtts), srt[int(0.99 * (len(srt) - 1))], max(rtts),
                 len(stalls), a.stall_ms,
                 "" if not stalls else " (worst: %s)" % ", ".join("%.0f" % x for x in
                                                                sorted(stalls, reverse=True)[:8])))
    if pinger.error:
        print("NOOP pinger stopped early: %r" % (pinger.error,))
    if probe:
        print("in-process LoopingCall probe (%.0f ms): %d ticks, max lateness %.1f ms; "
              "histogram (<= ms): %s; worst: %s"
              % (probe["interval_ms"], probe["ticks"], probe["max_late_ms"],
                 " ".join("%s:%d" % kv for kv in probe["hist_le_ms"].items() if kv[1]),
                 ", ".join("%.0f" % w for w, _t in probe["worst"])))
    res = {
        "size_mib": "%.2f" % mib,
        "hwm_before_mib": "%.1f" % (before["VmHWM"] / 1024),
        "hwm_after_mib": "%.1f" % (after["VmHWM"] / 1024),
        "hwm_growth_x": "%.2f" % (grow_kb / 1024 / mib),
        "noop_max_ms": "%.1f" % (max(rtts) if rtts else -1),
        "noop_over_%d" % a.stall_ms: len(stalls),
        "probe_max_late_ms": probe.get("max_late_ms", "-"),
        "file_ms": lat.get("file_p50", "-"),
        "ack_ms": lat.get("ack_p50", "-"),
    }
    print("RESULT " + " ".join("%s=%s" % kv for kv in res.items()))


if __name__ == "__main__":
    main()
