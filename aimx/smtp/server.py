"""The inbound SMTP server (L2): Twisted's ESMTP, fixed for aimx.

Twisted's stock C{ESMTP} differs from spec/inbound.md in replies, extensions, state
rules and DATA framing (see STYLE.md §5), so this subclass keeps its transport, TLS
and timeout machinery and replaces the byte handling:

  - commands are read up to LF, at most 1024 bytes with the line end;
  - DATA is scanned chunk-wise as raw bytes (no decoding, RFC 5321 framing, bare LF
    refused, C{..} unstuffed) instead of line by line;
  - plaintext pipelined after STARTTLS is discarded (RFC 3207 §4.2);
  - input that arrives while a message is being stored waits its turn, so replies
    always come in command order (PIPELINING).
"""

import io
import re

import attrs
from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.protocol import ServerFactory
from twisted.mail import smtp

from aimx.core.address import (
    Envelope,
    client_address,
    extract_path,
    mail_parameters,
    rcpt_verdict,
)
from aimx.core.config import ascii_lower
from aimx.errors import SmtpStatus
from aimx.logs import Logger

_BARE_LF = re.compile(rb"(?<!\r)\n")
_TERMINATOR = re.compile(rb"^\.[ \t]*\r\n", re.M)
_STUFFED = re.compile(rb"^\.(?=\.)", re.M)
_DISCARD_END = re.compile(rb"\r\n\.\r\n")

_COMMAND, _DATA, _DISCARD = "COMMAND", "DATA", "DISCARD"

log = Logger(namespace="aimx.smtp")

_PIPELINE_BUFFER = 1 << 20


@attrs.frozen
class SmtpLimits:
    """Session limits (spec/inbound.md §1–2); tests lower them."""

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


OK = SmtpStatus(250, "2.0.0", "OK")
MAIL_OK = SmtpStatus(250, "2.1.0", "OK")
RCPT_OK = SmtpStatus(250, "2.1.5", "OK")
NEED_HELO = SmtpStatus(503, "5.5.1", "Send EHLO/HELO first")
NEED_MAIL = SmtpStatus(503, "5.5.1", "Send MAIL FROM first")
NEED_RCPT = SmtpStatus(503, "5.5.1", "Send RCPT TO first")
NESTED_MAIL = SmtpStatus(503, "5.5.1", "MAIL FROM already given")
UNRECOGNIZED = SmtpStatus(500, "5.5.2", "Unrecognized command")
LINE_TOO_LONG = SmtpStatus(500, "5.5.2", "Line too long")
BARE_LF = SmtpStatus(500, "5.6.0", "Bare LF not allowed (RFC 5321)")
TOO_BIG = SmtpStatus(552, "5.3.4", "Message exceeds maximum size")
TOO_BIG_DECLARED = SmtpStatus(
    552, "5.3.4", "Message size exceeds fixed maximum message size"
)
TOO_MANY_RCPTS = SmtpStatus(452, "4.5.3", "Too many recipients")
TOO_MANY_ERRORS = SmtpStatus(421, "4.7.0", "Too many errors")
TOO_MANY_SESSIONS = SmtpStatus(421, "4.3.2", "Too many connections, try again later")
TOO_MANY_FROM_CLIENT = SmtpStatus(
    421, "4.7.0", "Too many connections from your address, try again later"
)
IDLE_TIMEOUT = SmtpStatus(421, "4.4.2", "Idle timeout exceeded")
SESSION_TIMEOUT = SmtpStatus(421, "4.4.2", "Connection timed out")
DATA_TIMEOUT = SmtpStatus(421, "4.4.2", "Timeout during DATA")
STORE_FAILED = SmtpStatus(451, "4.3.0", "Temporary failure, please retry")


class AimxESMTP(smtp.ESMTP):
    """One inbound SMTP session."""

    noisy = False

    def __init__(self, factory: "AimxSMTPFactory"):
        super().__init__(contextFactory=factory.tls_options)
        self.factory = factory
        self.limits = factory.limits
        self._buffer = b""
        self._offset = 0  # start of the unread part of _buffer
        self._mode = _COMMAND
        self._greeted = False
        self._helo_arg = None
        self._mail_from = None  # None: no MAIL yet; "" for the null sender
        self._rcpts = []
        self._rcpt_keys = set()  # ASCII-lower-cased _rcpts, for duplicates
        self._errors = 0
        self._busy = False
        self._closing = False
        self._paused = False
        self._timed_out = False
        self._skip_line = False
        self._messages = 0
        self._bytes = 0
        self._started = 0.0
        self._session_call = None
        self._admitted = False
        self.peer = "?"
        self.client = "?"

    # -- connection ------------------------------------------------------------

    def connectionMade(self):
        self.peer = getattr(self.transport.getPeer(), "host", "?")
        self.client = client_address(self.peer)
        self.canStartTLS = self.ctx is not None and ITLSTransport.providedBy(
            self.transport
        )
        refusal = self.factory.session_started(self)
        if refusal is not None:
            self._send_and_close(refusal)
            return
        self._admitted = True
        self._domain = self.factory.domain()
        self.host = self._domain.encode("idna")
        self._started = self.factory.clock.seconds()
        self.sendLine(b"220 " + self.host + b" ESMTP aimx")
        self.setTimeout(self.limits.idle_timeout)
        self._session_call = self.callLater(
            self.limits.session_timeout, self._session_timed_out
        )

    def callLater(self, period, func, *args):
        return self.factory.clock.callLater(period, func, *args)

    def connectionLost(self, reason):
        self.setTimeout(None)
        if self._session_call is not None and self._session_call.active():
            self._session_call.cancel()
        self.factory.session_ended(self)
        if not self._admitted:
            return
        if self._timed_out:
            outcome, result = "timeout", "timeout"
        elif reason is not None and reason.check(SSL.Error):
            outcome, result = "error", f"error: TLS handshake failed: {reason.value}"
        else:
            outcome, result = "closed", "ok"
        log.info(
            "[{peer}] Connection {outcome} ehlo={helo} messages={messages} "
            "bytes={bytes} duration={duration:.1f}s result={result}",
            peer=self.peer,
            outcome=outcome,
            result=result,
            helo=self._helo_arg,
            messages=self._messages,
            bytes=self._bytes,
            duration=self.factory.clock.seconds() - self._started,
        )

    def timeoutConnection(self):
        if self._closing:
            # The close_grace of _send_and_close ran out: the peer is not taking
            # our last reply, so drop the socket instead of waiting on it.
            self.transport.abortConnection()
            return
        self._timed_out = True
        self._send_and_close(DATA_TIMEOUT if self._mode == _DATA else IDLE_TIMEOUT)

    def _session_timed_out(self):
        self._session_call = None
        if self._closing:
            self.transport.abortConnection()
            return
        self._timed_out = True
        self._send_and_close(DATA_TIMEOUT if self._mode == _DATA else SESSION_TIMEOUT)

    def _send_and_close(self, status: SmtpStatus):
        self._reply(status)
        self._closing = True
        self._buffer, self._offset = b"", 0
        self.transport.loseConnection()
        # loseConnection waits until every reply is written, which is forever
        # for a peer that does not read: bound that wait.
        self.setTimeout(self.limits.close_grace)

    def _reply(self, status: SmtpStatus):
        self.sendLine(status.line())

    def _error(self, status: SmtpStatus):
        """Send a 5xx reply; the 20th error in a session closes it (Postfix model)."""
        self._errors += 1
        if self._errors >= self.limits.max_errors:
            self._reply(status)
            self._send_and_close(TOO_MANY_ERRORS)
        else:
            self._reply(status)

    # -- input -----------------------------------------------------------------

    def dataReceived(self, data):
        if self._closing:
            return
        self.resetTimeout()
        self._buffer += data
        if self._busy and len(self._buffer) - self._offset > _PIPELINE_BUFFER:
            # Commands pipelined behind a message being stored wait their turn;
            # past this much, stop reading until the message is answered.
            self.transport.pauseProducing()
            self._paused = True
        self._process()

    def _process(self):
        while len(self._buffer) > self._offset and not self._busy and not self._closing:
            if self._mode == _COMMAND:
                if not self._command_step():
                    break
                continue
            self._compact()
            if self._mode == _DATA:
                if not self._data_step():
                    break
            elif not self._discard_step():
                break
        self._compact()

    def _compact(self):
        """Drop the consumed prefix of the buffer (command lines are read by offset,
        so a burst of pipelined commands costs one copy, not one per line)."""
        if self._offset:
            self._buffer = self._buffer[self._offset :]
            self._offset = 0

    def _command_step(self) -> bool:
        """Handle one command line; return False when more input is needed."""
        start = self._offset
        end = self._buffer.find(b"\n", start)
        limit = self.limits.max_command_line
        if end == -1:
            if len(self._buffer) - start > limit:
                # Keep discarding this over-long line until its LF arrives.
                self._buffer, self._offset = b"", 0
                self._skip_line = True
            return False
        line, self._offset = self._buffer[start : end + 1], end + 1
        if self._skip_line or len(line) > limit:
            self._skip_line = False
            self._error(LINE_TOO_LONG)
            return True
        text = line.strip().decode("utf-8", "surrogateescape")
        if text:
            verb, _, args = text.partition(" ")
            handler = getattr(self, "cmd_" + verb.upper(), None)
            if handler is None or not verb.isalpha():
                self._error(UNRECOGNIZED)
            else:
                handler(args.strip())
        return True

    # -- commands --------------------------------------------------------------

    def _reset_transaction(self):
        self._mail_from = None
        self._rcpts = []
        self._rcpt_keys = set()

    def cmd_EHLO(self, args):
        if not args:
            self._error(SmtpStatus(501, "5.5.4", "EHLO requires domain argument"))
            return
        self._greet(args)
        lines = [f"{self._domain} Hello {args}"]
        lines.append(f"SIZE {self.limits.max_message_size}")
        lines += ["8BITMIME", "PIPELINING", "ENHANCEDSTATUSCODES"]
        if self.canStartTLS and not self.startedTLS:
            lines.append("STARTTLS")
        lines.append("SMTPUTF8")
        for line in lines[:-1]:
            self.sendLine(b"250-" + line.encode("utf-8", "surrogateescape"))
        self.sendLine(b"250 " + lines[-1].encode())

    def cmd_HELO(self, args):
        if not args:
            self._error(SmtpStatus(501, "5.5.4", "HELO requires domain argument"))
            return
        self._greet(args)
        text = f"250 {self._domain} Hello {args}"
        self.sendLine(text.encode("utf-8", "surrogateescape"))

    def _greet(self, args):
        self._greeted = True
        self._helo_arg = args
        self._reset_transaction()

    def cmd_MAIL(self, args):
        if not self._greeted:
            self._error(NEED_HELO)
            return
        if self._mail_from is not None:
            self._error(NESTED_MAIL)
            return
        path = extract_path(args, "FROM:")
        if path is None:
            self._error(SmtpStatus(501, "5.5.4", "Syntax: MAIL FROM:<address>"))
            return
        size = mail_parameters(args).get("SIZE", "")
        if size.isdigit() and int(size) > self.limits.max_message_size:
            self._error(TOO_BIG_DECLARED)
            return
        self._mail_from = path
        self._reply(MAIL_OK)

    def cmd_RCPT(self, args):
        if self._mail_from is None:
            self._error(NEED_MAIL)
            return
        path = extract_path(args, "TO:")
        if not path:
            self._error(SmtpStatus(501, "5.5.4", "Syntax: RCPT TO:<address>"))
            return
        key = ascii_lower(path)
        if key in self._rcpt_keys:
            # Already a recipient of this message: storing it again would only
            # land a second copy in the same mailbox. Answer as for the first.
            self._reply(RCPT_OK)
            return
        if len(self._rcpts) >= self.limits.max_recipients:
            self._reply(TOO_MANY_RCPTS)
            return
        verdict = rcpt_verdict(self.factory.config(), path)
        if verdict is not None:
            if verdict.enhanced == "5.7.1":
                log.info(
                    "[{peer}] RCPT rejected (relay): recipient={rcpt} "
                    "configured_domain={domain}",
                    peer=self.peer,
                    rcpt=path,
                    domain=self._domain,
                )
            else:
                log.info(
                    "[{peer}] RCPT rejected (no mailbox): recipient={rcpt}",
                    peer=self.peer,
                    rcpt=path,
                )
            self._error(verdict)
            return
        self._rcpts.append(path)
        self._rcpt_keys.add(key)
        self._reply(RCPT_OK)

    def cmd_DATA(self, args):
        if not self._rcpts:
            self._error(NEED_RCPT)
            return
        self._mode = _DATA
        # A growing BytesIO hands its buffer over without a copy (getvalue), where
        # joining a list of chunks would hold the message twice.
        self._data = io.BytesIO()
        self._size = 0
        self.sendLine(b"354 Start mail input; end with <CRLF>.<CRLF>")

    def cmd_RSET(self, args):
        self._reset_transaction()
        self._reply(OK)

    def cmd_NOOP(self, args):
        self._reply(OK)

    def cmd_VRFY(self, args):
        # RFC 5321 §3.5.3: a server that will not verify answers 252.
        self._reply(
            SmtpStatus(252, "2.5.2", "Cannot VRFY user, but will accept message")
        )

    def cmd_QUIT(self, args):
        self._send_and_close(SmtpStatus(221, "2.0.0", "Bye"))
        # The session is over once its 221 is written; a client may reconnect
        # before our TCP close completes, so stop counting it towards the caps now.
        self.factory.session_quit(self)

    def cmd_STARTTLS(self, args):
        if self.startedTLS:
            self._error(SmtpStatus(503, "5.5.1", "TLS already active"))
            return
        if not self.canStartTLS:
            self._error(SmtpStatus(502, "5.5.1", "STARTTLS not available"))
            return
        self._reply(SmtpStatus(220, "2.0.0", "Ready to start TLS"))
        # RFC 3207 §4.2: anything pipelined after STARTTLS is discarded and the
        # session starts over after the handshake.
        self._buffer, self._offset = b"", 0
        self._greeted = False
        self._helo_arg = None
        self._reset_transaction()
        self.transport.startTLS(self.ctx)
        self.startedTLS = True

    # -- DATA ------------------------------------------------------------------

    def _data_step(self) -> bool:
        """Scan buffered DATA bytes; return False when more input is needed.

        Only complete lines are scanned, so every scanned region starts at a line
        start and C{^} in the patterns means "start of a DATA line".
        """
        buf = self._buffer
        last_lf = buf.rfind(b"\n")
        if last_lf == -1:
            if len(buf) > self.limits.max_message_size:
                self._send_and_close(TOO_BIG)
            return False
        region = buf[: last_lf + 1]
        # Fast path: only lines starting with "." can end DATA or need unstuffing,
        # and equal LF and CRLF counts mean there is no bare LF.
        dots = region.startswith(b".") or b"\n." in region
        term = _TERMINATOR.search(region) if dots else None
        end = term.start() if term else len(region)
        if region.count(b"\n", 0, end) != region.count(b"\r\n", 0, end):
            bare = _BARE_LF.search(region, 0, end)
            # aimx decision: skip the rest of the payload up to its terminator so
            # none of it is read as commands.
            self._buffer = buf[bare.end() :]
            self._end_data(_DISCARD)
            self._error(BARE_LF)
            return True
        body = _STUFFED.sub(b"", region[:end]) if dots else region
        self._buffer = buf[term.end() :] if term else buf[last_lf + 1 :]
        self._size += len(body)
        if self._size > self.limits.max_message_size:
            self._data = io.BytesIO()  # refused at the end: keep nothing
        else:
            self._data.write(body)
        if term is not None:
            self._finish_message()
        return True

    def _end_data(self, mode=_COMMAND):
        self._mode = mode
        self._data = None
        self._reset_transaction()

    def _discard_step(self) -> bool:
        match = _DISCARD_END.search(self._buffer)
        if match is None:
            self._buffer = self._buffer[-5:]
            return False
        self._buffer = self._buffer[match.end() :]
        self._mode = _COMMAND
        return True

    def _finish_message(self):
        raw, rcpts, mail_from = (
            self._data.getvalue(),
            tuple(self._rcpts),
            self._mail_from,
        )
        too_big = self._size > self.limits.max_message_size
        self._end_data()
        if too_big:
            self._error(TOO_BIG)
            return
        envelope = Envelope(
            peer_ip=self.peer,
            helo=self._helo_arg,
            mail_from=mail_from or None,
            rcpts=rcpts,
            raw=raw,
        )
        self._busy = True
        self._messages += 1
        self._bytes += len(raw)
        d = defer.maybeDeferred(self.factory.deliver, envelope)
        d.addErrback(self._delivery_crashed)
        d.addCallback(self._delivered)

    def _delivery_crashed(self, failure):
        log.failure("[{peer}] delivery failed", failure, peer=self.peer)
        return STORE_FAILED

    def _delivered(self, status: SmtpStatus):
        self._busy = False
        if self._closing:
            return
        self._reply(status)
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()
        self._process()


@attrs.define
class AimxSMTPFactory(ServerFactory):
    """Builds sessions and tracks them for the connection caps and the drain.

    @ivar config: returns the live configuration snapshot.
    @ivar deliver: C{Envelope -> Deferred[SmtpStatus]}, the ingest chain.
    @ivar tls_options: an C{IOpenSSLServerConnectionCreator}, or C{None}.
    @ivar sessions: the sessions that count towards the caps.
    """

    config: object
    deliver: object
    clock: object
    limits: SmtpLimits = SmtpLimits()
    tls_options: object = None
    sessions: set = attrs.field(factory=set)
    _per_client: dict = attrs.field(factory=dict)  # client address -> sessions counted
    # Sessions whose QUIT was answered but whose socket is still open, oldest first
    # (a dict as an ordered set): they no longer count, but the drain waits for them.
    _quitting: dict = attrs.field(factory=dict)
    _idle_waiters: list = attrs.field(factory=list)
    noisy = False

    def buildProtocol(self, addr):
        return AimxESMTP(self)

    def domain(self) -> str:
        return self.config().domain

    def session_started(self, proto) -> SmtpStatus | None:
        """Count a new session, or refuse it when a cap is reached (and log why).

        The per-address cap is read from the live config at each connection.

        @return: C{None} when admitted, else the 421 to send before closing.
        """
        if len(self.sessions) >= self.limits.max_sessions:
            log.info("[{peer}] Rejected: connection limit reached", peer=proto.peer)
            return TOO_MANY_SESSIONS
        cap = self.config().max_sessions_per_ip
        held = self._per_client.get(proto.client, 0)
        if held >= cap:
            log.info(
                "[{peer}] Rejected: {held} sessions already open from {client} "
                "(max_sessions_per_ip={cap})",
                peer=proto.peer,
                client=proto.client,
                held=held,
                cap=cap,
            )
            return TOO_MANY_FROM_CLIENT
        self.sessions.add(proto)
        self._per_client[proto.client] = held + 1
        return None

    def session_quit(self, proto) -> None:
        """C{proto} answered QUIT: stop counting it; it is now only waiting to close.

        Uncounted sockets must stay bounded, so past C{max_sessions} of them the
        oldest is dropped.
        """
        if not self._uncount(proto):
            return
        self._quitting[proto] = None
        if len(self._quitting) > self.limits.max_sessions:
            oldest = next(iter(self._quitting))
            del self._quitting[oldest]
            log.info("[{peer}] Dropped: closing connection not taking its 221",
                     peer=oldest.peer)
            oldest.transport.abortConnection()

    def session_ended(self, proto) -> None:
        """C{proto}'s connection is gone: forget it, whatever state it was in."""
        if not self._uncount(proto):
            if proto not in self._quitting:
                return  # refused at connect, or already dropped by session_quit
            del self._quitting[proto]
        if not self.sessions and not self._quitting:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def _uncount(self, proto) -> bool:
        if proto not in self.sessions:
            return False
        self.sessions.discard(proto)
        left = self._per_client.pop(proto.client) - 1
        if left:
            self._per_client[proto.client] = left
        return True

    def drain(self, grace: float) -> defer.Deferred:
        """Wait for open sessions to end, at most C{grace} seconds, then drop them.

        @return: a Deferred that fires once no session is left.
        """
        if not self.sessions and not self._quitting:
            return defer.succeed(None)
        done = defer.Deferred()
        self._idle_waiters.append(done)

        def expire():
            left = [*self.sessions, *self._quitting]
            if left:
                log.info(
                    "Grace period expired, forcefully closing {n} connections",
                    n=len(left),
                )
                for proto in left:
                    proto.transport.abortConnection()

        call = self.clock.callLater(grace, expire)

        def cancel_expiry(result):
            if call.active():
                call.cancel()
            return result

        return done.addBoth(cancel_expiry)
