"""``aimx ingest <rcpt>`` (hidden): store one message read from stdin, as the daemon would.

Its on_receive hooks run through the daemon's L{HookRunner}, and the verb exits
once they have finished (spec/hooks.md §3.1).
"""

import os
import sys

from twisted.logger import formatEvent, globalLogBeginner

from aimx.auth.resolver import Resolver
from aimx.core.address import Envelope
from aimx.hooks import HookRunner
from aimx.smtp.inbound import prepare, route, store_for_rcpt
from aimx.store import configfile
from aimx.store.mailstore import MailStore


def _log(message: str):
    print(message, file=sys.stderr)


def run(args) -> int:
    config, warnings = configfile.load(args.config_dir, data_dir_override=args.data_dir)
    for warning in warnings:
        _log(f"aimx::config warning: {warning}")
    mailbox = route(config, args.rcpt)  # NoMailboxError: "no mailbox routes recipient …"
    raw = sys.stdin.buffer.read()
    envelope = Envelope(peer_ip=None, helo=None, mail_from=None, rcpts=(args.rcpt,), raw=raw)
    prepared = prepare(envelope, Resolver.from_env())
    result = store_for_rcpt(config, MailStore(config.data_dir), prepared, args.rcpt, mailbox)
    mailbox = result.mailbox.name
    _log(
        f"aimx::ingest received email rcpt={args.rcpt} mailbox={mailbox} "
        f"size_bytes={len(raw)} from={prepared.parsed.from_}"
    )
    auth = prepared.auth
    _log(f"aimx::ingest auth result dkim={auth.dkim} spf={auth.spf} dmarc={auth.dmarc}")
    _log(
        f"aimx::trust trust eval mailbox={mailbox} "
        f"policy={result.policy} "
        f"sender_allowlisted={str(result.allowlisted).lower()} result={result.trusted}"
    )
    for warning in result.stored.warnings:
        _log(f"aimx::ingest warning: {warning}")
    if result.stored.duplicate:
        _log(
            f"aimx::ingest duplicate message_id, skipping rcpt={args.rcpt} "
            f"mailbox={mailbox} message_id={prepared.parsed.message_id}"
        )
    else:
        _log(
            f"aimx::ingest stored email id={result.stored.id} path={result.stored.path} "
            f"mailbox={mailbox} attachments={result.stored.attachments}"
        )
        _run_hooks(config, result)
    return 0


def _run_hooks(config, ingested) -> None:
    """Fire the on_receive hooks and wait until they have finished."""
    from twisted.internet import reactor

    globalLogBeginner.beginLoggingTo([_print_event], redirectStandardIO=False)
    runner = HookRunner(reactor, config=lambda: config, environ=os.environ)
    reactor.callWhenRunning(
        lambda: runner.on_received(ingested).addBoth(lambda _: reactor.stop())
    )
    reactor.run()


def _print_event(event):
    """Print aimx log events the way the verb prints its own (C{aimx::hook ...})."""
    namespace = event.get("log_namespace", "")
    if namespace.startswith("aimx."):
        _log(f"{namespace.replace('.', '::')} {formatEvent(event)}")
