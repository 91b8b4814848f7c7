"""Files a client attaches to outbound mail (L1: opens the caller's files).

C{aimx send --attachment} and the MCP tools C{email_send}/C{email_reply} open each
file with the caller's own uid and pass the descriptor over the control socket
(docs/guardrails.md); the daemon never opens a path a client names
(L{aimx.store.descriptors} is its side).  Nothing here imports the MIME parser:
the MCP process stays lean.
"""

import os

from aimx.core.compose import ComposeError

# O_NONBLOCK: a FIFO must not hang the client (the daemon refuses it); O_NOCTTY: a
# tty named as an attachment must not become the client's terminal.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def open_attachment(path: str) -> int:
    """Open C{path} for reading as the caller (links followed: the daemon sees the target).

    @return: the descriptor; the caller closes it once SEND has answered.
    @raise ComposeError: C{path} is missing or cannot be opened.
    """
    try:
        return os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise ComposeError(f"Attachment file not found: {path}") from None
    except OSError as e:
        raise ComposeError(f"Cannot read attachment {path}: {e.strerror}") from None
