"""Application file for ``twistd -ny aimx.tac``.

The same service as ``twistd -n aimx``; options come from the AIMX_* environment
variables, plus any daemon flags in AIMX_ARGS (e.g. ``--bind 127.0.0.1:2525``).
"""

import os
import shlex

from twisted.application import service

from aimx.service import Options, makeService

options = Options()
options.parseOptions(shlex.split(os.environ.get("AIMX_ARGS", "")))
application = service.Application("aimx")
makeService(options).setServiceParent(application)
