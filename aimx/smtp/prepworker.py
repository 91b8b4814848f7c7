"""A worker process: parses and authenticates inbound messages for the daemon
(docs/design.md, "Worker processes"); started by L{aimx.smtp.preppool}, never by hand.

  python -m aimx.smtp.prepworker THREADS

Requests come on stdin, answers go to stdout, both framed by L{aimx.smtp.prepare}:
a request is C{(seq, raw, peer_ip, mail_from, helo, budget)}, its answer C{(seq,
(parsed, auth, raw_sha256), None)} or C{(seq, None, error)}.  Up to THREADS requests
are worked on at once (DNS waits overlap); answers go out as they are ready.  The
resolver is built from the environment, as the daemon's is (C{AIMX_NAMESERVERS}).
End of stdin: the work in hand is finished and answered, then the process exits.
SIGTERM and SIGINT are ignored: a service manager's stop or a Ctrl-C reaches the
whole process group, and the daemon ends its workers itself, after its SMTP drain,
by closing their input (docs/design.md, "Worker processes").
"""

import pickle
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from aimx.auth.resolver import Resolver
from aimx.smtp.prepare import FrameReader, frame, prepare


def serve(stdin, stdout, threads: int, resolver) -> None:
    """Answer the requests read from C{stdin} (binary) on C{stdout} until end of input."""
    lock = threading.Lock()

    def answer(value) -> None:
        data = frame(value)
        with lock:
            stdout.write(data)
            stdout.flush()

    def work(request) -> None:
        seq, raw, peer_ip, mail_from, helo, budget = request
        try:
            result = prepare(raw, peer_ip=peer_ip, mail_from=mail_from, helo=helo,
                             resolver=resolver, budget=budget)
        except Exception as e:  # reported to the daemon, which answers 451 as in-process
            answer((seq, None, f"{type(e).__name__}: {e}"))
            return
        try:
            answer((seq, result, None))
        except Exception as e:  # an answer that cannot be framed is still an answer
            answer((seq, None, f"answer not sent: {type(e).__name__}: {e}"))

    reader = FrameReader()
    with ThreadPoolExecutor(threads, thread_name_prefix="aimx-prep") as pool:
        while data := stdin.read1(1 << 16):
            for payload in reader.feed(data):
                pool.submit(work, pickle.loads(payload))  # the daemon's own frames


def main(argv=None) -> int:
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, signal.SIG_IGN)
    argv = sys.argv[1:] if argv is None else argv
    threads = int(argv[0]) if argv else 8
    serve(sys.stdin.buffer, sys.stdout.buffer, threads, Resolver.from_env())
    return 0


if __name__ == "__main__":
    sys.exit(main())
