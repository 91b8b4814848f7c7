"""How aimx was installed and the command that removes it (aimx.host.package).

Installations are laid out in a temporary directory; C{dpkg -S} is a fake runner.
"""

import os

import attrs
from twisted.trial.unittest import SynchronousTestCase

from aimx.host import package
from aimx.host.package import Facts, Removal
from aimx.host.programs import NOT_RUN, Completed

SYSTEM = "/usr/lib/python3/dist-packages"


class FakeDpkg:
    """C{dpkg -S}: owns C{owned} (path -> output line), answers 1 for anything else."""

    def __init__(self, owned=None, missing=False):
        self.owned = owned or {}
        self.missing = missing
        self.calls = []

    def __call__(self, argv, capture=True):
        self.calls.append(argv)
        if self.missing:
            return Completed(NOT_RUN, "", "dpkg: not found")
        path = argv[-1]
        if path in self.owned:
            return Completed(0, self.owned[path] + "\n")
        return Completed(1, "", f"dpkg-query: no path found matching pattern {path}\n")


def system_facts(**kw) -> Facts:
    values = dict(
        executable="/usr/bin/python3", prefix="/usr", base_prefix="/usr", installed=True,
        location=SYSTEM, package_file=f"{SYSTEM}/aimx/__init__.py", installer=None,
    )
    values.update(kw)
    return Facts(**values)


class RemovalTests(SynchronousTestCase):
    def venv(self, *files: str) -> str:
        """A virtual environment directory holding C{files} (relative paths)."""
        prefix = os.path.join(os.path.abspath(self.mktemp()), "venvs", "aimx")
        os.makedirs(os.path.join(prefix, "bin"))
        for name in files:
            with open(os.path.join(prefix, name), "w") as f:
                f.write("")
        return prefix

    def venv_facts(self, prefix: str, **kw) -> Facts:
        values = dict(
            executable=f"{prefix}/bin/python", prefix=prefix, base_prefix="/usr",
            installed=True, location=f"{prefix}/lib/python3.11/site-packages",
            package_file=f"{prefix}/lib/python3.11/site-packages/aimx/__init__.py",
            installer="pip",
        )
        values.update(kw)
        return Facts(**values)

    def test_debian_package(self):
        """A file of the package owned by a Debian package: `sudo apt remove <it>`."""
        dpkg = FakeDpkg({f"{SYSTEM}/aimx/__init__.py":
                         f"python3-aimx: {SYSTEM}/aimx/__init__.py"})
        self.assertEqual(package.removal(system_facts(), dpkg),
                         Removal(package.APT, "sudo apt remove python3-aimx"))
        self.assertEqual(dpkg.calls, [["dpkg", "-S", f"{SYSTEM}/aimx/__init__.py"]])

    def test_dpkg_diversions_and_shared_paths(self):
        """dpkg -S lines for diversions are skipped; of several packages the first counts."""
        path = f"{SYSTEM}/aimx/__init__.py"
        dpkg = FakeDpkg({path: f"diversion by x from: {path}\npython3-aimx, other: {path}"})
        self.assertEqual(package.removal(system_facts(), dpkg).command,
                         "sudo apt remove python3-aimx")

    def test_system_pip(self):
        """Not Debian's: the interpreter's pip, with --break-system-packages where PEP 668
        marks the interpreter as the distribution's."""
        facts = system_facts(location="/usr/local/lib/python3.11/dist-packages",
                             package_file="/usr/local/lib/python3.11/dist-packages/aimx/"
                             "__init__.py", installer="pip")
        self.assertEqual(package.removal(facts, FakeDpkg()),
                         Removal(package.SYSTEM_PIP, "sudo /usr/bin/python3 -m pip uninstall aimx"))
        marked = package.removal(attrs.evolve(facts, externally_managed=True),
                                 FakeDpkg(missing=True))
        self.assertEqual(marked.command,
                         "sudo /usr/bin/python3 -m pip uninstall aimx --break-system-packages")

    def test_user_site(self):
        """pip install --user: the owner runs pip, without sudo."""
        facts = system_facts(location="/home/al/.local/lib/python3.11/site-packages",
                             package_file="/home/al/.local/lib/python3.11/site-packages/aimx/"
                             "__init__.py", installer="pip", owner="al")
        self.assertEqual(package.removal(facts, FakeDpkg()),
                         Removal(package.SYSTEM_PIP, "/usr/bin/python3 -m pip uninstall aimx",
                                 user="al"))

    def test_venv_pip(self):
        """A virtual environment: its own pip, and a word about the environment itself;
        dpkg is not asked."""
        prefix = self.venv("bin/pip")
        dpkg = FakeDpkg()
        removal = package.removal(self.venv_facts(prefix), dpkg)
        self.assertEqual(removal, Removal(
            package.VENV_PIP, f"sudo {prefix}/bin/pip uninstall aimx",
            note=f"The virtual environment {prefix} stays; delete it if nothing else uses it."))
        self.assertEqual(dpkg.calls, [])

    def test_venv_without_pip(self):
        """A virtual environment without pip (--without-pip): its python's -m pip."""
        prefix = self.venv()
        self.assertEqual(package.removal(self.venv_facts(prefix), FakeDpkg()).command,
                         f"sudo {prefix}/bin/python -m pip uninstall aimx")

    def test_uv(self):
        """uv wrote INSTALLER: `uv pip uninstall` for that environment's python."""
        prefix = self.venv()
        self.assertEqual(package.removal(self.venv_facts(prefix, installer="uv")).command,
                         f"sudo uv pip uninstall --python {prefix}/bin/python aimx")

    def test_pipx(self):
        """A pipx venv (pipx_metadata.json): `pipx uninstall` with its home, and its bin
        directory when the aimx that ran is pipx's link."""
        prefix = self.venv("pipx_metadata.json", "bin/aimx")
        home = os.path.dirname(os.path.dirname(prefix))
        removal = package.removal(self.venv_facts(prefix), FakeDpkg())
        self.assertEqual(removal, Removal(package.PIPX,
                                          f"sudo PIPX_HOME={home} pipx uninstall aimx"))
        bin_dir = os.path.join(home, "bin")
        os.makedirs(bin_dir)
        os.symlink(os.path.join(prefix, "bin", "aimx"), os.path.join(bin_dir, "aimx"))
        facts = self.venv_facts(prefix, console_script=os.path.join(bin_dir, "aimx"), owner="al")
        self.assertEqual(package.removal(facts, FakeDpkg()), Removal(
            package.PIPX, f"PIPX_HOME={home} PIPX_BIN_DIR={bin_dir} pipx uninstall aimx",
            user="al"))

    def test_paths_quoted(self):
        """A path with a space is quoted for the shell."""
        prefix = os.path.join(self.venv(), "my env")
        os.makedirs(os.path.join(prefix, "bin"))
        self.assertEqual(package.removal(self.venv_facts(prefix), FakeDpkg()).command,
                         f"sudo '{prefix}/bin/python' -m pip uninstall aimx")

    def test_source_checkout(self):
        """Not installed (run from a checkout): nothing to run, said plainly."""
        facts = system_facts(installed=False, location="/src/aimx")
        dpkg = FakeDpkg()
        removal = package.removal(facts, dpkg)
        self.assertEqual(removal.installer, package.SOURCE)
        self.assertIsNone(removal.command)
        self.assertIn("aimx runs from /src/aimx and is not an installed package", removal.note)
        self.assertEqual(dpkg.calls, [])


class CurrentTests(SynchronousTestCase):
    def test_this_python(self):
        """The facts of the running interpreter and its aimx distribution."""
        import sys
        facts = package.current("/usr/local/bin/aimx")
        self.assertEqual((facts.executable, facts.prefix, facts.base_prefix),
                         (sys.executable, sys.prefix, sys.base_prefix))
        self.assertEqual(facts.console_script, "/usr/local/bin/aimx")
        if facts.installed:
            self.assertTrue(facts.package_file.endswith(os.path.join("aimx", "__init__.py")))
            self.assertTrue(os.path.isdir(facts.location))
