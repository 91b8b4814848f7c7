"""A recording ESMTP receiver on loopback, to stand in for remote MX hosts (test support).

Usage::

    sink = SmtpSink(reactor, rcpt={"bob@example.com": 550}, tls=(cert, key))
    port = listen_all({"127.0.0.2": sink})
    self.addCleanup(sink.stop)

Every MX host of a test gets its own 127.0.0.x address on one shared port, because the
outbound transport connects to one port for every host. Each transaction is recorded as
a L{Transaction}.
"""

import argparse
import os

import attrs
from twisted.internet import defer, protocol
from twisted.internet.error import CannotListenError
from twisted.mail import smtp
from zope.interface import implementer

from aimx.idle import IdleWaiters
from aimx.smtp.tls import server_options
from aimx.store import safefs

_TEXT = {2: "2.0.0 sink ok", 4: "4.3.0 sink says try later", 5: "5.7.1 sink says no"}


def _reply_text(code: int) -> str:
    return _TEXT[code // 100]


@attrs.define
class Transaction:
    """One MAIL transaction as the sink saw it.

    @ivar helo: the EHLO argument.
    @ivar mail_from: the MAIL FROM address.
    @ivar rcpts: the accepted RCPT addresses.
    @ivar data: the message as received (CRLF line ends, dots unstuffed), C{None}
        until the end of data.
    @ivar tls: STARTTLS was negotiated before MAIL.
    """

    helo: str
    mail_from: str
    tls: bool
    rcpts: list[str] = attrs.Factory(list)
    data: bytes | None = None


class _Message:
    """IMessage collecting the lines of one transaction (one per recipient)."""

    def __init__(self, transaction: Transaction):
        self._transaction = transaction
        self._lines: list[bytes] = []

    def lineReceived(self, line):
        self._lines.append(line)

    def eomReceived(self):
        self._transaction.data = b"".join(line + b"\r\n" for line in self._lines)
        return defer.succeed(None)

    def connectionLost(self):
        pass


@implementer(smtp.IMessageDelivery)
class _Delivery:
    def __init__(self, server: "_Server"):
        self._server = server
        self._transaction = None

    def receivedHeader(self, helo, origin, recipients):
        return None

    def validateFrom(self, helo, origin):
        code = self._server.sink.replies.get("MAIL")
        if code:
            raise smtp.SMTPServerError(code, _reply_text(code))
        self._transaction = Transaction(helo=helo[0].decode("ascii"), mail_from=str(origin),
                                        tls=self._server.startedTLS)
        self._server.sink.transactions.append(self._transaction)
        return origin

    def validateTo(self, user):
        address = str(user.dest)
        code = self._server.sink.rcpt.get(address)
        if code:
            raise smtp.SMTPServerError(code, _reply_text(code))
        transaction = self._transaction
        transaction.rcpts.append(address)
        return lambda: _Message(transaction)


class _Tracked:
    """Keeps the sink's set of open connections up to date."""

    def connectionMade(self):
        self.sink.opened(self)
        super().connectionMade()

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.sink.closed(self)


class _Server(_Tracked, smtp.ESMTP):
    def __init__(self, sink: "SmtpSink"):
        super().__init__(contextFactory=sink.tls_options)
        self.sink = sink
        self.host = b"sink.test"
        self.delivery = _Delivery(self)

    def do_EHLO(self, rest):
        code = self.sink.replies.get("EHLO")
        if code:
            self.sendCode(code, _reply_text(code).encode("ascii"))
        else:
            super().do_EHLO(rest)

    def _messageHandled(self, resultList):
        code = self.sink.replies.get("DATA", 250)
        if code < 300:
            self.sink.keep(self.delivery._transaction)
        self.sendCode(code, _reply_text(code).encode("ascii"))


class _Silent(_Tracked, protocol.Protocol):
    """Accepts the connection and never says anything."""

    def __init__(self, sink):
        self.sink = sink


class _Closing(_Silent):
    """Hangs up at once."""

    def connectionMade(self):
        super().connectionMade()
        self.transport.loseConnection()


class _BrokenTLS(_Server):
    """Answers STARTTLS with 220, then answers the TLS handshake with plain text."""

    _handshaking = False

    def ext_STARTTLS(self, rest):
        self.sendCode(220, b"Begin TLS negotiation now")
        self._handshaking = True

    def dataReceived(self, data):
        if not self._handshaking:
            return super().dataReceived(data)
        self.transport.write(b"554 this is not TLS\r\n")
        self.transport.loseConnection()


class _ForgingTLS(_Server):
    """Sends a forged plain-text reply right after its STARTTLS 220, as a man in the middle
    could; a client that reads it as a reply over TLS is out of step from then on."""

    def ext_STARTTLS(self, rest):
        self.transport.write(b"220 Begin TLS negotiation now\r\n250 forged\r\n")
        self.transport.startTLS(self.ctx)
        self.startedTLS = True


_BEHAVIOURS = {
    "smtp": _Server,
    "silent": _Silent,
    "close": _Closing,
    "badtls": _BrokenTLS,
    "forgetls": _ForgingTLS,
}


class SmtpSink(protocol.ServerFactory):
    """An ESMTP server that records what it receives.

    @ivar transactions: every transaction started with an accepted MAIL, in order.
    @ivar connections: how many connections were accepted.
    @ivar server_names: the SNI name of each TLS handshake (C{None} without SNI).
    """

    noisy = False

    def __init__(self, reactor, *, behaviour: str = "smtp", rcpt=None, replies=None, tls=None,
                 directory: str | None = None):
        """
        @param behaviour: C{"smtp"} to talk; C{"silent"} never answers; C{"close"} hangs
            up at once; C{"badtls"} offers STARTTLS then breaks the handshake;
            C{"forgetls"} injects a plain-text reply after its STARTTLS 220.
        @param rcpt: address -> reply code for its RCPT (e.g. 550, 451); others are accepted.
        @param replies: C{"EHLO"}, C{"MAIL"} or C{"DATA"} (the reply after the data) ->
            reply code given instead of accepting.
        @param tls: C{(certificate, key)} cryptography objects: offer STARTTLS.
        @param directory: also write each accepted message there as C{<n>.eml}.
        """
        self.directory = directory
        self._reactor = reactor
        self.protocol = _BEHAVIOURS[behaviour]
        self.rcpt = dict(rcpt or {})
        self.replies = dict(replies or {})
        self.tls_options = server_options(*tls) if tls else None
        if self.tls_options:
            self.tls_options.getContext().set_tlsext_servername_callback(
                lambda connection: self.server_names.append(connection.get_servername()))
        self.transactions: list[Transaction] = []
        self.connections = 0
        self.server_names: list[bytes | None] = []
        self._open: set = set()
        self._idle = IdleWaiters()
        self._ports: list = []

    def buildProtocol(self, addr):
        return self.protocol(self)

    def keep(self, transaction: Transaction) -> None:
        """An accepted message: write it to C{directory} when there is one."""
        if self.directory is None:
            return
        name = os.path.join(self.directory, f"{len(self.transactions):04d}.eml")
        safefs.replace_path(name, transaction.data, mode=0o644, durable=False)

    def opened(self, proto) -> None:
        """Called by each connection when it is made."""
        self.connections += 1
        self._open.add(proto)

    def closed(self, proto) -> None:
        """Called by each connection when it is lost."""
        self._open.discard(proto)
        if not self._open:
            self._idle.idle()

    def listen(self, interface: str, port: int = 0) -> int:
        """Listen on C{interface}:C{port} (0: any free port); return the port number.

        @raise CannotListenError: the address is taken.
        """
        listening = self._reactor.listenTCP(port, self, interface=interface)
        self._ports.append(listening)
        return listening.getHost().port

    def stop(self) -> defer.Deferred:
        """Stop listening and drop open connections; fires when all are closed."""
        ports, self._ports = self._ports, []
        waits = [defer.maybeDeferred(port.stopListening) for port in ports]
        if self._open:
            waits.append(self._idle.wait(False))
            for proto in list(self._open):
                proto.transport.abortConnection()
        return defer.gatherResults(waits, consumeErrors=True)


def listen_all(sinks: dict[str, SmtpSink], attempts: int = 10) -> int:
    """Start each sink on its loopback address, all on one port; return that port.

    @param sinks: IP address (C{127.0.0.2}, ...) -> sink.
    @raise CannotListenError: no port was free on every address.
    """
    for _ in range(attempts):
        port = 0
        try:
            for interface, sink in sinks.items():
                port = sink.listen(interface, port)
        except CannotListenError:
            continue  # sinks already listening keep that port until stop()
        return port
    raise CannotListenError(",".join(sinks), 0, "no port free on every address")


def main(argv: list[str] | None = None) -> None:
    """C{python -m aimx.loopback.smtpsink --port P --dir D}: accept mail into D until killed."""
    from twisted.internet import reactor

    parser = argparse.ArgumentParser(prog="python -m aimx.loopback.smtpsink",
                                     description="Accept SMTP on 127.0.0.1 into a directory.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    args = parser.parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    SmtpSink(reactor, directory=args.dir).listen("127.0.0.1", args.port)
    reactor.run()


if __name__ == "__main__":
    main()
