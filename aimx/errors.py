"""The aimx error hierarchy (L0) and the SMTP status value used at the SMTP edge.

Every error carries a short wire code (docs/troubleshooting.md, "Error codes") so the
control socket, the CLI and the MCP server can map them in one place.  Every aimx
process imports this module, the CLI's quickest verbs too, so it imports nothing
(not even attrs: about 20 ms of a 50 ms C{aimx mailboxes list}, bench/cli_start.py).
"""


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


# The control-socket error codes, one class per code.


class MailboxError(AimxError):
    """Mailbox-level refusal: duplicate, not found (or not owned), catchall."""

    code = "MAILBOX"


class DomainError(AimxError):
    """The From domain is not the configured domain."""

    code = "DOMAIN"


class SignError(AimxError):
    """DKIM signing failed."""

    code = "SIGN"


class DeliveryError(AimxError):
    """Permanent (5xx) delivery failure."""

    code = "DELIVERY"


class TempError(AimxError):
    """Transient failure; nothing was persisted."""

    code = "TEMP"


class MalformedError(AimxError):
    """Bad request or undecodable argument."""

    code = "MALFORMED"


class ProtocolError(AimxError):
    """A request body aimx does not accept (legacy or unknown keys)."""

    code = "PROTOCOL"


class NotFoundError(AimxError):
    """An email id that is invalid or absent."""

    code = "NOTFOUND"


class IOFailure(AimxError):
    """A filesystem or serialisation failure."""

    code = "IO"


class ValidationError(AimxError):
    """An input rule was violated (name, owner, hook fields)."""

    code = "VALIDATION"


class NonEmptyError(AimxError):
    """Delete refused: the mailbox still has files."""

    code = "NONEMPTY"


class ConflictError(AimxError):
    """A pre-existing directory is in the way (wrong owner, not a directory)."""

    code = "ECONFLICT"


class AccessDenied(AimxError):
    """The caller is not authorised; the wire reason is always opaque."""

    code = "EACCES"


class NoEntry(AimxError):
    """The referenced mailbox or hook does not exist (or is hidden as such)."""

    code = "ENOENT"


class BodyTooLarge(AimxError):
    """The Markdown body of a SEND is larger than 5 MiB."""

    code = "BODY_TOO_LARGE"


class PolicyError(AimxError):
    """The mailbox's outbound policy refuses the send; the reason names the rule."""

    code = "POLICY"


class DaemonNotRunning(AimxError):
    """No daemon answers on the control socket (missing, or connection refused)."""

    code = "DOWN"


class ConnectFailed(AimxError):
    """The control socket exists but the connection failed for another reason."""


class SmtpStatus(Exception):
    """An SMTP reply decided by aimx: code, enhanced status code and text.

    Read-only; like every exception it equals only itself.

    @ivar code: three-digit reply code.
    @ivar enhanced: RFC 3463 enhanced code such as C{"5.1.1"}, or C{""} for none.
    @ivar text: reply text sent to the peer (generic; details go to the log).
    """

    def __init__(self, code: int, enhanced: str, text: str):
        super().__init__(code, enhanced, text)

    @property
    def code(self) -> int:
        return self.args[0]

    @property
    def enhanced(self) -> str:
        return self.args[1]

    @property
    def text(self) -> str:
        return self.args[2]

    def __repr__(self) -> str:
        return f"SmtpStatus(code={self.code!r}, enhanced={self.enhanced!r}, text={self.text!r})"

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
