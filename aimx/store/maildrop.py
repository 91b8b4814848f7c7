"""The test mail drop (L1): outbound messages written to a directory, not delivered.

C{AIMX_TEST_MAIL_DROP=DIR} (docs/configuration.md, "Environment variables"): per
message C{<20-digit time_ns>-<uuid4 hex>.eml} holding exactly the signed bytes
and a sibling C{.json} envelope, each written under a dot-name and renamed
(the JSON first, so a reader that sees an C{.eml} also finds its envelope)
by L{aimx.store.safefs.replace_path}.
"""

import json
import os
import time
import uuid

from aimx.store import safefs


def drop(directory: str, message: bytes, *, mail_from: str, rcpt_to: list[str],
         message_id: str, now_ns=time.time_ns) -> str:
    """Write one message and its envelope; the directory is created if missing.

    @return: the path of the C{.eml}.
    @raise OSError: the path is not a directory, or a write failed.
    """
    os.makedirs(directory, mode=0o700, exist_ok=True)
    stem = f"{now_ns():020d}-{uuid.uuid4().hex}"
    envelope = {"mail_from": mail_from, "rcpt_to": list(rcpt_to), "message_id": message_id}
    for name, data in ((stem + ".json", json.dumps(envelope).encode("utf-8")),
                       (stem + ".eml", message)):
        safefs.replace_path(os.path.join(directory, name), data, mode=0o600,
                            tmp=f".{name}.tmp", durable=False)
    return os.path.join(directory, stem + ".eml")
