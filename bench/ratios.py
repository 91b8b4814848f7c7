"""The issue 17 figures from one anchors.sh run: aimx ÷ each anchor, round by round.

  ratios.py throughput-4k.csv          (compare.py --csv)
  ratios.py --latency latency.txt      (anchors.sh's latency lines)

A ratio is taken within a round (the targets of one round share the machine's state),
then the median over rounds is printed with its range.
"""

import argparse
import collections
import csv
import statistics


def _fmt(xs, f="%.2f"):
    return (f + " [" + f + "–" + f + "]") % (statistics.median(xs), min(xs), max(xs))


def throughput(path: str) -> None:
    rate = collections.defaultdict(dict)  # round -> target -> msg/s
    cpu = collections.defaultdict(list)
    for row in csv.DictReader(open(path)):
        rate[row["round"]][row["target"]] = float(row["deliver_mps"] or row["accept_mps"])
        if row.get("server_cpu_us_per_msg"):
            cpu[row["target"]].append(float(row["server_cpu_us_per_msg"]) / 1000)
    targets = sorted({t for r in rate.values() for t in r})
    mine = [t for t in ("aimx", "before") if t in targets]
    for me in mine:
        print(f"{me}: {_fmt([r[me] for r in rate.values() if me in r], '%.0f')} msg/s")
        for other in targets:
            if other == me:
                continue
            ratios = [r[me] / r[other] for r in rate.values() if me in r and other in r]
            if ratios:
                print(f"  {me} ÷ {other:<16} {_fmt(ratios)}")
    for t in targets:
        if cpu[t]:
            print(f"server CPU per message, {t:<14} {_fmt(cpu[t])} ms")


def latency(path: str) -> None:
    rows = collections.defaultdict(list)
    for line in open(path):
        kv = dict(x.split("=", 1) for x in line.split())
        rows[kv["server"]].append(kv)
    print(f"{'server':<16} {'file p50 ms':<22} {'file p99 ms':<22} ack p50 / p99 ms")
    for server, rs in rows.items():
        def col(key):
            return [float(r[key]) for r in rs]
        print(f"{server:<16} {_fmt(col('file_p50')):<22} {_fmt(col('file_p99')):<22} "
              f"{statistics.median(col('ack_p50')):.2f} / {statistics.median(col('ack_p99')):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("path")
    ap.add_argument("--latency", action="store_true")
    a = ap.parse_args()
    (latency if a.latency else throughput)(a.path)


if __name__ == "__main__":
    main()
