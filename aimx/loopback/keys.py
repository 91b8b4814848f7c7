"""DKIM keys and signed messages for tests (test support).

Key generation is slow, so one key per size is generated per process and reused.
"""

import base64
import functools

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from aimx.auth import dkim


@functools.cache
def _key(bits: int) -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
    public_der = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return private_pem, "v=DKIM1; k=rsa; p=" + base64.b64encode(public_der).decode("ascii")


def generate_key(bits: int = 2048) -> tuple[bytes, str]:
    """An RSA key: C{(PKCS#1 private PEM, DKIM TXT value "v=DKIM1; k=rsa; p=...")}.

    The same key is returned for the same size within a process.
    """
    return _key(bits)


def sign_message(raw: bytes, *, private_pem: bytes, selector: str, domain: str) -> bytes:
    """C{raw} with a DKIM-Signature (rsa-sha256, relaxed/relaxed) prepended."""
    linesep = b"\r\n" if b"\r\n" in raw else b"\n"
    return dkim.sign(raw, private_key_pem=private_pem, selector=selector, domain=domain,
                     linesep=linesep) + raw
