"""Tests for aimx.core.delivery: outbound result classification and aggregation."""

from twisted.trial.unittest import SynchronousTestCase

from aimx.core.delivery import (
    DEFERRED,
    DELIVERED,
    FAILED,
    Lookup,
    Plan,
    RcptResult,
    Route,
    address_error,
    group_by_domain,
    held_back,
    host_results,
    local_result,
    needs_addresses,
    overall,
    reply_outcome,
    route_for,
    settle,
    split_local,
    summary,
)
from aimx.errors import SmtpStatus


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


NXDOMAIN = Lookup(nxdomain=True)
NODATA = Lookup()
TEMP = Lookup(error="x.example MX: timed out")
RCPTS = ("a@x.example", "b@x.example")


class RouteTests(SynchronousTestCase):
    """The route of one domain from its MX and address lookups (RFC 5321 §5.1, RFC 7505)."""

    def test_mx_hosts_in_preference_order(self):
        """MX records give their hosts, lowest preference first, final dots dropped."""
        mx = Lookup(records=((20, "b.mx.example."), (10, "a.mx.example")))
        self.assertFalse(needs_addresses(mx))
        self.assertEqual(route_for("x.example", RCPTS, mx),
                         Route("x.example", RCPTS, hosts=("a.mx.example", "b.mx.example")))

    def test_null_mx(self):
        """A single MX of preference 0 and exchange "." refuses mail: failed, 556 5.1.10."""
        for exchange in (".", ""):
            mx = Lookup(records=((0, exchange),))
            self.assertFalse(needs_addresses(mx))
            got = route_for("x.example", RCPTS, mx)
            self.assertEqual(got, Route(
                "x.example", RCPTS,
                error="556 5.1.10 x.example does not accept mail (null MX, RFC 7505)",
                missing=True))

    def test_null_mx_loosely_published(self):
        """MX records that all point at "." (any preference) mean the same; a "." among
        real hosts is skipped."""
        got = route_for("x.example", RCPTS, Lookup(records=((10, "."), (20, "."))))
        self.assertTrue(got.missing)
        self.assertIn("null MX", got.error)
        mixed = route_for("x.example", RCPTS, Lookup(records=((0, "."), (10, "mx.example"))))
        self.assertEqual(mixed.hosts, ("mx.example",))

    def test_nxdomain(self):
        """NXDOMAIN on the MX query: the domain does not exist, no address lookup, failed."""
        self.assertFalse(needs_addresses(NXDOMAIN))
        self.assertEqual(route_for("x.example", RCPTS, NXDOMAIN), Route(
            "x.example", RCPTS, error="550 5.1.2 x.example: no such domain", missing=True))

    def test_implicit_mx(self):
        """No MX (or a failed MX lookup) and an A or AAAA record: the domain itself."""
        for mx in (NODATA, TEMP):
            self.assertTrue(needs_addresses(mx))
            for addresses in ([Lookup(records=("192.0.2.1",))],
                              [NODATA, Lookup(records=("2001:db8::1",))],
                              [TEMP, Lookup(records=("2001:db8::1",))]):
                self.assertEqual(route_for("x.example", RCPTS, mx, addresses),
                                 Route("x.example", RCPTS, hosts=("x.example",)))

    def test_no_mail_server(self):
        """Neither MX nor A nor AAAA (NOERROR, empty answers) is permanent (RFC 5321 §5.1)."""
        got = route_for("x.example", RCPTS, NODATA, [NODATA, NODATA])
        self.assertEqual(got, Route(
            "x.example", RCPTS, missing=True,
            error="550 5.1.2 No mail server found for domain x.example "
                  "(no MX, A or AAAA record)"))

    def test_nxdomain_on_address_lookup(self):
        """No MX and then NXDOMAIN for the addresses: no such domain."""
        got = route_for("x.example", RCPTS, NODATA, [NXDOMAIN])
        self.assertEqual((got.error, got.missing),
                         ("550 5.1.2 x.example: no such domain", True))

    def test_temporary_wins(self):
        """Any temporary failure on the way makes the route deferred, never missing."""
        for mx, addresses in [(TEMP, [NODATA, NODATA]), (NODATA, [TEMP, NODATA]),
                              (NODATA, [NODATA, TEMP]), (TEMP, [NXDOMAIN])]:
            got = route_for("x.example", RCPTS, mx, addresses)
            self.assertEqual((got.hosts, got.missing), ((), False))
            self.assertTrue(got.error.startswith("DNS failure for x.example: "), got.error)

    def test_lookup_validated(self):
        """A lookup is an answer, NXDOMAIN or a temporary error, never two at once."""
        self.assertRaises(ValueError, Lookup, records=("192.0.2.1",), nxdomain=True)
        self.assertRaises(ValueError, Lookup, nxdomain=True, error="x")


class HeldBackTests(SynchronousTestCase):
    def test_remote_part_held_back(self):
        """A domain that cannot receive mail stops the remote part: its recipients fail,
        the others are deferred and told why, invalid ones keep their refusal."""
        gone = Route("gone.example", ("a@gone.example",), missing=True,
                     error="550 5.1.2 gone.example: no such domain")
        temp = Route("temp.example", ("b@temp.example",), error="DNS failure for temp.example: x")
        ok = Route("ok.example", ("c@ok.example", "d@ok.example"), hosts=("mx.ok.example",))
        bad = RcptResult("bad", FAILED, "Invalid recipient address 'bad': expected ...")
        plan = Plan(("c@ok.example", "a@gone.example", "bad", "b@temp.example",
                     "d@ok.example"), (ok, gone, temp), (bad,))
        held = "Not sent because gone.example cannot receive mail; retry without its recipients"
        self.assertEqual(held_back(plan), [
            RcptResult("c@ok.example", DEFERRED, held),
            RcptResult("a@gone.example", FAILED, "550 5.1.2 gone.example: no such domain"),
            bad,
            RcptResult("b@temp.example", DEFERRED, "DNS failure for temp.example: x"),
            RcptResult("d@ok.example", DEFERRED, held),
        ])

    def test_several_domains_named(self):
        """Every domain that cannot receive mail is named."""
        plan = Plan(("a@one.example", "b@two.example", "c@ok.example"), (
            Route("one.example", ("a@one.example",), missing=True, error="e1"),
            Route("two.example", ("b@two.example",), missing=True, error="e2"),
            Route("ok.example", ("c@ok.example",), hosts=("mx",)),
        ), ())
        self.assertEqual(held_back(plan)[2].details,
                         "Not sent because one.example, two.example cannot receive mail; "
                         "retry without their recipients")


class LocalTests(SynchronousTestCase):
    def test_split_local(self):
        """Recipients in the configured domain (ASCII case aside) are local, in order."""
        local, remote = split_local(
            ["a@Test.Local", "b@example.com", "c@test.local", "d@sub.test.local",
             "e@test.local.example", "f@test.loca\u212a"], "TEST.local")
        self.assertEqual(local, ["a@Test.Local", "c@test.local"])
        self.assertEqual(remote, ["b@example.com", "d@sub.test.local", "e@test.local.example",
                                  "f@test.loca\u212a"])

    def test_local_result(self):
        """The inbound chain's reply decides: 2xx delivered, 4xx deferred, 5xx failed;
        the details are the reply itself."""
        cases = [
            (SmtpStatus(250, "2.0.0", "OK message accepted"), DELIVERED,
             "250 2.0.0 OK message accepted"),
            (SmtpStatus(451, "4.4.3", "Temporary DNS failure verifying the sender; please retry"),
             DEFERRED, "451 4.4.3 Temporary DNS failure verifying the sender; please retry"),
            (SmtpStatus(550, "5.1.1", "<x@d>: Recipient address rejected: User unknown"),
             FAILED, "550 5.1.1 <x@d>: Recipient address rejected: User unknown"),
        ]
        for status, outcome, details in cases:
            self.assertEqual(local_result("x@d", status), RcptResult("x@d", outcome, details))
