"""Protocol tests for the inbound SMTP server on StringTransport with a Clock."""

import random
import tracemalloc

import attrs
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from aimx.core.config import load_text
from aimx.errors import SmtpStatus
from aimx.logs import event_line
from aimx.smtp.server import AimxESMTP, AimxSMTPFactory, SmtpLimits
from aimx.testing import fakes

CONFIG = fakes.config_text(mailboxes={"alice": {}})
CATCHALL = fakes.config_text(mailboxes={"alice": {}}, catchall=True)

ACCEPTED = SmtpStatus(250, "2.0.0", "OK message accepted")
PER_IP_REFUSAL = b"421 4.7.0 Too many connections from your address, try again later"
GLOBAL_REFUSAL = b"421 4.3.2 Too many connections, try again later"


@implementer(ITLSTransport)
class TLSStringTransport(StringTransport):
    """A StringTransport that can start TLS: it records the options and marks the spot."""

    tls = None

    def startTLS(self, contextFactory, normal=True):
        self.tls = contextFactory
        self.write(b"<TLS>")


class Session:
    """One protocol instance on a StringTransport, with helpers to talk to it."""

    def __init__(self, factory, peer="203.0.113.9", transport=StringTransport):
        self.proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 25))
        address = IPv6Address if ":" in peer else IPv4Address
        self.transport = transport(peerAddress=address("TCP", peer, 40000))
        self.proto.makeConnection(self.transport)

    def read(self) -> list[bytes]:
        lines = self.transport.value().split(b"\r\n")[:-1]
        self.transport.clear()
        return lines

    def send(self, data: bytes) -> list[bytes]:
        self.proto.dataReceived(data)
        return self.read()

    def codes(self, data: bytes) -> list[bytes]:
        return [line[:3] for line in self.send(data)]

    def close(self):
        self.proto.connectionLost(None)


class ServerTestCase(SynchronousTestCase):
    config_text = CONFIG

    def setUp(self):
        self.clock = task.Clock()
        self.delivered = []
        self.pending = None
        self.config, _ = load_text(self.config_text, "test.toml")
        self.factory = self.make_factory()

    def make_factory(self, limits=SmtpLimits(), deliver=None):
        return AimxSMTPFactory(
            config=lambda: self.config,
            deliver=deliver or self.deliver,
            clock=self.clock,
            limits=limits,
        )

    def deliver(self, envelope):
        self.delivered.append(envelope)
        if self.pending is not None:
            return self.pending
        return defer.succeed(ACCEPTED)

    def session(self, factory=None, peer="203.0.113.9") -> Session:
        s = Session(factory or self.factory, peer)
        self.assertEqual(s.read(), [b"220 test.local ESMTP aimx"])
        return s

    def refused(self, factory=None, peer="203.0.113.9") -> Session:
        """A connection that must get exactly the per-IP 421 and be closed."""
        s = Session(factory or self.factory, peer)
        self.assertEqual(s.read(), [PER_IP_REFUSAL])
        self.assertTrue(s.transport.disconnecting)
        return s

    def per_ip(self, cap: int):
        """Set C{max_sessions_per_ip} in the live config snapshot."""
        self.config = attrs.evolve(self.config, max_sessions_per_ip=cap)

    def logged(self) -> list[str]:
        return [event_line(e, journal=True) for e in self.events]

    def watch_log(self):
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def greeted(self, factory=None) -> Session:
        s = self.session(factory)
        s.send(b"EHLO client.example.com\r\n")
        return s


class GreetingTests(ServerTestCase):
    def test_banner(self):
        """The banner names the configured domain."""
        self.session()

    def test_ehlo_extensions(self):
        """EHLO lists the extensions in the spec's order, without STARTTLS."""
        s = self.session()
        self.assertEqual(
            s.send(b"EHLO client.example.com\r\n"),
            [
                b"250-test.local Hello client.example.com",
                b"250-SIZE 26214400",
                b"250-8BITMIME",
                b"250-PIPELINING",
                b"250-ENHANCEDSTATUSCODES",
                b"250 SMTPUTF8",
            ],
        )

    def test_ehlo_without_argument(self):
        """EHLO needs a domain argument."""
        self.assertEqual(self.session().codes(b"EHLO\r\n"), [b"501"])

    def test_helo(self):
        """HELO answers with the domain and the client's name."""
        self.assertEqual(
            self.session().send(b"HELO x\r\n"), [b"250 test.local Hello x"]
        )

    def test_verbs_are_case_insensitive(self):
        """Commands may be sent in lower case."""
        self.assertEqual(self.session().codes(b"ehlo x\r\nnoop\r\n")[-1], b"250")


class SequenceTests(ServerTestCase):
    def test_mail_before_helo(self):
        """MAIL before EHLO is a sequence error."""
        self.assertEqual(
            self.session().send(b"MAIL FROM:<a@b>\r\n"),
            [b"503 5.5.1 Send EHLO/HELO first"],
        )

    def test_second_mail(self):
        """A second MAIL in one transaction is refused."""
        s = self.greeted()
        self.assertEqual(s.codes(b"MAIL FROM:<a@b>\r\nMAIL FROM:<a@b>\r\n"), [b"250", b"503"])

    def test_rcpt_before_mail(self):
        """RCPT right after EHLO is a sequence error."""
        self.assertEqual(self.greeted().codes(b"RCPT TO:<alice@test.local>\r\n"), [b"503"])

    def test_data_without_rcpt(self):
        """DATA after MAIL without an accepted RCPT is refused."""
        s = self.greeted()
        self.assertEqual(s.codes(b"MAIL FROM:<a@b>\r\nDATA\r\n"), [b"250", b"503"])

    def test_rset_clears_mail(self):
        """RSET forgets the reverse path, so RCPT is out of sequence again."""
        s = self.greeted()
        self.assertEqual(
            s.codes(b"MAIL FROM:<a@b>\r\nRSET\r\nRCPT TO:<alice@test.local>\r\n"),
            [b"250", b"250", b"503"],
        )

    def test_simple_commands(self):
        """NOOP 250, unknown 500, VRFY 252 (aimx decision), QUIT 221 and close."""
        s = self.session()
        self.assertEqual(s.codes(b"NOOP\r\nBOGUS\r\nVRFY x\r\n"), [b"250", b"500", b"252"])
        self.assertEqual(s.send(b"QUIT\r\n"), [b"221 2.0.0 Bye"])
        self.assertTrue(s.transport.disconnecting)

    def test_mail_syntax(self):
        """MAIL without FROM: is a syntax error."""
        self.assertEqual(
            self.greeted().send(b"MAIL TO:<a@b>\r\n"), [b"501 5.5.4 Syntax: MAIL FROM:<address>"]
        )

    def test_rcpt_syntax(self):
        """An empty or reversed-bracket RCPT path is a syntax error, not a crash."""
        s = self.greeted()
        s.send(b"MAIL FROM:<>\r\n")
        self.assertEqual(s.codes(b"RCPT TO:<>\r\nRCPT TO:>x<\r\nRCPT alice\r\n"), [b"501"] * 3)

    def test_starttls_unavailable(self):
        """STARTTLS without a certificate is 502."""
        self.assertEqual(self.greeted().codes(b"STARTTLS\r\n"), [b"502"])

    def test_blank_line_ignored(self):
        """A blank command line gets no reply."""
        self.assertEqual(self.session().send(b"\r\n"), [])


class RcptTests(ServerTestCase):
    def rcpt(self, address: bytes) -> bytes:
        s = self.greeted()
        s.send(b"MAIL FROM:<a@example.com>\r\n")
        return s.send(b"RCPT TO:<" + address + b">\r\n")[0]

    def test_relay_refused(self):
        """Foreign domains, subdomains and bare local parts are relaying: 550 5.7.1."""
        for address in (b"user@evil.example", b"user@sub.test.local", b"alice"):
            self.assertTrue(self.rcpt(address).startswith(b"550 5.7.1"), address)

    def test_domain_case_insensitive(self):
        """The domain compares case-insensitively."""
        self.assertEqual(self.rcpt(b"alice@TEST.LOCAL"), b"250 2.1.5 OK")

    def test_unknown_user_without_catchall(self):
        """Without a catchall an unknown local part is 550 5.1.1 naming it."""
        reply = self.rcpt(b"bob@test.local")
        self.assertTrue(reply.startswith(b"550 5.1.1"))
        self.assertIn(b"<bob@test.local>", reply)

    def test_tag_and_case_route(self):
        """Local parts route case-insensitively and with a +tag (aimx decision)."""
        self.assertEqual(self.rcpt(b"Alice+tag@test.local")[:3], b"250")

    def test_rejection_keeps_state(self):
        """A rejected RCPT leaves the transaction open for the next one."""
        s = self.greeted()
        s.send(b"MAIL FROM:<a@example.com>\r\n")
        self.assertEqual(
            s.codes(b"RCPT TO:<bob@test.local>\r\nRCPT TO:<alice@test.local>\r\n"),
            [b"550", b"250"],
        )

    def rcpts(self, s: Session, addresses) -> list[bytes]:
        return s.send(b"".join(b"RCPT TO:<%s>\r\n" % a for a in addresses))

    def test_recipient_cap(self):
        """The 101st RCPT of a transaction is 452 4.5.3; earlier ones stay."""
        s = self.greeted()
        s.send(b"MAIL FROM:<a@example.com>\r\n")
        replies = self.rcpts(s, [b"alice+%d@test.local" % i for i in range(101)])
        self.assertEqual(replies[:100], [b"250 2.1.5 OK"] * 100)
        self.assertEqual(replies[100], b"452 4.5.3 Too many recipients")
        s.send(b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(len(self.delivered[0].rcpts), 100)

    def test_duplicate_rcpt_stored_once(self):
        """A RCPT equal to an accepted one, ASCII case aside, is 250 but not added again."""
        s = self.greeted()
        s.send(b"MAIL FROM:<a@example.com>\r\n")
        addresses = [
            b"alice@test.local", b"ALICE@test.local", b"alice@TEST.local", b"alice@test.local"
        ]
        self.assertEqual(self.rcpts(s, addresses), [b"250 2.1.5 OK"] * 4)
        s.send(b"DATA\r\nx\r\n.\r\n")
        self.assertEqual(self.delivered[0].rcpts, ("alice@test.local",))

    def test_same_mailbox_other_address_kept(self):
        """alice+tag@ and alice@ are different addresses: both stay (not this rule's business)."""
        s = self.greeted()
        s.send(b"MAIL FROM:<a@example.com>\r\n")
        self.rcpts(s, [b"alice@test.local", b"alice+tag@test.local", b"Alice+Tag@test.local"])
        s.send(b"DATA\r\nx\r\n.\r\n")
        self.assertEqual(self.delivered[0].rcpts, ("alice@test.local", "alice+tag@test.local"))

    def test_duplicates_do_not_fill_the_cap(self):
        """150 copies of one RCPT take one recipient slot; 99 others still fit, then 452."""
        s = self.greeted()
        s.send(b"MAIL FROM:<a@example.com>\r\n")
        self.assertEqual(self.rcpts(s, [b"alice@test.local"] * 150), [b"250 2.1.5 OK"] * 150)
        others = [b"alice+%d@test.local" % i for i in range(99)]
        self.assertEqual(self.rcpts(s, others), [b"250 2.1.5 OK"] * 99)
        self.assertEqual(self.rcpts(s, [b"alice+x@test.local"]), [b"452 4.5.3 Too many recipients"])
        s.send(b"DATA\r\nx\r\n.\r\n")
        self.assertEqual(len(self.delivered[0].rcpts), 100)

    def test_duplicate_at_the_cap(self):
        """With the cap reached, a RCPT already accepted is still 250; a new one is 452."""
        s = self.greeted()
        s.send(b"MAIL FROM:<a@example.com>\r\n")
        self.rcpts(s, [b"alice+%d@test.local" % i for i in range(100)])
        self.assertEqual(
            [r[:3] for r in self.rcpts(s, [b"ALICE+0@test.local", b"alice+100@test.local"])],
            [b"250", b"452"],
        )
        s.send(b"DATA\r\nx\r\n.\r\n")
        self.assertEqual(len(self.delivered[0].rcpts), 100)

    def test_rejected_rcpt_is_not_remembered(self):
        """A refused RCPT does not make a later identical one a silent duplicate."""
        s = self.greeted()
        s.send(b"MAIL FROM:<a@example.com>\r\n")
        self.assertEqual(s.codes(b"RCPT TO:<carol@test.local>\r\n"), [b"550"])
        self.config, _ = load_text(CATCHALL, "test.toml")
        self.assertEqual(s.codes(b"RCPT TO:<carol@test.local>\r\n"), [b"250"])
        s.send(b"DATA\r\nx\r\n.\r\n")
        self.assertEqual(self.delivered[0].rcpts, ("carol@test.local",))

    def test_duplicates_forgotten_between_transactions(self):
        """RSET and a delivered message start a fresh recipient list."""
        s = self.greeted()
        s.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<alice@test.local>\r\nRSET\r\n")
        s.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<alice@test.local>\r\nDATA\r\nx\r\n.\r\n")
        s.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<alice@test.local>\r\nDATA\r\ny\r\n.\r\n")
        self.assertEqual([e.rcpts for e in self.delivered], [("alice@test.local",)] * 2)

    def test_size_declared_too_big(self):
        """MAIL FROM with SIZE= above the limit is 552 5.3.4 at once (RFC 1870)."""
        s = self.greeted()
        self.assertEqual(s.codes(b"MAIL FROM:<a@b> SIZE=26214401\r\n"), [b"552"])
        self.assertEqual(s.codes(b"MAIL FROM:<a@b> SIZE=26214400\r\n"), [b"250"])


class CatchallRcptTests(ServerTestCase):
    config_text = CATCHALL

    def test_catchall_accepts_anyone(self):
        """With a catchall every local part at the domain is accepted."""
        s = self.greeted()
        s.send(b"MAIL FROM:<a@b>\r\n")
        self.assertEqual(s.codes(b"RCPT TO:<randomuser@test.local>\r\n"), [b"250"])

    def test_duplicates_fold_ascii_case_only(self):
        """Only ASCII letters fold: KELVIN SIGN and k, or \xc9 and \xe9, stay two recipients."""
        s = self.greeted()
        s.send(b"MAIL FROM:<a@b>\r\n")
        addresses = ["kim@test.local", "\u212aim@test.local", "\xe9@test.local", "\xc9@test.local"]
        for address in addresses:
            self.assertEqual(s.codes(f"RCPT TO:<{address}>\r\n".encode()), [b"250"])
        s.send(b"DATA\r\nx\r\n.\r\n")
        self.assertEqual(self.delivered[0].rcpts, tuple(addresses))


class DataTests(ServerTestCase):
    def transaction(self, s, body: bytes) -> list[bytes]:
        s.send(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<alice@test.local>\r\n")
        self.assertEqual(s.codes(b"DATA\r\n"), [b"354"])
        return s.send(body)

    def test_full_transaction(self):
        """A message is handed over with its envelope and answered 250."""
        s = self.greeted()
        replies = self.transaction(s, b"Subject: Test\r\n\r\nHello\r\n.\r\n")
        self.assertEqual(replies, [b"250 2.0.0 OK message accepted"])
        [env] = self.delivered
        self.assertEqual(env.raw, b"Subject: Test\r\n\r\nHello\r\n")
        self.assertEqual(env.rcpts, ("alice@test.local",))
        self.assertEqual(env.mail_from, "sender@example.com")
        self.assertEqual(env.helo, "client.example.com")
        self.assertEqual(env.peer_ip, "203.0.113.9")

    def test_null_sender(self):
        """MAIL FROM:<> reaches delivery as no reverse path."""
        s = self.greeted()
        s.send(b"MAIL FROM:<>\r\nRCPT TO:<alice@test.local>\r\nDATA\r\nx\r\n.\r\n")
        self.assertIsNone(self.delivered[0].mail_from)

    def test_dot_unstuffing(self):
        """A line starting with .. loses one dot; a single dot line start is kept."""
        s = self.greeted()
        self.transaction(s, b"S: x\r\n\r\n..leading dot\r\n.x\r\n.\r\n")
        self.assertEqual(self.delivered[0].raw, b"S: x\r\n\r\n.leading dot\r\n.x\r\n")

    def test_dot_lines_in_any_chunks(self):
        """Random dot-heavy messages cut at random points: what is delivered is the rule
        applied line by line (a line of one dot, blanks allowed, ends DATA; a line's
        leading dot goes when another follows it), and what follows is read as commands."""
        rng = random.Random(17)
        pieces = [b".", b"..", b"...", b"x", b" ", b"\t", b".x", b"\r\n", b"\r\n", b"\r\n"]
        for _ in range(300):
            lines = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
            lines = lines.replace(b"\r", b"").replace(b"\n", b"\r\n") + b"\r\n.\r\n"
            expected = []
            for line in lines.split(b"\r\n"):
                if line.rstrip(b" \t") == b".":
                    break
                expected.append(line[1:] if line.startswith(b"..") else line)
            self.delivered.clear()
            s = self.greeted()
            self.assertEqual(s.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<alice@test.local>\r\n"
                                    b"DATA\r\n")[-1][:3], b"354")
            stream, at = lines + b"NOOP\r\n", 0
            while at < len(stream):
                step = rng.randint(1, 12)
                s.proto.dataReceived(stream[at:at + step])
                at += step
            self.assertEqual(self.delivered[0].raw, b"".join(l + b"\r\n" for l in expected),
                             lines)
            replies = [r[:3] for r in s.read()]
            self.assertEqual((replies[0], replies[-1]), (b"250", b"250"), lines)  # DATA's, NOOP's
            s.close()

    def test_terminator_with_trailing_space(self):
        """A dot line with trailing whitespace still ends DATA."""
        s = self.greeted()
        self.assertEqual(self.transaction(s, b"a\r\n. \r\n")[0][:3], b"250")

    def test_eight_bit_bytes_kept(self):
        """8-bit bytes are stored exactly as received (aimx decision)."""
        s = self.greeted()
        self.transaction(s, b"Subject: \xe9t\xe9\r\n\r\n\xff\xfe body\r\n.\r\n")
        self.assertEqual(self.delivered[0].raw, b"Subject: \xe9t\xe9\r\n\r\n\xff\xfe body\r\n")

    def test_byte_by_byte(self):
        """A session fed one byte at a time behaves the same."""
        s = self.session()
        data = (
            b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@test.local>\r\nDATA\r\n"
            b"Subject: one\r\n\r\n..dot\r\nline\r\n.\r\nQUIT\r\n"
        )
        for i in range(len(data)):
            s.proto.dataReceived(data[i : i + 1])
        self.assertEqual(
            [line[:3] for line in s.read()],
            [b"250"] * 6 + [b"250", b"250", b"354", b"250", b"221"],
        )
        self.assertEqual(self.delivered[0].raw, b"Subject: one\r\n\r\n.dot\r\nline\r\n")

    def test_empty_message(self):
        """A terminator right after DATA delivers an empty message."""
        s = self.greeted()
        self.transaction(s, b".\r\n")
        self.assertEqual(self.delivered[0].raw, b"")

    def test_size_limit(self):
        """A message over the limit is read to its end, refused 552, not delivered."""
        s = self.greeted(self.make_factory(SmtpLimits(max_message_size=100)))
        replies = self.transaction(s, b"x" * 198 + b"\r\n.\r\n")
        self.assertEqual(replies, [b"552 5.3.4 Message exceeds maximum size"])
        self.assertEqual(self.delivered, [])
        self.assertEqual(s.codes(b"NOOP\r\n"), [b"250"])

    def test_size_limit_exact(self):
        """A message of exactly the limit is accepted."""
        s = self.greeted(self.make_factory(SmtpLimits(max_message_size=100)))
        self.assertEqual(self.transaction(s, b"x" * 98 + b"\r\n.\r\n")[0][:3], b"250")
        self.assertEqual(len(self.delivered[0].raw), 100)

    def test_bare_lf_refused(self):
        """A bare LF in DATA is 500 at once and the rest of the payload is skipped."""
        s = self.greeted()
        replies = self.transaction(
            s, b"Subject: test\nBare LF line\r\nRSET\r\nQUIT\r\n.\r\nNOOP\r\n"
        )
        self.assertEqual(replies, [b"500 5.6.0 Bare LF not allowed (RFC 5321)", b"250 2.0.0 OK"])
        self.assertEqual(self.delivered, [])
        self.assertFalse(s.transport.disconnecting)

    def test_bare_lf_dot_is_not_terminator(self):
        """<LF>.<LF> cannot end DATA; it is a bare-LF error."""
        s = self.greeted()
        self.assertEqual(self.transaction(s, b"a\r\n.\n")[0][:3], b"500")

    def test_cr_dot_smuggling(self):
        """<CR>.<CR><LF> does not end DATA: the smuggled commands stay message text."""
        s = self.greeted()
        smuggled = (
            b"Subject: a\r\n\r\nhello\r.\r\nMAIL FROM:<evil@x>\r\n"
            b"RCPT TO:<alice@test.local>\r\nDATA\r\n"
        )
        replies = self.transaction(s, smuggled + b"more\r\n.\r\n")
        self.assertEqual(replies, [b"250 2.0.0 OK message accepted"])
        self.assertEqual(len(self.delivered), 1)
        self.assertEqual(self.delivered[0].raw, smuggled + b"more\r\n")

    def test_lf_dot_crlf_smuggling(self):
        """<LF>.<CR><LF> is refused as bare LF; nothing is delivered or executed."""
        s = self.greeted()
        replies = self.transaction(
            s, b"Subject: a\r\n\r\nhi\n.\r\nMAIL FROM:<evil@x>\r\n.\r\n"
        )
        self.assertEqual([r[:3] for r in replies], [b"500"])
        self.assertEqual(self.delivered, [])

    def test_long_data_line(self):
        """A 100 kB DATA line does not desynchronise the session."""
        s = self.greeted()
        body = b"Subject: long\r\n\r\n" + b"y" * 100000 + b"\r\n"
        self.assertEqual(self.transaction(s, body + b".\r\n")[0][:3], b"250")
        self.assertEqual(self.delivered[0].raw, body)

    def test_two_messages_one_connection(self):
        """A new MAIL may follow a delivered message on the same connection."""
        s = self.greeted()
        self.transaction(s, b"Message-ID: <1@x>\r\n\r\na\r\n.\r\n")
        self.transaction(s, b"Message-ID: <2@x>\r\n\r\nb\r\n.\r\n")
        self.assertEqual(len(self.delivered), 2)

    def test_pipelined_commands_wait_for_delivery(self):
        """Commands pipelined after DATA are answered only after the message's reply."""
        self.pending = defer.Deferred()
        s = self.session()
        replies = s.codes(
            b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@test.local>\r\nDATA\r\n"
            b"hi\r\n.\r\nNOOP\r\nQUIT\r\n"
        )
        self.assertEqual(replies, [b"250"] * 6 + [b"250", b"250", b"354"])
        self.pending.callback(ACCEPTED)
        self.assertEqual(s.read(), [b"250 2.0.0 OK message accepted", b"250 2.0.0 OK", b"221 2.0.0 Bye"])

    def test_delivery_error_is_temporary(self):
        """A crash in delivery answers 451, never a 5xx."""
        self.pending = defer.fail(RuntimeError("disk on fire"))
        s = self.greeted()
        self.assertEqual(self.transaction(s, b"x\r\n.\r\n")[0][:3], b"451")
        self.flushLoggedErrors(RuntimeError)

    def test_disconnect_during_data(self):
        """EOF in the middle of DATA stores nothing."""
        s = self.greeted()
        self.transaction(s, b"Subject: cut\r\n\r\npartial")
        s.close()
        self.assertEqual(self.delivered, [])


class LimitTests(ServerTestCase):
    def test_no_command_cap(self):
        """200 NOOPs are all answered 250 (aimx decision)."""
        self.assertEqual(self.session().codes(b"NOOP\r\n" * 200), [b"250"] * 200)

    def test_error_limit(self):
        """The 20th error reply is followed by 421 4.7.0 and the connection closes."""
        s = self.session()
        replies = s.send(b"BOGUS\r\n" * 25)
        self.assertEqual(len(replies), 21)
        self.assertEqual(replies[-1], b"421 4.7.0 Too many errors")
        self.assertTrue(s.transport.disconnecting)

    def test_line_too_long(self):
        """A 1025-byte command line is 500 Line too long; the session goes on."""
        s = self.session()
        self.assertEqual(s.send(b"NOOP " + b"x" * 1018 + b"\r\n"), [b"500 5.5.2 Line too long"])
        self.assertEqual(s.codes(b"NOOP " + b"x" * 1017 + b"\r\n"), [b"250"])

    def test_line_too_long_across_packets(self):
        """An over-long line split over packets is refused once and resynchronises."""
        s = self.session()
        s.proto.dataReceived(b"x" * 3000)
        s.proto.dataReceived(b"y" * 3000 + b"\r\nNOOP\r\n")
        self.assertEqual([r[:3] for r in s.read()], [b"500", b"250"])

    def test_connection_cap(self):
        """Past the cap a connection gets 421 without a banner; a freed slot is reused."""
        factory = self.make_factory(SmtpLimits(max_sessions=2))
        first, second = self.session(factory), self.session(factory)
        third = Session(factory)
        self.assertEqual(third.read(), [b"421 4.3.2 Too many connections, try again later"])
        self.assertTrue(third.transport.disconnecting)
        third.close()
        first.send(b"QUIT\r\n")
        first.close()
        self.session(factory)
        second.close()

    def test_idle_timeout(self):
        """Silence for the idle timeout gets 421 and a close."""
        s = self.session()
        self.clock.advance(299)
        s.send(b"NOOP\r\n")
        self.clock.advance(299)
        self.assertEqual(s.read(), [])
        self.clock.advance(1)
        self.assertEqual(s.read(), [b"421 4.4.2 Idle timeout exceeded"])
        self.assertTrue(s.transport.disconnecting)

    def test_session_timeout(self):
        """A session is closed 600 s after it started, however busy it is."""
        s = self.session()
        for _ in range(10):
            self.clock.advance(55)
            s.send(b"NOOP\r\n")
        self.clock.advance(600 - 10 * 55)
        self.assertEqual(s.read(), [b"421 4.4.2 Connection timed out"])

    def test_data_timeout(self):
        """A timeout inside DATA is 421 Timeout during DATA; nothing is stored."""
        s = self.greeted()
        s.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<alice@test.local>\r\nDATA\r\npartial\r\n")
        self.clock.advance(300)
        self.assertEqual(s.read(), [b"421 4.4.2 Timeout during DATA"])
        self.assertEqual(self.delivered, [])

    def test_drain_waits_then_aborts(self):
        """drain fires when sessions end, or aborts the rest after the grace period."""
        s = self.session()
        done = self.factory.drain(30)
        self.assertNoResult(done)
        self.clock.advance(30)
        self.assertTrue(s.transport.disconnecting or s.transport.disconnected)
        s.close()
        self.successResultOf(done)

    def test_drain_fires_when_idle(self):
        """drain fires as soon as the last session closes."""
        s = self.session()
        done = self.factory.drain(30)
        s.send(b"QUIT\r\n")
        s.close()
        self.successResultOf(done)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class PerIpLimitTests(ServerTestCase):
    def test_cap_reached(self):
        """Past max_sessions_per_ip one address gets the 421 4.7.0 line alone, then a close."""
        self.per_ip(2)
        self.session(), self.session()
        s = self.refused()
        self.assertEqual(s.codes(b"EHLO x\r\nMAIL FROM:<a@b>\r\n"), [])

    def test_other_addresses_unaffected(self):
        """A full address does not stop another one from connecting."""
        self.per_ip(1)
        self.session(peer="203.0.113.9")
        self.refused(peer="203.0.113.9")
        self.session(peer="203.0.113.10")
        self.session(peer="2001:db8::9")

    def test_default_is_twenty(self):
        """With the key unset the 21st session from one address is refused."""
        for _ in range(20):
            self.session()
        self.refused()

    def test_ipv4_mapped_counts_as_ipv4(self):
        """An IPv4-mapped IPv6 peer shares the slots of its IPv4 address, both ways round."""
        self.per_ip(2)
        self.session(peer="198.51.100.7")
        self.session(peer="::ffff:198.51.100.7")
        self.refused(peer="198.51.100.7")
        self.refused(peer="::FFFF:198.51.100.7")

    def test_ipv6_spellings_are_one_address(self):
        """Two spellings of one IPv6 address share its slots."""
        self.per_ip(1)
        self.session(peer="2001:db8::1")
        self.refused(peer="2001:0db8:0:0:0:0:0:1")

    def test_close_frees_the_slot(self):
        """A closed session's slot is free for the next connection from that address."""
        self.per_ip(1)
        s = self.session()
        s.close()
        self.session()

    def test_refused_close_frees_nothing(self):
        """The close of a refused connection does not free a slot it never held."""
        self.per_ip(1)
        held = self.session()
        for _ in range(3):
            self.refused().close()
        self.refused()
        held.close()
        self.session()

    def test_cap_read_per_connection(self):
        """The cap comes from the live config when each connection arrives."""
        self.per_ip(1)
        first = self.session()
        self.refused()
        self.per_ip(2)
        self.session()
        self.refused()
        self.per_ip(1)
        self.refused()
        self.assertFalse(first.transport.disconnecting)

    def test_refusal_logged_with_address(self):
        """A per-IP refusal is logged with the peer address and the cap."""
        self.watch_log()
        self.per_ip(1)
        self.session(peer="::ffff:198.51.100.7")
        self.refused(peer="198.51.100.7")
        [line] = [e for e in self.logged() if "connection refused" in e]
        self.assertTrue(line.startswith("<5>aimx.smtp: connection refused"), line)
        self.assertIn("client=198.51.100.7", line)
        self.assertIn("max_sessions_per_ip=1", line)
        self.assertFalse([e for e in self.logged() if "connection ended" in e])

    def test_global_cap_still_applies(self):
        """The global cap refuses with its own 421 whatever the per-IP room."""
        factory = self.make_factory(SmtpLimits(max_sessions=2))
        self.session(factory, peer="203.0.113.1")
        self.session(factory, peer="203.0.113.2")
        third = Session(factory, peer="203.0.113.3")
        self.assertEqual(third.read(), [GLOBAL_REFUSAL])

    def test_global_refusal_takes_no_ip_slot(self):
        """A connection refused by the global cap holds no per-IP slot."""
        self.per_ip(1)
        factory = self.make_factory(SmtpLimits(max_sessions=1))
        other = self.session(factory, peer="203.0.113.1")
        refused = Session(factory, peer="203.0.113.2")
        self.assertEqual(refused.read(), [GLOBAL_REFUSAL])
        refused.close()
        other.close()
        self.session(factory, peer="203.0.113.2")


class QuitReleaseTests(ServerTestCase):
    """A session stops counting once its 221 is written, before the TCP close."""

    def quit(self, s: Session):
        self.assertEqual(s.send(b"QUIT\r\n"), [b"221 2.0.0 Bye"])
        self.assertTrue(s.transport.disconnecting)

    def test_quit_frees_address_slot(self):
        """After the 221, the address's slot is free though the socket is still open."""
        self.per_ip(1)
        first = self.session()
        self.quit(first)
        self.session()
        self.refused()

    def test_quit_frees_global_slot(self):
        """After the 221, the global slot is free though the socket is still open."""
        factory = self.make_factory(SmtpLimits(max_sessions=1))
        self.quit(self.session(factory, peer="203.0.113.1"))
        self.session(factory, peer="203.0.113.2")

    def test_back_to_back_never_refused(self):
        """A client keeping 20 sessions busy, each QUIT then reconnect, is never refused."""
        live = [self.session() for _ in range(20)]
        quitted = []
        for _ in range(200):
            oldest = live.pop(0)
            self.quit(oldest)
            quitted.append(oldest)
            live.append(self.session())
        for s in reversed(quitted):
            s.close()
        self.refused()

    def test_close_after_quit_counts_once(self):
        """The TCP close of a QUIT'd session frees nothing a second time."""
        self.per_ip(2)
        a = self.session()
        self.quit(a)
        a.close()
        self.session(), self.session()
        self.refused()

    def test_quit_logged_once_at_close(self):
        """The session's summary is logged once, when the connection is closed."""
        self.watch_log()
        s = self.session()
        self.quit(s)
        self.assertEqual([e for e in self.logged() if "connection ended" in e], [])
        s.close()
        [line] = [e for e in self.logged() if "connection ended" in e]
        self.assertIn("outcome=closed result=ok", line)

    def test_drain_waits_for_quitting_socket(self):
        """A drain is not done while a QUIT'd socket is still open; its close ends it."""
        busy, quitting = self.session(), self.session()
        done = self.factory.drain(30)
        self.quit(quitting)
        busy.send(b"QUIT\r\n")
        busy.close()
        self.assertNoResult(done)
        quitting.close()
        self.successResultOf(done)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_drain_when_only_quitting_sockets_left(self):
        """A drain started after the last QUIT still waits for that socket to close."""
        s = self.session()
        self.quit(s)
        done = self.factory.drain(30)
        self.assertNoResult(done)
        s.close()
        self.successResultOf(done)

    def test_drain_aborts_lingering_quit(self):
        """At the end of the drain grace a QUIT'd socket still open is aborted too."""
        s = self.session()
        self.quit(s)
        done = self.factory.drain(5)
        self.clock.advance(5)
        self.assertTrue(s.transport.disconnected)
        s.close()
        self.successResultOf(done)

    def test_lingering_quit_aborted_after_grace(self):
        """A QUIT'd peer that does not take its 221 is dropped after close_grace."""
        s = self.session()
        self.quit(s)
        self.clock.advance(SmtpLimits().close_grace - 1)
        self.assertFalse(s.transport.disconnected)
        self.clock.advance(1)
        self.assertTrue(s.transport.disconnected)

    def test_nothing_written_after_221(self):
        """Timers running out after the 221 write nothing more, they only drop the socket."""
        s = self.session()
        self.quit(s)
        s.send(b"NOOP\r\n")
        self.clock.advance(700)
        self.assertEqual(s.read(), [])
        self.assertTrue(s.transport.disconnected)

    def test_lingering_quits_bounded(self):
        """More QUIT'd-but-open sockets than max_sessions: the oldest is aborted."""
        factory = self.make_factory(SmtpLimits(max_sessions=2))
        sessions = []
        for _ in range(3):
            s = self.session(factory)
            self.quit(s)
            sessions.append(s)
        self.assertEqual([s.transport.disconnected for s in sessions], [True, False, False])
        sessions[0].close()
        self.session(factory)

    def test_error_close_also_bounded(self):
        """Any close (here the 20th error) drops a peer that leaves its replies unread."""
        s = self.session()
        s.send(b"BOGUS\r\n" * 20)
        self.assertTrue(s.transport.disconnecting)
        self.clock.advance(SmtpLimits().close_grace)
        self.assertTrue(s.transport.disconnected)


class BackpressureTests(ServerTestCase):
    def test_flood_while_storing_pauses_reading(self):
        """Input piling up behind a message being stored pauses the transport until its reply."""
        self.pending = defer.Deferred()
        s = self.greeted()
        s.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<alice@test.local>\r\nDATA\r\nhi\r\n.\r\n")
        flood = (b"NOOP " + b"x" * 1000 + b"\r\n") * 1100
        s.proto.dataReceived(flood)
        self.assertEqual(s.transport.producerState, "paused")
        self.assertEqual(s.read(), [])
        self.pending.callback(ACCEPTED)
        self.assertEqual(s.transport.producerState, "producing")
        replies = s.read()
        self.assertEqual(replies[0], b"250 2.0.0 OK message accepted")
        self.assertEqual(replies[1:], [b"250 2.0.0 OK"] * 1100)


class DataBufferTests(ServerTestCase):
    def test_big_message_held_once(self):
        """A big DATA payload is handed over without a second copy of the message."""
        line = b"QUJD" * 19 + b"\r\n"
        chunk = line * (65536 // len(line))
        count = (16 << 20) // len(chunk)
        s = self.greeted()
        s.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<alice@test.local>\r\nDATA\r\n")
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        for _ in range(count):
            s.proto.dataReceived(bytes(bytearray(chunk)))  # a fresh object, as from a socket
        s.proto.dataReceived(b".\r\n")
        _, peak = tracemalloc.get_traced_memory()
        size = len(self.delivered[0].raw)
        self.assertEqual(size, len(chunk) * count)
        self.assertLess(peak, 1.5 * size)


class StartTlsTests(ServerTestCase):
    """STARTTLS on a transport that can start TLS (the handshake itself is not run)."""

    def tls_session(self) -> Session:
        self.factory.tls_options = options = object()
        s = Session(self.factory, transport=TLSStringTransport)
        self.assertEqual(s.read(), [b"220 test.local ESMTP aimx"])
        self.assertIn(b"250-STARTTLS", s.send(b"EHLO x\r\n"))
        s.options = options
        return s

    def test_starttls_discards_pipelined_plaintext(self):
        """Lines pipelined after STARTTLS in its packet are dropped, not run (RFC 3207 §4.2)."""
        s = self.tls_session()
        s.proto.dataReceived(b"STARTTLS\r\nMAIL FROM:<evil@x>\r\nNOOP\r\n")
        self.assertEqual(s.transport.value(), b"220 2.0.0 Ready to start TLS\r\n<TLS>")
        self.assertIs(s.transport.tls, s.options)

    def test_session_reset_after_starttls(self):
        """After STARTTLS, MAIL needs a new EHLO, which no longer offers STARTTLS."""
        s = self.tls_session()
        s.send(b"MAIL FROM:<a@b>\r\nSTARTTLS\r\n")
        self.assertEqual(s.send(b"MAIL FROM:<a@b>\r\n"), [b"503 5.5.1 Send EHLO/HELO first"])
        self.assertNotIn(b"250-STARTTLS", s.send(b"EHLO x\r\n"))
        self.assertEqual(s.send(b"STARTTLS\r\n"), [b"503 5.5.1 TLS already active"])


class AdapterTests(ServerTestCase):
    def test_no_twisted_mail_base(self):
        """The protocol is a plain Protocol with TimeoutMixin: no twisted.mail class under it."""
        self.assertEqual(
            [c for c in AimxESMTP.__mro__ if c.__module__.startswith("twisted.mail")], []
        )

    def test_outcome_after_disconnect_writes_nothing(self):
        """A delivery answered after the peer left writes nothing and runs no pipelined input."""
        self.pending = defer.Deferred()
        s = self.greeted()
        s.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<alice@test.local>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n")
        s.close()
        self.pending.callback(ACCEPTED)
        self.assertEqual(s.read(), [])
        self.assertFalse(s.transport.disconnecting)
        self.assertEqual(len(self.delivered), 1)
