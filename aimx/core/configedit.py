"""Edits of the configuration (L0, pure: stdlib, attrs and tomlkit's document model).

Two halves.  The control-command edits check one request against a frozen
L{Config} and return the new snapshot, raising the control socket's wire
errors (docs/troubleshooting.md, "Error codes"); the daemon (under its locks),
the CLI's root fallback (daemon down) and the setup wizard share them.
L{rewrite_text} then turns config.toml's current text into text that loads as
the new snapshot, changing only what differs: comments, key order and layout are
kept (docs/configuration.md, "How the file changes").
L{aimx.store.configfile} reads, checks and atomically writes the file around it.
"""

import difflib
import json
import re
import types
from collections.abc import Callable

import attrs
import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import AoT, Comment, Table

from aimx.core import webhook, webhookurl
from aimx.core.config import (
    DEFAULT_HOOK_TIMEOUT,
    EVENTS,
    HOOK_TYPES,
    MAX_HOOK_TIMEOUT,
    Config,
    HookConfig,
    MailboxConfig,
    ascii_lower,
    hook_toml,
    load_text,
    mailbox_toml,
    make_hook,
    validate_hooks,
    validate_mailbox_name,
)
from aimx.errors import (
    ConfigError,
    MailboxError,
    MalformedError,
    NoEntry,
    ProtocolError,
    ValidationError,
)

_OWNER = re.compile(r"[a-z_][a-z0-9_-]*\$?")
_HOOK_NAME = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}")
_BODY_KEYS = ("cmd", "fire_on_untrusted", "fire_on_review", "type", "timeout_secs")
#: A webhook's body: C{url} instead of C{cmd}, and its own keys.
_WEBHOOK_BODY_KEYS = ("url", "secret", "allow_insecure", "allow_private")
_TEMPLATE = "template hooks were removed. See docs/hooks.md for the supported raw-cmd schema"
_LEGACY_KEYS = {
    "template": f"hook sets `template`; {_TEMPLATE}",
    "params": f"hook sets `params`; {_TEMPLATE}",
    "run_as": "hook sets `run_as`; the field was removed — hooks now run as the mailbox's `owner`",
    "origin": "hook sets `origin`; the field was removed",
    "dangerously_support_untrusted": (
        "hook sets `dangerously_support_untrusted`; the field was renamed to "
        "`fire_on_untrusted`"
    ),
    "stdin": (
        "hook sets removed field 'stdin' — the email is always piped to hooks; "
        "remove this key from the request"
    ),
}


def check_owner_argument(owner: str) -> None:
    """The C{owner} argument of MAILBOX-CREATE must look like a Linux username.

    @raise MalformedError: C{invalid Owner value: "<v>" (...)}.
    """
    if not valid_owner_name(owner):
        raise MalformedError(
            f'invalid Owner value: "{owner}" (must match [a-z_][a-z0-9_-]*[$]?)'
        )


def valid_owner_name(owner: str) -> bool:
    """Whether C{owner} passes the owner rule of config load (C{[a-z_][a-z0-9_-]*[$]?}, <= 32)."""
    return len(owner) <= 32 and _OWNER.fullmatch(owner) is not None


def check_caller_owner(owner: str) -> None:
    """A non-root creator's username must be a valid owner, else config load would fail.

    @raise ValidationError: naming the owner and the rule.
    """
    if not valid_owner_name(owner):
        raise ValidationError(
            f"owner '{owner}' is not a valid mailbox owner: must match "
            "[a-z_][a-z0-9_-]*[$]? (at most 32 characters); ask root to create the "
            "mailbox with a valid --owner"
        )


def check_mailbox_name(name: str) -> None:
    """The create/delete name rule (docs/concepts.md, "Mailboxes").

    @raise ValidationError: naming the rule.
    """
    try:
        validate_mailbox_name(name)
    except ConfigError as e:
        raise ValidationError(str(e)) from None


# Role addresses: the names other sites and people expect to reach the operator
# of a domain (RFC 2142 §4-§5, and RFC 5321 §4.5.1 for postmaster), plus the usual
# system names.  Whoever holds one receives abuse reports, bounces and security
# notices meant for the operator (certificate authorities even send domain
# validation mail to admin@, webmaster@, hostmaster@ and postmaster@), so only
# root hands them out.  A closed list, each with where it comes from (shown in
# the refusal).
ROLE_NAMES = types.MappingProxyType({
    "postmaster": "RFC 2142",
    "abuse": "RFC 2142",
    "hostmaster": "RFC 2142",
    "webmaster": "RFC 2142",
    "security": "RFC 2142",
    "noc": "RFC 2142",
    "mailer-daemon": "system name",
    "root": "system name",
    "admin": "system name",
})


def role_name_source(name: str) -> str | None:
    """Where a role name comes from (C{"RFC 2142"}, C{"system name"}), or C{None}.

    Compared ASCII case-insensitively, as mail is routed
    (L{aimx.core.config.resolve_mailbox}): C{Abuse@} reaches the same mailbox
    as C{abuse@}, and RFC 5321 §4.5.1 makes C{postmaster} case-insensitive.
    """
    return ROLE_NAMES.get(ascii_lower(name))


def check_role_name(name: str, *, by_root: bool) -> None:
    """Only root creates a mailbox whose name (the local part of its address) is a role.

    Creation only: a role mailbox already in config.toml works like any other.

    @param by_root: the caller is root.
    @raise ValidationError: C{mailbox name '<name>' is a role address (<source>);
        only root can create it}.
    """
    source = role_name_source(name)
    if source is not None and not by_root:
        raise ValidationError(
            f"mailbox name '{name}' is a role address ({source}); only root can create it"
        )


def check_new_owner(name: str, owner: str) -> None:
    """Refuse C{root} as the owner of a created mailbox (aimx decision, README).

    Root-owned mailboxes are allowed, but only by hand-editing config.toml.

    @raise ValidationError: C{owner} is C{root}.
    """
    if owner == "root":
        raise ValidationError(
            f"owner 'root' is not allowed for mailbox '{name}': root-owned mailboxes "
            "can only be configured by hand in config.toml"
        )


def add_mailbox(config: Config, name: str, owner: str) -> Config:
    """The config with C{[mailboxes.<name>]} (address C{<name>@<domain>}, no hooks).

    @raise MailboxError: the name is already configured.
    """
    if config.mailbox(name) is not None:
        raise MailboxError(f"mailbox '{name}' already exists")
    mailbox = MailboxConfig(name=name, address=f"{name}@{config.domain}", owner=owner)
    return attrs.evolve(config, mailboxes=config.mailboxes + (mailbox,))


def remove_mailbox(config: Config, name: str) -> Config:
    """The config without mailbox C{name} (which must exist)."""
    return attrs.evolve(config, mailboxes=[mb for mb in config.mailboxes if mb.name != name])


def parse_hook_request(event: str, name: str | None, body: str) -> HookConfig:
    """The checks of HOOK-CREATE (docs/hooks.md): event, name, body, the hook.

    @param name: the explicit name, or C{None} to derive it.
    @param body: the JSON object C{{"cmd": [...], "fire_on_untrusted",
        "fire_on_review", "type", "timeout_secs"}}.
    @return: the hook, not yet checked against the other hooks (L{add_hook}).
    @raise ValidationError: bad event, name or hook field.
    @raise ProtocolError: legacy keys, or a body that does not decode.
    """
    if event not in EVENTS:
        raise ValidationError(f"invalid event '{event}': expected 'on_receive' or 'after_send'")
    if name is not None and not _HOOK_NAME.fullmatch(name):
        raise ValidationError(
            f"invalid hook name '{name}': must match [a-zA-Z0-9_][a-zA-Z0-9_.-]{{0,127}}"
        )
    fields = _decode_body(body)
    fields.pop("secret", None)
    hook = make_hook(event, fields.pop("cmd"), name=name, **fields)
    _check_single_hook(hook)
    return hook


def request_secret(body: str) -> bytes | None:
    """The C{secret} of a webhook's HOOK-CREATE body, as its HMAC key; C{None}: none given.

    @raise ValidationError: not a C{whsec_} secret (the text never quotes it).
    """
    secret = _decode_body(body).get("secret")
    if secret is None:
        return None
    try:
        return webhook.parse_secret(secret)
    except webhook.SecretError as e:
        raise ValidationError(f"`secret`: {e}") from None


def _body_error(detail: str) -> ProtocolError:
    return ProtocolError(f"invalid HOOK-CREATE body: {detail}")


def _decode_body(body: str) -> dict:
    try:
        data = json.loads(body)
    except ValueError as e:
        raise _body_error(str(e)) from None
    if not isinstance(data, dict):
        raise _body_error("expected a JSON object")
    for key, reason in _LEGACY_KEYS.items():
        if key in data:
            raise ProtocolError(reason)
    hook_type = data.get("type", "cmd")
    if not isinstance(hook_type, str):
        raise _body_error("`type`: expected a string")
    keys = _BODY_KEYS + _WEBHOOK_BODY_KEYS if hook_type == "webhook" else _BODY_KEYS
    for key in data:
        if key not in keys:
            expected = ", ".join(f"`{k}`" for k in keys)
            raise _body_error(f"unknown field `{key}`, expected one of {expected}")
    webhook_fields = {}
    if hook_type == "webhook":
        webhook_fields = _decode_webhook(data)
        data.setdefault("cmd", [])
    if "cmd" not in data:
        raise _body_error("missing field `cmd`")
    cmd = data["cmd"]
    if not (isinstance(cmd, list) and all(isinstance(arg, str) for arg in cmd)):
        raise _body_error("`cmd`: expected an array of strings")
    fire = data.get("fire_on_untrusted", False)
    if not isinstance(fire, bool):
        raise _body_error("`fire_on_untrusted`: expected a boolean")
    review = data.get("fire_on_review", False)
    if not isinstance(review, bool):
        raise _body_error("`fire_on_review`: expected a boolean")
    timeout = data.get("timeout_secs", DEFAULT_HOOK_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
        raise _body_error("`timeout_secs`: expected a non-negative integer")
    return {
        "cmd": cmd,
        "fire_on_untrusted": fire,
        "fire_on_review": review,
        "hook_type": hook_type,
        "timeout_secs": timeout,
        **webhook_fields,
    }


def _decode_webhook(data: dict) -> dict:
    """A webhook body's C{url}, C{secret} and flags, typed."""
    if "url" not in data:
        raise _body_error("missing field `url`")
    fields = {}
    for key in _WEBHOOK_BODY_KEYS:
        if key not in data:
            continue
        kind = str if key in ("url", "secret") else bool
        if not isinstance(data[key], kind):
            raise _body_error(f"`{key}`: expected a {'string' if kind is str else 'boolean'}")
        fields[key] = data[key]
    return fields


def _check_single_hook(hook: HookConfig) -> None:
    """The single-hook texts of HOOK-CREATE (they differ from the load-time ones)."""
    if hook.type == "webhook":
        if hook.cmd:
            raise ValidationError("a webhook has `url`, not `cmd`")
        problem = webhookurl.problem(hook.url, allow_insecure=hook.allow_insecure,
                                     allow_private=hook.allow_private)
        if problem is not None:
            raise ValidationError(f"hook {problem}")
    else:
        _check_command(hook)
    for flag in ("fire_on_untrusted", "fire_on_review"):
        if getattr(hook, flag) and hook.event != "on_receive":
            raise ValidationError(f"`{flag} = true` is `on_receive` only")
    if hook.timeout_secs == 0:
        raise ValidationError("`timeout_secs = 0`: must be > 0")
    if hook.timeout_secs > MAX_HOOK_TIMEOUT:
        raise ValidationError(
            f"`timeout_secs = {hook.timeout_secs}` exceeds the max of {MAX_HOOK_TIMEOUT}"
        )


def _check_command(hook: HookConfig) -> None:
    if not hook.cmd:
        raise ValidationError(
            'hook has empty `cmd`: must be a non-empty argv array, e.g. `["/bin/echo", "hi"]`'
        )
    if not hook.cmd[0].strip():
        raise ValidationError("hook has blank `cmd[0]`")
    if not hook.cmd[0].startswith("/"):
        raise ValidationError(
            f"hook has non-absolute `cmd[0]` '{hook.cmd[0]}': hooks fire from "
            "/var/lib/aimx/... so PATH lookup is brittle; use an absolute path"
        )
    if hook.type not in HOOK_TYPES:
        raise ValidationError(
            f"hook has unsupported type '{hook.type}': only `cmd` and `webhook` are supported")


def check_hook_target(config: Config, mailbox: MailboxConfig) -> None:
    """Hooks on the catchall are forbidden.

    @raise MailboxError: C{mailbox} is the catchall.
    """
    if mailbox.is_catchall(config.domain):
        raise MailboxError(
            f"mailbox '{mailbox.name}' is the catchall; hooks on the catchall are forbidden"
        )


def add_hook(config: Config, mailbox: str, hook: HookConfig) -> Config:
    """The config with C{hook} appended to C{mailbox}, names still globally unique.

    @raise NoEntry: the mailbox is gone.
    @raise ValidationError: the effective name collides (the config loader's texts).
    """
    current = config.mailbox(mailbox)
    if current is None:
        raise NoEntry(f"mailbox '{mailbox}' does not exist")
    new = _replace(config, attrs.evolve(current, hooks=current.hooks + (hook,)))
    try:
        validate_hooks(new)
    except ConfigError as e:
        raise ValidationError(str(e)) from None
    return new


def find_hook(config: Config, name: str) -> MailboxConfig | None:
    """The first mailbox holding a hook whose effective name is C{name}."""
    for mb in config.mailboxes:
        if any(hook.name == name for hook in mb.hooks):
            return mb
    return None


def remove_hook(config: Config, mailbox: str, name: str) -> Config:
    """The config without the hooks named C{name} on C{mailbox}.

    @raise NoEntry: C{hook '<name>' not found} when there is none left to remove.
    """
    current = config.mailbox(mailbox)
    hooks = () if current is None else tuple(h for h in current.hooks if h.name != name)
    if current is None or len(hooks) == len(current.hooks):
        raise NoEntry(f"hook '{name}' not found")
    return _replace(config, attrs.evolve(current, hooks=hooks))


def set_disabled(config: Config, name: str, disabled: bool) -> Config:
    """The config with the hook C{name}'s C{disabled} flag set to C{disabled}.

    @raise NoEntry: no such hook.
    """
    mailbox = find_hook(config, name)
    if mailbox is None:
        raise NoEntry(f"hook '{name}' not found")
    hooks = tuple(attrs.evolve(h, disabled=disabled) if h.name == name else h
                  for h in mailbox.hooks)
    return _replace(config, attrs.evolve(mailbox, hooks=hooks))


def _replace(config: Config, mailbox: MailboxConfig) -> Config:
    return attrs.evolve(
        config,
        mailboxes=[mailbox if mb.name == mailbox.name else mb for mb in config.mailboxes],
    )


def hook_rows(config: Config, shown: Callable[[MailboxConfig], bool]) -> list[dict]:
    """HOOK-LIST rows of the mailboxes C{shown} accepts, sorted by mailbox, event, name.

    A webhook's row adds C{type}, C{url}; a disabled hook's, C{disabled}.
    """
    rows = []
    for mb in config.mailboxes:
        if not shown(mb):
            continue
        for hook in mb.hooks:
            row = {
                "name": hook.name,
                "mailbox": mb.name,
                "event": hook.event,
                "cmd": list(hook.cmd),
                "fire_on_untrusted": hook.fire_on_untrusted,
                "fire_on_review": hook.fire_on_review,
                "timeout_secs": hook.timeout_secs,
            }
            if hook.type == "webhook":
                row.update(type=hook.type, url=hook.url)
            if hook.disabled:
                row["disabled"] = True
            rows.append(row)
    return sorted(rows, key=lambda row: (row["mailbox"], row["event"], row["name"]))


# -- the format-preserving rewrite of config.toml --------------------------------
#
# The text is cut into tokens, one per key/value, comment and table header, by
# letting tomlkit (the parser) render the document with a marker in front of each
# item: NUL cannot occur in TOML text (TOML 1.0: control characters are invalid in
# comments and must be escaped in strings), so the markers are unambiguous and the
# positions exact.  A header's section runs from its lead (the comment lines
# directly above it, no blank line between) to the next section's lead, so a table
# deleted takes its own comments with it and leaves its neighbours' alone.  Every
# change is then a splice of that text: a value replaced after its key (its inline
# comment kept), a key line added after the table's last key or deleted, a
# section added or deleted whole.  Anything the splices cannot express is refused
# with an error naming the file; the caller checks that the result loads as the
# new config before writing it.

_MARK = re.compile("\x00([0-9]+)\x00")
_TOP_KEYS = (
    "domain",
    "data_dir",
    "dkim_selector",
    "trust",
    "trusted_senders",
    "verify_host",
    "backup_mx",
    "enable_ipv6",
    "signature",
    "max_sessions_per_ip",
)
_MAILBOX_KEYS = ("address", "owner", "trust", "trusted_senders")
_HEADER, _KEY, _COMMENT = "header", "key", "comment"


@attrs.frozen
class _Token:
    """One item of the document and where its text is.

    @ivar path: a header's table path, or a key's full path (table path + key).
    @ivar aot: a C{[[...]]} header.
    @ivar end: where the next token starts (blank lines before it included).
    @ivar line_end: past the item's own line(s): its value and inline comment.
    @ivar blank_after: a blank line separates it from the next token.
    @ivar section: the index of the header section it sits in, -1 before any.
    @ivar item: the tomlkit item (a key's value and inline comment).
    """

    kind: str
    path: tuple[str, ...]
    aot: bool
    start: int
    end: int
    line_end: int
    blank_after: bool
    section: int
    item: object = attrs.field(eq=False, repr=False)


@attrs.frozen
class _Section:
    """A header, the comment lines directly above it, and everything up to the next one.

    @ivar start: where its lead comments (or, without any, its header) start.
    @ivar header: the header token.
    @ivar end: where the next section starts (the end of the text for the last).
    """

    path: tuple[str, ...]
    aot: bool
    start: int
    header: _Token
    end: int


def rewrite_text(text: str, path: str, new: Config) -> str:
    """config.toml's text edited in place so that it loads as C{new}.

    The changes are those between the config the text holds and C{new}: top-level
    and mailbox keys are replaced, added (after the table's last key) or removed;
    mailbox tables and hook tables are added or deleted whole (with the comment
    lines directly above their header).  Everything else stays byte for byte.

    @param path: the file's path, for error messages.
    @param new: the config to write (its in-memory C{data_dir} override is not written).
    @raise ConfigError: C{"<path>: ..."}: the text does not load, or C{new} cannot
        be reached by editing its layout in place (the message says why).
    """
    try:
        old, _ = load_text(text, path)
    except ConfigError as e:
        reason = str(e).removeprefix(f"{path}: ")
        raise ConfigError(
            f"{path}: the file does not load, so it is not edited: {reason}"
        ) from None
    new = new.as_written()
    if old == new:
        return text
    doc = _Document(text, path)
    for key in _TOP_KEYS:
        if getattr(old, key) != getattr(new, key):
            doc.set((), key, _plain(getattr(new, key)))
    if old.release_manifest_url != new.release_manifest_url:
        doc.set(("upgrade",), "release_manifest_url", new.release_manifest_url)
    kept = [mb.name for mb in old.mailboxes if new.mailbox(mb.name) is not None]
    added = [mb for mb in new.mailboxes if old.mailbox(mb.name) is None]
    if kept + [mb.name for mb in added] != [mb.name for mb in new.mailboxes]:
        raise doc.refusal("the mailboxes would change order")
    for mb in old.mailboxes:
        replacement = new.mailbox(mb.name)
        if replacement is None:
            doc.delete_mailbox(mb.name)
        elif replacement != mb:
            doc.update_mailbox(mb, replacement)
    if added:
        doc.add_mailboxes(added)
    return doc.result()


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _key_text(path) -> str:
    return ".".join(tomlkit.key(part).as_string() for part in path)


def _value(value):
    """A Python value as a tomlkit item, tables and arrays inline."""
    if isinstance(value, dict):
        table = tomlkit.inline_table()
        for key, item in value.items():
            table.append(key, _value(item))
        return table
    if isinstance(value, (list, tuple)):
        array = tomlkit.array()
        for item in value:
            array.append(_value(item))
        return array
    return tomlkit.item(value)


def _value_text(value) -> str:
    return _value(value).as_string()


def _table_text(path, table: dict, *, aot: bool = False) -> str:
    """A header line and one line per key (C{table}'s values inline)."""
    header = f"[[{_key_text(path)}]]" if aot else f"[{_key_text(path)}]"
    lines = "".join(f"{_key_text((key,))} = {_value_text(value)}\n"
                    for key, value in table.items())
    return f"{header}\n{lines}"


def _ends_blank(text: str) -> bool:
    """Whether C{text} ends with an empty line (a blank line before what follows)."""
    return text.endswith("\n") and text[:-1].rstrip(" \t\r").endswith("\n")


class _Document:
    """config.toml's text cut into tokens and sections, and the splices planned on it."""

    def __init__(self, text: str, path: str):
        self.path = path
        self.text = text
        self.newline = "\r\n" if "\r\n" in text else "\n"
        self.tokens, self.sections = self._layout()
        self.keys: dict[tuple[str, ...], _Token] = {}
        for token in self.tokens:
            if token.kind == _KEY:
                self.keys.setdefault(token.path, token)
        self.edits: list[tuple[int, int, str]] = []
        self.insertions: list[tuple[int, int, int, object]] = []

    def refusal(self, reason: str) -> ConfigError:
        """The error for an edit the file's layout cannot take in place."""
        return ConfigError(f"{self.path}: cannot edit in place: {reason}")

    # -- reading the layout -------------------------------------------------------

    def _layout(self) -> tuple[list[_Token], list[_Section]]:
        try:
            doc = tomlkit.parse(self.text)
        except TOMLKitError as e:
            raise self.refusal(f"tomlkit cannot parse it: {e}") from None
        marks: list[tuple[str, tuple[str, ...], bool, object, str]] = []

        def mark(item, kind, path, aot=False):
            marks.append((kind, path, aot, item, item.trivia.indent))
            item.trivia.indent = f"\x00{len(marks) - 1}\x00{item.trivia.indent}"

        def walk(container, path):
            for key, item in container.body:
                if key is None:
                    if isinstance(item, Comment):
                        mark(item, _COMMENT, path)
                    continue
                below = path + tuple(part.key for part in key)
                if isinstance(item, AoT):
                    for table in item.body:
                        mark(table, _HEADER, below, aot=True)
                        walk(table.value, below)
                elif isinstance(item, Table):
                    mark(item, _HEADER, below)
                    walk(item.value, below)
                else:
                    mark(item, _KEY, below)

        walk(doc, ())
        marked = doc.as_string()
        # A table without a [header] of its own (a super table, a dotted key's
        # table) renders no marker; put its indentation back as it was.
        shown = {int(n) for n in _MARK.findall(marked)}
        hidden = [m for n, m in enumerate(marks) if n not in shown]
        if hidden:
            for _, _, _, item, indent in hidden:
                item.trivia.indent = indent
            marked = doc.as_string()
        parts = _MARK.split(marked)
        if "".join(parts[0::2]) != self.text:
            raise self.refusal("tomlkit does not reproduce its text")
        starts, offset = [], len(parts[0])
        for number, chunk in zip(parts[1::2], parts[2::2]):
            starts.append((marks[int(number)], offset))
            offset += len(chunk)
        tokens: list[_Token] = []
        section = -1
        for n, ((kind, path, aot, item, _), start) in enumerate(starts):
            end = starts[n + 1][1] if n + 1 < len(starts) else len(self.text)
            chunk = self.text[start:end]
            body = len(chunk.rstrip(" \t\r\n"))
            rest = chunk[body:]
            newline = rest.find("\n")
            if kind == _HEADER:
                section += 1
            tokens.append(_Token(
                kind=kind, path=path, aot=aot, start=start, end=end,
                line_end=start + body + (newline + 1 if newline >= 0 else len(rest)),
                blank_after=rest.count("\n") >= 2, section=section, item=item,
            ))
        headers = [n for n, token in enumerate(tokens) if token.kind == _HEADER]
        leads = []
        for n in headers:
            first = n
            while (first > 0 and tokens[first - 1].kind == _COMMENT
                   and not tokens[first - 1].blank_after):
                first -= 1
            leads.append(tokens[first].start)
        sections = [
            _Section(
                path=tokens[n].path, aot=tokens[n].aot, start=leads[i], header=tokens[n],
                end=leads[i + 1] if i + 1 < len(leads) else len(self.text),
            )
            for i, n in enumerate(headers)
        ]
        return tokens, sections

    def _table_section(self, table) -> _Section | None:
        return next((s for s in self.sections if s.path == table and not s.aot), None)

    def _under(self, prefix) -> list[_Section]:
        return [s for s in self.sections if s.path[: len(prefix)] == prefix]

    def _section_path(self, token: _Token) -> tuple[str, ...]:
        return () if token.section < 0 else self.sections[token.section].path

    # -- planning splices ------------------------------------------------------

    def _replace(self, start: int, end: int, text: str) -> None:
        self.edits.append((start, end, text))

    def _insert(self, position: int, rank: int, payload) -> None:
        # rank 0: a key line, 1: tables; at one position key lines come first.
        self.insertions.append((position, rank, len(self.insertions), payload))

    def set(self, table: tuple[str, ...], key: str, value) -> None:
        """C{table.key = value}, or remove the key when C{value} is C{None}."""
        token = self.keys.get(table + (key,))
        if value is None:
            if token is not None:
                self._replace(token.start, token.line_end, "")
            return
        if token is not None:
            self._replace_value(token, value)
        else:
            self._add_key(table, key, value)

    def _replace_value(self, token: _Token, value) -> None:
        """The value after the key's C{=}; the key, spacing and inline comment stay."""
        item = token.item
        old = item.as_string()
        kept = (old + item.trivia.comment_ws + item.trivia.comment).rstrip()
        stop = token.start + len(self.text[token.start:token.line_end].rstrip())
        begin = stop - len(kept)
        if begin < token.start or self.text[begin:begin + len(old)] != old:
            raise self.refusal(f"cannot find the value of `{_key_text(token.path)}`")
        self._replace(begin, begin + len(old), _value_text(value))

    def _add_key(self, table: tuple[str, ...], key: str, value) -> None:
        """A new key line after the table's last key (its own section, else dotted)."""
        home = self._table_section(table)
        if table == () or home is not None:
            number = -1 if table == () else self.sections.index(home)
            anchors = [t for t in self.tokens if t.kind == _KEY and t.section == number]
            relative = (key,)
            if not anchors and home is not None:
                anchors = [home.header]
        else:
            # The table exists only as dotted keys (`x.owner = ...`) of a parent table.
            anchors = [
                t for t in self.tokens
                if t.kind == _KEY and t.path[: len(table)] == table
                and len(self._section_path(t)) < len(table)
            ]
            if any(t.path == table for t in anchors) or not anchors:
                raise self.refusal(
                    f"`{_key_text(table)}` is not a table aimx can add `{key}` to"
                )
            relative = table[len(self._section_path(anchors[-1])):] + (key,)
        if not anchors:  # a table not in the file at all (only [upgrade] can be)
            self._insert(len(self.text), 1, [_table_text(table, {key: value})])
            return
        anchor = anchors[-1]
        indent = ""
        if anchor.kind == _KEY:
            line = self.text[anchor.start:anchor.line_end]
            indent = line[: len(line) - len(line.lstrip(" \t"))]
        self._insert(anchor.line_end, 0,
                     f"{indent}{_key_text(relative)} = {_value_text(value)}\n")

    def _check_mailboxes_table(self) -> None:
        if ("mailboxes",) in self.keys:
            raise self.refusal(
                "`mailboxes` is an inline table; write each mailbox as a "
                "[mailboxes.<name>] table to let aimx edit it"
            )

    def delete_mailbox(self, name: str) -> None:
        """Remove C{[mailboxes.<name>]} and its hook tables, or its inline/dotted keys."""
        self._check_mailboxes_table()
        prefix = ("mailboxes", name)
        lines = [
            token for token in self.tokens
            if token.kind == _KEY and token.path[:2] == prefix
            and len(self._section_path(token)) < 2
        ]
        for token in lines:
            self._replace(token.start, token.line_end, "")
        for section in self._under(prefix):
            self._replace(section.start, section.end, "")

    def update_mailbox(self, old: MailboxConfig, new: MailboxConfig) -> None:
        """Change what differs between C{old} and C{new} (same name)."""
        self._check_mailboxes_table()
        prefix = ("mailboxes", old.name)
        inline = self.keys.get(prefix)
        if inline is not None:  # `name = { ... }`: the key's value is rewritten whole
            self._replace_value(inline, mailbox_toml(new))
            return
        for key in _MAILBOX_KEYS:
            if getattr(old, key) != getattr(new, key):
                self.set(prefix, key, _plain(getattr(new, key)))
        if old.hooks != new.hooks:
            self._update_hooks(prefix, old.hooks, new.hooks)

    def _update_hooks(self, prefix, old: tuple[HookConfig, ...],
                      new: tuple[HookConfig, ...]) -> None:
        table = prefix + ("hooks",)
        sections = [s for s in self.sections if s.path == table and s.aot]
        home = self._table_section(prefix)
        if table in self.keys or (not sections and home is None):
            # `hooks = [...]` inline (or no [mailboxes.<name>] to put tables under).
            self.set(prefix, "hooks", [hook_toml(h) for h in new] or None)
            return
        if len(sections) != len(old):
            raise self.refusal(f"the hooks of `{_key_text(prefix)}` are not all tables")
        matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                continue
            if tag == "replace" and all(
                attrs.evolve(a, disabled=b.disabled) == b
                for a, b in zip(old[i1:i2], new[j1:j2], strict=False)
            ) and i2 - i1 == j2 - j1:
                for section, hook in zip(sections[i1:i2], new[j1:j2]):
                    self._set_disabled(section, hook.disabled)
                continue
            for section in sections[i1:i2]:
                self._replace(section.start, section.end, "")
            if j1 == j2:
                continue
            if i1 < len(sections):
                position = sections[i1].start
            else:
                position = sections[-1].end if sections else home.end
            self._insert(position, 1, [
                _table_text(table, hook_toml(hook), aot=True) for hook in new[j1:j2]
            ])

    def _set_disabled(self, section: _Section, disabled: bool) -> None:
        """A hook table's C{disabled} line added or removed, the rest of it kept."""
        number = self.sections.index(section)
        keys = [t for t in self.tokens if t.kind == _KEY and t.section == number]
        line = next((t for t in keys if t.path[-1] == "disabled"), None)
        if line is not None:
            self._replace(line.start, line.line_end, "")
        if disabled:
            self._insert(keys[-1].line_end, 0, f"disabled = true{self.newline}")

    def add_mailboxes(self, mailboxes: list[MailboxConfig]) -> None:
        """New C{[mailboxes.<name>]} tables (with their hooks) after the last mailbox."""
        self._check_mailboxes_table()
        under = self._under(("mailboxes",))
        position = under[-1].end if under else len(self.text)
        blocks = []
        for mb in mailboxes:
            table = mailbox_toml(mb)
            hooks = table.pop("hooks", [])
            blocks.append(_table_text(("mailboxes", mb.name), table))
            blocks += [
                _table_text(("mailboxes", mb.name, "hooks"), hook, aot=True) for hook in hooks
            ]
        self._insert(position, 1, blocks)

    # -- applying them ---------------------------------------------------------

    def result(self) -> str:
        """The text with every planned splice applied."""
        text, edits = self.text, sorted(self.edits)
        pieces, cursor = [], 0
        for start, end, replacement in edits:
            if start < cursor:
                raise self.refusal("two edits overlap")
            pieces += [text[cursor:start], replacement]
            cursor = end
        pieces.append(text[cursor:])
        out = "".join(pieces)
        if any(end == len(text) and not replacement for _, end, replacement in edits):
            # The last table went: no blank lines are left dangling at the end.
            out = re.sub("\n(?:[ \t\r]*\n)+\Z", "\n", out)

        def moved(position: int) -> int:
            shift = 0
            for start, end, replacement in edits:
                if end <= position:
                    shift += len(replacement) - (end - start)
                elif start < position:
                    raise self.refusal("an insertion falls inside an edit")
            return min(position + shift, len(out))

        groups: dict[int, list] = {}
        for position, rank, order, payload in sorted(self.insertions):
            groups.setdefault(moved(position), []).append((rank, order, payload))
        for position in sorted(groups, reverse=True):
            before, after = out[:position], out[position:]
            if before and not before.endswith("\n"):
                before += self.newline
            for rank, _, payload in sorted(groups[position]):
                if rank == 0:
                    before += payload.replace("\n", self.newline)
                    continue
                block = "\n".join(payload).replace("\n", self.newline)
                if not after:
                    if before and not _ends_blank(before):
                        before += self.newline
                    before += block
                elif _ends_blank(before):
                    before += block + self.newline
                else:
                    before += block
            out = before + after
        return out
