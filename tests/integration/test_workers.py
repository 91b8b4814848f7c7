"""The worker processes that parse and authenticate inbound mail (docs/design.md,
"Worker processes"): real processes, real SMTP, DNS from the fixture server.

A message prepared by a worker is stored as one prepared in the daemon; a worker
that dies, answers garbage or answers with a class it must not build loses nothing
(the daemon prepares those messages itself) and is started again; stopping the
daemon ends the workers."""

import os
import pickle
import signal
import subprocess
import sys

from twisted.internet import reactor, task
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from aimx import service
from aimx.smtp import prepare, preppool
from aimx.testing.fakes import message
from tests.integration.base import DOMAIN, REPO, DaemonTestCase, stop_daemon

SIGNER = "signed.example"
EXITED = "worker process exited, starting another"
BAD_ANSWER = "worker process sent a bad answer, stopping it"

#: Stand-in workers (C{python -c}): one reads a request's first bytes and exits
#: without answering; one answers with a length over the frame limit.
DIES = "import sys; sys.stdin.buffer.read(8); sys.exit(3)"
GARBAGE = ("import sys; sys.stdin.buffer.read(8); sys.stdout.buffer.write(b'\\xff' * 8); "
           "sys.stdout.flush(); sys.stdin.buffer.read()")


class _Exploit:
    """Unpickles as a call of C{os.system}: what an answer must never build."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.system, ("touch " + self.path,))


def forging(path: str) -> str:
    """A stand-in worker answering with a pickle that would run C{touch path}."""
    payload = pickle.dumps((1, _Exploit(path), None))
    return ("import struct, sys; sys.stdin.buffer.read(8); "
            f"p = {payload!r}; sys.stdout.buffer.write(struct.pack('>I', len(p)) + p); "
            "sys.stdout.flush(); sys.stdin.buffer.read()")


class WorkerTests(DaemonTestCase):
    def setUp(self):
        super().setUp()
        self.environ = dict(self.environ, PYTHONPATH=REPO)
        self.dns.add_txt(SIGNER, "v=spf1 ip4:127.0.0.1 -all")
        self.dns.add_txt(f"_dmarc.{SIGNER}", "v=DMARC1; p=reject")
        self.private = self.publish_dkim(SIGNER)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    async def start_workers(self, stand_in: str | None = None) -> preppool.PreparePool:
        """A daemon with one worker (C{python -c stand_in} instead of the real one), once
        that worker runs."""
        daemon = service.build(self.options(), reactor, environ=self.environ, workers=1)
        if stand_in is not None:
            daemon.workers.argv = [sys.executable, "-c", stand_in]
        self.run_daemon(daemon)
        self.daemon = daemon
        self.port = daemon.smtp.ports[0].getHost().port
        pool = daemon.workers
        await self.until(lambda: pool.workers and pool.workers[0].running, "running")
        return pool

    async def send(self) -> None:
        raw = self.sign(message("Hi there\r\n", sender=f"boss@{SIGNER}"), self.private, SIGNER)
        reply = await self.smtp(raw, [f"alice@{DOMAIN}"], mail_from=f"boss@{SIGNER}")
        self.assertEqual(reply[0], 250)

    async def until(self, done, what: str):
        for _ in range(500):
            if done():
                return
            await task.deferLater(reactor, 0.02, lambda: None)
        self.fail(f"not {what} within 10 s")

    def logged(self, text: str) -> list[dict]:
        return [e for e in self.events if e.get("log_format") == text]

    async def test_prepared_by_a_worker(self):
        """A signed message is prepared in the worker and stored with DKIM, SPF and
        DMARC passing, as when the daemon prepares it."""
        pool = await self.start_workers()

        def in_daemon(*args):
            raise AssertionError("prepared in the daemon, not in the worker")

        pool.fallback = in_daemon
        await self.send()
        fields, body = self.only_mail("alice")
        self.assertEqual((fields["dkim"], fields["spf"], fields["dmarc"], fields["from"]),
                         ("pass", "pass", "pass", f"boss@{SIGNER}"))
        self.assertIn(b"Hi there", body)

    async def test_big_message_prepared_in_the_daemon(self):
        """A message over the pool's size limit never goes through a pipe."""
        pool = await self.start_workers()
        pool.in_process_above = 100
        sent = []
        pool.workers[0].send = lambda *args: sent.append(args)
        await self.send()
        self.assertEqual(sent, [])
        self.assertEqual(self.only_mail("alice")[0]["dkim"], "pass")

    async def assert_nothing_lost(self, stand_in: str, logged: str | None = None):
        await self.start_workers(stand_in)
        await self.send()
        self.assertEqual(self.only_mail("alice")[0]["dkim"], "pass")
        await self.until(lambda: len(self.logged("worker process started")) == 2,
                         "started again")
        self.assertEqual(len(self.logged(EXITED)), 1)
        if logged is not None:
            self.assertEqual(len(self.logged(logged)), 1)

    async def test_worker_dies(self):
        """A worker that exits holding a message: the daemon prepares it, the reply
        is 250, and another worker is started."""
        await self.assert_nothing_lost(DIES)

    async def test_worker_garbage(self):
        """A frame longer than allowed ends the worker; the message is stored."""
        await self.assert_nothing_lost(GARBAGE, BAD_ANSWER)

    async def test_worker_forged_answer(self):
        """An answer whose pickle calls a function is refused unbuilt: nothing runs,
        the message is prepared in the daemon."""
        path = os.path.abspath(self.mktemp())
        await self.assert_nothing_lost(forging(path), BAD_ANSWER)
        self.assertFalse(os.path.exists(path))

    async def test_stop_ends_workers(self):
        """Stopping the daemon ends its workers (end of input: they exit), and none is
        started again."""
        pool = await self.start_workers()
        pid = pool.workers[0].transport.pid
        await stop_daemon(self.daemon)
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)
        self.assertEqual((self.logged(EXITED), pool.workers), ([], []))


class ProcessTests(SynchronousTestCase):
    def test_stopped_by_its_input_only(self):
        """A worker outlives SIGTERM and SIGINT (sent to a whole service or terminal
        process group) and exits once its input ends, answering what it holds."""
        env = dict(os.environ, PYTHONPATH=REPO, AIMX_NAMESERVERS="127.0.0.1:9")
        proc = subprocess.Popen([sys.executable, "-m", "aimx.smtp.prepworker", "2"], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        reader = prepare.FrameReader()

        def ask(seq: int):
            raw = message("Hi\r\n")
            proc.stdin.write(prepare.frame((seq, raw, None, None, None, 1.0)))
            proc.stdin.flush()
            payloads = []
            while not payloads:
                data = os.read(proc.stdout.fileno(), 65536)
                if not data:
                    self.fail(f"the worker ended, status {proc.wait(timeout=30)}")
                payloads = reader.feed(data)
            return prepare.load_answer(payloads[0])

        self.assertEqual(ask(1)[0], 1)
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGINT)
        self.assertEqual(ask(2)[0], 2)
        proc.stdin.close()
        self.assertEqual(proc.wait(timeout=30), 0)


class SizeTests(SynchronousTestCase):
    def test_default_size(self):
        """One core stays with the daemon; at most four workers."""
        self.assertEqual([preppool.default_size(n) for n in (None, 1, 2, 3, 8, 64)],
                         [0, 0, 1, 2, 4, 4])
