"""aimx's own DKIM (aimx.core.dkim, aimx.auth.dkim) against the examples of RFC 6376
and RFC 8463, and against dkimpy as the oracle: dkimpy is imported here as
installed, and nothing in aimx touches it (tests/integration/test_no_patch.py)."""

import base64
import hashlib
import logging
import random
import re
import time

import dkim as dkimpy
import dkim.canonicalization
import dkim.util
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils
from twisted.trial.unittest import SynchronousTestCase

from aimx.auth import dkim as aimx_dkim
from aimx.auth.resolver import DnsNoRecord
from aimx.core import dkim as core
from aimx.loopback.keys import generate_key

_QUIET = logging.getLogger("tests.test_dkim.dkimpy")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False

PRIVATE_PEM, KEY_TXT = generate_key(1024)


def crlf(text: bytes) -> bytes:
    return text.replace(b"\n", b"\r\n")


def lookup(records: dict) -> aimx_dkim.KeyLookup:
    """A KeyLookup answering from C{{name: record}} (no record: none)."""

    def txt(name):
        if name not in records:
            raise DnsNoRecord(name)
        return [records[name]]

    return aimx_dkim.KeyLookup(txt)


def verify_one(raw: bytes, records=None, **kwargs):
    """Our verdict for the only (or first) signature of C{raw}."""
    if records is None:
        records = {"sel._domainkey.example.com": KEY_TXT.encode()}
    results = aimx_dkim.verify(raw, lookup(records), lambda d: True, **kwargs)
    return results[0] if results else None


def dkimpy_verify(raw: bytes, record: bytes = KEY_TXT.encode()) -> bool:
    try:
        return bool(dkimpy.verify(raw, logger=_QUIET, dnsfunc=lambda name, timeout=5: record))
    except Exception:  # dkimpy lets some errors of hostile input escape: not valid
        return False


# RFC 6376 Appendix A.2 with erratum 3192 (one space in the body's second line), and
# the key of Appendix C published at brisbane._domainkey.example.com.
RFC6376_MESSAGE = crlf(b"""\
DKIM-Signature: v=1; a=rsa-sha256; s=brisbane; d=example.com;
      c=simple/simple; q=dns/txt; i=joe@football.example.com;
      h=Received : From : To : Subject : Date : Message-ID;
      bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;
      b=AuUoFEfDxTDkHlLXSZEpZj79LICEps6eda7W3deTVFOk4yAUoqOB
      4nujc7YopdG5dWLSdNg6xNAZpOPr+kHxt1IrE+NahM6L/LbvaHut
      KVdkLLkpVaVVQPzeRDI009SO2Il5Lu7rDNH6mZckBdrIx0orEtZV
      4bmp/YzhwvcubU4=;
Received: from client1.football.example.com  [192.0.2.1]
      by submitserver.example.com with SUBMISSION;
      Fri, 11 Jul 2003 21:01:54 -0700 (PDT)
From: Joe SixPack <joe@football.example.com>
To: Suzie Q <suzie@shopping.example.net>
Subject: Is dinner ready?
Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)
Message-ID: <20030712040037.46341.5F8J@football.example.com>

Hi.

We lost the game. Are you hungry yet?

Joe.
""")
RFC6376_KEYS = {"brisbane._domainkey.example.com": (
    b"v=DKIM1; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDwIRP/UC3SBsEmGqZ9ZJW3/DkMoGeLnQg1fWn7"
    b"/zYtIxN2SnFCjxOCKG9v3b4jYfcTNh5ijSsq631uBItLa7od+v/RtdC2UzJ1lWT947qR+Rcac2gbto/NMqJ0fz"
    b"fVjH4OuKhitdY9tf6mcwGjaNBcWToIMmPSPDdQPNUYckcQ2QIDAQAB")}

# RFC 8463 Appendix A: A.3's message signed with Ed25519 and RSA, A.2's records, and
# A.1's Ed25519 secret key (the seed of RFC 8032 §7.1, test 1).
RFC8463_MESSAGE = crlf(b"""\
DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;
 d=football.example.com; i=@football.example.com;
 q=dns/txt; s=brisbane; t=1528637909; h=from : to :
 subject : date : message-id : from : subject : date;
 bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;
 b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus
 Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==
DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;
 d=football.example.com; i=@football.example.com;
 q=dns/txt; s=test; t=1528637909; h=from : to : subject :
 date : message-id : from : subject : date;
 bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;
 b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3
 DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz
 dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=
From: Joe SixPack <joe@football.example.com>
To: Suzie Q <suzie@shopping.example.net>
Subject: Is dinner ready?
Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)
Message-ID: <20030712040037.46341.5F8J@football.example.com>

Hi.

We lost the game.  Are you hungry yet?

Joe.
""")
RFC8463_KEYS = {
    "brisbane._domainkey.football.example.com":
        b"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
    "test._domainkey.football.example.com": (
        b"v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk"
        b"08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lH"
        b"vqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB"),
}
RFC8463_ED25519_SEED = base64.b64decode("nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=")
RFC8463_TIME = 1528637909


class Rfc6376ExampleTests(SynchronousTestCase):
    def test_signature_verifies(self):
        """Appendix A.2's signature verifies with Appendix C's key."""
        result = verify_one(RFC6376_MESSAGE, RFC6376_KEYS)
        self.assertEqual((result.result, result.domain, result.selector, result.algorithm),
                         ("pass", "example.com", "brisbane", "rsa-sha256"))
        self.assertEqual(result.signed_headers, frozenset(
            {"received", "from", "to", "subject", "date", "message-id"}))

    def test_body_hash(self):
        """The simple body hash of the example is its bh=."""
        message = core.read_message(RFC6376_MESSAGE)
        digest, length = core.body_hash(message.body(), "simple")
        self.assertEqual(base64.b64encode(digest), b"2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=")
        self.assertEqual(length, len(b"Hi.\r\n\r\nWe lost the game. Are you hungry yet?\r\n"
                                     b"\r\nJoe.\r\n"))

    def test_changes_fail(self):
        """A changed body fails on its hash; a changed signed field on the signature."""
        body = verify_one(RFC6376_MESSAGE.replace(b"Joe.", b"Jim."), RFC6376_KEYS)
        self.assertEqual((body.result, body.why), ("fail", "body hash mismatch"))
        head = verify_one(RFC6376_MESSAGE.replace(b"dinner", b"lunch"), RFC6376_KEYS)
        self.assertEqual((head.result, head.why), ("fail", "did not verify"))
        folded = verify_one(RFC6376_MESSAGE.replace(b"\r\n      by", b"\r\n by"), RFC6376_KEYS)
        self.assertEqual(folded.result, "fail")  # simple: whitespace counts

    def test_canonicalisation_examples(self):
        """§3.4.5's examples: both header and both body canonicalisations."""
        fields = [(b"A", b" X\r\n"), (b"B ", b" Y\t\r\n\tZ  \r\n")]
        body = b" C \r\nD \t E\r\n\r\n\r\n"
        self.assertEqual(b"".join(core.relaxed_header(n, v) for n, v in fields),
                         b"a:X\r\nb:Y Z\r\n")
        self.assertEqual(b"".join(core.simple_header(n, v) for n, v in fields),
                         b"A: X\r\nB : Y\t\r\n\tZ  \r\n")
        pieces = core.body_pieces(body, 0)
        self.assertEqual(b"".join(core.canonical_body(pieces, "relaxed")), b" C\r\nD E\r\n")
        pieces = core.body_pieces(body, 0)
        self.assertEqual(b"".join(core.canonical_body(pieces, "simple")),
                         b" C \r\nD \t E\r\n")


class Rfc8463ExampleTests(SynchronousTestCase):
    def verify(self, raw, when=RFC8463_TIME):
        return aimx_dkim.verify(raw, lookup(RFC8463_KEYS), lambda d: True, now=lambda: when)

    def test_both_signatures_verify(self):
        """A.3's Ed25519 and RSA signatures verify with A.2's records."""
        results = self.verify(RFC8463_MESSAGE)
        self.assertEqual([(r.algorithm, r.selector, r.result) for r in results],
                         [("ed25519-sha256", "brisbane", "pass"), ("rsa-sha256", "test", "pass")])

    def test_ed25519_signature_reproduced(self):
        """Signing A.3's header hash input with A.1's secret gives A.3's b= (Ed25519 is
        deterministic), so the hash input is the RFC's to the byte."""
        message = core.read_message(RFC8463_MESSAGE)
        tags = core.parse_tag_list(message.fields[0][1])
        signature = core.parse_signature(tags, now=RFC8463_TIME)
        data = core.header_input(message, signature.signed, message.fields[0], "relaxed")
        key = ed25519.Ed25519PrivateKey.from_private_bytes(RFC8463_ED25519_SEED)
        self.assertEqual(key.sign(hashlib.sha256(data).digest()), signature.signature)
        public = key.public_key().public_bytes(serialization.Encoding.Raw,
                                               serialization.PublicFormat.Raw)
        self.assertIn(base64.b64encode(public), RFC8463_KEYS[
            "brisbane._domainkey.football.example.com"])

    def test_ed25519_changed_fails(self):
        """A changed signed field fails the Ed25519 signature."""
        results = self.verify(RFC8463_MESSAGE.replace(b"dinner", b"lunch"))
        self.assertEqual([r.why for r in results], ["did not verify", "did not verify"])

    def test_sign_ed25519(self):
        """With an Ed25519 key our signer writes ed25519-sha256, which verifies."""
        key = ed25519.Ed25519PrivateKey.from_private_bytes(RFC8463_ED25519_SEED)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        raw = RFC8463_MESSAGE[RFC8463_MESSAGE.index(b"From:"):]
        header = aimx_dkim.sign(raw, private_key_pem=pem, selector="brisbane",
                                domain="football.example.com")
        self.assertIn(b"a=ed25519-sha256", header)
        [result] = self.verify(header + raw, when=time.time())
        self.assertEqual(result.result, "pass")


class TagListTests(SynchronousTestCase):
    def test_equals_dkimpy(self):
        """Tag lists read as dkimpy reads them, errors included, on random input."""
        rng = random.Random(11)
        alphabet = [b"a", b"b", b"h", b"=", b";", b" ", b"\t", b"\r\n ", b"x1", b"_", b"-",
                    b"1", b":", b"v=1", b"; ", b"=="]
        samples = [b"", b";", b"a=1;", b"a=1;;", b"a=1; ;", b"a = 1 ; b=\r\n 2", b"1a=2",
                   b"a=1; a=2", b"a-b=1", b"a b=1", b"=1", b"a", b" a=1 ;  "]
        samples += [b"".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
                    for _ in range(3000)]
        for sample in samples:
            try:
                expected = dkim.util.parse_tag_value(sample)
            except dkim.util.InvalidTagValueList:
                self.assertRaises(core.TagListError, core.parse_tag_list, sample)
                continue
            self.assertEqual(core.parse_tag_list(sample), expected, sample)


def _signature_tags(**changes) -> dict:
    tags = {b"v": b"1", b"a": b"rsa-sha256", b"b": b"AAAA", b"bh": b"AAAA",
            b"d": b"example.com", b"h": b"from : to", b"s": b"sel"}
    for name, value in changes.items():
        if value is None:
            tags.pop(name.encode())
        else:
            tags[name.encode()] = value
    return tags


class SignatureFieldTests(SynchronousTestCase):
    def problem(self, now=1_000_000, **changes):
        try:
            core.parse_signature(_signature_tags(**changes), now=now)
        except core.SignatureError as e:
            return str(e)
        return None

    def test_valid(self):
        """A complete field is read into its parts."""
        sig = core.parse_signature(_signature_tags(
            c=b"relaxed", l=b"12", i=b"joe@Mail.Example.com", t=b"5", x=b"9"), now=1)
        self.assertEqual((sig.header_canon, sig.body_canon, sig.length, sig.signed,
                          sig.key_name, sig.timestamp, sig.expires),
                         ("relaxed", "simple", 12, (b"from", b"to"), "sel._domainkey.example.com",
                          5, 9))

    def test_refused(self):
        """Missing or malformed tags are refused with a reason."""
        cases = [
            ({"v": None}, "missing v="), ({"v": b"2"}, "v= is not 1"),
            ({"a": b"rsa-sha512"}, "unknown a="), ({"b": b"A*A="}, "b= is not base64"),
            ({"bh": b"AAA"}, "bh= is not base64"),
            ({"d": b"exa mple.com"}, "d= is not a domain name"),
            ({"d": b"a@b"}, "d= is not a domain name"), ({"s": b""}, "s= is not a domain name"),
            ({"i": b"joe@example.org"}, "i= is not within d="),
            ({"i": b"joe@badexample.com"}, "i= is not within d="),
            ({"i": b"example.com"}, "i= is not within d="),
            ({"l": b"-1"}, "l= is not a number"), ({"l": b""}, "l= is not a number"),
            ({"q": b"dns"}, "q= is not dns/txt"),
            ({"c": b"relaxed/odd"}, "c= is not a known canonicalisation"),
            ({"h": b"to:subject"}, "h= does not sign From (RFC 6376 §6.1.1)"),
        ]
        for changes, why in cases:
            self.assertEqual(self.problem(**changes), why, changes)

    def test_clock(self):
        """t= may be at most 10 hours ahead and x= 10 hours behind the injected clock;
        x= before t= is refused."""
        now = 1_000_000
        self.assertIsNone(self.problem(now, t=b"%d" % (now + 36000)))
        self.assertEqual(self.problem(now, t=b"%d" % (now + 36001)), "t= is in the future")
        self.assertIsNone(self.problem(now, x=b"%d" % (now - 36000)))
        self.assertEqual(self.problem(now, x=b"%d" % (now - 36001)), "expired (x=)")
        self.assertEqual(self.problem(now, t=b"%d" % now, x=b"%d" % (now - 1)),
                         "x= is before t=")

    def test_without_b_value(self):
        """§3.7: the b= value goes, with the whitespace around it; nothing else does."""
        self.assertEqual(core.without_b_value(b" a=1; b=AB\r\n CD ; bh=x\r\n"),
                         b" a=1; b=; bh=x\r\n")
        self.assertEqual(core.without_b_value(b" a=1;\r\n b = AB\r\n CD\r\n"), b" a=1;\r\n b =")
        self.assertEqual(core.without_b_value(b" z=x b=1; bh=2; b=3"), b" z=x b=1; bh=2; b=")

    def test_from_not_signed_differs_from_dkimpy(self):
        """A valid signature whose h= lacks From passes dkimpy but not us (§6.1.1 MUST)."""
        raw = crlf(b"From: a@example.com\nSubject: s\n\nbody\n")
        message = core.read_message(raw)
        fields = dict(algorithm="rsa-sha256", domain="example.com", selector="sel",
                      timestamp=int(time.time()), names=[b"subject"],
                      body_hash=core.body_hash(message.body(), "relaxed")[0])
        data = core.header_input(message, [b"subject"],
                                 (b"DKIM-Signature", core.signature_value(**fields)), "relaxed")
        key = serialization.load_pem_private_key(PRIVATE_PEM, None)
        signature = key.sign(hashlib.sha256(data).digest(), padding.PKCS1v15(),
                             utils.Prehashed(hashes.SHA256()))
        signed = b"DKIM-Signature:" + core.signature_value(**fields, signature=signature) \
            + b"\r\n" + raw
        self.assertTrue(dkimpy_verify(signed))
        result = verify_one(signed)
        self.assertEqual((result.result, result.why),
                         ("fail", "h= does not sign From (RFC 6376 §6.1.1)"))


class KeyRecordTests(SynchronousTestCase):
    def test_read(self):
        """k= defaults to rsa; p= is decoded; t= flags are read."""
        key = core.parse_key_record(b"v=DKIM1; p=AAEC; t=y:s")
        self.assertEqual((key.key_type, key.public_key, key.strict, key.testing),
                         ("rsa", b"\x00\x01\x02", True, True))
        self.assertEqual(core.parse_key_record(b"k=ed25519; p=AA==; s=email:tlsrpt").key_type,
                         "ed25519")
        # As dkimpy: bytes outside base64 are skipped, whitespace too.
        self.assertEqual(core.parse_key_record(b'p="AA\r\n EC"').public_key, b"\x00\x01\x02")

    def test_refused(self):
        """Records that cannot be used are refused with a reason."""
        cases = [
            (b"", "no key record"), (b"v=DKIM1; p", "key record is not a tag list"),
            (b"v=DKIM2; p=AA==", "key record v= is not DKIM1"),
            (b"k=dsa; p=AA==", "unknown key type (k=)"),
            (b"s=tlsrpt; p=AA==", "key is not for email (s=)"),
            (b"h=sha1; p=AA==", "key does not allow sha256 (h=)"),
            (b"v=DKIM1; k=rsa", "key record has no p="),
            (b"v=DKIM1; p=", "key revoked (empty p=)"),
            (b"p=AAA", "key p= is not base64"),
        ]
        for record, why in cases:
            with self.assertRaises(core.KeyRecordError, msg=record) as raised:
                core.parse_key_record(record)
            self.assertEqual(str(raised.exception), why)

    def test_key_problem(self):
        """k= must match a=; with t=s, i= must be in d= itself."""
        sig = core.parse_signature(_signature_tags(i=b"@mail.example.com"), now=0)
        self.assertEqual(core.key_problem(sig, core.KeyRecord("ed25519", b"")),
                         "key type does not match a=")
        self.assertIsNone(core.key_problem(sig, core.KeyRecord("rsa", b"")))
        self.assertEqual(core.key_problem(sig, core.KeyRecord("rsa", b"", strict=True)),
                         "i= is a subdomain of d= but the key says t=s")
        same = core.parse_signature(_signature_tags(i=b"joe@Example.com"), now=0)
        self.assertIsNone(core.key_problem(same, core.KeyRecord("rsa", b"", strict=True)))

    def test_through_verify(self):
        """A revoked key, a short RSA key, a key of another type and t=s all fail."""
        raw = crlf(b"From: a@example.com\n\nbody\n")
        signed = aimx_dkim.sign(raw, private_key_pem=PRIVATE_PEM, selector="sel",
                                domain="example.com") + raw
        # The size is checked before the signature: any 512-bit modulus shows it.
        short = rsa.RSAPublicNumbers(65537, (1 << 511) | 1).public_key()
        short_der = short.public_bytes(serialization.Encoding.DER,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)
        ed_key = RFC8463_KEYS["brisbane._domainkey.football.example.com"]
        name = "sel._domainkey.example.com"
        cases = [
            (signed, b"v=DKIM1; p=", "key revoked (empty p=)"),
            (signed, b"p=" + base64.b64encode(short_der), "RSA key under 1024 bits"),
            (signed, ed_key, "key type does not match a="),
            (signed, b"k=rsa; p=AAAA", "key p= is not a key"),
            (signed.replace(b"i=@example.com", b"i=@mail.example.com"),
             KEY_TXT.encode() + b"; t=s", "i= is a subdomain of d= but the key says t=s"),
        ]
        for message, record, why in cases:
            result = verify_one(message, {name: record})
            self.assertEqual((result.result, result.why), ("fail", why), why)
        self.assertEqual(verify_one(signed, {name: KEY_TXT.encode() + b"; t=s"}).result, "pass")

    def test_pkcs1_key(self):
        """An RSA key published as a bare PKCS#1 RSAPublicKey (not SubjectPublicKeyInfo)
        works, as with dkimpy."""
        raw = crlf(b"From: a@example.com\n\nbody\n")
        signed = aimx_dkim.sign(raw, private_key_pem=PRIVATE_PEM, selector="sel",
                                domain="example.com") + raw
        public = serialization.load_pem_private_key(PRIVATE_PEM, None).public_key()
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
        record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
        self.assertEqual(verify_one(signed, {"sel._domainkey.example.com": record}).result,
                         "pass")
        self.assertTrue(dkimpy_verify(signed, record))


def _random_body(rng) -> bytes:
    parts = [b"", b"a", b"word", b" ", b"  ", b"\t", b" \t ", b"\r\n", b"\r\n", b"\n", b"\r",
             b"\r\n\r\n", b"x\ty", b"-- ", b"."]
    return b"".join(rng.choice(parts) for _ in range(rng.randrange(40)))


class CanonicalisationTests(SynchronousTestCase):
    def test_body_equals_dkimpy(self):
        """Both body canonicalisations equal dkimpy's on random bodies (bare LF and CR,
        runs of whitespace, trailing lines, no final line end, empty), whatever the
        slice sizes (of reading and of rewriting whitespace)."""
        rng = random.Random(5)
        bodies = [b"", b"\r\n", b"\n\n", b" ", b"\t\r\n", b"a", b"a \t", b"a\r\n \r\n\t\r\n",
                  b"\r", b"a\r\r\n", b" \r\n x"]
        bodies += [_random_body(rng) for _ in range(1500)]
        cases = []
        for body in bodies:
            raw = b"A: b\r\n\r\n" + body
            _, dkimpy_body = dkimpy.rfc822_parse(raw)
            for canon, policy in (("simple", dkim.canonicalization.Simple),
                                  ("relaxed", dkim.canonicalization.Relaxed)):
                expected = policy.canonicalize_body(dkimpy_body)
                cases.append((core.read_message(raw), canon, expected))
        for size, rewrite in ((1, None), (2, None), (3, None), (7, None),
                              (core.SLICE, 1), (core.SLICE, 4), (core.SLICE, None)):
            self.patch(core, "_REWRITE", rewrite or core.SLICE // 4)
            for message, canon, expected in cases:
                got = b"".join(core.canonical_body(message.body(size), canon, size))
                self.assertEqual(got, expected, (canon, size, rewrite, message.raw))

    def test_headers_equal_dkimpy(self):
        """Relaxed header canonicalisation equals dkimpy's on random fields."""
        rng = random.Random(6)
        parts = [b"a", b"B", b" ", b"  ", b"\t", b"\r\n ", b"\r\n\t", b"\r", b"x y"]
        for _ in range(2000):
            value = b"".join(rng.choice(parts) for _ in range(rng.randrange(10))) + b"\r\n"
            name = rng.choice([b"Subject", b"X-Odd", b"FROM"])
            [(n, v)] = dkim.canonicalization.Relaxed.canonicalize_headers([(name, value)])
            self.assertEqual(core.relaxed_header(name, value), n + b":" + v, value)

    def test_25_mib_in_slices(self):
        """A 25 MiB body is read, canonicalised and hashed in slices of at most 1 MiB,
        and hashes as dkimpy's canonical body does."""
        # Mostly base64 lines, as a big attachment is, and some whitespace to rewrite.
        text = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9w\r\n" * 40
        text += b"odd  space\t \r\n"
        body = text * (25 * core.SLICE // len(text))
        raw = b"A: b\r\n\r\n" + body
        message = core.read_message(raw)
        self.assertGreater(len(body), 25 * core.SLICE - len(text))
        for canon, policy in (("simple", dkim.canonicalization.Simple),
                              ("relaxed", dkim.canonicalization.Relaxed)):
            pieces = list(message.body())
            self.assertEqual(len(pieces), 25)
            canonical = list(core.canonical_body(iter(pieces), canon))
            self.assertGreaterEqual(len(canonical), 25)
            self.assertLessEqual(max(map(len, canonical)), core.SLICE)
            # All line ends are CRLF, so dkimpy's body is the bytes after the header block.
            expected = hashlib.sha256(policy.canonicalize_body(body)).digest()
            self.assertEqual(core.body_hash(message.body(), canon)[0], expected, canon)

    def test_25_mib_without_line_ends(self):
        """One 25 MiB line (plain, or dense with whitespace to rewrite), a 25 MiB run of
        spaces and 25 MiB of empty lines are sliced too; their canonical forms are right."""
        size = 25 * core.SLICE
        cases = [
            (b"x" * size, b"x" * size + b"\r\n", b"x" * size + b"\r\n"),
            (b" " * size, b" " * size + b"\r\n", b" \r\n"),
            (b"\r\n" * (size // 2), b"\r\n", b""),
            (b"a" + b" " * size + b"\r\nb", b"a" + b" " * size + b"\r\nb\r\n", b"a\r\nb\r\n"),
            (b"a  b\t" * (size // 5), b"a  b\t" * (size // 5) + b"\r\n",
             b"a b " * (size // 5) + b"\r\n"),
        ]
        for body, simple, relaxed in cases:
            for canon, expected in (("simple", simple), ("relaxed", relaxed)):
                self.assertGreaterEqual(len(list(core.body_pieces(body, 0))), 25)
                pieces = list(core.canonical_body(core.body_pieces(body, 0), canon))
                self.assertLessEqual(max(map(len, pieces), default=0), core.SLICE)
                self.assertEqual(hashlib.sha256(b"".join(pieces)).digest(),
                                 hashlib.sha256(expected).digest(), (canon, body[:8]))

    def test_body_not_copied(self):
        """A body whose line ends are all CRLF is read as views of the message."""
        raw = b"A: b\r\n\r\n" + b"QUJD\r\n" * 1000
        [piece] = core.read_message(raw).body()
        self.assertIsInstance(piece, memoryview)
        self.assertIs(piece.obj, raw)
        [canonical, end] = core.canonical_body([piece], "simple")
        self.assertIs(canonical.obj, raw)
        self.assertEqual(end, b"\r\n")

    def test_header_selection(self):
        """§5.4.2: bottom-up per name, each instance once; absent names add nothing."""
        message = core.read_message(crlf(b"B: 1\nA: 2\nb: 3\nC: 4\n\n"))
        self.assertEqual(core.select_fields(message, [b"b", b"x", b"a", b"b", b"b", b"c"]),
                         [(b"b", b" 3\r\n"), (b"A", b" 2\r\n"), (b"B", b" 1\r\n"),
                          (b"C", b" 4\r\n")])

    def test_extra_from_breaks(self):
        """As dkimpy: a From added above a signed one fails, an unsigned other field does
        not; over-signed From (listed twice) does not need a second From."""
        raw = crlf(b"From: a@example.com\nSubject: s\n\nbody\n")
        signed = aimx_dkim.sign(raw, private_key_pem=PRIVATE_PEM, selector="sel",
                                domain="example.com", headers=["From", "Subject"])
        self.assertEqual(verify_one(signed + raw).result, "pass")
        for extra, outcome in ((b"X-Other: 1\r\n", "pass"), (b"From: b@evil.test\r\n", "fail")):
            self.assertEqual(verify_one(signed + extra + raw).result, outcome, extra)
            self.assertEqual(dkimpy_verify(signed + extra + raw), outcome == "pass", extra)


_NAMES = [b"From", b"To", b"Subject", b"Date", b"Message-ID", b"Cc", b"Reply-To", b"X-Extra",
          b"MIME-Version", b"Content-Type"]


def _random_value(rng) -> bytes:
    words = [b"alpha", b"b@example.com", b"<x@y>", b"(c)", b"\"q\"", b"=?utf-8?q?x?="]
    gaps = [b" ", b"  ", b"\t", b" \t ", b"\r\n ", b"\r\n\t", b"\r\n  "]
    value = rng.choice([b" ", b"", b"\t", b"  "])
    for i in range(rng.randrange(1, 5)):
        value += (rng.choice(gaps) if i else b"") + rng.choice(words)
    return value + rng.choice([b"", b"", b" ", b"\t"])


def _random_message(rng) -> bytes:
    fields = [(rng.choice(_NAMES), _random_value(rng)) for _ in range(rng.randrange(0, 6))]
    fields.insert(rng.randrange(len(fields) + 1), (rng.choice([b"From", b"from"]),
                                                   _random_value(rng)))
    head = b"".join(n + b":" + v + b"\r\n" for n, v in fields)
    raw = head + b"\r\n" + _random_body(rng)
    return raw.replace(b"\r\n", b"\n") if rng.random() < 0.3 else raw


def _mutations(signed: bytes) -> list[bytes]:
    head, sep, body = signed.partition(b"\r\n\r\n") if b"\r\n\r\n" in signed \
        else signed.partition(b"\n\n")
    return [
        signed,
        signed + b"more\r\n",
        signed + b"\r\n\r\n",
        head + sep + body.replace(b" ", b"  ", 1),
        head + sep + body.replace(b"\t", b" ", 1),
        b"X-New: 1\r\n" + signed,
        b"From: evil@example.net\r\n" + signed,
        head + b"\r\nSubject: added" + sep + body,
        head.replace(b"Subject:", b"SUBJECT:", 1) + sep + body,
        head.replace(b": ", b":  ", 2) + sep + body,
        head.replace(b"\r\n ", b" ", 1) + sep + body,
        head.replace(b"\n ", b" ", 1) + sep + body,
    ]


class VerifyEquivalenceTests(SynchronousTestCase):
    def test_dkimpy_signatures(self):
        """Random messages signed by dkimpy (both canonicalisations, l=, over-signed and
        absent fields, folded fields, odd whitespace, bare line ends, empty bodies), then
        changed: our verdict is dkimpy's, every time."""
        rng = random.Random(17)
        checked = passed = 0
        for _ in range(150):
            raw = _random_message(rng)
            names = [b"from"] + [rng.choice(_NAMES).lower() for _ in range(rng.randrange(6))]
            rng.shuffle(names)
            options = dict(canonicalize=(rng.choice([b"simple", b"relaxed"]),
                                         rng.choice([b"simple", b"relaxed"])),
                           include_headers=names, length=rng.random() < 0.3)
            header = dkimpy.sign(raw, b"sel", b"example.com", PRIVATE_PEM, logger=_QUIET,
                                 **options)
            for message in _mutations(header + raw):
                expected = dkimpy_verify(message)
                result = verify_one(message)
                self.assertEqual(result.result == "pass", expected, (options, message))
                checked += 1
                passed += expected
        self.assertGreater(passed, checked // 4)
        self.assertGreater(checked - passed, checked // 4)

    def test_signature_field_whitespace(self):
        """Whitespace and folds added anywhere in a DKIM-Signature field (inside b=,
        around tags, inside other values): our verdict is dkimpy's."""
        rng = random.Random(29)
        raw = crlf(b"From: Alice <a@example.com>\nTo: b@example.net\nSubject: s\n\nbody\n")
        checked = passed = 0
        for canon in (b"simple", b"relaxed"):
            header = dkimpy.sign(raw, b"sel", b"example.com", PRIVATE_PEM, logger=_QUIET,
                                 canonicalize=(canon, b"relaxed"),
                                 include_headers=[b"from", b"to", b"subject"])
            for _ in range(200):
                at = rng.randrange(len(b"DKIM-Signature:"), len(header) - 2)
                extra = rng.choice([b" ", b"\t", b"\r\n ", b"\r\n\t", b"  "])
                message = header[:at] + extra + header[at:] + raw
                expected = dkimpy_verify(message)
                self.assertEqual(verify_one(message).result == "pass", expected,
                                 (canon, message[:at + 20]))
                checked += 1
                passed += expected
        self.assertGreater(passed, checked // 10)
        self.assertGreater(checked - passed, checked // 10)

    def test_our_signatures(self):
        """Random messages signed by us verify with dkimpy and with us, and fail together
        once changed."""
        rng = random.Random(23)
        for i in range(60):
            raw = _random_message(rng)
            froms = len(core.read_message(raw).positions(b"from"))
            headers = None if i % 3 == 0 else (
                [rng.choice(_NAMES) for _ in range(4)] + ["From"] * froms)
            linesep = b"\n" if b"\r\n" not in raw else b"\r\n"
            header = aimx_dkim.sign(raw, private_key_pem=PRIVATE_PEM, selector="sel",
                                    domain="example.com", headers=headers, linesep=linesep)
            self.assertTrue(dkimpy_verify(header + raw), raw)
            for message in _mutations(header + raw):
                self.assertEqual(verify_one(message).result == "pass", dkimpy_verify(message))


class SignTests(SynchronousTestCase):
    raw = crlf(b"From: Alice <alice@example.com>\nTo: bob@example.net\nSubject: hello\n\nHi.\n")

    def test_field(self):
        """The field: relaxed/relaxed, t= from the clock, h= as given with absent fields
        over-signed, folded at 78 columns; stock dkimpy verifies it."""
        header = aimx_dkim.sign(self.raw, private_key_pem=PRIVATE_PEM, selector="sel",
                                domain="example.com", now=lambda: 1_700_000_000,
                                headers=("From", "Reply-To", "To", "Subject", "Date"))
        self.assertTrue(header.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; "
                                          b"c=relaxed/relaxed; d=example.com;\r\n"))
        self.assertTrue(header.endswith(b"\r\n"))
        tags = core.parse_tag_list(header.partition(b":")[2])
        self.assertEqual((tags[b"t"], re.sub(rb"\s", b"", tags[b"h"])),
                         (b"1700000000", b"from:reply-to:to:subject:date"))
        self.assertLessEqual(max(len(line) for line in header.split(b"\r\n")), 78)
        self.assertTrue(dkimpy_verify(header + self.raw))
        self.assertFalse(dkimpy_verify(header + b"Reply-To: x@evil.test\r\n" + self.raw))

    def test_default_headers(self):
        """Without a list: the RFC 6376 §5.4.1 fields present, From twice (as dkimpy)."""
        header = aimx_dkim.sign(self.raw, private_key_pem=PRIVATE_PEM, selector="sel",
                                domain="example.com")
        tags = core.parse_tag_list(header.partition(b":")[2])
        self.assertEqual(re.sub(rb"\s", b"", tags[b"h"]).split(b":"),
                         [b"from", b"to", b"subject", b"from"])

    def test_refused(self):
        """Not signing From, signing a field that should not be, a bad key or a bad header
        block is a ValueError."""
        for headers in (["To"], ["From", "Received"]):
            self.assertRaises(ValueError, aimx_dkim.sign, self.raw, private_key_pem=PRIVATE_PEM,
                              selector="sel", domain="example.com", headers=headers)
        self.assertRaises(ValueError, aimx_dkim.sign, self.raw, private_key_pem=b"nope",
                          selector="sel", domain="example.com")
        self.assertRaises(ValueError, aimx_dkim.sign, b" continuation first\r\n\r\n",
                          private_key_pem=PRIVATE_PEM, selector="sel", domain="example.com")

    def test_long_values_folded(self):
        """A long h= and a 2048-bit b= still make lines of at most 78 characters."""
        private, txt = generate_key()
        names = ["From"] + [f"X-Header-Number-{i}" for i in range(20)]
        header = aimx_dkim.sign(self.raw, private_key_pem=private, selector="sel",
                                domain="example.com", headers=names)
        self.assertLessEqual(max(len(line) for line in header.split(b"\r\n")), 78)
        self.assertTrue(dkimpy_verify(header + self.raw, txt.encode()))


class KeyCacheTests(SynchronousTestCase):
    def test_signing_key_parsed_once(self):
        """Signing twice with one PEM parses it once; the signatures still verify."""
        aimx_dkim._private_key.cache_clear()
        for _ in range(2):
            header = aimx_dkim.sign(SignTests.raw, private_key_pem=PRIVATE_PEM, selector="sel",
                                    domain="example.com")
            self.assertTrue(dkimpy_verify(header + SignTests.raw))
        info = aimx_dkim._private_key.cache_info()
        self.assertEqual((info.misses, info.hits), (1, 1))

    def test_public_key_parsed_once(self):
        """A key record is parsed the first time only, whichever name it came from."""
        aimx_dkim._public_key.cache_clear()
        header = aimx_dkim.sign(SignTests.raw, private_key_pem=PRIVATE_PEM, selector="sel",
                                domain="example.com")
        for _ in range(3):
            self.assertEqual(verify_one(header + SignTests.raw).result, "pass")
        info = aimx_dkim._public_key.cache_info()
        self.assertEqual((info.misses, info.hits), (1, 2))

    def test_bad_record_not_remembered(self):
        """A record that cannot be used fails every time, and is not kept."""
        aimx_dkim._public_key.cache_clear()
        for _ in range(2):
            self.assertRaises(core.KeyRecordError, aimx_dkim._public_key, b"p=")
        self.assertEqual(aimx_dkim._public_key.cache_info().currsize, 0)


class LimitTests(SynchronousTestCase):
    """What a sender controls is bounded: signed fields, signatures, tags, body passes."""

    raw = crlf(b"From: a@example.com\nSubject: s\n\nbody\n")

    def counted(self, records=None):
        """A KeyLookup over C{records} and the list of names it was asked for."""
        records = records or {"sel._domainkey.example.com": KEY_TXT.encode()}
        asked = []

        def txt(name):
            asked.append(name)
            if name not in records:
                raise DnsNoRecord(name)
            return [records[name]]

        return aimx_dkim.KeyLookup(txt), asked

    def test_signed_fields_at_limit(self):
        """A signature listing 64 fields in h= is checked; one listing 65 fails
        before its key is looked up."""
        for count, outcome in ((aimx_dkim.MAX_SIGNED_FIELDS, "pass"),
                               (aimx_dkim.MAX_SIGNED_FIELDS + 1, "fail")):
            names = ["From"] + [f"X-F{i}" for i in range(count - 1)]
            header = aimx_dkim.sign(self.raw, private_key_pem=PRIVATE_PEM, selector="sel",
                                    domain="example.com", headers=names)
            lookup, asked = self.counted()
            [result] = aimx_dkim.verify(header + self.raw, lookup, lambda d: True)
            self.assertEqual(result.result, outcome, count)
            self.assertEqual(len(asked), 1 if outcome == "pass" else 0)
        self.assertEqual(result.why, "h= lists over 64 fields")

    def test_huge_signed_field_list(self):
        """A 1 MiB h= (about 150 000 names) fails without a lookup."""
        names = b":".join(b"x-%d" % i for i in range(150_000))
        field = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=sel; bh=AAAA; b=AAAA; h=from:"
        lookup, asked = self.counted()
        [result] = aimx_dkim.verify(field + names + b"\r\n" + self.raw, lookup, lambda d: True)
        self.assertEqual((result.result, result.why, asked),
                         ("fail", "h= lists over 64 fields", []))

    def test_many_signatures(self):
        """Of 999 signature fields (the header block's limit with From) 5 are
        evaluated, aligned ones first: 5 key lookups, the rest skipped."""
        header = aimx_dkim.sign(self.raw, private_key_pem=PRIVATE_PEM, selector="sel",
                                domain="example.com")
        junk = b"".join(
            b"DKIM-Signature: v=1; a=rsa-sha256; d=other%d.test; s=s; h=from; bh=AAAA; b=AAAA\r\n"
            % i for i in range(997))
        lookup, asked = self.counted()
        results = aimx_dkim.verify(junk + header + self.raw, lookup,
                                   lambda d: d == "example.com")
        self.assertEqual(len(results), 998)
        self.assertEqual(results[-1].result, "pass")
        self.assertEqual(len(asked), aimx_dkim.MAX_SIGNATURES)
        self.assertEqual(sum(r.result == "skipped" for r in results),
                         998 - aimx_dkim.MAX_SIGNATURES)
        self.assertEqual(aimx_dkim.verify(b"X: 1\r\n" + junk + header + self.raw,
                                          *self.counted()[:1], lambda d: False), ())

    def test_long_tag_lists(self):
        """A signature field of 100 000 tags is read (and fails to verify, its key
        looked up once); one repeating a tag is not a tag list and fails unread."""
        header = aimx_dkim.sign(self.raw, private_key_pem=PRIVATE_PEM, selector="sel",
                                domain="example.com")
        extra = b"".join(b" z%d=%d;" % (i, i) for i in range(100_000))
        padded = header.replace(b"v=1;", b"v=1;" + extra, 1)
        lookup, asked = self.counted()
        [result] = aimx_dkim.verify(padded + self.raw, lookup, lambda d: True)
        self.assertEqual((result.result, result.why, len(asked)),
                         ("fail", "did not verify", 1))
        repeated = header.replace(b"v=1;", b"v=1;" + b" z=1;" * 100_000, 1)
        lookup, asked = self.counted()
        [result] = aimx_dkim.verify(repeated + self.raw, lookup, lambda d: True)
        self.assertEqual((result.result, result.why, asked), ("fail", "not a tag list", []))

    def test_body_hashed_once_per_canonicalisation(self):
        """Several signatures with the same body canonicalisation and l= hash the
        body once between them."""
        header = aimx_dkim.sign(self.raw, private_key_pem=PRIVATE_PEM, selector="sel",
                                domain="example.com")
        calls = []
        original = core.body_hash
        self.patch(core, "body_hash", lambda *a, **k: calls.append(a[1:]) or original(*a, **k))
        lookup, _ = self.counted()
        results = aimx_dkim.verify(header * 4 + self.raw, lookup, lambda d: True)
        self.assertEqual([r.result for r in results], ["pass"] * 4)
        self.assertEqual(calls, [("relaxed", None)])
