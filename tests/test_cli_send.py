"""`aimx send`'s parser and dispatch (docs/cli.md); the verb against canned daemons
on a real UNIX socket is tested in tests.integration.test_cli_send.
"""

import argparse
import io
import sys

from twisted.trial.unittest import SynchronousTestCase

import aimx.cli
from aimx.cli import arguments, send

FROM = "alice@agent.example.com"
ARGV = ["send", "--from", FROM, "--to", "r@example.com", "--subject", "x", "--body", "y"]


def parse(argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="verb")
    arguments.send(sub, argparse.ArgumentParser(add_help=False))
    return parser.parse_args(argv)


class SendParserTests(SynchronousTestCase):
    """Through L{aimx.cli.main}, with L{aimx.cli.session.run_blocking} replaced by a recorder."""

    def setUp(self):
        self.runs = []
        self.patch(aimx.cli.session, "run_blocking",
                   lambda verb, args: self.runs.append(verb) or 0)
        self.err = io.StringIO()
        self.patch(sys, "stderr", self.err)

    def test_dispatch(self):
        """`aimx send` runs the send verb."""
        self.assertEqual(aimx.cli.main(ARGV + ["--data-dir", "/tmp/x"]), 0)
        self.assertEqual(self.runs, [send.send])

    def test_text_only_with_html_body(self):
        """--text-only with --html-body is a usage error naming both; no verb runs (case 8)."""
        e = self.assertRaises(SystemExit, aimx.cli.main,
                              ARGV + ["--text-only", "--html-body", "<p>x</p>"])
        self.assertEqual(e.code, 2)
        self.assertIn("--text-only", self.err.getvalue())
        self.assertIn("--html-body", self.err.getvalue())
        self.assertEqual(self.runs, [])

    def test_in_reply_to_help(self):
        """`send --help` shows --in-reply-to; the old --reply-to is accepted but not shown."""
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        e = self.assertRaises(SystemExit, aimx.cli.main, ["send", "--help"])
        self.assertEqual(e.code, 0)
        self.assertIn("--in-reply-to MSG_ID", out.getvalue())
        self.assertNotIn("--reply-to", out.getvalue())
        self.assertIn("(used with --in-reply-to)", out.getvalue())
        for flag in ("--in-reply-to", "--reply-to"):
            args = parse(ARGV + [flag, "<x@y>"])
            self.assertEqual(args.in_reply_to, "<x@y>")

    def test_required_flags(self):
        """--to is required."""
        e = self.assertRaises(SystemExit, aimx.cli.main, ARGV[:3] + ARGV[5:])
        self.assertEqual(e.code, 2)
        self.assertIn("--to", self.err.getvalue())
        self.assertEqual(self.runs, [])
