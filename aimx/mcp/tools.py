"""The bodies of the MCP tools (L3), behind a control client (docs/mcp.md).

L{Tools} takes any object with C{async call(command, **arguments) -> dict}
(L{aimx.control.aioclient.ControlClient} in production, a fake in tests).  What
the daemon decides (visibility, ownership, validation) it decides; listings,
searches and threads come from the daemon's index (MAIL-LIST, MAIL-SEARCH,
MAIL-THREAD), a message's file is read here with the caller's own uid through
L{aimx.mcp.files}.
Each method returns the tool's text or raises C{ToolError} with the text the
agent sees.  What only sending and replying need (composing, attachments, the
address parser) is imported by those tools: an agent's first call, usually a
listing, does not wait for it (bench/mcp_coldstart.py).
"""

import json
import os
from datetime import UTC, datetime

from mcp.server.mcpserver.exceptions import ToolError

from aimx.control import aioclient
from aimx.control.wire import (
    ERRORS,
    EXCLUSIVE,
    HeldList,
    HookCreate,
    HookDelete,
    HookList,
    MailboxCreate,
    MailboxDelete,
    MailboxList,
    MailList,
    MailSearch,
    MailThread,
    MarkRead,
    MarkUnread,
    Send,
)
from aimx.core import frontmatter, replytext
from aimx.core.filenames import is_valid_id
from aimx.errors import DaemonNotRunning, NotFoundError
from aimx.mcp import files

NOT_RUNNING = "aimx daemon not running. Start with 'sudo systemctl start aimx'"
LIMIT_MAX = 200
_LIST_KEYS = {
    "inbox": ("id", "from", "to", "subject", "date", "read", "trusted", "thread_id",
              "has_attachments"),
    "sent": ("id", "from", "to", "subject", "date", "delivery_status", "thread_id",
             "has_attachments"),
}


def _json(value) -> str:
    """Compact JSON, keys in insertion order, non-ASCII kept."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _check_id(email_id: str) -> None:
    if not email_id:
        raise ToolError("Email ID cannot be empty.")
    if not is_valid_id(email_id):
        raise ToolError("Email ID contains invalid characters.")


def _folder_key(folder: str | None) -> str:
    if folder in (None, "inbox"):
        return "inbox"
    if folder == "sent":
        return "sent"
    raise ToolError(f'Invalid folder \'{folder}\': expected "inbox" or "sent".')


#: The fields of an C{email_thread} row, in order.
_THREAD_KEYS = ("id", "folder", "from", "to", "date", "subject", "trusted", "read", "text")
_FOLDERS_ALL = ("inbox", "sent", "all")


def _daemon_row(email: dict, keys) -> dict:
    """A row of the daemon's index rows (the documented names, typed) with these keys."""
    return {key: email.get(key, False if key in ("read", "has_attachments") else "")
            for key in keys}


def _address(text: str) -> str | None:
    """The one address C{text} is (lower-cased, for comparing), or C{None}."""
    from aimx.core.identity import parse_address_list

    mailbox = parse_address_list(text).single
    return None if mailbox is None else mailbox.address


def _reply_recipients(fields: dict) -> list[str]:
    """Where a reply goes (docs/mcp.md, email_reply; RFC 5322 §3.6.2): every mailbox of the
    stored C{reply_to}, else the one mailbox of C{from}; both parsed as written
    (the store formats them to parse back), never scanned for brackets.

    @raise ToolError: neither names an address to answer.
    """
    from aimx.core.identity import parse_address_list

    reply_to = parse_address_list(str(fields.get("reply_to") or ""))
    if reply_to.mailboxes and not reply_to.problems:
        return [m.addr_spec for m in reply_to.mailboxes]
    stored_from = str(fields.get("from") or "")
    author = parse_address_list(stored_from).single
    if author is None:
        raise ToolError(f"Cannot reply: no single sender address in '{stored_from}'.")
    return [author.addr_spec]


class Tools:
    """The tool bodies, sharing one control client.

    @param client: the daemon (C{call(command, **arguments)}).
    @param now: the clock for the Date of composed mail.
    """

    def __init__(self, client, now=lambda: datetime.now(UTC)):
        self.client = client
        self.now = now

    async def _call(self, command, missing: str | None = None, **arguments) -> dict:
        """One daemon command; every failure becomes the agent-visible text.

        @param missing: the text for a C{NOTFOUND} answer (default: the daemon's).
        """
        try:
            return await self.client.call(command, **arguments)
        except NotFoundError as e:
            raise ToolError(missing or f"[{e.code}] {e}") from None
        except DaemonNotRunning:
            raise ToolError(NOT_RUNNING) from None
        except tuple(ERRORS) as e:
            raise ToolError(f"[{e.code}] {e}") from None
        except aioclient.MalformedResponse as e:
            raise ToolError(f"Malformed response from aimx daemon: {e}") from None
        except aioclient.ConnectFailed as e:
            raise ToolError(str(e)) from None

    async def _rows(self) -> list[dict]:
        return (await self._call(MailboxList))["mailboxes"]

    async def _row(self, name: str) -> dict:
        """The caller's MAILBOX-LIST row of C{name} (missing and foreign look alike).

        C{name} may also be the full address of one of the caller's mailboxes;
        an address that is none of theirs is answered with the name form.
        Callers name the mailbox by the row's C{name} from then on.
        """
        rows = await self._rows()
        for row in rows:
            if row.get("name") == name:
                return row
        address = _address(name)
        if address is None:
            raise ToolError(f"Mailbox '{name}' does not exist.")
        for row in rows:
            if row.get("address") and _address(row["address"]) == address:
                return row
        raise ToolError(
            f"Mailbox '{name}' does not exist. None of your mailboxes has that address; "
            "give a mailbox name as listed by mailbox_list (the part before the '@')."
        )

    @staticmethod
    def _sender(row: dict, verb: str) -> str:
        address = row.get("address")
        if address is None:
            raise ToolError(f"Mailbox '{row['name']}' is not registered.")
        if address.startswith("*"):
            raise ToolError(
                f"Cannot {verb} from '{row['name']}': catchall mailbox has no valid sender "
                "address. Use a named mailbox."
            )
        return address

    @staticmethod
    def _open_at(row: dict, folder: str, email_id: str) -> tuple[int, str]:
        try:
            return files.open_message_at(row[f"{folder}_path"], email_id)
        except files.NotFound:
            raise ToolError(f"Email '{email_id}' not found in mailbox '{row['name']}'.") from None

    @classmethod
    def _open(cls, row: dict, folder: str, email_id: str) -> int:
        return cls._open_at(row, folder, email_id)[0]

    # -- mailboxes -------------------------------------------------------------

    async def mailbox_list(self) -> str:
        """The visible MAILBOX-LIST rows as compact JSON, sorted by name."""
        return _json(sorted(await self._rows(), key=lambda row: row["name"]))

    async def mailbox_create(self, name: str) -> str:
        """MAILBOX-CREATE owned by the caller; the new address."""
        return (await self._call(MailboxCreate, name=name))["address"]

    async def mailbox_delete(self, name: str, force: bool = False) -> str:
        """MAILBOX-DELETE (C{force} empties it first, daemon-side)."""
        if _address(name) is not None:  # an address: only one of the caller's mailboxes
            name = (await self._row(name))["name"]
        if force and name == "catchall":
            raise ToolError("Cannot delete the catchall mailbox")
        await self._call(MailboxDelete, name=name, force=force)
        return f"Mailbox '{name}' deleted."

    # -- reading -----------------------------------------------------------------

    async def email_list(
        self, mailbox: str, folder: str | None = None, limit: int = 50, offset: int = 0
    ) -> str:
        """A page of a folder's rows, newest first, from the daemon's index (rows
        of files without a readable frontmatter are left out; each row checked
        against its file before it is answered)."""
        row = await self._row(mailbox)
        key = _folder_key(folder)
        limit = min(limit, LIMIT_MAX)
        emails = (await self._call(MailList, mailbox=row["name"], folder=key, limit=limit,
                                   offset=offset))["emails"]
        return _json([_daemon_row(email, _LIST_KEYS[key]) for email in emails])

    async def email_search(
        self, mailbox: str, query: str, folder: str | None = "all", from_: str | None = None,
        since: str | None = None, until: str | None = None, unread: bool | None = None,
        trusted: bool | None = None, limit: int = 20,
    ) -> str:
        """Full-text search of a mailbox: rows like C{email_list}'s with C{folder} and a
        C{snippet}, newest first."""
        row = await self._row(mailbox)
        folder = "all" if folder is None else folder
        if folder not in _FOLDERS_ALL:
            raise ToolError(f'Invalid folder \'{folder}\': expected "inbox", "sent" or "all".')
        emails = (await self._call(
            MailSearch, mailbox=row["name"], query=query, folder=folder, sender=from_,
            since=since, until=until, unread=unread, trusted=trusted,
            limit=min(limit, LIMIT_MAX)))["emails"]
        return _json([
            {"id": email["id"], "folder": email["folder"],
             **_daemon_row(email, _LIST_KEYS[email["folder"]][1:]),
             "snippet": email.get("snippet", "")}
            for email in emails
        ])

    async def email_thread(
        self, mailbox: str, id: str | None = None, thread_id: str | None = None,
        limit: int = 50,
    ) -> str:
        """A conversation across inbox and sent, oldest first, each message with its new
        text (without quoted history and signature)."""
        if (id is None) == (thread_id is None):
            raise ToolError("Give exactly one of id and thread_id.")
        if id is not None:
            _check_id(id)
        row = await self._row(mailbox)
        missing = (f"Email '{id}' not found in mailbox '{row['name']}'." if id is not None
                   else f"Thread '{thread_id}' not found in mailbox '{row['name']}'.")
        emails = (await self._call(MailThread, missing, mailbox=row["name"], id=id,
                                   thread_id=thread_id, limit=min(limit, LIMIT_MAX)))["emails"]
        return _json([_daemon_row(email, _THREAD_KEYS) for email in emails])

    async def email_read(self, mailbox: str, id: str, folder: str | None = None,
                         extracted: bool = False) -> str:
        """The message file, resolved strictly inside the folder; verbatim but for
        a bundle's attachment paths, made absolute (L{frontmatter.with_attachment_dir}).
        C{extracted}: only its new text (L{replytext.stored_new_text}), as C{aimx mail
        read --extracted} prints it."""
        _check_id(id)
        row = await self._row(mailbox)
        directory = row[f"{_folder_key(folder)}_path"]
        fd, path = self._open_at(row, _folder_key(folder), id)
        try:
            data = files.read_message(fd)
        except OSError as e:
            raise ToolError(f"Failed to read email: {e}") from None
        if extracted:
            try:
                fields, body = frontmatter.parse(data)
            except ValueError:
                raise ToolError(f"Email '{id}' has no readable frontmatter.") from None
            return replytext.stored_new_text(fields, body.decode("utf-8", "replace"))
        if os.path.dirname(path) != directory:  # in its bundle, where attachments are
            data = frontmatter.with_attachment_dir(data, os.path.dirname(path))
        return data.decode("utf-8", "replace")

    async def email_mark_read(self, mailbox: str, id: str) -> str:
        """MARK-READ after the id check and the row lookup."""
        _check_id(id)
        row = await self._row(mailbox)
        await self._call(MarkRead, mailbox=row["name"], id=id)
        return f"Email '{id}' marked as read."

    async def email_mark_unread(self, mailbox: str, id: str) -> str:
        """MARK-UNREAD after the id check and the row lookup."""
        _check_id(id)
        row = await self._row(mailbox)
        await self._call(MarkUnread, mailbox=row["name"], id=id)
        return f"Email '{id}' marked as unread."

    # -- sending -----------------------------------------------------------------

    async def email_send(
        self,
        from_mailbox: str,
        to: str,
        subject: str,
        body: str,
        cc: str | None = None,
        bcc: str | None = None,
        reply_to: str | None = None,
        references: str | None = None,
        html_body: str | None = None,
        attachments: list[str] | None = None,
        text_only: bool = False,
    ) -> str:
        """Compose from the mailbox's address as C{aimx send} does, then SEND; the
        attachments go as descriptors this process opened (docs/guardrails.md)."""
        if text_only and html_body is not None:
            raise ToolError(EXCLUSIVE)
        from aimx.core.compose import ComposeError
        from aimx.store.attachments import open_attachment

        sender = self._sender(await self._row(from_mailbox), "send")
        opened = []
        try:
            for path in attachments or ():
                opened.append((open_attachment(path), os.path.abspath(path)))
            return await self._send(
                text_only, html_body, from_=sender, to=to, cc=cc or (), bcc=bcc or (),
                subject=subject, body=body, reply_to=reply_to, references=references,
                attached=opened,
            )
        except ComposeError as e:
            raise ToolError(str(e)) from None
        finally:
            for fd, _ in opened:
                os.close(fd)

    async def email_reply(
        self, mailbox: str, id: str, body: str, text_only: bool = False,
        html_body: str | None = None,
    ) -> str:
        """Reply to an inbox email's sender, threaded, from the mailbox's address."""
        if text_only and html_body is not None:
            raise ToolError(EXCLUSIVE)
        _check_id(id)
        row = await self._row(mailbox)
        try:
            original = files.read_frontmatter(self._open(row, "inbox", id))
        except (OSError, ValueError):
            original = None
        if original is None:
            raise ToolError("Failed to parse email frontmatter.")
        sender = self._sender(row, "reply")
        subject = str(original.get("subject", ""))
        if not subject.startswith("Re: "):
            subject = "Re: " + subject
        message_id = str(original.get("message_id", ""))
        chain = [f"<{ref}>" for ref in str(original.get("references", "")).split()]
        return await self._send(
            text_only, html_body, from_=sender, to=", ".join(_reply_recipients(original)),
            subject=subject, body=body, reply_to=message_id or None,
            references=" ".join([*chain, f"<{message_id}>"]),
        )

    async def _send(self, text_only: bool, html_body: str | None, attached=(), **fields) -> str:
        """Compose as C{aimx send} does (L{aimx.core.compose.compose} C{fields}) and submit,
        with C{attached}, the C{(fd, path)} of opened files."""
        from aimx.core.compose import ComposeError, compose, normalize_crlf

        try:
            message = compose(now=self.now(), **fields)
        except ComposeError as e:
            raise ToolError(str(e)) from None
        html = None if html_body is None else normalize_crlf(html_body).encode("utf-8")
        reply = await self._call(Send, message=message, text_only=text_only, html_body=html,
                                 attachments=list(attached))
        if reply.get("held"):
            return f"held for approval: {reply['held']}"
        text = f"Email sent to {fields['to']}. Message-ID: {reply['message_id']}"
        missed = [d for d in reply.get("deliveries") or () if d.get("status") != "delivered"]
        if missed:
            text += "\nNot delivered to every recipient:" + "".join(
                f"\n  {d.get('status')}: {d.get('rcpt')}: {d.get('details')}" for d in missed
            )
        return text

    # -- held mail ---------------------------------------------------------------

    async def held_list(self, mailbox: str) -> str:
        """The mailbox's messages held for approval, oldest first (read-only: deciding on
        them is a person's, never the agent's)."""
        row = await self._row(mailbox)
        return _json((await self._call(HeldList, mailbox=row["name"]))["holds"])

    # -- hooks -------------------------------------------------------------------

    async def hook_create(
        self,
        mailbox: str,
        event: str,
        cmd: list[str] | None = None,
        name: str | None = None,
        timeout_secs: int | None = None,
        fire_on_untrusted: bool = False,
        fire_on_review: bool = False,
        url: str | None = None,
    ) -> str:
        """HOOK-CREATE with the hook's fields as its JSON body; C{url} makes a webhook,
        whose generated secret is answered this once."""
        mailbox = (await self._row(mailbox))["name"]
        if (cmd is None) == (url is None):
            raise ToolError("give either cmd or url")
        if url is not None:
            body = {"url": url, "fire_on_untrusted": fire_on_untrusted, "type": "webhook"}
        elif not cmd:
            raise ToolError("cmd must not be empty")
        else:
            body = {"cmd": cmd, "fire_on_untrusted": fire_on_untrusted, "type": "cmd"}
        if fire_on_review:
            body["fire_on_review"] = True
        if timeout_secs is not None:
            body["timeout_secs"] = timeout_secs
        reply = await self._call(HookCreate, mailbox=mailbox, event=event, name=name,
                                 body=_json(body))
        if reply.get("secret"):
            return (f"Webhook created on mailbox '{mailbox}'. Its signing secret, shown only "
                    f"now (give it to the receiver): {reply['secret']}")
        return f"Hook created on mailbox '{mailbox}'."

    async def hook_list(self, mailbox: str | None = None) -> str:
        """The visible hooks (of C{mailbox} only, when given) as compact JSON."""
        if mailbox is not None:
            mailbox = (await self._row(mailbox))["name"]
        hooks = (await self._call(HookList))["hooks"]
        if mailbox is not None:
            hooks = [hook for hook in hooks if hook.get("mailbox") == mailbox]
        hooks.sort(key=lambda h: (h["mailbox"], h["event"], h["name"]))
        return _json(hooks)

    async def hook_delete(self, name: str) -> str:
        """HOOK-DELETE, no pre-flight (foreign hooks are not found)."""
        await self._call(HookDelete, name=name)
        return f"Hook '{name}' deleted."

