"""The reply rows of the listing commands (L2 side, blocking parts run in a thread).

The MAILBOX-LIST and MAILBOX-SHOW rows (docs/mcp.md, mailbox_list), built
from the configuration, the mailbox directories (L{aimx.store.mailboxdirs}) and
message counts (from the daemon's index, else L{aimx.store.mailstore.count_messages});
a non-root caller sees only its own rows (L{aimx.core.authz.visible}).  The
daemon's commands (L{aimx.control.ops}) and the CLI's root fallback build them
here alike.  The MAIL-LIST, MAIL-SEARCH and MAIL-THREAD rows come from index
entries (L{email_row}).
"""

from aimx.core.authz import visible
from aimx.core.config import Config, MailboxConfig
from aimx.core.configedit import hook_rows
from aimx.store.mailboxdirs import inbox_dirs, mailbox_dirs
from aimx.store.mailstore import count_messages

#: C{name -> (inbox total, inbox unread, sent total)}.
Counts = dict[str, tuple[int, int, int]]


def visible_mailboxes(config: Config, data_dir: str, caller_uid: int, passwd
                      ) -> list[tuple[str, MailboxConfig | None]]:
    """The mailboxes C{caller_uid} may see, sorted by name, with their configuration.

    Those are the configured mailboxes and the directories under C{inbox/}; a
    non-root caller sees configured ones whose owner is its uid and unregistered
    ones whose inbox directory it owns (C{None} as their configuration).

    @param passwd: owner lookups (L{aimx.store.passwd.Passwd}).
    """
    dirs = inbox_dirs(data_dir)
    found = []
    for name in sorted({mb.name for mb in config.mailboxes} | set(dirs)):
        mailbox = config.mailbox(name)
        owner_uid = dirs[name] if mailbox is None else passwd.owner(mailbox.owner).uid
        if visible(caller_uid, owner_uid):
            found.append((name, mailbox))
    return found


def file_counts(data_dir: str, name: str) -> tuple[int, int, int]:
    """A mailbox's counts read from its files (no index): inbox total and unread, sent."""
    inbox, sent = mailbox_dirs(data_dir, name)
    total, unread = count_messages(inbox)
    return total, unread, count_messages(sent, False)[0]


def mailbox_rows(config: Config, data_dir: str, caller_uid: int, passwd,
                 counts: Counts | None = None) -> list[dict]:
    """MAILBOX-LIST rows of L{visible_mailboxes}.

    @param counts: counts known already (the index's); the others are read
        from the files.
    """
    rows = []
    for name, mailbox in visible_mailboxes(config, data_dir, caller_uid, passwd):
        inbox, sent = mailbox_dirs(data_dir, name)
        known = (counts or {}).get(name)
        total, unread, sent_count = known if known is not None else file_counts(data_dir, name)
        rows.append(
            {
                "name": name,
                "address": None if mailbox is None else mailbox.address,
                "inbox_path": inbox,
                "sent_path": sent,
                "total": total,
                "unread": unread,
                "sent_count": sent_count,
                "registered": mailbox is not None,
            }
        )
    return rows


def mailbox_details(config: Config, mailbox: MailboxConfig, data_dir: str,
                    counts: tuple[int, int, int] | None = None) -> dict:
    """The MAILBOX-SHOW object: effective settings, hooks and message counts.

    @param counts: the index's counts, else they are read from the files.
    """
    total, unread, sent_total = counts if counts is not None else file_counts(
        data_dir, mailbox.name)
    return {
        "name": mailbox.name,
        "address": mailbox.address,
        "owner": mailbox.owner,
        "trust": config.effective_trust(mailbox),
        "trusted_senders": list(config.effective_trusted_senders(mailbox)),
        "hooks": hook_rows(config, lambda mb: mb.name == mailbox.name),
        "inbox_total": total,
        "inbox_unread": unread,
        "sent_total": sent_total,
    }


def email_row(entry, snippet: bool = False, text: bool = False) -> dict:
    """The wire row of an index entry (L{aimx.store.mailindex.Entry}): frontmatter
    key names, C{read} a boolean, C{has_attachments} whether it lists any.

    @param snippet: add the entry's C{snippet} (search results).
    @param text: add the entry's new C{text} (threads).
    """
    row = {
        "id": entry.id,
        "folder": entry.folder,
        "from": entry.from_,
        "to": entry.to,
        "subject": entry.subject,
        "date": entry.date,
        "read": entry.read,
        "trusted": entry.trusted,
        "thread_id": entry.thread_id,
        "message_id": entry.message_id,
        "delivery_status": entry.delivery_status,
        "has_attachments": entry.attachments,
    }
    if snippet:
        row["snippet"] = entry.snippet
    if text:
        row["text"] = entry.text
    return row
