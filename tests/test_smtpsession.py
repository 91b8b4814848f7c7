"""Pure tests of the SMTP dialogue state machine (aimx.core.smtpsession), no transport."""

import attrs
from twisted.trial.unittest import SynchronousTestCase

from aimx.core.address import Envelope
from aimx.core.smtpsession import (
    COMMAND_STATES,
    DATA_TIMEOUT,
    IDLE_TIMEOUT,
    SESSION_TIMEOUT,
    TOO_MANY_SESSIONS,
    Abort,
    BeginData,
    Close,
    Deliver,
    RcptRejected,
    Session,
    SmtpLimits,
    StartTLS,
    State,
    Timeout,
    Transition,
)
from aimx.errors import SmtpStatus
from aimx.testing import fakes

CONFIG = fakes.config(mailboxes={"alice": {}})
CATCHALL = fakes.config(mailboxes={}, catchall=True)

C, G, M, R = State.CONNECTED, State.GREETED, State.MAIL, State.RCPT
EHLO_LINES = (
    b"250-test.local Hello client",
    b"250-SIZE 26214400",
    b"250-8BITMIME",
    b"250-PIPELINING",
    b"250-ENHANCEDSTATUSCODES",
    b"250-STARTTLS",
    b"250 SMTPUTF8",
)
NEED_HELO = b"503 5.5.1 Send EHLO/HELO first"
NEED_MAIL = b"503 5.5.1 Send MAIL FROM first"
NEED_RCPT = b"503 5.5.1 Send RCPT TO first"
NESTED = b"503 5.5.1 MAIL FROM already given"
UNRECOGNIZED = b"500 5.5.2 Unrecognized command"
RCPT_OK = b"250 2.1.5 OK"
OK = b"250 2.0.0 OK"
UNKNOWN_BOB = b"550 5.1.1 <bob@test.local>: Recipient address rejected: User unknown"
RELAY = b"550 5.7.1 relay not permitted"
ACCEPTED = SmtpStatus(250, "2.0.0", "OK message accepted")

# A cell: the replies, the next state, the actions.  "same" = the state is kept.
SAME = "same"
CLOSE_QUIT = (Close(quit=True),)

#: verb line -> {state: (replies, next state, actions)}, for the four command states.
TABLE = {
    b"EHLO client": {s: (EHLO_LINES, G, ()) for s in (C, G, M, R)},
    b"EHLO": {s: ((b"501 5.5.4 EHLO requires domain argument",), SAME, ()) for s in (C, G, M, R)},
    b"HELO client": {s: ((b"250 test.local Hello client",), G, ()) for s in (C, G, M, R)},
    b"HELO": {s: ((b"501 5.5.4 HELO requires domain argument",), SAME, ()) for s in (C, G, M, R)},
    b"MAIL FROM:<a@b>": {
        C: ((NEED_HELO,), SAME, ()),
        G: ((b"250 2.1.0 OK",), M, ()),
        M: ((NESTED,), SAME, ()),
        R: ((NESTED,), SAME, ()),
    },
    b"MAIL TO:<a@b>": {
        C: ((NEED_HELO,), SAME, ()),
        G: ((b"501 5.5.4 Syntax: MAIL FROM:<address>",), SAME, ()),
        M: ((NESTED,), SAME, ()),
        R: ((NESTED,), SAME, ()),
    },
    b"RCPT TO:<Alice+t@test.local>": {
        C: ((NEED_MAIL,), SAME, ()),
        G: ((NEED_MAIL,), SAME, ()),
        M: ((RCPT_OK,), R, ()),
        R: ((RCPT_OK,), R, ()),
    },
    b"RCPT TO:<>": {
        C: ((NEED_MAIL,), SAME, ()),
        G: ((NEED_MAIL,), SAME, ()),
        M: ((b"501 5.5.4 Syntax: RCPT TO:<address>",), SAME, ()),
        R: ((b"501 5.5.4 Syntax: RCPT TO:<address>",), SAME, ()),
    },
    b"RCPT TO:<bob@test.local>": {
        C: ((NEED_MAIL,), SAME, ()),
        G: ((NEED_MAIL,), SAME, ()),
        M: ((UNKNOWN_BOB,), SAME, (RcptRejected("bob@test.local", relay=False),)),
        R: ((UNKNOWN_BOB,), SAME, (RcptRejected("bob@test.local", relay=False),)),
    },
    b"RCPT TO:<x@evil.example>": {
        C: ((NEED_MAIL,), SAME, ()),
        G: ((NEED_MAIL,), SAME, ()),
        M: ((RELAY,), SAME, (RcptRejected("x@evil.example", relay=True),)),
        R: ((RELAY,), SAME, (RcptRejected("x@evil.example", relay=True),)),
    },
    b"DATA": {
        C: ((NEED_RCPT,), SAME, ()),
        G: ((NEED_RCPT,), SAME, ()),
        M: ((NEED_RCPT,), SAME, ()),
        R: ((b"354 Start mail input; end with <CRLF>.<CRLF>",), State.DATA, (BeginData(),)),
    },
    b"RSET": {C: ((OK,), C, ()), G: ((OK,), G, ()), M: ((OK,), G, ()), R: ((OK,), G, ())},
    b"NOOP": {s: ((OK,), SAME, ()) for s in (C, G, M, R)},
    b"NOOP with args": {s: ((OK,), SAME, ()) for s in (C, G, M, R)},
    b"VRFY x": {
        s: ((b"252 2.5.2 Cannot VRFY user, but will accept message",), SAME, ())
        for s in (C, G, M, R)
    },
    b"QUIT": {s: ((b"221 2.0.0 Bye",), State.CLOSING, CLOSE_QUIT) for s in (C, G, M, R)},
    b"STARTTLS": {
        s: ((b"220 2.0.0 Ready to start TLS",), C, (StartTLS(),)) for s in (C, G, M, R)
    },
    b"": {s: ((), SAME, ()) for s in (C, G, M, R)},
    b"BOGUS": {s: ((UNRECOGNIZED,), SAME, ()) for s in (C, G, M, R)},
    b"EXPN list": {s: ((UNRECOGNIZED,), SAME, ()) for s in (C, G, M, R)},
    b"HELP": {s: ((UNRECOGNIZED,), SAME, ()) for s in (C, G, M, R)},
    b"AUTH PLAIN": {s: ((UNRECOGNIZED,), SAME, ()) for s in (C, G, M, R)},
    b"BDAT 10 LAST": {s: ((UNRECOGNIZED,), SAME, ()) for s in (C, G, M, R)},
    b"ETRN x": {s: ((UNRECOGNIZED,), SAME, ()) for s in (C, G, M, R)},
    b"NOOP2": {s: ((UNRECOGNIZED,), SAME, ()) for s in (C, G, M, R)},
}

#: Replies that are errors: they count towards max_errors.
ERROR_CODES = (b"5",)


def fresh(tls: bool = True, limits: SmtpLimits = SmtpLimits()) -> Session:
    return Session(peer="203.0.113.9", domain="test.local", tls_available=tls, limits=limits)


def run(session: Session, *lines: bytes, config=CONFIG) -> Transition:
    """Feed command lines; return the last transition (replies of the last line only)."""
    step = Transition(session)
    for line in lines:
        step = step.session.command(line + b"\r\n", config)
    return step


def replies(session: Session, *lines: bytes, config=CONFIG) -> tuple[list[bytes], Session]:
    """Feed command lines; return every reply and the last session."""
    out = []
    for line in lines:
        step = session.command(line + b"\r\n", config)
        out += step.replies
        session = step.session
    return out, session


def at(state: State, **kwargs) -> Session:
    """A session brought to C{state} by the ordinary events."""
    s = fresh(**kwargs)
    path = {
        State.CONNECTED: [],
        State.GREETED: [b"EHLO client"],
        State.MAIL: [b"EHLO client", b"MAIL FROM:<a@b>"],
        State.RCPT: [b"EHLO client", b"MAIL FROM:<a@b>", b"RCPT TO:<alice@test.local>"],
        State.DATA: [b"EHLO client", b"MAIL FROM:<a@b>", b"RCPT TO:<alice@test.local>", b"DATA"],
        State.CLOSING: [b"QUIT"],
    }
    if state is State.DISCARD:
        return at(State.DATA, **kwargs).bare_lf().session
    if state is State.DELIVERING:
        return at(State.DATA, **kwargs).data_end(b"x\r\n", 3).session
    s = run(s, *path[state]).session
    assert s.state is state, (s.state, state)
    return s


class TableTests(SynchronousTestCase):
    def test_every_verb_in_every_command_state(self):
        """Each verb in CONNECTED/GREETED/MAIL/RCPT gives the table's replies, state and actions."""
        for line, row in TABLE.items():
            self.assertEqual(set(row), set(COMMAND_STATES), line)
            for state, (want_replies, want_state, want_actions) in row.items():
                before = at(state)
                step = run(before, line)
                where = f"{line!r} in {state.name}"
                self.assertEqual(step.replies, want_replies, where)
                expected = state if want_state == SAME else want_state
                self.assertEqual(step.session.state, expected, where)
                self.assertEqual(step.actions, want_actions, where)

    def test_errors_counted_by_the_table(self):
        """Every 5xx in the table adds one to the error count; other replies add none."""
        for line, row in TABLE.items():
            for state, (want_replies, _, _) in row.items():
                step = run(at(state), line)
                errors = sum(r.startswith(ERROR_CODES) for r in want_replies)
                self.assertEqual(step.session.errors, errors, f"{line!r} in {state.name}")

    def test_no_commands_outside_command_states(self):
        """DATA, DISCARD, DELIVERING and CLOSING read no command: feeding one is a bug."""
        for state in set(State) - COMMAND_STATES:
            session = at(state)
            self.assertRaises(ValueError, session.command, b"NOOP\r\n", CONFIG)
            self.assertRaises(ValueError, session.line_too_long)

    def test_events_checked_against_state(self):
        """DATA events outside DATA, discard_end outside DISCARD, delivered elsewhere: bugs."""
        greeted = at(State.GREETED)
        self.assertRaises(ValueError, greeted.data_end, b"", 0)
        self.assertRaises(ValueError, greeted.bare_lf)
        self.assertRaises(ValueError, greeted.data_overflow)
        self.assertRaises(ValueError, greeted.discard_end)
        self.assertRaises(ValueError, greeted.delivered, ACCEPTED)
        self.assertRaises(ValueError, greeted.connected)


class CommandParsingTests(SynchronousTestCase):
    def test_verbs_case_insensitive(self):
        """Verbs are case-insensitive (RFC 5321 §2.4)."""
        self.assertEqual(run(fresh(), b"ehlo client").replies, EHLO_LINES)
        self.assertEqual(run(fresh(), b"nOoP").replies, (OK,))

    def test_whitespace_stripped(self):
        """Surrounding whitespace goes; the argument is trimmed."""
        self.assertEqual(
            run(fresh(), b"  HELO   client  \t").replies, (b"250 test.local Hello client",)
        )

    def test_blank_line_not_an_error(self):
        """A blank or all-space line gets no reply and counts no error."""
        step = run(fresh(), b"   ")
        self.assertEqual((step.replies, step.session.errors), ((), 0))

    def test_line_end_kept_out(self):
        """A line with only LF or CRLF parses alike."""
        self.assertEqual(fresh().command(b"NOOP\n", CONFIG).replies, (OK,))

    def test_eight_bit_helo_echoed_exactly(self):
        """A non-UTF-8 EHLO argument is echoed byte for byte (surrogateescape)."""
        step = fresh().command(b"EHLO h\xe9\xff\r\n", CONFIG)
        self.assertEqual(step.replies[0], b"250-test.local Hello h\xe9\xff")
        self.assertEqual(step.session.helo, "h\udce9\udcff")

    def test_line_too_long_is_an_error(self):
        """An over-long line is 500 5.5.2 Line too long and counts as an error."""
        step = at(State.MAIL).line_too_long()
        self.assertEqual(step.replies, (b"500 5.5.2 Line too long",))
        self.assertEqual((step.session.state, step.session.errors), (State.MAIL, 1))


class ResetTests(SynchronousTestCase):
    def test_ehlo_resets_transaction(self):
        """EHLO in the middle of a transaction forgets its sender and recipients."""
        s = run(at(State.RCPT), b"EHLO other").session
        self.assertEqual(
            (s.helo, s.mail_from, s.rcpts, s.rcpt_keys), ("other", None, (), frozenset())
        )

    def test_rset_keeps_helo(self):
        """RSET forgets the transaction, not the EHLO argument."""
        s = run(at(State.RCPT), b"RSET").session
        self.assertEqual((s.helo, s.mail_from, s.rcpts), ("client", None, ()))

    def test_starttls_resets_session(self):
        """STARTTLS forgets EHLO and the transaction, keeps the error count (RFC 3207 §4.2)."""
        s = run(at(State.RCPT), b"BOGUS").session
        step = run(s, b"STARTTLS")
        s = step.session
        self.assertEqual(step.actions, (StartTLS(),))
        self.assertEqual(
            (s.state, s.helo, s.mail_from, s.rcpts, s.rcpt_keys, s.tls_active, s.errors),
            (State.CONNECTED, None, None, (), frozenset(), True, 1),
        )
        self.assertEqual(run(s, b"MAIL FROM:<a@b>").replies, (NEED_HELO,))

    def test_no_starttls_after_tls(self):
        """After STARTTLS, EHLO does not offer it and a second STARTTLS is 503."""
        s = run(fresh(), b"STARTTLS").session
        self.assertNotIn(b"250-STARTTLS", run(s, b"EHLO client").replies)
        self.assertEqual(run(s, b"STARTTLS").replies, (b"503 5.5.1 TLS already active",))

    def test_starttls_unavailable(self):
        """Without TLS EHLO does not offer it and STARTTLS is 502, state kept."""
        s = fresh(tls=False)
        self.assertEqual(
            run(s, b"EHLO client").replies, tuple(l for l in EHLO_LINES if l != b"250-STARTTLS")
        )
        step = run(at(State.MAIL, tls=False), b"STARTTLS")
        self.assertEqual(step.replies, (b"502 5.5.1 STARTTLS not available",))
        self.assertEqual((step.session.state, step.actions), (State.MAIL, ()))


class RecipientTests(SynchronousTestCase):
    def test_cap(self):
        """Past max_recipients a new RCPT is 452 4.5.3, not an error; earlier ones stay."""
        s = at(State.MAIL, limits=SmtpLimits(max_recipients=2))
        out, s = replies(s, *(b"RCPT TO:<alice+%d@test.local>" % i for i in range(3)))
        self.assertEqual(out, [RCPT_OK, RCPT_OK, b"452 4.5.3 Too many recipients"])
        self.assertEqual((s.rcpts, s.errors), (("alice+0@test.local", "alice+1@test.local"), 0))

    def test_default_cap_is_100(self):
        """The 101st recipient of a transaction is refused by default."""
        lines = [b"RCPT TO:<alice+%d@test.local>" % i for i in range(101)]
        out, s = replies(at(State.MAIL), *lines)
        self.assertEqual(out[-2:], [RCPT_OK, b"452 4.5.3 Too many recipients"])
        self.assertEqual(len(s.rcpts), 100)

    def test_duplicates_fold_ascii_case(self):
        """A RCPT equal to an accepted one, ASCII case aside, is 250 and not added."""
        lines = [
            b"RCPT TO:<alice@test.local>",
            b"RCPT TO:<ALICE@test.local>",
            b"RCPT TO:<alice@TEST.local>",
        ]
        out, s = replies(at(State.MAIL), *lines)
        self.assertEqual(out, [RCPT_OK] * 3)
        self.assertEqual(s.rcpts, ("alice@test.local",))

    def test_non_ascii_case_not_folded(self):
        """KELVIN SIGN and k stay two recipients (only ASCII letters fold)."""
        lines = ["RCPT TO:<kim@test.local>".encode(), "RCPT TO:<\u212aim@test.local>".encode()]
        _, s = replies(at(State.MAIL), *lines, config=CATCHALL)
        self.assertEqual(s.rcpts, ("kim@test.local", "\u212aim@test.local"))

    def test_duplicate_at_cap(self):
        """With the cap reached a repeated RCPT is still 250; a new one is 452."""
        s = at(State.MAIL, limits=SmtpLimits(max_recipients=1))
        out, s = replies(
            s,
            b"RCPT TO:<alice@test.local>",
            b"RCPT TO:<Alice@test.local>",
            b"RCPT TO:<alice+1@test.local>",
        )
        self.assertEqual(out, [RCPT_OK, RCPT_OK, b"452 4.5.3 Too many recipients"])

    def test_duplicates_do_not_fill_the_cap(self):
        """Repeats of one RCPT take one slot."""
        s = at(State.MAIL, limits=SmtpLimits(max_recipients=2))
        out, s = replies(s, *[b"RCPT TO:<alice@test.local>"] * 5, b"RCPT TO:<alice+1@test.local>")
        self.assertEqual(out, [RCPT_OK] * 6)
        self.assertEqual(len(s.rcpts), 2)

    def test_rejected_not_remembered(self):
        """A refused RCPT is no duplicate later, when the config routes it."""
        s = at(State.MAIL)
        step = run(s, b"RCPT TO:<carol@test.local>")
        self.assertEqual(step.replies[0][:9], b"550 5.1.1")
        step = run(step.session, b"RCPT TO:<carol@test.local>", config=CATCHALL)
        self.assertEqual((step.replies, step.session.rcpts), ((RCPT_OK,), ("carol@test.local",)))

    def test_rejection_keeps_state(self):
        """A refused RCPT leaves MAIL in MAIL and RCPT in RCPT."""
        self.assertEqual(run(at(State.MAIL), b"RCPT TO:<bob@test.local>").session.state, State.MAIL)
        self.assertEqual(run(at(State.RCPT), b"RCPT TO:<bob@test.local>").session.state, State.RCPT)

    def test_keys_forgotten_between_transactions(self):
        """RSET and a delivered message start a fresh recipient list."""
        s = run(at(State.RCPT), b"RSET", b"MAIL FROM:<a@b>").session
        self.assertEqual((s.rcpts, s.rcpt_keys), ((), frozenset()))
        s = at(State.DELIVERING).delivered(ACCEPTED).session
        self.assertEqual((s.rcpts, s.rcpt_keys), ((), frozenset()))


class SizeTests(SynchronousTestCase):
    def test_declared_size(self):
        """SIZE= above the limit is 552 5.3.4 at once (RFC 1870); at the limit it is 250."""
        step = run(at(State.GREETED), b"MAIL FROM:<a@b> SIZE=26214401")
        self.assertEqual(
            step.replies, (b"552 5.3.4 Message size exceeds fixed maximum message size",)
        )
        self.assertEqual((step.session.state, step.session.errors), (State.GREETED, 1))
        step = run(at(State.GREETED), b"MAIL FROM:<a@b> size=26214400")
        self.assertEqual((step.replies, step.session.state), ((b"250 2.1.0 OK",), State.MAIL))

    def test_declared_size_not_a_number_ignored(self):
        """A SIZE= that is not a number is ignored, as are other parameters."""
        step = run(at(State.GREETED), b"MAIL FROM:<a@b> SIZE=big BODY=8BITMIME")
        self.assertEqual(step.replies, (b"250 2.1.0 OK",))

    def test_received_size_at_limit(self):
        """A message of exactly the limit is delivered; one byte more is 552, nothing delivered."""
        limits = SmtpLimits(max_message_size=10)
        step = at(State.DATA, limits=limits).data_end(b"x" * 10, 10)
        self.assertEqual(step.session.state, State.DELIVERING)
        step = at(State.DATA, limits=limits).data_end(b"", 11)
        self.assertEqual(step.replies, (b"552 5.3.4 Message exceeds maximum size",))
        self.assertEqual(step.actions, ())
        s = step.session
        self.assertEqual((s.state, s.errors, s.mail_from, s.rcpts), (State.GREETED, 1, None, ()))

    def test_overflow_closes(self):
        """An unterminated DATA line past the limit is 552 and a close, not an error count."""
        step = at(State.DATA).data_overflow()
        self.assertEqual(step.replies, (b"552 5.3.4 Message exceeds maximum size",))
        self.assertEqual((step.session.state, step.actions), (State.CLOSING, (Close(),)))
        self.assertEqual(step.session.errors, 0)


class DataTests(SynchronousTestCase):
    def test_delivery(self):
        """The terminator hands over the envelope; the reply waits for the outcome."""
        step = at(State.DATA).data_end(b"Subject: x\r\n\r\nhi\r\n", 18)
        envelope = Envelope(
            peer_ip="203.0.113.9",
            helo="client",
            mail_from="a@b",
            rcpts=("alice@test.local",),
            raw=b"Subject: x\r\n\r\nhi\r\n",
        )
        self.assertEqual((step.replies, step.actions), ((), (Deliver(envelope),)))
        s = step.session
        self.assertEqual(
            (s.state, s.messages, s.received, s.mail_from), (State.DELIVERING, 1, 18, None)
        )
        step = s.delivered(ACCEPTED)
        self.assertEqual(step.replies, (b"250 2.0.0 OK message accepted",))
        self.assertEqual(step.session.state, State.GREETED)

    def test_null_sender(self):
        """MAIL FROM:<> reaches delivery as no reverse path."""
        s = run(fresh(), b"HELO x", b"MAIL FROM:<>", b"RCPT TO:<alice@test.local>", b"DATA").session
        [deliver] = s.data_end(b"", 0).actions
        self.assertIsNone(deliver.envelope.mail_from)

    def test_delivery_reply_passed_through(self):
        """Whatever the ingest chain answers is the reply, e.g. 451 4.3.0."""
        status = SmtpStatus(451, "4.3.0", "Temporary failure, please retry")
        step = at(State.DELIVERING).delivered(status)
        self.assertEqual(step.replies, (b"451 4.3.0 Temporary failure, please retry",))

    def test_bare_lf(self):
        """A bare LF is 500 5.6.0, an error; the payload is skipped, then commands again."""
        step = at(State.DATA).bare_lf()
        self.assertEqual(step.replies, (b"500 5.6.0 Bare LF not allowed (RFC 5321)",))
        s = step.session
        self.assertEqual((s.state, s.errors, s.mail_from, s.rcpts), (State.DISCARD, 1, None, ()))
        step = s.discard_end()
        self.assertEqual((step.replies, step.session.state), ((), State.GREETED))

    def test_delivered_after_close(self):
        """An outcome arriving after the session closed writes nothing."""
        s = at(State.DELIVERING).lost().session
        self.assertEqual(s.delivered(ACCEPTED), Transition(s))


class ErrorLimitTests(SynchronousTestCase):
    def test_twentieth_error_closes(self):
        """The 20th error reply is followed by 421 4.7.0 Too many errors and a close."""
        out, s = replies(fresh(), *[b"BOGUS"] * 19)
        self.assertEqual((out, s.state, s.errors), ([UNRECOGNIZED] * 19, State.CONNECTED, 19))
        step = run(s, b"MAIL FROM:<a@b>")
        self.assertEqual(step.replies, (NEED_HELO, b"421 4.7.0 Too many errors"))
        self.assertEqual((step.session.state, step.actions), (State.CLOSING, (Close(),)))

    def test_limit_counts_every_error_kind(self):
        """Syntax, sequence, RCPT refusals, bare LF and long lines all count."""
        s = at(State.MAIL, limits=SmtpLimits(max_errors=5))
        s = run(s, b"RCPT TO:<>", b"RCPT TO:<bob@test.local>", b"MAIL FROM:<x@y>").session
        s = s.line_too_long().session
        self.assertEqual(s.errors, 4)
        s = run(s, b"RCPT TO:<alice@test.local>", b"DATA").session
        step = s.bare_lf()
        self.assertEqual(step.replies[-1], b"421 4.7.0 Too many errors")
        self.assertEqual(step.session.state, State.CLOSING)

    def test_refused_rcpt_at_limit_still_noted(self):
        """The closing error of a refused RCPT is still noted for the log."""
        s = at(State.MAIL, limits=SmtpLimits(max_errors=1))
        step = run(s, b"RCPT TO:<bob@test.local>")
        self.assertEqual(step.actions, (RcptRejected("bob@test.local", relay=False), Close()))

    def test_non_errors_do_not_count(self):
        """250, 252, 354, 452 and duplicates do not count towards the limit."""
        s = at(State.MAIL, limits=SmtpLimits(max_recipients=1, max_errors=1))
        s = run(
            s,
            b"RCPT TO:<alice@test.local>",
            b"RCPT TO:<alice@test.local>",
            b"RCPT TO:<alice+1@test.local>",
            b"VRFY x",
            b"NOOP",
        ).session
        self.assertEqual((s.state, s.errors), (State.RCPT, 0))


class ConnectionEventTests(SynchronousTestCase):
    def test_banner(self):
        """The banner names the configured domain."""
        step = fresh().connected()
        self.assertEqual(step.replies, (b"220 test.local ESMTP aimx",))
        self.assertEqual(step.session.state, State.CONNECTED)

    def test_refuse(self):
        """A refused connection gets its 421 alone and a close."""
        step = fresh().refuse(TOO_MANY_SESSIONS)
        self.assertEqual(step.replies, (b"421 4.3.2 Too many connections, try again later",))
        self.assertEqual((step.session.state, step.actions), (State.CLOSING, (Close(),)))

    def test_timeouts_by_state(self):
        """Idle and session time-outs close with their 421; in DATA, Timeout during DATA."""
        for state in set(State) - {State.CLOSING}:
            for timer, status in ((Timeout.IDLE, IDLE_TIMEOUT), (Timeout.SESSION, SESSION_TIMEOUT)):
                step = at(state).timeout(timer)
                want = DATA_TIMEOUT if state is State.DATA else status
                where = f"{timer.name} in {state.name}"
                self.assertEqual(step.replies, (want.line(),), where)
                self.assertEqual(step.actions, (Close(),), where)
                self.assertEqual(step.session.state, State.CLOSING, where)
                self.assertTrue(step.session.timed_out, where)

    def test_timeout_while_closing_aborts(self):
        """A timer running out after the last reply writes nothing and aborts."""
        s = at(State.CLOSING)
        for timer in Timeout:
            step = s.timeout(timer)
            self.assertEqual((step.replies, step.actions), ((), (Abort(),)))
            self.assertFalse(step.session.timed_out)

    def test_lost(self):
        """A lost connection is CLOSING with nothing written."""
        for state in State:
            step = at(state).lost()
            self.assertEqual(
                (step.replies, step.actions, step.session.state), ((), (), State.CLOSING)
            )

    def test_session_is_frozen(self):
        """Events return a new session; the old one is unchanged."""
        s = at(State.GREETED)
        run(s, b"MAIL FROM:<a@b>")
        self.assertEqual(s.state, State.GREETED)
        self.assertRaises(attrs.exceptions.FrozenInstanceError, setattr, s, "state", State.MAIL)
