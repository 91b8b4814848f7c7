"""aimx patches none of its dependencies (issue 14 §4).

Each check runs in a fresh interpreter, so that nothing another test imported or
patched takes part: it takes every module global of pyspf and of dkimpy (dkimpy is
the tests' DKIM oracle only), and every attribute of the classes they define,
imports every module of aimx, and compares identities.
"""

import json
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

import aimx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(aimx.__file__)))

#: Run in the child: prints the globals that changed, and how many were compared.
_COMPARE = """
import importlib, json, pkgutil, sys
import aimx
watched = [importlib.import_module(name) for name in (
    "spf", "dkim", "dkim.asn1", "dkim.canonicalization", "dkim.crypto", "dkim.dnsplug",
    "dkim.util")]

def snapshot():
    seen = {}
    for module in watched:
        for name, value in list(vars(module).items()):
            seen[module.__name__ + "." + name] = value
            if isinstance(value, type) and value.__module__ == module.__name__:
                for attr, member in list(vars(value).items()):
                    seen[module.__name__ + "." + name + "." + attr] = member
    return seen

before = snapshot()
for info in pkgutil.walk_packages(aimx.__path__, "aimx."):
    if not info.name.endswith("__main__"):
        importlib.import_module(info.name)
%s
after = snapshot()
changed = sorted(k for k in before.keys() | after.keys()
                 if k not in before or k not in after or before[k] is not after[k])
print(json.dumps({"changed": changed, "compared": len(before),
                  "has": [k for k in ("spf.DNSLookup", "dkim.rfc822_parse",
                                      "dkim.crypto.RSASSA_PKCS1_v1_5_verify",
                                      "dkim.canonicalization.Relaxed.canonicalize_body")
                          if k in before]}))
"""


def _python(code: str) -> bytes:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         check=True, timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
    return out.stdout


class NoPatchTests(SynchronousTestCase):
    def compare(self, extra: str = "") -> dict:
        return json.loads(_python(_COMPARE % extra))

    def test_dependencies_untouched(self):
        """Importing every module of aimx leaves every global of pyspf and dkimpy (and
        every attribute of their classes) the object it was."""
        result = self.compare()
        self.assertEqual(result["changed"], [])
        self.assertEqual(len(result["has"]), 4)
        self.assertGreater(result["compared"], 300)

    def test_patch_seen(self):
        """The comparison sees a replaced global and a replaced method."""
        result = self.compare(
            "import spf, dkim.canonicalization\n"
            "spf.DNSLookup = None\n"
            "dkim.canonicalization.Relaxed.canonicalize_body = staticmethod(len)\n")
        self.assertEqual(result["changed"], [
            "dkim.canonicalization.Relaxed.canonicalize_body", "spf.DNSLookup"])

    def test_aimx_does_not_import_dkimpy(self):
        """Every module of aimx imports without dkimpy being loaded at all: DKIM is
        aimx's own (dkimpy is the tests' oracle)."""
        code = ("import importlib, pkgutil, sys, aimx\n"
                "for info in pkgutil.walk_packages(aimx.__path__, 'aimx.'):\n"
                "    if not info.name.endswith('__main__'):\n"
                "        importlib.import_module(info.name)\n"
                "print(sorted(m for m in sys.modules if m == 'dkim' or m.startswith('dkim.')))")
        self.assertEqual(_python(code).strip(), b"[]")
