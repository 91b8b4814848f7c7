"""``aimx mail``, L3: list, read, thread, search, mark-read, mark-unread.

Listing, search and threads ask the daemon, which answers from its index of the
mailbox (MAIL-LIST, MAIL-SEARCH, MAIL-THREAD) after checking that the caller
owns it; marking is MARK-READ/MARK-UNREAD.  C{read} opens the message file
itself, as the caller (through the daemon's own functions, L{aimx.store.mailstore}),
in the directory the daemon's mailbox listing names (root without a daemon: the
configuration's).  Every listing verb takes C{--json} and then prints one JSON
document, the daemon's rows; otherwise an aligned table.

Every verb runs on the blocking client without Twisted; C{read} imports the
store and the frontmatter parser when it runs, so the listings need neither.
"""

import os

from aimx.cli import session
from aimx.cli.session import CliError
from aimx.cli.term import print_json, printed_plainly, table
from aimx.control.wire import MailboxList, MailList, MailSearch, MailThread, MarkRead, MarkUnread
from aimx.core.filenames import is_valid_id
from aimx.errors import DaemonNotRunning

WITHOUT_DAEMON = (
    "Listing, searching and marking mail need the daemon (it keeps the mailbox index); "
    "`aimx mail read` works without it for root."
)


def main(args) -> int:
    return session.run_blocking(VERBS[args.action], args)



def _when(date: str) -> str:
    """A frontmatter date for a table: C{2025-06-01 10:00}."""
    return date[:16].replace("T", " ")


# -- list ------------------------------------------------------------------------


async def list_(args, s: session.Session) -> int:
    rows = (await s.call_running(
        MailList, WITHOUT_DAEMON, mailbox=args.mailbox, folder=args.folder, limit=args.limit,
        offset=args.offset, unread=args.unread))["emails"]
    empty = f"No {'unread ' if args.unread else ''}mail in {args.folder}/{args.mailbox}."
    if printed_plainly(s.term, rows, as_json=args.json, empty=empty):
        return 0
    if args.folder == "inbox":
        lines = table(["", "ID", "DATE", "FROM", "SUBJECT"], [
            ["" if row["read"] else "*", row["id"], _when(row["date"]), row["from"],
             row["subject"]] for row in rows], limits={3: 32, 4: 60})
    else:
        lines = table(["ID", "DATE", "TO", "SUBJECT", "STATUS"], [
            [row["id"], _when(row["date"]), row["to"], row["subject"], row["delivery_status"]]
            for row in rows], limits={2: 32, 3: 50})
    s.term.say(s.term.bold(lines[0]))
    for line in lines[1:]:
        s.term.say(line)
    return 0


# -- read ------------------------------------------------------------------------


async def _folder_dirs(s: session.Session, mailbox: str) -> dict[str, str]:
    """C{inbox} and C{sent} -> the folder's directory: from the daemon's row for the
    caller, else (root, no daemon) from config.toml."""
    try:
        rows = (await s.call(MailboxList))["mailboxes"]
    except DaemonNotRunning as e:
        from aimx.store.mailboxdirs import mailbox_dirs

        config = s.config()
        if config is None or not s.root:
            raise CliError(s.not_running(e, WITHOUT_DAEMON), exit_code=2) from None
        inbox, sent = mailbox_dirs(config.data_dir, mailbox)
        if config.mailbox(mailbox) is None and not os.path.isdir(inbox):
            raise session.mailbox_missing(mailbox) from None
        return {"inbox": inbox, "sent": sent}
    for row in rows:
        if row["name"] == mailbox:
            return {folder: row[f"{folder}_path"] for folder in ("inbox", "sent")}
    raise session.mailbox_missing(mailbox)


async def read(args, s: session.Session) -> int:
    from aimx.core import frontmatter, replytext
    from aimx.store import mailstore, safefs

    if not is_valid_id(args.id):
        raise CliError(f"email id '{args.id}' contains invalid characters")
    directories = await _folder_dirs(s, args.mailbox)
    fd = mailstore.open_email(directories[args.folder], args.id)
    if fd is None:
        other = "sent" if args.folder == "inbox" else "inbox"
        elsewhere = mailstore.open_email(directories[other], args.id)
        if elsewhere is not None:
            os.close(elsewhere)
            raise CliError(f"email '{args.id}' is in {other}/{args.mailbox}, not "
                           f"{args.folder}/{args.mailbox}: add --folder {other}")
        raise CliError(f"email '{args.id}' not found in {args.folder}/{args.mailbox}")
    try:
        size = os.fstat(fd).st_size
        if size > mailstore.MAX_MARK_BYTES:
            raise CliError(
                f"email '{args.id}' is {size} bytes, more than {mailstore.MAX_MARK_BYTES}")
        data = safefs.read_up_to(fd, size)
    except OSError as e:
        raise CliError(f"failed to read email '{args.id}': {e.strerror}") from None
    finally:
        os.close(fd)
    if not args.extracted:
        s.term.out.write(data.decode("utf-8", "replace"))
        return 0
    try:
        fields, body = frontmatter.parse(data)
    except ValueError:
        raise CliError(f"email '{args.id}' has no readable frontmatter") from None
    s.term.say(replytext.stored_new_text(fields, body.decode("utf-8", "replace")))
    return 0


# -- thread ----------------------------------------------------------------------


def _looks_like_thread_id(text: str) -> bool:
    return len(text) == 16 and all(c in "0123456789abcdef" for c in text)


async def thread(args, s: session.Session) -> int:
    message = args.message
    by = "id" if is_valid_id(message) else "thread_id"
    try:
        rows = (await s.call_running(MailThread, WITHOUT_DAEMON, mailbox=args.mailbox,
                                     limit=args.limit, **{by: message}))["emails"]
    except session.DaemonError as e:
        # Not a message id: a thread id, if it looks like one.
        if e.code != "NOTFOUND" or by != "id" or not _looks_like_thread_id(message):
            raise
        rows = (await s.call_running(MailThread, WITHOUT_DAEMON, mailbox=args.mailbox,
                                     limit=args.limit, thread_id=message))["emails"]
    if args.json:
        print_json(s.term, rows)
        return 0
    term = s.term
    for number, row in enumerate(rows):
        if number:
            term.say()
        who = row["from"] if row["folder"] == "inbox" else f"to {row['to']}"
        mark = "" if row["read"] or row["folder"] == "sent" else "  *unread*"
        term.say(term.bold(f"{_when(row['date'])}  {row['folder']:<5}  {who}") + mark)
        term.say(term.dim(f"{row['subject']}  [{row['id']}]"))
        for line in (row.get("text") or "").splitlines() or [""]:
            term.say(f"  {line}".rstrip())
    return 0


# -- search ----------------------------------------------------------------------


async def search(args, s: session.Session) -> int:
    rows = (await s.call_running(
        MailSearch, WITHOUT_DAEMON, mailbox=args.mailbox, query=args.query, folder=args.folder,
        sender=args.sender, since=args.since, until=args.until,
        unread=True if args.unread else None, trusted=True if args.trusted else None,
        limit=args.limit))["emails"]
    if printed_plainly(s.term, rows, as_json=args.json, empty="No matching mail."):
        return 0
    lines = table(["ID", "FOLDER", "DATE", "FROM", "SUBJECT", "MATCH"], [
        [row["id"], row["folder"], _when(row["date"]), row["from"], row["subject"],
         row.get("snippet", "")] for row in rows], limits={3: 28, 4: 40, 5: 60})
    s.term.say(s.term.bold(lines[0]))
    for line in lines[1:]:
        s.term.say(line)
    return 0


# -- mark ------------------------------------------------------------------------


async def mark_read(args, s: session.Session) -> int:
    return await _mark(args, s, MarkRead, "read")


async def mark_unread(args, s: session.Session) -> int:
    return await _mark(args, s, MarkUnread, "unread")


async def _mark(args, s, command, state: str) -> int:
    if not is_valid_id(args.id):
        raise CliError(f"email id '{args.id}' contains invalid characters")
    await s.call_running(command, WITHOUT_DAEMON, mailbox=args.mailbox, id=args.id)
    s.term.success(f"Email '{args.id}' marked as {state}.")
    return 0


VERBS = {"list": list_, "read": read, "thread": thread, "search": search,
         "mark-read": mark_read, "mark-unread": mark_unread}
