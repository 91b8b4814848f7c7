"""``aimx ingest <rcpt>`` (hidden): store one message read from stdin, as the daemon would.

It runs the daemon's own ingest chain (L{aimx.smtp.inbound.Inbound}), its
L{HookRunner} and its audit log, and exits once the on_receive hooks have finished
and the verdict is written to the audit log (docs/cli.md,
"aimx ingest"): 0 when the message is stored (or was a duplicate), 75 (EX_TEMPFAIL) when the
daemon would have answered 4xx, so a caller such as a fetchmail or procmail
pipeline retries later.
"""

import os
import sys

from twisted.internet import threads
from twisted.logger import globalLogBeginner

from aimx.auditlog import AuditLog
from aimx.auth.resolver import Resolver
from aimx.core.address import Envelope
from aimx.hooks import HookRunner
from aimx import logs
from aimx.smtp.inbound import FAILED, Inbound, route
from aimx.store import configfile
from aimx.store.mailstore import MailStore

EX_TEMPFAIL = 75

log = logs.Logger(namespace="aimx.inbound")
config_log = logs.Logger(namespace="aimx.config")


def run(args) -> int:
    # aimx's own events, one line each, on stderr (the journal form when it is the
    # journal); Twisted's own chatter is left out.
    globalLogBeginner.beginLoggingTo([_ours(logs.observer(sys.stderr))],
                                     redirectStandardIO=False)
    config, warnings = configfile.load(args.config_dir, data_dir_override=args.data_dir)
    for warning in warnings:
        config_log.warn("config warning", problem=warning)
    route(config, args.rcpt)  # NoMailboxError: "no mailbox routes recipient …"
    raw = sys.stdin.buffer.read()
    envelope = Envelope(peer_ip=None, helo=None, mail_from=None, rcpts=(args.rcpt,), raw=raw)
    status = _deliver(config, envelope)
    if status.code >= 500:
        return 1
    return EX_TEMPFAIL if status.code >= 400 else 0


def _deliver(config, envelope):
    """Run the chain and the hooks under a reactor; the SMTP reply it decided."""
    from twisted.internet import reactor

    inbound = Inbound(
        config=lambda: config,
        store=MailStore(config.data_dir),
        resolver=Resolver.from_env(),
        run_in_thread=threads.deferToThread,
    )
    audit = AuditLog(config=lambda: config, clock=reactor, run_in_thread=threads.deferToThread)
    runner = HookRunner(reactor, config=lambda: config, environ=os.environ, audit=audit.record)
    inbound.listeners.append(runner.on_received)
    outcome = []

    def go():
        done = inbound.deliver(envelope)
        done.addCallback(outcome.append)
        done.addCallback(lambda _: runner.idle())
        done.addCallback(lambda _: audit.flushed())
        done.addErrback(lambda f: log.failure("ingest crashed", f))
        done.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()
    return outcome[0] if outcome else FAILED


def _ours(observer):
    """C{observer}, given aimx's events only."""

    def observe(event):
        if str(event.get("log_namespace", "")).startswith("aimx."):
            observer(event)

    return observe
