"""Server TLS options for STARTTLS (L2), from cryptography objects."""

from OpenSSL import crypto
from twisted.internet import ssl


def server_options(cert, key) -> ssl.CertificateOptions:
    """CertificateOptions for a cryptography certificate and private key."""
    return ssl.CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(key),
        certificate=crypto.X509.from_cryptography(cert),
    )
