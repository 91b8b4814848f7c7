"""Which aimx an agent is told to start, with which directories (L1: reads a script's first line).

C{aimx agents setup} registers the aimx that is running it, wherever it is
installed (a venv, pipx, C{pip install} into a system prefix, a checkout run
with C{python -m aimx}), never a fixed path.  L{program} finds it:

1. C{sys.argv[0]}, when it is a console script called C{aimx} whose interpreter
   is this one (same directory and same file as C{sys.executable}).  That is
   the script actually running; its absolute path is kept as given, so a pipx
   symlink in C{~/.local/bin} stays the stable link, not its target.
2. Else the C{aimx} that C{PATH} finds, under the same test: C{python -m aimx}
   from a venv whose C{bin/} is on C{PATH}.
3. Else C{<sys.executable> -m aimx}: this interpreter and the package it imports.

Checking the interpreter is what makes 1 and 2 safe: an C{aimx} of another
environment (a system install while a venv runs, another venv's script started
by this interpreter) would be another version of aimx, possibly none at all.
The check of L{aimx.agents.probe} then starts the chosen command from C{/} with
only the registered environment, as the agent will.

L{directories} is the environment the server needs: the aimx directories this
process runs with that are not the defaults.
"""

import os
import shlex
import shutil
from collections.abc import Mapping

from aimx.agents.registry import McpCommand

#: The directory variables and their defaults (docs/design.md, "House rules": flag > env > default).
DIRECTORIES = (
    ("AIMX_CONFIG_DIR", "/etc/aimx"),
    ("AIMX_DATA_DIR", "/var/lib/aimx"),
    ("AIMX_RUNTIME_DIR", "/run/aimx"),
)

# A console script's first line is short; pip's long-path form needs two lines.
_HEAD = 1024


def program(argv0: str, executable: str, path: str | None) -> tuple[str, ...]:
    """The words that start the aimx running now (see the module docstring).

    @param argv0: C{sys.argv[0]}.
    @param executable: C{sys.executable}.
    @param path: the C{PATH} to look C{aimx} up on.
    """
    candidates = []
    if argv0 and os.path.basename(argv0) == "aimx":
        candidates.append(os.path.abspath(argv0))
    found = shutil.which("aimx", path=path) if path else None
    if found:
        candidates.append(os.path.abspath(found))
    for candidate in candidates:
        if runs_with(candidate, executable):
            return (candidate,)
    return (executable, "-m", "aimx")


def given(command: str, path: str | None) -> tuple[str, ...]:
    """The program of C{--command PATH}: a path made absolute, a bare name looked up on
    C{PATH}.  Whether it works is for the check to say, not this."""
    if "/" in command:
        return (os.path.abspath(command),)
    found = shutil.which(command, path=path) if path else None
    return (os.path.abspath(found) if found else command,)


def runs_with(script: str, executable: str) -> bool:
    """Whether C{script} is an executable file whose C{#!} interpreter is C{executable}.

    Same directory (so another venv's symlink to the same base interpreter does
    not count) and same file (so C{python3.9} beside C{python3.11} does not).
    C{#!/usr/bin/env python3} names no interpreter of its own: not counted.
    """
    if not (os.path.isfile(script) and os.access(script, os.X_OK)):
        return False
    interpreter = shebang(script)
    if interpreter is None or os.path.basename(interpreter) == "env":
        return False
    try:
        same_dir = os.path.samefile(os.path.dirname(interpreter), os.path.dirname(executable))
        return same_dir and os.path.samefile(interpreter, executable)
    except OSError:
        return False


def shebang(script: str) -> str | None:
    """The interpreter a console script names, or C{None}.

    pip writes C{#!/path/python}, or, when that path is too long or has spaces,
    C{#!/bin/sh} and a second line C{'''exec' "/path/python" "$0" "$@"}.
    """
    try:
        with open(script, "rb") as f:
            head = f.read(_HEAD)
    except OSError:
        return None
    lines = head.decode("utf-8", "replace").split("\n")
    if not lines[0].startswith("#!"):
        return None
    words = lines[0][2:].split()
    if not words:
        return None
    if words == ["/bin/sh"] and len(lines) > 1 and lines[1].startswith("'''exec' "):
        try:
            words = shlex.split(lines[1])[1:2]
        except ValueError:
            return None
    return words[0] if words else None


def directories(config_dir: str | None, data_dir: str | None,
                environ: Mapping[str, str]) -> dict[str, str]:
    """The aimx directories this process runs with that are not the defaults, as absolute
    paths (the agent starts the server from its own working directory).

    @param config_dir: C{--config-dir} or C{AIMX_CONFIG_DIR} (C{None}: default).
    @param data_dir: C{--data-dir} or C{AIMX_DATA_DIR} (C{None}: default).
    @param environ: where C{AIMX_RUNTIME_DIR} is read (the CLI has no flag for it).
    """
    values = {
        "AIMX_CONFIG_DIR": config_dir,
        "AIMX_DATA_DIR": data_dir,
        "AIMX_RUNTIME_DIR": environ.get("AIMX_RUNTIME_DIR"),
    }
    env = {}
    for name, default in DIRECTORIES:
        value = values[name]
        if value and os.path.abspath(value) != default:
            env[name] = os.path.abspath(value)
    return env


def mcp_command(prog: tuple[str, ...], config_dir: str | None, data_dir: str | None,
                environ: Mapping[str, str]) -> McpCommand:
    """The full command: C{prog}, C{--data-dir} and the directory environment."""
    return McpCommand(
        prog,
        data_dir=os.path.abspath(data_dir) if data_dir else None,
        env=directories(config_dir, data_dir, environ),
    )
