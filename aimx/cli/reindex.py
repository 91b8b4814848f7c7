"""``aimx reindex [mailbox]``, L3: rebuild the mail index from the message files.

The daemon rebuilds (INDEX-REBUILD) each named mailbox's index, or every one the
caller may see, beside the current one, which keeps answering until the new one
is in place; this verb follows the builds (INDEX-STATUS) with a progress bar on
a terminal.  With no daemon, root builds the index files directly.
"""

import os

from aimx.cli import session
from aimx.cli.session import CliError
from aimx.cli.term import progress_bar
from aimx.control.wire import IndexRebuild, IndexStatus, MailboxList
from aimx.errors import DaemonNotRunning
from aimx.store import mailindex
from aimx.store.mailboxdirs import mailbox_names
from aimx.store.mailindex import MailIndex

#: Seconds between two looks at the builds.
POLL = 0.2
WITHOUT_DAEMON = "With sudo, aimx rebuilds the index files itself instead."


def main(args) -> int:
    return session.run_blocking(run, args)


async def run(args, s: session.Session) -> int:
    try:
        names = (await s.call(IndexRebuild, mailbox=args.mailbox))["mailboxes"]
    except DaemonNotRunning as e:
        if not s.root:
            raise CliError(s.not_running(e, WITHOUT_DAEMON), exit_code=2) from None
        return _directly(args, s)
    if not names:
        s.term.say("No mailboxes to index.")
        return 0
    while True:
        statuses = (await s.call(IndexStatus, mailbox=args.mailbox))["indexes"]
        building = [st for st in statuses if st["state"] == "building"]
        if s.term.tty and building:
            st = building[0]
            left = len(building)
            s.term.progress(f"{st['mailbox']}  {progress_bar(st['done'], st['total'])}"
                            + (f"  ({left} mailboxes left)" if left > 1 else ""))
        if not building:
            break
        await s.sleep(POLL)
    if s.term.tty:
        s.term.progress("")
    rows = {row["name"]: row for row in (await s.call(MailboxList))["mailboxes"]}
    for name in names:
        row = rows.get(name)
        s.term.success(_rebuilt(name, None if row is None else row["total"] + row["sent_count"]))
    return 0


def _rebuilt(name: str, messages: int | None) -> str:
    """C{Rebuilt the index of <name> (<n> messages).}"""
    if messages is None:
        return f"Rebuilt the index of {name}."
    return f"Rebuilt the index of {name} ({messages} message{'' if messages == 1 else 's'})."


def _directly(args, s: session.Session) -> int:
    """Root, no daemon: build the index files here."""
    config = s.root_config(f"cannot read {s.config_path}")
    names = [args.mailbox] if args.mailbox else sorted(mailbox_names(config, config.data_dir))
    try:
        mailindex.prepare_dir(config.data_dir)
    except OSError as e:
        raise CliError(f"cannot use {mailindex.index_dir(config.data_dir)}: {e}") from None
    for name in names:
        if not (config.mailbox(name) or any(
                os.path.isdir(d) for d in mailindex.folder_dirs(config.data_dir, name).values())):
            raise session.mailbox_missing(name)
        path = mailindex.index_path(config.data_dir, name)
        counted = [0]

        def progress(done, total, name=name):
            counted[0] = total
            if s.term.tty:
                s.term.progress(f"{name}  {progress_bar(done, total)}")

        built = MailIndex.build(path, mailindex.folder_dirs(config.data_dir, name), progress)
        MailIndex.install(built, path)
        if s.term.tty:
            s.term.progress("")
        s.term.success(_rebuilt(name, counted[0]))
    return 0
