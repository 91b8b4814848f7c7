"""Files a client attaches to outbound mail (L1: reads the caller's files).

C{aimx send --attach} and the MCP tools C{email_send}/C{email_reply} read them in
their own process, with the caller's uid (docs/security.md, "Sending identity").
"""

import os
import stat

from aimx.core.compose import Attachment, ComposeError, guess_type


def read_attachment(path: str) -> Attachment:
    """Read the file at C{path} as an L{Attachment}.

    @raise ComposeError: C{path} is missing, not a regular file, or unreadable.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ComposeError(f"Attachment file not found: {path}") from None
    except OSError as e:
        raise ComposeError(f"Cannot read attachment {path}: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        raise ComposeError(f"Attachment path is not a file: {path}")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ComposeError(f"Cannot read attachment {path}: {e.strerror}") from None
    filename = os.path.basename(path)
    return Attachment(filename, guess_type(filename), data)
