"""The command line's grammar (L3): the top-level parser and every verb's arguments.

Each verb's arguments are described here, not in the verb's module, so the
parser is built without importing any verb: a verb's module (and Twisted, the
DNS and DKIM code some of them load) is imported only when that verb runs
(L{aimx.cli.main}).  L{parser_for} builds the parser of the verb about to run:
that verb alone, since no error of the top level then names the others; with no
verb or an unknown word, every verb by name only, for the help and for the typo
error that lists them.  L{parser} builds it whole (C{aimx completion}).
"""

import argparse

from aimx.ops.version import version_line

HELP_GROUPS = """\
Operations (as current user):
  send          Send an email from one of your mailboxes
  mail          List, read, search and mark mail; whole threads
  mailboxes     Create, list, show and delete mailboxes
  hooks         Create, list and delete hooks
  held          List, show, approve and reject mail held for approval
  audit         Read the audit log (inbound verdicts, sends, changes)
  agents        Wire aimx into an AI agent harness
  mcp           Run the MCP server on stdio
  completion    Print a shell completion script (bash or zsh)

Server administration:
  setup         Guided setup: domain, DNS, DKIM, TLS, service
  serve         Run the mail daemon (same as `twistd -n aimx`)
  doctor        Check the installation
  logs          Show the daemon log
  dkim-keygen   Generate the DKIM key pair
  reindex       Rebuild the mail index from the message files
  portcheck     Check that port 25 is reachable
  uninstall     Remove what setup installed

Try it:
  demo          Run a throwaway local demo (no root, no real DNS)
"""

#: The most rows one C{aimx mail} listing asks for.
LIMIT_MAX = 200
#: C{aimx logs}' default line count.
DEFAULT_LINES = 50


def _count(most: int | None = None):
    """The type of a count option: a whole number, at most C{most}."""

    def parse(text: str) -> int:
        if not text.isdigit() or (most is not None and int(text) > most):
            bound = f" from 0 to {most}" if most is not None else ""
            raise argparse.ArgumentTypeError(f"expected a whole number{bound}, not '{text}'")
        return int(text)

    return parse


def _lines(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid line count: {text!r}")
    return value


def _priority(text: str) -> int:
    from aimx.ops import logline

    try:
        return logline.priority(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _since(text: str):
    import datetime

    from aimx.ops import logline

    try:
        return logline.since(text, datetime.datetime.now().astimezone())
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _verb(sub, name: str, common, **kwargs) -> argparse.ArgumentParser:
    """A verb's parser, kept out of the top-level help (L{HELP_GROUPS} lists the verbs)."""
    return sub.add_parser(name, parents=[common], help=argparse.SUPPRESS, prog=f"aimx {name}",
                          **kwargs)


def _actions(parser, verb: str):
    return parser.add_subparsers(dest="action", metavar="<action>", required=True,
                                 prog=f"aimx {verb}")


# -- the verbs, in the order they are registered ---------------------------------------


def serve(sub, common) -> None:
    """C{serve}: its options are L{aimx.service.Options}' (L{aimx.cli.serve})."""
    sub.add_parser("serve", help=argparse.SUPPRESS)


def mcp(sub, common) -> None:
    """C{mcp}: dispatched before the parser is built (L{aimx.cli.main})."""
    sub.add_parser("mcp", help=argparse.SUPPRESS)


def ingest(sub, common) -> None:
    ingest = sub.add_parser("ingest", parents=[common])
    ingest.add_argument("rcpt", help="recipient address to route the message to")


def demo(sub, common) -> None:
    from aimx.loopback import DEMO_DOMAIN, SENDER_DOMAIN

    parser = _verb(
        sub, "demo", common,
        description=f"Run a throwaway aimx for {DEMO_DOMAIN} on 127.0.0.1 (no root, no "
        "real DNS); it prints commands to try from another shell.",
    )
    parser.add_argument("--port", type=int, default=2525,
                        help="SMTP port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--dir", default=None, help="demo directory (default: a temp dir)")
    parser.add_argument(
        "--no-wait", action="store_true", help="stop the daemon after the deliveries"
    )
    verbs = parser.add_subparsers(dest="demo_verb", metavar="<command>")
    send = verbs.add_parser(
        "send", prog="aimx demo send", help="send the running demo a DKIM-signed message",
        description=f"Send the running demo a message DKIM-signed by {SENDER_DOMAIN} (which "
        "the demo trusts, so its hooks fire), over SMTP with STARTTLS.  The demo is "
        "found through AIMX_RUNTIME_DIR, as the demo's printed commands set it.",
    )
    send.add_argument("--from", dest="sender", default=f"Alice <alice@{SENDER_DOMAIN}>",
                      metavar="ADDR", help=f"an address at {SENDER_DOMAIN} "
                      f"(default: alice@{SENDER_DOMAIN})")
    send.add_argument("--to", action="append", metavar="ADDR",
                      help=f"recipient, repeatable (default: agent@{DEMO_DOMAIN})")
    send.add_argument("--subject", default="Hello again")
    send.add_argument("--body", default="One more message from the demo's sender.\n")


def send(sub, common) -> None:
    parser = _verb(sub, "send", common, description="Send an email from one of your mailboxes.")
    parser.add_argument("--from", dest="sender", required=True, metavar="ADDR",
                        help="sender address (one of your mailboxes)")
    parser.add_argument("--to", action="append", required=True, metavar="ADDR",
                        help="recipient (repeatable or comma-separated)")
    parser.add_argument("--cc", action="append", default=[], metavar="ADDR",
                        help="Cc recipient (repeatable or comma-separated)")
    parser.add_argument("--bcc", action="append", default=[], metavar="ADDR",
                        help="Bcc recipient, delivered but not shown (repeatable)")
    parser.add_argument("--subject", required=True)
    parser.add_argument("--body", required=True, help="Markdown (default) or plain text")
    parser.add_argument("--in-reply-to", metavar="MSG_ID",
                        help="Message-ID being replied to (sets In-Reply-To and References)")
    # The old name, kept working but not shown: it read as the Reply-To header.
    parser.add_argument("--reply-to", dest="in_reply_to", help=argparse.SUPPRESS)
    parser.add_argument("--references", metavar="CHAIN",
                        help="References chain (used with --in-reply-to)")
    parser.add_argument("--attachment", action="append", default=[], metavar="PATH",
                        help="file to attach (repeatable)")
    body = parser.add_mutually_exclusive_group()
    body.add_argument("--text-only", action="store_true",
                      help="send the body verbatim as text/plain (no Markdown render)")
    body.add_argument("--html-body", metavar="HTML",
                      help="HTML part to send; --body becomes the text alternative")


def mail(sub, common) -> None:
    actions = _actions(_verb(sub, "mail", common), "mail")
    listing = actions.add_parser("list", parents=[common],
                                 help="list a mailbox folder, newest first")
    listing.add_argument("mailbox")
    listing.add_argument("--folder", choices=("inbox", "sent"), default="inbox")
    listing.add_argument("--limit", type=_count(LIMIT_MAX), default=50,
                         help="most messages (0-200, default 50)")
    listing.add_argument("--offset", type=_count(), default=0, help="messages to skip")
    listing.add_argument("--unread", action="store_true", help="only unread messages")
    listing.add_argument("--json", action="store_true", help="print one JSON document")
    read = actions.add_parser("read", parents=[common], help="print one message")
    read.add_argument("mailbox")
    read.add_argument("id")
    read.add_argument("--folder", choices=("inbox", "sent"), default="inbox")
    read.add_argument("--extracted", action="store_true",
                      help="only what the sender wrote: no quoted history or signature")
    thread = actions.add_parser("thread", parents=[common],
                                help="a whole conversation, inbox and sent, oldest first")
    thread.add_argument("mailbox")
    thread.add_argument("message", metavar="ID|THREAD_ID",
                        help="any message of the thread, or its thread_id")
    thread.add_argument("--limit", type=_count(LIMIT_MAX), default=50,
                        help="the newest this many messages (0-200, default 50)")
    thread.add_argument("--json", action="store_true", help="print one JSON document")
    search = actions.add_parser("search", parents=[common],
                                help="find messages by words and filters, newest first")
    search.add_argument("mailbox")
    search.add_argument("query", help='words (all must match), word*, "a phrase"; "" for '
                                      "filters only")
    search.add_argument("--folder", choices=("inbox", "sent", "all"), default="all")
    search.add_argument("--from", dest="sender", metavar="TEXT",
                        help="From contains TEXT (any case)")
    search.add_argument("--since", metavar="DATE", help="dated on or after (RFC 3339)")
    search.add_argument("--until", metavar="DATE", help="dated on or before (RFC 3339)")
    search.add_argument("--unread", action="store_true", help="only unread inbox messages")
    search.add_argument("--trusted", action="store_true", help='only trusted = "true"')
    search.add_argument("--limit", type=_count(LIMIT_MAX), default=20,
                        help="most messages (0-200, default 20)")
    search.add_argument("--json", action="store_true", help="print one JSON document")
    for name, verb in (("mark-read", "read"), ("mark-unread", "unread")):
        mark = actions.add_parser(name, parents=[common], help=f"mark an inbox message {verb}")
        mark.add_argument("mailbox")
        mark.add_argument("id")


def mailboxes(sub, common) -> None:
    actions = _actions(_verb(sub, "mailboxes", common, aliases=["mailbox"]), "mailboxes")
    create = actions.add_parser("create", parents=[common], help="create a mailbox")
    create.add_argument("name")
    create.add_argument("--owner", help="Linux user owning the mailbox (root only)")
    listing = actions.add_parser("list", parents=[common], help="list mailboxes")
    listing.add_argument("--all", action="store_true", help="every mailbox (root only)")
    listing.add_argument("--json", action="store_true", help="print one JSON document")
    show = actions.add_parser("show", parents=[common], help="show one mailbox")
    show.add_argument("name")
    delete = actions.add_parser("delete", parents=[common], help="delete a mailbox")
    delete.add_argument("name")
    delete.add_argument("-y", "--yes", action="store_true", help="do not ask")
    delete.add_argument("--force", action="store_true", help="also delete its emails")


def hooks(sub, common) -> None:
    from aimx.core.events import EVENTS

    actions = _actions(_verb(sub, "hooks", common, aliases=["hook"]), "hooks")
    listing = actions.add_parser("list", parents=[common], help="list hooks")
    listing.add_argument("--mailbox", help="only this mailbox's hooks")
    listing.add_argument("--json", action="store_true", help="print one JSON document")
    create = actions.add_parser("create", parents=[common], help="add a hook")
    create.add_argument("--mailbox", required=True)
    create.add_argument("--event", required=True, choices=EVENTS)
    what = create.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--cmd",
        metavar="CMD",
        help="the program's absolute path, or its argv as a JSON array of strings",
    )
    what.add_argument("--webhook", metavar="URL",
                      help="POST signed events to this URL instead (docs/hooks.md)")
    create.add_argument("--secret-file", metavar="FILE",
                        help="the webhook's whsec_ secret, read as you (default: generated)")
    create.add_argument("--allow-insecure", action="store_true",
                        help="let a webhook use plain http://")
    create.add_argument("--allow-private", action="store_true",
                        help="let a webhook reach private, loopback or own addresses")
    create.add_argument("--name", help="explicit hook name (default: derived)")
    create.add_argument("--timeout-secs", type=int, help="1..600 (default 60)")
    create.add_argument(
        "--fire-on-untrusted", action="store_true", help="also fire for untrusted mail"
    )
    create.add_argument(
        "--fire-on-review", action="store_true",
        help='also fire for mail stored with risk = "review" (docs/guardrails.md)'
    )
    delete = actions.add_parser("delete", parents=[common], help="remove a hook")
    delete.add_argument("name")
    delete.add_argument("-y", "--yes", action="store_true", help="do not ask")
    enable = actions.add_parser("enable", parents=[common],
                                help="enable a hook disabled by its receiver's 410")
    enable.add_argument("name")
    status = actions.add_parser("status", parents=[common],
                                help="webhook deliveries pending, failing or dead-lettered")
    status.add_argument("name", nargs="?")
    status.add_argument("--json", action="store_true", help="print one JSON document")
    retry = actions.add_parser("retry", parents=[common],
                               help="queue a webhook's dead-lettered deliveries again")
    retry.add_argument("name")


def held(sub, common) -> None:
    actions = _actions(_verb(sub, "held", common), "held")
    listing = actions.add_parser("list", parents=[common], help="list held messages")
    listing.add_argument("--mailbox", help="only this mailbox's")
    listing.add_argument("--json", action="store_true", help="print one JSON document")
    show = actions.add_parser("show", parents=[common], help="print a held message")
    show.add_argument("id")
    approve = actions.add_parser("approve", parents=[common], help="send a held message")
    approve.add_argument("id")
    reject = actions.add_parser("reject", parents=[common], help="reject a held message")
    reject.add_argument("id")
    reject.add_argument("--reason", help="kept with the rejected message")


def audit(sub, common) -> None:
    from aimx.core.audit import EVENTS

    parser = _verb(sub, "audit", common)
    parser.add_argument("--mailbox", help="only this mailbox's records")
    parser.add_argument("--since", help="from this RFC 3339 date or date-time on")
    parser.add_argument("--event", choices=EVENTS, help="only records of this kind")
    parser.add_argument("--limit", type=_count(10_000), default=1000,
                        help="the newest this many records (default 1000, at most 10000)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def agents(sub, common) -> None:
    actions = _actions(_verb(sub, "agents", common), "agents")
    setup = actions.add_parser(
        "setup", parents=[common], help="install aimx's skill and MCP wiring for an agent"
    )
    setup.add_argument("agent", nargs="?", help="agent name (see `aimx agents list`)")
    setup.add_argument("--list", action="store_true", help="list the supported agents")
    setup.add_argument("--force", action="store_true", help="overwrite existing files")
    setup.add_argument(
        "--print", action="store_true", help="print the files and activation step, write nothing"
    )
    setup.add_argument("--no-interactive", action="store_true", help="never open the picker")
    setup.add_argument(
        "--command",
        metavar="PATH",
        help="the aimx program to register (default: the aimx running this command)",
    )
    setup.add_argument(
        "--dangerously-allow-root",
        action="store_true",
        help="run as root and write into root's home",
    )
    actions.add_parser("list", parents=[common], help="list the supported agents")
    remove = actions.add_parser("remove", parents=[common], help="remove an agent's aimx files")
    remove.add_argument("agent", help="agent name")
    remove.add_argument(
        "--dangerously-allow-root",
        action="store_true",
        help="run as root and remove from root's home",
    )


def dkim_keygen(sub, common) -> None:
    parser = _verb(sub, "dkim-keygen", common,
                   description="Generate the DKIM key pair and print its DNS TXT record.")
    parser.add_argument("--selector", default="aimx", help="DKIM selector name (default: aimx)")
    parser.add_argument("--force", action="store_true", help="overwrite existing keys")


def reindex(sub, common) -> None:
    parser = _verb(
        sub, "reindex", common,
        description="Rebuild the mail index of MAILBOX (default: every mailbox you own) "
                    "from its message files.",
    )
    parser.add_argument("mailbox", nargs="?", help="one mailbox (default: all of yours)")


def logs(sub, common) -> None:
    parser = _verb(
        sub, "logs", common,
        description="Show the aimx service log (journald, or the OpenRC log files; "
        "for `aimx demo`, its log file, found through AIMX_RUNTIME_DIR).",
    )
    parser.add_argument(
        "-n", "--lines", type=_lines, default=DEFAULT_LINES, metavar="N",
        help=f"number of lines to show (default: {DEFAULT_LINES})",
    )
    parser.add_argument(
        "-f", "--follow", action="store_true", help="stream the log live (journalctl -f)"
    )
    parser.add_argument(
        "-p", "--priority", type=_priority, metavar="P",
        help="lines of priority P or more urgent, as journalctl -p: "
        "emerg alert crit err warning notice info debug, or 0-7",
    )
    parser.add_argument(
        "-S", "--since", type=_since, metavar="TIME",
        help="lines logged at or after TIME: YYYY-MM-DD[ HH:MM[:SS]], today, yesterday, "
        "now, -1h, '30min ago'",
    )
    parser.add_argument(
        "--mailbox", metavar="NAME", help="lines about mailbox NAME (their mailbox=NAME)"
    )


def uninstall(sub, common) -> None:
    parser = _verb(
        sub, "uninstall", common,
        description="Stop aimx and remove its service file and runtime files (config, "
        "mail and the aimx package are kept; the command that removes the package is "
        "printed).",
    )
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")


def check_options(parser) -> None:
    """C{--verify-host} and C{--outbound-check-domain}: C{portcheck}'s, and C{setup}'s."""
    from aimx.ops.portcheck import DEFAULT_OUTBOUND_CHECK_DOMAIN

    parser.add_argument(
        "--verify-host",
        metavar="URL",
        help="base URL of your own verifier (`twistd -n aimx-verifier` on another host) "
        "for the inbound check (default: verify_host in config.toml; without one the "
        "inbound check is skipped)",
    )
    parser.add_argument(
        "--outbound-check-domain",
        metavar="DOMAIN",
        help="domain whose MX the outbound check connects to, port 25, banner and QUIT "
        "only (default: outbound_check_domain in config.toml, else "
        f"{DEFAULT_OUTBOUND_CHECK_DOMAIN})",
    )


def portcheck(sub, common) -> None:
    check_options(_verb(
        sub, "portcheck", common,
        description=(
            "Check that port 25 is reachable. Outbound: connect to port 25 of a "
            "well-known domain's mail server, read its banner and say QUIT. Inbound: "
            "ask your own verifier (verify_host) to connect back to this host's port 25. "
            "Requires root (it may bind port 25 for the duration of the check)."
        ),
    ))


def doctor(sub, common) -> None:
    _verb(sub, "doctor", common,
          description="Check the installation: configuration, service, mailboxes, "
          "ownership and DNS records.")


def setup(sub, common) -> None:
    """C{setup}; its positional domain is accepted but not shown in help."""
    from aimx.ops.setupflow import NO_BACKUP_MX

    parser = _verb(
        sub, "setup", common,
        usage=(
            "aimx setup [--verify-host URL] [--outbound-check-domain DOMAIN] "
            "[--backup-mx HOST] [--mailbox NAME [--owner USER] | --no-mailbox]"
        ),
        description=(
            "Guided setup: port 25 preflight, mail domain and DNS records, DKIM key, "
            "TLS certificate, trust policy, then install and start the aimx service "
            "and offer a first mailbox. Requires root."
        ),
    )
    parser.add_argument("domain", nargs="?", help=argparse.SUPPRESS)
    check_options(parser)
    parser.add_argument(
        "--backup-mx", metavar="HOST",
        help="a backup MX for the domain (its MX record is proposed after aimx's); "
        f"`{NO_BACKUP_MX}` removes a configured one",
    )
    first = parser.add_mutually_exclusive_group()
    first.add_argument("--mailbox", metavar="NAME",
                       help="create the first mailbox, NAME@<domain>, without asking")
    first.add_argument("--no-mailbox", action="store_true",
                       help="do not offer to create a first mailbox")
    parser.add_argument("--owner", metavar="USER",
                        help="the Linux user owning --mailbox (default: the user behind sudo)")


def completion(sub, common) -> None:
    parser = sub.add_parser(
        "completion",
        help=argparse.SUPPRESS,
        prog="aimx completion",
        description=(
            "Print a completion script for SHELL. Load it with "
            "`source <(aimx completion bash)` (bash) or `source <(aimx completion zsh)` "
            "(zsh), e.g. from ~/.bashrc or ~/.zshrc."
        ),
    )
    parser.add_argument("shell", choices=("bash", "zsh"), metavar="SHELL", help="bash or zsh")


#: Verb -> the function adding its parser, and its aliases, in registration order.
VERBS = {
    "serve": (serve, ()),
    "mcp": (mcp, ()),
    "ingest": (ingest, ()),
    "demo": (demo, ()),
    "send": (send, ()),
    "mail": (mail, ()),
    "mailboxes": (mailboxes, ("mailbox",)),
    "hooks": (hooks, ("hook",)),
    "held": (held, ()),
    "audit": (audit, ()),
    "agents": (agents, ()),
    "dkim-keygen": (dkim_keygen, ()),
    "reindex": (reindex, ()),
    "logs": (logs, ()),
    "uninstall": (uninstall, ()),
    "portcheck": (portcheck, ()),
    "doctor": (doctor, ()),
    "setup": (setup, ()),
    "completion": (completion, ()),
}
ALIASES = {alias: verb for verb, (_, aliases) in VERBS.items() for alias in aliases}
#: Verbs that are dispatched but not offered (docs/cli.md, "aimx ingest").
HIDDEN = ("ingest",)


def parser_for(word: str | None) -> argparse.ArgumentParser:
    """The parser for a command line whose command word is C{word}.

    @param word: a verb or one of its aliases (that verb alone is built), or
        C{None} or anything else (every verb by name).
    """
    verb = ALIASES.get(word, word)
    if verb in VERBS:
        return parser({verb}, others=False)
    return parser(())


def parser(verbs=VERBS, others: bool = True) -> argparse.ArgumentParser:
    """The top-level parser with the arguments of C{verbs} (all by default).

    @param verbs: the names of the verbs whose arguments are built.
    @param others: whether every other verb is there by name.
    """
    top = argparse.ArgumentParser(
        prog="aimx",
        usage="aimx [--data-dir DIR] <command> [args]",
        description=f"{version_line()}: a self-hosted mail server for AI agents",
        epilog=HELP_GROUPS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        default=argparse.SUPPRESS,
        help="storage root (env AIMX_DATA_DIR; default from config.toml, /var/lib/aimx)",
    )
    common.add_argument(
        "--config-dir", default=argparse.SUPPRESS, help="config dir (env AIMX_CONFIG_DIR)"
    )
    top.add_argument("--data-dir", help=common._actions[0].help)
    top.add_argument("--config-dir", help=common._actions[1].help)
    top.add_argument("-V", "--version", action="store_true", help="print the version")
    sub = top.add_subparsers(dest="verb", metavar="<command>")
    for name, (add, aliases) in VERBS.items():
        if name in verbs:
            add(sub, common)
        elif others:  # there by name: a choice, and what a typo is compared with
            sub.add_parser(name, aliases=list(aliases), help=argparse.SUPPRESS)
    # Keep `ingest` (hidden) and the per-verb entries out of the top-level help.
    sub._choices_actions = []
    return top
