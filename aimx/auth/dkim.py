"""DKIM verification and signing (L1, blocking, no Twisted): RFC 6376 and RFC 8463
on C{cryptography}.

L{aimx.core.dkim} reads signatures and key records and canonicalises; this module
looks keys up, does the RSA-SHA256 (PKCS#1 v1.5) and Ed25519 operations through
C{cryptography} (OpenSSL), and applies the per-message policy of docs/concepts.md
("Trust"): every C{DKIM-Signature} field is reported separately, at most
L{MAX_SIGNATURES} are evaluated (those aligned with the author first), key
lookups are made once per message with temporary DNS failures told apart,
rsa-sha1 fails (RFC 8301) and so do RSA keys under 1024 bits.  Signing is
relaxed/relaxed, rsa-sha256 (or ed25519-sha256 with an Ed25519 key).

No dependency is patched.  dkimpy, which did this work until the verifier was our
own, is the oracle of tests/test_dkim.py (run unmodified), and stock dkimpy checks
our signatures in tests/integration/test_send.py.  Parsed key records and our own
signing key are remembered (a repeat sender's key is not parsed again).
"""

import functools
import hashlib
import re
import time

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils

from aimx.auth.resolver import DnsNoRecord, DnsTempError
from aimx.core import dkim as core
from aimx.core import headerblock
from aimx.core.authresults import FAIL, PASS, SKIPPED, TEMPERROR, DkimResult

#: At most this many signatures are evaluated per message, aligned ones first.
MAX_SIGNATURES = 5
#: A signature listing more fields than this in h= is not evaluated.
MAX_SIGNED_FIELDS = 64
#: RFC 8301 §3.2: RSA keys shorter than this are not accepted.
MIN_RSA_BITS = 1024
#: RFC 8301 §3.1: rsa-sha1 signatures must not be considered valid.
_ACCEPTED_ALGORITHMS = frozenset({"rsa-sha256", "ed25519-sha256"})


class KeyLookup:
    """Key records for one message, from a resolver: every key name is looked up
    once, and temporary failures are remembered so a failed verification can be
    told apart from one that could not be done.

    @param txt: C{name -> [bytes]} (L{aimx.auth.resolver.Resolver.txt_bytes}); raises
        L{DnsNoRecord} or L{DnsTempError}.
    """

    def __init__(self, txt):
        self._txt = txt
        self._answers: dict[bytes, bytes | None] = {}
        self.temporary: set[bytes] = set()

    def __call__(self, name: bytes) -> bytes | None:
        """The first TXT record at C{name}, or None (none, or a failure)."""
        key = name.lower().rstrip(b".")
        if key not in self._answers:
            self._answers[key] = self._lookup(key)
        return self._answers[key]

    def _lookup(self, name: bytes) -> bytes | None:
        try:
            records = self._txt(name.decode("ascii"))
        except DnsNoRecord:
            return None
        except DnsTempError:
            self.temporary.add(name)
            return None
        except UnicodeDecodeError:
            return None
        return records[0] if records else None


@functools.lru_cache(maxsize=256)
def _public_key(record: bytes):
    """C{(KeyRecord, cryptography key)} for a key record, remembered per record.

    @raise core.KeyRecordError: the record or its key cannot be used.
    """
    key = core.parse_key_record(record)
    try:
        if key.key_type == "ed25519":
            return key, ed25519.Ed25519PublicKey.from_public_bytes(key.public_key)
        public = serialization.load_der_public_key(key.public_key)
    except ValueError:
        raise core.KeyRecordError("key p= is not a key") from None
    except Exception:  # an unsupported key in a well-formed encoding
        raise core.KeyRecordError("key p= is not a usable key") from None
    if not isinstance(public, rsa.RSAPublicKey):
        raise core.KeyRecordError("key p= is not an RSA key")
    return key, public


def _signature_valid(public, signature: bytes, digest: bytes) -> bool:
    try:
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, digest)  # RFC 8463 §3: Ed25519 over the SHA-256
        else:
            public.verify(signature, digest, padding.PKCS1v15(),
                          utils.Prehashed(hashes.SHA256()))
    except InvalidSignature:
        return False
    except Exception:  # a signature OpenSSL will not even try: not valid either
        return False
    return True


def _tag(tags: dict, name: bytes) -> str:
    return re.sub(rb"\s+", b"", tags.get(name, b"")).decode("ascii", "replace")


class _Bodies:
    """Body hashes of one message, one pass per canonicalisation and length."""

    def __init__(self, message: core.Message):
        self._message = message
        self._done: dict = {}

    def hash(self, canon: str, length: int | None) -> tuple[bytes, int]:
        key = (canon, length)
        if key not in self._done:
            self._done[key] = core.body_hash(self._message.body(), canon, length)
        return self._done[key]


def _evaluate(message: core.Message, position: int, tags: dict | None, result: DkimResult,
              lookup: KeyLookup, bodies: _Bodies, now: float) -> DkimResult:
    def fail(why: str) -> DkimResult:
        return attrs.evolve(result, result=FAIL, why=why)

    if tags is None:
        return fail("not a tag list")
    if result.algorithm not in _ACCEPTED_ALGORITHMS:
        return fail("rsa-sha1 (RFC 8301)" if result.algorithm == "rsa-sha1" else "unknown a=")
    if len(_tag(tags, b"h").split(":")) > MAX_SIGNED_FIELDS:
        return fail(f"h= lists over {MAX_SIGNED_FIELDS} fields")
    try:
        signature = core.parse_signature(tags, now=now)
    except core.SignatureError as e:
        return fail(str(e))
    name = signature.key_name.encode("ascii")
    record = lookup(name)
    if record is None and name.lower().rstrip(b".") in lookup.temporary:
        return attrs.evolve(result, result=TEMPERROR, why="key lookup failed temporarily")
    try:
        key, public = _public_key(record or b"")
    except core.KeyRecordError as e:
        return fail(str(e))
    problem = core.key_problem(signature, key)
    if problem is not None:
        return fail(problem)
    if isinstance(public, rsa.RSAPublicKey) and public.key_size < MIN_RSA_BITS:
        return fail(f"RSA key under {MIN_RSA_BITS} bits")
    body_hash, body_length = bodies.hash(signature.body_canon, signature.length)
    if body_hash != signature.body_hash:
        return fail("body hash mismatch")
    data = core.header_input(message, core.verified_names(signature),
                             message.fields[position], signature.header_canon)
    if not _signature_valid(public, signature.signature, hashlib.sha256(data).digest()):
        return fail("did not verify")
    partial = signature.length is not None and signature.length < body_length
    return attrs.evolve(result, result=PASS, partial_body=partial)


def verify(raw: bytes, lookup: KeyLookup, aligned, *, max_signatures: int = MAX_SIGNATURES,
           now=time.time) -> tuple[DkimResult, ...]:
    """Verify the DKIM-Signature fields of C{raw}; never raises.

    At most C{max_signatures} are evaluated, those whose C{d=} is aligned with the
    author's domain first, then in header order; the rest are L{SKIPPED}.

    @param raw: the message bytes as received.
    @param lookup: the message's L{KeyLookup}.
    @param aligned: C{d= domain -> bool}, alignment with the author's domain.
    @param now: the clock C{t=} and C{x=} are checked against.
    @return: one result per signature field, in header order; empty when there is
        none or the header block cannot be read.
    """
    try:
        message = core.read_message(raw)
    except headerblock.HeaderBlockError:
        return ()
    found = []
    for position, (name, value) in enumerate(message.fields):
        if name.lower() != b"dkim-signature":
            continue
        try:
            tags = core.parse_tag_list(value)
        except core.TagListError:  # a malformed field still counts as a (failing) signature
            tags = None
        read = tags or {}
        domain = _tag(read, b"d").lower().rstrip(".")
        headers = frozenset(h.strip().lower() for h in _tag(read, b"h").split(":") if h)
        found.append((position, tags, DkimResult(
            domain=domain, selector=_tag(read, b"s"), algorithm=_tag(read, b"a").lower(),
            aligned=bool(domain) and aligned(domain), signed_headers=headers)))
    order = sorted(range(len(found)), key=lambda i: (not found[i][2].aligned, i))
    results = [attrs.evolve(r, result=SKIPPED, why="over the signature cap") for *_, r in found]
    bodies = _Bodies(message)
    when = now()
    for i in order[:max_signatures]:
        position, tags, result = found[i]
        try:
            results[i] = _evaluate(message, position, tags, result, lookup, bodies, when)
        except Exception:  # hostile input must never take verification down: fail
            results[i] = attrs.evolve(result, result=FAIL, why="could not be checked")
    return tuple(results)


@functools.lru_cache(maxsize=4)
def _private_key(pem: bytes):
    """Our signing key, parsed once."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError("not an RSA or Ed25519 key")
    return key


def sign(raw: bytes, *, private_key_pem: bytes, selector: str, domain: str,
         headers=None, linesep: bytes = b"\r\n", now=time.time) -> bytes:
    """The DKIM-Signature header field for C{raw} (relaxed/relaxed; rsa-sha256, or
    ed25519-sha256 for an Ed25519 key).

    @param private_key_pem: the private key, PEM (PKCS#1 or PKCS#8).
    @param headers: header names to sign, in order (a name absent from C{raw} is
        signed all the same: nobody can add that field later); None for the RFC 6376
        §5.4.1 set present in C{raw}, From twice.
    @param linesep: line ending used to fold the header (C{b"\\n"} for LF-only messages).
    @param now: the clock for C{t=}.
    @return: the header, folded, ending in C{linesep}; prepend it to C{raw}.
    @raise ValueError: the key or message cannot be signed.
    """
    try:
        key = _private_key(bytes(private_key_pem))
        message = core.read_message(raw)
        fields = dict(
            algorithm="ed25519-sha256" if isinstance(key, ed25519.Ed25519PrivateKey)
            else "rsa-sha256",
            domain=domain.encode("ascii").decode(), selector=selector.encode("ascii").decode(),
            timestamp=int(now()), names=core.signed_names(message, headers),
            body_hash=core.body_hash(message.body(), "relaxed")[0])
    except Exception as e:
        raise ValueError(f"DKIM signing failed: {e}") from e
    unsigned = (b"DKIM-Signature", core.signature_value(**fields))
    digest = hashlib.sha256(core.header_input(message, fields["names"], unsigned,
                                              "relaxed")).digest()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(digest)  # RFC 8463 §3: Ed25519 over the SHA-256
    else:
        signature = key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    value = core.signature_value(**fields, signature=signature)
    return (b"DKIM-Signature:" + value + b"\r\n").replace(b"\r\n", linesep)
