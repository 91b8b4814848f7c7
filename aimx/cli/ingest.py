"""``aimx ingest <rcpt>`` (hidden): store one message read from stdin, as the daemon would."""

import sys

from aimx.auth.resolver import Resolver
from aimx.core.address import Envelope
from aimx.core.config import resolve_mailbox
from aimx.errors import AimxError
from aimx.smtp.inbound import prepare, store_for_rcpt
from aimx.store import configfile
from aimx.store.mailstore import MailStore


def _log(message: str):
    print(message, file=sys.stderr)


def run(args) -> int:
    config, warnings = configfile.load(args.config_dir, data_dir_override=args.data_dir)
    for warning in warnings:
        _log(f"aimx::config warning: {warning}")
    if resolve_mailbox(config, args.rcpt) is None:
        raise AimxError(f"no mailbox routes recipient {args.rcpt}")
    raw = sys.stdin.buffer.read()
    envelope = Envelope(peer_ip=None, helo=None, mail_from=None, rcpts=(args.rcpt,), raw=raw)
    prepared = prepare(envelope, Resolver.from_env())
    result = store_for_rcpt(config, MailStore(config.data_dir), prepared, args.rcpt)
    mailbox = result.mailbox.name
    _log(
        f"aimx::ingest received email rcpt={args.rcpt} mailbox={mailbox} "
        f"size_bytes={len(raw)} from={prepared.parsed.from_}"
    )
    auth = prepared.auth
    _log(f"aimx::ingest auth result dkim={auth.dkim} spf={auth.spf} dmarc={auth.dmarc}")
    _log(
        f"aimx::trust trust eval mailbox={mailbox} "
        f"policy={config.effective_trust(result.mailbox)} "
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
    return 0
