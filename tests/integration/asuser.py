"""Run the aimx CLI, or raw control commands, as another uid (integration test helper).

    python -m tests.integration.asuser UID GID cli ARG...
    python -m tests.integration.asuser UID GID amp '[["MailboxList", {}], ...]'

Everything is imported first, as root; then the process drops to UID:GID
(setgroups([]), setgid, setuid) and only then connects, so the interpreter's
files need not be readable by that user and C{SO_PEERCRED} reports UID.  C{amp}
prints a JSON list with one C{{"ok": reply}} or C{{"error": code, "reason": text}}
per command.
"""

import importlib
import json
import os
import sys

from twisted.internet import defer, reactor, task  # noqa: F401 (import before the drop)

import aimx.cli
import aimx.control.blockingclient
import aimx.control.listing
import aimx.core.configedit
import aimx.core.frontmatter
import aimx.core.replytext
import aimx.host.initsystem
import aimx.store.configfile
import aimx.store.mailboxdirs
import aimx.store.mailstore
import aimx.store.passwd
from aimx.control import client, commands, wire
from aimx.errors import AimxError


async def _commands(clock, calls):
    connection = await client.connect(clock, wire.socket_path())
    results = []
    for name, arguments in calls:
        for key in ("message", "html_body"):  # bytes arguments travel as JSON text
            if isinstance(arguments.get(key), str):
                arguments[key] = arguments[key].encode("utf-8")
        try:
            results.append({"ok": await connection.call(getattr(commands, name), **arguments)})
        except AimxError as e:
            results.append({"error": e.code, "reason": str(e)})
    connection.close()
    print(json.dumps(results))


def main(argv):
    uid, gid, mode, *rest = argv
    # Every verb module and everything they import when they run, while the files
    # are still readable.
    aimx.cli.arguments.parser()
    for verb in aimx.cli.arguments.VERBS:
        importlib.import_module(f"aimx.cli.{aimx.cli.VERBS.get(verb, verb)}")
    os.setgroups([])
    os.setgid(int(gid))
    os.setuid(int(uid))
    if mode == "cli":
        return aimx.cli.main(rest)
    task.react(lambda r: defer.Deferred.fromCoroutine(_commands(r, json.loads(rest[0]))))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
