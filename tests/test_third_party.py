"""Nothing aimx ships or documents points at the original project's hosted services.

AIMX (the Rust original) appends a link to its website to outgoing mail and checks
port 25 against its own hosted verifier.  aimx does neither, and neither its code,
docs, example config nor agent bundles may link to those services as if they were
aimx's.  The single allowed mention is the README's attribution to the original
project's repository, marked as the original project.
"""

import os
import re

from twisted.trial.unittest import SynchronousTestCase

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The original project's website and hosted verifier (any subdomain, any case).
HOSTED = re.compile(r"aimx\.email|check\.aimx", re.IGNORECASE)
#: The original project's owner, as in its repository URL.
ORIGINAL = re.compile(r"uzyn", re.IGNORECASE)
ATTRIBUTION = "original project: https://github.com/uzyn/aimx"

#: Not scanned: the tests (they name the texts to prove their absence), VCS and
#: build or run-time leftovers.
SKIP_DIRS = {".git", "tests", "_trial_temp", "__pycache__", ".venv", "build", "dist"}


def shipped_files():
    """Every text file of the checkout outside L{SKIP_DIRS}: package, agent bundles,
    docs, README, contrib/, the twistd plugin, packaging, benchmarks."""
    for directory, dirs, files in os.walk(REPO):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS
                         and not d.startswith("_trial_temp") and not d.endswith(".egg-info"))
        for name in sorted(files):
            path = os.path.join(directory, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue  # e.g. trial's _trial_temp.lock
            with open(path, "rb") as f:
                data = f.read()
            if b"\0" in data:
                continue  # binary (e.g. a stray cache file)
            yield os.path.relpath(path, REPO), data.decode("utf-8", "replace")


def matches(pattern) -> list[tuple[str, int, str]]:
    return [
        (path, number, line.strip())
        for path, text in shipped_files()
        for number, line in enumerate(text.splitlines(), 1)
        if pattern.search(line)
    ]


class HostedServiceTests(SynchronousTestCase):
    def test_scan_covers_what_ships(self):
        """The scan reads the package, the agent bundles, the docs and contrib/."""
        paths = {path for path, _ in shipped_files()}
        for path in ("README.md", "docs/design.md", "contrib/config.toml",
                     "aimx/core/config.py", "aimx/agents_data/primer.md",
                     "aimx/verifier/service.py", "twisted/plugins/aimx_plugin.py"):
            self.assertIn(path, paths)
        self.assertFalse(any(path.startswith("tests/") for path in paths))

    def test_no_hosted_service(self):
        """No aimx.email or check.aimx anywhere: no signature link, no verifier URL."""
        self.assertEqual(matches(HOSTED), [])

    def test_one_attribution(self):
        """The original project is named once, in the README, marked as the original."""
        found = matches(ORIGINAL)
        self.assertEqual(len(found), 1, found)
        path, _, line = found[0]
        self.assertEqual(path, "README.md")
        self.assertIn(ATTRIBUTION, line)
