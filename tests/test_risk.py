"""Tests for aimx.core.risk: when a stored copy is C{risk = "review"}, and why."""

from twisted.trial.unittest import SynchronousTestCase

from aimx.core import risk
from aimx.core.guards import Hit
from aimx.core.identity import from_headers


def reasons(from_="Bob <bob@x.example>", reply_to=None, trusted="true", hits=(), hidden=0):
    items = [("From", from_)] + ([("Reply-To", reply_to)] if reply_to else [])
    return risk.reasons(hits=hits, hidden_chars=hidden, identity=from_headers(items),
                        trusted=trusted)


class ReasonTests(SynchronousTestCase):
    def test_plain_message(self):
        """An ordinary message has no reason and no risk."""
        self.assertEqual(reasons(), ())
        self.assertIsNone(risk.level(()))

    def test_guards_and_hidden_text(self):
        """Each matched guard, then hidden text, in that order."""
        found = reasons(hits=[Hit("a", "body"), Hit("b", "subject")], hidden=3)
        self.assertEqual(found, ("guard:a", "guard:b", "hidden_text"))
        self.assertEqual(risk.level(found), "review")

    def test_display_name_address(self):
        """A display name holding another address is a reason; its own address, a name
        with an @ that is not an address, or none, are not."""
        for from_ in ('"ceo@bank.example" <x@attacker.example>',
                      '"Support (help@Bank.example)" <x@attacker.example>',
                      "=?utf-8?q?pay=40bank=2Eexample?= <x@attacker.example>"):
            self.assertEqual(reasons(from_=from_), ("display_name_address",), from_)
        for from_ in ('"bob@x.example" <bob@X.example>', '"Bob @ home" <bob@x.example>',
                      "bob@x.example", '"me@localhost" <bob@x.example>'):
            self.assertEqual(reasons(from_=from_), (), from_)

    def test_reply_to_domain(self):
        """Reply-To in another domain counts for a trusted sender only; the same domain
        (any case) never."""
        self.assertEqual(reasons(reply_to="pay@elsewhere.example"), ("reply_to_domain",))
        self.assertEqual(reasons(reply_to="pay@elsewhere.example", trusted="false"), ())
        self.assertEqual(reasons(reply_to="desk@X.EXAMPLE"), ())
        self.assertEqual(reasons(reply_to="desk@x.example, a@y.example"), ("reply_to_domain",))
