"""DKIM keys and the STARTTLS certificate on disk (L1, cryptography).

Paths: C{<config_dir>/dkim/private.key} (0600) and C{public.key} (0644); the TLS
pair defaults to C{/etc/ssl/aimx/cert.pem} and C{key.pem} (docs/security.md, "Files and ownership").
"""

import base64
import contextlib
import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from aimx.errors import ConfigError
from aimx.store import safefs

DEFAULT_TLS_CERT = "/etc/ssl/aimx/cert.pem"
DEFAULT_TLS_KEY = "/etc/ssl/aimx/key.pem"


def dkim_paths(config_dir: str) -> tuple[str, str]:
    """The private and public DKIM key paths under a config dir."""
    directory = os.path.join(config_dir, "dkim")
    return os.path.join(directory, "private.key"), os.path.join(directory, "public.key")


def load_dkim_private_key(config_dir: str) -> bytes:
    """Read and check the DKIM private key; return its PEM bytes.

    @raise ConfigError: with the daemon's start-up message.
    """
    path = dkim_paths(config_dir)[0]
    try:
        with open(path, "rb") as f:
            pem = f.read()
        serialization.load_pem_private_key(pem, password=None)
    except (OSError, ValueError, TypeError) as e:
        reason = e.strerror if isinstance(e, OSError) else str(e)
        raise ConfigError(
            f"Failed to load DKIM private key from {path}: {reason}. `aimx serve` "
            "requires a readable DKIM private key (generate with `aimx setup` or "
            "`aimx dkim-keygen`)."
        ) from None
    return pem


def _write(path: str, data: bytes, mode: int):
    """Replace C{path} atomically with C{data}, mode C{mode} whatever the umask."""
    safefs.replace_path(path, data, mode=mode, durable=False)


def _create(path: str, data: bytes, mode: int):
    """Create C{path} exclusively, with C{mode} from the moment it exists."""
    safefs.create_path(path, data, mode=mode)


def generate_dkim_key(config_dir: str, bits: int = 2048, *, force: bool = False) -> str:
    """Create a new RSA DKIM key pair; return the DNS TXT value for it.

    C{private.key} is PKCS#1 PEM (0600), C{public.key} SubjectPublicKeyInfo PEM
    (0644), each created exclusively. A C{public.key}
    left without its private half is replaced.

    @param force: delete existing keys first.
    @raise FileExistsError: C{private.key} exists and C{force} is false.
    @raise OSError: the directory or a file cannot be written.
    """
    private, public = dkim_paths(config_dir)
    os.makedirs(os.path.dirname(private), mode=0o755, exist_ok=True)
    if force:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(private)
    if not os.path.exists(private):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(public)
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    _create(
        private,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    spki = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _create(public, spki, 0o644)
    return dkim_txt_value(spki)


def dkim_txt_value(public_pem: bytes) -> str:
    """The C{v=DKIM1; k=rsa; p=...} record for a PEM public key."""
    lines = public_pem.decode("ascii").strip().splitlines()
    return "v=DKIM1; k=rsa; p=" + "".join(line for line in lines if "-----" not in line)


def generate_self_signed(cert_path: str, key_path: str, domain: str):
    """Write a self-signed RSA-2048 certificate for C{domain}, valid 3650 days."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), False)
        .sign(key, hashes.SHA256())
    )
    for path in (cert_path, key_path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    _write(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def load_tls_pair(cert_path: str, key_path: str):
    """Load a PEM certificate and key as cryptography objects.

    @raise ConfigError: a file cannot be read or parsed.
    """
    try:
        with open(cert_path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
    except OSError:
        raise ConfigError(f"TLS cert/key not readable: {cert_path}") from None
    except ValueError as e:
        raise ConfigError(f"TLS certificate {cert_path} is not valid PEM: {e}") from None
    try:
        with open(key_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except OSError:
        raise ConfigError(f"TLS cert/key not readable: {key_path}") from None
    except (ValueError, TypeError) as e:
        raise ConfigError(f"TLS key {key_path} is not valid PEM: {e}") from None
    return cert, key


def local_public_key_b64(config_dir: str) -> str:
    """Base64 of the SubjectPublicKeyInfo DER in C{<config_dir>/dkim/public.key}."""
    with open(dkim_paths(config_dir)[1], "rb") as f:
        pem = f.read()
    key = serialization.load_pem_public_key(pem)
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")
