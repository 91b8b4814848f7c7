"""Tests for aimx.core.delivery: outbound result classification and aggregation."""

from twisted.trial.unittest import SynchronousTestCase

from aimx.core.delivery import (
    DEFERRED,
    DELIVERED,
    FAILED,
    Plan,
    RcptResult,
    Route,
    address_error,
    group_by_domain,
    host_results,
    overall,
    reply_outcome,
    settle,
    summary,
)


def results(*statuses):
    return [RcptResult(f"r{i}@x.com", status, "d") for i, status in enumerate(statuses)]


class OverallTests(SynchronousTestCase):
    def test_uniform(self):
        """All recipients with one status give that status."""
        for status in (DELIVERED, DEFERRED, FAILED):
            self.assertEqual(overall(results(status, status)), status)

    def test_mixed_is_partial(self):
        """Any mix is partial (README "Partial sends")."""
        for mix in [(DELIVERED, FAILED), (DELIVERED, DEFERRED), (FAILED, DEFERRED),
                    (DELIVERED, FAILED, DEFERRED)]:
            self.assertEqual(overall(results(*mix)), "partial")

    def test_summary(self):
        """The summary is the lone error, or every undelivered recipient with its error."""
        one = [RcptResult("a@x", DELIVERED, "ok"), RcptResult("b@x", FAILED, "550 no")]
        self.assertEqual(summary(one), "550 no")
        two = one + [RcptResult("c@y", DEFERRED, "451 later")]
        self.assertEqual(summary(two), "b@x: 550 no; c@y: 451 later")
        self.assertEqual(summary(one[:1]), "")


class AddressTests(SynchronousTestCase):
    def test_valid(self):
        """Dot-atom local parts and host names are accepted."""
        for address in ["bob@example.com", "a.b+tag@x.co.uk", "o'neil@mx_1.example",
                        "x@localhost", "!#$%&'*+/=?^_`{|}~-@a-b.c"]:
            self.assertIsNone(address_error(address), address)

    def test_invalid(self):
        """Missing parts, spaces, brackets, non-ASCII and bad labels are refused."""
        for address, words in [
            ("no-at-sign", "local-part@domain"),
            ("@example.com", "local-part@domain"),
            ("bob@", "local-part@domain"),
            ("bob smith@example.com", "local part"),
            ("<bob>@example.com", "local part"),
            ('"q"@example.com', "local part"),
            ("bob@exa mple.com", "invalid domain"),
            ("bob@-x.com", "invalid domain"),
            ("bob@x..com", "invalid domain"),
            ("bob@[192.0.2.1]", "invalid domain"),
            ("bob@bücher.de", "SMTPUTF8"),
        ]:
            self.assertIn(words, address_error(address), address)

    def test_group_by_domain(self):
        """Grouped by lowercased domain, first-seen order, exact duplicates dropped."""
        self.assertEqual(
            group_by_domain(["a@X.com", "b@y.com", "c@x.COM", "a@X.com", "d@y.com"]),
            {"x.com": ["a@X.com", "c@x.COM"], "y.com": ["b@y.com", "d@y.com"]},
        )

    def test_plan_missing(self):
        """Plan.missing lists the domains without any mail server, with the reason."""
        gone = Route("gone.example", ("a@gone.example",), error="No mail server", missing=True)
        temp = Route("temp.example", ("b@temp.example",), error="DNS failure")
        plan = Plan(("a@gone.example", "b@temp.example"), (gone, temp), ())
        self.assertEqual(plan.missing, [("gone.example", "No mail server")])


class ClassifyTests(SynchronousTestCase):
    def test_reply_outcome(self):
        """2xx delivered, 5xx failed as "Rejected by", anything else deferred."""
        self.assertEqual(reply_outcome("mx", 250, "2.0.0 ok"), (DELIVERED, "mx: 250 2.0.0 ok"))
        self.assertEqual(reply_outcome("mx", 550, "5.1.1 no"),
                         (FAILED, "Rejected by mx: 550 5.1.1 no"))
        self.assertEqual(reply_outcome("mx", 451, "later"), (DEFERRED, "mx: 451 later"))
        self.assertEqual(reply_outcome("mx", 354, "go on"), (DEFERRED, "mx: 354 go on"))

    def test_rcpt_reply_wins_over_transaction(self):
        """A refused RCPT keeps its own reply; the others get the transaction's outcome."""
        got = host_results("mx", ["a@x", "b@x", "c@x"],
                           {"a@x": (550, "no"), "b@x": (250, "ok")},
                           (DEFERRED, "Connection timed out to mx"))
        self.assertEqual(got, [
            RcptResult("a@x", FAILED, "Rejected by mx: 550 no"),
            RcptResult("b@x", DEFERRED, "Connection timed out to mx"),
            RcptResult("c@x", DEFERRED, "Connection timed out to mx"),
        ])

    def test_gotcha13_no_recipients_accepted(self):
        """Every RCPT refused: each is classified by its own code, not the generic failure."""
        got = host_results("mx", ["a@x", "b@x"], {"a@x": (550, "no"), "b@x": (451, "later")},
                           (FAILED, "Rejected by mx: 550 No recipients accepted"))
        self.assertEqual([r.status for r in got], [FAILED, DEFERRED])

    def test_settle_delivered(self):
        """A recipient accepted by any host is delivered with that host's reply."""
        tries = [RcptResult("a@x", DEFERRED, "mx1: 451 later"),
                 RcptResult("a@x", DELIVERED, "mx2: 250 ok")]
        self.assertEqual(settle("x", "a@x", tries), tries[1])

    def test_settle_permanent_if_any(self):
        """All hosts failed: failed if any refusal was permanent, each host named."""
        tries = [RcptResult("a@x", DEFERRED, "mx1: 451 later"),
                 RcptResult("a@x", FAILED, "Rejected by mx2: 550 no")]
        self.assertEqual(settle("x.com", "a@x", tries), RcptResult(
            "a@x", FAILED,
            "All MX servers for x.com unreachable: mx1: 451 later; Rejected by mx2: 550 no"))

    def test_settle_all_temporary(self):
        """All hosts failed temporarily: deferred."""
        tries = [RcptResult("a@x", DEFERRED, "mx1: 451 later"),
                 RcptResult("a@x", DEFERRED, "Connection timed out to mx2")]
        result = settle("x.com", "a@x", tries)
        self.assertEqual(result.status, DEFERRED)
        self.assertEqual(result.details, "All MX servers for x.com unreachable: "
                         "mx1: 451 later; Connection timed out to mx2")

    def test_status_validated(self):
        """RcptResult refuses an unknown status."""
        self.assertRaises(ValueError, RcptResult, "a@x", "partial", "")
