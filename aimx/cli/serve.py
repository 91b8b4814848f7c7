"""``aimx serve``: run the daemon in the foreground, logging to stderr (L3).

One line per event (L{aimx.logs}); in the journal form when stderr is the journal."""

import sys

from twisted.python import usage


def run(argv: list[str]) -> int:
    from aimx import service

    options = service.Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        print(f"{options}\naimx serve: {e}", file=sys.stderr)
        return 2

    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner

    from aimx import logs

    globalLogBeginner.beginLoggingTo([logs.observer(sys.stderr)], redirectStandardIO=False)
    try:
        daemon = service.build(options, reactor, workers=service.default_workers())
        daemon.startService()
    except service.ConfigError as e:  # e.g. "Failed to bind to <--bind value>: <err>"
        print(str(e), file=sys.stderr)
        return 1
    reactor.addSystemEventTrigger("before", "shutdown", daemon.stopService)
    reactor.run()
    return 0
