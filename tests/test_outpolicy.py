"""Tests for aimx.core.outpolicy: the outbound policy and the SEND decision."""

from datetime import datetime, timedelta, timezone

from twisted.trial.unittest import SynchronousTestCase

from aimx.core.outpolicy import (
    HOLD,
    REFUSE,
    SEND,
    AttachedFile,
    OutboundPolicy,
    Root,
    SendDecision,
    attachment_refusal,
    decide,
    default_roots,
    effective,
    root_refusal,
    window_start,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def ago(**delta) -> datetime:
    return NOW - timedelta(**delta)


class EffectiveTests(SynchronousTestCase):
    def test_replace_not_merge(self):
        """A mailbox's key replaces the default's whole, lists included; others inherit."""
        default = OutboundPolicy(allow=["*@a.example"], deny=["x@a.example"], max_per_hour=5)
        own = OutboundPolicy(allow=["*@b.example"])
        self.assertEqual(effective(default, own),
                         OutboundPolicy(allow=["*@b.example"], deny=["x@a.example"],
                                        max_per_hour=5))
        self.assertEqual(effective(None, own), own)
        self.assertEqual(effective(default, None), default)
        self.assertIsNone(effective(None, None))


class DecideTests(SynchronousTestCase):
    def decide(self, policy, rcpts=("a@c.example",), **kw):
        return decide("support", policy, list(rcpts), now=NOW, **kw)

    def test_no_policy_sends(self):
        """Without a policy anything goes (attachments aside)."""
        self.assertEqual(self.decide(None, ["anyone@x.example"] * 500), SendDecision(SEND))

    def test_deny_wins_over_allow(self):
        """A denied recipient is refused even when an allow pattern matches it."""
        policy = OutboundPolicy(allow=["*@x.example"], deny=["BOB@x.example"])
        self.assertEqual(
            self.decide(policy, ["alice@x.example", "bob@X.example"]),
            SendDecision(REFUSE, "outbound.deny",
                         "bob@X.example is not allowed for mailbox support (outbound.deny)"))

    def test_allow(self):
        """Allow patterns (case-insensitive, *) admit; anyone else is refused; [] is nobody."""
        policy = OutboundPolicy(allow=["*@Customer.example", "alice@partner.example"])
        self.assertEqual(self.decide(policy, ["x@customer.EXAMPLE", "Alice@partner.example"]),
                         SendDecision(SEND))
        self.assertEqual(
            self.decide(policy, ["x@customer.example", "eve@partner.example"]),
            SendDecision(REFUSE, "outbound.allow",
                         "eve@partner.example is not allowed for mailbox support "
                         "(outbound.allow)"))
        self.assertEqual(self.decide(OutboundPolicy(allow=[])).rule, "outbound.allow")

    def test_max_recipients(self):
        """One past max_recipients is refused; exactly at it passes."""
        policy = OutboundPolicy(max_recipients=2)
        self.assertEqual(self.decide(policy, ["a@x.example", "b@x.example"]).verdict, SEND)
        self.assertEqual(
            self.decide(policy, ["a@x.example", "b@x.example", "c@x.example"]),
            SendDecision(REFUSE, "outbound.max_recipients",
                         "3 recipients; mailbox support may send to at most 2 per message "
                         "(outbound.max_recipients)"))

    def test_rate_windows(self):
        """The hour and day windows roll: sends older than the window do not count."""
        hourly = OutboundPolicy(max_per_hour=2)
        self.assertEqual(self.decide(hourly, recent=[ago(minutes=59), ago(minutes=61)]).verdict,
                         SEND)
        refused = self.decide(hourly, recent=[ago(minutes=10), ago(minutes=59)])
        self.assertEqual(refused, SendDecision(
            REFUSE, "outbound.max_per_hour",
            "mailbox support has sent 2 messages in the last hour, its limit; the next may "
            "go at 2026-03-01T12:01:00Z (outbound.max_per_hour)"))
        daily = OutboundPolicy(max_per_hour=10, max_per_day=3)
        day = [ago(hours=2), ago(hours=5), ago(hours=23, minutes=59)]
        self.assertEqual(self.decide(daily, recent=day).rule, "outbound.max_per_day")
        self.assertEqual(self.decide(daily, recent=day[:2] + [ago(hours=24)]).verdict, SEND)

    def test_approval(self):
        """always holds everything; new-recipients holds when any recipient is unknown."""
        self.assertEqual(self.decide(OutboundPolicy(approval="always")),
                         SendDecision(HOLD, "outbound.approval",
                                      "every message waits for approval"))
        policy = OutboundPolicy(approval="new-recipients")
        self.assertEqual(self.decide(policy, ["A@c.example"], known={"a@c.example"}).verdict,
                         SEND)
        self.assertEqual(
            self.decide(policy, ["a@c.example", "New@d.example"], known={"a@c.example"}),
            SendDecision(HOLD, "outbound.approval", "new recipients: New@d.example"))
        self.assertEqual(self.decide(OutboundPolicy(approval="never")).verdict, SEND)

    def test_refusal_before_hold(self):
        """A refused send is never held, and a rate past its limit is refused, not held."""
        policy = OutboundPolicy(approval="always", deny=["*"], max_per_hour=1)
        self.assertEqual(self.decide(policy).rule, "outbound.deny")
        policy = OutboundPolicy(approval="always", max_per_hour=1)
        self.assertEqual(self.decide(policy, recent=[ago(minutes=1)]).rule,
                         "outbound.max_per_hour")

    def test_raw_attachments(self):
        """Raw attachment parts are refused under a policy unless allow_raw_attachments."""
        self.assertEqual(self.decide(OutboundPolicy(), raw_attachments=True).rule,
                         "outbound.allow_raw_attachments")
        self.assertEqual(
            self.decide(OutboundPolicy(allow_raw_attachments=True), raw_attachments=True).verdict,
            SEND)
        self.assertEqual(self.decide(None, raw_attachments=True).verdict, SEND)

    def test_files_checked_without_policy(self):
        """Attached files are checked against the roots with or without a policy."""
        file = AttachedFile("/etc/passwd", "/etc/passwd", True)
        for policy in (None, OutboundPolicy()):
            decision = self.decide(policy, files=[file], roots=[Root("/home/u", "/home/u")])
            self.assertEqual((decision.verdict, decision.rule),
                             (REFUSE, "outbound.attachment_roots"))

    def test_window_start(self):
        """The sends decide needs reach back a day, an hour, or not at all."""
        self.assertIsNone(window_start(NOW, None))
        self.assertIsNone(window_start(NOW, OutboundPolicy(max_recipients=3)))
        self.assertEqual(window_start(NOW, OutboundPolicy(max_per_hour=3)), ago(hours=1))
        self.assertEqual(window_start(NOW, OutboundPolicy(max_per_hour=3, max_per_day=9)),
                         ago(days=1))


class AttachmentTests(SynchronousTestCase):
    def refusal(self, given, real, regular=True, roots=("/home/u",), home="/home/u"):
        """Each root given as a path is its own real path; a pair is C{(path, real)}."""
        roots = [Root(*r) if isinstance(r, tuple) else Root(r, r) for r in roots]
        return attachment_refusal("support", AttachedFile(given, real, regular), roots, home)

    def test_inside_root(self):
        """A regular file anywhere below a root passes."""
        self.assertIsNone(self.refusal("/home/u/report.pdf", "/home/u/report.pdf"))
        self.assertIsNone(self.refusal("/x", "/srv/out/a/b.txt", roots=("/home/u", "/srv/out/")))

    def test_dot_files_and_dirs(self):
        """~/.ssh/id_rsa and ~/notes/.env are refused, naming the hidden component."""
        self.assertEqual(
            self.refusal("/home/u/.ssh/id_rsa", "/home/u/.ssh/id_rsa"),
            "attachment /home/u/.ssh/id_rsa is a dot-file or in a dot-directory (.ssh), which "
            "mailbox support never attaches (outbound.attachment_roots)")
        self.assertIn("(.env)", self.refusal("/home/u/notes/.env", "/home/u/notes/.env"))

    def test_outside_and_symlinks(self):
        """Outside every root is refused; a symlink is named with where it really leads."""
        self.assertEqual(
            self.refusal("/home/u/link", "/etc/shadow"),
            "attachment /home/u/link (really /etc/shadow) is outside the attachment roots of "
            "mailbox support (/home/u) (outbound.attachment_roots)")
        self.assertIn("outside", self.refusal("/home/u", "/home/u"))
        self.assertIn("outside", self.refusal("/home/user2/x", "/home/user2/x"))
        self.assertIn("(none)", self.refusal("/home/u/x", "/home/u/x", roots=()))
        self.assertEqual(default_roots(None), ())
        self.assertEqual(default_roots("/home/u"), ("/home/u",))

    def test_not_regular_or_gone(self):
        """A FIFO, device or directory is refused, and so is a file with no path left."""
        self.assertEqual(
            self.refusal("/dev/zero", "/dev/zero", regular=False),
            "attachment /dev/zero is not a regular file (outbound.attachment_roots)")
        self.assertIn("moved or deleted", self.refusal("/home/u/x", None))

    def test_root_through_a_symlink(self):
        """A root the agent re-pointed with a symlink (~/outbox -> ~/.ssh) is no root:
        a file there is refused naming the root, and so is one where the link used to lead."""
        swapped = [("/home/u/outbox", "/home/u/.ssh")]
        self.assertEqual(
            self.refusal("/home/u/outbox/id_rsa", "/home/u/.ssh/id_rsa", roots=swapped),
            "attachment /home/u/outbox/id_rsa (really /home/u/.ssh/id_rsa) is refused: "
            "attachment root /home/u/outbox is not a real path (it leads to /home/u/.ssh: a "
            "symbolic link is on the way), so it is no root (outbound.attachment_roots)")
        self.assertIn("attachment root /etc",
                      self.refusal("/etc/passwd", "/etc/passwd", roots=[("/etc", "/srv/etc")]))
        self.assertIn("outside", self.refusal("/srv/x", "/srv/x", roots=swapped))

    def test_root_in_a_dot_dir(self):
        """A root in a dot-directory below the owner's home is no root; elsewhere it is."""
        self.assertIn("attachment root /home/u/.ssh is in a dot-directory (.ssh) of the "
                      "owner's home", self.refusal("/home/u/.ssh/k", "/home/u/.ssh/k",
                                                   roots=("/home/u/.ssh",)))
        self.assertIn("(.config)", self.refusal("/home/u/.config/a/f", "/home/u/.config/a/f",
                                                roots=("/home/u/.config/a",)))
        self.assertIsNone(self.refusal("/srv/.out/f", "/srv/.out/f", roots=("/srv/.out",)))
        self.assertIsNone(self.refusal("/home/u/f", "/home/u/f", home=None))

    def test_root_refusal(self):
        """A root equal to its real path (trailing slash aside) outside dot-dirs is a root."""
        self.assertIsNone(root_refusal(Root("/home/u", "/home/u"), "/home/u"))
        self.assertIsNone(root_refusal(Root("/srv/out/", "/srv/out"), "/home/u"))
        self.assertIn("symbolic link", root_refusal(Root("/home/u", "/usr/home/u"), "/home/u"))
