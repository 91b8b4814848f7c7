"""``aimx hooks`` (alias ``hook``), L3: list, create, delete, and for webhooks enable,
status, retry (docs/cli.md, "aimx hooks").

Every verb asks the daemon over the control socket.  When no daemon answers,
root (with a readable config) edits config.toml directly; the change then takes
effect on the next start.

After a create, the verb says what it can see from here: whether the mailbox's
trust policy lets an C{on_receive} hook fire at all, and whether the mailbox
owner, who runs the hook, can execute its program.  Both are advice: the hook
is created either way (the owner may install the program later).

C{hooks list} over a running daemon imports neither Twisted nor the config
model: the config editor is imported where a verb edits or reads config.toml.
"""

import json
import os
import re
import stat

from aimx.cli import session
from aimx.cli.session import CliError, hook_missing, mailbox_missing
from aimx.cli.term import clip, cmd_text, printed_plainly
from aimx.control.wire import (
    HookCreate,
    HookDelete,
    HookEnable,
    HookList,
    HookRetry,
    HookStatus,
    MailboxShow,
)
from aimx.errors import AimxError, DaemonNotRunning

_HOOK_NAME = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}")
#: The last sentence of the daemon-down error for non-root callers.
WITHOUT_DAEMON = (
    "The daemon must be running for non-root hook commands; with sudo, aimx uses "
    "config.toml directly instead."
)
_EXAMPLE = "e.g. --cmd '[\"/bin/echo\", \"hello\"]'"
_STILL_CREATED = "the hook is created but fails until that is fixed."


def main(args) -> int:
    return session.run_blocking(VERBS[args.action], args)


def _down(s: session.Session, error) -> str:
    return s.not_running(error, WITHOUT_DAEMON)


async def list_(args, s: session.Session) -> int:
    try:
        rows = (await s.call(HookList))["hooks"]
        live = True
    except DaemonNotRunning as e:
        from aimx.core import configedit

        config = s.root_config(_down(s, e))
        if args.mailbox is not None and config.mailbox(args.mailbox) is None:
            raise mailbox_missing(args.mailbox) from None
        rows = configedit.hook_rows(config, lambda mb: True)
        live = False
    if args.mailbox is not None:
        rows = [row for row in rows if row["mailbox"] == args.mailbox]
        if not rows and live:
            # No hooks, or no such mailbox (for this caller)? MAILBOX-SHOW tells.
            await s.call(MailboxShow, name=args.mailbox)
    if printed_plainly(s.term, rows, as_json=args.json, empty="No hooks configured."):
        return 0
    s.term.say(s.term.bold(f"{'NAME':<28} {'MAILBOX':<20} {'EVENT':<12}TIMEOUT CMD"))
    for row in rows:
        s.term.say(
            f"{clip(row['name'], 28):<28} {clip(row['mailbox'], 20):<20} {row['event']:<11} "
            f"{row['timeout_secs']:>7} {row.get('url') or cmd_text(row['cmd'])}"
        )
    return 0


async def create(args, s: session.Session) -> int:
    from aimx.core import configedit
    from aimx.core.config import DEFAULT_HOOK_TIMEOUT

    if args.name is not None and not _HOOK_NAME.fullmatch(args.name):
        raise CliError(
            f"invalid hook name '{args.name}': must match [a-zA-Z0-9_][a-zA-Z0-9_.-]{{0,127}}"
        )
    config = s.config()
    if config is not None:
        mailbox = config.mailbox(args.mailbox)
        if mailbox is None:
            raise mailbox_missing(args.mailbox)
        if not s.root and s.passwd.owner(mailbox.owner).uid != s.euid:
            raise CliError(f"not authorized: caller does not own mailbox '{args.mailbox}'")
    for flag, on in (("--fire-on-untrusted", args.fire_on_untrusted),
                     ("--fire-on-review", args.fire_on_review)):
        if args.event == "after_send" and on:
            raise CliError(f"{flag} is only valid on --event on_receive")
    if args.webhook is not None:
        fields = webhook_fields(args)
        cmd = None
    else:
        for flag in ("secret_file", "allow_insecure", "allow_private"):
            if getattr(args, flag):
                raise CliError(f"--{flag.replace('_', '-')} is only valid with --webhook")
        if not args.cmd.strip():
            raise CliError("--cmd must not be empty")
        cmd = parse_cmd(args.cmd)
        fields = {"cmd": cmd, "fire_on_untrusted": args.fire_on_untrusted, "type": "cmd"}
    if args.fire_on_review:
        fields["fire_on_review"] = True
    if args.timeout_secs not in (None, DEFAULT_HOOK_TIMEOUT):
        fields["timeout_secs"] = args.timeout_secs
    body = json.dumps(fields)
    try:
        reply = await s.call(
            HookCreate, mailbox=args.mailbox, event=args.event, name=args.name, body=body
        )
    except DaemonNotRunning as e:
        config = s.root_config(_down(s, e))
        target = config.mailbox(args.mailbox)
        if target is None:
            raise mailbox_missing(args.mailbox) from None
        configedit.check_hook_target(config, target)
        hook = configedit.parse_hook_request(args.event, args.name, body)
        new = configedit.add_hook(config, args.mailbox, hook)
        secret = _store_secret(s, hook, body) if cmd is None else None
        s.write_config(new)
        s.term.success(f"Hook created: {hook.name}")
        s.term.say(s.pending_note())
        facts = _facts_from_config(config, args.mailbox)
    else:
        s.term.success(f"Hook created: {reply['name']} (live via daemon)")
        secret = reply.get("secret")
        facts = await _mailbox_facts(s, args.mailbox)
    if secret is not None:
        s.term.say(f"Webhook secret (shown once; your receiver verifies with it): {secret}")
    uid = gid = None
    owner = "the mailbox owner"
    if facts is not None:
        note = trust_note(args.mailbox, args.event, args.fire_on_untrusted, facts)
        if note:
            s.term.say(note)
        owner = facts["owner"]
        ids = s.passwd.owner(owner)
        uid, gid = ids.uid, ids.gid
    problem = None if cmd is None else program_problem(cmd[0], owner, uid, gid, s.passwd)
    if problem:
        s.term.warn(f"Warning: hook program {problem}")
    return 0


def webhook_fields(args) -> dict:
    """The HOOK-CREATE body of C{--webhook}: the secret file is read here, as the caller.

    @raise CliError: the secret file cannot be read.
    """
    fields = {"type": "webhook", "url": args.webhook, "fire_on_untrusted": args.fire_on_untrusted}
    for flag in ("allow_insecure", "allow_private"):
        if getattr(args, flag):
            fields[flag] = True
    if args.secret_file is not None:
        from aimx.core.webhook import SECRET_FILE_CAP

        try:
            with open(args.secret_file, "rb") as f:
                data = f.read(SECRET_FILE_CAP + 1)
        except OSError as e:
            raise CliError(f"cannot read --secret-file {args.secret_file}: {e.strerror}") from None
        if len(data) > SECRET_FILE_CAP:
            raise CliError(f"--secret-file {args.secret_file} is not a webhook secret "
                           "(longer than 1 KiB)")
        fields["secret"] = data.decode("ascii", "replace").strip()
    return fields


def _store_secret(s: session.Session, hook, body: str) -> str | None:
    """Root, daemon down: store the webhook's secret as the daemon would.

    @return: the secret when it was generated (to be shown once), else C{None}.
    """
    from aimx.core import configedit, webhook
    from aimx.store import webhookfiles

    key = configedit.request_secret(body)
    generated = None
    if key is None:
        generated = webhook.make_secret(os.urandom(webhook.SECRET_BYTES))
        key = webhook.parse_secret(generated)
    webhookfiles.write_secret(s.args.config_dir, hook.name, key)
    return generated


async def _mailbox_facts(s: session.Session, name: str) -> dict | None:
    """The mailbox's owner and effective trust settings, from MAILBOX-SHOW (else the config).

    The hook exists by now: a failure here only costs the advice, never the exit code.
    """
    try:
        return (await s.call(MailboxShow, name=name))["mailbox"]
    except AimxError:
        config = s.config()
        return None if config is None else _facts_from_config(config, name)


def _facts_from_config(config, name: str) -> dict | None:
    mailbox = config.mailbox(name)
    if mailbox is None:
        return None
    return {
        "owner": mailbox.owner,
        "trust": config.effective_trust(mailbox),
        "trusted_senders": list(config.effective_trusted_senders(mailbox)),
    }


def trust_note(mailbox: str, event: str, fire_on_untrusted: bool, facts: dict) -> str | None:
    """Whether the mailbox's trust policy lets an C{on_receive} hook fire (docs/hooks.md).

    @param facts: C{trust} and C{trusted_senders}, the effective ones.
    @return: a C{Note:} line, or C{None} (C{after_send} hooks have no gate).
    """
    if event != "on_receive":
        return None
    if fire_on_untrusted:
        return (
            f"Note: this hook fires for all mail to mailbox '{mailbox}', trusted or not "
            "(--fire-on-untrusted): anyone who can send mail to it can start the program."
        )
    senders = facts["trusted_senders"]
    if facts["trust"] == "verified" and senders:
        return (
            f"Note: mailbox '{mailbox}' has trust = \"verified\": this hook fires only for "
            f"mail from trusted_senders ({clip(', '.join(senders), 60)}) with a valid DKIM "
            "signature of the sender's domain."
        )
    if facts["trust"] == "verified":
        policy, fix = 'trust = "verified" but no trusted_senders', "add trusted_senders"
    else:
        policy = f"trust = \"{facts['trust']}\""
        fix = 'set trust = "verified" and trusted_senders'
    return (
        f"Note: mailbox '{mailbox}' has {policy}, so no mail to it is trusted and this hook "
        f"will not fire. To run it, {fix} for the mailbox in config.toml (as root), or "
        "re-create the hook with --fire-on-untrusted to run it for all mail."
    )


def parse_cmd(text: str) -> list[str]:
    """C{--cmd}: a JSON array of strings, or (not starting with C{[}) one program path.

    @param text: the option's value, not blank.
    @raise CliError: a relative program path, JSON that does not parse, or an
        array that is empty or holds something other than strings.
    """
    text = text.strip()
    if not text.startswith("["):
        if not text.startswith("/"):
            raise CliError(
                f"--cmd '{text}' is not an absolute path: a program given alone must be an "
                "absolute path (e.g. --cmd /usr/local/bin/triage); give arguments as a JSON "
                f"array, {_EXAMPLE}"
            )
        return [text]
    try:
        cmd = json.loads(text)
    except json.JSONDecodeError as e:
        raise CliError(
            f"--cmd starts with [ but is not valid JSON ({e.msg} at column {e.colno}); give a "
            f"JSON array of strings, {_EXAMPLE}, or a single absolute program path"
        ) from None
    problem = None
    if not (isinstance(cmd, list) and all(isinstance(a, str) for a in cmd)):
        problem = "not an array of strings"
    elif not cmd:
        problem = "the array is empty"
    if problem is not None:
        raise CliError(f"--cmd must be a JSON array of strings, {_EXAMPLE}; {problem}")
    return cmd


def program_problem(path: str, owner: str, uid, gid, passwd) -> str | None:
    """Why the mailbox owner could not run C{path}, as the rest of a warning; C{None} if fine.

    The hook runs as the owner's uid and primary gid only (no supplementary
    groups, docs/hooks.md), so the check reads the mode bits against
    those ids the way the kernel does: the file owner's bits if the uid owns
    it, else the group's if the gid does, else the others'.  Every directory
    on the way needs search permission, for the path as given and as resolved.
    ACLs are not read.  When the owner's ids are unknown only existence is checked.

    @param path: the program (C{cmd[0]}), an absolute path.
    @param owner: the mailbox owner's name, for the message.
    @param passwd: names the file owners in the message.
    """
    tail = "the hook is created but fails until the program is installed."
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        text = f"{path} does not exist; {tail}"
        if any(c.isspace() for c in path):
            text += (
                " A --cmd that does not start with [ is a single program path; give "
                f"arguments as a JSON array, {_EXAMPLE}."
            )
        return text
    except OSError as e:
        return f"{path} is not reachable by {owner}: {e.strerror}; {_STILL_CREATED}"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file; {_STILL_CREATED}"
    if uid is None:
        return None
    for directory in _directories(path):
        try:
            dst = os.stat(directory)
        except OSError:
            continue
        if not _may_execute(dst, uid, gid, directory=True):
            return (
                f"{path} is not reachable by {owner}, who runs the hook: directory "
                f"{directory} is not searchable by them ({_mode_text(dst, passwd)}); "
                f"{_STILL_CREATED}"
            )
    if not _may_execute(st, uid, gid):
        return (
            f"{path} is not executable by {owner}, who runs the hook "
            f"({_mode_text(st, passwd)}); {_STILL_CREATED}"
        )
    return None


def _directories(path: str) -> list[str]:
    """The directories searched to reach C{path}: its parents as given and as resolved."""
    found = []
    for candidate in (os.path.normpath(path), os.path.realpath(path)):
        parent = os.path.dirname(candidate)
        chain = []
        while True:
            chain.append(parent)
            if parent == os.path.dirname(parent):
                break
            parent = os.path.dirname(parent)
        found += [d for d in reversed(chain) if d not in found]
    return found


def _may_execute(st: os.stat_result, uid: int, gid, directory: bool = False) -> bool:
    """Execute (search, for a directory) permission for C{uid}:C{gid} under C{st}'s mode."""
    mode = st.st_mode
    if uid == 0:  # root may search any directory, and run a file with any x bit
        return directory or bool(mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH))
    if st.st_uid == uid:
        return bool(mode & stat.S_IXUSR)
    if gid is not None and st.st_gid == gid:
        return bool(mode & stat.S_IXGRP)
    return bool(mode & stat.S_IXOTH)


def _mode_text(st: os.stat_result, passwd) -> str:
    owner = passwd.username(st.st_uid) or str(st.st_uid)
    return f"mode {stat.S_IMODE(st.st_mode):04o}, owned by {owner}"


async def delete(args, s: session.Session) -> int:
    from aimx.core import configedit

    name = args.name
    config = None
    try:
        rows = (await s.call(HookList))["hooks"]
    except DaemonNotRunning as e:
        config = s.root_config(_down(s, e))
        rows = configedit.hook_rows(config, lambda mb: True)
    row = next((row for row in rows if row["name"] == name), None)
    if row is None:
        raise hook_missing(name)
    if not args.yes:
        term = s.term

        def show():
            term.say("About to delete hook:")
            term.say(f"  name:    {row['name']}")
            term.say(f"  mailbox: {row['mailbox']}")
            term.say(f"  event:   {row['event']}")
            term.say(f"  timeout: {row['timeout_secs']}s")
            term.say(f"  {'url: ' if row.get('url') else 'cmd: '}    "
                     f"{row.get('url') or cmd_text(row['cmd'])}")

        if not s.confirm_delete("Continue? [y/N] ", show):
            return 0
    if config is not None:
        s.write_config(configedit.remove_hook(config, row["mailbox"], name))
        s.term.success(f"Hook deleted: {name}")
        s.term.say(s.pending_note())
        return 0
    await s.call(HookDelete, name=name)
    s.term.success(f"Hook deleted: {name} (live via daemon)")
    return 0


async def enable(args, s: session.Session) -> int:
    await s.call(HookEnable, name=args.name)
    s.term.success(f"Hook enabled: {args.name}")
    return 0


async def status(args, s: session.Session) -> int:
    rows = (await s.call(HookStatus, name=args.name))["hooks"]
    if printed_plainly(s.term, rows, as_json=args.json, empty="No webhooks configured."):
        return 0
    s.term.say(s.term.bold(f"{'NAME':<28} {'PENDING':>7} {'FAILING':>7} {'DEAD':>5} LAST ERROR"))
    for row in rows:
        s.term.say(f"{clip(row['name'], 28):<28} {row['pending']:>7} {row['failing']:>7} "
                   f"{row['dead']:>5} {clip(row.get('last_error') or '-', 60)}")
    return 0


async def retry(args, s: session.Session) -> int:
    count = (await s.call(HookRetry, name=args.name))["requeued"]
    s.term.success(f"Re-queued {count} dead-lettered deliver{'y' if count == 1 else 'ies'} "
                   f"of {args.name}")
    return 0


VERBS = {"list": list_, "create": create, "delete": delete, "enable": enable,
         "status": status, "retry": retry}
