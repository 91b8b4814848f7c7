"""`aimx send` against canned daemons on a real UNIX socket (docs/cli.md, "aimx send").

Each test listens on a socket in a fresh temp dir (a UNIX socket path must fit
in 108 bytes, so not under _trial_temp) with an AMP server whose SEND answer is
fixed, or with a protocol that answers garbage; the verb runs in a thread, as
C{aimx send} runs it (L{aimx.cli.session.run_blocking}), through the production
blocking client. The parser is tested in tests.test_cli_send.
"""

import email
import io
import os
import shutil
import socket
import tempfile

from twisted.internet import defer, protocol, reactor, threads
from twisted.protocols import amp
from twisted.trial.unittest import TestCase

from aimx.cli import send
from aimx.cli.session import Session, blocking_connect, execute, to_the_end
from aimx.cli.term import Terminal
from aimx.control import commands
from aimx.errors import AccessDenied, DomainError
from aimx.testing.fakes import TTY
from tests.test_cli_send import ARGV, parse
from tests.test_mcp import open_on


USER = 1000


def not_running(runtime_dir, why):
    """The daemon-down error for a daemon with its own runtime dir (L{session.start_advice})."""
    return (f"Error: aimx daemon not running ({why} at {runtime_dir}/aimx.sock). Start the aimx "
            f"that uses {runtime_dir} (`aimx serve --runtime-dir {runtime_dir}` with its "
            "--config-dir); if it was `make demo`, run that again and use the AIMX_RUNTIME_DIR "
            "it prints.\n")


class CannedDaemon(amp.AMP):
    """Answers SEND with the factory's C{answer}: a response dict or an error to raise.

    Attached descriptors are read (as the daemon would, through the path they
    really have) into the factory's C{attached} and closed.
    """

    @commands.Send.responder
    def send(self, message, text_only, html_body, attachments):
        self.factory.requests.append((message, text_only, html_body))
        for fd, path in attachments:
            self.factory.attached.append(
                (path, os.readlink(f"/proc/self/fd/{fd}"), os.pread(fd, 1 << 20, 0)))
            os.close(fd)
        if isinstance(self.factory.answer, Exception):
            raise self.factory.answer
        return self.factory.answer


class Garbage(protocol.Protocol):
    """Answers any request with bytes that are not an AMP box."""

    def dataReceived(self, data):
        self.transport.write(b"HTTP/1.0 400 Bad Request\r\n\r\n")


class Hangup(protocol.Protocol):
    """Closes the connection as soon as a request arrives."""

    def dataReceived(self, data):
        self.transport.loseConnection()


class Tracking(protocol.Factory):
    """Builds C{protocol}; counts connections; cleanup waits until each one is closed."""

    def __init__(self, proto, answer=None):
        self.protocol = proto
        self.answer = answer
        self.requests = []
        self.attached = []
        self.closed = []

    def buildProtocol(self, addr):
        p = super().buildProtocol(addr)
        lost = defer.Deferred()
        self.closed.append(lost)
        connection_lost = p.connectionLost

        def track(reason):
            connection_lost(reason)
            lost.callback(None)

        p.connectionLost = track
        return p


class SendVerbTests(TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="aimx-send-")
        self.addCleanup(shutil.rmtree, self.dir)
        self.path = os.path.join(self.dir, "aimx.sock")

    def serve(self, proto=CannedDaemon, answer=None) -> Tracking:
        factory = Tracking(proto, answer)
        port = reactor.listenUNIX(self.path, factory)
        self.addCleanup(lambda: defer.DeferredList(factory.closed))
        self.addCleanup(port.stopListening)
        return factory

    async def aimx_send(self, *extra, argv=ARGV, euid=USER, colour=False):
        """Run the verb on C{argv + extra}; returns (exit code, stdout, stderr)."""
        args = parse(argv + list(extra))
        out, err = (TTY(), TTY()) if colour else (io.StringIO(), io.StringIO())
        session = Session(
            args, connect=blocking_connect(self.path), euid=euid,
            term=Terminal(out, err, io.StringIO(), {}), environ={"AIMX_RUNTIME_DIR": self.dir})
        code = await threads.deferToThread(to_the_end, execute(send.send, args, session))
        return code, out.getvalue(), err.getvalue()

    @defer.inlineCallbacks
    def test_sent(self):
        """OK: the id alone on stdout, the confirmation on stderr, exit 0 (case 9)."""
        daemon = self.serve(answer={"message_id": "<abc@d>"})
        result = yield defer.Deferred.fromCoroutine(self.aimx_send())
        self.assertEqual(result, (0, "<abc@d>\n", "Email sent.\nMessage-ID: <abc@d>\n"))
        [(message, text_only, html_body)] = daemon.requests
        self.assertTrue(message.startswith(
            b"From: alice@agent.example.com\r\nTo: r@example.com\r\nSubject: x\r\nDate: "))
        self.assertTrue(message.endswith(b"MIME-Version: 1.0\r\n\r\ny\r\n"))
        self.assertEqual((text_only, html_body), (False, None))

    @defer.inlineCallbacks
    def test_partial(self):
        """A partial send exits 0 (it was sent) and names each recipient not delivered."""
        deliveries = [
            {"rcpt": "r@example.com", "status": "delivered", "details": "mx: 250 ok"},
            {"rcpt": "s@example.org", "status": "deferred", "details": "mx2: 451 later"},
        ]
        self.serve(answer={"message_id": "<abc@d>", "deliveries": deliveries})
        result = yield defer.Deferred.fromCoroutine(self.aimx_send())
        self.assertEqual(result, (0, "<abc@d>\n",
                                  "Email sent to some recipients only.\n"
                                  "  deferred: s@example.org: mx2: 451 later\n"
                                  "Message-ID: <abc@d>\n"))

    @defer.inlineCallbacks
    def test_sent_colour(self):
        """With colour, only the stderr confirmation is green; the id stays plain."""
        self.serve(answer={"message_id": "<abc@d>"})
        result = yield defer.Deferred.fromCoroutine(self.aimx_send(colour=True))
        self.assertEqual(result, (0, "<abc@d>\n",
                                  "\x1b[32mEmail sent.\x1b[0m\nMessage-ID: <abc@d>\n"))

    @defer.inlineCallbacks
    def test_request_fields(self):
        """Every --to/--cc/--bcc lands in its header; the html body is CRLF-normalized."""
        daemon = self.serve(answer={"message_id": "<abc@d>"})
        code, _, err = yield defer.Deferred.fromCoroutine(self.aimx_send(
            "--to", "b@y.com, c@z.com", "--cc", "d@x.com", "--bcc", "e@x.com",
            "--in-reply-to", "orig@x.com", "--html-body", "<p>a\nb</p>"))
        self.assertEqual(code, 0, err)
        [(message, text_only, html_body)] = daemon.requests
        parsed = email.message_from_bytes(message)
        self.assertEqual((parsed["To"], parsed["Cc"], parsed["Bcc"], parsed["In-Reply-To"]),
                         ("r@example.com, b@y.com, c@z.com", "d@x.com", "e@x.com",
                          "<orig@x.com>"))
        self.assertEqual((text_only, html_body), (False, b"<p>a\r\nb</p>"))

    @defer.inlineCallbacks
    def test_reply_to_alias(self):
        """The old --reply-to still sets In-Reply-To (and References), as --in-reply-to does."""
        daemon = self.serve(answer={"message_id": "<abc@d>"})
        code, _, err = yield defer.Deferred.fromCoroutine(self.aimx_send(
            "--reply-to", "orig@x.com", "--references", "<root@x.com> <orig@x.com>"))
        self.assertEqual(code, 0, err)
        parsed = email.message_from_bytes(daemon.requests[0][0])
        self.assertEqual((parsed["In-Reply-To"], parsed["References"]),
                         ("<orig@x.com>", "<root@x.com> <orig@x.com>"))

    @defer.inlineCallbacks
    def test_text_only_and_attachment(self):
        """--text-only travels as the flag; attachments travel as open descriptors (the
        message carries none), named by their absolute path, closed once answered."""
        paths = []
        for name, data in (('file"name.txt', b"attached payload"), ("b.bin", b"\0\1")):
            paths.append(os.path.join(self.dir, name))
            with open(paths[-1], "wb") as f:
                f.write(data)
        daemon = self.serve(answer={"message_id": "<abc@d>"})
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(self.dir)
        code, _, err = yield defer.Deferred.fromCoroutine(
            self.aimx_send("--text-only", "--attachment", 'file"name.txt',
                           "--attachment", paths[1]))
        self.assertEqual(code, 0, err)
        [(message, text_only, html_body)] = daemon.requests
        self.assertEqual((text_only, html_body), (True, None))
        self.assertFalse(email.message_from_bytes(message).is_multipart())
        self.assertEqual(daemon.attached, [(paths[0], paths[0], b"attached payload"),
                                           (paths[1], paths[1], b"\0\1")])
        self.assertEqual(open_on(paths), [])

    @defer.inlineCallbacks
    def test_held(self):
        """A message held for approval says so with its id on stdout, exit 0."""
        self.serve(answer={"message_id": "<abc@d>", "held": "20260301-120000-ab12cd34"})
        result = yield defer.Deferred.fromCoroutine(self.aimx_send())
        self.assertEqual(result, (0, "held for approval: 20260301-120000-ab12cd34\n", ""))

    @defer.inlineCallbacks
    def test_daemon_error(self):
        """Another daemon error prints `Error [CODE]: reason`, exit 1 (case 9)."""
        reason = "sender domain 'other.org' does not match aimx domain 'agent.example.com'"
        self.serve(answer=DomainError(reason))
        result = yield defer.Deferred.fromCoroutine(self.aimx_send())
        self.assertEqual(result, (1, "", f"Error [DOMAIN]: {reason}\n"))
        result = yield defer.Deferred.fromCoroutine(self.aimx_send(colour=True))
        self.assertEqual(result[2], f"\x1b[31;1mError [DOMAIN]:\x1b[0m {reason}\n")

    @defer.inlineCallbacks
    def test_not_authorized(self):
        """EACCES names the --from value as given, exit 1 (case 9)."""
        self.serve(answer=AccessDenied("not authorized"))
        argv = ARGV[:2] + ["Alice <alice@example.com>"] + ARGV[3:]
        result = yield defer.Deferred.fromCoroutine(self.aimx_send(argv=argv))
        self.assertEqual(result, (1, "", "Error: not authorized: Alice <alice@example.com>\n"))

    @defer.inlineCallbacks
    def test_garbage_reply(self):
        """A reply that is not AMP is a malformed response, exit 3 (case 9)."""
        self.serve(Garbage)
        result = yield defer.Deferred.fromCoroutine(self.aimx_send())
        self.assertEqual(result, (3, "", ("Error: malformed response from aimx daemon: "
                                         "not an AMP box (key of 18516 bytes)\n")))

    @defer.inlineCallbacks
    def test_hangup(self):
        """A connection closed before the answer is a malformed response, exit 3."""
        self.serve(Hangup)
        result = yield defer.Deferred.fromCoroutine(self.aimx_send())
        self.assertEqual(result, (3, "", ("Error: malformed response from aimx daemon: "
                                         "connection closed without a reply\n")))

    @defer.inlineCallbacks
    def test_no_socket(self):
        """No socket: `aimx daemon not running`, exit 2 (case 6)."""
        result = yield defer.Deferred.fromCoroutine(self.aimx_send())
        self.assertEqual(result, (2, "", not_running(self.dir, "no socket")))

    @defer.inlineCallbacks
    def test_refused(self):
        """A stale socket nobody listens on counts as no daemon, exit 2."""
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(self.path)
        stale.close()
        result = yield defer.Deferred.fromCoroutine(self.aimx_send())
        self.assertEqual(result, (2, "", not_running(self.dir, "connection refused")))

    @defer.inlineCallbacks
    def test_connect_failure(self):
        """Any other connect failure names the socket and the error, exit 2."""
        blocker = os.path.join(self.dir, "file")
        open(blocker, "w").close()
        self.path = os.path.join(blocker, "aimx.sock")
        result = yield defer.Deferred.fromCoroutine(self.aimx_send())
        self.assertEqual(result, (2, "", (f"Error: Failed to connect to aimx daemon at "
                                         f"{self.path}: Not a directory\n")))

    @defer.inlineCallbacks
    def test_root_submits(self):
        """euid 0 submits like anyone else; the daemon decides (docs/security.md)."""
        daemon = self.serve(answer={"message_id": "<abc@d>"})
        result = yield defer.Deferred.fromCoroutine(self.aimx_send(euid=0))
        self.assertEqual(result, (0, "<abc@d>\n", "Email sent.\nMessage-ID: <abc@d>\n"))
        self.assertEqual(len(daemon.requests), 1)

    @defer.inlineCallbacks
    def test_header_injection(self):
        """CR/LF in the subject is refused with exit 1, nothing submitted (case 10)."""
        daemon = self.serve(answer={"message_id": "<abc@d>"})
        argv = ARGV[:6] + ["a\r\nBcc: x"] + ARGV[7:]
        result = yield defer.Deferred.fromCoroutine(self.aimx_send(argv=argv))
        self.assertEqual(result, (1, "", ("Error: Header 'Subject' contains CRLF characters. "
                                         "Possible header injection\n")))
        self.assertEqual(daemon.closed, [])

    @defer.inlineCallbacks
    def test_missing_attachment(self):
        """A missing attachment is refused with exit 1, nothing submitted."""
        daemon = self.serve(answer={"message_id": "<abc@d>"})
        path = os.path.join(self.dir, "nope.pdf")
        result = yield defer.Deferred.fromCoroutine(self.aimx_send("--attachment", path))
        self.assertEqual(result, (1, "", f"Error: Attachment file not found: {path}\n"))
        self.assertEqual(daemon.closed, [])
