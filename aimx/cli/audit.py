"""``aimx audit``, L3: read the audit log through the daemon (docs/guardrails.md, "Audit").

Root reads every record; anyone else the records of the mailboxes it owns.  One
line per record, oldest first (C{--json}: the records as one JSON array).
"""

from aimx.cli import session
from aimx.cli.term import printed_plainly
from aimx.control.wire import AuditRead
from aimx.core import audit


def main(args) -> int:
    return session.run_blocking(show, args)


async def show(args, s: session.Session) -> int:
    reply = await s.call_running(AuditRead, mailbox=args.mailbox, since=args.since,
                                 event=args.event, limit=args.limit)
    records = reply["records"]
    if not printed_plainly(s.term, records, as_json=args.json, empty="No audit records."):
        for record in records:
            s.term.say(audit.summary(record))
    return 0
