"""The OpenSSL-backed RSA primitive that aimx gives dkimpy agrees with dkimpy's own."""

import hashlib
import importlib.util
import random

import dkim
import dkim.crypto
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from cryptography.hazmat.primitives import hashes
from twisted.trial.unittest import SynchronousTestCase

from aimx.auth import dkim as aimx_dkim


def _key(bits):
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    numbers = private.public_key().public_numbers()
    return private, {"modulus": numbers.n, "publicExponent": numbers.e}


class RsaVerifyTests(SynchronousTestCase):
    def setUp(self):
        self.private, self.public = _key(1024)

    def sign(self, digest_name, data):
        algorithm = {"sha256": hashes.SHA256(), "sha1": hashes.SHA1()}[digest_name]
        digest = hashlib.new(digest_name, data).digest()
        return self.private.sign(digest, padding.PKCS1v15(), utils.Prehashed(algorithm))

    def both(self, hash_obj, signature, public):
        fast = aimx_dkim.rsa_pkcs1_verify(hash_obj.copy(), signature, public)
        slow = aimx_dkim._PURE_PYTHON_VERIFY(hash_obj.copy(), signature, public)
        self.assertEqual(fast, slow)
        return fast

    def test_installed(self):
        """dkimpy verifies through aimx's primitive once aimx.auth.dkim is imported."""
        self.assertIs(dkim.RSASSA_PKCS1_v1_5_verify, aimx_dkim.rsa_pkcs1_verify)

    def test_valid_signatures(self):
        """Good sha256 and sha1 signatures verify, as with dkimpy's arithmetic."""
        for name in ("sha256", "sha1"):
            signature = self.sign(name, b"body")
            self.assertTrue(self.both(hashlib.new(name, b"body"), signature, self.public))

    def test_wrong_data_or_key(self):
        """Another digest, a flipped bit or another key fails, as with dkimpy's arithmetic."""
        signature = self.sign("sha256", b"body")
        self.assertFalse(self.both(hashlib.sha256(b"bodY"), signature, self.public))
        flipped = bytes([signature[0] ^ 1]) + signature[1:]
        self.assertFalse(self.both(hashlib.sha256(b"body"), flipped, self.public))
        self.assertFalse(self.both(hashlib.sha256(b"body"), signature, _key(1024)[1]))

    def test_garbage_signature(self):
        """A signature of the wrong length is a failure, not an exception."""
        self.assertFalse(self.both(hashlib.sha256(b"x"), b"\0" * 7, self.public))


class RsaSignTests(SynchronousTestCase):
    def test_installed(self):
        self.assertIs(dkim.RSASSA_PKCS1_v1_5_sign, aimx_dkim.rsa_pkcs1_sign)

    def test_same_bytes_as_dkimpy(self):
        """PKCS#1 v1.5 is deterministic: OpenSSL's signature equals dkimpy's, byte for byte."""
        private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        from cryptography.hazmat.primitives import serialization

        der = private.private_bytes(serialization.Encoding.DER,
                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
        key = dkim.crypto.parse_private_key(der)
        for name in ("sha256", "sha1"):
            digest = hashlib.new(name, b"message")
            self.assertEqual(aimx_dkim.rsa_pkcs1_sign(digest.copy(), key),
                             aimx_dkim._PURE_PYTHON_SIGN(digest.copy(), key))


def _fresh(module_name):
    """A private, unpatched copy of one of dkimpy's modules."""
    spec = importlib.util.find_spec(module_name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _samples():
    rng = random.Random(7)
    alphabet = [b"a", b"b", b" ", b"\t", b"\r", b"\n", b"\r\n", b":", b"X-H: v", b"From "]
    samples = [
        b"", b"\n", b"\r\n", b"A: b", b"A: b\n", b"A: b\r", b"A: b\r\r\n\r\nbody\n",
        b"A: b\r\n c\r\n\r\nbody  \t x \r\n\r\n\r\n", b"\nbody", b"From x\r\nA: b\r\n\r\nz",
        b"A: b\n\nline one \t\nline two\r\n", b"A: 1\r\n\r\n" + b"word  word\t\tend \r\n" * 100000,
    ]
    for _ in range(400):
        samples.append(b"".join(rng.choice(alphabet) for _ in range(rng.randrange(60))))
    return samples


class DkimpyEquivalenceTests(SynchronousTestCase):
    def test_rfc822_parse(self):
        """The header/body split equals dkimpy's on every sample, except that it refuses
        (MessageFormatError) what dkimpy reads leniently: a "From " line after the first
        line, a continuation before any field (dkimpy: IndexError)."""
        original = _fresh("dkim").rfc822_parse
        for sample in _samples():
            try:
                expected = original(sample)
            except Exception:  # the fresh copy has its own exception classes
                self.assertRaises(dkim.MessageFormatError, aimx_dkim.rfc822_parse, sample)
                continue
            lines = [line.removesuffix(b"\r") for line in sample.split(b"\n")]
            head = lines[: lines.index(b"")] if b"" in lines else lines
            if any(line.startswith(b"From ") for line in head[1:]):
                self.assertRaises(dkim.MessageFormatError, aimx_dkim.rfc822_parse, sample)
                continue
            self.assertEqual(aimx_dkim.rfc822_parse(sample), expected, sample[:80])

    def test_body_canonicalisation(self):
        """Whitespace compression and trailing-space stripping equal dkimpy's."""
        original = _fresh("dkim.canonicalization")
        for sample in _samples():
            self.assertEqual(
                aimx_dkim.compress_whitespace(sample), original.compress_whitespace(sample)
            )
            self.assertEqual(
                aimx_dkim.strip_trailing_whitespace(sample),
                original.strip_trailing_whitespace(sample),
            )

    def test_body_canonicalisation_whole(self):
        """Both body canonicalisations equal dkimpy's, given bytes or a memoryview."""
        original = _fresh("dkim.canonicalization")
        for sample in _samples() + [b"x \r\n" * 5 + b"\r\n" * 3, b"a\r\n" * 300000]:
            for body in (sample, memoryview(sample)):
                self.assertEqual(
                    bytes(aimx_dkim.relaxed_body(body)),
                    original.Relaxed.canonicalize_body(sample),
                )
                self.assertEqual(
                    bytes(aimx_dkim.simple_body(body)),
                    original.Simple.canonicalize_body(sample),
                )

    def test_body_not_copied(self):
        """The split body is a view of the message, hashed without a copy when unchanged."""
        raw = b"A: b\r\n\r\n" + b"QUJD\r\n" * 1000
        _headers, body = aimx_dkim.rfc822_parse(raw)
        self.assertIsInstance(body, memoryview)
        self.assertIs(body.obj, raw)
        self.assertIs(aimx_dkim.relaxed_body(body), body)
        self.assertIs(aimx_dkim.simple_body(body).obj, raw)

    def test_installed(self):
        """dkimpy uses the replacements."""
        self.assertIs(dkim.rfc822_parse, aimx_dkim.rfc822_parse)
        self.assertIs(dkim.canonicalization.compress_whitespace, aimx_dkim.compress_whitespace)
        self.assertIs(
            dkim.canonicalization.Relaxed.canonicalize_body, aimx_dkim.relaxed_body
        )


class PrivateKeyCacheTests(SynchronousTestCase):
    def test_signing_key_parsed_once(self):
        """Signing twice with one PEM parses it once; the signatures still verify."""
        from aimx.loopback.keys import generate_key

        private, txt = generate_key()
        dkim.parse_pem_private_key.cache_clear()
        message = b"From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n"
        for _ in range(2):
            header = aimx_dkim.sign(message, private_key_pem=private, selector="s",
                                    domain="example.com", headers=["From", "Subject"])
            self.assertTrue(dkim.verify(header + message, dnsfunc=lambda *a, **k: txt.encode()))
        info = dkim.parse_pem_private_key.cache_info()
        self.assertEqual((info.misses, info.hits), (1, 1))


class PublicKeyCacheTests(SynchronousTestCase):
    def test_same_as_dkimpy_and_parsed_once(self):
        """A key record gives dkimpy's result, and is parsed only the first time."""
        from aimx.loopback.keys import generate_key

        _, txt = generate_key()
        record = txt.encode("ascii")
        aimx_dkim._public_key.cache_clear()
        self.assertIs(dkim.evaluate_pk, aimx_dkim.evaluate_pk)
        calls = []
        original = aimx_dkim._EVALUATE_PK

        def counting(name, s):
            calls.append(s)
            return original(name, s)

        self.patch(aimx_dkim, "_EVALUATE_PK", counting)
        first = dkim.evaluate_pk(b"sel._domainkey.example.com", record)
        second = dkim.evaluate_pk(b"other._domainkey.example.org", record)
        self.assertEqual(first, original(b"x", record))
        self.assertEqual(second, first)
        self.assertEqual(len(calls), 1)

    def test_bad_record_fails_with_its_name(self):
        """A record dkimpy refuses is refused every time, naming the key it came from."""
        aimx_dkim._public_key.cache_clear()
        for name in (b"a._domainkey.example.com", b"b._domainkey.example.com"):
            with self.assertRaises(dkim.KeyFormatError) as raised:
                dkim.evaluate_pk(name, None)
            self.assertIn(name.decode(), str(raised.exception))
