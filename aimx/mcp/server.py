"""The ``aimx`` MCP server (L3): fifteen tools, their schemas and wording (docs/mcp.md).

C{email_list}, C{email_search} and C{email_thread} read the daemon's index;
C{held_list} lists the mail the outbound policy holds for a person's approval
(docs/guardrails.md; approving is never the agent's).

L{build} registers the tools of L{aimx.mcp.tools.Tools} on an C{MCPServer}.  A
tool's C{ToolError} reaches the agent as an C{isError} result whose text is the
tool's text exactly (the SDK would prefix it with "Error executing tool").
Call problems: an unknown tool, a missing required argument, or an unknown one
on the four strict tools, is a JSON-RPC invalid-params error; a value of the
wrong type or outside the schema (a limit of 500, a folder "drafts") is a tool
error of one plain sentence naming the parameter and what it takes
(L{parameter_error}), checked before the tool runs.

The schemas carry what the tools accept: C{folder} and C{event} are enums,
C{limit} is 0-200, C{timeout_secs} 1-600.  Each tool is annotated: the seven
that only read are C{readOnlyHint}, the two deletes C{destructiveHint}, the rest
say they destroy nothing (the MCP default for a tool that writes is
destructive); sending and replying reach the outside world (C{openWorldHint}).
"""

import functools
import inspect
import json
from collections.abc import Mapping
from typing import Annotated, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, METHOD_NOT_FOUND, CallToolResult, TextContent, ToolAnnotations
from pydantic import BeforeValidator, Field, ValidationError

from aimx import __version__
from aimx.mcp.tools import LIMIT_MAX, Tools

INSTRUCTIONS = "aimx email server. Manage mailboxes and emails for AI agents"
#: Tools that refuse unknown argument keys (docs/mcp.md, "Conventions").
STRICT = frozenset({"email_mark_read", "email_mark_unread", "mailbox_create", "mailbox_delete"})

U32 = Field(ge=0, le=2**32 - 1)
#: What a tool may do (MCP tool annotations; the hints a client shows its user).
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
LOCAL_WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
MARK = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True,
                       open_world_hint=False)
DELETE = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)
SEND = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True)

_HIDDEN = ("prompts/", "resources/", "completion/", "logging/")
_MAILBOX = (
    "Mailbox name, as in mailbox_list (e.g. 'support'); its full address (e.g. "
    "'support@agent.example.com') also works"
)
_ID = "Email ID: the filename stem shown by email_list (e.g. '2025-06-01-120000-hello')"
#: A folder: the enum of the schema; an explicit null means the default, as absent.
Folder = Annotated[
    Literal["inbox", "sent"],
    BeforeValidator(lambda value: "inbox" if value is None else value),
    Field(description="Which folder: inbox (default) or sent"),
]
#: email_search's folder: inbox, sent or all (the default, also for an explicit null).
SearchFolder = Annotated[
    Literal["inbox", "sent", "all"],
    BeforeValidator(lambda value: "all" if value is None else value),
    Field(description="Which folder: inbox, sent or all (default)"),
]
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
#: The longest piece of a rejected string quoted back in a parameter error.
_SHOWN = 40


def _expected(schema: Mapping) -> str:
    """What a parameter's JSON schema accepts, in words (null aside)."""
    options = [s for s in schema.get("anyOf", ()) if s.get("type") != "null"]
    if len(options) == 1:
        return _expected(options[0])
    if "enum" in schema:
        words = [json.dumps(value, ensure_ascii=False) for value in schema["enum"]]
        return ", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else words[0]
    kind = schema.get("type")
    if kind == "integer":
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and high is not None:
            return f"an integer from {low} to {high}"
        return "an integer"
    if kind == "array":
        return f"an array of {_expected(schema.get('items', {})).removeprefix('a ')}s"
    return {"string": "a string", "boolean": "true or false"}.get(kind, f"a {kind}")


def _shown(value) -> str:
    """A rejected scalar as the agent wrote it (a string quoted, cut short, control
    characters escaped so the sentence stays one line), after a space; C{""} for
    anything else."""
    if isinstance(value, str):
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in value[:_SHOWN])
        return f" '{text}{'…' if len(value) > _SHOWN else ''}'"
    if value is None or isinstance(value, (bool, int, float)):
        return " " + json.dumps(value)
    return ""


def parameter_error(error: ValidationError, schema: Mapping) -> str:
    """One plain sentence for the first thing wrong with a call's arguments.

    C{Invalid <parameter> <value>: expected <what the schema takes>.}, e.g.
    C{Invalid limit 500: expected an integer from 0 to 200.} (the value is left
    out when it is not a scalar); the same form as the folder error of
    docs/mcp.md.  No library text or link reaches the agent.

    @param error: what validating the arguments raised.
    @param schema: the tool's input schema.
    """
    first = error.errors(include_url=False)[0]
    parameter = str(first["loc"][0]) if first["loc"] else "arguments"
    properties = schema.get("properties", {})
    if parameter not in properties:
        return f"Invalid arguments: {first['msg']}."
    # A value inside an array (cmd[1], say) is not shown: the sentence is about the parameter.
    shown = _shown(first.get("input")) if len(first["loc"]) == 1 else ""
    return f"Invalid {parameter}{shown}: expected {_expected(properties[parameter])}."


def _keyword_names(fn):
    """A tool whose parameter C{from_} is C{from} on the wire (a Python keyword: the
    schema names it through the field's alias, and the call arrives by that name)."""

    @functools.wraps(fn)
    async def tool(**arguments):
        if "from" in arguments:
            arguments["from_"] = arguments.pop("from")
        return await fn(**arguments)

    return tool


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
    """Server middleware: a tools-only surface, and tool arguments checked.

    C{initialize} (and the newer C{server/discover}) advertise the C{tools}
    capability alone, and the prompt and resource methods the SDK serves are
    not found.  A C{tools/call} of an unknown tool, missing a required argument,
    or naming an unknown one for a L{STRICT} tool, is invalid params; one whose
    values the tool's schema refuses is answered with L{parameter_error}'s
    sentence as a tool error, before the SDK would answer with its own text.

    @param tools: tool name to its registration.
    """

    def __init__(self, tools: dict[str, Tool]):
        self.tools = tools

    async def __call__(self, ctx, call_next):
        if ctx.method.startswith(_HIDDEN):
            raise MCPError(METHOD_NOT_FOUND, "Method not found", ctx.method)
        if ctx.method == "tools/call" and isinstance(ctx.params, Mapping):
            name, arguments = ctx.params.get("name"), ctx.params.get("arguments") or {}
            problem = self.problem(name, arguments)
            if problem:
                raise MCPError(INVALID_PARAMS, problem)
            refused = self.refused(name, arguments)
            if refused:
                return CallToolResult(content=[TextContent(type="text", text=refused)],
                                      is_error=True)
        result = await call_next(ctx)
        if ctx.method in ("initialize", "server/discover"):
            result["capabilities"] = {"tools": result["capabilities"]["tools"]}
        return result

    def problem(self, name, arguments) -> str | None:
        """What is wrong with the argument names of a call, or C{None}."""
        tool = self.tools.get(name)
        if tool is None:
            return f"Unknown tool '{name}'."
        if not isinstance(arguments, Mapping):
            return None
        parameters = inspect.signature(tool.fn).parameters
        for parameter in parameters.values():
            if parameter.default is inspect.Parameter.empty and parameter.name not in arguments:
                return f"Missing required argument '{parameter.name}' for tool {name}."
        if name in STRICT:
            for key in arguments:
                if key not in parameters:
                    return f"Unknown argument '{key}' for tool {name}."
        return None

    def refused(self, name, arguments) -> str | None:
        """The sentence for argument values the tool's schema refuses, or C{None}."""
        if not isinstance(arguments, Mapping):
            return None
        tool = self.tools[name]
        try:
            tool.fn_metadata.validate_arguments(dict(arguments))
        except ValidationError as e:
            return parameter_error(e, tool.parameters)
        return None


def build(client) -> MCPServer:
    """The server, its tools talking to the daemon through C{client}.

    @param client: see L{Tools}.
    """
    tools = Tools(client)
    registered: dict[str, Tool] = {}

    def register(description: str, annotations: ToolAnnotations):
        def decorator(fn):
            registered[fn.__name__] = Tool.from_function(
                _agent_errors(_keyword_names(fn)), name=fn.__name__, description=description,
                annotations=annotations, structured_output=False,
            )
            return fn

        return decorator

    @register(
        "List the mailboxes you can use: name, address (the only way to learn the mail "
        "domain), inbox_path, sent_path, total, unread, sent_count, registered. JSON array.",
        READ_ONLY,
    )
    async def mailbox_list() -> str:
        return await tools.mailbox_list()

    @register(
        "Create a mailbox owned by you; returns its address (e.g. task-42@agent.example.com). "
        "Names use [a-z0-9._-].",
        LOCAL_WRITE,
    )
    async def mailbox_create(
        name: Annotated[str, Field(description="Mailbox name (local part), e.g. 'task-42'")],
    ) -> str:
        return await tools.mailbox_create(name)

    @register(
        "Delete one of your mailboxes. It must be empty unless force is true, which first "
        "deletes every email in its inbox and sent folders (irreversible).",
        DELETE,
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
        "(the mailbox checks no senders).",
        READ_ONLY,
    )
    async def email_list(
        mailbox: Annotated[str, Field(description=_MAILBOX)],
        folder: Folder = "inbox",
        limit: Annotated[
            int, Field(ge=0, le=LIMIT_MAX, description="Most rows to return (0-200)")
        ] = 50,
        offset: Annotated[int, U32, Field(description="Rows to skip (for paging)")] = 0,
    ) -> str:
        return await tools.email_list(mailbox, folder, limit, offset)

    @register(
        "Read one email: its TOML frontmatter (metadata) followed by the body. Attachment "
        "paths in the frontmatter are absolute. With extracted, only what its sender wrote "
        "in it: the body without quoted history and signature, and no frontmatter.",
        READ_ONLY,
    )
    async def email_read(
        mailbox: Annotated[str, Field(description=_MAILBOX)],
        id: Annotated[str, Field(description=_ID)],
        folder: Folder = "inbox",
        extracted: Annotated[bool, Field(
            description="true: only the new text of the email (a reply without the quoted "
            "history and signature), as email_thread shows it")] = False,
    ) -> str:
        return await tools.email_read(mailbox, id, folder, extracted)

    @register(
        "Send an email from one of your mailboxes. The body is Markdown and is sent as HTML "
        "with a plain-text alternative; keep text_only false for formatted prose. Every "
        "address in to, cc and bcc receives it; bcc addresses are never shown.",
        SEND,
    )
    async def email_send(
        from_mailbox: Annotated[
            str, Field(description="Your mailbox to send from: its name or its address")
        ],
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
        "formatted prose.",
        SEND,
    )
    async def email_reply(
        mailbox: Annotated[str, Field(description=_MAILBOX)],
        id: Annotated[str, Field(description=_ID)],
        body: Annotated[str, Field(description=_BODY)],
        text_only: Annotated[bool, Field(description=_TEXT_ONLY)] = False,
        html_body: Annotated[str | None, Field(description=_HTML)] = None,
    ) -> str:
        return await tools.email_reply(mailbox, id, body, text_only, html_body)

    @register(
        "Search one mailbox's emails (inbox and sent unless folder says otherwise), newest "
        "first. The query's words must all match, in the subject, from, to or body; word* "
        "matches words starting with it; \"two words\" matches them next to each other. "
        "Filters narrow it further (an empty query lists by filters alone). Rows are "
        "email_list's, with folder and a short snippet of the body around the match; read "
        "a whole email with email_read. JSON array.",
        READ_ONLY,
    )
    async def email_search(
        mailbox: Annotated[str, Field(description=_MAILBOX)],
        query: Annotated[str, Field(description="Words to find, e.g. 'invoice march' or "
                                    "'\"quarterly report\" budg*'")],
        folder: SearchFolder = "all",
        from_: Annotated[str | None, Field(
            alias="from", description="Only emails whose From contains this text (any case), "
            "e.g. 'alice@example.com' or 'example.com'")] = None,
        since: Annotated[str | None, Field(
            description="Only emails dated on or after this RFC 3339 date or date-time "
            "(2025-06-01, 2025-06-01T09:00:00Z)")] = None,
        until: Annotated[str | None, Field(
            description="Only emails dated on or before this RFC 3339 date (the whole day) "
            "or date-time")] = None,
        unread: Annotated[bool | None, Field(
            description="true: only inbox emails not marked read; false: only the others")
        ] = None,
        trusted: Annotated[bool | None, Field(
            description='true: only emails with trusted = "true" (an allowed sender, '
            "DKIM-verified); false: only the others")] = None,
        limit: Annotated[
            int, Field(ge=0, le=LIMIT_MAX, description="Most rows to return (0-200)")
        ] = 20,
    ) -> str:
        return await tools.email_search(mailbox, query, folder, from_, since, until, unread,
                                        trusted, limit)

    @register(
        "Get a conversation: every email of a thread in the mailbox, received (inbox) and "
        "sent, oldest first (the newest limit of them). Give id (any email of the thread, "
        "as email_list shows it) or thread_id. Each row: id, folder, from, to, date, "
        "subject, trusted, read, text; text is what that email's sender wrote, without the "
        "quoted history and signature (read the whole body with email_read). JSON array.",
        READ_ONLY,
    )
    async def email_thread(
        mailbox: Annotated[str, Field(description=_MAILBOX)],
        id: Annotated[str | None, Field(description="Any email of the thread: " + _ID)] = None,
        thread_id: Annotated[str | None, Field(
            description="The thread_id of its emails (as email_list shows it)")] = None,
        limit: Annotated[int, Field(ge=0, le=LIMIT_MAX, description="Most emails (0-200), "
                                    "the newest of the thread")] = 50,
    ) -> str:
        return await tools.email_thread(mailbox, id, thread_id, limit)

    @register("Mark an inbox email as read.", MARK)
    async def email_mark_read(
        mailbox: Annotated[str, Field(description=_MAILBOX)],
        id: Annotated[str, Field(description=_ID)],
    ) -> str:
        return await tools.email_mark_read(mailbox, id)

    @register("Mark an inbox email as unread.", MARK)
    async def email_mark_unread(
        mailbox: Annotated[str, Field(description=_MAILBOX)],
        id: Annotated[str, Field(description=_ID)],
    ) -> str:
        return await tools.email_mark_unread(mailbox, id)

    @register(
        "Run a command when mail arrives in (on_receive) or is sent from (after_send) one of "
        "your mailboxes. The command gets the email on stdin and AIMX_* variables; it runs "
        "as you. Afterwards, tell the user what will trigger the hook.",
        LOCAL_WRITE,
    )
    async def hook_create(
        mailbox: Annotated[str, Field(description=_MAILBOX)],
        event: Annotated[
            Literal["on_receive", "after_send"],
            Field(description="on_receive (mail arrives) or after_send (mail was sent)"),
        ],
        cmd: Annotated[
            list[str] | None,
            Field(description="argv, no shell; cmd[0] an absolute path (or give url)"),
        ] = None,
        name: Annotated[
            str | None, Field(description="Hook name (default: derived from event and cmd)")
        ] = None,
        timeout_secs: Annotated[
            int | None,
            Field(ge=1, le=600, description="Seconds before the hook is killed (1-600, "
                  "default 60)"),
        ] = None,
        fire_on_untrusted: Annotated[
            bool,
            Field(
                description="Also fire for mail that failed the trust check (on_receive only). "
                "Leave false unless the user explicitly asks for it, and then tell the user "
                "that unverified senders can trigger the hook."
            ),
        ] = False,
        fire_on_review: Annotated[
            bool,
            Field(
                description='Also fire for mail stored with risk = "review" (a content guard '
                "matched, hidden text, a misleading sender; on_receive only). Leave false "
                "unless the user explicitly asks for it: such mail may carry instructions "
                "meant for you."
            ),
        ] = False,
        url: Annotated[
            str | None,
            Field(description="Instead of cmd: POST each event, signed (Standard Webhooks), "
                  "to this https:// URL; the answer holds the generated secret, once"),
        ] = None,
    ) -> str:
        return await tools.hook_create(mailbox, event, cmd, name, timeout_secs, fire_on_untrusted,
                                       fire_on_review, url)

    @register(
        "List the hooks on your mailboxes (or on one mailbox): name, mailbox, event, cmd, "
        "fire_on_untrusted, fire_on_review, timeout_secs. JSON array.",
        READ_ONLY,
    )
    async def hook_list(
        mailbox: Annotated[str | None, Field(description="Only this mailbox's hooks")] = None,
    ) -> str:
        return await tools.hook_list(mailbox)

    @register(
        "List the messages of a mailbox that wait for a person's approval before they are "
        "sent (the outbound policy held them; email_send said \"held for approval: <id>\"): "
        "hold_id, mailbox, state, from, to, cc, bcc, subject, held_reason, held_at, "
        "expires_at, attachments. Only a person can approve or reject them. JSON array.",
        READ_ONLY,
    )
    async def held_list(
        mailbox: Annotated[str, Field(description=_MAILBOX)],
    ) -> str:
        return await tools.held_list(mailbox)

    @register("Delete a hook by its name (as shown by hook_list).", DELETE)
    async def hook_delete(
        name: Annotated[str, Field(description="Hook name")],
    ) -> str:
        return await tools.hook_delete(name)

    return MCPServer(
        "aimx", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING",
        subscriptions=False, middleware=[_Gate(registered)], tools=list(registered.values()),
    )
