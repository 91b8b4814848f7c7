"""The MCP tool hook_create with C{url}: a webhook, its generated secret shown once."""

import json

from aimx.control import wire
from tests.test_mcp import ToolsTestCase, run


class WebhookToolTests(ToolsTestCase):
    def test_create_webhook(self):
        """C{url} makes a webhook body; the daemon's generated secret is in the answer."""
        self.daemon.answers[wire.HookCreate] = {"name": "n", "secret": "whsec_SECRET"}
        text = run(self.tools.hook_create("alice", "on_receive", url="https://a.example/h",
                                          timeout_secs=10))
        self.assertIn("whsec_SECRET", text)
        (create,) = [a for c, a in self.daemon.calls if c is wire.HookCreate]
        self.assertEqual(json.loads(create["body"]),
                         {"url": "https://a.example/h", "fire_on_untrusted": False,
                          "type": "webhook", "timeout_secs": 10})

    def test_cmd_or_url(self):
        """Exactly one of cmd and url."""
        for kwargs in ({}, {"cmd": ["/bin/true"], "url": "https://a.example/"}):
            self.assertEqual(self.fails(self.tools.hook_create("alice", "on_receive", **kwargs)),
                             "give either cmd or url")
        self.assertNotIn("HOOK-CREATE", self.daemon.names())
