"""`aimx mcp` cold start to the first answered tool call (issue 15 point 2), run by hand.

    /work/main/.venv/bin/python bench/mcp_coldstart.py [-r ROUNDS] [--tree DIR ...]

Starts one aimx daemon (`python -m aimx serve` from this checkout, as root, on
127.0.0.1 only) in a scratch directory, with mailbox `agent` (owner root) holding 50
messages, then, round after round, spawns `python -m aimx mcp` from each C{--tree}
(default: this checkout; give several to compare side by side, e.g. a `git archive`
of the commit before a change) and speaks to it as an MCP client does:

    initialize -> notifications/initialized -> tools/list -> tools/call email_list

Timed from just before the child is spawned to the line answering the tool call
(C{call}), and to the C{initialize} answer (C{init}); C{CPU} is the child's user +
system time to its exit (less sensitive than wall time to a busy machine).  The same is repeated with no
daemon listening (C{call, no daemon}: the answer is "daemon not running").  The trees
run in an order rotated every round; the figures are the median [min-max] of rounds,
and the ratio to the first tree is taken round by round.  The children may write
bytecode (C{PYTHONDONTWRITEBYTECODE} is dropped), and a first unmeasured start of each
tree leaves it cached, as an installed aimx has it.  With C{--source} the trees' own
C{aimx/**/__pycache__} are removed first and the children write none, so aimx's
modules are compiled at every start, as when a checkout runs with
C{PYTHONDONTWRITEBYTECODE=1} (the dependencies keep their bytecode).  Everything started here is
stopped by PID at the end.  Not a test: nothing here asserts a time.
"""

import argparse
import json
import os
import resource
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_daemon(scratch: str) -> tuple[subprocess.Popen, str]:
    """An aimx daemon with mailbox C{agent} and 50 inbox messages; (process, runtime dir)."""
    sys.path.insert(0, REPO)
    from aimx.core import frontmatter
    from aimx.store import keys

    etc, data, run = (os.path.join(scratch, d) for d in ("etc", "data", "run"))
    for d in (etc, data, run):
        os.makedirs(d)
    with open(os.path.join(etc, "config.toml"), "w") as f:
        f.write('domain = "bench.local"\n[mailboxes.agent]\n'
                'address = "agent@bench.local"\nowner = "root"\n')
    keys.generate_dkim_key(etc, 2048)
    inbox = os.path.join(data, "inbox", "agent")
    os.makedirs(inbox, mode=0o700)
    for n in range(50):
        stem = f"2026-01-01-{n:06}-hello"
        fields = {"id": stem, "message_id": f"{n}@example.net", "thread_id": f"t{n}",
                  "from": "Sender <sender@example.net>", "to": "agent@bench.local",
                  "subject": f"Hello {n}", "date": "2026-01-01T12:00:00Z",
                  "trusted": "true", "mailbox": "agent", "read": False}
        with open(os.path.join(inbox, stem + ".md"), "wb") as f:
            f.write(frontmatter.render(fields, f"Body {n}\n"))
    log = open(os.path.join(scratch, "aimx.log"), "wb")
    env = dict(os.environ, PYTHONPATH=REPO, AIMX_NAMESERVERS="127.0.0.1:9")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "aimx", "serve", "--bind", f"127.0.0.1:{free_port()}",
         "--config-dir", etc, "--data-dir", data, "--runtime-dir", run],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env,
    )
    sock = os.path.join(run, "aimx.sock")
    end = time.monotonic() + 30
    while not os.path.exists(sock):
        if daemon.poll() is not None or time.monotonic() > end:
            raise SystemExit(f"the daemon did not come up; see {scratch}/aimx.log")
        time.sleep(0.05)
    return daemon, run


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def first_call(tree: str, runtime_dir: str, source: bool = False) -> tuple[float, float, float]:
    """One cold `aimx mcp` from C{tree}: seconds to the initialize answer, to the
    answer of the first tool call, and the child's CPU seconds (user + system, to
    its exit after stdin closes)."""
    messages = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "bench", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
         "params": {"name": "email_list", "arguments": {"mailbox": "agent", "limit": 50}}},
    ]
    env = dict(os.environ, PYTHONPATH=tree, AIMX_RUNTIME_DIR=runtime_dir)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: modules come from bytecode
    if source:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    cpu = _children_cpu()
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "aimx", "mcp"], cwd=tree, env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
    answered = {}
    try:
        for message in messages:
            child.stdin.write(json.dumps(message).encode() + b"\n")
            child.stdin.flush()
            if "id" not in message:
                continue
            ready, _, _ = select.select([child.stdout], [], [], TIMEOUT)
            if not ready:
                raise SystemExit(f"{tree}: no answer to {message['method']}")
            reply = json.loads(child.stdout.readline())
            answered[reply["id"]] = time.perf_counter() - start
            if reply["id"] == 3 and "result" not in reply:
                raise SystemExit(f"{tree}: the tool call failed: {reply}")
    finally:
        child.stdin.close()
        child.wait(TIMEOUT)
        child.stdout.close()
    return answered[1], answered[3], _children_cpu() - cpu


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-r", "--rounds", type=int, default=10)
    parser.add_argument("--tree", action="append", help="a checkout to run `aimx mcp` from")
    parser.add_argument("--source", action="store_true",
                        help="compile aimx's modules at every start (no bytecode of the trees)")
    args = parser.parse_args()
    trees = [os.path.abspath(t) for t in args.tree or [REPO]]
    scratch = tempfile.mkdtemp(prefix="aimx-mcpbench-")
    nodaemon = tempfile.mkdtemp(prefix="aimx-mcpbench-nodaemon-")
    daemon, runtime_dir = start_daemon(scratch)
    results = {(t, kind): [] for t in trees for kind in ("init", "call", "cpu", "down")}
    try:
        for tree in trees:  # warm the page cache and the bytecode of every tree once
            if args.source:
                for folder, dirs, _ in os.walk(os.path.join(tree, "aimx")):
                    if "__pycache__" in dirs:
                        shutil.rmtree(os.path.join(folder, "__pycache__"))
            first_call(tree, runtime_dir, args.source)
        for r in range(args.rounds):
            order = trees[r % len(trees):] + trees[:r % len(trees)]
            for tree in order:
                init, call, cpu = first_call(tree, runtime_dir, args.source)
                results[tree, "init"].append(init)
                results[tree, "call"].append(call)
                results[tree, "cpu"].append(cpu)
            for tree in order:
                results[tree, "down"].append(first_call(tree, nodaemon, args.source)[1])
    finally:
        daemon.terminate()
        daemon.wait(30)
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(nodaemon, ignore_errors=True)
    load = os.getloadavg()
    print(f"{args.rounds} rounds, {os.cpu_count()} CPUs, load {load[0]:.2f} {load[1]:.2f}, "
          f"{sys.executable}{', aimx from source' if args.source else ''}; "
          "seconds, median [min-max]")
    print(f"{'tree':32} {'init':>20} {'call':>20} {'call/first':>10} {'CPU':>20} "
          f"{'call, no daemon':>20}")
    base = results[trees[0], "call"]
    for tree in trees:
        ratio = statistics.median(c / b for c, b in zip(results[tree, "call"], base))
        print(f"{tree[-32:]:32} {summary(results[tree, 'init']):>20} "
              f"{summary(results[tree, 'call']):>20} {ratio:>10.2f} "
              f"{summary(results[tree, 'cpu']):>20} {summary(results[tree, 'down']):>20}")


if __name__ == "__main__":
    main()
