"""The daemon end of the control socket (L2): AMP responders, peer uid, UNIX listener.

L{ControlProtocol} answers the commands of L{aimx.control.commands} by calling
L{aimx.control.ops.Control} with the peer's kernel credentials (C{SO_PEERCRED},
read once per connection).  It also enforces the socket's limits
(docs/security.md, "The control socket"): a complete box must arrive within the request
timeout (not reset by partial data, suspended while a command runs), and a box
larger than 64 MiB closes the connection.  L{ControlSocket} listens on
C{<runtime_dir>/aimx.sock} (mode 0666, a stale socket replaced) and on stop
lets in-flight commands finish within the drain grace.

Every local uid may connect, so what one caller can make the root daemon hold
is bounded (docs/design.md, "Bound everything an outsider controls"):

 - connections: L{MAX_CONNECTIONS} served at once, L{MAX_CONNECTIONS_PER_UID}
   per peer uid (root included).  One past either cap is still accepted: its
   first box is read without being kept and answered C{TEMP} with the reason,
   then the connection is closed, so the client says why instead of hanging
   or reporting a dead daemon.  At most L{MAX_REFUSED} such connections wait
   for their box; past that a new one is closed at once.
 - bytes: every box counts against one L{BUFFER_BUDGET}, from its first byte
   until its command is answered (a command still running after its client
   left keeps its bytes).  A box that would pass the budget is read on
   without being kept and answered C{TEMP}; the connection is then closed.
 - box size: only a SEND box may pass L{MAX_OTHER_BOX}; any other box, or one
   whose C{_command} has not arrived by then, drops the connection (our
   clients send C{_command} first: L{aimx.control.wire.serialize_box}).  No
   box may pass L{MAX_BOX}.
 - descriptors (SEND's attachments, C{SCM_RIGHTS}): at most
   L{MAX_DESCRIPTORS} held per connection, unclaimed or in use; one more drops
   the connection.  Each is made close-on-exec as it arrives (hooks must never
   inherit a caller's file), a command's own are closed when it answers, and
   any left unclaimed when the connection goes.
"""

import collections
import functools
import os
import socket
import stat
import struct

from twisted.application import service
from twisted.internet import defer, endpoints, protocol
from twisted.protocols import amp

from aimx.control import commands, wire
from aimx.control.ops import Caller, Control
from aimx.errors import AccessDenied, AimxError, ConfigError, IOFailure, TempError
from aimx.listening import ListenError, listen
from aimx.logs import Logger

log = Logger(namespace="aimx.control")

REQUEST_TIMEOUT = 30
MAX_BOX = 64 * 1024 * 1024
#: The largest box but SEND's: room for the largest valid one, a HOOK-CREATE
#: with a 1 MiB body (chunked) and three 64 KiB text arguments.
MAX_OTHER_BOX = wire.HOOK_BODY_CAP + 256 * 1024
MAX_CONNECTIONS = 64
MAX_CONNECTIONS_PER_UID = 16
#: Refused connections waiting for the box their TEMP answers.
MAX_REFUSED = 64
#: Bytes of all boxes being received or being worked on, across connections.
BUFFER_BUDGET = 256 * 1024 * 1024

#: Descriptors one connection may hold: a SEND's attachments, with room for one more.
MAX_DESCRIPTORS = wire.MAX_ATTACHMENTS + 1

_BUSY = "control socket busy: too many request bytes buffered; retry later"
#: In a refused box, every key but these is replaced by this one, every value emptied.
_KEPT = (amp.COMMAND, amp.ASK)
_DISCARDED = b"-"


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
    connection, so anything unexpected becomes C{IO}.
    """

    @functools.wraps(responder)
    async def wrapper(self, **kwargs):
        if self.caller.error is not None:
            raise AccessDenied(f"peer cred unavailable: {self.caller.error}")
        try:
            return await responder(self, **kwargs)
        except AimxError as e:
            if type(e) not in wire.ERRORS:
                raise IOFailure(str(e)) from None
            text = str(e).encode("utf-8")
            if len(text) > amp.MAX_VALUE_LENGTH:
                raise type(e)(text[: amp.MAX_VALUE_LENGTH].decode("utf-8", "ignore")) from None
            raise
        except Exception as e:
            log.failure("control command failed", verb=responder.__name__,
                        peer_uid=self.caller.uid)
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
        self._box_bytes = 0  # wire bytes of the box being received
        self._box_held = 0  # of those, counted against the factory's budget
        self._dispatch_held = 0  # the held bytes of the box being dispatched
        self._refusal: str | None = None  # TEMP reason for the box being received
        self._closing = False  # dropped or answered for the last time: ignore input
        self.admitted = False  # counted in the factory's connection caps
        self.waiting_refused = False  # counted in the factory's refused connections

    # -- connection, limits ------------------------------------------------------

    def connectionMade(self):
        super().connectionMade()
        self.caller = self.factory.credentials(self.transport)
        if self.caller.error is not None:
            log.warn("peer credentials unavailable", reason=self.caller.error)
        else:
            log.info(
                "connection accepted",
                peer_uid=self.caller.uid,
                peer_pid="?" if self.caller.pid is None else self.caller.pid,
            )
        self.factory.connections.add(self)
        refusal = self.factory.admit(self)
        if refusal is not None:
            if self.factory.refused >= self.factory.max_refused:
                log.notice(
                    "connection refused and closed at once",
                    peer_uid=self.caller.uid, reason=refusal,
                    refused_waiting=self.factory.refused,
                )
                self._closing = True
                self.transport.abortConnection()
                return
            log.notice("connection refused", peer_uid=self.caller.uid, reason=refusal)
            self.factory.refused += 1
            self.waiting_refused = True
            self._refusal = refusal
        self._arm()

    def connectionLost(self, reason):
        self._disarm()
        self._release_box()
        for fd in self._descriptors.values():
            os.close(fd)
        self._descriptors.clear()
        super().connectionLost(reason)
        self.factory.connection_closed(self)

    def fileDescriptorReceived(self, descriptor):
        # Received without MSG_CMSG_CLOEXEC: a hook spawned now must not inherit it.
        os.set_inheritable(descriptor, False)
        if self._closing or len(self._descriptors) >= MAX_DESCRIPTORS:
            os.close(descriptor)
            if not self._closing:
                self._drop("too many descriptors held", limit=MAX_DESCRIPTORS)
            return
        super().fileDescriptorReceived(descriptor)

    def _arm(self):
        if self._timer is None and not self._inflight and self.transport is not None:
            self._timer = self.factory.clock.callLater(self.factory.timeout, self._timed_out)

    def _disarm(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self):
        self._timer = None
        log.info("request timed out, connection dropped", peer_uid=self.caller.uid,
                 timeout_s=self.factory.timeout)
        self._closing = True
        self.transport.loseConnection()

    def _release_box(self):
        self.factory.release(self._box_held)
        self._box_held = 0

    def _drop(self, reason: str, **fields):
        """Log the refusal and abort the connection without an answer."""
        log.notice("connection dropped", peer_uid=self.caller.uid, reason=reason, **fields)
        self._closing = True
        self._release_box()
        self.transport.abortConnection()

    def stringReceived(self, string):
        # Each key and value of the box being received; a finished box resets it.
        if self._closing:
            return
        size = len(string) + 2
        self._box_bytes += size
        if self._box_bytes > self.factory.max_box:
            return self._drop("box too large", limit=self.factory.max_box)
        if self._box_bytes > self.factory.max_other_box:
            command = self._currentBox.get(amp.COMMAND) if self._currentBox else None
            if command is None:
                return self._drop("box too large before its _command (only SEND may be)",
                                  limit=self.factory.max_other_box)
            if command != commands.Send.commandName:
                return self._drop(
                    "box too large for its command (only SEND may be)",
                    command=command.decode("ascii", "replace")[:64],
                    limit=self.factory.max_other_box,
                )
        if self._refusal is None:
            if self.factory.reserve(size):
                self._box_held += size
            else:
                log.notice("box refused, request bytes over the budget",
                           peer_uid=self.caller.uid, budget=self.factory.budget)
                self._refuse_box(_BUSY)
        if self._refusal is not None:
            string = self._discarded(string)
        super().stringReceived(string)

    def _refuse_box(self, reason: str):
        """Read the rest of the box being received without keeping it; answer C{reason}."""
        self._refusal = reason
        self._release_box()
        if self._currentBox:
            kept = {k: v for k, v in self._currentBox.items() if k in _KEPT}
            self._currentBox.clear()
            self._currentBox.update(kept)

    def _discarded(self, string: bytes) -> bytes:
        """What of C{string} a refused box keeps: C{_command}, C{_ask} and the framing."""
        if self.state == "value":
            return string if self._currentKey in _KEPT else b""
        return string if not string or string in _KEPT else _DISCARDED

    def ampBoxReceived(self, box):
        held, self._box_held = self._box_held, 0
        self._box_bytes = 0
        if self._refusal is not None:
            self.factory.release(held)
            self._answer_refusal(box)
            return
        if amp.COMMAND not in box or amp.ANSWER in box or amp.ERROR in box:
            # Clients only ask; an answer or an empty box is a protocol violation.
            self.factory.release(held)
            log.notice("connection dropped", peer_uid=self.caller.uid,
                       reason="malformed box (not a command)")
            self._closing = True
            self.transport.loseConnection()
            return
        self._disarm()
        self._dispatch_held = held
        try:
            super().ampBoxReceived(box)
        finally:
            # Bytes no command took (AMP answered without dispatching).
            self.factory.release(self._dispatch_held)
            self._dispatch_held = 0

    def _answer_refusal(self, box):
        """Answer a refused box C{TEMP} (when it asks for an answer) and close."""
        reason, self._refusal = self._refusal, None
        self._closing = True
        tag = box.get(amp.ASK)
        if tag is None:
            log.notice("connection dropped", peer_uid=self.caller.uid,
                       reason="refused box asks no answer", refusal=reason)
            self.transport.loseConnection()
            return
        # A QuitBox closes the connection once it is written.
        self._safeEmit(amp.QuitBox({
            amp.ERROR: tag,
            amp.ERROR_CODE: wire.ERRORS[TempError],
            amp.ERROR_DESCRIPTION: reason.encode("utf-8"),
        }))

    def dispatchCommand(self, box):
        held, self._dispatch_held = self._dispatch_held, 0
        self._inflight += 1
        self.factory.command_started()
        d = super().dispatchCommand(box)
        d.addBoth(self._command_done, held)
        return d

    def _command_done(self, result, held):
        self.factory.release(held)
        self._inflight -= 1
        self.factory.command_done()
        self._arm()
        return result

    # -- commands ----------------------------------------------------------------

    @commands.Send.responder
    async def send(self, message, text_only, html_body, attachments):
        # The responder owns the descriptors it was given: closed whatever happens.
        try:
            return await self._send(message=message, text_only=text_only, html_body=html_body,
                                    attachments=attachments)
        finally:
            for fd, _ in attachments:
                os.close(fd)

    @_guarded
    async def _send(self, message, text_only, html_body, attachments):
        return await self.control.send(self.caller, message, text_only, html_body, attachments)

    @commands.AuditRead.responder
    @_guarded
    async def audit_read(self, mailbox, since, event, limit):
        return {"records": await self.control.audit_read(self.caller, mailbox, since, event,
                                                         limit)}

    @commands.HeldList.responder
    @_guarded
    async def held_list(self, mailbox):
        return {"holds": await self.control.held_list(self.caller, mailbox)}

    @commands.HeldShow.responder
    @_guarded
    async def held_show(self, id):
        return {"hold": await self.control.held_show(self.caller, id)}

    @commands.HeldApprove.responder
    @_guarded
    async def held_approve(self, id):
        return await self.control.held_approve(self.caller, id)

    @commands.HeldReject.responder
    @_guarded
    async def held_reject(self, id, reason):
        await self.control.held_reject(self.caller, id, reason)
        return {}

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
        return await self.control.hook_create(self.caller, mailbox, event, name, body)

    @commands.HookDelete.responder
    @_guarded
    async def hook_delete(self, name):
        await self.control.hook_delete(self.caller, name)
        return {}

    @commands.HookList.responder
    @_guarded
    async def hook_list(self):
        return {"hooks": self.control.hook_list(self.caller)}

    @commands.HookEnable.responder
    @_guarded
    async def hook_enable(self, name):
        await self.control.hook_enable(self.caller, name)
        return {}

    @commands.HookStatus.responder
    @_guarded
    async def hook_status(self, name):
        return {"hooks": self.control.hook_status(self.caller, name)}

    @commands.HookRetry.responder
    @_guarded
    async def hook_retry(self, name):
        return {"requeued": await self.control.hook_retry(self.caller, name)}

    @commands.MailList.responder
    @_guarded
    async def mail_list(self, mailbox, folder, limit, offset, unread):
        return {"emails": await self.control.mail_list(
            self.caller, mailbox, folder, limit, offset, unread)}

    @commands.MailSearch.responder
    @_guarded
    async def mail_search(self, mailbox, query, folder, sender, since, until, unread, trusted,
                          limit):
        return {"emails": await self.control.mail_search(
            self.caller, mailbox, query, folder, sender, since, until, unread, trusted, limit)}

    @commands.MailThread.responder
    @_guarded
    async def mail_thread(self, mailbox, id, thread_id, limit):
        return {"emails": await self.control.mail_thread(
            self.caller, mailbox, id, thread_id, limit)}

    @commands.IndexRebuild.responder
    @_guarded
    async def index_rebuild(self, mailbox):
        return {"mailboxes": await self.control.index_rebuild(self.caller, mailbox)}

    @commands.IndexStatus.responder
    @_guarded
    async def index_status(self, mailbox):
        return {"indexes": await self.control.index_status(self.caller, mailbox)}

    @commands.Version.responder
    @_guarded
    async def version(self):
        return self.control.version()


class ControlFactory(protocol.Factory):
    """Builds control connections and tracks them and their commands for the drain.

    The limits are attributes, so tests may lower them.

    @param credentials: C{transport -> Caller} (tests inject a fixed peer).
    @param timeout: seconds a complete box may take to arrive.
    @param max_box: bytes a box may buffer before the connection is closed.
    @ivar max_other_box: the same for any box but SEND's (L{MAX_OTHER_BOX}).
    @ivar max_connections: connections served at once (L{MAX_CONNECTIONS}).
    @ivar max_per_uid: of those, per peer uid (L{MAX_CONNECTIONS_PER_UID}).
    @ivar max_refused: refused connections waiting for their box (L{MAX_REFUSED}).
    @ivar budget: bytes of boxes buffered or running at once (L{BUFFER_BUDGET}).
    @ivar buffered: those bytes now.
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
        self.max_other_box = MAX_OTHER_BOX
        self.max_connections = MAX_CONNECTIONS
        self.max_per_uid = MAX_CONNECTIONS_PER_UID
        self.max_refused = MAX_REFUSED
        self.budget = BUFFER_BUDGET
        self.buffered = 0
        self.admitted = 0
        self.per_uid: collections.Counter = collections.Counter()
        self.refused = 0
        self.connections: set[ControlProtocol] = set()
        self.inflight = 0
        self._drained: defer.Deferred | None = None
        self._deadline = None

    def buildProtocol(self, addr):
        return ControlProtocol(self)

    def admit(self, proto: ControlProtocol) -> str | None:
        """Count a new connection in the caps, or say why it is refused.

        @return: C{None} when admitted, else the C{TEMP} reason.
        """
        uid = proto.caller.uid
        if self.admitted >= self.max_connections:
            return f"too many control connections ({self.max_connections} in total); retry later"
        if self.per_uid[uid] >= self.max_per_uid:
            return f"too many control connections ({self.max_per_uid} per user); retry later"
        self.admitted += 1
        self.per_uid[uid] += 1
        proto.admitted = True
        return None

    def reserve(self, size: int) -> bool:
        """Count C{size} more buffered bytes, unless that passes the budget."""
        if self.buffered + size > self.budget:
            return False
        self.buffered += size
        return True

    def release(self, size: int) -> None:
        """Uncount bytes counted by L{reserve}."""
        self.buffered -= size

    def command_started(self):
        self.inflight += 1

    def command_done(self):
        self.inflight -= 1
        if self._drained is not None:
            # Later: AMP sends the answer after this callback returns.
            self.clock.callLater(0, self._check_drained)

    def connection_closed(self, proto: ControlProtocol):
        self.connections.discard(proto)
        if proto.admitted:
            proto.admitted = False
            self.admitted -= 1
            self.per_uid[proto.caller.uid] -= 1
            if not self.per_uid[proto.caller.uid]:
                del self.per_uid[proto.caller.uid]
        if proto.waiting_refused:
            proto.waiting_refused = False
            self.refused -= 1
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
        log.warn("drain grace expired, closing connections",
                 connections=len(self.connections), commands=self.inflight)
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
        log.info("listening", path=self.path, mode="0666")
        super().startService()

    def _listen(self):
        # Access control is per command by peer uid, so the socket is 0666: the
        # endpoint chmods it to `mode` right after bind.  No lock file
        # (wantPID): a stale socket is found by the probe below, as AIMX does.
        endpoint = endpoints.UNIXServerEndpoint(
            self.reactor, self.path, mode=0o666, wantPID=False
        )
        try:
            return listen(endpoint, self.factory)
        except ListenError as e:
            if not self._stale():
                raise self._fatal(e) from None
        os.unlink(self.path)
        try:
            return listen(endpoint, self.factory)
        except ListenError as e:
            raise self._fatal(e) from None

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
            log.info("drained")
