"""The data directory README: the pure renderer and its two writers."""

import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from aimx.ops import datadir_readme
from aimx.store import datadir


class RenderTests(SynchronousTestCase):
    def test_version_line_first(self):
        """The first line is the version marker; the text ends with a newline."""
        text = datadir_readme.render()
        self.assertEqual(text.split("\n", 1)[0], "<!-- aimx-readme-version: 11 -->")
        self.assertEqual(
            datadir_readme.VERSION_LINE, f"<!-- aimx-readme-version: {datadir_readme.VERSION} -->"
        )
        self.assertTrue(text.endswith("\n"))
        self.assertEqual(text, datadir_readme.render())

    def test_content(self):
        """aimx's facts: fifteen tools, 0700 mailboxes, AMP socket, hooks by name."""
        text = datadir_readme.render()
        self.assertEqual(len(datadir_readme.MCP_TOOLS), 15)
        for tool in datadir_readme.MCP_TOOLS:
            self.assertIn(f"- `{tool}`\n", text)
        for fact in (
            "fifteen tools",
            "mode `0700`",
            "AMP on the UNIX socket",
            "/run/aimx/aimx.sock",
            "identified by their `name`",
            "/etc/aimx/",
            "YYYY-MM-DD-HHMMSS-<slug>.md",
            "no-subject",
            "`-2`, `-3`",
            "20 characters",
            "`filename`",
            "`content_type`",
            "`path` (relative to the bundle",
            "first 16 hex characters of the SHA-256",
            "leftmost id of `References`",
            "auto_submitted",
            "list_id",
            "trusted",
            "only decides whether `on_receive` hooks fire",
            "DKIM",
            "inbox/<mailbox>/",
            "sent/<mailbox>/",
            "catchall",
            "Do not edit it",
        ):
            self.assertIn(fact, text)
        for stale in ("AIMX/1", "From-Mailbox", "world-readable", "hook_list_templates"):
            self.assertNotIn(stale, text)

    def test_is_current(self):
        """Only the exact current marker counts."""
        self.assertTrue(datadir_readme.is_current(datadir_readme.VERSION_LINE + "\n"))
        for first in (None, "", "\n", "<!-- aimx-readme-version: 0 -->\n", "# readme\n"):
            self.assertFalse(datadir_readme.is_current(first))


class WriterTests(SynchronousTestCase):
    def setUp(self):
        self.data_dir = os.path.abspath(self.mktemp())
        os.makedirs(self.data_dir)
        self.path = os.path.join(self.data_dir, "README.md")

    def content(self):
        with open(self.path, encoding="utf-8") as f:
            return f.read()

    def test_write(self):
        """write_readme: the template exactly, mode 0644, replacing anything (case 18)."""
        with open(self.path, "w") as f:
            f.write(datadir_readme.VERSION_LINE + "\nhand edits\n")
        os.chmod(self.path, 0o600)
        datadir.write_readme(self.data_dir)
        self.assertEqual(self.content(), datadir_readme.render())
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o644)
        self.assertEqual(os.listdir(self.data_dir), ["README.md"])

    def test_refresh_noop_when_current(self):
        """A current first line leaves the file untouched (mtime unchanged)."""
        with open(self.path, "w") as f:
            f.write(datadir_readme.VERSION_LINE + "\nkept\n")
        os.utime(self.path, (1_000_000, 1_000_000))
        self.assertFalse(datadir.refresh_readme(self.data_dir))
        self.assertEqual(os.stat(self.path).st_mtime, 1_000_000)
        self.assertEqual(self.content(), datadir_readme.VERSION_LINE + "\nkept\n")

    def test_refresh_rewrites(self):
        """Version 0, an empty file, or other text is replaced; a missing file is created."""
        for old in ("<!-- aimx-readme-version: 0 -->\nold\n", "", "\nsomething\n", "# notes\n"):
            with open(self.path, "w") as f:
                f.write(old)
            self.assertTrue(datadir.refresh_readme(self.data_dir))
            self.assertEqual(self.content(), datadir_readme.render())
        os.unlink(self.path)
        self.assertTrue(datadir.refresh_readme(self.data_dir))
        self.assertEqual(self.content(), datadir_readme.render())
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o644)

    def test_prepare_replaces_stale(self):
        """Daemon start-up (prepare) replaces a stale README (case 18)."""
        with open(self.path, "w") as f:
            f.write("<!-- aimx-readme-version: 1 -->\nold\n")
        self.assertEqual(datadir.prepare(self.data_dir), [])
        self.assertEqual(self.content(), datadir.README)

    def test_prepare_reports_write_failure(self):
        """An unwritable README is a warning, not an error."""
        os.makedirs(self.path)  # a directory where the file should be
        warnings = datadir.prepare(self.data_dir)
        self.assertEqual(len(warnings), 1)
        self.assertIn("Failed to refresh datadir README", warnings[0])
