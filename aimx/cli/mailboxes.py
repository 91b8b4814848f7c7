"""``aimx mailboxes`` (alias ``mailbox``), L3: create, list, show, delete (docs/cli.md).

Every verb asks the daemon over the control socket.  When no daemon answers,
root falls back to editing config.toml and the mailbox directories directly
(the change takes effect when the daemon starts); anyone else is told the
daemon is not running and how to start it, with exit code 2.

C{list} and C{show} over a running daemon import neither Twisted nor the
config model (bench/cli_start.py): what the other paths need is imported where
they need it.
"""


from aimx.cli import session
from aimx.cli.session import CliError, mailbox_missing
from aimx.cli.term import cmd_text, printed_plainly, table
from aimx.control.wire import MailboxCreate, MailboxDelete, MailboxList, MailboxShow
from aimx.core.events import EVENTS
from aimx.errors import DaemonNotRunning

#: The last sentence of the daemon-down error for non-root callers (exit code 2).
WITHOUT_DAEMON = (
    "The daemon must be running for non-root mailbox commands; with sudo, aimx uses "
    "config.toml directly instead."
)
_YES = ("1", "true", "yes")


def main(args) -> int:
    return session.run_blocking(VERBS[args.action], args)


# -- create ----------------------------------------------------------------------


async def create(args, s: session.Session) -> int:
    from aimx.core import configedit

    name = args.name
    configedit.check_mailbox_name(name)
    # The daemon refuses this too; checking here says why even when it is down.
    configedit.check_role_name(name, by_root=s.root)
    if args.owner == "":
        raise CliError("--owner value cannot be empty")
    if s.root:
        owner = args.owner or _ask_owner(name, s)
    else:
        caller = s.username
        if caller is None and args.owner is None:
            raise CliError(f"uid {s.euid} has no passwd entry; pass --owner <user>")
        if caller is not None and args.owner not in (None, caller):
            s.term.warn(
                "Warning: --owner ignored for non-root callers; mailbox will be owned by "
                f"`{caller}`"
            )
        owner = caller or args.owner
    try:
        await s.call(MailboxCreate, name=name, owner=args.owner if not s.root else owner)
    except DaemonNotRunning as e:
        if not s.root:
            raise _down(s, e) from None
        _create_directly(s, name, owner)
        s.term.success(f"Mailbox '{name}' created (owner: {owner}).")
        s.term.say(s.pending_note())
        return 0
    s.term.success(f"Mailbox '{name}' created (owner: {owner}).")
    return 0


def _down(s: session.Session, error) -> CliError:
    """A non-root caller without a daemon: not running, how to start it; exit 2."""
    return CliError(s.not_running(error, WITHOUT_DAEMON), exit_code=2)


def _ask_owner(name: str, s: session.Session) -> str:
    """Root without C{--owner}: prompt, defaulting to a user named like the mailbox."""
    config = s.config()
    if config is None:
        raise CliError(f"cannot read {s.config_path}; pass --owner <user>")
    default = name if s.passwd.owner(name).uid is not None else None
    if s.environ.get("AIMX_NONINTERACTIVE", "").lower() in _YES:
        if default is None:
            raise CliError(f"no user named '{name}'; pass --owner <user>")
        return default
    shown = default or "(no default, explicit input required)"
    for _ in range(5):
        answer = s.term.ask(
            f"Which Linux user should own `{name}@{config.domain}`? [{shown}]: "
        )
        if answer is None:
            break
        owner = answer.strip() or default
        if not owner:
            continue
        if s.passwd.owner(owner).uid is not None:
            return owner
        s.term.warn(
            f"Warning: user '{owner}' does not exist; create it first "
            f"(e.g. `sudo useradd --system --create-home {owner}`)"
        )
    raise CliError("no valid owner given; pass --owner <user>")


def _create_directly(s: session.Session, name: str, owner: str) -> None:
    """Root's create with the daemon down (so role names are allowed, as over the socket)."""
    from aimx.core import configedit
    from aimx.store.mailboxdirs import create_dirs, remove_dirs

    config = s.root_config(f"cannot read {s.config_path}")
    if config.mailbox(name) is not None:
        raise CliError(f"Mailbox '{name}' already exists")
    if not configedit.valid_owner_name(owner):
        raise CliError(
            f"invalid owner '{owner}': must match [a-z_][a-z0-9_-]*[$]? (at most 32 characters)"
        )
    configedit.check_new_owner(name, owner)
    ids = s.passwd.owner(owner)
    if ids.uid is None:
        raise CliError(f"unknown owner '{owner}'")
    created = create_dirs(config.data_dir, name, ids)
    try:
        s.write_config(configedit.add_mailbox(config, name, owner))
    except CliError:
        remove_dirs(created)
        raise


# -- list and show ---------------------------------------------------------------


async def list_(args, s: session.Session) -> int:
    if args.all and not s.root:
        raise CliError("not authorized: --all requires root (run with sudo)")
    try:
        rows = (await s.call(MailboxList))["mailboxes"]
    except DaemonNotRunning as e:
        from aimx.control.listing import mailbox_rows

        config = s.config()
        if config is None:
            raise _down(s, e) from None
        rows = mailbox_rows(config, config.data_dir, s.euid, s.passwd)
    if printed_plainly(s.term, rows, as_json=args.json, empty="No mailboxes configured."):
        return 0
    lines = table(["MAILBOX", "INBOX", "UNREAD", "SENT", ""], [
        [row["name"], row["total"], row["unread"], row["sent_count"],
         "" if row["registered"] else "(unregistered)"] for row in rows], right=(1, 2, 3))
    s.term.say(s.term.bold(lines[0]))
    for row, line in zip(rows, lines[1:]):
        if not row["registered"]:
            line = line.removesuffix("(unregistered)") + s.term.yellow("(unregistered)")
        s.term.say(line)
    return 0


async def show(args, s: session.Session) -> int:
    try:
        details = (await s.call(MailboxShow, name=args.name))["mailbox"]
    except DaemonNotRunning as e:
        from aimx.control.listing import mailbox_details

        config = s.config()
        if config is None:
            raise _down(s, e) from None
        mailbox = config.mailbox(args.name)
        if mailbox is None:
            raise mailbox_missing(args.name) from None
        details = mailbox_details(config, mailbox, config.data_dir)
    term = s.term
    term.say(f"Mailbox: {term.bold(details['name'])}")
    term.say(f"  Address: {details['address']}")
    term.say(f"  Trust:   {details['trust']}")
    if details["trusted_senders"]:
        term.say("  Trusted senders:")
        for pattern in details["trusted_senders"]:
            term.say(f"    - {pattern}")
    else:
        term.say("  Trusted senders: (none)")
    term.say()
    term.say(term.bold("Hooks"))
    if not details["hooks"]:
        term.say("  (none)")
    for event in EVENTS:
        hooks = [h for h in details["hooks"] if h["event"] == event]
        if hooks:
            term.say(f"  {event}")
        for hook in hooks:
            flag = "".join(f"   [{key}=true]" for key in ("fire_on_untrusted", "fire_on_review")
                           if hook.get(key))
            term.say(f"    - {hook['name']}  cmd: {cmd_text(hook['cmd'])}{flag}")
    term.say()
    term.say(term.bold("Messages"))
    term.say(f"  inbox: {details['inbox_total']} ({details['inbox_unread']} unread)")
    term.say(f"  sent:  {details['sent_total']}")
    return 0


# -- delete ----------------------------------------------------------------------


async def delete(args, s: session.Session) -> int:
    name = args.name
    if args.force and name == "catchall":
        raise CliError("Cannot delete the catchall mailbox")
    if not args.yes:
        if args.force:
            confirmed = s.confirm_delete("Continue? [y/N] ", lambda: _show_files(s, name))
        else:
            confirmed = s.confirm_delete(f"Delete mailbox '{name}' and all its emails? [y/N] ")
        if not confirmed:
            return 0
    try:
        await s.call(MailboxDelete, name=name, force=args.force)
    except DaemonNotRunning as e:
        if not s.root:
            raise _down(s, e) from None
        _delete_directly(s, name, args.force)
        s.term.success(f"Mailbox '{name}' deleted.")
        s.term.say(s.pending_note())
        return 0
    s.term.success(f"Mailbox '{name}' deleted.")
    s.term.say(
        f"Note: the empty inbox/{name}/ and sent/{name}/ directories remain; remove them "
        "with `rmdir` if you no longer need them."
    )
    return 0


def _show_files(s: session.Session, name: str) -> None:
    """What a forced delete removes, before its prompt."""
    inbox, sent = _file_counts(s, name)
    s.term.say(f"DESTRUCTIVE: About to permanently delete mailbox '{name}':")
    s.term.say(f"  inbox/{name}/: {inbox}")
    s.term.say(f"  sent/{name}/:  {sent}")


def _file_counts(s: session.Session, name: str) -> tuple[str, str]:
    """C{"N files"} for both directories (C{"? files"} without a readable config)."""
    from aimx.store.mailboxdirs import count_entries, mailbox_dirs

    config = s.config()
    if config is None:
        return "? files", "? files"
    texts = []
    for path in mailbox_dirs(config.data_dir, name):
        try:
            n = count_entries(path)
        except OSError:
            texts.append("? files")
            continue
        texts.append("1 file" if n == 1 else f"{n} files")
    return texts[0], texts[1]


def _delete_directly(s: session.Session, name: str, force: bool) -> None:
    from aimx.core import configedit
    from aimx.store.mailboxdirs import count_entries, mailbox_dirs, remove_dirs, wipe

    config = s.root_config(f"cannot read {s.config_path}")
    mailbox = config.mailbox(name)
    if name in ("catchall", "aimx-catchall") or (
        mailbox is not None and mailbox.is_catchall(config.domain)
    ):
        raise CliError("Cannot delete the catchall mailbox")
    if mailbox is None:
        raise mailbox_missing(name)
    inbox, sent = mailbox_dirs(config.data_dir, name)
    try:
        if force:
            wipe(inbox)
            wipe(sent)
        in_inbox, in_sent = count_entries(inbox), count_entries(sent)
    except OSError as e:
        raise CliError(f"failed to wipe mailbox '{name}': {e}") from None
    if in_inbox + in_sent:
        raise CliError(
            f"mailbox '{name}' has {in_inbox + in_sent} files ({in_inbox} in inbox, "
            f"{in_sent} in sent); archive or remove them first"
        )
    s.write_config(configedit.remove_mailbox(config, name))
    remove_dirs([inbox, sent])


VERBS = {"create": create, "list": list_, "show": show, "delete": delete}
