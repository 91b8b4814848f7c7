"""``aimx send``, L3: compose a message as the caller and submit it (docs/cli.md, "aimx send").

Attachments are opened here, with the caller's permissions, and passed to the
daemon as descriptors (docs/guardrails.md): the daemon never opens a path on a
client's behalf, and it checks where each descriptor really points before it
reads it.  A message the outbound policy holds says C{held for approval:
<hold-id>} (exit 0).  Exit codes: 0 sent, 1 refused, 2 no daemon, 3 a reply that is not a
valid answer.  Root is not refused: the daemon authorises root (the operator) for
any mailbox, as it does for the MCP tools (docs/security.md, "Sending identity").
"""

import argparse
import os
from datetime import datetime, timezone

from twisted.internet import error
from twisted.protocols import amp

from aimx.cli import session
from aimx.cli.session import CliError
from aimx.control import client
from aimx.control.commands import ERRORS, MESSAGE_CAP, Send
from aimx.core.compose import ComposeError, compose, normalize_crlf
from aimx.store.attachments import open_attachment
from aimx.errors import DaemonNotRunning

_RED, _BOLD, _GREEN = "31", "1", "32"


def add_parser(sub, common) -> None:
    """Register C{send} on the top-level subparsers."""
    parser = sub.add_parser(
        "send", parents=[common], help=argparse.SUPPRESS, prog="aimx send",
        description="Send an email from one of your mailboxes.",
    )
    parser.add_argument("--from", dest="sender", required=True, metavar="ADDR",
                        help="sender address (one of your mailboxes)")
    parser.add_argument("--to", action="append", required=True, metavar="ADDR",
                        help="recipient (repeatable or comma-separated)")
    parser.add_argument("--cc", action="append", default=[], metavar="ADDR",
                        help="Cc recipient (repeatable or comma-separated)")
    parser.add_argument("--bcc", action="append", default=[], metavar="ADDR",
                        help="Bcc recipient, delivered but not shown (repeatable)")
    parser.add_argument("--subject", required=True)
    parser.add_argument("--body", required=True, help="Markdown (default) or plain text")
    parser.add_argument("--in-reply-to", metavar="MSG_ID",
                        help="Message-ID being replied to (sets In-Reply-To and References)")
    # The old name, kept working but not shown: it read as the Reply-To header.
    parser.add_argument("--reply-to", dest="in_reply_to", help=argparse.SUPPRESS)
    parser.add_argument("--references", metavar="CHAIN",
                        help="References chain (used with --in-reply-to)")
    parser.add_argument("--attachment", action="append", default=[], metavar="PATH",
                        help="file to attach (repeatable)")
    body = parser.add_mutually_exclusive_group()
    body.add_argument("--text-only", action="store_true",
                      help="send the body verbatim as text/plain (no Markdown render)")
    body.add_argument("--html-body", metavar="HTML",
                      help="HTML part to send; --body becomes the text alternative")


def main(args) -> int:
    return session.run(send, args)


async def send(args, s: session.Session) -> int:
    """Compose, submit, and report the daemon's answer (which says who may send)."""
    opened = []
    try:
        for path in args.attachment:
            opened.append((open_attachment(path), os.path.abspath(path)))
        return await _send(args, s, opened)
    except ComposeError as e:
        raise CliError(str(e)) from None
    finally:
        for fd, _ in opened:
            os.close(fd)


async def _send(args, s: session.Session, attachments: list) -> int:
    try:
        message = compose(
            from_=args.sender,
            to=args.to,
            cc=args.cc,
            bcc=args.bcc,
            subject=args.subject,
            body=args.body,
            reply_to=args.in_reply_to,
            references=args.references,
            now=datetime.now(timezone.utc),
        )
    except ComposeError as e:
        raise CliError(str(e)) from None
    if len(message) > MESSAGE_CAP:
        raise CliError(
            f"message is {len(message)} bytes once encoded, over the {MESSAGE_CAP}-byte "
            "(25 MiB) limit; attach less or link to the files instead"
        )
    html = None if args.html_body is None else normalize_crlf(args.html_body).encode("utf-8")
    try:
        reply = await _submit(s, message=message, text_only=args.text_only, html_body=html,
                              attachments=attachments)
    except tuple(ERRORS) as e:
        if e.code == "EACCES":
            raise CliError(f"not authorized: {args.sender}") from None
        label = s.term.style(f"Error [{e.code}]:", _RED, _BOLD)
        print(f"{label} {e}", file=s.term.err)
        return 1
    if reply.get("held"):
        s.term.say(f"held for approval: {reply['held']}")
        return 0
    message_id = reply["message_id"]
    s.term.say(message_id)
    undelivered = [d for d in reply.get("deliveries") or () if d.get("status") != "delivered"]
    if undelivered:
        # A partial send: retry only the deferred recipients, never the others.
        print(s.term.style("Email sent to some recipients only.", _RED, _BOLD), file=s.term.err)
        for d in undelivered:
            print(f"  {d.get('status')}: {d.get('rcpt')}: {d.get('details')}", file=s.term.err)
    else:
        print(s.term.style("Email sent.", _GREEN), file=s.term.err)
    print(f"Message-ID: {message_id}", file=s.term.err)
    return 0


async def _submit(s: session.Session, **arguments) -> dict:
    """One SEND on a connection of its own.

    @raise CliError: no daemon or no connection (exit 2), or a reply that is
        not a valid answer (exit 3).
    @raise aimx.errors.AimxError: the daemon's error, as its L{ERRORS} class.
    """
    try:
        connection = await s.connect()
    except DaemonNotRunning as e:
        raise CliError(s.not_running(e), exit_code=2) from None
    except client.ConnectFailed as e:
        raise CliError(str(e), exit_code=2) from None
    try:
        return await connection.call(Send, **arguments)
    except amp.TooLong:
        raise _malformed("not an AMP reply") from None
    except error.ConnectionClosed:
        raise _malformed("connection closed without a reply") from None
    except amp.AmpError as e:
        raise _malformed(str(e)) from None
    finally:
        connection.close()


def _malformed(detail: str) -> CliError:
    return CliError(f"malformed response from aimx daemon: {detail}", exit_code=3)
