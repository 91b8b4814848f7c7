"""The inbound SMTP server (L2): a thin protocol around the pure dialogue.

The dialogue rules (states, verbs, replies, limits) are L{aimx.core.smtpsession};
this protocol owns only what needs bytes, sockets and time:

  - command lines are framed up to LF, at most 1024 bytes with the line end, and an
    over-long line is skipped up to its LF;
  - DATA is scanned chunk-wise as raw bytes (no decoding, RFC 5321 framing, bare LF
    refused and the payload skipped to C{CRLF.CRLF}, C{..} unstuffed, size counted);
  - plaintext pipelined after STARTTLS is discarded (RFC 3207 §4.2) and the
    handshake runs on the transport's C{startTLS};
  - input that arrives while a message is being stored waits its turn, so replies
    always come in command order (PIPELINING), and past 1 MiB reading pauses;
  - the idle, session and close timers (C{TimeoutMixin} on the factory's clock);
  - the hand-off of each message to the ingest chain.

L{AimxSMTPFactory} tracks sessions for the connection caps, the QUIT release and
the drain.
"""

import io
import re

import attrs
from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.protocols.policies import TimeoutMixin

from aimx.idle import IdleWaiters
from aimx.core.address import client_address
from aimx.core.smtpsession import (
    COMMAND_STATES,
    STORE_FAILED,
    TOO_MANY_FROM_CLIENT,
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
from aimx.logs import Logger

__all__ = ["AimxESMTP", "AimxSMTPFactory", "SmtpLimits"]

_BARE_LF = re.compile(rb"(?<!\r)\n")
# The end of DATA: a line of one dot (trailing blanks allowed, aimx decision).  Searched
# from an LF, not with a MULTILINE "^": a literal first byte lets re skip ahead in C,
# where "^" is tried at every position (30 times slower on a 60 KiB message).
_TERMINATOR_FIRST = re.compile(rb"\.[ \t]*\r\n")
_TERMINATOR = re.compile(rb"\n\.[ \t]*\r\n")
_DISCARD_END = re.compile(rb"\r\n\.\r\n")

log = Logger(namespace="aimx.smtp")

_PIPELINE_BUFFER = 1 << 20


def _terminator(region: bytes) -> tuple[int, int] | None:
    """Where the line ending DATA starts and ends in C{region} (which starts a line)."""
    first = _TERMINATOR_FIRST.match(region)
    if first is not None:
        return 0, first.end()
    found = _TERMINATOR.search(region)
    return None if found is None else (found.start() + 1, found.end())


def _unstuff(data: bytes) -> bytes:
    """A line's leading dot is dropped when another follows it (RFC 5321 §4.5.2 drops
    any leading dot; a lone C{.x} from a client that does not stuff is kept: aimx
    decision)."""
    data = data.replace(b"\n..", b"\n.")
    return data[1:] if data.startswith(b"..") else data


class AimxESMTP(Protocol, TimeoutMixin):
    """One inbound SMTP session: bytes in, the dialogue's replies out.

    @ivar session: the dialogue (L{Session}), replaced by each event's outcome.
    """

    def __init__(self, factory: "AimxSMTPFactory"):
        self.factory = factory
        self.limits = factory.limits
        self.session = None
        self._buffer = b""
        self._offset = 0  # start of the unread part of _buffer
        self._data = None  # the message being received (DATA state)
        self._size = 0
        self._paused = False
        self._skip_line = False
        self._started = 0.0
        self._session_call = None
        self._admitted = False
        self.peer = "?"
        self.client = "?"

    # -- connection ------------------------------------------------------------

    def connectionMade(self):
        self.peer = getattr(self.transport.getPeer(), "host", "?")
        self.client = client_address(self.peer)
        self.session = Session(
            peer=self.peer,
            domain=self.factory.domain(),
            tls_available=self.factory.tls_options is not None
            and ITLSTransport.providedBy(self.transport),
            limits=self.limits,
        )
        refusal = self.factory.session_started(self)
        if refusal is not None:
            self._apply(self.session.refuse(refusal))
            return
        self._admitted = True
        self._started = self.factory.clock.seconds()
        self._apply(self.session.connected())
        self.setTimeout(self.limits.idle_timeout)
        self._session_call = self.callLater(
            self.limits.session_timeout, self._apply_timeout, Timeout.SESSION
        )

    def callLater(self, period, func, *args):
        return self.factory.clock.callLater(period, func, *args)

    def connectionLost(self, reason):
        self.setTimeout(None)
        if self._session_call is not None and self._session_call.active():
            self._session_call.cancel()
        self.factory.session_ended(self)
        self._apply(self.session.lost())
        if not self._admitted:
            return
        if self.session.timed_out:
            outcome, result = "timeout", "timeout"
        elif reason is not None and reason.check(SSL.Error):
            outcome, result = "error", f"error: TLS handshake failed: {reason.value}"
        else:
            outcome, result = "closed", "ok"
        log.info(
            "connection ended",
            peer=self.peer,
            outcome=outcome,
            result=result,
            helo=self.session.helo,
            messages=self.session.messages,
            bytes=self.session.received,
            duration_s=round(self.factory.clock.seconds() - self._started, 1),
        )

    def timeoutConnection(self):
        self._apply_timeout(Timeout.IDLE)

    def _apply_timeout(self, timer: Timeout):
        if timer is Timeout.SESSION:
            self._session_call = None
        self._apply(self.session.timeout(timer))

    # -- the dialogue's outcome --------------------------------------------------

    def _apply(self, step: Transition):
        """Take the next session, write its replies, then carry out its actions."""
        self.session = step.session
        if step.replies:
            self.transport.write(b"".join(line + b"\r\n" for line in step.replies))
            refused = [line for line in step.replies if line.startswith(b"5")]
            if refused and not any(isinstance(a, RcptRejected) for a in step.actions):
                log.notice("refused", peer=self.peer,
                           reply=refused[-1].decode("ascii", "replace"))
        for action in step.actions:
            match action:
                case BeginData():
                    # A growing BytesIO hands its buffer over without a copy
                    # (getvalue), where joining chunks would hold the message twice.
                    self._data = io.BytesIO()
                    self._size = 0
                case Deliver(envelope=envelope):
                    d = defer.maybeDeferred(self.factory.deliver, envelope)
                    d.addErrback(self._delivery_crashed)
                    d.addCallback(self._delivered)
                case StartTLS():
                    # RFC 3207 §4.2: what was pipelined after STARTTLS is dropped.
                    self._buffer, self._offset = b"", 0
                    self.transport.startTLS(self.factory.tls_options)
                case Close(quit=quit):
                    self._buffer, self._offset = b"", 0
                    self._data = None
                    self.transport.loseConnection()
                    # loseConnection waits until every reply is written, which is
                    # forever for a peer that does not read: bound that wait.
                    self.setTimeout(self.limits.close_grace)
                    if quit:
                        # The session is over once its 221 is written; a client may
                        # reconnect before our TCP close completes, so stop counting
                        # it towards the caps now.
                        self.factory.session_quit(self)
                case Abort():
                    self.transport.abortConnection()
                case RcptRejected(rcpt=rcpt, relay=True):
                    log.notice("RCPT refused", peer=self.peer, rcpt=rcpt, reason="relay",
                               domain=self.session.domain)
                case RcptRejected(rcpt=rcpt):
                    log.notice("RCPT refused", peer=self.peer, rcpt=rcpt,
                               reason="no mailbox")

    # -- input -----------------------------------------------------------------

    def dataReceived(self, data):
        if self.session.state is State.CLOSING:
            return
        self.resetTimeout()
        self._buffer += data
        if (
            self.session.state is State.DELIVERING
            and len(self._buffer) - self._offset > _PIPELINE_BUFFER
        ):
            # Commands pipelined behind a message being stored wait their turn;
            # past this much, stop reading until the message is answered.
            self.transport.pauseProducing()
            self._paused = True
        self._process()

    def _process(self):
        while len(self._buffer) > self._offset:
            state = self.session.state
            if state in COMMAND_STATES:
                if not self._command_step():
                    break
                continue
            self._compact()
            if state is State.DATA:
                if not self._data_step():
                    break
            elif state is State.DISCARD:
                if not self._discard_step():
                    break
            else:
                break  # DELIVERING: input waits for the reply; CLOSING: read no more
        self._compact()

    def _compact(self):
        """Drop the consumed prefix of the buffer (command lines are read by offset,
        so a burst of pipelined commands costs one copy, not one per line)."""
        if self._offset:
            self._buffer = self._buffer[self._offset :]
            self._offset = 0

    def _command_step(self) -> bool:
        """Frame and hand over one command line; return False when more input is needed."""
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
            self._apply(self.session.line_too_long())
        else:
            self._apply(self.session.command(line, self.factory.config()))
        return True

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
                self._apply(self.session.data_overflow())
            return False
        region = buf[: last_lf + 1]
        # Fast path: only lines starting with "." can end DATA or need unstuffing,
        # and equal LF and CRLF counts mean there is no bare LF.
        dots = region.startswith(b".") or b"\n." in region
        term = _terminator(region) if dots else None
        end = term[0] if term else len(region)
        if region.count(b"\n", 0, end) != region.count(b"\r\n", 0, end):
            bare = _BARE_LF.search(region, 0, end)
            # aimx decision: skip the rest of the payload up to its terminator so
            # none of it is read as commands.
            self._buffer = buf[bare.end() :]
            self._data = None
            self._apply(self.session.bare_lf())
            return True
        body = _unstuff(region[:end]) if dots else region
        self._buffer = buf[term[1] :] if term else buf[last_lf + 1 :]
        self._size += len(body)
        if self._size > self.limits.max_message_size:
            self._data = io.BytesIO()  # refused at the end: keep nothing
        else:
            self._data.write(body)
        if term is not None:
            raw, self._data = self._data.getvalue(), None
            self._apply(self.session.data_end(raw, self._size))
        return True

    def _discard_step(self) -> bool:
        match = _DISCARD_END.search(self._buffer)
        if match is None:
            self._buffer = self._buffer[-5:]
            return False
        self._buffer = self._buffer[match.end() :]
        self._apply(self.session.discard_end())
        return True

    # -- the hand-off ------------------------------------------------------------

    def _delivery_crashed(self, failure):
        log.failure("delivery crashed", failure, peer=self.peer)
        return STORE_FAILED

    def _delivered(self, status: SmtpStatus):
        self._apply(self.session.delivered(status))
        if self.session.state is State.CLOSING:
            return
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
    _idle_waiters: IdleWaiters = attrs.field(factory=IdleWaiters)
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
            log.notice("connection refused", peer=proto.peer, reason="connection limit",
                       max_sessions=self.limits.max_sessions)
            return TOO_MANY_SESSIONS
        cap = self.config().max_sessions_per_ip
        held = self._per_client.get(proto.client, 0)
        if held >= cap:
            log.notice(
                "connection refused",
                peer=proto.peer,
                reason="per-client limit",
                client=proto.client,
                sessions=held,
                max_sessions_per_ip=cap,
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
            log.info("connection dropped", peer=oldest.peer,
                     reason="closing connection not taking its 221")
            oldest.transport.abortConnection()

    def session_ended(self, proto) -> None:
        """C{proto}'s connection is gone: forget it, whatever state it was in."""
        if not self._uncount(proto):
            if proto not in self._quitting:
                return  # refused at connect, or already dropped by session_quit
            del self._quitting[proto]
        if not self.sessions and not self._quitting:
            self._idle_waiters.idle()

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
        done = self._idle_waiters.wait(False)

        def expire():
            left = [*self.sessions, *self._quitting]
            if left:
                log.info("drain grace expired, closing connections", connections=len(left))
                for proto in left:
                    proto.transport.abortConnection()

        call = self.clock.callLater(grace, expire)

        def cancel_expiry(result):
            if call.active():
                call.cancel()
            return result

        return done.addBoth(cancel_expiry)
