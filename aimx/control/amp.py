"""The daemon end of the control socket (L2): AMP responders, peer uid, UNIX listener.

L{ControlProtocol} answers the commands of L{aimx.control.commands} by calling
L{aimx.control.ops.Control} with the peer's kernel credentials (C{SO_PEERCRED},
read once per connection).  It also enforces the socket's limits
(spec/control-socket.md §2.2): a complete box must arrive within the request
timeout (not reset by partial data, suspended while a command runs), and a box
larger than 64 MiB closes the connection.  L{ControlSocket} listens on
C{<runtime_dir>/aimx.sock} (mode 0666, a stale socket replaced) and on stop
lets in-flight commands finish within the drain grace.
"""

import functools
import os
import socket
import stat
import struct

from twisted.application import service
from twisted.internet import defer, error, protocol
from twisted.logger import Logger
from twisted.protocols import amp

from aimx.control import commands
from aimx.control.ops import Caller, Control
from aimx.errors import AccessDenied, AimxError, ConfigError, IOFailure

log = Logger(namespace="aimx::uds")

REQUEST_TIMEOUT = 30
MAX_BOX = 64 * 1024 * 1024


def peer_credentials(transport) -> Caller:
    """The connecting process's pid and uid, from C{SO_PEERCRED}."""
    try:
        raw = transport.getHandle().getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
        )
    except (AttributeError, OSError) as e:
        return Caller(uid=None, error=str(e) or type(e).__name__)
    pid, uid, _ = struct.unpack("3i", raw)
    return Caller(uid=uid, pid=pid)


def _guarded(responder):
    """Refuse callers without credentials; answer every failure with a declared code.

    An exception AMP does not know would be answered C{UNKNOWN} and close the
    connection, so anything unexpected becomes C{IO} (spec §3).
    """

    @functools.wraps(responder)
    async def wrapper(self, **kwargs):
        if self.caller.error is not None:
            raise AccessDenied(f"peer cred unavailable: {self.caller.error}")
        try:
            return await responder(self, **kwargs)
        except AimxError as e:
            if type(e) not in commands.ERRORS:
                raise IOFailure(str(e)) from None
            text = str(e).encode("utf-8")
            if len(text) > amp.MAX_VALUE_LENGTH:
                raise type(e)(text[: amp.MAX_VALUE_LENGTH].decode("utf-8", "ignore")) from None
            raise
        except Exception as e:
            log.failure("control command {verb} failed", verb=responder.__name__)
            raise IOFailure(f"internal error: {e}") from None

    return wrapper


class ControlProtocol(amp.AMP):
    """One control connection; every command is authorised with the peer's uid."""

    def __init__(self, factory: "ControlFactory"):
        super().__init__()
        self.factory = factory
        self.control: Control = factory.control
        self.caller: Caller | None = None
        self._timer = None
        self._inflight = 0
        self._box_bytes = 0

    # -- connection, limits ------------------------------------------------------

    def connectionMade(self):
        super().connectionMade()
        self.caller = self.factory.credentials(self.transport)
        if self.caller.error is not None:
            log.warn("[send] peer_cred unavailable: {reason}", reason=self.caller.error)
        else:
            log.info(
                "[send] accepted: peer_uid={peer_uid} peer_pid={peer_pid}",
                peer_uid=self.caller.uid,
                peer_pid="?" if self.caller.pid is None else self.caller.pid,
            )
        self.factory.connections.add(self)
        self._arm()

    def connectionLost(self, reason):
        self._disarm()
        super().connectionLost(reason)
        self.factory.connection_closed(self)

    def _arm(self):
        if self._timer is None and not self._inflight and self.transport is not None:
            self._timer = self.factory.clock.callLater(self.factory.timeout, self._timed_out)

    def _disarm(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self):
        self._timer = None
        log.info(
            "[send] request timed out after {timeout}s, dropping connection",
            timeout=self.factory.timeout,
        )
        self.transport.loseConnection()

    def stringReceived(self, string):
        # Keys and values of the box being received; a finished box resets it.
        self._box_bytes += len(string) + 2
        if self._box_bytes > self.factory.max_box:
            if self.transport is not None and not self.transport.disconnecting:
                log.warn("[send] box larger than {limit} bytes, dropping connection",
                         limit=self.factory.max_box)
                self.transport.abortConnection()
            return
        super().stringReceived(string)

    def ampBoxReceived(self, box):
        self._box_bytes = 0
        if amp.COMMAND not in box:
            # Clients only ask; an answer or an empty box is a protocol violation.
            log.warn("[send] malformed box without _command, dropping connection")
            self.transport.loseConnection()
            return
        self._disarm()
        super().ampBoxReceived(box)

    def dispatchCommand(self, box):
        self._inflight += 1
        self.factory.command_started()
        d = super().dispatchCommand(box)
        d.addBoth(self._command_done)
        return d

    def _command_done(self, result):
        self._inflight -= 1
        self.factory.command_done()
        self._arm()
        return result

    # -- commands ----------------------------------------------------------------

    @commands.Send.responder
    @_guarded
    async def send(self, message, text_only, html_body):
        return await self.control.send(self.caller, message, text_only, html_body)

    @commands.MarkRead.responder
    @_guarded
    async def mark_read(self, mailbox, id):
        await self.control.mark(self.caller, mailbox, id, True)
        return {}

    @commands.MarkUnread.responder
    @_guarded
    async def mark_unread(self, mailbox, id):
        await self.control.mark(self.caller, mailbox, id, False)
        return {}

    @commands.MailboxCreate.responder
    @_guarded
    async def mailbox_create(self, name, owner):
        return {"address": await self.control.mailbox_create(self.caller, name, owner)}

    @commands.MailboxDelete.responder
    @_guarded
    async def mailbox_delete(self, name, force):
        await self.control.mailbox_delete(self.caller, name, force)
        return {}

    @commands.MailboxList.responder
    @_guarded
    async def mailbox_list(self):
        return {"mailboxes": await self.control.mailbox_list(self.caller)}

    @commands.MailboxShow.responder
    @_guarded
    async def mailbox_show(self, name):
        return {"mailbox": await self.control.mailbox_show(self.caller, name)}

    @commands.HookCreate.responder
    @_guarded
    async def hook_create(self, mailbox, event, name, body):
        return {"name": await self.control.hook_create(self.caller, mailbox, event, name, body)}

    @commands.HookDelete.responder
    @_guarded
    async def hook_delete(self, name):
        await self.control.hook_delete(self.caller, name)
        return {}

    @commands.HookList.responder
    @_guarded
    async def hook_list(self):
        return {"hooks": self.control.hook_list(self.caller)}

    @commands.Version.responder
    @_guarded
    async def version(self):
        return self.control.version()


class ControlFactory(protocol.Factory):
    """Builds control connections and tracks them and their commands for the drain.

    @param credentials: C{transport -> Caller} (tests inject a fixed peer).
    @param timeout: seconds a complete box may take to arrive.
    @param max_box: bytes a box may buffer before the connection is closed.
    """

    noisy = False

    def __init__(
        self,
        control: Control,
        *,
        clock,
        credentials=peer_credentials,
        timeout: float = REQUEST_TIMEOUT,
        max_box: int = MAX_BOX,
    ):
        self.control = control
        self.clock = clock
        self.credentials = credentials
        self.timeout = timeout
        self.max_box = max_box
        self.connections: set[ControlProtocol] = set()
        self.inflight = 0
        self._drained: defer.Deferred | None = None
        self._deadline = None

    def buildProtocol(self, addr):
        return ControlProtocol(self)

    def command_started(self):
        self.inflight += 1

    def command_done(self):
        self.inflight -= 1
        if self._drained is not None:
            # Later: AMP sends the answer after this callback returns.
            self.clock.callLater(0, self._check_drained)

    def connection_closed(self, proto: ControlProtocol):
        self.connections.discard(proto)
        if self._drained is not None:
            self._check_drained()

    def drain(self, grace: float) -> defer.Deferred:
        """Let in-flight commands answer, then close every connection.

        After C{grace} seconds the remaining connections are aborted.

        @return: fires once no connection is left.
        """
        self._drained = defer.Deferred()
        self._deadline = self.clock.callLater(grace, self._expire)
        self._check_drained()
        return self._drained

    def _check_drained(self):
        if self._drained is None or self._drained.called:
            return
        if not self.inflight:
            for proto in list(self.connections):
                proto.transport.loseConnection()
        if not self.connections:
            if self._deadline.active():
                self._deadline.cancel()
            self._drained.callback(None)

    def _expire(self):
        log.warn(
            "[send] drain grace expired, closing {n} connections ({inflight} commands running)",
            n=len(self.connections),
            inflight=self.inflight,
        )
        for proto in list(self.connections):
            proto.transport.abortConnection()


class ControlSocket(service.Service):
    """Listens on the control socket; on stop, drains it and removes the file.

    @param path: C{<runtime_dir>/aimx.sock}.
    @param grace: seconds in-flight commands get to finish on stop.
    """

    def __init__(self, reactor, path: str, factory: ControlFactory, grace: float):
        self.reactor = reactor
        self.path = path
        self.factory = factory
        self.grace = grace
        self.port = None

    def startService(self):
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            try:
                os.makedirs(directory)
                # The daemon runs with umask 077; owners must reach the socket.
                os.chmod(directory, 0o755)
            except OSError as e:
                raise self._fatal(e) from None
        self.port = self._listen()
        log.info("  send:  {path} (mode 0o666, world-writable)", path=self.path)
        super().startService()

    def _listen(self):
        # Access control is per command by peer uid, so the socket is 0666:
        # Twisted chmods it to `mode` right after bind (spec §1).
        listen = functools.partial(self.reactor.listenUNIX, self.path, self.factory, mode=0o666)
        try:
            return listen()
        except error.CannotListenError as e:
            if not self._stale():
                raise self._fatal(e.socketError) from None
        os.unlink(self.path)
        try:
            return listen()
        except error.CannotListenError as e:
            raise self._fatal(e.socketError) from None

    def _stale(self) -> bool:
        """Whether the path holds a file no daemon answers on (probe-connect)."""
        try:
            if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
                return True
        except OSError:
            return False
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(self.path)
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
        finally:
            probe.close()
        return False

    def _fatal(self, e) -> ConfigError:
        return ConfigError(f"Failed to bind UDS send socket at {self.path}: {e}")

    def stopService(self):
        super().stopService()
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self):
        port, self.port = self.port, None
        if port is not None:
            await defer.maybeDeferred(port.stopListening)
            await self.factory.drain(self.grace)
            log.info("[send] UDS accept loop drained")
