"""``aimx held``, L3: messages the outbound policy holds for approval (docs/guardrails.md).

C{list}, C{show}, C{approve}, C{reject}: every verb asks the daemon, which decides
who may do what (root and the C{[approval] approvers} group approve or reject,
never the mailbox's owner; owners list and read their own).
"""

import datetime

from aimx.cli import session
from aimx.cli.term import clip, printed_plainly
from aimx.control.wire import HeldApprove, HeldList, HeldReject, HeldShow


def main(args) -> int:
    return session.run_blocking(VERBS[args.action], args)



async def list_(args, s: session.Session) -> int:
    rows = (await s.call_running(HeldList, mailbox=args.mailbox))["holds"]
    if printed_plainly(s.term, rows, as_json=args.json, empty="No messages held for approval."):
        return 0
    s.term.say(s.term.bold(f"{'HOLD ID':<24} {'MAILBOX':<16} {'EXPIRES (UTC)':<16} "
                           f"{'TO':<30} SUBJECT"))
    for row in rows:
        s.term.say(f"{row['hold_id']:<24} {clip(row['mailbox'], 16):<16} "
                   f"{_minute(row['expires_at']):<16} {clip(row['to'], 30):<30} "
                   f"{row['subject']}")
    return 0


def _minute(stamp: str) -> str:
    """The daemon's RFC 3339 C{expires_at} as C{YYYY-MM-DD HH:MM} in UTC."""
    when = datetime.datetime.fromisoformat(stamp).astimezone(datetime.timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M")


async def show(args, s: session.Session) -> int:
    s.term.out.write((await s.call_running(HeldShow, id=args.id))["hold"]["file"])
    return 0


async def approve(args, s: session.Session) -> int:
    reply = await s.call_running(HeldApprove, id=args.id)
    s.term.success(f"Approved and sent: {reply['message_id']}")
    for d in reply.get("deliveries") or ():
        if d.get("status") != "delivered":
            s.term.say(f"  {d.get('status')}: {d.get('rcpt')}: {d.get('details')}")
    return 0


async def reject(args, s: session.Session) -> int:
    await s.call_running(HeldReject, id=args.id, reason=args.reason)
    s.term.success(f"Rejected: {args.id}")
    return 0


VERBS = {"list": list_, "show": show, "approve": approve, "reject": reject}
