"""The package map of docs/design.md holds: every module sits on a layer and imports
only point down (docs/design.md, "The map")."""

import ast
import os

from twisted.trial.unittest import SynchronousTestCase

import aimx

ROOT = os.path.dirname(aimx.__file__)

#: The map of docs/design.md, bottom up: each layer's units in the order they may
#: import each other (a unit imports only units listed before it, and itself).
STACK = (
    (0, ("aimx.errors", "aimx.core", "aimx.ops")),
    (1, ("aimx.store", "aimx.host", "aimx.auth", "aimx.agents")),
    (2, ("aimx.logs", "aimx.idle", "aimx.auditlog", "aimx.listening", "aimx.indexer", "aimx.smtp", "aimx.control",
         "aimx.webhooks", "aimx.hooks", "aimx.outbox", "aimx.verifier", "aimx.loopback", "aimx.service")),
    (3, ("aimx.mcp", "aimx.cli", "aimx.__main__")),
)
RANK = {unit: rank for rank, unit in enumerate(u for _, units in STACK for u in units)}
LAYER = {unit: layer for layer, units in STACK for unit in units}
#: Package data and the package itself, not code on a layer.
NOT_CODE = {"aimx", "aimx._build", "aimx.agents_data"}


def unit(module: str) -> str:
    """The map entry a module belongs to: its package under aimx, or itself."""
    parts = module.split(".")
    return ".".join(parts[:2])


def modules():
    """C{(module name, source path)} for every module of the aimx package."""
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                yield rel.removesuffix(".__init__"), path


def imports(path: str):
    """Every C{aimx...} module C{path} imports, at any depth of the code."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("aimx"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("aimx"):
                yield node.module
                yield from (f"{node.module}.{a.name}" for a in node.names)


class MapTests(SynchronousTestCase):
    def test_every_module_on_a_layer(self):
        """No module of aimx sits outside the map (tests' fakes aside)."""
        lost = sorted(
            name for name, _ in modules()
            if unit(name) not in RANK and unit(name) not in NOT_CODE
            and unit(name) != "aimx.testing"
        )
        self.assertEqual(lost, [])

    def test_imports_point_down(self):
        """A module imports only its own package and the units below it in the stack."""
        wrong = []
        for name, path in modules():
            here = unit(name)
            if here not in RANK:
                continue
            for target in imports(path):
                there = unit(target)
                if there == "aimx.testing":
                    wrong.append(f"{name} imports test support {target}")
                if there == here or there not in RANK or RANK[there] < RANK[here]:
                    continue
                wrong.append(f"{name} (L{LAYER[here]}) imports {target} (L{LAYER[there]})")
        self.assertEqual(sorted(set(wrong)), [])

    def test_check_catches_an_upward_import(self):
        """The import walk sees a function-level import (the check can fail)."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("def f():\n    from aimx.smtp import server\n")
        self.assertIn("aimx.smtp.server", list(imports(path)))


#: Concerns with one home (docs/design.md): what may be used, and only where.
ONE_HOME = {
    "pwd": {"aimx.store.passwd"},
    "grp": {"aimx.store.passwd"},
    "subprocess.run": {"aimx.host.programs"},
    "os.link": {"aimx.store.safefs"},
    "os.replace": {"aimx.store.safefs", "aimx.service"},  # the pid file, see design.md
}


def uses(path: str):
    """The one-home names C{path} imports or calls (C{import pwd}, C{subprocess.run}, ...)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name in ONE_HOME)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            if node.module in ONE_HOME:
                yield node.module
            for alias in node.names:
                if f"{node.module}.{alias.name}" in ONE_HOME:
                    yield f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            name = f"{node.value.id}.{node.attr}"
            if name in ONE_HOME:
                yield name


class OneHomeTests(SynchronousTestCase):
    def test_one_home(self):
        """The owner and group lookups, the program runner and links/renames each have one
        module."""
        strays = sorted(
            f"{name} uses {used}"
            for name, path in modules()
            for used in uses(path)
            if name not in ONE_HOME[used]
        )
        self.assertEqual(strays, [])

    def test_check_sees_a_stray(self):
        """The walk finds an import and a call (the check can fail)."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("import pwd\nimport subprocess\nsubprocess.run(['x'])\n"
                    "from os import link\n")
        self.assertEqual(sorted(uses(path)), ["os.link", "pwd", "subprocess.run"])
