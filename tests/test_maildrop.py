"""The test mail drop on a real temporary directory."""

import json
import os

from twisted.trial.unittest import SynchronousTestCase

from aimx.store import maildrop


class DropTests(SynchronousTestCase):
    def test_message_and_envelope(self):
        """One .eml with the exact bytes and its .json envelope, 0600, no temp left."""
        directory = os.path.join(os.path.abspath(self.mktemp()), "drop")
        path = maildrop.drop(directory, b"Subject: x\r\n\r\nbody\r\n", mail_from="a@x",
                             rcpt_to=["b@y"], message_id="<m@x>", now_ns=lambda: 42)
        stem = os.path.basename(path)[:-4]
        self.assertTrue(stem.startswith("00000000000000000042-"))
        self.assertEqual(sorted(os.listdir(directory)), [stem + ".eml", stem + ".json"])
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"Subject: x\r\n\r\nbody\r\n")
        with open(os.path.join(directory, stem + ".json"), "rb") as f:
            self.assertEqual(json.load(f), {"mail_from": "a@x", "rcpt_to": ["b@y"],
                                            "message_id": "<m@x>"})
        for name in os.listdir(directory):
            self.assertEqual(os.stat(os.path.join(directory, name)).st_mode & 0o777, 0o600)

    def test_linked_directory(self):
        """The drop directory named in the environment may be a symlink."""
        real = os.path.abspath(self.mktemp())
        os.makedirs(real)
        link = os.path.abspath(self.mktemp())
        os.symlink(real, link)
        maildrop.drop(link, b"x", mail_from="", rcpt_to=["b@y"], message_id="")
        self.assertEqual(len(os.listdir(real)), 2)
