"""``aimx hooks`` (alias ``hook``), L3: list, create, delete (spec/cli.md §4.6).

Every verb asks the daemon over the control socket.  When no daemon answers,
root (with a readable config) edits config.toml directly; the change then takes
effect on the next start.
"""

import argparse
import json
import re

from aimx.cli import session
from aimx.cli.session import CliError, hook_missing, mailbox_missing
from aimx.cli.term import clip, cmd_text
from aimx.control.commands import HookCreate, HookDelete, HookList, MailboxShow
from aimx.core import configedit
from aimx.core.config import DEFAULT_HOOK_TIMEOUT, EVENTS
from aimx.errors import DaemonNotRunning

_HOOK_NAME = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}")
#: The last sentence of the daemon-down error for non-root callers.
WITHOUT_DAEMON = (
    "The daemon must be running for non-root hook commands; with sudo, aimx uses "
    "config.toml directly instead."
)


def add_parser(sub, common) -> None:
    """Register C{hooks} (and its alias C{hook}) on the top-level subparsers."""
    parser = sub.add_parser(
        "hooks", aliases=["hook"], parents=[common], help=argparse.SUPPRESS, prog="aimx hooks"
    )
    actions = parser.add_subparsers(
        dest="action", metavar="<action>", required=True, prog="aimx hooks"
    )
    listing = actions.add_parser("list", parents=[common], help="list hooks")
    listing.add_argument("--mailbox", help="only this mailbox's hooks")
    create = actions.add_parser("create", parents=[common], help="add a hook")
    create.add_argument("--mailbox", required=True)
    create.add_argument("--event", required=True, choices=EVENTS)
    create.add_argument("--cmd", required=True, help="argv as a JSON array of strings")
    create.add_argument("--name", help="explicit hook name (default: derived)")
    create.add_argument("--timeout-secs", type=int, help="1..600 (default 60)")
    create.add_argument(
        "--fire-on-untrusted", action="store_true", help="also fire for untrusted mail"
    )
    delete = actions.add_parser("delete", parents=[common], help="remove a hook")
    delete.add_argument("name")
    delete.add_argument("-y", "--yes", action="store_true", help="do not ask")


def main(args) -> int:
    return session.run(VERBS[args.action], args)


def _down(s: session.Session, error) -> str:
    return s.not_running(error, WITHOUT_DAEMON)


async def list_(args, s: session.Session) -> int:
    try:
        rows = (await s.call(HookList))["hooks"]
        live = True
    except DaemonNotRunning as e:
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
    if not rows:
        s.term.say("No hooks configured.")
        return 0
    s.term.say(s.term.bold(f"{'NAME':<28} {'MAILBOX':<20} {'EVENT':<12}TIMEOUT CMD"))
    for row in rows:
        s.term.say(
            f"{clip(row['name'], 28):<28} {clip(row['mailbox'], 20):<20} {row['event']:<11} "
            f"{row['timeout_secs']:>7} {cmd_text(row['cmd'])}"
        )
    return 0


async def create(args, s: session.Session) -> int:
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
    if args.event == "after_send" and args.fire_on_untrusted:
        raise CliError("--fire-on-untrusted is only valid on --event on_receive")
    if not args.cmd.strip():
        raise CliError("--cmd must not be empty")
    fields = {"cmd": _argv(args.cmd), "fire_on_untrusted": args.fire_on_untrusted, "type": "cmd"}
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
        s.write_config(configedit.add_hook(config, args.mailbox, hook))
        s.term.success(f"Hook created: {hook.name}")
        s.term.say(s.pending_note())
        return 0
    s.term.success(f"Hook created: {reply['name']} (live via daemon)")
    return 0


def _argv(text: str) -> list[str]:
    """C{--cmd}: a non-empty JSON array of strings."""
    try:
        cmd = json.loads(text)
        problem = None
    except ValueError as e:
        cmd, problem = None, str(e)
    if problem is None and not (isinstance(cmd, list) and all(isinstance(a, str) for a in cmd)):
        problem = "not an array of strings"
    if problem is None and not cmd:
        problem = "the array is empty"
    if problem is not None:
        raise CliError(
            "--cmd must be a JSON array of strings, e.g. --cmd '[\"/bin/echo\", \"hello\"]'; "
            + problem
        )
    return cmd


async def delete(args, s: session.Session) -> int:
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
            term.say(f"  cmd:     {cmd_text(row['cmd'])}")

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


VERBS = {"list": list_, "create": create, "delete": delete}
