"""Start an MCP server command and check that it answers like aimx's (L1, blocking).

C{aimx agents setup} runs this before it installs or registers anything: the
exact command and environment it is about to register, started the way an agent
starts it (stdio, from C{/}, the registered environment in place of this
process's aimx directories), must answer C{initialize} and list aimx's fifteen
tools.  A minimal JSON-RPC exchange, not the mcp SDK's client: no event loop, no
SDK import in the CLI, and each way of failing gets its own plain reason.

Everything is bounded: one deadline for the whole exchange (the process is
killed past it), at most L{_LINE} bytes of one stdout line, the last
L{_TAIL} bytes of stderr, a few pages of C{tools/list}.
"""

import json
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping

import attrs

#: The tools `aimx mcp` registers (docs/mcp.md; tests tie this to the server).
AIMX_TOOLS = frozenset({
    "mailbox_list", "mailbox_create", "mailbox_delete", "email_list", "email_read",
    "email_send", "email_reply", "email_mark_read", "email_mark_unread", "hook_create",
    "hook_list", "hook_delete", "email_search", "email_thread", "held_list",
})
#: Seconds for the whole exchange; `aimx mcp` answers in about one.
TIMEOUT = 20.0
PROTOCOL_VERSION = "2024-11-05"
STDERR_LINES = 8

_LINE = 4 * 1024 * 1024
_TAIL = 4096
_PAGES = 10


@attrs.frozen
class CheckResult:
    """What the check found.

    @ivar ok: the server answered C{initialize} and listed every aimx tool.
    @ivar reason: why not, one line starting with what the command did
        (C{command not found}, C{exited with code 3 before answering initialize}, ...).
    @ivar stderr: the last lines the server wrote to stderr (on failure).
    @ivar tools: how many tools it listed.
    """

    ok: bool
    reason: str = ""
    stderr: tuple[str, ...] = ()
    tools: int = 0


class _Failed(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def check(argv: list[str], env: Mapping[str, str], timeout: float = TIMEOUT,
          cwd: str = "/") -> CheckResult:
    """Run C{argv} with C{env} and speak MCP to it: C{initialize}, then C{tools/list}.

    @param env: the complete environment of the server.
    @param timeout: seconds for the whole exchange.
    """
    try:
        child = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(env), cwd=cwd, start_new_session=True,
        )
    except FileNotFoundError as e:
        if os.path.exists(argv[0]):  # the file is there: its #! interpreter is not
            return CheckResult(False, f"cannot be started: {e.strerror} (its #! interpreter?)")
        return CheckResult(False, f"command not found: {argv[0]}")
    except OSError as e:
        return CheckResult(False, f"cannot be started: {e.strerror or e}")
    session = _Session(child, time.monotonic() + timeout, timeout)
    try:
        count = session.exchange()
    except _Failed as e:
        return CheckResult(False, e.reason, session.stderr_tail())
    finally:
        session.close()
    return CheckResult(True, tools=count)


class _Session:
    """One child and the two pipes read through a selector, against one deadline."""

    def __init__(self, child: subprocess.Popen, deadline: float, timeout: float):
        self.child = child
        self.deadline = deadline
        self.timeout = timeout
        self.out = b""
        self.err = b""
        self.eof = False
        self.selector = selectors.DefaultSelector()
        for stream in (child.stdout, child.stderr):
            os.set_blocking(stream.fileno(), False)
            self.selector.register(stream, selectors.EVENT_READ)

    def exchange(self) -> int:
        self.send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": PROTOCOL_VERSION, "capabilities": {},
            "clientInfo": {"name": "aimx agents setup", "version": "1"},
        }})
        self.answer(1, "initialize")
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        names, cursor = [], None
        for page in range(_PAGES):
            params = {"cursor": cursor} if cursor else {}
            self.send({"jsonrpc": "2.0", "id": 2 + page, "method": "tools/list", "params": params})
            result = self.answer(2 + page, "tools/list")
            tools = result.get("tools")
            if not isinstance(tools, list):
                raise _Failed("answered tools/list without a list of tools")
            names += [t.get("name") for t in tools if isinstance(t, dict)]
            cursor = result.get("nextCursor")
            if not cursor:
                break
        missing = sorted(AIMX_TOOLS - set(names))
        if missing:
            raise _Failed(
                f"answered, but its tools/list lacks {len(missing)} of aimx's "
                f"{len(AIMX_TOOLS)} tools: {', '.join(missing)}"
            )
        return len(names)

    def send(self, message: dict) -> None:
        try:
            self.child.stdin.write(json.dumps(message).encode() + b"\n")
            self.child.stdin.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # it has gone: the read that follows says how

    def answer(self, request_id: int, step: str) -> dict:
        """The result of request C{request_id}; notifications and requests are skipped."""
        while True:
            line = self.line(step)
            try:
                message = json.loads(line)
            except ValueError:
                reason = f"wrote a line that is not JSON-RPC on stdout: {_excerpt(line)}"
                raise _Failed(reason) from None
            if not isinstance(message, dict) or message.get("id") != request_id:
                continue
            if "error" in message:
                error = message["error"]
                text = error.get("message") if isinstance(error, dict) else error
                raise _Failed(f"answered {step} with an error: {_excerpt(str(text))}")
            result = message.get("result")
            if not isinstance(result, dict):
                raise _Failed(f"answered {step} without a result object")
            return result

    def line(self, step: str) -> bytes:
        """The next stdout line, reading both pipes until it is there."""
        while b"\n" not in self.out:
            if len(self.out) > _LINE:
                raise _Failed(f"wrote a stdout line over {_LINE} bytes")
            if self.eof:
                raise _Failed(self.ended(step))
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise _Failed(f"gave no answer to {step} within {self.timeout:g} s")
            for key, _ in self.selector.select(remaining):
                self.read(key.fileobj)
        line, self.out = self.out.split(b"\n", 1)
        return line

    def read(self, stream) -> None:
        try:
            data = os.read(stream.fileno(), 65536)
        except BlockingIOError:
            return
        if not data:
            self.selector.unregister(stream)
            if stream is self.child.stdout:
                self.eof = True
            return
        if stream is self.child.stdout:
            self.out += data
        else:
            self.err = (self.err + data)[-_TAIL:]

    def ended(self, step: str) -> str:
        """Why stdout closed: the exit status, once stderr is drained (within the deadline)."""
        while self.selector.get_map() and time.monotonic() < self.deadline:
            for key, _ in self.selector.select(self.deadline - time.monotonic()):
                self.read(key.fileobj)
        try:
            code = self.child.wait(max(0.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return f"closed its stdout before answering {step}"
        if code < 0:
            return f"was killed by signal {-code} before answering {step}"
        return f"exited with code {code} before answering {step}"

    def stderr_tail(self) -> tuple[str, ...]:
        lines = self.err.decode("utf-8", "replace").splitlines()
        return tuple(line.rstrip() for line in lines if line.strip())[-STDERR_LINES:]

    def close(self) -> None:
        """Close stdin (an MCP server exits at end of input), then make sure it is gone."""
        try:
            self.child.stdin.close()
        except OSError:
            pass
        try:
            self.child.wait(max(0.0, min(2.0, self.deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.child.pid, signal.SIGKILL)
            except OSError:
                pass
            self.child.wait()
        self.selector.close()
        self.child.stdout.close()
        self.child.stderr.close()


def _excerpt(text, limit: int = 120) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.strip()
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")
