#!/usr/bin/env python3
"""aimx's own pipeline stages, timed with the kit's harness (pipeline_cost.bench).

  aimx_stages.py CORPUS_DIR [--nameserver 127.0.0.1:5353] [--batches 7] [--min-time 0.2]
                 [--only parse,verify,render,write,full]

Same output columns as ../shared/bench/pipeline_cost.py (median wall us per
message, min-max over batches, CPU us, n x batches), so the two can be read
line by line.  Messages are read as pipeline_cost.py reads them (LF -> CRLF).
Stages:

  parse        aimx.core.message.parse_message (compat32 MIME walk, HTML ->
               Markdown through BeautifulSoup + markdownify, attachments)
  verify       aimx.auth.verify.verify_inbound with Resolver.from_env
               ({"AIMX_NAMESERVERS": NS}): DKIM (key over DNS), SPF, DMARC.
               "DNS cached": the resolver's own TTL cache as in the daemon (a
               repeat sender); "uncached": the cache flushed before each call, so
               three lookups go to dns_stub.py (a first-time sender).  Its parts:
               dkim with the key from memory (the kit's dkim row), spf.check,
               one Resolver.txt lookup (uncached)
  render       frontmatter.inbound_fields + frontmatter.render, as
               store_for_rcpt / MailStore._render do
  write        MailStore.store_inbound, durable (fsync file + directory, the
               daemon's setting) and not; with the corpus subject (every
               message in the same second gets the same base stem, so the
               stem search grows: what a burst of same-subject mail sees) and
               with a unique subject per message (a counter in front: the slug
               keeps only 20 characters)
  full         parse + verify_inbound + store_for_rcpt: everything the
               daemon does per message outside the SMTP protocol and logging

  aimx_stages.py CORPUS_DIR --mem BIG.eml [--nameserver ...]
      peak memory per stage for one message, each stage in a fresh child
      process (ru_maxrss growth, as pipeline_cost.py --mem): read, parse,
      dkim (key in memory), verify (verify_inbound over DNS), full (prepare +
      store_for_rcpt, durable)

The DNS stub must be running for verify and full (see README.md).
"""
import argparse
import itertools
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
KIT = os.environ.get("AIMX_BENCH_KIT") or os.path.normpath(
    os.path.join(HERE, "..", "..", "shared", "bench")
)
sys.path.insert(0, KIT)

import pipeline_cost  # noqa: E402  (the kit's harness: bench(), fmt_row())

from aimx.auth import dkim as aimx_dkim  # noqa: E402
from aimx.auth import spf as aimx_spf  # noqa: E402
from aimx.auth.resolver import Resolver  # noqa: E402
from aimx.auth.verify import verify_inbound  # noqa: E402
from aimx.core import frontmatter  # noqa: E402
from aimx.core.address import Envelope  # noqa: E402
from aimx.core.message import parse_message  # noqa: E402
from aimx.core.received import Prepared  # noqa: E402
from aimx.smtp import inbound  # noqa: E402
from aimx.store import configfile  # noqa: E402
from aimx.store.mailstore import MailStore, utcnow  # noqa: E402

PEER, MAIL_FROM, HELO = "127.0.0.1", "bench@example.org", "bench.test"
CONFIG = """domain = "bench.test"
[mailboxes.box]
address = "box@bench.test"
owner = "root"
"""


def prepare(env, resolver):
    """What the daemon's chain does before storing: parse, then authenticate."""
    parsed = parse_message(env.raw)
    auth = verify_inbound(env.raw, peer_ip=env.peer_ip, mail_from=env.mail_from,
                          helo=env.helo, identity=parsed.identity, resolver=resolver)
    return Prepared(env, parsed, auth)


def dkim_with(raw, dnsfunc):
    """aimx's DKIM verification with the key from memory (C{dnsfunc(name) -> record})."""
    return aimx_dkim.verify(raw, aimx_dkim.KeyLookup(lambda name: [dnsfunc(name)]),
                            lambda domain: True)


def fields_for(parsed, raw, auth=("pass", "pass", "pass")):
    fields = frontmatter.inbound_fields(
        id="",
        parsed=parsed,
        delivered_to="box@bench.test",
        date=parsed.date,
        received_at="",
        received_from_ip=PEER,
        size_bytes=len(raw),
        dkim=auth[0],
        spf=auth[1],
        dmarc=auth[2],
        trusted="none",
        mailbox="box",
        attachments=(),
    )
    return fields


MEM_STAGES = ("read", "parse", "dkim", "verify", "full")


def mem_child(stage, path, corpus, nameserver):
    with open(os.path.join(corpus, "dkim-txt.txt"), "rb") as f:
        dnsfunc = pipeline_cost.make_dnsfunc(f.read().strip())
    resolver = Resolver.from_env({"AIMX_NAMESERVERS": nameserver})
    out = tempfile.mkdtemp(prefix="aimx-mem-")
    etc = os.path.join(out, "etc")
    os.makedirs(etc)
    with open(os.path.join(etc, "config.toml"), "w") as f:
        f.write(CONFIG)
    config, _ = configfile.load(etc, data_dir_override=os.path.join(out, "data"))
    store = MailStore(config.data_dir, durable=True)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open(path, "rb") as f:
        raw = f.read().replace(b"\n", b"\r\n")
    t = time.perf_counter()
    try:
        if stage == "parse":
            parse_message(raw)
        elif stage == "dkim":
            assert dkim_with(raw, dnsfunc)[0].passed
        elif stage == "full":
            env = Envelope(peer_ip=PEER, helo=HELO, mail_from=MAIL_FROM,
                           rcpts=("box@bench.test",), raw=raw)
            prepared = prepare(env, resolver)
            inbound.store_for_rcpt(config, store, prepared, "box@bench.test", config.mailbox("box"))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("%d %d %d %.3f" % (base, peak, len(raw), dt))


def mem_verify_child(path, corpus, nameserver):
    """verify_inbound alone (the identity given, as the chain passes it)."""
    from aimx.core.identity import from_headers
    import email.parser
    import email.policy
    resolver = Resolver.from_env({"AIMX_NAMESERVERS": nameserver})
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open(path, "rb") as f:
        raw = f.read().replace(b"\n", b"\r\n")
    head = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw[:65536])
    identity = from_headers(head.raw_items())
    t = time.perf_counter()
    res = verify_inbound(raw, peer_ip=PEER, mail_from=MAIL_FROM, helo=HELO,
                         identity=identity, resolver=resolver)
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert res.dkim == "pass", res
    print("%d %d %d %.3f" % (base, peak, len(raw), dt))


def run_mem(a):
    print("%-14s %12s %14s %12s %10s" % ("aimx stage", "message MiB", "peak-base MiB",
                                         "x message", "wall s"))
    for st in MEM_STAGES:
        cmd = [sys.executable, os.path.abspath(__file__), a.corpus, "--mem", a.mem,
               "--nameserver", a.nameserver, "--mem-child", st]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            print(st, "failed:", out.stderr[-800:])
            continue
        base, peak, size, dt = out.stdout.split()
        grow = (int(peak) - int(base)) / 1024.0
        mib = int(size) / 2 ** 20
        print("%-14s %12.1f %14.1f %12.1f %10.2f" % (st, mib, grow, grow / mib, float(dt)))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus")
    ap.add_argument("--nameserver", default="127.0.0.1:5353")
    ap.add_argument("--batches", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.2)
    ap.add_argument("--only", default="parse,verify,render,write,full")
    ap.add_argument("--out", help="scratch directory (default: a temp dir, removed)")
    ap.add_argument("--mem", help="message file: peak memory per stage instead of timings")
    ap.add_argument("--mem-child", choices=MEM_STAGES, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.mem_child == "verify":
        return mem_verify_child(a.mem, a.corpus, a.nameserver)
    if a.mem_child:
        return mem_child(a.mem_child, a.mem, a.corpus, a.nameserver)
    if a.mem:
        return run_mem(a)
    only = set(a.only.split(","))
    names = ("plain-4k", "newsletter-60k", "attach-300k",
             "dkim-plain-4k", "dkim-newsletter-60k", "dkim-attach-300k")
    raw = {}
    for n in names:
        p = os.path.join(a.corpus, n + ".eml")
        if os.path.exists(p):
            with open(p, "rb") as f:
                raw[n] = f.read().replace(b"\n", b"\r\n")
    with open(os.path.join(a.corpus, "dkim-txt.txt"), "rb") as f:
        dnsfunc = pipeline_cost.make_dnsfunc(f.read().strip())
    resolver = Resolver.from_env({"AIMX_NAMESERVERS": a.nameserver})
    cache = getattr(resolver._dns, "cache", None)

    def flush():
        if cache is not None:
            cache.flush()
    out = a.out or tempfile.mkdtemp(prefix="aimx-stages-")
    os.makedirs(out, exist_ok=True)
    B, T = a.batches, a.min_time

    print("aimx stages; kit %s; messages with CRLF line ends; DNS %s" % (KIT, a.nameserver))
    print("%-34s %-22s %10s %21s %10s %9s" % ("step", "message", "median us", "min-max us",
                                              "cpu us", "n x batch"))

    def row(step, item, fn):
        w, cp, n = pipeline_cost.bench(fn, B, T)
        pipeline_cost.fmt_row(step, item, w, cp, n, B)

    parsed = {n: parse_message(r) for n, r in raw.items()}

    if "parse" in only:
        for n in ("plain-4k", "newsletter-60k", "attach-300k"):
            if n in raw:
                row("aimx parse_message", n, lambda r=raw[n]: parse_message(r))

    if "verify" in only:
        for n in ("dkim-plain-4k", "dkim-newsletter-60k", "dkim-attach-300k"):
            if n not in raw:
                continue
            r, p = raw[n], parsed[n]
            res = verify_inbound(r, peer_ip=PEER, mail_from=MAIL_FROM, helo=HELO,
                                 identity=p.identity, resolver=resolver)
            assert (res.dkim, res.spf, res.dmarc) == ("pass", "pass", "pass"), (n, res)

            def verify(r=r, p=p):
                return verify_inbound(r, peer_ip=PEER, mail_from=MAIL_FROM, helo=HELO,
                                      identity=p.identity, resolver=resolver)

            def verify_uncached(verify=verify):
                flush()
                return verify()

            row("aimx verify_inbound, DNS cached", n, verify)
            row("aimx verify_inbound, uncached", n, verify_uncached)
            row("  aimx dkim.verify, key in memory", n,
                lambda r=r: dkim_with(r, dnsfunc))
        row("  aimx spf.check, uncached", "example.org",
            lambda: (flush(), aimx_spf.check(PEER, MAIL_FROM, HELO, resolver)))
        row("  Resolver.txt, uncached", "_dmarc.example.org",
            lambda: (flush(), resolver.txt("_dmarc.example.org")))

    if "render" in only:
        for n in ("dkim-plain-4k", "dkim-newsletter-60k"):
            if n not in raw:
                continue
            p = parsed[n]
            now = utcnow()

            def rend(p=p, r=raw[n]):
                f = fields_for(p, r)
                f.update(id="2026-01-01-000000-x", received_at=frontmatter.rfc3339_utc(now))
                return frontmatter.render(f, p.body)

            row("aimx inbound_fields + render", n, rend)

    if "write" in only:
        for n in ("dkim-plain-4k", "dkim-attach-300k"):
            if n not in raw:
                continue
            p = parsed[n]
            fields = fields_for(p, raw[n])
            for durable in (False, True):
                for unique in (False, True):
                    d = os.path.join(out, "write")
                    shutil.rmtree(d, ignore_errors=True)
                    os.makedirs(d)
                    store = MailStore(d, durable=durable)
                    seq = itertools.count()

                    def write(store=store, seq=seq, p=p, fields=fields, unique=unique):
                        i = next(seq)
                        subject = "%d %s" % (i, p.subject) if unique else p.subject
                        return store.store_inbound("box", "root", subject,
                                                   dict(fields, message_id="%d@bench" % i),
                                                   p.body, p.attachments)

                    row("aimx store_inbound%s%s" % (" durable" if durable else "",
                                                   " uniq-subj" if unique else " same-subj"),
                        n, write)
                    files = len(os.listdir(os.path.join(d, "inbox", "box")))
                    print("%-34s %-22s %d files written" % ("", "", files), flush=True)
            shutil.rmtree(os.path.join(out, "write"), ignore_errors=True)

    if "full" in only:
        etc = os.path.join(out, "etc")
        os.makedirs(etc, exist_ok=True)
        with open(os.path.join(etc, "config.toml"), "w") as f:
            f.write(CONFIG)
        for durable in (False, True):
            for n in ("dkim-plain-4k", "dkim-newsletter-60k", "dkim-attach-300k"):
                if n not in raw:
                    continue
                d = os.path.join(out, "full")
                shutil.rmtree(d, ignore_errors=True)
                config, _ = configfile.load(etc, data_dir_override=d)
                store = MailStore(d, durable=durable)
                store._remember = lambda *args: None   # the same file again and again
                env = Envelope(peer_ip=PEER, helo=HELO, mail_from=MAIL_FROM,
                               rcpts=("box@bench.test",), raw=raw[n])

                def full(env=env, config=config, store=store):
                    prepared = prepare(env, resolver)
                    return inbound.store_for_rcpt(config, store, prepared, "box@bench.test", config.mailbox("box"))

                assert full().stored.path
                row("aimx FULL prepare+store%s" % (" durable" if durable else ""), n, full)  # DNS cached
                shutil.rmtree(d, ignore_errors=True)
    if not a.out:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
