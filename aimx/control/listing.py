"""The MAILBOX-LIST and MAILBOX-SHOW reply rows (L2 side, blocking: run in a thread).

The rows of spec/control-socket.md §6.5-6.6, built from the configuration, the
mailbox directories (L{aimx.store.mailboxdirs}) and the message counts
(L{aimx.store.mailstore.count_messages}); a non-root caller sees only its own
rows (L{aimx.core.authz.visible}).  The daemon's commands (L{aimx.control.ops})
and the CLI's root fallback build them here alike.
"""

from aimx.core.authz import visible
from aimx.core.config import Config, MailboxConfig
from aimx.core.configedit import hook_rows
from aimx.store.mailboxdirs import inbox_dirs, mailbox_dirs
from aimx.store.mailstore import count_messages


def mailbox_rows(config: Config, data_dir: str, caller_uid: int, passwd) -> list[dict]:
    """MAILBOX-LIST rows (spec/control-socket.md §6.5), sorted by name.

    Rows are the configured mailboxes and the directories under C{inbox/}; a
    non-root caller sees configured rows whose owner is its uid and unregistered
    rows whose inbox directory it owns.

    @param passwd: owner lookups (L{aimx.store.passwd.Passwd}).
    """
    dirs = inbox_dirs(data_dir)
    rows = []
    for name in sorted({mb.name for mb in config.mailboxes} | set(dirs)):
        mailbox = config.mailbox(name)
        owner_uid = dirs[name] if mailbox is None else passwd.owner(mailbox.owner).uid
        if not visible(caller_uid, owner_uid):
            continue
        inbox, sent = mailbox_dirs(data_dir, name)
        total, unread = count_messages(inbox)
        rows.append(
            {
                "name": name,
                "address": None if mailbox is None else mailbox.address,
                "inbox_path": inbox,
                "sent_path": sent,
                "total": total,
                "unread": unread,
                "sent_count": count_messages(sent, False)[0],
                "registered": mailbox is not None,
            }
        )
    return rows


def mailbox_details(config: Config, mailbox: MailboxConfig, data_dir: str) -> dict:
    """The MAILBOX-SHOW object: effective settings, hooks and message counts."""
    inbox, sent = mailbox_dirs(data_dir, mailbox.name)
    total, unread = count_messages(inbox)
    return {
        "name": mailbox.name,
        "address": mailbox.address,
        "owner": mailbox.owner,
        "trust": config.effective_trust(mailbox),
        "trusted_senders": list(config.effective_trusted_senders(mailbox)),
        "hooks": hook_rows(config, lambda mb: mb.name == mailbox.name),
        "inbox_total": total,
        "inbox_unread": unread,
        "sent_total": count_messages(sent, False)[0],
    }
