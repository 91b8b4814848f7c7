"""DKIM verification and signing over dkimpy (L1, blocking, no Twisted).

Verification reports every C{DKIM-Signature} header separately (dkimpy's module-level
C{verify} only checks the first one). Signing is rsa-sha256, relaxed/relaxed.

dkimpy checks RSA signatures with pure-Python big-integer arithmetic, about half of
its verify time; importing this module replaces that one primitive with OpenSSL's
(through cryptography), keeping dkimpy's parsing, canonicalisation and policy.
"""

import functools
import re

import attrs
import dkim
import dkim.crypto
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from dkim.util import parse_tag_value

_PURE_PYTHON_VERIFY = dkim.crypto.RSASSA_PKCS1_v1_5_verify
_HASHES = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}


@functools.lru_cache(maxsize=256)
def _rsa_key(modulus: int, exponent: int) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


def rsa_pkcs1_verify(hash_obj, signature: bytes, public_key: dict) -> bool:
    """dkimpy's C{RSASSA_PKCS1_v1_5_verify}, computed by OpenSSL.

    Falls back to dkimpy's own arithmetic for anything OpenSSL declines (odd key
    sizes or digests), so the verdict never differs.
    """
    try:
        key = _rsa_key(public_key["modulus"], public_key["publicExponent"])
        algorithm = _HASHES[hash_obj.name]()
        key.verify(signature, hash_obj.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm))
        return True
    except InvalidSignature:
        return False
    except (KeyError, ValueError, TypeError, UnsupportedAlgorithm):
        return _PURE_PYTHON_VERIFY(hash_obj, signature, public_key)


dkim.RSASSA_PKCS1_v1_5_verify = rsa_pkcs1_verify


@attrs.frozen
class DkimSignature:
    """The result of one DKIM-Signature header.

    @ivar domain: its C{d=}, lower-cased (C{""} when unreadable).
    @ivar selector: its C{s=} (C{""} when unreadable).
    @ivar passed: it verified.
    """

    domain: str
    selector: str
    passed: bool


def _tag(tags: dict, name: bytes) -> str:
    return re.sub(rb"\s+", b"", tags.get(name, b"")).decode("ascii", "replace")


def _check(message: dkim.DKIM, idx: int, value: bytes, dnsfunc) -> DkimSignature:
    try:
        tags = parse_tag_value(value)
    except Exception:  # a malformed header still counts as a (failing) signature
        tags = {}
    try:
        passed = bool(message.verify(idx=idx, dnsfunc=dnsfunc))
    except Exception:  # dkimpy raises assorted errors on hostile input: all are "fail"
        passed = False
    return DkimSignature(domain=_tag(tags, b"d").lower(), selector=_tag(tags, b"s"),
                         passed=passed)


def verify(raw: bytes, dnsfunc) -> tuple[DkimSignature, ...]:
    """Verify each DKIM-Signature header of C{raw}, top first. Never raises.

    @param raw: the message bytes as received.
    @param dnsfunc: dkimpy's TXT lookup, C{dnsfunc(name: bytes, timeout=5) -> bytes | None}.
    @return: one result per signature; empty when there is none or the message cannot be
        parsed at all.
    """
    try:
        message = dkim.DKIM(raw)
    except Exception:
        return ()
    values = [v for k, v in message.headers if k.lower() == b"dkim-signature"]
    return tuple(_check(message, i, v, dnsfunc) for i, v in enumerate(values))


def sign(raw: bytes, *, private_key_pem: bytes, selector: str, domain: str,
         headers=None, linesep: bytes = b"\r\n") -> bytes:
    """The DKIM-Signature header field for C{raw} (rsa-sha256, relaxed/relaxed).

    @param private_key_pem: PKCS#1 (C{BEGIN RSA PRIVATE KEY}) PEM.
    @param headers: header names to sign; None for dkimpy's RFC 6376 default set.
    @param linesep: line ending used to fold the header (C{b"\\n"} for LF-only messages).
    @return: the header, folded, ending in C{linesep}; prepend it to C{raw}.
    @raise ValueError: the key or message cannot be signed.
    """
    try:
        return dkim.sign(raw, selector.encode("ascii"), domain.encode("ascii"),
                         private_key_pem, canonicalize=(b"relaxed", b"relaxed"),
                         include_headers=headers, linesep=linesep)
    except dkim.DKIMException as e:
        raise ValueError(f"DKIM signing failed: {e}") from e
