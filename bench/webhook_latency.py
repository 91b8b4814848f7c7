#!/usr/bin/env python3
"""Webhook delivery latency and the spool under a burst with the receiver down (run by hand).

  PYTHONPATH=. python bench/webhook_latency.py [--messages 200] [--burst 1000]

One process runs the real daemon tree (L{aimx.service.build}, real reactor,
SMTP on 127.0.0.1:0, control socket, fixture DNS as a child process); a second
process is the HTTPS receiver on loopback (a Twisted site with a self-signed
certificate the daemon trusts through C{SSL_CERT_FILE}), which prints each
POST's C{webhook-id} and the moment it arrived.  Mail is handed to
C{Inbound.deliver} (no SMTP client: the figure is aimx's webhook path), and
"published" is the moment the inbound chain announces the stored message to
its listeners (the 250 is decided), so a latency covers the payload read, the
spool write (fsynced), the lookup through aimx's resolver, the TLS handshake
and the POST.

  sequential   one message at a time, each POST received before the next
  burst        --burst messages at once, receiver up (at most 4 in flight per URL)
  down         --burst messages with the receiver down: spool files and bytes,
               the daemon's RSS, MAILBOX-LIST round trips on the control socket
               and the reactor's longest stall while they spool and fail
  up           the receiver started again: seconds until every spooled delivery
               arrived (the first retry is 5 s after the first failure), and
               whether each webhook-id arrived exactly once

"stall" is the longest gap between turns of a 5 ms LoopingCall.
"""

import argparse
import collections
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from twisted.internet import defer, protocol, reactor, task

from aimx import service
from aimx.control import client, commands
from aimx.control.wire import SOCKET_NAME
from aimx.core import webhook
from aimx.store import keys
from aimx.testing.fakes import config_text
from hook_latency import envelope, summary  # bench/, beside this script

HOST = "hooks.bench.test"


# -- the receiver (a child process) ----------------------------------------------------------

def receiver(port: int, cert: str, key: str) -> None:
    """Serve HTTPS on 127.0.0.1:C{port}; print C{<webhook-id> <email id> <time>} per POST."""
    from twisted.internet import ssl
    from twisted.web import resource, server

    class Sink(resource.Resource):
        isLeaf = True

        def render_POST(self, request):
            now = time.time()
            body = json.loads(request.content.read())
            webhook_id = request.getHeader("webhook-id")
            sys.stdout.write(f"{webhook_id} {body['id']} {now:.6f}\n")
            sys.stdout.flush()
            request.setResponseCode(204)
            return b""

    with open(cert, "rb") as c, open(key, "rb") as k:
        options = ssl.PrivateCertificate.loadPEM(c.read() + k.read()).options()
    reactor.listenSSL(port, server.Site(Sink()), options, interface="127.0.0.1")
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    reactor.run()


class Receiver(protocol.ProcessProtocol):
    """The receiver process, seen from the bench: arrivals by email id."""

    def __init__(self, arrivals):
        self.arrivals = arrivals
        self.ready = defer.Deferred()
        self.ended = defer.Deferred()
        self.buffer = b""

    def outReceived(self, data):
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line == b"ready":
                self.ready.callback(None)
                continue
            webhook_id, email_id, at = line.decode().split()
            self.arrivals.append((webhook_id, email_id, float(at)))

    def processEnded(self, reason):
        self.ended.callback(None)


def start_receiver(port, cert, key, arrivals) -> Receiver:
    proto = Receiver(arrivals)
    argv = [sys.executable, os.path.abspath(__file__), "--receiver", str(port), cert, key]
    reactor.spawnProcess(proto, sys.executable, argv, env=dict(os.environ))
    return proto


# -- the daemon side ---------------------------------------------------------------------------



def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def spool(data_dir: str) -> tuple[int, int]:
    directory = os.path.join(data_dir, "webhooks")
    names = os.listdir(directory) if os.path.isdir(directory) else []
    return len(names), sum(os.path.getsize(os.path.join(directory, n)) for n in names)


class StallProbe:
    """The longest gap between turns of a 5 ms LoopingCall since the last take."""

    def __init__(self):
        self.worst, self.last = 0.0, reactor.seconds()
        self.loop = task.LoopingCall(self.tick)
        self.loop.start(0.005)

    def tick(self):
        now = reactor.seconds()
        self.worst, self.last = max(self.worst, now - self.last), now

    def take(self) -> str:
        worst, self.worst = self.worst, 0.0
        return f"  stall={worst * 1000:.0f} ms"


async def until(done, limit: float, what: str):
    deadline = time.time() + limit
    while not done():
        if time.time() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        await task.deferLater(reactor, 0.01, lambda: None)


async def main(args):
    root = tempfile.mkdtemp(prefix="aimx-webhook-bench-")
    config_dir, data_dir = os.path.join(root, "etc"), os.path.join(root, "data")
    runtime_dir = os.path.join(root, "run")
    for d in (config_dir, runtime_dir):
        os.makedirs(d)
    cert, key = os.path.join(root, "cert.pem"), os.path.join(root, "key.pem")
    keys.generate_self_signed(cert, key, HOST)
    keys.generate_dkim_key(config_dir, bits=1024)
    dns = subprocess.Popen([sys.executable, "-m", "aimx.loopback.dns", "--a", f"{HOST}=127.0.0.1"],
                           stdout=subprocess.PIPE)
    nameservers = dns.stdout.readline().split()[-1].decode()
    port = free_port()
    secret = os.path.join(config_dir, "bench.secret")
    with open(secret, "w") as f:
        f.write(webhook.make_secret(os.urandom(32)) + "\n")
    os.chmod(secret, 0o600)
    hook = {"event": "on_receive", "type": "webhook", "url": f"https://{HOST}:{port}/mail",
            "secret_file": secret, "fire_on_untrusted": True, "allow_private": True}
    owner = pwd.getpwuid(os.geteuid()).pw_name
    with open(os.path.join(config_dir, "config.toml"), "w") as f:
        f.write(config_text("bench.test", data_dir=data_dir, owner=owner,
                            mailboxes={"box": {"hooks": [hook]}}))
    options = service.Options()
    options.parseOptions(["--bind", "127.0.0.1:0", "--config-dir", config_dir,
                          "--runtime-dir", runtime_dir])
    environ = {**os.environ, "AIMX_NAMESERVERS": nameservers, "SSL_CERT_FILE": cert}
    daemon = service.build(options, reactor, environ=environ)
    published: dict[str, float] = {}
    daemon.inbound.listeners.insert(0, lambda ingested: published.__setitem__(
        ingested.stored.id, time.time()))
    daemon.startService()
    arrivals: list[tuple[str, str, float]] = []
    recv = None
    try:
        await daemon.dkim_check.done
        recv = start_receiver(port, cert, key, arrivals)
        await recv.ready
        probe = StallProbe()
        rss_start = rss_mib()

        def latencies(since: int) -> list[float]:
            return [(at - published[email]) * 1000 for _, email, at in arrivals[since:]]

        for n in range(args.messages):
            seen = len(arrivals)
            await daemon.inbound.deliver(envelope(n))
            await until(lambda: len(arrivals) > seen, 30, "a POST")
        print(summary("sequential", latencies(0), probe.take()))

        async def burst(first: int):
            deliveries = []

            def arrive():  # as SMTP sessions would: not all in one turn of the reactor
                for n in range(first, first + args.burst):
                    deliveries.append(daemon.inbound.deliver(envelope(n)))
                    yield

            await task.cooperate(arrive()).whenDone()
            await defer.gatherResults(deliveries)

        seen, start = len(arrivals), time.time()
        await burst(args.messages)
        await until(lambda: len(arrivals) >= seen + args.burst, 300, "the burst")
        print(summary("burst", latencies(seen),
                      f"  ({args.burst} msgs, {time.time() - start:.1f} s)" + probe.take()))
        await daemon.webhooks.idle()

        # -- receiver down ------------------------------------------------------------
        recv.transport.signalProcess(signal.SIGTERM)
        await recv.ended
        control = await client.connect(reactor, os.path.join(runtime_dir, SOCKET_NAME))
        rtts: list[float] = []

        async def ask():
            t = time.perf_counter()
            await control.call(commands.MailboxList)
            rtts.append((time.perf_counter() - t) * 1000)

        asking = task.LoopingCall(lambda: defer.Deferred.fromCoroutine(ask()))
        asking.start(0.05)
        seen, start = len(arrivals), time.time()
        rss_before = rss_mib()
        await burst(args.messages + args.burst)
        await until(lambda: sum(1 for d in daemon.webhooks.deliveries.values()
                                if d["attempts"]) >= args.burst, 120, "every first attempt")
        await daemon.webhooks.idle()
        spooled = time.time() - start
        asking.stop()
        files, size = spool(data_dir)
        print(f"down        {args.burst} msgs spooled and tried once in {spooled:.1f} s; spool "
              f"{files} files, {size / 1024:.0f} KiB ({size / max(files, 1):.0f} B each); "
              f"RSS {rss_start:.0f} MiB at start, {rss_before:.0f} before, "
              f"{rss_mib():.0f} after" + probe.take())
        print(summary("MAILBOX-LIST", rtts, "  (round trips every 50 ms while spooling)"))

        # -- receiver up again --------------------------------------------------------
        up = time.time()
        recv = start_receiver(port, cert, key, arrivals)
        await recv.ready
        await until(lambda: not daemon.webhooks.deliveries, 120, "the spool to drain")
        await daemon.webhooks.idle()
        drained = time.time() - up
        ids = collections.Counter(webhook_id for webhook_id, _, _ in arrivals[seen:])
        once = sum(1 for c in ids.values() if c == 1)
        print(f"up          all {len(ids)} delivered {drained:.1f} s after the receiver came "
              f"back; exactly once: {once}, more than once: {len(ids) - once}; "
              f"spool {spool(data_dir)[0]} files" + probe.take())
        control.close()
        probe.loop.stop()
    finally:
        if recv is not None and not recv.ended.called:
            recv.transport.signalProcess(signal.SIGTERM)
            await recv.ended
        await daemon.stopService()
        dns.terminate()
        dns.wait()
        shutil.rmtree(root, True)


def free_port() -> int:
    """A loopback port nothing listens on now (the receiver takes it later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--receiver"]:
        receiver(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        raise SystemExit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--burst", type=int, default=1000)
    args = parser.parse_args()
    task.react(lambda _: defer.Deferred.fromCoroutine(main(args)))
