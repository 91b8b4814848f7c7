"""``aimx agents setup|list|remove`` (L3): wire aimx into AI agent harnesses.

docs/cli.md, "aimx agents".  Per-user and offline: everything is written under the
caller's home (or C{$XDG_CONFIG_HOME}, C{$NANOCLAW_HOME}); nothing touches
C{/etc} or C{/var}, nothing talks to the daemon.  Claude Code and Codex are
registered through their own CLIs; NanoClaw's C{.mcp.json} is merged; every
other agent gets a printed snippet.

The MCP server registered is the aimx running this command (L{mcpcommand}), or
C{--command PATH}, with the aimx directories it runs with as the server's
environment.  Before anything is installed, registered or previewed, that exact
command is started and must answer C{initialize} and C{tools/list}
(L{aimx.agents.probe}); when it does not, nothing is written and the reason is
printed.

The outside world (environment, euid, streams, the CLI runner, root's home,
the key source of the picker, C{sys.argv[0]} and C{sys.executable}, the MCP
check) comes in a L{World}, so tests run every path with a temporary HOME and
fakes.
"""

import functools
import os
import shlex
import sys
from collections.abc import Callable, Mapping

import attrs

from aimx.agents import bundle, install, mcpcommand, probe, registry
from aimx.cli import agentpicker as picker
from aimx.agents.registry import AGENTS, Agent, AgentError, McpCommand
from aimx.cli.term import Terminal
from aimx.store import passwd
from aimx.host import programs

ROOT_REFUSAL = """\
`aimx agents` is per-user and refuses to run as root by default: it writes into
the home directory of whoever runs it.

Re-run it as the regular user who uses the agent:
  sudo -u <user> aimx agents setup

Or, on a single-user root-login VPS with no other account, pass
--dangerously-allow-root to wire aimx into root's own home:
  aimx agents setup --dangerously-allow-root"""

_YES = ("y", "Y", "yes", "YES")
#: Seconds an agent CLI (C{claude mcp add}, ...) may run.
CLI_TIMEOUT = 120.0


def _root_home() -> str:
    return passwd.home("root") or "/root"


@attrs.define
class World:
    """What one invocation sees of the machine.

    @ivar runner: runs an agent CLI (L{aimx.host.programs}: C{argv ->
        Completed}); default: L{programs.run_program} with C{environ} as the
        program's whole environment (its C{PATH} finds it), stdin closed, and
        a L{CLI_TIMEOUT}.
    @ivar root_home: C{() -> str}, root's C{pw_dir} (C{--dangerously-allow-root}).
    @ivar username: C{uid -> str | None} for the picker's title.
    @ivar open_keys: C{stdin -> context manager yielding a key source}.
    @ivar argv0: C{sys.argv[0]}, the program running (L{mcpcommand.program}).
    @ivar executable: C{sys.executable}.
    @ivar check: C{(argv, env) -> probe.CheckResult}, the MCP check.
    """

    environ: Mapping[str, str]
    euid: int
    out: object
    err: object
    stdin: object
    runner: Callable | None = None
    root_home: Callable[[], str] = _root_home
    username: Callable[[int], str | None] = passwd.username
    open_keys: Callable = picker.open_keys
    argv0: str = attrs.field(factory=lambda: sys.argv[0])
    executable: str = attrs.field(factory=lambda: sys.executable)
    check: Callable = probe.check

    def __attrs_post_init__(self):
        if self.runner is None:
            self.runner = functools.partial(
                programs.run_program, environ=self.environ, timeout=CLI_TIMEOUT
            )


def default_world() -> World:
    return World(dict(os.environ), os.geteuid(), sys.stdout, sys.stderr, sys.stdin)


def main(args, world: World | None = None) -> int:
    """Run one C{aimx agents} action; C{Error: <message>} and exit 1 on failure."""
    world = world or default_world()
    term = Terminal(world.out, world.err, world.stdin, world.environ)
    try:
        if args.action == "list":
            return list_agents(world, term)
        if args.action == "remove":
            return remove(args, world, term)
        return setup(args, world, term)
    except AgentError as e:
        term.error(str(e))
        return 1


# -- list -----------------------------------------------------------------------------


def list_agents(world: World, term: Terminal) -> int:
    """Print every agent with its destination, install command and activation."""
    term.say(term.bold("Supported agents:"))
    term.say()
    try:
        where = registry.places(world.environ)
    except AgentError:
        where = None
    command = McpCommand(_program(None, world))
    for agent in AGENTS:
        dest = registry.expand(agent.dest, where) if where else agent.dest
        hint = registry.activation_hint(agent, command).split("\n")
        term.say(f"  {term.bold(agent.name)}")
        term.say(f"    destination: {dest}")
        term.say(f"    install:     aimx agents setup {agent.name}")
        term.say(f"    activation:  {hint[0]}")
        for line in hint[1:]:
            term.say(f"{' ' * 17}{line}".rstrip())
        term.say()
    return 0


# -- setup ----------------------------------------------------------------------------


def _home_override(flag: bool, world: World) -> str | None:
    """Refuse root without the flag; with it, root's own home."""
    if world.euid != 0:
        return None
    if not flag:
        raise AgentError(ROOT_REFUSAL)
    return world.root_home() or "/root"


def _find(name: str) -> Agent:
    agent = registry.find(name)
    if agent is None:
        raise AgentError(f"unknown agent '{name}'; run `aimx agents list` to see supported agents")
    return agent


def setup(args, world: World, term: Terminal) -> int:
    """C{aimx agents setup [agent]}: probe, then write, then register."""
    if args.list:
        return list_agents(world, term)
    home = _home_override(args.dangerously_allow_root, world)
    if args.agent is None:
        if args.no_interactive or args.print or not _isatty(world.err):
            list_agents(world, term)
            if args.print:
                term.say(
                    "Name an agent to preview its files, e.g. "
                    "`aimx agents setup --print claude-code`."
                )
            else:
                term.say(
                    "Run `aimx agents setup <agent>` to install one "
                    "(`aimx agents list` shows this list again)."
                )
            return 0
        return choose(args, world, term, registry.places(world.environ, home))
    agent = _find(args.agent)
    command = _command(args, world)
    if args.print:
        return preview(agent, command, world, term)
    where = registry.places(world.environ, home)
    check_command(command, world, term)
    install_agent(agent, command, args, world, term, where)
    return 0


# -- the MCP command and its check -----------------------------------------------------


def _program(given: str | None, world: World) -> tuple[str, ...]:
    path = world.environ.get("PATH", os.defpath)
    if given:
        return mcpcommand.given(given, path)
    return mcpcommand.program(world.argv0, world.executable, path)


def _command(args, world: World) -> McpCommand:
    """The command to register: the running aimx (or C{--command}), C{--data-dir}, and the
    non-default aimx directories as its environment."""
    return mcpcommand.mcp_command(
        _program(getattr(args, "command", None), world),
        getattr(args, "config_dir", None),
        args.data_dir,
        world.environ,
    )


def _server_env(command: McpCommand, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment the agent gives the server: its own, whatever aimx directories it has
    replaced by the registered ones (so the check proves the registration carries them)."""
    names = {name for name, _ in mcpcommand.DIRECTORIES}
    env = {k: v for k, v in environ.items() if k not in names}
    env.update(command.environment)
    return env


def _run_check(command: McpCommand, world: World) -> probe.CheckResult:
    return world.check(command.argv, _server_env(command, world.environ))


def _passed(command: McpCommand, result: probe.CheckResult) -> str:
    return (
        f"MCP check passed: `{command.display()}` answers initialize and tools/list "
        f"({result.tools} tools)."
    )


def _failure(command: McpCommand, result: probe.CheckResult) -> str:
    lines = [f"MCP check failed: `{command.display()}`: {result.reason}"]
    lines += [f"  | {line}" for line in result.stderr]
    lines.append(
        "Nothing was installed or registered. Pass --command PATH to register another aimx "
        "program."
    )
    return "\n".join(lines)


def check_command(command: McpCommand, world: World, term: Terminal) -> None:
    """Start C{command} as the agent would and print that it answers.

    @raise AgentError: it does not; the message says how it failed.
    """
    result = _run_check(command, world)
    if not result.ok:
        raise AgentError(_failure(command, result))
    term.say(f"{term.mark('ok')} {_passed(command, result)}")


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def preview(agent: Agent, command: McpCommand, world: World, term: Terminal) -> int:
    """C{--print}: every file, the activation step and the MCP server command; nothing
    written, no agent CLI run, but the command is checked (exit 1 when it fails)."""
    for item in bundle.assemble(agent, command):
        term.say(f"=== {item.path} ===")
        term.out.write(item.text if item.text.endswith("\n") else item.text + "\n")
    term.say("=== activation ===")
    term.say(registry.activation_hint(agent, command))
    term.say("=== MCP server ===")
    term.say(f"command:  {command.shell()}")
    env = " ".join(shlex.quote(f"{k}={v}") for k, v in command.env)
    term.say(f"env:      {env or '(none: the default aimx directories)'}")
    for argv in registry.registration(agent, command) or ():
        term.say(f"register: {shlex.join(argv)}")
    result = _run_check(command, world)
    if not result.ok:
        term.say(f"check:    {term.mark('fail')} {result.reason}")
        raise AgentError(_failure(command, result))
    term.say(f"check:    {term.mark('ok')} {_passed(command, result)}")
    return 0


def install_agent(agent: Agent, command: McpCommand, args, world: World, term: Terminal,
                  where) -> str:
    """Install one agent and return its destination.

    @param command: the MCP server command, already checked.
    @raise AgentError: a step failed (the picker reports it and moves on).
    """
    style = picker.Style(term)
    files = bundle.assemble(agent, command)
    dest = registry.expand(agent.dest, where)
    if agent.name == "claude-code":
        _remove_legacy_plugin(where, term, style)
    if agent.name == "nanoclaw" and not os.path.isdir(where.nanoclaw_home):
        raise AgentError(
            f"NanoClaw fork directory {where.nanoclaw_home} not found; clone it with "
            "`git clone https://github.com/qwibitai/nanoclaw.git ~/nanoclaw` "
            "or set $NANOCLAW_HOME to your fork"
        )
    if not args.force:
        _confirm_overwrite(dest, files, world, term)
    install.write_files(dest, files)
    term.say(f"Installed {term.style(dest, picker.GREEN, picker.BOLD)}")
    if agent.name == "nanoclaw":
        _merge_nanoclaw(where.nanoclaw_home, command, args.force, term, style)
    hint = registry.activation_hint(agent, command)
    if agent.cli is not None:
        outcome, reason = install.register_mcp(agent, command, world.runner)
        if outcome is install.Registration.REGISTERED:
            term.say(f"{style.mark('ok')} MCP server registered with {agent.display}.")
            return dest
        if outcome is install.Registration.FAILED:
            term.say(f"{style.mark('warn')} MCP auto-registration failed: {reason}")
    term.say()
    term.say(hint)
    return dest


def _remove_legacy_plugin(where, term: Terminal, style) -> None:
    path = registry.legacy_plugin_dir(where)
    try:
        if install.remove_path(path):
            term.say(f"Removed legacy plugin install at {term.bold(path)}")
    except AgentError as e:
        term.say(f"{style.mark('warn')} could not remove the legacy plugin install: {e}")


def _confirm_overwrite(dest: str, files, world: World, term: Terminal) -> None:
    present = install.existing_files(dest, files)
    if not present:
        return
    if not _isatty(world.stdin):
        raise AgentError(f"destination files already exist under {dest}; pass --force to overwrite")
    term.hint(f"Warning: Destination {dest} already contains {len(present)} file(s):")
    for path in present:
        term.say(f"  {path}")
    answer = term.ask("Overwrite? [y/N] ")
    if answer is None or answer.strip() not in _YES:
        raise AgentError("aborted by user")


def _merge_nanoclaw(fork: str, command: McpCommand, force: bool, term: Terminal, style) -> None:
    outcome, path = install.merge_mcp_json(fork, command, force)
    Outcome = install.MergeOutcome
    if outcome is Outcome.CREATED:
        term.say(f"{style.mark('ok')} created {path} with mcpServers.aimx")
    elif outcome is Outcome.MERGED:
        term.say(f"{style.mark('ok')} merged mcpServers.aimx into {path}")
    elif outcome is Outcome.EXISTS:
        term.say(
            f"{style.mark('warn')} mcpServers.aimx already exists in {path}; "
            "pass --force to overwrite"
        )
    else:
        term.say(
            f"{style.mark('warn')} fork directory {fork} not found; skipping .mcp.json "
            "merge (set $NANOCLAW_HOME to your fork)"
        )


# -- the picker -------------------------------------------------------------------------


def choose(args, world: World, term: Terminal, where) -> int:
    """Detect the agents, let the user pick, confirm, install each, summarise."""
    states = [(agent, install.install_state(agent, where)) for agent in AGENTS]
    rows = picker.initial_rows(states)
    if not any(row.selectable for row in rows):
        term.say(term.bold("No AI agents detected on this user's filesystem."))
        term.say()
        term.say("aimx looks for these agents under $HOME (and $XDG_CONFIG_HOME, $NANOCLAW_HOME):")
        for agent in AGENTS:
            term.say(f"  - {agent.display}")
        term.say()
        term.say("Install one of them and run `aimx agents setup` again.")
        return 0
    screen = picker.Style(Terminal(world.err, world.err, world.stdin, world.environ))
    style = picker.Style(term)
    user = world.username(world.euid)
    while True:
        with world.open_keys(world.stdin) as keys:
            picked = picker.pick(rows, keys, world.err, screen, user)
        if picked is None:
            term.say()
            term.say("Cancelled. No agents were wired.")
            return 0
        if not picked:
            term.say()
            term.say("No agents selected. Nothing to do.")
            return 0
        for line in picker.task_lines(picked, style):
            term.say(line)
        answer = term.ask("Confirm? [Y/n] ")
        if answer is None:
            term.say()
            term.say("Cancelled. No agents were wired.")
            return 0
        if answer.strip()[:1] not in ("n", "N"):
            break
    command = _command(args, world)
    check_command(command, world, term)
    results = []
    for row in picked:
        agent = row.agent
        term.say()
        term.say(f"{term.bold('==>')} {term.bold(agent.display)}")
        try:
            dest = install_agent(agent, command, args, world, term, where)
        except AgentError as e:
            term.say(f"  {style.mark('fail')} {e}")
            results.append((agent.display, False, str(e)))
        else:
            results.append((agent.display, True, dest))
    for line in picker.summary_lines(results, style):
        term.say(line)
    return 0


# -- remove -----------------------------------------------------------------------------


def remove(args, world: World, term: Terminal) -> int:
    """Delete an agent's aimx files and say what is left to undo by hand."""
    home = _home_override(args.dangerously_allow_root, world)
    agent = registry.find(args.agent)
    if agent is None:
        raise AgentError(
            f"Unknown agent '{args.agent}'. Run `aimx agents list` to see supported agents."
        )
    where = registry.places(world.environ, home)
    style = picker.Style(term)
    target = registry.removal_target(agent, where)
    if agent.name == "claude-code":
        _remove_legacy_plugin(where, term, style)
    if install.remove_path(target):
        term.say(f"Removed {term.bold(target)}")
    else:
        term.say(f"Plugin: {target} (already absent)")
        term.say(
            f"{style.mark('warn')} no plugin files were present at {term.bold(target)} "
            "(already removed?)"
        )
    term.say()
    term.say(registry.removal_hint(agent))
    return 0
