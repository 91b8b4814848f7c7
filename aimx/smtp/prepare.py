"""Parse and authenticate one inbound message (L1, blocking), and the framing that
carries this work to the worker processes and back (docs/design.md, "Worker processes").

L{prepare} is the same function in the daemon's threads and in a worker
(L{aimx.smtp.prepworker}).  Between the two processes each frame is a 4-byte
big-endian length and a pickle.  The daemon reads a worker's answers with
L{load_answer}, which builds only the value classes an answer holds: a worker
parses what outsiders send, and its output is read as data, never as code.
"""

import hashlib
import io
import pickle
import struct

from aimx.auth.verify import verify_inbound
from aimx.core.message import parse_message

#: The largest frame either side accepts: a message at the SMTP size cap, parsed, with
#: its attachments decoded, plus room for the fields around it.
MAX_FRAME = 128 << 20
_LENGTH = struct.Struct(">I")

#: The classes an answer may build (L{load_answer}); anything else is refused.
_ANSWER_CLASSES = frozenset({
    ("aimx.core.authresults", "AuthResults"),
    ("aimx.core.authresults", "DkimResult"),
    ("aimx.core.identity", "AddressList"),
    ("aimx.core.identity", "Identity"),
    ("aimx.core.identity", "Mailbox"),
    ("aimx.core.message", "Attachment"),
    ("aimx.core.message", "ParsedMessage"),
    ("builtins", "frozenset"),
})


class FrameError(Exception):
    """A frame that breaks the framing rules: the stream cannot be trusted further."""


def prepare(raw: bytes, *, peer_ip, mail_from, helo, resolver, budget: float):
    """C{(parsed, auth, raw_sha256)} for one message: L{parse}, then L{authenticate}.
    Blocking (DNS)."""
    parsed, digest = parse(raw)
    auth = authenticate(raw, parsed, peer_ip=peer_ip, mail_from=mail_from, helo=helo,
                        resolver=resolver, budget=budget)
    return parsed, auth, digest


def parse(raw: bytes):
    """C{(parsed, raw_sha256)}: L{parse_message} and the digest the audit keeps. CPU only."""
    return parse_message(raw), hashlib.sha256(raw).hexdigest()


def authenticate(raw: bytes, parsed, *, peer_ip, mail_from, helo, resolver, budget: float):
    """L{verify_inbound} of C{raw} against its parsed identity within C{budget} seconds."""
    return verify_inbound(raw, peer_ip=peer_ip, mail_from=mail_from, helo=helo,
                          identity=parsed.identity, resolver=resolver, budget=budget)


def frame(value) -> bytes:
    """C{value} pickled, behind its length."""
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) > MAX_FRAME:
        raise FrameError(f"frame of {len(data)} bytes is over {MAX_FRAME}")
    return _LENGTH.pack(len(data)) + data


class FrameReader:
    """Splits a byte stream into frame payloads (still pickled); a frame's bytes are
    joined once, when the last of them arrives."""

    def __init__(self):
        self._chunks: list[bytes] = []
        self._size = 0
        self._needed = _LENGTH.size  # bytes that complete the frame under way

    def feed(self, data: bytes) -> list[bytes]:
        """The payloads C{data} completes.

        @raise FrameError: a length over L{MAX_FRAME}.
        """
        self._chunks.append(data)
        self._size += len(data)
        if self._size < self._needed:
            return []
        buf = b"".join(self._chunks)
        payloads, at = [], 0
        while len(buf) - at >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buf, at)
            if length > MAX_FRAME:
                raise FrameError(f"frame of {length} bytes is over {MAX_FRAME}")
            if len(buf) - at - _LENGTH.size < length:
                break
            at += _LENGTH.size
            payloads.append(buf[at:at + length])
            at += length
        rest = buf[at:]
        self._chunks, self._size = ([rest] if rest else []), len(rest)
        self._needed = _LENGTH.size
        if len(rest) >= _LENGTH.size:
            self._needed += _LENGTH.unpack_from(rest)[0]
        return payloads


class _AnswerUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ANSWER_CLASSES:
            raise pickle.UnpicklingError(f"{module}.{name} is not an answer's class")
        return super().find_class(module, name)


def load_answer(payload: bytes):
    """A worker's answer, with only L{_ANSWER_CLASSES} built.

    @raise pickle.UnpicklingError: anything else in it.
    """
    return _AnswerUnpickler(io.BytesIO(payload)).load()
