"""The ``aimx`` MCP server (L3): exactly twelve tools, their schemas and wording (spec/mcp.md).

L{build} registers the tools of L{aimx.mcp.tools.Tools} on an C{MCPServer}.  A
tool's C{ToolError} reaches the agent as an C{isError} result whose text is the
spec's string exactly (the SDK would prefix it with "Error executing tool").
Call problems: an unknown tool, a missing required argument, or an unknown one
on the four strict tools, is a JSON-RPC invalid-params error; a value of the
wrong type or range (a negative limit, say) is a tool error.
"""

import functools
import inspect
from collections.abc import Mapping
from typing import Annotated

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, METHOD_NOT_FOUND, CallToolResult, TextContent
from pydantic import Field

from aimx import __version__
from aimx.mcp.tools import Tools

INSTRUCTIONS = "aimx email server. Manage mailboxes and emails for AI agents"
#: Tools that refuse unknown argument keys (spec/mcp.md §1).
STRICT = frozenset({"email_mark_read", "email_mark_unread", "mailbox_create", "mailbox_delete"})

U32 = Field(ge=0, le=2**32 - 1)
_HIDDEN = ("prompts/", "resources/", "completion/", "logging/")
_MAILBOX = "Mailbox name, as in mailbox_list (e.g. 'support')"
_ID = "Email ID: the filename stem shown by email_list (e.g. '2025-06-01-120000-hello')"
_FOLDER = '"inbox" (default) or "sent"'
_BODY = (
    "Message body in Markdown (rendered to HTML with a plain-text alternative). Write "
    "formatted prose normally: headings, lists, links and emphasis all render."
)
_TEXT_ONLY = (
    "Send the body verbatim as a single text/plain part, with no Markdown rendering. Only for "
    "plain machine-readable text; do NOT use it for formatted prose. Cannot be combined with "
    "html_body."
)
_HTML = (
    "Your own HTML for the text/html part; body then becomes the plain-text alternative. "
    "Cannot be combined with text_only."
)


def _agent_errors(fn):
    """Answer a C{ToolError} as an C{isError} result carrying exactly its text."""

    @functools.wraps(fn)
    async def tool(**arguments):
        try:
            return await fn(**arguments)
        except ToolError as e:
            return CallToolResult(content=[TextContent(type="text", text=str(e))], is_error=True)

    return tool


class _Gate:
    """Server middleware: a tools-only surface, and tool argument names checked.

    C{initialize} (and the newer C{server/discover}) advertise the C{tools}
    capability alone, and the prompt and resource methods the SDK serves are
    not found.  A C{tools/call} of an unknown tool, missing a required argument,
    or naming an unknown one for a L{STRICT} tool, is invalid params.

    @param signatures: tool name to the signature of its function.
    """

    def __init__(self, signatures: dict[str, inspect.Signature]):
        self.signatures = signatures

    async def __call__(self, ctx, call_next):
        if ctx.method.startswith(_HIDDEN):
            raise MCPError(METHOD_NOT_FOUND, "Method not found", ctx.method)
        if ctx.method == "tools/call" and isinstance(ctx.params, Mapping):
            problem = self.problem(ctx.params.get("name"), ctx.params.get("arguments") or {})
            if problem:
                raise MCPError(INVALID_PARAMS, problem)
        result = await call_next(ctx)
        if ctx.method in ("initialize", "server/discover"):
            result["capabilities"] = {"tools": result["capabilities"]["tools"]}
        return result

    def problem(self, name, arguments) -> str | None:
        """What is wrong with the argument names of a call, or C{None}."""
        signature = self.signatures.get(name)
        if signature is None:
            return f"unknown tool '{name}'"
        if not isinstance(arguments, Mapping):
            return None
        for parameter in signature.parameters.values():
            if parameter.default is inspect.Parameter.empty and parameter.name not in arguments:
                return f"missing required argument '{parameter.name}' for tool {name}"
        if name in STRICT:
            for key in arguments:
                if key not in signature.parameters:
                    return f"unknown argument '{key}' for tool {name}"
        return None


def build(client) -> MCPServer:
    """The server, its tools talking to the daemon through C{client}.

    @param client: see L{Tools}.
    """
    tools = Tools(client)
    signatures: dict[str, inspect.Signature] = {}
    server = MCPServer(
        "aimx", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING",
        subscriptions=False, middleware=[_Gate(signatures)],
    )

    def register(description: str):
        def decorator(fn):
            signatures[fn.__name__] = inspect.signature(fn)
            server.add_tool(_agent_errors(fn), description=description, structured_output=False)
            return fn

        return decorator

    @register(
        "List the mailboxes you can use: name, address (the only way to learn the mail "
        "domain), inbox_path, sent_path, total, unread, sent_count, registered. JSON array."
    )
    async def mailbox_list() -> str:
        return await tools.mailbox_list()

    @register(
        "Create a mailbox owned by you; returns its address (e.g. task-42@agent.example.com). "
        "Names use [a-z0-9._-]."
    )
    async def mailbox_create(
        name: Annotated[str, Field(description="Mailbox name (local part), e.g. 'task-42'")],
    ) -> str:
        return await tools.mailbox_create(name)

    @register(
        "Delete one of your mailboxes. It must be empty unless force is true, which first "
        "deletes every email in its inbox and sent folders (irreversible)."
    )
    async def mailbox_delete(
        name: Annotated[str, Field(description=_MAILBOX)],
        force: Annotated[bool, Field(description="Delete its emails too (irreversible)")] = False,
    ) -> str:
        return await tools.mailbox_delete(name, force)

    @register(
        "List emails in a mailbox folder, newest first, without bodies. Inbox rows: id, from, "
        "to, subject, date, read, trusted, thread_id, has_attachments; sent rows: id, from, "
        "to, subject, date, delivery_status, thread_id, has_attachments. trusted: \"true\" "
        "(an allowed sender, DKIM-verified), \"false\" (checked, not verified) or \"none\" "
        "(the mailbox checks no senders)."
    )
    async def email_list(
        mailbox: Annotated[str, Field(description=_MAILBOX)],
        folder: Annotated[str | None, Field(description=_FOLDER)] = None,
        limit: Annotated[int, U32, Field(description="Most rows to return (max 200)")] = 50,
        offset: Annotated[int, U32, Field(description="Rows to skip (for paging)")] = 0,
    ) -> str:
        return await tools.email_list(mailbox, folder, limit, offset)

    @register(
        "Read one email: its TOML frontmatter (metadata) followed by the body. Attachment "
        "paths in the frontmatter are absolute."
    )
    async def email_read(
        mailbox: Annotated[str, Field(description=_MAILBOX)],
        id: Annotated[str, Field(description=_ID)],
        folder: Annotated[str | None, Field(description=_FOLDER)] = None,
    ) -> str:
        return await tools.email_read(mailbox, id, folder)

    @register(
        "Send an email from one of your mailboxes. The body is Markdown and is sent as HTML "
        "with a plain-text alternative; keep text_only false for formatted prose. Every "
        "address in to, cc and bcc receives it; bcc addresses are never shown."
    )
    async def email_send(
        from_mailbox: Annotated[str, Field(description="Your mailbox name to send from")],
        to: Annotated[str, Field(description="Recipient address(es), comma-separated")],
        subject: Annotated[str, Field(description="Subject line")],
        body: Annotated[str, Field(description=_BODY)],
        cc: Annotated[str | None, Field(description="Cc address(es), comma-separated")] = None,
        bcc: Annotated[str | None, Field(description="Bcc address(es), comma-separated")] = None,
        reply_to: Annotated[
            str | None, Field(description="Message-ID being replied to (sets In-Reply-To)")
        ] = None,
        references: Annotated[
            str | None, Field(description="References chain; used only with reply_to")
        ] = None,
        html_body: Annotated[str | None, Field(description=_HTML)] = None,
        attachments: Annotated[
            list[str] | None, Field(description="Paths of files to attach (readable by you)")
        ] = None,
        text_only: Annotated[bool, Field(description=_TEXT_ONLY)] = False,
    ) -> str:
        return await tools.email_send(
            from_mailbox, to, subject, body, cc, bcc, reply_to, references, html_body,
            attachments, text_only,
        )

    @register(
        "Reply to an email in your inbox: to its sender, subject 'Re: …', threaded with "
        "In-Reply-To and References. The body is Markdown; keep text_only false for "
        "formatted prose."
    )
    async def email_reply(
        mailbox: Annotated[str, Field(description=_MAILBOX)],
        id: Annotated[str, Field(description=_ID)],
        body: Annotated[str, Field(description=_BODY)],
        text_only: Annotated[bool, Field(description=_TEXT_ONLY)] = False,
        html_body: Annotated[str | None, Field(description=_HTML)] = None,
    ) -> str:
        return await tools.email_reply(mailbox, id, body, text_only, html_body)

    @register("Mark an inbox email as read.")
    async def email_mark_read(
        mailbox: Annotated[str, Field(description=_MAILBOX)],
        id: Annotated[str, Field(description=_ID)],
    ) -> str:
        return await tools.email_mark_read(mailbox, id)

    @register("Mark an inbox email as unread.")
    async def email_mark_unread(
        mailbox: Annotated[str, Field(description=_MAILBOX)],
        id: Annotated[str, Field(description=_ID)],
    ) -> str:
        return await tools.email_mark_unread(mailbox, id)

    @register(
        "Run a command when mail arrives in (on_receive) or is sent from (after_send) one of "
        "your mailboxes. The command gets the email on stdin and AIMX_* variables; it runs "
        "as you. Afterwards, tell the user what will trigger the hook."
    )
    async def hook_create(
        mailbox: Annotated[str, Field(description=_MAILBOX)],
        event: Annotated[str, Field(description='"on_receive" or "after_send"')],
        cmd: Annotated[
            list[str], Field(description="argv, no shell; cmd[0] an absolute path")
        ],
        name: Annotated[
            str | None, Field(description="Hook name (default: derived from event and cmd)")
        ] = None,
        timeout_secs: Annotated[
            int | None, U32, Field(description="Seconds before the hook is killed (1-600, "
                                   "default 60)")
        ] = None,
        fire_on_untrusted: Annotated[
            bool,
            Field(
                description="Also fire for mail that failed the trust check (on_receive only). "
                "Leave false unless the user explicitly asks for it, and then tell the user "
                "that unverified senders can trigger the hook."
            ),
        ] = False,
    ) -> str:
        return await tools.hook_create(mailbox, event, cmd, name, timeout_secs, fire_on_untrusted)

    @register(
        "List the hooks on your mailboxes (or on one mailbox): name, mailbox, event, cmd, "
        "fire_on_untrusted, timeout_secs. JSON array."
    )
    async def hook_list(
        mailbox: Annotated[str | None, Field(description="Only this mailbox's hooks")] = None,
    ) -> str:
        return await tools.hook_list(mailbox)

    @register("Delete a hook by its name (as shown by hook_list).")
    async def hook_delete(
        name: Annotated[str, Field(description="Hook name")],
    ) -> str:
        return await tools.hook_delete(name)

    return server
