"""Control-command edits of a config snapshot (L0, pure).

Each function checks one request against a frozen L{Config} and returns the new
snapshot, raising the wire errors of spec/control-socket.md §6 with their exact
texts.  The daemon (under its locks) and the CLI's root fallback (daemon down)
share them, so both write the same config.toml.
"""

import json
import re
import types
from collections.abc import Callable

import attrs

from aimx.core.config import (
    DEFAULT_HOOK_TIMEOUT,
    EVENTS,
    MAX_HOOK_TIMEOUT,
    Config,
    HookConfig,
    MailboxConfig,
    ascii_lower,
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
_BODY_KEYS = ("cmd", "fire_on_untrusted", "type", "timeout_secs")
_TEMPLATE = "template hooks were removed. See book/hooks.md for the supported raw-cmd schema"
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
    """The create/delete name rule of config.md §6.

    @raise ValidationError: with the spec's reason.
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
    """Checks 4-8 of HOOK-CREATE (spec/hooks.md §8): event, name, body, the hook.

    @param name: the explicit name, or C{None} to derive it.
    @param body: the JSON object C{{"cmd": [...], "fire_on_untrusted", "type",
        "timeout_secs"}}.
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
    hook = make_hook(event, fields.pop("cmd"), name=name, **fields)
    _check_single_hook(hook)
    return hook


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
    for key in data:
        if key not in _BODY_KEYS:
            expected = ", ".join(f"`{k}`" for k in _BODY_KEYS)
            raise _body_error(f"unknown field `{key}`, expected one of {expected}")
    if "cmd" not in data:
        raise _body_error("missing field `cmd`")
    cmd = data["cmd"]
    if not (isinstance(cmd, list) and all(isinstance(arg, str) for arg in cmd)):
        raise _body_error("`cmd`: expected an array of strings")
    fire = data.get("fire_on_untrusted", False)
    if not isinstance(fire, bool):
        raise _body_error("`fire_on_untrusted`: expected a boolean")
    hook_type = data.get("type", "cmd")
    if not isinstance(hook_type, str):
        raise _body_error("`type`: expected a string")
    timeout = data.get("timeout_secs", DEFAULT_HOOK_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
        raise _body_error("`timeout_secs`: expected a non-negative integer")
    return {
        "cmd": cmd,
        "fire_on_untrusted": fire,
        "hook_type": hook_type,
        "timeout_secs": timeout,
    }


def _check_single_hook(hook: HookConfig) -> None:
    """The single-hook texts of HOOK-CREATE (they differ from the load-time ones)."""
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
    if hook.type != "cmd":
        raise ValidationError(f"hook has unsupported type '{hook.type}': only `cmd` is supported")
    if hook.fire_on_untrusted and hook.event != "on_receive":
        raise ValidationError("`fire_on_untrusted = true` is `on_receive` only")
    if hook.timeout_secs == 0:
        raise ValidationError("`timeout_secs = 0`: must be > 0")
    if hook.timeout_secs > MAX_HOOK_TIMEOUT:
        raise ValidationError(
            f"`timeout_secs = {hook.timeout_secs}` exceeds the max of {MAX_HOOK_TIMEOUT}"
        )


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
    @raise ValidationError: the effective name collides (config.md §3 texts).
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


def _replace(config: Config, mailbox: MailboxConfig) -> Config:
    return attrs.evolve(
        config,
        mailboxes=[mailbox if mb.name == mailbox.name else mb for mb in config.mailboxes],
    )


def hook_rows(config: Config, shown: Callable[[MailboxConfig], bool]) -> list[dict]:
    """HOOK-LIST rows of the mailboxes C{shown} accepts, sorted by mailbox, event, name."""
    rows = [
        {
            "name": hook.name,
            "mailbox": mb.name,
            "event": hook.event,
            "cmd": list(hook.cmd),
            "fire_on_untrusted": hook.fire_on_untrusted,
            "timeout_secs": hook.timeout_secs,
        }
        for mb in config.mailboxes
        if shown(mb)
        for hook in mb.hooks
    ]
    return sorted(rows, key=lambda row: (row["mailbox"], row["event"], row["name"]))
