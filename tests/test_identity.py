"""Tests for L{aimx.core.identity}: the one address parser and the identity record."""

import random
from email.headerregistry import AddressHeader

from twisted.trial.unittest import SynchronousTestCase

from aimx.core import identity
from aimx.core.identity import MAX_ADDRESS_FIELD, Mailbox, from_headers, parse_address_list


def stdlib_addresses(value: str) -> list[tuple[str, str]] | None:
    """(local part, domain) of every mailbox as the standard library reads them, or None."""
    try:
        tree = AddressHeader.value_parser(value)
        return [(mb.local_part or "", mb.domain or "")
                for a in tree.addresses for mb in a.all_mailboxes]
    except Exception:  # the stdlib parser crashes on some hostile input
        return None


def stdlib_names(value: str) -> list[str] | None:
    try:
        tree = AddressHeader.value_parser(value)
        return [mb.display_name or "" for a in tree.addresses for mb in a.all_mailboxes]
    except Exception:
        return None


#: Hostile From values: (value, the trusted author's address or None, the problem).
HOSTILE_FROM = [
    ("boss@company.com", "boss@company.com", None),
    ("Boss <BOSS@Company.COM>", "boss@company.com", None),
    ('"Doe, John" <j@company.com>', "j@company.com", None),
    ("John Q. Public <j@company.com>", "j@company.com", None),
    ("=?utf-8?b?PGJvc3NAY29tcGFueS5jb20+?= <eve@evil.com>", "eve@evil.com", None),
    ('"<boss@company.com>" <eve@evil.com>', "eve@evil.com", None),
    ('"<boss@company.com>"@evil.com', None, "quoted local part in From"),
    ('"boss"@company.com', None, "quoted local part in From"),
    ('"boss@company.com"@evil.com', None, "quoted local part in From"),
    ('"boss@company.com" @evil.com', None, "quoted local part in From"),
    ("boss(comment)@company.com", None, "From address is not a plain dot-atom"),
    ("boss @ company.com", None, "From address is not a plain dot-atom"),
    ("boss@[192.0.2.1]", None, "address literal in From"),
    ("=?utf-8?q?boss?=@company.com", None, "From could not be parsed"),
    ("boss@=?utf-8?q?company.com?=", None, "From could not be parsed"),
    ("Boss <@relay.example:boss@company.com>", None, "From address is not a plain dot-atom"),
    ("boss@company.com, eve@evil.com", None, "more than one address in From"),
    (", boss@company.com", "boss@company.com", None),
    ("eve@evil.com (<boss@company.com>)", "eve@evil.com", None),
    ("boss@company.com>", None, "From could not be parsed"),
    ("<boss@company.com", None, "From could not be parsed"),
    ("Team: boss@company.com;", None, "From is a group"),
    ("Team: boss@company.com, eve@evil.com;", None, "From is a group"),
    ("undisclosed-recipients:;", None, "From is a group"),
    ("", None, "no address in From"),
    ("Boss", None, "From could not be parsed"),
    ("boss@company.com\x00", None, "From could not be parsed"),
    ("a..b@company.com", None, "From address is not a plain dot-atom"),
    ("boss.@company.com", None, "From address is not a plain dot-atom"),
    (".boss@company.com", None, "From could not be parsed"),
    ("jörg@bücher.de", "jörg@bücher.de", None),
    ("Jörg <jörg@company.com>", "jörg@company.com", None),
    ("boss@company.com (Boss)", "boss@company.com", None),
    ("((((((((((((x)))))))))))) boss@company.com", "boss@company.com", None),
    ("(" * 17 + ")" * 17 + " boss@company.com", None, "From could not be parsed"),
    ("(" * 5000 + ")" * 5000 + " boss@company.com", None, "From could not be parsed"),
    ("(unterminated boss@company.com", None, "From could not be parsed"),
]


class HostileFromTests(SynchronousTestCase):
    """The author a trust decision may use, over a table of hostile From values."""

    def test_table(self):
        """Each value yields exactly the expected author or the expected problem."""
        for value, author, problem in HOSTILE_FROM:
            parsed = from_headers([("From", value)])
            self.assertEqual(parsed.problem(), problem, value)
            if problem is None:
                self.assertEqual(parsed.author.address, author, value)
            expected_domain = None if problem else author.rpartition("@")[2]
            self.assertEqual(parsed.author_domain if problem is None else None,
                             expected_domain, value)

    def test_author_is_what_the_stdlib_extracts(self):
        """Every trusted author of the table is the one mailbox the stdlib finds."""
        for value, author, problem in HOSTILE_FROM:
            if problem is None:
                found = stdlib_addresses(value)
                self.assertEqual([f"{l}@{d}".lower() for l, d in found], [author], value)


class ParseTests(SynchronousTestCase):
    """Address lists: mailboxes, groups, comments, problems."""

    def test_list(self):
        """Mailboxes in order, display names decoded."""
        parsed = parse_address_list(
            '"Doe, John" <j@x.example>, =?utf-8?q?J=C3=B6rg?= <jorg@y.example>, c@z.example')
        self.assertEqual(
            [(m.display_name, m.addr_spec) for m in parsed.mailboxes],
            [("Doe, John", "j@x.example"), ("Jörg", "jorg@y.example"), ("", "c@z.example")])
        self.assertEqual(parsed.problems, ())
        self.assertIsNone(parsed.single)

    def test_group_members(self):
        """A group's members are mailboxes of the list; the group is flagged."""
        parsed = parse_address_list("Team: a@x.example, b@y.example;, c@z.example")
        self.assertEqual([m.addr_spec for m in parsed.mailboxes],
                         ["a@x.example", "b@y.example", "c@z.example"])
        self.assertTrue(parsed.group)

    def test_comment_flag(self):
        """A comment anywhere is reported (SEND refuses them)."""
        self.assertTrue(parse_address_list("a@x.example (me)").comment)
        self.assertFalse(parse_address_list('"(not a comment)" <a@x.example>').comment)

    def test_broken_entry_skipped(self):
        """A broken entry is a problem; the entries around it are kept."""
        parsed = parse_address_list("a@x.example, <broken, b@y.example")
        self.assertEqual([m.addr_spec for m in parsed.mailboxes], ["a@x.example", "b@y.example"])
        self.assertEqual(len(parsed.problems), 1)

    def test_adjacent_encoded_words(self):
        """Adjacent encoded words join without the space between them (RFC 2047 §6.2)."""
        parsed = parse_address_list("=?utf-8?q?J=C3=B6?= =?utf-8?q?rg?= <j@x.example>")
        self.assertEqual(parsed.mailboxes[0].display_name, "Jörg")

    def test_controls_in_decoded_name(self):
        """A display name never carries control characters, whatever was encoded."""
        parsed = parse_address_list("=?utf-8?q?A=0D=0AX-Evil=3A_1?= <a@x.example>")
        self.assertEqual(parsed.mailboxes[0].display_name, "A X-Evil: 1")

    def test_too_long(self):
        """A field over the cap is not parsed at all."""
        parsed = parse_address_list("a@x.example, " * (MAX_ADDRESS_FIELD // 13 + 1))
        self.assertEqual(parsed.mailboxes, ())
        self.assertEqual(parsed.problems, (f"longer than {MAX_ADDRESS_FIELD} characters",))

    def test_unterminated_quote_or_literal_stops(self):
        """An unterminated quoted string or literal ends the field's reading at once
        (review: rescanning from each later quote was quadratic)."""
        for value in ('"' + '\\"' * 8190, "[" + "\\[" * 8190, "a@b, " + '"x' * 5000):
            parsed = parse_address_list(value)
            self.assertTrue(parsed.problems, value[:20])

    def test_literal_encoded_word_round_trips(self):
        """A display name that literally reads like an encoded word stays literal."""
        mailbox = Mailbox("=?utf-8?b?PGJvc3NAY29tcGFueS5jb20+?=", "a", "x.example")
        [back] = parse_address_list(mailbox.formatted()).mailboxes
        self.assertEqual(back.display_name, mailbox.display_name)

    def test_invalid_utf8_not_plain(self):
        """Bytes that were not UTF-8 (U+FFFD after decoding) make an address not plain."""
        ident = from_headers([("From", "boss\udcff@company.com")])
        self.assertEqual(ident.problem(), "From address is not a plain dot-atom")

    def test_deep_nesting_within_cap(self):
        """Deeply nested comments and long junk parse without recursion or error."""
        for value in ("(" * 8000 + ")" * 8000 + " a@x", "a@" * 8000, "<" * 16000, ":" * 16000,
                      '"' + '\\"' * 8000 + '"@x', "," * 16000 + "a@x"):
            parse_address_list(value)  # must not raise


class FormatTests(SynchronousTestCase):
    """Formatted addresses parse back to the same mailboxes."""

    def test_quoting(self):
        """Names with specials are quoted; plain names are not."""
        self.assertEqual(Mailbox("Doe, John", "j", "x").formatted(), '"Doe, John" <j@x>')
        self.assertEqual(Mailbox("Alice", "a", "x").formatted(), "Alice <a@x>")
        self.assertEqual(Mailbox("John Q. Public", "j", "x").formatted(),
                         '"John Q. Public" <j@x>')
        self.assertEqual(Mailbox("", "a b", "x").formatted(), '"a b"@x')
        self.assertEqual(Mailbox('Say "hi"', "a", "x").formatted(), '"Say \\"hi\\"" <a@x>')

    def test_wire(self):
        """The wire form is 7-bit: a non-ASCII name becomes encoded words."""
        wire = Mailbox("Jörg", "j", "x.example").wire()
        self.assertTrue(wire.isascii())
        self.assertEqual(parse_address_list(wire).mailboxes[0].display_name, "Jörg")

    def test_round_trip_random(self):
        """Random mailboxes format to text that parses back to them (and the stdlib agrees)."""
        rng = random.Random(5322)
        name_chars = ['a', 'B', ' ', ',', '"', '\\', '<', '>', '@', ':', ';', '.', '(', ')',
                      '[', ']', 'é', '=?', '?=', 'ß', '\t', 'x']
        local_chars = ['a', 'b', '.', '+', '-', '_', ' ', '"', '\\', '@', ',', 'é', '(']
        for _ in range(3000):
            name = "".join(rng.choice(name_chars) for _ in range(rng.randint(0, 8))).strip()
            local = "".join(rng.choice(local_chars) for _ in range(rng.randint(1, 8)))
            mailbox = Mailbox(name, local, "x.example")
            text = mailbox.formatted()
            parsed = parse_address_list(text)
            self.assertEqual(parsed.problems, (), text)
            [back] = parsed.mailboxes
            self.assertEqual((back.display_name, back.local_part, back.domain),
                             (name, local, "x.example"), text)
            self.assertEqual(stdlib_addresses(text), [(local, "x.example")], text)


class StdlibAgreementTests(SynchronousTestCase):
    """Where this parser reads a field cleanly, the stdlib reads the same mailboxes."""

    PIECES = ['a', 'b', 'x', '.', '@', ',', ';', ':', '<', '>', '"', '\\', '(', ')', '[',
              ']', ' ', '\t', '=?utf-8?q?bo=C3=A9?=', 'é', '!', 'Boss', 'company.com',
              'boss@company.com', '<boss@company.com>', '"<boss@company.com>"',
              '=?utf-8?b?PGJvc3NAY29tcGFueS5jb20+?=']

    def test_random_fields(self):
        """Random fields: our clean result equals the stdlib's (display names too)."""
        rng = random.Random(6532)
        clean = 0
        for _ in range(20000):
            value = "".join(rng.choice(self.PIECES) for _ in range(rng.randint(1, 12)))
            ours = parse_address_list(value)
            if ours.problems or ours.group:
                continue
            clean += 1
            self.assertEqual([(m.local_part, m.domain) for m in ours.mailboxes],
                             stdlib_addresses(value), value)
            names = stdlib_names(value)
            if names is not None and "=?" not in value:
                self.assertEqual([m.display_name for m in ours.mailboxes], names, value)
        self.assertGreater(clean, 300)

    def test_property_trust_dmarc_stdlib(self):
        """For random From values, the address trust would match on, the domain DMARC
        aligns on and the stdlib's single extracted address are one and the same."""
        rng = random.Random(7489)
        trusted = 0
        for _ in range(20000):
            value = "".join(rng.choice(self.PIECES) for _ in range(rng.randint(1, 10)))
            ident = from_headers([("From", value)])
            if ident.problem() is not None:
                continue
            trusted += 1
            [(local, domain)] = stdlib_addresses(value)
            self.assertEqual(ident.author.address, f"{local}@{domain}".lower(), value)
            self.assertEqual(ident.author_domain, domain.lower(), value)
        self.assertGreater(trusted, 100)


class IdentityTests(SynchronousTestCase):
    """The identity record of a message."""

    def test_fields(self):
        """Every identity field is read and decoded."""
        ident = from_headers([
            ("From", "Alice <alice@example.com>"),
            ("Reply-To", "help@example.com"),
            ("To", "bob@test.local, carol@test.local"),
            ("Subject", "=?utf-8?q?Gr=C3=BC=C3=9Fe?="),
            ("Date", "Thu, 01 Jan 2025 12:00:00 +0100"),
            ("Message-ID", "<m1@example.com>"),
            ("In-Reply-To", "<p1@example.com> <p2@example.com>"),
            ("References", "<r1@x> <r2@x>"),
        ])
        self.assertEqual(ident.author.address, "alice@example.com")
        self.assertEqual(ident.reply_to.formatted(), "help@example.com")
        self.assertEqual(ident.to.formatted(), "bob@test.local, carol@test.local")
        self.assertEqual(ident.subject, "Grüße")
        self.assertEqual(ident.date, "2025-01-01T12:00:00+01:00")
        self.assertEqual(ident.message_id, "m1@example.com")
        self.assertEqual(ident.in_reply_to, "p2@example.com")
        self.assertEqual(ident.references, ("r1@x", "r2@x"))
        self.assertEqual(ident.repeated, ())
        self.assertIsNone(ident.problem())

    def test_bottom_instance_wins(self):
        """A repeated field is read from its bottom instance and recorded."""
        ident = from_headers([
            ("Subject", "Wire the money"),
            ("From", "eve@evil.com"),
            ("From", "boss@company.com"),
            ("Subject", "Lunch?"),
            ("Subject", "Lunch!"),
        ])
        self.assertEqual(ident.subject, "Lunch!")
        self.assertEqual(ident.author.address, "boss@company.com")
        self.assertEqual(ident.repeated, (("from", 2), ("subject", 3)))
        self.assertEqual(ident.problem(), "two From headers")

    def test_repeated_names(self):
        """Each identity and top-level MIME field counts; others do not."""
        for name in identity.FIELDS + identity.MIME_FIELDS:
            ident = from_headers([("From", "a@x.example"), (name.upper(), "v"), (name, "v")])
            self.assertIn("headers", ident.problem(), name)
        ident = from_headers([("From", "a@x.example"), ("Received", "a"), ("Received", "b")])
        self.assertIsNone(ident.problem())

    def test_problem_reason_words(self):
        """The reason names the field and how often it occurs."""
        ident = from_headers([("From", "a@x.example")] + [("Subject", "s")] * 2)
        self.assertEqual(ident.problem(), "two Subject headers")
        ident = from_headers([("From", "a@x.example")] + [("To", "s@x")] * 7)
        self.assertEqual(ident.problem(), "7 To headers")

    def test_sender(self):
        """A Sender in the From domain is fine; another domain or garbage is not."""
        base = [("From", "boss@company.com")]
        self.assertIsNone(from_headers(base + [("Sender", "sec@company.com")]).problem())
        self.assertEqual(from_headers(base + [("Sender", "eve@evil.com")]).problem(),
                         "Sender domain differs from From")
        self.assertEqual(from_headers(base + [("Sender", "a@x, b@y")]).problem(),
                         "Sender could not be parsed")

    def test_eight_bit_header(self):
        """Raw UTF-8 in a field (surrogate-escaped by compat32) is read as UTF-8."""
        raw = "Jörg <jörg@bücher.de>".encode().decode("ascii", "surrogateescape")
        ident = from_headers([("From", raw)])
        self.assertEqual(ident.author.formatted(), "Jörg <jörg@bücher.de>")

    def test_folded(self):
        """A folded field is unfolded before it is parsed."""
        ident = from_headers([("To", "a@x.example,\r\n\tb@y.example")])
        self.assertEqual(ident.to.formatted(), "a@x.example, b@y.example")
