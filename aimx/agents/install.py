"""Writing and removing agent bundles, NanoClaw's C{.mcp.json}, CLI registration (L1).

docs/cli.md, "aimx agents": setup, remove, the install state.  Every
function takes the paths it works on; the agent CLIs are run through an injected
runner (L{aimx.host.programs}: C{argv -> Completed}, exit status
L{NOT_RUN} when the CLI is not there), so tests never start a real C{claude}
or C{codex}.
"""

import enum
import json
import os
import shutil
import uuid
from collections.abc import Iterable

from aimx.agents import registry
from aimx.agents.bundle import BundleFile
from aimx.agents.registry import Agent, AgentError, McpCommand, Places
from aimx.store import safefs
from aimx.host.programs import NOT_RUN, Runner

_DIR_MODE = 0o755
_FILE_MODE = 0o644


class InstallState(enum.Enum):
    """How far an agent is wired on this user's filesystem."""

    WIRED = "wired"
    NOT_WIRED = "not-wired"
    NOT_DETECTED = "not-detected"


def install_state(agent: Agent, where: Places) -> InstallState:
    """Detect C{agent}'s state.

    Wired: the destination holds aimx's files (Goose: C{aimx.yaml} is a file;
    others: some top-level regular file contains the bytes C{aimx}, so an empty
    leftover directory does not count).  Otherwise not wired when the agent's
    own directory exists, else not detected.
    """
    dest = registry.expand(agent.dest, where)
    if agent.recipe:
        wired = os.path.isfile(os.path.join(dest, agent.entry_file))
    else:
        wired = _holds_aimx(dest)
    if wired:
        return InstallState.WIRED
    if os.path.isdir(registry.expand(agent.root, where)):
        return InstallState.NOT_WIRED
    return InstallState.NOT_DETECTED


def _holds_aimx(directory: str) -> bool:
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return False
    for entry in entries:
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            with open(entry.path, "rb") as f:
                if b"aimx" in f.read():
                    return True
        except OSError:
            continue
    return False


# -- files ---------------------------------------------------------------------------


def existing_files(dest: str, files: Iterable[BundleFile]) -> list[str]:
    """The relative paths of C{files} that already exist under C{dest}."""
    return [f.path for f in files if os.path.lexists(os.path.join(dest, f.path))]


def write_files(dest: str, files: Iterable[BundleFile]) -> None:
    """Write C{files} under C{dest}: parents created 0755, files 0644.

    Each file is written to a fresh temporary name and renamed into place, so an
    agent reading the skill never sees half a file.  Nothing is followed through
    a symlink: an existing directory keeps its mode, and the temporary file is
    created exclusively (this may run as root in a directory a user can write).

    @raise AgentError: a directory or file cannot be written.
    """
    for item in files:
        path = os.path.join(dest, item.path)
        parent = os.path.dirname(path)
        try:
            if not os.path.isdir(parent):
                os.makedirs(parent, mode=_DIR_MODE)
                os.chmod(parent, _DIR_MODE)  # makedirs' mode is subject to the umask
            _replace(path, item.text)
        except OSError as e:
            raise AgentError(f"cannot write {path}: {e.strerror or e}") from None


def _replace(path: str, text: str) -> None:
    """Write C{text} to a new exclusive temp file beside C{path}, mode 0644, and rename it."""
    tmp = f".{os.path.basename(path)}.{uuid.uuid4().hex}.aimx-tmp"
    safefs.replace_path(path, text.encode("utf-8"), mode=_FILE_MODE, tmp=tmp, durable=False)


def remove_path(path: str) -> bool:
    """Delete a file, or a directory recursively.

    @return: C{False} when nothing was there.
    @raise AgentError: the deletion failed.
    """
    if not os.path.lexists(path):
        return False
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except OSError as e:
        raise AgentError(f"cannot remove {path}: {e.strerror or e}") from None
    return True


# -- NanoClaw .mcp.json ---------------------------------------------------------------


class MergeOutcome(enum.Enum):
    CREATED = "created"
    MERGED = "merged"
    EXISTS = "exists"
    NO_FORK = "no-fork"


def merge_mcp_json(fork: str, command: McpCommand, force: bool) -> tuple[MergeOutcome, str]:
    """Set C{mcpServers.aimx} in C{<fork>/.mcp.json}, keeping every other key and its order.

    The file must be strict JSON (comments are refused).  The new content is
    written to C{.mcp.json.aimx-tmp}, set 0644 and renamed over the original.

    @return: the outcome and the path of C{.mcp.json}.
    @raise AgentError: the file is unreadable, not UTF-8, not JSON, or not shaped
        as an object with an object C{mcpServers}; or it cannot be written.
    """
    path = os.path.join(fork, ".mcp.json")
    if not os.path.isdir(fork):
        return MergeOutcome.NO_FORK, path
    existed = os.path.exists(path)
    document = {}
    if existed:
        document = _read_json_object(path)
    servers = document.setdefault("mcpServers", {})
    if not isinstance(servers, dict):
        raise AgentError(f"{path}: mcpServers is not a JSON object")
    if "aimx" in servers and not force:
        return MergeOutcome.EXISTS, path
    servers["aimx"] = registry.mcp_servers_entry(command)
    try:
        _replace(path, json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    except OSError as e:
        raise AgentError(f"cannot write {path}: {e.strerror or e}") from None
    return (MergeOutcome.MERGED if existed else MergeOutcome.CREATED), path


def _read_json_object(path: str) -> dict:
    try:
        text = safefs.read_text(path)
    except OSError as e:
        raise AgentError(f"{path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise AgentError(f"{path}: not valid UTF-8: {e}") from None
    if not text.strip():
        return {}
    try:
        document = json.loads(text, parse_constant=_no_constant)
    except ValueError as e:
        raise AgentError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(document, dict):
        raise AgentError(f"{path}: top-level value is not a JSON object")
    return document


def _no_constant(name):
    # NaN/Infinity are not JSON (RFC 8259 §6); Python accepts them by default.
    raise ValueError(f"{name} is not a JSON value")


# -- MCP registration through the agent's CLI -----------------------------------------


class Registration(enum.Enum):
    REGISTERED = "registered"
    NOT_FOUND = "not-found"
    FAILED = "failed"


def register_mcp(agent: Agent, command: McpCommand, runner: Runner) -> tuple[Registration, str]:
    """Remove then add the aimx MCP server through C{agent}'s own CLI.

    @return: the outcome and, on failure, the one-line reason
        (C{<first stderr line> (exit <n>)}).
    """
    steps = registry.registration(agent, command)
    if steps is None:
        return Registration.NOT_FOUND, ""
    remove, add = steps
    if runner(remove).returncode == NOT_RUN:
        return Registration.NOT_FOUND, ""
    result = runner(add)
    if result.returncode == NOT_RUN:
        return Registration.NOT_FOUND, ""
    if result.returncode == 0:
        return Registration.REGISTERED, ""
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    reason = lines[0] if lines else "(no error output)"
    if result.returncode > 0:  # not when a signal (or the timeout) ended it
        reason += f" (exit {result.returncode})"
    return Registration.FAILED, reason
