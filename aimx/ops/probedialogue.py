"""Both SMTP dialogues of the port-25 check, without I/O (L0, pure; docs/cli.md,
"aimx portcheck"): the temporary responder's replies and the prober's banner[/EHLO]/QUIT exchange.
"""

MAX_SMTP_LINE = 1024
RESPONDER_READ_TIMEOUT = 30
RESPONDER_BANNER = "220 localhost ESMTP aimx"


def responder_reply(line: str, hostname: str = "localhost",
                    unknown: str = "502 Not implemented") -> tuple[str, bool]:
    """The temporary responder's reply to one command line.

    @return: C{(reply, close_after)}.
    """
    verb = line.strip().upper()
    if verb.startswith(("EHLO", "HELO")):
        return f"250 {hostname}", False
    if verb.startswith("QUIT"):
        return "221 Bye", True
    return unknown, False


class ProbeDialogue:
    """The prober's side of banner -> EHLO -> QUIT (or banner -> QUIT), without I/O.

    Feed each received line (without its line end) to L{received}; send what it
    returns.  When L{finished}, close the connection; L{ok} tells the verdict and
    L{reason} why it failed.  The success point is a C{250} to EHLO, or with no
    EHLO name the C{220} banner itself: QUIT's reply is read best-effort and never
    changes the verdict.

    @ivar answered: the peer sent at least one line (it speaks, if not our way).
    """

    def __init__(self, ehlo_name: str | None):
        """
        @param ehlo_name: the EHLO argument; C{None} to send nothing but QUIT after
            the banner (the outbound check to a third party's MX).
        """
        self.ehlo_name = ehlo_name
        self.state = "banner"
        self.ok = False
        self.answered = False
        self.reason = "connection closed before the banner"

    @property
    def finished(self) -> bool:
        return self.state in ("failed", "done")

    def _fail(self, reason: str) -> None:
        self.state = "failed"
        self.reason = reason

    def received(self, line: str) -> str | None:
        """Advance on one reply line; return the command to send, if any."""
        self.answered = True
        if self.state == "banner":
            if line.startswith("220-"):
                return None
            if line.startswith("220"):
                if self.ehlo_name is None:
                    self.state = "quit"
                    self.ok = True
                    self.reason = None
                    return "QUIT"
                self.state = "ehlo"
                self.reason = "connection closed after EHLO"
                return f"EHLO {self.ehlo_name}"
            self._fail(f"answered {line[:100]!r} instead of a 220 banner")
        elif self.state == "ehlo":
            if line.startswith("250-"):
                return None
            if line.startswith("250 ") or line == "250":
                self.state = "quit"
                self.ok = True
                self.reason = None
                return "QUIT"
            self._fail(f"unexpected EHLO reply: {line[:100]!r}")
        elif self.state == "quit":
            self.state = "done"
        return None

    def timed_out(self, seconds: float) -> str:
        """Why the wait for the next line failed, for L{lost}."""
        waiting = "banner" if self.state == "banner" else "reply"
        return f"no {waiting} within {seconds:g} s"

    def lost(self, reason: str | None = None) -> None:
        """The connection ended (or timed out) before L{finished}."""
        if not self.finished:
            if not self.ok:
                self._fail(reason or self.reason)
            else:
                self.state = "done"
