"""The aimx error hierarchy (L0) and the SMTP status value used at the SMTP edge.

Every error carries a short wire code (the codes of spec/control-socket.md) so the
control socket, the CLI and the MCP server can map them in one place.
"""

import attrs


class AimxError(Exception):
    """Base of every error aimx raises on purpose."""

    code = "ERROR"


class ConfigError(AimxError):
    """The configuration is missing or invalid; the message names the key and the file."""

    code = "CONFIG"


class IngestError(AimxError):
    """A message could not be stored (routing, parsing or disk failure)."""

    code = "IO"


class NoMailboxError(IngestError):
    """No mailbox routes the recipient."""

    code = "MAILBOX"


@attrs.frozen
class SmtpStatus(Exception):
    """An SMTP reply decided by aimx: code, enhanced status code and text.

    @ivar code: three-digit reply code.
    @ivar enhanced: RFC 3463 enhanced code such as C{"5.1.1"}, or C{""} for none.
    @ivar text: reply text sent to the peer (generic; details go to the log).
    """

    code: int
    enhanced: str
    text: str

    @property
    def temporary(self) -> bool:
        """True for 4xx replies."""
        return 400 <= self.code < 500

    def line(self) -> bytes:
        """The reply as it goes on the wire, without the line ending."""
        parts = [str(self.code)]
        if self.enhanced:
            parts.append(self.enhanced)
        parts.append(self.text)
        return " ".join(parts).encode("utf-8")
