#!/usr/bin/env python3
"""Summarise a py-spy raw (collapsed-stack) profile of the aimx daemon.

  profile_top.py PROFILE.txt [--top 20] [--cpu-us-per-msg US]
  profile_top.py PROFILE.txt --pairs --rate HZ     (a --threads profile of one big message)

PROFILE.txt is what ``py-spy record -f raw --function`` writes: one line per
distinct stack, frames joined by ";", then a sample count.  Prints
  - stages: the share of samples whose stack contains a frame matching each
    stage's pattern (first match in the order below wins), so the shares add up;
  - top functions by self samples (the innermost frame) and by inclusive samples.
With --cpu-us-per-msg (the server CPU per message measured in the same load)
each share is also given as microseconds per message.
With --pairs (for ``py-spy record --threads``) prints instead the time per
thread and innermost caller -> callee pair, in ms at --rate samples/s: a long
run of one C call there (re.sub, re.split) is a stretch the GIL was held.
"""
import argparse
import collections
import re

# (name, regex on one frame); checked innermost-first per stage order below
STAGES = [
    ("parse: aimx.core.message.parse_message", r"^parse_message \(aimx/core/message"),
    ("verify: DKIM (aimx.auth.dkim.verify)", r"^verify \(aimx/auth/dkim"),
    ("verify: SPF (aimx.auth.spf.check)", r"^check \(aimx/auth/spf"),
    ("verify: DMARC lookup", r"^_dmarc_record \(aimx/auth/verify"),
    ("verify: other", r"^verify_inbound \(aimx/auth/verify"),
    ("store: store_for_rcpt (route, trust, frontmatter, write)", r"^store_for_rcpt \(aimx/smtp/inbound"),
    ("index: catching up with stored mail (indexer._catch_up)", r"^_catch_up \(aimx/indexer"),
    ("audit log (record, append)", r"\(aimx/auditlog\.py|\(aimx/store/audit\.py"),
    ("hooks: deciding which fire (HookRunner.on_received)", r"^HookRunner\.on_received"),
    ("worker pipe: requests and answers (smtp/preppool.py)", r"\(aimx/smtp/preppool\.py"),
    # twisted/python/log.py's callWithLogger/callWithContext wrap every reactor I/O
    # callback: they are not logging, so only twisted/logger/ frames count here
    ("logging (twisted.logger, aimx.logs: emit, format, write)",
     r"\(twisted/logger/|\(aimx/logs\.py|\(aimx/ops/logline\.py"),
    ("SMTP protocol (AimxESMTP, reactor thread)", r"\(aimx/smtp/server\.py"),
    ("ingest chain on the reactor (Inbound, Deferreds)", r"\(aimx/smtp/inbound\.py"),
    ("thread pool hand-off (twisted threads, queue)", r"\(twisted/_threads/|\(twisted/python/threadpool|\(threading\.py|\(queue\.py"),
    ("reactor, TCP transport, other", r"."),
]


def read(path):
    stacks = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, n = line.rpartition(" ")
            stacks.append((stack.split(";"), int(n)))
    return stacks


def norm(frame):
    # "func (file.py:123)" -> "func (file.py)" ; py-spy --function already drops lines
    return re.sub(r":\d+\)$", ")", frame)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profile")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--cpu-us-per-msg", type=float)
    ap.add_argument("--pairs", action="store_true")
    ap.add_argument("--rate", type=float, default=1000)
    a = ap.parse_args()
    stacks = read(a.profile)
    total = sum(n for _s, n in stacks)
    if not total:
        raise SystemExit("no samples")
    if a.pairs:
        pairs = collections.Counter()
        for frames, n in stacks:
            thread = frames[0].split(":")[-1].strip() if frames[0].startswith("thread") else "?"
            fr = [norm(f) for f in frames]
            pair = " -> ".join(fr[-2:])
            pairs[(thread, pair)] += n
        print("%d samples at %g Hz in %s (%.0f ms)" % (total, a.rate, a.profile, total / a.rate * 1e3))
        for (thread, pair), n in pairs.most_common(a.top):
            print("  %7.0f ms  %-16s %s" % (n / a.rate * 1e3, thread[:16], pair))
        return
    us = a.cpu_us_per_msg

    def share(n):
        s = "%5.1f%%" % (100.0 * n / total)
        if us:
            s += " %7.0f us/msg" % (us * n / total)
        return s

    pats = [(name, re.compile(rx)) for name, rx in STAGES]
    stage = collections.Counter()
    selfc = collections.Counter()
    incl = collections.Counter()
    for frames, n in stacks:
        frames = [norm(f) for f in frames]
        for name, rx in pats:
            if any(rx.search(f) for f in frames):
                stage[name] += n
                break
        selfc[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    print("%d samples in %s" % (total, a.profile))
    print("\nstages (a sample counts for the first stage, in this order, found in its stack):")
    for name, _rx in STAGES:
        print("  %s  %s" % (share(stage[name]), name))
    print("\ntop %d functions by self samples:" % a.top)
    for f, n in selfc.most_common(a.top):
        print("  %s  %s" % (share(n), f))
    print("\ntop %d functions by inclusive samples (skipping thread/reactor entry frames):" % a.top)
    skip = re.compile(r"\((threading\.py|twisted/_threads/|twisted/python/(threadpool|context)\.py|"
                      r"twisted/application/app\.py|twisted/scripts/|twisted/internet/(base|"
                      r"epollreactor|posixbase|selectreactor|_threads)\.py|<string>)|"
                      r"^(run|<module>|main) ")
    shown = 0
    for f, n in incl.most_common():
        if skip.search(f):
            continue
        print("  %s  %s" % (share(n), f))
        shown += 1
        if shown >= a.top:
            break


if __name__ == "__main__":
    main()
