"""How the aimx package was installed, and the command that removes it (L1).

C{aimx uninstall} removes only what aimx itself installed (the service file and
runtime files); the package belongs to the installer that put it there, so the
operator is told that installer's exact command instead: C{apt remove} for a
Debian package (C{dpkg -S} owns the package's files), C{pipx uninstall} for a
pipx virtual environment (it holds C{pipx_metadata.json}), C{uv pip uninstall}
when uv installed it, the environment's pip for any other virtual environment,
and the interpreter's C{-m pip} for a system install (with
C{--break-system-packages} where PEP 668 marks the interpreter as the
distribution's).  The facts come from L{current}; L{removal} decides.
"""

import importlib.metadata
import os
import shlex
import sys
import sysconfig

import attrs

from aimx.store import passwd
from aimx.host.programs import Runner, run_program

#: The distribution name of aimx.
DIST = "aimx"

APT, PIPX, UV, VENV_PIP, SYSTEM_PIP, SOURCE = "apt", "pipx", "uv", "pip", "system pip", "source"


@attrs.frozen
class Facts:
    """What decides how aimx was installed; L{current} reads them.

    @ivar executable: C{sys.executable}.
    @ivar prefix: C{sys.prefix}.
    @ivar base_prefix: C{sys.base_prefix} (differs from C{prefix} in a virtualenv).
    @ivar installed: whether a C{aimx} distribution is installed at all.
    @ivar location: the directory holding the distribution (site-packages), or the
        package's own directory when not installed.
    @ivar package_file: a file of the installed package (C{aimx/__init__.py}),
        what C{dpkg -S} is asked about.
    @ivar installer: the distribution's C{INSTALLER} (C{pip}, C{uv}, ...), or C{None}.
    @ivar owner: the user owning L{location}: C{root} or whoever runs the command.
    @ivar externally_managed: PEP 668's marker is in the interpreter's stdlib.
    @ivar console_script: the C{aimx} program that was run, when it is a
        console script (pipx links it into its bin directory).
    """

    executable: str
    prefix: str
    base_prefix: str
    installed: bool
    location: str
    package_file: str
    installer: str | None = None
    owner: str = "root"
    externally_managed: bool = False
    console_script: str | None = None


@attrs.frozen
class Removal:
    """How to remove the aimx package.

    @ivar installer: L{APT}, L{PIPX}, L{UV}, L{VENV_PIP}, L{SYSTEM_PIP} or L{SOURCE}.
    @ivar command: the exact shell command (C{None} for L{SOURCE}: nothing to run).
    @ivar user: who runs it: C{root} (the command then starts with C{sudo}) or the
        user owning the installation.
    @ivar note: one more sentence for the operator, or C{None}.
    """

    installer: str
    command: str | None
    user: str = "root"
    note: str | None = None


def _q(path: str) -> str:
    return shlex.quote(path)


def _as(user: str, argv: str) -> str:
    return f"sudo {argv}" if user == "root" else argv


def _dpkg_owner(facts: Facts, runner: Runner) -> str | None:
    """The Debian package owning the installed package file, or C{None}."""
    done = runner(["dpkg", "-S", facts.package_file])
    if done.returncode != 0:
        return None
    for line in done.stdout.splitlines():
        packages, sep, path = line.rpartition(": ")
        if sep and path == facts.package_file and not packages.startswith("diversion "):
            return packages.split(", ")[0]
    return None


def removal(facts: Facts, runner: Runner = run_program) -> Removal:
    """The command that uninstalls aimx the way it was installed.

    @param runner: runs C{dpkg -S} (L{aimx.host.programs}); a missing dpkg is
        simply not Debian.
    """
    if not facts.installed:
        return Removal(
            SOURCE, None,
            note=f"aimx runs from {facts.location} and is not an installed package; "
            "nothing to uninstall there (delete the checkout when you no longer need it).",
        )
    user = facts.owner
    if facts.prefix == facts.base_prefix:
        package = _dpkg_owner(facts, runner)
        if package is not None:
            return Removal(APT, f"sudo apt remove {_q(package)}")
    in_venv = facts.prefix != facts.base_prefix
    if in_venv and os.path.isfile(os.path.join(facts.prefix, "pipx_metadata.json")):
        home = os.path.dirname(os.path.dirname(facts.prefix))
        env = f"PIPX_HOME={_q(home)} "
        script = facts.console_script
        if script and os.path.islink(script) and os.path.realpath(script).startswith(
            facts.prefix + os.sep
        ):
            env += f"PIPX_BIN_DIR={_q(os.path.dirname(script))} "
        name = os.path.basename(facts.prefix)
        return Removal(PIPX, _as(user, f"{env}pipx uninstall {_q(name)}"), user)
    python = os.path.join(facts.prefix, "bin", "python") if in_venv else facts.executable
    leftover = (
        f"The virtual environment {facts.prefix} stays; delete it if nothing else uses it."
        if in_venv else None
    )
    if facts.installer == "uv":
        command = f"uv pip uninstall --python {_q(python)} {DIST}"
        if facts.externally_managed and not in_venv:
            command += " --break-system-packages"
        return Removal(UV, _as(user, command), user, leftover)
    if in_venv:
        pip = os.path.join(facts.prefix, "bin", "pip")
        argv = _q(pip) if os.path.isfile(pip) else f"{_q(python)} -m pip"
        return Removal(VENV_PIP, _as(user, f"{argv} uninstall {DIST}"), user, leftover)
    command = f"{_q(facts.executable)} -m pip uninstall {DIST}"
    if facts.externally_managed:
        command += " --break-system-packages"
    return Removal(SYSTEM_PIP, _as(user, command), user)


def _owner(path: str) -> str:
    try:
        uid = os.stat(path).st_uid
    except OSError:
        return "root"
    return passwd.username(uid) or str(uid)


def current(console_script: str | None = None) -> Facts:
    """The facts of this process's Python and its aimx distribution.

    @param console_script: the C{aimx} program that was run, if it is one.
    """
    import aimx

    stdlib = sysconfig.get_path("stdlib") or ""
    common = dict(
        executable=sys.executable,
        prefix=sys.prefix,
        base_prefix=sys.base_prefix,
        externally_managed=os.path.isfile(os.path.join(stdlib, "EXTERNALLY-MANAGED")),
        console_script=console_script,
    )
    try:
        dist = importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:
        here = os.path.dirname(os.path.dirname(os.path.abspath(aimx.__file__)))
        return Facts(installed=False, location=here, package_file=aimx.__file__, **common)
    location = os.path.abspath(str(dist.locate_file("")))
    package_file = os.path.join(location, "aimx", "__init__.py")
    installer = (dist.read_text("INSTALLER") or "").strip() or None
    return Facts(
        installed=True, location=location, package_file=package_file,
        installer=installer, owner=_owner(location), **common,
    )
