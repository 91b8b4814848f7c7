"""``aimx send``, L3: compose a message as the caller and submit it (docs/cli.md, "aimx send").

Attachments are opened here, with the caller's permissions, and passed to the
daemon as descriptors (docs/guardrails.md): the daemon never opens a path on a
client's behalf, and it checks where each descriptor really points before it
reads it.  A message the outbound policy holds says C{held for approval:
<hold-id>} (exit 0).  Exit codes: 0 sent, 1 refused, 2 no daemon, 3 a reply that is not a
valid answer.  Root is not refused: the daemon authorises root (the operator) for
any mailbox, as it does for the MCP tools (docs/security.md, "Sending identity").
"""

import os
from datetime import datetime, timezone

from aimx.cli import session
from aimx.cli.session import CliError
from aimx.control.wire import ERRORS, MESSAGE_CAP, MalformedResponse, Send
from aimx.core.compose import ComposeError, compose, normalize_crlf
from aimx.store.attachments import open_attachment
from aimx.errors import ConnectFailed, DaemonNotRunning

_RED, _BOLD, _GREEN = "31", "1", "32"


def main(args) -> int:
    return session.run_blocking(send, args)


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
    except ConnectFailed as e:
        raise CliError(str(e), exit_code=2) from None
    try:
        return await connection.call(Send, **arguments)
    except MalformedResponse as e:
        raise _malformed(str(e)) from None
    finally:
        connection.close()


def _malformed(detail: str) -> CliError:
    return CliError(f"malformed response from aimx daemon: {detail}", exit_code=3)
