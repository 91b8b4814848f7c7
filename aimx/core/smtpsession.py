"""The inbound SMTP dialogue as a pure state machine (L0, sans-IO).

RFC 5321's server side as data: the states of a session, the verbs and what each one
answers in each state, the limits (errors, recipients, declared and received size)
and the resets (EHLO, RSET, STARTTLS).  A L{Session} is frozen; every event is a
method that returns a L{Transition}: the next session, the reply lines to write (in
order, without line ends) and the actions the adapter carries out after writing
them.  No I/O, no clock: time-outs, the end of DATA and the outcome of a delivery
are events the adapter (C{aimx/smtp/server.py}) feeds in, and the adapter alone
owns bytes, framing, timers, TLS and sockets.

States and events::

    CONNECTED --EHLO/HELO--> GREETED --MAIL--> MAIL --RCPT ok--> RCPT --DATA--> DATA
    DATA --data_end--> DELIVERING --delivered--> GREETED      (or 552: GREETED)
    DATA --bare_lf--> DISCARD --discard_end--> GREETED
    any command state --STARTTLS--> CONNECTED (TLS active)
    any state --QUIT / 20th error / time-out / refuse / lost--> CLOSING

Commands are read in CONNECTED, GREETED, MAIL and RCPT only (L{COMMAND_STATES});
in DATA the adapter scans the message, in DISCARD it skips to the terminator, in
DELIVERING input waits (PIPELINING: replies stay in command order), and in CLOSING
nothing more is read or written.
"""

import enum

import attrs

from aimx.core.address import Envelope, extract_path, mail_parameters, rcpt_verdict
from aimx.core.config import Config, ascii_lower
from aimx.errors import SmtpStatus


@attrs.frozen
class SmtpLimits:
    """Session limits (docs/security.md, "Limits"); tests lower them."""

    max_message_size: int = 26214400
    max_recipients: int = 100
    max_errors: int = 20
    max_sessions: int = 100
    max_command_line: int = 1024
    idle_timeout: float = 300
    session_timeout: float = 600
    # After our last reply (221, 421) the socket only waits for that reply to be
    # taken; a peer that stops reading is dropped after this long.
    close_grace: float = 30


# -- replies ---------------------------------------------------------------------

OK = SmtpStatus(250, "2.0.0", "OK")
MAIL_OK = SmtpStatus(250, "2.1.0", "OK")
RCPT_OK = SmtpStatus(250, "2.1.5", "OK")
# RFC 5321 §4.1.4 / §4.3.2: a command out of sequence is 503.
NEED_HELO = SmtpStatus(503, "5.5.1", "Send EHLO/HELO first")
NEED_MAIL = SmtpStatus(503, "5.5.1", "Send MAIL FROM first")
NEED_RCPT = SmtpStatus(503, "5.5.1", "Send RCPT TO first")
NESTED_MAIL = SmtpStatus(503, "5.5.1", "MAIL FROM already given")
EHLO_SYNTAX = SmtpStatus(501, "5.5.4", "EHLO requires domain argument")
HELO_SYNTAX = SmtpStatus(501, "5.5.4", "HELO requires domain argument")
MAIL_SYNTAX = SmtpStatus(501, "5.5.4", "Syntax: MAIL FROM:<address>")
RCPT_SYNTAX = SmtpStatus(501, "5.5.4", "Syntax: RCPT TO:<address>")
UNRECOGNIZED = SmtpStatus(500, "5.5.2", "Unrecognized command")
LINE_TOO_LONG = SmtpStatus(500, "5.5.2", "Line too long")
# RFC 5321 §2.3.8: a line ends in CRLF only; a bare LF is refused, never a line end.
BARE_LF = SmtpStatus(500, "5.6.0", "Bare LF not allowed (RFC 5321)")
# RFC 1870 §6 / RFC 5321 §4.5.3.1.10: the message exceeds the fixed maximum size.
TOO_BIG = SmtpStatus(552, "5.3.4", "Message exceeds maximum size")
TOO_BIG_DECLARED = SmtpStatus(
    552, "5.3.4", "Message size exceeds fixed maximum message size"
)
# RFC 5321 §4.5.3.1.10: past the recipient limit the reply is 452 (the client
# sends the rest in another transaction); accepted recipients stay accepted.
TOO_MANY_RCPTS = SmtpStatus(452, "4.5.3", "Too many recipients")
TOO_MANY_ERRORS = SmtpStatus(421, "4.7.0", "Too many errors")
TOO_MANY_SESSIONS = SmtpStatus(421, "4.3.2", "Too many connections, try again later")
TOO_MANY_FROM_CLIENT = SmtpStatus(
    421, "4.7.0", "Too many connections from your address, try again later"
)
# RFC 5321 §4.5.3.2: a server that times out closes with 421.
IDLE_TIMEOUT = SmtpStatus(421, "4.4.2", "Idle timeout exceeded")
SESSION_TIMEOUT = SmtpStatus(421, "4.4.2", "Connection timed out")
DATA_TIMEOUT = SmtpStatus(421, "4.4.2", "Timeout during DATA")
STORE_FAILED = SmtpStatus(451, "4.3.0", "Temporary failure, please retry")
# RFC 5321 §3.5.3: a server that will not verify answers 252.
CANNOT_VRFY = SmtpStatus(252, "2.5.2", "Cannot VRFY user, but will accept message")
BYE = SmtpStatus(221, "2.0.0", "Bye")
# RFC 3207 §4: 220 to STARTTLS, then the handshake.
TLS_READY = SmtpStatus(220, "2.0.0", "Ready to start TLS")
TLS_ACTIVE = SmtpStatus(503, "5.5.1", "TLS already active")
TLS_UNAVAILABLE = SmtpStatus(502, "5.5.1", "STARTTLS not available")
# RFC 5321 §4.1.1.4: 354, then the message up to <CRLF>.<CRLF>.
START_DATA = b"354 Start mail input; end with <CRLF>.<CRLF>"


class State(enum.Enum):
    """Where a session is in the dialogue."""

    CONNECTED = "connected"  # banner sent (or TLS just started): EHLO/HELO needed
    GREETED = "greeted"  # EHLO/HELO given, no transaction
    MAIL = "mail"  # reverse path given, no recipient accepted yet
    RCPT = "rcpt"  # at least one recipient accepted
    DATA = "data"  # 354 sent: the adapter scans the message
    DISCARD = "discard"  # bare LF refused: the adapter skips to <CRLF>.<CRLF>
    DELIVERING = "delivering"  # the message is with the ingest chain
    CLOSING = "closing"  # last reply written, or the peer is gone


#: The states in which the adapter reads command lines.
COMMAND_STATES = frozenset({State.CONNECTED, State.GREETED, State.MAIL, State.RCPT})


class Timeout(enum.Enum):
    """Which timer ran out (the adapter owns both)."""

    IDLE = "idle"  # no input for idle_timeout (or the close grace, when CLOSING)
    SESSION = "session"  # session_timeout since the connection was accepted


# -- actions: what the adapter does after writing the replies ----------------------


@attrs.frozen
class BeginData:
    """354 was sent: start an empty message buffer; DATA scanning follows."""


@attrs.frozen
class StartTLS:
    """Drop any buffered plaintext and start the TLS handshake (RFC 3207 §4.2)."""


@attrs.frozen
class Deliver:
    """Hand the message to the ingest chain; feed its outcome to L{Session.delivered}."""

    envelope: Envelope


@attrs.frozen
class Close:
    """The last reply is written: drop buffered input and close once it is sent.

    @ivar quit: the close answers QUIT, so the session stops counting towards the
        connection caps now, before the TCP close completes.
    """

    quit: bool = False


@attrs.frozen
class Abort:
    """A timer ran out while closing: the peer is not taking our last reply; drop it."""


@attrs.frozen
class RcptRejected:
    """A RCPT was refused (for the log).

    @ivar relay: refused as relaying (550 5.7.1), else as an unknown user (5.1.1).
    """

    rcpt: str
    relay: bool


@attrs.frozen
class Transition:
    """The outcome of one event.

    @ivar session: the session after the event.
    @ivar replies: reply lines to write, in order, without line ends.
    @ivar actions: what the adapter does next, in order, after writing C{replies}.
    """

    session: "Session"
    replies: tuple[bytes, ...] = ()
    actions: tuple[object, ...] = ()


@attrs.frozen
class Session:
    """One inbound SMTP dialogue (frozen: events return the next one).

    @ivar peer: the client's IP address (the envelope's C{peer_ip}).
    @ivar domain: the configured domain, read when the connection was accepted.
    @ivar tls_available: STARTTLS can be offered (a certificate and a TLS transport).
    @ivar limits: the session limits.
    @ivar state: where the dialogue is.
    @ivar helo: the EHLO/HELO argument, or C{None}.
    @ivar mail_from: the reverse path (C{""} for C{<>}), or C{None} before MAIL.
    @ivar rcpts: accepted recipients in RCPT order, as given.
    @ivar rcpt_keys: C{rcpts} ASCII-lower-cased, to answer a repeated RCPT.
    @ivar errors: error replies so far (they carry over STARTTLS).
    @ivar tls_active: STARTTLS has been accepted.
    @ivar timed_out: the session was closed by a time-out.
    @ivar messages: messages handed to delivery.
    @ivar received: bytes of those messages.
    """

    peer: str
    domain: str
    tls_available: bool
    limits: SmtpLimits = SmtpLimits()
    state: State = State.CONNECTED
    helo: str | None = None
    mail_from: str | None = None
    rcpts: tuple[str, ...] = ()
    rcpt_keys: frozenset[str] = frozenset()
    errors: int = 0
    tls_active: bool = False
    timed_out: bool = False
    messages: int = 0
    received: int = 0

    # -- connection events ----------------------------------------------------

    def connected(self) -> Transition:
        """The connection was admitted: the banner (RFC 5321 §4.2, 220 greeting)."""
        self._expect(State.CONNECTED)
        return Transition(self, (b"220 " + self.domain.encode("idna") + b" ESMTP aimx",))

    def refuse(self, status: SmtpStatus) -> Transition:
        """The connection is over a cap: C{status} (a 421) instead of the banner."""
        self._expect(State.CONNECTED)
        return self._close(status.line())

    def lost(self) -> Transition:
        """The connection is gone: nothing more is written."""
        return Transition(attrs.evolve(self, state=State.CLOSING))

    def timeout(self, timer: Timeout) -> Transition:
        """A timer ran out (RFC 5321 §4.5.3.2: 421 and close, inside DATA too).

        While closing, the peer is not taking our last reply: abort.
        """
        if self.state is State.CLOSING:
            return Transition(self, (), (Abort(),))
        if self.state is State.DATA:
            status = DATA_TIMEOUT
        elif timer is Timeout.SESSION:
            status = SESSION_TIMEOUT
        else:
            status = IDLE_TIMEOUT
        return self._close(status.line(), timed_out=True)

    # -- command lines --------------------------------------------------------

    def command(self, line: bytes, config: Config) -> Transition:
        """One command line, with its line end, at most C{max_command_line} bytes.

        Surrounding whitespace stripped, the verb is the text
        before the first space (case-insensitive), the rest trimmed is the argument;
        a blank line is ignored.

        @param config: the live configuration snapshot (RCPT routes with it).
        """
        self._expect(*COMMAND_STATES)
        text = line.strip().decode("utf-8", "surrogateescape")
        if not text:
            return Transition(self)
        verb, _, args = text.partition(" ")
        verb_method = _VERBS.get(verb.upper())
        if verb_method is None or not verb.isalpha():
            return self._error(UNRECOGNIZED)
        return verb_method(self, args.strip(), config)

    def line_too_long(self) -> Transition:
        """A command line over C{max_command_line} bytes (its rest is skipped)."""
        self._expect(*COMMAND_STATES)
        return self._error(LINE_TOO_LONG)

    def _ehlo(self, args: str, config: Config) -> Transition:
        # RFC 5321 §4.1.4: EHLO in any state resets the transaction, as RSET does.
        if not args:
            return self._error(EHLO_SYNTAX)
        lines = [
            f"{self.domain} Hello {args}",
            f"SIZE {self.limits.max_message_size}",  # RFC 1870
            "8BITMIME",  # RFC 6152
            "PIPELINING",  # RFC 2920
            "ENHANCEDSTATUSCODES",  # RFC 2034
        ]
        if self.tls_available and not self.tls_active:
            lines.append("STARTTLS")  # RFC 3207 §4.2: not offered again over TLS
        lines.append("SMTPUTF8")  # RFC 6531
        replies = tuple(
            b"250-" + line.encode("utf-8", "surrogateescape") for line in lines[:-1]
        )
        return Transition(self._greeted(args), replies + (b"250 " + lines[-1].encode(),))

    def _helo(self, args: str, config: Config) -> Transition:
        if not args:
            return self._error(HELO_SYNTAX)
        text = f"250 {self.domain} Hello {args}"
        return Transition(self._greeted(args), (text.encode("utf-8", "surrogateescape"),))

    def _mail(self, args: str, config: Config) -> Transition:
        if self.state is State.CONNECTED:
            return self._error(NEED_HELO)
        if self.state is not State.GREETED:
            return self._error(NESTED_MAIL)
        path = extract_path(args, "FROM:")
        if path is None:
            return self._error(MAIL_SYNTAX)
        size = mail_parameters(args).get("SIZE", "")
        # RFC 1870 §6: a declared size over the fixed maximum is refused at once.
        if size.isdigit() and int(size) > self.limits.max_message_size:
            return self._error(TOO_BIG_DECLARED)
        return self._reply(MAIL_OK, state=State.MAIL, mail_from=path)

    def _rcpt(self, args: str, config: Config) -> Transition:
        if self.state not in (State.MAIL, State.RCPT):
            return self._error(NEED_MAIL)
        path = extract_path(args, "TO:")
        if not path:
            return self._error(RCPT_SYNTAX)
        key = ascii_lower(path)
        if key in self.rcpt_keys:
            # Already a recipient of this message: storing it again would only
            # land a second copy in the same mailbox. Answer as for the first.
            return self._reply(RCPT_OK)
        if len(self.rcpts) >= self.limits.max_recipients:
            return self._reply(TOO_MANY_RCPTS)
        verdict = rcpt_verdict(config, path)
        if verdict is not None:
            rejected = RcptRejected(rcpt=path, relay=verdict.enhanced == "5.7.1")
            return self._error(verdict, note=rejected)
        return self._reply(
            RCPT_OK,
            state=State.RCPT,
            rcpts=self.rcpts + (path,),
            rcpt_keys=self.rcpt_keys | {key},
        )

    def _data(self, args: str, config: Config) -> Transition:
        if self.state is not State.RCPT:
            return self._error(NEED_RCPT)
        return Transition(
            attrs.evolve(self, state=State.DATA), (START_DATA,), (BeginData(),)
        )

    def _rset(self, args: str, config: Config) -> Transition:
        # RFC 5321 §4.1.1.5; Greeted stays Greeted, Connected stays Connected.
        state = State.CONNECTED if self.state is State.CONNECTED else State.GREETED
        return self._reply(OK, state=state, **_NO_TRANSACTION)

    def _noop(self, args: str, config: Config) -> Transition:
        return self._reply(OK)  # RFC 5321 §4.1.1.9: any argument is ignored

    def _vrfy(self, args: str, config: Config) -> Transition:
        return self._reply(CANNOT_VRFY)

    def _quit(self, args: str, config: Config) -> Transition:
        return self._close(BYE.line(), quit=True)

    def _starttls(self, args: str, config: Config) -> Transition:
        if self.tls_active:
            return self._error(TLS_ACTIVE)
        if not self.tls_available:
            return self._error(TLS_UNAVAILABLE)
        # RFC 3207 §4.2: plaintext pipelined after STARTTLS is discarded and every
        # piece of knowledge from the client (EHLO argument, transaction) is
        # forgotten; the error count and the session deadline carry over.
        session = attrs.evolve(
            self, state=State.CONNECTED, helo=None, tls_active=True, **_NO_TRANSACTION
        )
        return Transition(session, (TLS_READY.line(),), (StartTLS(),))

    # -- DATA events ----------------------------------------------------------

    def data_end(self, raw: bytes, size: int) -> Transition:
        """The terminator was read: deliver, or 552 when the message was too big.

        @param raw: the unstuffed message (C{b""} when the adapter dropped it).
        @param size: the unstuffed message's size as counted while scanning.
        """
        self._expect(State.DATA)
        if size > self.limits.max_message_size:
            # Read to the end, then refuse (552); nothing stored.
            return self._error(TOO_BIG, state=State.GREETED, **_NO_TRANSACTION)
        envelope = Envelope(
            peer_ip=self.peer,
            helo=self.helo,
            mail_from=self.mail_from or None,
            rcpts=self.rcpts,
            raw=raw,
        )
        session = attrs.evolve(
            self,
            state=State.DELIVERING,
            messages=self.messages + 1,
            received=self.received + len(raw),
            **_NO_TRANSACTION,
        )
        return Transition(session, (), (Deliver(envelope),))

    def bare_lf(self) -> Transition:
        """A bare LF in DATA: 500 at once, then skip the payload to its terminator.

        An aimx decision: nothing of the payload is ever read
        as commands.
        """
        self._expect(State.DATA)
        return self._error(BARE_LF, state=State.DISCARD, **_NO_TRANSACTION)

    def discard_end(self) -> Transition:
        """The skipped payload's C{<CRLF>.<CRLF>} was read: commands again."""
        self._expect(State.DISCARD)
        return Transition(attrs.evolve(self, state=State.GREETED))

    def data_overflow(self) -> Transition:
        """One unterminated DATA line outgrew the size limit: 552 and close."""
        self._expect(State.DATA)
        return self._close(TOO_BIG.line(), **_NO_TRANSACTION)

    def delivered(self, status: SmtpStatus) -> Transition:
        """The ingest chain answered: its reply, then the next transaction."""
        if self.state is State.CLOSING:
            return Transition(self)
        self._expect(State.DELIVERING)
        return self._reply(status, state=State.GREETED)

    # -- helpers --------------------------------------------------------------

    def _expect(self, *states: State) -> None:
        if self.state not in states:
            raise ValueError(f"SMTP session event not valid in state {self.state.name}")

    def _greeted(self, helo: str) -> "Session":
        return attrs.evolve(self, state=State.GREETED, helo=helo, **_NO_TRANSACTION)

    def _reply(self, status: SmtpStatus, **changes) -> Transition:
        session = attrs.evolve(self, **changes) if changes else self
        return Transition(session, (status.line(),))

    def _error(self, status: SmtpStatus, note=None, **changes) -> Transition:
        """An error reply; the C{max_errors}th in a session also closes it with 421
        (Postfix C{smtpd_hard_error_limit} model)."""
        errors = self.errors + 1
        notes = () if note is None else (note,)
        if errors >= self.limits.max_errors:
            closed = self._close(
                status.line(), TOO_MANY_ERRORS.line(), errors=errors, **changes
            )
            return attrs.evolve(closed, actions=notes + closed.actions)
        session = attrs.evolve(self, errors=errors, **changes)
        return Transition(session, (status.line(),), notes)

    def _close(self, *replies: bytes, quit: bool = False, **changes) -> Transition:
        session = attrs.evolve(self, **{**changes, "state": State.CLOSING})
        return Transition(session, replies, (Close(quit=quit),))


_NO_TRANSACTION = {"mail_from": None, "rcpts": (), "rcpt_keys": frozenset()}

_VERBS = {
    "EHLO": Session._ehlo,
    "HELO": Session._helo,
    "MAIL": Session._mail,
    "RCPT": Session._rcpt,
    "DATA": Session._data,
    "RSET": Session._rset,
    "NOOP": Session._noop,
    "VRFY": Session._vrfy,
    "QUIT": Session._quit,
    "STARTTLS": Session._starttls,
}
