#!/usr/bin/env python3
"""The mail index at 100 000 messages (issue 15, point 2), run by hand; not a test.

  python bench/mail_index.py [-n 100000] [--dir /tmp/aimx-indexbench] [--rounds 15]
                             [--store-rounds 5] [--store-count 100] [--main /work/main]

Everything on 127.0.0.1, in DIR (kept between runs: the generated mailbox is
reused when it has the same size).  Steps, each timed side by side with its
anchor in the same run, interleaved round by round, medians:

 1. a mailbox `box` of N messages in inbox/ (10 % replies, quoting their
    parent, in threads; 70 % read) and N/20 in sent/, written as aimx writes
    them (frontmatter.render), bodies of ~150-400 words drawn from a Zipf
    vocabulary; a loopback DNS (python -m aimx.loopback.dns) and
    `python -m aimx serve` (this checkout) on them;
 2. the index build at start-up (INDEX-STATUS until ready), and its size;
 3. newest-50 listing: the MCP tool body `email_list` (MAILBOX-LIST then
    MAIL-LIST over the control socket, as `aimx mcp` runs it) and MAIL-LIST
    alone, against a bare `sorted(os.scandir(inbox))` of the same directory;
 4. MAILBOX-LIST with unread counts (the daemon's answer), and the whole
    `aimx mailboxes list` process (with `python -c pass` for scale);
 5. MAIL-SEARCH of two-word queries (common, middling and rare words) and
    MAIL-THREAD of a reply;
 6. store cost: two daemons side by side, the --main checkout (no index) and
    this one (indexing its 100 000-message mailbox), each sent the same
    messages by SMTP one after the other, round by round: median time to the
    250 and daemon CPU per message (utime+stime, read after the index caught
    up, so the deferred indexing is counted);
 7. `aimx mcp` cold start to the first answered email_list;
 8. in-process, the deferred indexing itself: MailIndex.update of freshly
    stored files into a copy of the 100 000-message index, one at a time and
    in batches of 50 (what the daemon does 0.5 s after the 250, in a thread).

Results: a table on stdout and DIR/results.json.
"""

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import smtplib
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from aimx.control import aioclient, wire  # noqa: E402
from aimx.core import frontmatter  # noqa: E402
from aimx.core.threadid import thread_id  # noqa: E402
from aimx.store import keys, mailindex  # noqa: E402

DOMAIN = "bench.test"
START = 1704067200  # 2024-01-01T00:00:00Z


def words(seed=7, size=30000):
    rng = random.Random(seed)
    common = ("the of and to in is you that it he was for on are as with his they at be "
              "this have from or one had by word but not what all were we when your can said "
              "there use an each which she do how their if will up other about out many then "
              "them these so some her would make like him into time has look two more write go "
              "see number no way could people my than first water been call who oil its now "
              "find long down day did get come made may part").split()
    vocab = list(common)
    while len(vocab) < size:
        w = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 10)))
        vocab.append(w)
    weights = [1 / (i + 1) for i in range(len(vocab))]
    return vocab, weights


def generate(data: str, n: int) -> dict:
    """Write the mailbox; returns what the queries need (words by rank, a reply's id)."""
    vocab, weights = words()
    rng = random.Random(11)
    inbox, sent = (os.path.join(data, f, "box") for f in ("inbox", "sent"))
    for path in (inbox, sent):
        os.makedirs(path, mode=0o700)
    roots: list[tuple[str, str, str]] = []  # (message_id, subject, body) of thread starts
    reply_id = None
    started = time.monotonic()
    for i in range(n + n // 20):
        folder = "sent" if i >= n else "inbox"
        when = START + i * 300
        stamp = time.strftime("%Y-%m-%d-%H%M%S", time.gmtime(when))
        date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
        text = " ".join(rng.choices(vocab, weights, k=rng.randint(150, 400)))
        body = "\n\n".join(text[j:j + 600] for j in range(0, len(text), 600))
        msgid = f"m{i}@example.org"
        in_reply_to = references = None
        if roots and rng.random() < 0.1:
            parent_id, subject, parent_body = rng.choice(roots)
            in_reply_to = references = parent_id
            subject = "Re: " + subject.removeprefix("Re: ")
            quoted = "\n".join("> " + line for line in parent_body[:800].splitlines())
            body = f"{text[:300]}\n\nOn Mon, 1 Jan 2024, Someone <a@example.org> wrote:\n{quoted}"
        else:
            subject = " ".join(rng.choices(vocab, weights, k=rng.randint(3, 7))).capitalize()
            if len(roots) < 5000:
                roots.append((msgid, subject, body))
        stem = f"{stamp}-{subject[:20].lower().replace(' ', '-').strip('-')}"
        fields = {
            "id": stem, "message_id": msgid,
            "thread_id": thread_id(msgid, in_reply_to, references),
            "from": f"Sender {i % 500} <sender{i % 500}@example{i % 37}.org>",
            "to": f"box@{DOMAIN}", "delivered_to": f"box@{DOMAIN}", "subject": subject,
            "date": date, "received_at": date, "size_bytes": len(body) + 400,
            "in_reply_to": in_reply_to, "references": references,
            "dkim": "none", "spf": "none", "dmarc": "none",
            "trusted": "true" if i % 3 == 0 else "none", "mailbox": "box",
            "read": folder == "inbox" and rng.random() < 0.7,
        }
        if folder == "sent":
            fields.update(outbound=True, outbound_format="markdown",
                          delivery_status="delivered")
        if in_reply_to and folder == "inbox":
            reply_id = stem
        with open(os.path.join(inbox if folder == "inbox" else sent, stem + ".md"), "wb") as f:
            f.write(frontmatter.render(fields, body))
    print(f"  generated {n} + {n // 20} messages in {time.monotonic() - started:.0f} s",
          flush=True)
    return {"ranks": {str(r): vocab[r] for r in (3, 20, 300, 600, 5000, 9000)},
            "reply": reply_id, "n": n}


def config(root: str, data: str) -> str:
    etc = os.path.join(root, "etc")
    os.makedirs(etc, exist_ok=True)
    with open(os.path.join(etc, "config.toml"), "w") as f:
        f.write(f'domain = "{DOMAIN}"\ndata_dir = "{data}"\n\n[mailboxes.box]\n'
                f'address = "box@{DOMAIN}"\nowner = "root"\n')
    if not os.path.exists(keys.dkim_paths(etc)[0]):
        keys.generate_dkim_key(etc, bits=1024)
    return etc


class Daemon:
    """`python -m aimx serve` of a checkout, killed by pid at the end."""

    def __init__(self, checkout: str, etc: str, runtime: str, env: dict, log: str):
        self.runtime = runtime
        os.makedirs(runtime, exist_ok=True)
        for name in ("aimx.pid", "aimx.sock"):
            if os.path.exists(os.path.join(runtime, name)):
                os.unlink(os.path.join(runtime, name))
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "aimx", "serve", "--bind", "127.0.0.1:0",
                 "--config-dir", etc, "--runtime-dir", runtime],
                env=dict(os.environ, PYTHONPATH=checkout, **env), cwd=checkout, stderr=out)
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(runtime, "aimx.pid")):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"daemon did not start; see {log}")
            time.sleep(0.05)
        from aimx.ops import bind
        with open(log, encoding="utf-8", errors="replace") as f:
            self.port = bind.split_address(bind.logged_addresses(f.read())[0])[1]
        self.socket = os.path.join(runtime, "aimx.sock")

    def cpu(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def timed(coroutine_factory, loop) -> float:
    started = time.perf_counter()
    loop.run_until_complete(coroutine_factory())
    return time.perf_counter() - started


def median_ms(samples) -> float:
    return statistics.median(samples) * 1000


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--dir", default="/tmp/aimx-indexbench")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--store-rounds", type=int, default=10)
    parser.add_argument("--store-count", type=int, default=100)
    parser.add_argument("--main", default="/work/main", help="checkout without the index")
    args = parser.parse_args(argv)
    root = os.path.abspath(args.dir)
    data = os.path.join(root, "data")
    marker = os.path.join(root, "generated.json")
    facts = None
    if os.path.exists(marker):
        with open(marker) as f:
            facts = json.load(f)
        if facts.get("n") != args.n:
            facts = None
    if facts is None:
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(data)
        for sub in ("inbox", "sent"):
            os.makedirs(os.path.join(data, sub))
        print(f"generating {args.n} messages in {data}", flush=True)
        facts = generate(data, args.n)
        with open(marker, "w") as f:
            json.dump(facts, f)
    etc = config(root, data)
    dns = subprocess.Popen([sys.executable, "-m", "aimx.loopback.dns", "--port", "0"],
                           env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE,
                           text=True)
    nameservers = dns.stdout.readline().strip().rsplit(" ", 1)[1]
    env = {"AIMX_NAMESERVERS": nameservers}
    results: dict = {"n": args.n, "sent": args.n // 20}
    daemons = []
    loop = asyncio.new_event_loop()
    try:
        rebuilt = not os.path.exists(mailindex.index_path(data, "box"))
        t0 = time.monotonic()
        daemon = Daemon(REPO, etc, os.path.join(root, "run"), env,
                        os.path.join(root, "aimx.log"))
        daemons.append(daemon)
        client = aioclient.ControlClient(daemon.socket)

        async def status():
            return (await client.call(wire.IndexStatus, mailbox="box"))["indexes"][0]

        if not rebuilt:
            loop.run_until_complete(client.call(wire.IndexRebuild, mailbox="box"))
            t0 = time.monotonic()
        last = None
        while True:
            state = loop.run_until_complete(status())
            if state["state"] == "ready":
                break
            if state["state"] == "building" and state["total"]:
                now = (state["done"] * 10) // state["total"]
                if now != last:
                    print(f"  indexing {state['done']}/{state['total']}", flush=True)
                    last = now
            time.sleep(0.5)
        results["build_s"] = time.monotonic() - t0
        path = mailindex.index_path(data, "box")
        size = sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))
        results["index_mb"] = size / 1e6
        results["index_mb_per_100k"] = size / 1e6 * 100_000 / (args.n + args.n // 20)
        print(f"index built in {results['build_s']:.0f} s, {results['index_mb']:.0f} MB",
              flush=True)

        from aimx.mcp.tools import Tools

        tools = Tools(client)
        inbox = os.path.join(data, "inbox", "box")
        ranks = facts["ranks"]
        queries = {
            "common": f"{ranks['3']} {ranks['20']}",
            "middling": f"{ranks['300']} {ranks['600']}",
            "rare": f"{ranks['5000']} {ranks['9000']}",
        }

        def scandir_sort():
            return sorted((e.name for e in os.scandir(inbox)), reverse=True)

        samples = {k: [] for k in ("scandir", "email_list", "mail_list", "mailbox_list",
                                   "thread", *(f"search_{q}" for q in queries))}
        ratio_list, ratio_mail = [], []
        # warm up
        scandir_sort()
        loop.run_until_complete(tools.email_list("box"))
        for _ in range(args.rounds):
            started = time.perf_counter()
            scandir_sort()
            bare = time.perf_counter() - started
            samples["scandir"].append(bare)
            t = timed(lambda: tools.email_list("box"), loop)
            samples["email_list"].append(t)
            ratio_list.append(t / bare)
            t = timed(lambda: client.call(wire.MailList, mailbox="box", limit=50), loop)
            samples["mail_list"].append(t)
            ratio_mail.append(t / bare)
            samples["mailbox_list"].append(timed(lambda: client.call(wire.MailboxList), loop))
            for name, query in queries.items():
                samples[f"search_{name}"].append(timed(
                    lambda: client.call(wire.MailSearch, mailbox="box", query=query), loop))
            samples["thread"].append(timed(
                lambda: client.call(wire.MailThread, mailbox="box", id=facts["reply"]), loop))
        for key, values in samples.items():
            results[f"{key}_ms"] = median_ms(values)
        results["email_list_over_scandir"] = statistics.median(ratio_list)
        results["mail_list_over_scandir"] = statistics.median(ratio_mail)
        counts = loop.run_until_complete(client.call(wire.MailboxList))["mailboxes"][0]
        results["counts"] = {k: counts[k] for k in ("total", "unread", "sent_count")}
        hits = {name: len(loop.run_until_complete(client.call(
            wire.MailSearch, mailbox="box", query=query, limit=200))["emails"])
            for name, query in queries.items()}
        results["queries"] = {name: [queries[name], hits[name]] for name in queries}

        cli_env = dict(os.environ, PYTHONPATH=REPO, AIMX_RUNTIME_DIR=daemon.runtime,
                       AIMX_CONFIG_DIR=etc)
        cli, bare_python = [], []
        for _ in range(5):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "aimx", "mailboxes", "list"], env=cli_env,
                           capture_output=True, check=True)
            cli.append(time.perf_counter() - started)
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            bare_python.append(time.perf_counter() - started)
        results["cli_mailboxes_list_ms"] = median_ms(cli)
        results["python_start_ms"] = median_ms(bare_python)

        results["mcp_cold_ms"] = median_ms([mcp_cold(cli_env) for _ in range(3)])

        # Store cost: the main checkout's daemon (no index) beside this one.
        other_root = os.path.join(root, "main")
        shutil.rmtree(other_root, ignore_errors=True)
        other_data = os.path.join(other_root, "data")
        os.makedirs(other_data)
        other_etc = config(other_root, other_data)
        baseline = Daemon(os.path.abspath(args.main), other_etc, os.path.join(other_root, "run"),
                          env, os.path.join(other_root, "aimx.log"))
        daemons.append(baseline)
        store = {"main": {"latency": [], "cpu": []}, "index": {"latency": [], "cpu": []}}
        counter = 0
        for rnd in range(args.store_rounds):
            order = [("main", baseline), ("index", daemon)]
            if rnd % 2:
                order.reverse()
            for name, target in order:
                before = target.cpu()
                latencies = []
                with smtplib.SMTP("127.0.0.1", target.port, timeout=30) as smtp:
                    for _ in range(args.store_count):
                        counter += 1
                        raw = (f"From: Bench <b{counter}@example.org>\r\nTo: box@{DOMAIN}\r\n"
                               f"Subject: Store bench {counter}\r\n"
                               f"Message-ID: <store{counter}@example.org>\r\n"
                               f"Date: Mon, 01 Jun 2026 10:00:00 +0000\r\n\r\n"
                               + "Some words for the index to take. " * 60 + "\r\n").encode()
                        started = time.perf_counter()
                        smtp.sendmail(f"b{counter}@example.org", [f"box@{DOMAIN}"], raw)
                        latencies.append(time.perf_counter() - started)
                time.sleep(1.5)  # the index catches up (0.5 s settle) before CPU is read
                store[name]["latency"].append(statistics.median(latencies))
                store[name]["cpu"].append((target.cpu() - before) / args.store_count)
        for name in store:
            results[f"store_{name}_latency_ms"] = median_ms(store[name]["latency"])
            results[f"store_{name}_cpu_ms"] = median_ms(store[name]["cpu"])
        results["store_latency_delta_ms"] = statistics.median(
            a - b for a, b in zip(store["index"]["latency"], store["main"]["latency"])) * 1000
        results["store_cpu_delta_ms"] = statistics.median(
            a - b for a, b in zip(store["index"]["cpu"], store["main"]["cpu"])) * 1000
        deltas = sorted((a - b) * 1000 for a, b in zip(store["index"]["latency"],
                                                       store["main"]["latency"]))
        results["store_latency_delta_range_ms"] = [deltas[0], deltas[-1]]
        deltas = sorted((a - b) * 1000 for a, b in zip(store["index"]["cpu"],
                                                       store["main"]["cpu"]))
        results["store_cpu_delta_range_ms"] = [deltas[0], deltas[-1]]
        results.update(indexing_cost(root, data))
    finally:
        for d in daemons:
            d.stop()
        dns.kill()
        dns.wait()
        loop.close()
    report(results)
    with open(os.path.join(root, "results.json"), "w") as f:
        json.dump(results, f, indent=2)


def indexing_cost(root: str, data: str) -> dict:
    """ms per message of MailIndex.update into a copy of the big index."""
    from aimx.store.mailstore import MailStore
    from aimx.store.mailindex import MailIndex

    scratch = os.path.join(root, "indexcost")
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(os.path.join(scratch, "index"))
    path = os.path.join(scratch, "index", "box.sqlite")
    shutil.copyfile(mailindex.index_path(data, "box"), path)
    store = MailStore(scratch)
    owner = __import__("pwd").getpwuid(os.geteuid()).pw_name
    out = {}
    for batch in (1, 50):
        stems = []
        for i in range(200):
            fields = {"message_id": f"cost{batch}-{i}@example.org", "thread_id": "0" * 16,
                      "from": "Bench <b@example.org>", "to": f"box@{DOMAIN}",
                      "delivered_to": f"box@{DOMAIN}", "subject": f"Cost {batch} {i}",
                      "date": None, "size_bytes": 2000, "dkim": "none", "spf": "none",
                      "dmarc": "none", "trusted": "none", "mailbox": "box", "read": False}
            stems.append(store.store_inbound("box", owner, f"Cost {batch} {i}", fields,
                                             "Some words for the index to take. " * 60,
                                             ()).id)
        index = MailIndex.open(path, mailindex.folder_dirs(scratch, "box"))
        started = time.process_time()
        for start in range(0, len(stems), batch):
            index.update("inbox", [stem + ".md" for stem in stems[start:start + batch]])
        out[f"indexing_cpu_batch{batch}_ms"] = (time.process_time() - started) / len(stems) * 1000
        index.close()
    shutil.rmtree(scratch, ignore_errors=True)
    return out


def mcp_cold(env) -> float:
    """`aimx mcp` started, initialize, email_list answered: seconds."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "aimx", "mcp"], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)

    def send(message):
        child.stdin.write(json.dumps(message).encode() + b"\n")
        child.stdin.flush()

    send({"jsonrpc": "2.0", "id": 1, "method": "initialize",
          "params": {"protocolVersion": "2024-11-05", "capabilities": {},
                     "clientInfo": {"name": "bench", "version": "1"}}})
    child.stdout.readline()
    send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    send({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
          "params": {"name": "email_list", "arguments": {"mailbox": "box"}}})
    reply = json.loads(child.stdout.readline())
    elapsed = time.perf_counter() - started
    child.stdin.close()
    child.wait(30)
    assert not reply["result"].get("isError"), reply
    return elapsed


def report(r: dict) -> None:
    rows = [
        ("messages (inbox + sent)", f"{r['n']} + {r['sent']}"),
        ("index build at start-up", f"{r['build_s']:.0f} s"),
        ("index size", f"{r['index_mb']:.0f} MB ({r['index_mb_per_100k']:.0f} MB per 100 000)"),
        ("bare scandir + sort of inbox/", f"{r['scandir_ms']:.1f} ms"),
        ("MCP email_list newest 50 (MAILBOX-LIST + MAIL-LIST)",
         f"{r['email_list_ms']:.1f} ms = {r['email_list_over_scandir']:.2f}x scandir+sort"),
        ("MAIL-LIST newest 50 alone",
         f"{r['mail_list_ms']:.1f} ms = {r['mail_list_over_scandir']:.2f}x scandir+sort"),
        ("MAILBOX-LIST with unread counts", f"{r['mailbox_list_ms']:.1f} ms  {r['counts']}"),
        ("`aimx mailboxes list` process", f"{r['cli_mailboxes_list_ms']:.0f} ms "
                                          f"(python -c pass: {r['python_start_ms']:.0f} ms)"),
        *((f"MAIL-SEARCH {name} '{query}' ({hits} hits, 20 shown)",
           f"{r[f'search_{name}_ms']:.1f} ms") for name, (query, hits) in r["queries"].items()),
        ("MAIL-THREAD of a reply", f"{r['thread_ms']:.1f} ms"),
        ("aimx mcp cold start to first email_list", f"{r['mcp_cold_ms']:.0f} ms"),
        ("store, time to 250: main / index",
         f"{r['store_main_latency_ms']:.2f} / {r['store_index_latency_ms']:.2f} ms "
         f"(delta {r['store_latency_delta_ms']:+.2f} ms)"),
        ("store, daemon CPU per message: main / index",
         f"{r['store_main_cpu_ms']:.2f} / {r['store_index_cpu_ms']:.2f} ms "
         f"(delta {r['store_cpu_delta_ms']:+.2f} ms)"),
        ("  per-round deltas (latency; CPU)",
         "[{:+.2f}, {:+.2f}] ms; [{:+.2f}, {:+.2f}] ms".format(
             *r["store_latency_delta_range_ms"], *r["store_cpu_delta_range_ms"])),
        ("indexing after the 250, CPU per message (1 / batches of 50)",
         f"{r['indexing_cpu_batch1_ms']:.2f} / {r['indexing_cpu_batch50_ms']:.2f} ms"),
    ]
    width = max(len(a) for a, _ in rows)
    for a, b in rows:
        print(f"{a:<{width}}  {b}")


if __name__ == "__main__":
    main()
