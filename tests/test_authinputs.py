"""Tests for aimx.core.authinputs: Received IPs, the From fallback and SPF identity."""

from twisted.trial.unittest import SynchronousTestCase

from aimx.core.authinputs import (
    SpfIdentity,
    received_ip,
    spf_identity,
)
from aimx.testing import fakes


def message(*headers: str) -> bytes:
    """Only C{headers}, and a body naming an address (never read as one)."""
    return fakes.message("body [198.51.100.99]\r\n", sender=None, to=None, subject=None,
                         message_id=None, headers=headers)


class ReceivedIpTests(SynchronousTestCase):
    def test_case_3_shapes(self):
        """Every Received shape of acceptance case 3."""
        cases = [
            ("Received: from x ([127.0.0.1]) by y", None),
            ("Received: from x ([2001:db8::1]) by y", "2001:db8::1"),
            ("Received: from x (HELO mail.legit 1.2.3.4 via x) by y", None),
            ("Received: from host-1.2.3.4.example.com by y", None),
            ("Received: from x (mail-sor-f41.google.com. [209.85.220.41]) by y",
             "209.85.220.41"),
            ("Received: from unknown (unknown [198.51.100.7]) by y", "198.51.100.7"),
        ]
        for header, ip in cases:
            self.assertEqual(received_ip(message(header)), ip, header)

    def test_folded(self):
        """A folded Received header is unfolded before scanning."""
        raw = message("Received: from x (mail.example.com", "\t[203.0.113.50]) by y")
        self.assertEqual(received_ip(raw), "203.0.113.50")

    def test_first_header_wins(self):
        """The topmost Received header with a usable IP wins; loopback ones are skipped."""
        raw = message("Received: from a ([127.0.0.1]) by b",
                      "Received: from c ([192.0.2.1]) by d",
                      "Received: from e ([192.0.2.2]) by f")
        self.assertEqual(received_ip(raw), "192.0.2.1")

    def test_first_group_in_header(self):
        """Within one header the groups are tried in order; non-IP groups are skipped."""
        raw = message("Received: from [mail] ([::1] [192.0.2.9]) by x ([192.0.2.10])")
        self.assertEqual(received_ip(raw), "192.0.2.9")

    def test_spellings(self):
        """Only 'Received:' and 'received:' count, not other case forms or X-Received."""
        for name in ("RECEIVED:", "X-Received:", "Received :"):
            self.assertIsNone(received_ip(message(name + " from x ([192.0.2.1])")), name)
        self.assertEqual(received_ip(message("received: from x ([192.0.2.1])")), "192.0.2.1")

    def test_stops_at_body(self):
        """Lines after the first empty line are not headers."""
        raw = b"Subject: x\n\nReceived: from x ([192.0.2.1])\n"
        self.assertIsNone(received_ip(raw))

    def test_non_utf8(self):
        """Non-UTF-8 header bytes do not stop the scan."""
        raw = b"Subject: \xff\xfe\r\nReceived: from x ([192.0.2.1])\r\n\r\n"
        self.assertEqual(received_ip(raw), "192.0.2.1")


class SpfIdentityTests(SynchronousTestCase):
    def test_envelope_wins(self):
        """Case 6: MAIL FROM is the identity, not the header From."""
        raw = message("From: alice@example.com")
        self.assertEqual(spf_identity(raw, peer_ip="192.0.2.1", mail_from="chua@uzyn.com",
                                      helo="mx.uzyn.com"),
                         SpfIdentity("192.0.2.1", "chua@uzyn.com", "uzyn.com"))

    def test_null_sender_uses_helo(self):
        """Case 5: MAIL FROM:<> uses postmaster@<helo>, not the header From."""
        raw = message("From: Alice <alice@example.com>")
        self.assertEqual(spf_identity(raw, peer_ip="192.0.2.1", mail_from="",
                                      helo="mail.example.com"),
                         SpfIdentity("192.0.2.1", "postmaster@mail.example.com",
                                     "mail.example.com"))

    def test_ingest_without_headers(self):
        """Case 2: ingest of a mail without Received/From has no IP and no sender."""
        self.assertEqual(spf_identity(message("Subject: x"), peer_ip="0.0.0.0",
                                      mail_from=None, helo=None),
                         SpfIdentity(None, None, None))

    def test_ingest_fallbacks(self):
        """Case 2: ingest takes the IP from Received and the sender from the parsed From."""
        raw = message("Received: from x (x [203.0.113.5])", "From: A <a@Example.com>")
        for peer in ("0.0.0.0", "::", None):
            self.assertEqual(spf_identity(raw, peer_ip=peer, mail_from=None, helo=None,
                                          header_from="a@Example.com"),
                             SpfIdentity("203.0.113.5", "a@Example.com", "example.com"))

    def test_peer_ip_wins(self):
        """A specified peer IP is used; IPv4-mapped IPv6 becomes IPv4."""
        raw = message("Received: from x (x [203.0.113.5])")
        self.assertEqual(spf_identity(raw, peer_ip="::ffff:192.0.2.7", mail_from="a@b.c",
                                      helo=None).ip, "192.0.2.7")
        self.assertEqual(spf_identity(raw, peer_ip="2001:db8::5", mail_from="a@b.c",
                                      helo=None).ip, "2001:db8::5")

    def test_sender_without_domain(self):
        """A sender with no text after '@' (or no '@') has no domain."""
        for sender in ("postmaster", "a@"):
            self.assertIsNone(spf_identity(b"", peer_ip="192.0.2.1", mail_from=sender,
                                           helo=None).domain)
