"""``aimx audit``, L3: read the audit log through the daemon (docs/guardrails.md, "Audit").

Root reads every record; anyone else the records of the mailboxes it owns.  One
line per record, oldest first (C{--json}: the records as one JSON array).
"""

import argparse

from aimx.cli import session
from aimx.cli.session import CliError
from aimx.cli.term import printed_plainly
from aimx.control.commands import AuditRead
from aimx.core import audit
from aimx.errors import DaemonNotRunning


def add_parser(sub, common) -> None:
    """Register C{audit} on the top-level subparsers."""
    parser = sub.add_parser("audit", parents=[common], help=argparse.SUPPRESS, prog="aimx audit")
    parser.add_argument("--mailbox", help="only this mailbox's records")
    parser.add_argument("--since", help="from this RFC 3339 date or date-time on")
    parser.add_argument("--event", choices=audit.EVENTS, help="only records of this kind")
    parser.add_argument("--limit", type=int, default=1000,
                        help="the newest this many records (default 1000, at most 10000)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def main(args) -> int:
    return session.run(show, args)


async def show(args, s: session.Session) -> int:
    if not 0 <= args.limit <= 10_000:
        raise CliError(f"--limit {args.limit}: expected a whole number from 0 to 10000")
    try:
        reply = await s.call(AuditRead, mailbox=args.mailbox, since=args.since,
                             event=args.event, limit=args.limit)
    except DaemonNotRunning as e:
        raise CliError(s.not_running(e), exit_code=2) from None
    records = reply["records"]
    if not printed_plainly(s.term, records, as_json=args.json, empty="No audit records."):
        for record in records:
            s.term.say(audit.summary(record))
    return 0
