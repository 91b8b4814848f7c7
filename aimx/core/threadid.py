"""Message ids and the thread id of a message (L0, pure).

aimx hashes the thread I{root} (docs/concepts.md, "Threads"), so
every message of a conversation shares one C{thread_id}.
"""

import hashlib
import re

_TOKEN = re.compile(r"<([^<>]*)>")


def message_ids(header_value: str | None) -> list[str]:
    """Every message id of a header value, in order, without angle brackets.

    Each C{<...>} token is one id; a value without any token counts as one
    bare id.  Empty ids are skipped.

    @param header_value: a raw Message-ID, In-Reply-To or References value.
    @return: the ids, possibly empty.
    """
    if not header_value:
        return []
    ids = [token.strip() for token in _TOKEN.findall(header_value)]
    if not ids:
        bare = header_value.strip().strip("<>").strip()
        return [bare] if bare else []
    return [i for i in ids if i]


def thread_id(
    message_id: str | None, in_reply_to: str | None, references: str | None
) -> str:
    """The thread id: the first 16 hex chars of the sha256 of the thread root.

    The root is the first References id (RFC 5322 §3.6.4), else the first
    In-Reply-To id, else the message's own id, else C{""}.

    @param message_id: raw Message-ID header value, or L{None}.
    @param in_reply_to: raw In-Reply-To header value, or L{None}.
    @param references: raw References header value, or L{None}.
    @return: 16 lowercase hex characters.
    """
    for value in (references, in_reply_to, message_id):
        ids = message_ids(value)
        if ids:
            root = ids[0]
            break
    else:
        root = ""
    return hashlib.sha256(root.encode("utf-8", "surrogatepass")).hexdigest()[:16]
