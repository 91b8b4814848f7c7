"""The config.toml model: load, validate, serialise, route (L0, pure: stdlib + attrs).

L{load_text} runs the whole pipeline (docs/configuration.md) on the file's text and
returns a frozen L{Config} plus the load warnings; L{to_toml} is its inverse, used
for a file written from scratch (setup) and, table by table (L{mailbox_toml},
L{hook_toml}), for the tables an in-place edit adds (L{aimx.core.configedit}).
Reading and writing the file is L{aimx.store.configfile}'s job; owner lookups are
injected (C{owner_exists}) so this module never touches C{pwd}.
"""

import hashlib
import posixpath
import re
import tomllib
from collections.abc import Callable, Iterable

import attrs

from aimx.core import guards, outpolicy, webhookurl
from aimx.core.identity import parse_address_list
from aimx.core.events import EVENTS
from aimx.core.guards import Guard
from aimx.core.outpolicy import OutboundPolicy
from aimx.core.trust import glob_match
from aimx.errors import ConfigError

DEFAULT_DATA_DIR = "/var/lib/aimx"
DEFAULT_HOOK_TIMEOUT = 60
MAX_HOOK_TIMEOUT = 600
# Postfix's smtpd_client_connection_count_limit is 50 of its 100 processes; ours is
# 20 of the listener's 100 sessions, so one address cannot take the whole listener.
DEFAULT_MAX_SESSIONS_PER_IP = 20
TRUST_VALUES = ("none", "verified")
RESERVED_OWNERS = ("root", "aimx-catchall")

_HOOK_NAME = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}")
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
_USERNAME = re.compile(r"[a-z_][a-z0-9_-]*\$?")
_USERNAME_MAX = 32
_MAILBOX_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")
_HOOK_KEYS = ("name", "event", "type", "cmd", "fire_on_untrusted", "fire_on_review",
              "timeout_secs")
#: The keys of a C{type = "webhook"} hook beyond the common ones (docs/hooks.md).
_WEBHOOK_KEYS = ("url", "secret_file", "allow_insecure", "allow_private")
HOOK_TYPES = ("cmd", "webhook")
_APPROVAL_KEYS = ("approvers", "expire_days", "notify")
#: The local part approval replies come to, on our domain (docs/guardrails.md).
APPROVAL_LOCAL = "postmaster"
_GUARD_KEYS = ("name", "pattern", "fields")
_HOOK_RATE_KEYS = ("per_hour",)
DEFAULT_EXPIRE_DAYS = 7
DEFAULT_AUDIT_RETENTION_DAYS = 90
AUDIT_DIR = "audit"
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_MISSING = object()


def ascii_lower(text: str) -> str:
    # Only ASCII letters fold: Unicode case mapping would let look-alikes
    # (e.g. KELVIN SIGN -> "k") reach another mailbox.
    return text.translate(_ASCII_LOWER)


def host_name_problem(name: str, what: str = "domain") -> str | None:
    """Why C{name} is not a mail host name aimx accepts, or C{None}.

    The rules: non-empty, at most 253 characters, two labels or more, each label
    1-63 ASCII letters, digits or C{-}, not starting or ending with C{-} (RFC 1123
    §2.1 host names, without a final dot).  Case is not folded.

    @param what: what the name is, for the empty case (C{"domain cannot be empty"}).
    """
    if not name:
        return f"{what} cannot be empty"
    if len(name) > 253:
        return f"{what} is {len(name)} characters long; the maximum is 253"
    labels = name.split(".")
    if len(labels) < 2:
        return f"'{name}' needs at least two labels (e.g. agent.example.com)"
    for label in labels:
        if not label:
            return f"'{name}' has an empty label"
        if len(label) > 63:
            return f"label '{label}' is {len(label)} characters long; the maximum is 63"
        bad = next((c for c in label if c not in _LABEL_CHARS), None)
        if bad is not None:
            return (
                f"label '{label}' contains invalid character '{bad}' "
                "(allowed: ASCII letters, digits and '-')"
            )
        if label.startswith("-") or label.endswith("-"):
            return f"label '{label}' cannot start or end with '-'"
    return None


def derive_hook_name(event: str, cmd: Iterable[str], fire_on_untrusted: bool,
                     fire_on_review: bool = False) -> str:
    """The stable name of a hook without an explicit C{name} (docs/hooks.md).

    @param event: C{"on_receive"} or C{"after_send"}.
    @param cmd: the hook's argv.
    @param fire_on_untrusted: the hook's flag (hashed as one raw byte).
    @param fire_on_review: the hook's flag; hashed only when set (as C{0x1f 0x01}
        after the other), so a hook without it keeps the name it always had.
    @return: 12 lowercase hex characters.
    """
    digest = hashlib.sha256()
    digest.update(event.encode("utf-8"))
    digest.update(b"\x1f")
    digest.update(b"\x1f".join(arg.encode("utf-8") for arg in cmd))
    digest.update(b"\x1f")
    digest.update(b"\x01" if fire_on_untrusted else b"\x00")
    if fire_on_review:
        digest.update(b"\x1f\x01")
    return digest.hexdigest()[:12]


@attrs.frozen
class HookConfig:
    """One C{[[mailboxes.<name>.hooks]]} entry.

    Field values are not validated here: L{load_text} and L{validate_hooks} check
    them in a fixed order (docs/configuration.md), so that the right message wins.

    @ivar name: the effective name (explicit, else derived).
    @ivar explicit_name: whether C{name} came from the file (only then is it written back).
    @ivar url: a webhook's URL (C{type = "webhook"}, whose C{cmd} is empty).
    @ivar secret_file: a webhook's secret file; C{None}: the one aimx keeps
        (L{aimx.core.webhook.secret_path}).
    @ivar disabled: set when a webhook's receiver answered 410; such a hook does not fire.
    """

    name: str
    explicit_name: bool
    event: str
    type: str
    cmd: tuple[str, ...] = attrs.field(converter=tuple)
    fire_on_untrusted: bool = False
    timeout_secs: int = DEFAULT_HOOK_TIMEOUT
    url: str | None = None
    secret_file: str | None = None
    allow_insecure: bool = False
    allow_private: bool = False
    disabled: bool = False
    fire_on_review: bool = False

    @property
    def label(self) -> str:
        """The name used in validation messages: explicit name or C{<anonymous>}."""
        return self.name if self.explicit_name else "<anonymous>"


def make_hook(
    event: str,
    cmd: Iterable[str],
    *,
    name: str | None = None,
    hook_type: str = "cmd",
    fire_on_untrusted: bool = False,
    timeout_secs: int = DEFAULT_HOOK_TIMEOUT,
    fire_on_review: bool = False,
    **webhook,
) -> HookConfig:
    """Build a L{HookConfig}, deriving its name when C{name} is C{None}.

    A webhook's name hashes its C{url} where a command hook's hashes C{cmd}
    (a C{cmd[0]} is an absolute path, so the two never meet).

    @param webhook: C{url}, C{secret_file}, C{allow_insecure}, C{allow_private},
        C{disabled}.
    @return: the hook (not validated; see L{validate_hooks}).
    """
    cmd = tuple(cmd)
    explicit = name is not None
    url = webhook.get("url")
    hashed = (url,) if url is not None else cmd
    return HookConfig(
        name=name if explicit else derive_hook_name(event, hashed, fire_on_untrusted,
                                                    fire_on_review),
        explicit_name=explicit,
        event=event,
        type=hook_type,
        cmd=cmd,
        fire_on_untrusted=fire_on_untrusted,
        timeout_secs=timeout_secs,
        fire_on_review=fire_on_review,
        **webhook,
    )


@attrs.frozen
class HookRate:
    """A mailbox's C{hook_rate_per_sender} table (docs/guardrails.md, "Hook rate").

    @ivar per_hour: messages of one sender that may fire hooks in any rolling hour.
    """

    per_hour: int


@attrs.frozen
class MailboxConfig:
    """One C{[mailboxes.<name>]} table.

    @ivar name: the table key.
    @ivar address: C{<local>@<domain>}, or C{*@<domain>} for the catchall.
    @ivar trust: C{None} inherits the top-level value.
    @ivar trusted_senders: C{None} inherits; C{()} means nobody.
    @ivar hook_rate_per_sender: C{None}: no limit.
    @ivar guards: as written: C{None} (none), C{"default"}, or a tuple of
        L{Guard}s and C{"default"} entries (L{guards.effective} expands it).
    """

    name: str
    address: str
    owner: str
    trust: str | None = None
    trusted_senders: tuple[str, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(tuple)
    )
    hooks: tuple[HookConfig, ...] = attrs.field(default=(), converter=tuple)
    outbound: OutboundPolicy | None = None
    hook_rate_per_sender: HookRate | None = None
    guards: str | tuple[Guard | str, ...] | None = None

    @property
    def effective_guards(self) -> tuple[Guard, ...]:
        """The guards this mailbox's mail is read with, the default set expanded."""
        return guards.effective(self.guards)

    @property
    def local_part(self) -> str:
        """The text of C{address} before its last C{@} (all of it when there is none)."""
        return self.address.rsplit("@", 1)[0]

    def is_catchall(self, domain: str) -> bool:
        """Whether C{address} is C{*@<domain>}, compared ASCII case-insensitively."""
        return ascii_lower(self.address) == ascii_lower("*@" + domain)


@attrs.frozen
class ApprovalConfig:
    """The C{[approval]} table: who decides on held messages, and for how long they wait.

    @ivar approvers: the group whose members (and root) may approve or reject;
        C{None}: root alone.  Never the mailbox's owner (docs/guardrails.md).
    @ivar expire_days: days a held message waits before it is rejected (>= 1).
    @ivar notify: the address each hold is announced to, whose DKIM-signed replies
        approve or reject it (docs/guardrails.md, "Approving by mail"); C{None}: none.
    """

    approvers: str | None = None
    expire_days: int = DEFAULT_EXPIRE_DAYS
    notify: str | None = None


@attrs.frozen
class Config:
    """A validated config.toml snapshot; replace it whole, never mutate it.

    @ivar max_sessions_per_ip: how many SMTP sessions one client address may hold
        open at once (>= 1).
    @ivar verify_host: the base URL of the operator's own verifier (C{twistd -n
        aimx-verifier} on another host) for the inbound port-25 check; C{None}: no
        inbound check (there is no hosted default).
    @ivar outbound_check_domain: whose MX the outbound port-25 check connects to;
        C{None}: C{gmail.com} (L{aimx.ops.portcheck.DEFAULT_OUTBOUND_CHECK_DOMAIN}).
        Checked when used, not at load: the daemon does not use it.
    @ivar backup_mx: the host name of a backup MX (another server that queues mail
        for the domain while aimx is down), or C{None}.  Setup proposes its MX
        record and doctor checks it; the daemon does not use it.
    @ivar mailboxes: in file order.
    @ivar outbound: the top-level C{[outbound]} table, the default of every mailbox's.
    @ivar approval: the C{[approval]} table.
    @ivar audit_dir: where the audit log's daily files go; C{None}:
        C{<data_dir>/audit} (L{effective_audit_dir}).
    @ivar audit_retention_days: days of audit files kept (>= 1).
    @ivar release_manifest_url: C{[upgrade] release_manifest_url}; kept only to be
        written back (AIMX's self-updater; aimx ignores it).
    @ivar file_data_dir: the file's C{data_dir} when L{with_data_dir} overrode it in
        memory, else C{None}; L{to_toml} writes this one, so an override never
        reaches the file.
    """

    domain: str
    data_dir: str = DEFAULT_DATA_DIR
    dkim_selector: str = "aimx"
    trust: str = "none"
    trusted_senders: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    verify_host: str | None = None
    outbound_check_domain: str | None = None
    backup_mx: str | None = None
    enable_ipv6: bool = False
    signature: str | None = None
    release_manifest_url: str | None = None
    max_sessions_per_ip: int = DEFAULT_MAX_SESSIONS_PER_IP
    mailboxes: tuple[MailboxConfig, ...] = attrs.field(default=(), converter=tuple)
    outbound: OutboundPolicy | None = None
    approval: ApprovalConfig = ApprovalConfig()
    audit_dir: str | None = None
    audit_retention_days: int = DEFAULT_AUDIT_RETENTION_DAYS
    file_data_dir: str | None = None
    _by_name: dict = attrs.field(init=False, eq=False, repr=False)
    _by_local: dict = attrs.field(init=False, eq=False, repr=False)
    _catchall: MailboxConfig | None = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # Routing runs per RCPT: index once per snapshot. First entry wins.
        by_name: dict[str, MailboxConfig] = {}
        by_local: dict[str, MailboxConfig] = {}
        for mb in self.mailboxes:
            by_name.setdefault(mb.name, mb)
            if mb.local_part != "*":
                by_local.setdefault(ascii_lower(mb.local_part), mb)
        catchall = next((mb for mb in self.mailboxes if mb.is_catchall(self.domain)), None)
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "_by_local", by_local)
        object.__setattr__(self, "_catchall", catchall)

    def mailbox(self, name: str) -> MailboxConfig | None:
        """The mailbox whose table key is C{name}, or C{None}."""
        return self._by_name.get(name)

    def catchall(self) -> MailboxConfig | None:
        """The first mailbox whose address is C{*@<domain>}, or C{None}."""
        return self._catchall

    def effective_trust(self, mailbox: MailboxConfig) -> str:
        """The mailbox's trust policy, else the top-level one."""
        return self.trust if mailbox.trust is None else mailbox.trust

    def effective_trusted_senders(self, mailbox: MailboxConfig) -> tuple[str, ...]:
        """The mailbox's sender patterns (replacing, not merging), else the top-level ones."""
        return self.trusted_senders if mailbox.trusted_senders is None else mailbox.trusted_senders

    def effective_outbound(self, mailbox: MailboxConfig) -> OutboundPolicy | None:
        """The mailbox's outbound policy: its keys over the top-level ones (no merging)."""
        return outpolicy.effective(self.outbound, mailbox.outbound)

    @property
    def effective_audit_dir(self) -> str:
        """C{audit_dir}, else C{<data_dir>/audit}."""
        return self.audit_dir or posixpath.join(self.data_dir, AUDIT_DIR)

    @property
    def effective_signature(self) -> str:
        """The outbound signature; C{""} (the default: no C{signature} key) means none."""
        return "" if self.signature is None else self.signature

    def with_data_dir(self, path: str) -> "Config":
        """This config with C{data_dir} overridden in memory (never written back)."""
        file_value = self.data_dir if self.file_data_dir is None else self.file_data_dir
        return attrs.evolve(self, data_dir=path, file_data_dir=file_value)

    def as_written(self) -> "Config":
        """This config as config.toml holds it: an in-memory C{data_dir} override undone.

        Loading the file a write produced gives exactly this value.
        """
        if self.file_data_dir is None:
            return self
        return attrs.evolve(self, data_dir=self.file_data_dir, file_data_dir=None)


def resolve_mailbox(config: Config, addr: str) -> MailboxConfig | None:
    """Route a recipient address to a mailbox (docs/concepts.md, "Mailboxes").

    The local part (before the last C{@}, minus any C{+tag}) is compared ASCII
    case-insensitively with the local part of each mailbox's C{address}; the first
    concrete match wins, else the catchall, else C{None}. Domains are not compared:
    the SMTP layer accepts only C{config.domain}, and addresses are not validated
    against it.

    @param addr: the address as given (case and tag preserved by the caller).
    """
    local = addr.rsplit("@", 1)[0].split("+", 1)[0]
    return config._by_local.get(ascii_lower(local), config._catchall)


def resolve_sender(config: Config, sender: str) -> MailboxConfig | None:
    """The concrete mailbox a sender address names, by the routing rule; never the catchall.

    The local part is compared ASCII case-insensitively with each mailbox
    address's local part; C{+tag} and wildcard addresses name no mailbox.
    """
    local = sender.rsplit("@", 1)[0]
    if "+" in local or local.startswith("*"):
        return None
    return config._by_local.get(ascii_lower(local))


def is_approval_address(config: Config, addr: str) -> bool:
    """Whether C{addr} is where approval replies come: C{postmaster@<domain>} (no
    C{+tag}, ASCII case aside) while C{[approval] notify} is set, whether or not a
    mailbox routes it (docs/guardrails.md, "Approving by mail").
    """
    local, at, domain = addr.rpartition("@")
    return (config.approval.notify is not None and bool(at)
            and ascii_lower(local) == APPROVAL_LOCAL
            and ascii_lower(domain) == ascii_lower(config.domain))


def validate_mailbox_name(name: str) -> None:
    """Check a name for a new mailbox; C{"already exists"} is the caller's.

    @raise ConfigError: naming the rule.
    """
    if not name:
        raise ConfigError("Mailbox name cannot be empty")
    if ".." in name:
        raise ConfigError("Mailbox name cannot contain '..'")
    if name.startswith(".") or name.endswith("."):
        raise ConfigError("Mailbox name cannot start or end with '.'")
    if name in ("catchall", "aimx-catchall"):
        raise ConfigError(f"Mailbox name '{name}' is reserved for the wildcard catchall slot")
    for char in name:
        if char not in _MAILBOX_NAME_CHARS:
            raise ConfigError(
                f"Mailbox name contains invalid character '{char}'; allowed: [a-z0-9._-]"
            )


def validate_hooks(config: Config) -> None:
    """Per-hook checks, then global uniqueness of effective names.

    The control socket runs this on the modified config before a rewrite.

    @raise ConfigError: the first violation.
    """
    seen: dict[str, tuple[str, bool]] = {}
    for mb in config.mailboxes:
        for hook in mb.hooks:
            _check_hook(hook, mb.name)
            prior = seen.get(hook.name)
            if prior is None:
                seen[hook.name] = (mb.name, hook.explicit_name)
                continue
            first, first_explicit = prior
            if first_explicit and hook.explicit_name:
                message = (
                    f"duplicate hook name '{hook.name}' on mailboxes '{first}' and "
                    f"'{mb.name}': hook names must be globally unique"
                )
            elif not first_explicit and not hook.explicit_name:
                message = (
                    f"anonymous hooks on mailboxes '{first}' and '{mb.name}' have identical "
                    f"event/cmd and derive the same name '{hook.name}': set an explicit "
                    "`name` on at least one to disambiguate"
                )
            else:
                message = (
                    f"explicit hook name '{hook.name}' on one mailbox collides with the "
                    "derived name of an anonymous hook on another (mailboxes "
                    f"'{first}' and '{mb.name}'): rename the explicit hook or set an "
                    "explicit `name` on the anonymous one"
                )
            raise ConfigError(message)


def _check_hook(hook: HookConfig, mailbox: str) -> None:
    where = f"hook '{hook.label}' on mailbox '{mailbox}'"
    if hook.explicit_name and not _HOOK_NAME.fullmatch(hook.name):
        raise ConfigError(
            f"invalid hook name '{hook.name}' on mailbox '{mailbox}': "
            "must match [a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}"
        )
    if hook.type == "webhook":
        _check_webhook(hook, where)
        return
    if not hook.cmd:
        raise ConfigError(
            f"{where} has empty `cmd`: `cmd` must be a non-empty argv array, "
            'e.g. `cmd = ["/bin/echo", "hi"]`'
        )
    if not hook.cmd[0].strip():
        raise ConfigError(f"{where} has blank `cmd[0]`")
    if not hook.cmd[0].startswith("/"):
        raise ConfigError(
            f"{where} has non-absolute `cmd[0]` '{hook.cmd[0]}': hooks fire from "
            "/var/lib/aimx/... so PATH lookup is brittle; use an absolute path "
            "(e.g. `/bin/echo` instead of `echo`)"
        )
    if hook.type != "cmd":
        raise ConfigError(
            f"{where} has unsupported type '{hook.type}': only `cmd` and `webhook` are supported")
    _check_timeout(hook, where)


def _check_webhook(hook: HookConfig, where: str) -> None:
    problem = webhookurl.problem(hook.url or "", allow_insecure=hook.allow_insecure,
                                 allow_private=hook.allow_private)
    if problem is not None:
        raise ConfigError(f"{where}: {problem}")
    if hook.secret_file is not None and not hook.secret_file.startswith("/"):
        raise ConfigError(f"{where} has a relative `secret_file` '{hook.secret_file}'")
    _check_timeout(hook, where)


def _check_timeout(hook: HookConfig, where: str) -> None:
    if hook.timeout_secs == 0:
        raise ConfigError(f"{where} has `timeout_secs = 0`: must be > 0")
    if hook.timeout_secs > MAX_HOOK_TIMEOUT:
        raise ConfigError(
            f"{where} has `timeout_secs = {hook.timeout_secs}` which exceeds the max of "
            f"{MAX_HOOK_TIMEOUT}"
        )


def load_text(
    text: str, path: str, *, owner_exists: Callable[[str], bool] = lambda owner: True
) -> tuple[Config, list[str]]:
    """Load and fully validate config.toml text (docs/configuration.md, the order of checks).

    @param path: the file's path, put in front of every error message.
    @param owner_exists: whether a (syntactically valid, non-reserved) owner is a
        known user; C{False} gives the orphan-owner warning.
    @return: the config and the warning texts, in mailbox order.
    @raise ConfigError: C{"<path>: <problem>"} for the first error found.
    """
    try:
        _scan_legacy(text)
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(str(e)) from None
        _reject_stdin(raw)
        config = _decode(raw)
        return config, _validate(config, owner_exists)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _scan_legacy(text: str) -> None:
    """Step 2: reject removed schemas by their text, before TOML parsing."""
    in_hook = False
    for line in text.split("\n"):
        line = line.strip()
        if line.startswith("[[") and line.endswith("]]"):
            inner = line[2:-2]
            in_hook = False
            if inner == "hook_template" or inner.startswith("hook_template."):
                raise ConfigError(
                    "[[hook_template]] blocks are not supported; template hooks were "
                    "removed. See docs/hooks.md for the supported raw-cmd schema"
                )
            if inner.startswith("mailboxes."):
                rest = inner.removeprefix("mailboxes.")
                if rest.endswith(".on_receive"):
                    raise ConfigError(_legacy_on_receive(rest.removesuffix(".on_receive"), ""))
                in_hook = rest.endswith(".hooks")
        elif line.startswith("[") and line.endswith("]"):
            inner = line[1:-1]
            in_hook = False
            if inner.startswith("mailboxes.") and inner.endswith(".on_receive.match"):
                name = inner.removeprefix("mailboxes.").removesuffix(".on_receive.match")
                raise ConfigError(_legacy_on_receive(name, ".match"))
        elif in_hook and "=" in line:
            key = line.split("=", 1)[0].strip()
            if key == "run_as":
                raise ConfigError(
                    "hook sets `run_as`; the field was removed — hooks now run as the "
                    "mailbox's `owner`"
                )
            if key == "origin":
                raise ConfigError("hook sets `origin`; the field was removed")
            if key == "dangerously_support_untrusted":
                raise ConfigError(
                    "hook sets `dangerously_support_untrusted`; the field was renamed to "
                    "`fire_on_untrusted`"
                )
            if key in ("template", "params"):
                raise ConfigError(
                    f"hook sets `{key}`; template hooks were removed. See docs/hooks.md "
                    "for the supported raw-cmd schema"
                )


def _legacy_on_receive(name: str, suffix: str) -> str:
    return (
        f"mailbox '{name}' uses the legacy `on_receive{suffix}` schema; migrate to "
        f'`[[mailboxes.{name}.hooks]]` with `event = "on_receive"`'
    )


def _reject_stdin(raw: dict) -> None:
    """Step 4: any hook table with C{stdin}, named explicitly or by derivation."""
    mailboxes = raw.get("mailboxes")
    if not isinstance(mailboxes, dict):
        return
    for mb in mailboxes.values():
        hooks = mb.get("hooks") if isinstance(mb, dict) else None
        for hook in hooks if isinstance(hooks, list) else ():
            if not isinstance(hook, dict) or "stdin" not in hook:
                continue
            name = hook.get("name")
            if not isinstance(name, str):
                # Best effort, as AIMX: wrong or missing values fall back to defaults.
                cmd = hook.get("cmd")
                name = derive_hook_name(
                    "after_send" if hook.get("event") == "after_send" else "on_receive",
                    [a for a in cmd if isinstance(a, str)] if isinstance(cmd, list) else (),
                    hook.get("fire_on_untrusted") is True,
                    hook.get("fire_on_review") is True,
                )
            raise ConfigError(
                f"hook '{name}' carries removed field 'stdin' — remove this line and "
                "restart aimx serve; the email is always piped to hooks"
            )


_KINDS = {str: "a string", int: "an integer", bool: "a boolean", dict: "a table", list: "an array"}


def _field(table: dict, key: str, kind: type, where: str, default=_MISSING):
    """Step 5 for one key: missing-field or type error naming the key."""
    if key not in table:
        if default is _MISSING:
            raise ConfigError(f"{where + ': ' if where else ''}missing field `{key}`")
        return default
    value = table[key]
    # bool is a subclass of int in Python; TOML keeps them apart.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{_key(where, key)}: expected {_KINDS[kind]}")
    return value


def _strings(table: dict, key: str, where: str, default=_MISSING):
    if key not in table:
        return _field(table, key, list, where, default)
    value = table[key]
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise ConfigError(f"{_key(where, key)}: expected an array of strings")
    return tuple(value)


_REQUIRED = object()


def _at_least_one(table: dict, key: str, default=_REQUIRED, where: str = "") -> int | None:
    """A count: an integer >= 1 (a cap of 0 would refuse everyone); C{default} when
    absent (C{None} allowed), required when no default is given."""
    value = (_field(table, key, int, where) if default is _REQUIRED
             else _field(table, key, int, where, default))
    if value is not None and value < 1:
        raise ConfigError(f"{_key(where, key)}: expected an integer >= 1, got {value}")
    return value


def _subtable(parent: dict, key: str, where: str, keys: tuple[str, ...],
              example: str = "") -> tuple[dict, str] | None:
    """C{parent[key]} as a table of only C{keys}, with its own C{where}; C{None} when
    absent."""
    where = _key(where, key)
    table = parent.get(key)
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table{example}")
    _known_keys(table, keys, where)
    return table, where


def _key(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _decode(raw: dict) -> Config:
    """Step 5: typed decode; unknown keys are ignored except in hook, outbound, approval,
    guard and hook-rate tables."""
    return Config(
        domain=_field(raw, "domain", str, ""),
        data_dir=_field(raw, "data_dir", str, "", DEFAULT_DATA_DIR),
        dkim_selector=_field(raw, "dkim_selector", str, "", "aimx"),
        trust=_field(raw, "trust", str, "", "none"),
        trusted_senders=_strings(raw, "trusted_senders", "", ()),
        verify_host=_field(raw, "verify_host", str, "", None),
        outbound_check_domain=_field(raw, "outbound_check_domain", str, "", None),
        backup_mx=_field(raw, "backup_mx", str, "", None),
        enable_ipv6=_field(raw, "enable_ipv6", bool, "", False),
        signature=_field(raw, "signature", str, "", None),
        release_manifest_url=_field(
            _field(raw, "upgrade", dict, "", {}), "release_manifest_url", str, "upgrade", None
        ),
        max_sessions_per_ip=_at_least_one(
            raw, "max_sessions_per_ip", DEFAULT_MAX_SESSIONS_PER_IP
        ),
        mailboxes=[
            _decode_mailbox(name, table)
            for name, table in _field(raw, "mailboxes", dict, "", {}).items()
        ],
        outbound=_decode_outbound(raw, ""),
        approval=_decode_approval(_field(raw, "approval", dict, "", {})),
        audit_dir=_absolute(_field(raw, "audit_dir", str, "", None), "audit_dir"),
        audit_retention_days=_at_least_one(
            raw, "audit_retention_days", DEFAULT_AUDIT_RETENTION_DAYS),
    )


def _decode_mailbox(name: str, table: object) -> MailboxConfig:
    where = f"mailboxes.{name}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    return MailboxConfig(
        name=name,
        address=_field(table, "address", str, where),
        owner=_field(table, "owner", str, where),
        trust=_field(table, "trust", str, where, None),
        trusted_senders=_strings(table, "trusted_senders", where, None),
        hooks=[
            _decode_hook(hook, f"{where}.hooks[{i}]")
            for i, hook in enumerate(_field(table, "hooks", list, where, []))
        ],
        outbound=_decode_outbound(table, where),
        hook_rate_per_sender=_decode_hook_rate(table, where),
        guards=_decode_guards(table, where),
    )


def _absolute(path: str | None, key: str) -> str | None:
    if path is not None and not path.startswith("/"):
        raise ConfigError(f"{key}: '{path}' is not an absolute path")
    return path


def _decode_hook_rate(parent: dict, where: str) -> HookRate | None:
    found = _subtable(parent, "hook_rate_per_sender", where, _HOOK_RATE_KEYS,
                      ", e.g. { per_hour = 30 }")
    if found is None:
        return None
    table, where = found
    return HookRate(_at_least_one(table, "per_hour", where=where))


def _decode_guards(parent: dict, where: str):
    """C{guards}: C{"default"}, or guard tables (each a guard or C{use = "default"})."""
    where = _key(where, "guards")
    value = parent.get("guards")
    if value is None:
        return None
    if isinstance(value, str):
        if value != guards.DEFAULT:
            raise ConfigError(f"{where}: unknown value '{value}', expected \"default\" or "
                              "[[guards]] tables")
        return guards.DEFAULT
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected \"default\" or an array of tables")
    entries: list = []
    for i, table in enumerate(value):
        entries.append(_decode_guard(table, f"{where}[{i}]"))
    found = guards.effective(tuple(entries))
    if len(found) > guards.MAX_GUARDS:
        raise ConfigError(f"{where}: {len(found)} guards; the maximum is {guards.MAX_GUARDS}")
    if entries.count(guards.DEFAULT) > 1:
        raise ConfigError(f"{where}: `use = \"default\"` appears more than once")
    names = [guard.name for guard in found]
    twice = next((name for name in names if names.count(name) > 1), None)
    if twice is not None:
        raise ConfigError(f"{where}: two guards are named '{twice}'")
    return tuple(entries)


def _decode_guard(table: object, where: str):
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    if "use" in table:
        _known_keys(table, ("use",), where)
        if table["use"] != guards.DEFAULT:
            raise ConfigError(f"{where}.use: expected \"default\", the shipped guards")
        return guards.DEFAULT
    _known_keys(table, _GUARD_KEYS, where)
    name = _field(table, "name", str, where)
    if not guards.NAME.fullmatch(name):
        raise ConfigError(f"{where}.name: '{name}' must match [a-zA-Z0-9_][a-zA-Z0-9_.-]{{0,127}}")
    pattern = _field(table, "pattern", str, where)
    fields = _strings(table, "fields", where, guards.DEFAULT_FIELDS)
    unknown = next((f for f in fields if f not in guards.FIELDS), None)
    if unknown is not None or not fields or len(set(fields)) != len(fields):
        expected = ", ".join(f'"{f}"' for f in guards.FIELDS)
        raise ConfigError(f"{where}.fields: expected some of {expected}, each once")
    try:
        return Guard(name, pattern, fields)
    except ValueError as e:
        raise ConfigError(f"{where}.pattern: {e}") from None


def _known_keys(table: dict, keys: tuple[str, ...], where: str) -> None:
    """New tables refuse unknown keys: a typo must not silently switch a guard off."""
    for key in table:
        if key not in keys:
            expected = ", ".join(f"`{k}`" for k in keys)
            raise ConfigError(f"{where}: unknown field `{key}`, expected one of {expected}")


def _decode_outbound(parent: dict, where: str) -> OutboundPolicy | None:
    """The C{outbound} table of C{parent} (the top level or a mailbox), or C{None}."""
    found = _subtable(parent, "outbound", where, outpolicy.KEYS)
    if found is None:
        return None
    table, where = found
    counts = {key: _at_least_one(table, key, None, where)
              for key in ("max_recipients", "max_per_hour", "max_per_day")}
    approval = _field(table, "approval", str, where, None)
    if approval is not None and approval not in outpolicy.APPROVAL_MODES:
        expected = ", ".join(f'"{mode}"' for mode in outpolicy.APPROVAL_MODES)
        raise ConfigError(f"{where}.approval: unknown value '{approval}', expected one of "
                          f"{expected}")
    roots = _strings(table, "attachment_roots", where, None)
    for root in roots or ():
        _absolute(root, f"{where}.attachment_roots")
    return OutboundPolicy(
        allow=_strings(table, "allow", where, None),
        deny=_strings(table, "deny", where, None),
        approval=approval,
        attachment_roots=roots,
        allow_raw_attachments=_field(table, "allow_raw_attachments", bool, where, None),
        **counts,
    )


def _decode_approval(table: dict) -> ApprovalConfig:
    _known_keys(table, _APPROVAL_KEYS, "approval")
    expire = _at_least_one(table, "expire_days", DEFAULT_EXPIRE_DAYS, "approval")
    approvers = _field(table, "approvers", str, "approval", None)
    if approvers is not None and not _USERNAME.fullmatch(approvers):
        raise ConfigError(f"approval.approvers: '{approvers}' is not a valid group name")
    notify = _field(table, "notify", str, "approval", None)
    return ApprovalConfig(approvers=approvers, expire_days=expire, notify=notify)


def _decode_hook(table: object, where: str) -> HookConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    _known_keys(table, _HOOK_KEYS + _WEBHOOK_KEYS + ("disabled",), where)
    name = _field(table, "name", str, where, None)
    event = _field(table, "event", str, where)
    if event not in EVENTS:
        raise ConfigError(
            f"{where}.event: unknown variant `{event}`, expected on_receive or after_send"
        )
    hook_type = _field(table, "type", str, where, "cmd")
    webhook = {}
    if hook_type == "webhook":
        if "cmd" in table:
            raise ConfigError(f"{where}: a webhook has `url`, not `cmd`")
        cmd = ()
        webhook = {
            "url": _field(table, "url", str, where),
            "secret_file": _field(table, "secret_file", str, where, None),
            "allow_insecure": _field(table, "allow_insecure", bool, where, False),
            "allow_private": _field(table, "allow_private", bool, where, False),
        }
    else:
        cmd = _strings(table, "cmd", where)
        extra = next((key for key in _WEBHOOK_KEYS if key in table), None)
        if extra is not None:
            raise ConfigError(f"{where}.{extra}: only for `type = \"webhook\"`")
    fire = _field(table, "fire_on_untrusted", bool, where, False)
    review = _field(table, "fire_on_review", bool, where, False)
    timeout = _field(table, "timeout_secs", int, where, DEFAULT_HOOK_TIMEOUT)
    if timeout < 0:
        raise ConfigError(f"{where}.timeout_secs: expected a non-negative integer")
    if _field(table, "disabled", bool, where, False):
        webhook["disabled"] = True
    return make_hook(
        event, cmd, name=name, hook_type=hook_type, fire_on_untrusted=fire, timeout_secs=timeout,
        fire_on_review=review,
        **webhook,
    )


def _validate(config: Config, owner_exists: Callable[[str], bool]) -> list[str]:
    """Steps 6-10 on the decoded config; returns the warnings of step 9."""
    if config.backup_mx is not None:
        _check_backup_mx(config.backup_mx, config.domain)
    if config.approval.notify is not None:
        _check_notify(config.approval.notify, config.domain)
    for mb in config.mailboxes:
        if not mb.owner.strip():
            raise ConfigError(
                f"mailbox '{mb.name}' is missing required field 'owner'; re-run "
                "'sudo aimx setup' or hand-edit config.toml"
            )
    if config.trust not in TRUST_VALUES:
        raise ConfigError(
            f"invalid top-level trust value '{config.trust}': "
            'expected one of ["none", "verified"]'
        )
    for mb in config.mailboxes:
        if mb.trust is not None and mb.trust not in TRUST_VALUES:
            raise ConfigError(
                f"invalid trust value '{mb.trust}' on mailbox '{mb.name}': "
                'expected one of ["none", "verified"]'
            )
    patterns = [("trusted_senders", p) for p in config.trusted_senders]
    for mb in config.mailboxes:
        patterns += [(f"mailboxes.{mb.name}.trusted_senders", p) for p in mb.trusted_senders or ()]
    for key, pattern in patterns:
        try:
            glob_match(pattern, "")
        except ValueError as e:
            raise ConfigError(f"{key}: invalid sender pattern '{pattern}': {e}") from None
    tables = [("outbound", config.outbound)]
    tables += [(f"mailboxes.{mb.name}.outbound", mb.outbound) for mb in config.mailboxes]
    for where, table in tables:
        for key in ("allow", "deny"):
            for pattern in getattr(table, key, None) or ():
                try:
                    glob_match(pattern, "")
                except ValueError as e:
                    raise ConfigError(
                        f"{where}.{key}: invalid recipient pattern '{pattern}': {e}") from None
    for mb in config.mailboxes:
        if mb.hooks and mb.is_catchall(config.domain):
            raise ConfigError(
                f"mailbox '{mb.name}' is the catchall but has hooks attached; "
                "catchall does not support hooks"
            )
        for hook in mb.hooks:
            for flag in ("fire_on_untrusted", "fire_on_review"):
                if getattr(hook, flag) and hook.event != "on_receive":
                    raise ConfigError(
                        f"hook '{hook.label}' on mailbox '{mb.name}' sets "
                        f"`{flag} = true` on event '{hook.event}': "
                        f"{flag} is on_receive only"
                    )
    warnings = []
    for mb in config.mailboxes:
        owner = mb.owner
        if owner in RESERVED_OWNERS:
            pass
        elif len(owner) > _USERNAME_MAX or not _USERNAME.fullmatch(owner):
            raise ConfigError(
                f"mailbox '{mb.name}' has invalid owner '{owner}': must be 'root', "
                "'aimx-catchall', or a valid Linux username matching [a-z_][a-z0-9_-]*[$]?"
            )
        elif not owner_exists(owner):
            warnings.append(
                f"mailbox '{mb.name}' owner '{owner}' does not resolve via getpwnam; "
                "mailbox marked inactive — create the user or update config.toml"
            )
        if owner == "root":
            warnings.append(
                f"mailbox '{mb.name}' is owned by root: its mail is root-only and its hooks "
                "run as root — use a regular user unless you mean it"
            )
    validate_hooks(config)
    return warnings


def _check_notify(notify: str, domain: str) -> None:
    """C{[approval] notify}: one plain ASCII address (no name, no brackets) of a
    domain that is not ours: mail aimx signs for its own domain (any agent's SEND)
    must never pass for the approver's."""
    mailbox = parse_address_list(notify).single
    if (mailbox is None or not mailbox.plain or mailbox.display_name
            or mailbox.addr_spec != notify or not notify.isascii()):
        raise ConfigError(f"approval.notify: '{notify}' is not one plain address "
                          "(local@domain, ASCII, no name or brackets)")
    problem = host_name_problem(mailbox.domain, "approval.notify's domain")
    if problem is not None:
        raise ConfigError(f"approval.notify: {problem}")
    theirs, ours = ascii_lower(mailbox.domain), ascii_lower(domain)
    if theirs == ours or theirs.endswith("." + ours):
        raise ConfigError(
            f"approval.notify: '{notify}' is in {domain}, whose mail aimx itself signs; "
            "an agent could approve its own mail: use an address of another domain")


def _check_backup_mx(host: str, domain: str) -> None:
    problem = host_name_problem(host, "backup_mx")
    if problem is not None:
        raise ConfigError(f"backup_mx: '{host}' is not a host name: {problem}")
    if ascii_lower(host) == ascii_lower(domain):
        raise ConfigError(
            f"backup_mx: '{host}' is the domain itself; a backup MX is another server"
        )


def to_toml(config: Config) -> dict:
    """The config as a TOML document, for a file written from scratch.

    Defaults and unset values are omitted; an in-memory C{data_dir} override is not
    written (the file's value is).  Edits of an existing file go through
    L{aimx.core.configedit.rewrite_text}, which keeps its comments and layout.
    """
    doc: dict = {
        "domain": config.domain,
        "data_dir": config.data_dir if config.file_data_dir is None else config.file_data_dir,
        "dkim_selector": config.dkim_selector,
        "enable_ipv6": config.enable_ipv6,
    }
    if config.trust != "none":
        doc["trust"] = config.trust
    if config.trusted_senders:
        doc["trusted_senders"] = list(config.trusted_senders)
    if config.verify_host is not None:
        doc["verify_host"] = config.verify_host
    if config.outbound_check_domain is not None:
        doc["outbound_check_domain"] = config.outbound_check_domain
    if config.backup_mx is not None:
        doc["backup_mx"] = config.backup_mx
    if config.signature is not None:
        doc["signature"] = config.signature
    if config.max_sessions_per_ip != DEFAULT_MAX_SESSIONS_PER_IP:
        doc["max_sessions_per_ip"] = config.max_sessions_per_ip
    if config.release_manifest_url is not None:
        doc["upgrade"] = {"release_manifest_url": config.release_manifest_url}
    if config.outbound is not None:
        doc["outbound"] = outbound_toml(config.outbound)
    approval = {}
    if config.approval.approvers is not None:
        approval["approvers"] = config.approval.approvers
    if config.approval.expire_days != DEFAULT_EXPIRE_DAYS:
        approval["expire_days"] = config.approval.expire_days
    if config.approval.notify is not None:
        approval["notify"] = config.approval.notify
    if approval:
        doc["approval"] = approval
    if config.audit_dir is not None:
        doc["audit_dir"] = config.audit_dir
    if config.audit_retention_days != DEFAULT_AUDIT_RETENTION_DAYS:
        doc["audit_retention_days"] = config.audit_retention_days
    doc["mailboxes"] = {mb.name: mailbox_toml(mb) for mb in config.mailboxes}
    return doc


def mailbox_toml(mb: MailboxConfig) -> dict:
    """One C{[mailboxes.<name>]} table (with its C{hooks}), defaults omitted as L{to_toml}."""
    table: dict = {"address": mb.address, "owner": mb.owner}
    if mb.trust is not None:
        table["trust"] = mb.trust
    if mb.trusted_senders is not None:
        table["trusted_senders"] = list(mb.trusted_senders)
    if mb.outbound is not None:
        table["outbound"] = outbound_toml(mb.outbound)
    if mb.hook_rate_per_sender is not None:
        table["hook_rate_per_sender"] = {"per_hour": mb.hook_rate_per_sender.per_hour}
    if mb.guards is not None:
        table["guards"] = mb.guards if isinstance(mb.guards, str) else [
            {"use": entry} if isinstance(entry, str) else
            {"name": entry.name, "pattern": entry.pattern, "fields": list(entry.fields)}
            for entry in mb.guards]
    if mb.hooks:
        table["hooks"] = [hook_toml(hook) for hook in mb.hooks]
    return table


def outbound_toml(policy: OutboundPolicy) -> dict:
    """An C{[outbound]} table: the keys it sets, in L{outpolicy.KEYS} order."""
    table = {}
    for key in outpolicy.KEYS:
        value = getattr(policy, key)
        if value is not None:
            table[key] = list(value) if isinstance(value, tuple) else value
    return table


def hook_toml(hook: HookConfig) -> dict:
    """One C{[[mailboxes.<name>.hooks]]} table: C{name} only when explicit, defaults omitted."""
    table: dict = {"name": hook.name} if hook.explicit_name else {}
    table.update(event=hook.event, type=hook.type)
    if hook.type == "webhook":
        table["url"] = hook.url
        if hook.secret_file is not None:
            table["secret_file"] = hook.secret_file
        for flag in ("allow_insecure", "allow_private"):
            if getattr(hook, flag):
                table[flag] = True
    else:
        table["cmd"] = list(hook.cmd)
    if hook.disabled:
        table["disabled"] = True
    if hook.fire_on_untrusted:
        table["fire_on_untrusted"] = True
    if hook.fire_on_review:
        table["fire_on_review"] = True
    if hook.timeout_secs != DEFAULT_HOOK_TIMEOUT:
        table["timeout_secs"] = hook.timeout_secs
    return table
