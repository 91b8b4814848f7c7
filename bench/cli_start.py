#!/usr/bin/env python3
"""The CLI's listing verbs as whole processes, beside `python -c pass` (issue 15); not a test.

  python bench/cli_start.py [--dir /tmp/aimx-indexbench] [-n 100000] [-r 30]
                            [--tree PATH ...] [--verb 'mailboxes list' ...]

The mailbox is mail_index.py's (DIR is shared with it: an existing mailbox of N
messages is reused, else one is written, which takes minutes at 100 000), served
by `python -m aimx serve` of this checkout on 127.0.0.1 with its index ready.
Each round, in a rotated order, spawns `python -c pass` (the floor) and, from
each tree (PYTHONPATH, from /, default this checkout; compare a commit with
`git archive <commit> | tar -x -C /tmp/aimx-before`), every verb as the `aimx`
console script runs it (`from aimx.cli import main`), and times MAILBOX-LIST in
this process (the daemon's share); the wall time is from the spawn to the exit.
The children write bytecode, and an unmeasured first run of each leaves it.  Reported: medians [min-max] and the median of the per-round ratios
to the floor; then, per tree and verb, the modules with the most self time in
`python -X importtime` (median of 5 runs).  Run as root (the mailbox is root's).
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)

import mail_index  # noqa: E402

#: What the `aimx` console script runs (setup.cfg's entry point), argv after it.
SCRIPT = "import sys\nfrom aimx.cli import main\nsys.exit(main())"
_IMPORT = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def spawn(argv, env) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd="/", stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{argv} failed: {done.stderr.decode(errors='replace')}")
    return elapsed


def import_self_times(argv, env, runs: int = 5) -> list[tuple[str, float]]:
    """Module -> median self time (ms) under -X importtime, the largest first."""
    samples: dict[str, list[float]] = {}
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-X", "importtime", *argv[1:]], env=env,
                              cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
        for match in _IMPORT.finditer(done.stderr):
            samples.setdefault(match[4], []).append(int(match[1]) / 1000)
    medians = {name: statistics.median(v + [0] * (runs - len(v))) for name, v in samples.items()}
    return sorted(medians.items(), key=lambda item: -item[1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default="/tmp/aimx-indexbench")
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("-r", "--rounds", type=int, default=30)
    parser.add_argument("--tree", action="append", help="a checkout (repeatable)")
    parser.add_argument("--verb", action="append", help="aimx arguments, e.g. 'hooks list'")
    args = parser.parse_args(argv)
    trees = [os.path.abspath(t) for t in args.tree or [REPO]]
    verbs = [v.split() for v in args.verb or ["mailboxes list"]]
    root = os.path.abspath(args.dir)
    data = os.path.join(root, "data")
    if not os.path.isdir(os.path.join(data, "inbox", "box")):
        for sub in ("inbox", "sent"):
            os.makedirs(os.path.join(data, sub), exist_ok=True)
        print(f"generating {args.n} messages in {data}", flush=True)
        mail_index.generate(data, args.n)
    etc = mail_index.config(root, data)
    runtime = os.path.join(root, "run-cli")
    daemon = mail_index.Daemon(REPO, etc, runtime, {}, os.path.join(root, "aimx-cli.log"))
    try:
        # The children write bytecode and the warm-up leaves it, as an installed aimx has.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(AIMX_RUNTIME_DIR=runtime, AIMX_CONFIG_DIR=etc)
        _wait_ready(daemon.socket)
        targets = [("python -c pass", [sys.executable, "-c", "pass"], dict(env))]
        for tree in trees:
            for verb in verbs:
                targets.append((f"{os.path.basename(tree) or tree}: aimx {' '.join(verb)}",
                                [sys.executable, "-c", SCRIPT, *verb],
                                dict(env, PYTHONPATH=tree)))
        for _, argv_, env_ in targets:  # warm the bytecode caches
            spawn(argv_, env_)
        times = {name: [] for name, _, _ in targets}
        times["MAILBOX-LIST alone (in this process)"] = []
        ratios = {name: [] for name, _, _ in targets[1:]}
        for rnd in range(args.rounds):
            shift = rnd % len(targets)
            order = targets[shift:] + targets[:shift]
            this = {name: spawn(argv_, env_) for name, argv_, env_ in order}
            this["MAILBOX-LIST alone (in this process)"] = _mailbox_list(daemon.socket)
            for name, value in this.items():
                times[name].append(value)
                if name in ratios:
                    ratios[name].append(value / this["python -c pass"])
        load = os.getloadavg()[0]
        print(f"\n{args.rounds} rounds, load {load:.1f}; wall ms median [min-max], "
              "ratio = median of per-round ratios to python -c pass")
        width = max(len(name) for name in times)
        for name, values in times.items():
            ms = sorted(v * 1000 for v in values)
            ratio = f"  {statistics.median(ratios[name]):.2f}x" if name in ratios else ""
            print(f"  {name:<{width}}  {statistics.median(ms):6.1f} "
                  f"[{ms[0]:.1f}-{ms[-1]:.1f}]{ratio}")
        for name, argv_, env_ in targets[1:]:
            top = import_self_times(argv_, env_)
            total = sum(ms for _, ms in top)
            print(f"\n{name}: imports {total:.1f} ms (self times, median of 5); the largest:")
            for module, ms in top[:12]:
                print(f"  {ms:6.2f} ms  {module}")
    finally:
        daemon.stop()


def _mailbox_list(path: str) -> float:
    from aimx.control import blockingclient, wire

    started = time.perf_counter()
    connection = blockingclient.connect(path)
    try:
        connection.call(wire.MailboxList)
    finally:
        connection.close()
    return time.perf_counter() - started


def _wait_ready(path: str) -> None:
    """Until INDEX-STATUS says the mailbox's index is ready."""
    from aimx.control import blockingclient, wire

    while True:
        connection = blockingclient.connect(path)
        try:
            [state] = connection.call(wire.IndexStatus, mailbox="box")["indexes"]
        finally:
            connection.close()
        if state["state"] == "ready":
            return
        time.sleep(1)


if __name__ == "__main__":
    main()
