#!/usr/bin/env python3
"""Ways to start a hook as another user, side by side (run by hand, as root).

  python bench/hook_spawn.py [--runs 300] [--ballast MB] [--owner nobody]

Each candidate starts C{/usr/bin/date +%s.%N} in /tmp in a new session with only
descriptors 0-2, as --owner when it drops privileges, and is timed from the call
to the moment date started ("start") and for how long the call held the caller
("blocked": what a spawn costs the reactor).  The candidates take turns, run by
run, so a busy machine weighs on all of them alike.  --ballast touches that many
MiB first, to stand for a big daemon: a fork copies its page tables, vfork and
posix_spawn do not.

  posix_spawn       the floor: no cwd, no session, no drop
  popen             subprocess.Popen(cwd=, start_new_session=True): vfork + exec
  python helper     posix_spawn of `python -I -S -c`, which execs date: the
                    interpreter start-up aimx's old exec helper paid
  popen user=       Popen(user=, group=, extra_groups=[]): the drop in C, but
                    no vfork with ids to change, so a fork of the caller
  popen setpriv     Popen -> setpriv --reuid --regid --clear-groups -> date;
                    setpriv keeps root's capabilities until its exec
  popen unshare     Popen -> unshare --setgid --setuid -> date (aimx's choice)
"""

import argparse
import os
import pwd
import statistics
import subprocess
import sys
import time

DATE = ["/usr/bin/date", "+%s.%N"]
ENV = {"PATH": "/usr/bin:/bin"}


def candidates(uid: int, gid: int) -> dict:
    def popen(argv, **kwargs):
        return lambda out: subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, env=ENV, cwd="/tmp",
            start_new_session=True, close_fds=True, **kwargs,
        ).wait

    def posix_spawn(argv):
        def spawn(out):
            pid = os.posix_spawn(argv[0], argv, ENV, file_actions=[(os.POSIX_SPAWN_DUP2, out, 1)])
            return lambda: os.waitpid(pid, 0)
        return spawn

    helper = [sys.executable, "-I", "-S", "-c",
              "import os, sys; os.execv(sys.argv[1], sys.argv[1:])", *DATE]
    found = {
        "posix_spawn": posix_spawn(DATE),
        "popen": popen(DATE),
        "python helper": posix_spawn(helper),
    }
    if os.geteuid() == 0:
        found["popen user="] = popen(DATE, user=uid, group=gid, extra_groups=[])
        found["popen setpriv"] = popen(
            ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *DATE])
        found["popen unshare"] = popen(
            ["unshare", f"--setgid={gid}", f"--setuid={uid}", "--", *DATE])
    return found


def once(spawn) -> tuple[float, float]:
    """Start one date; C{(start, blocked)} in ms."""
    r, w = os.pipe()
    before = time.time()
    wait = spawn(w)
    returned = time.time()
    os.close(w)
    out = b""
    while chunk := os.read(r, 64):
        out += chunk
    os.close(r)
    wait()
    return (float(out) - before) * 1000, (returned - before) * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--ballast", type=int, default=0, metavar="MB")
    parser.add_argument("--owner", default="nobody")
    args = parser.parse_args()
    ballast = bytearray(args.ballast << 20)
    for page in range(0, len(ballast), 4096):
        ballast[page] = 1
    user = pwd.getpwnam(args.owner)
    spawns = candidates(user.pw_uid, user.pw_gid)
    times = {name: [] for name in spawns}
    for _ in range(args.runs):
        for name, spawn in spawns.items():
            times[name].append(once(spawn))
    print(f"ballast {args.ballast} MiB, {args.runs} runs each")
    for name, runs in times.items():
        start = statistics.quantiles([s for s, _ in runs], n=100)
        blocked = [b for _, b in runs]
        held = statistics.quantiles(blocked, n=100)
        print(f"{name:<14} start p50 {start[49]:6.2f} p99 {start[98]:6.2f} ms   "
              f"blocked p50 {held[49]:6.2f} p99 {held[98]:6.2f} max {max(blocked):6.2f} ms")


if __name__ == "__main__":
    main()
