"""The demo's state file, C{<runtime_dir>/demo.json} (aimx.store.demo)."""

import json
import os
import stat

import attrs
from twisted.trial.unittest import SynchronousTestCase

from aimx.store import demo

STATE = demo.DemoState(
    domain="demo.localhost", host="127.0.0.1", port=2525, dns_port=5353, mx_port=2526,
    sender_domain="sender.localhost", selector="demo", sender_key="/d/sender.key",
    config_dir="/d/etc", data_dir="/d/data", log="/d/aimx.log", directory="/d",
)


class DemoStateTests(SynchronousTestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "demo.json")

    def put(self, data: bytes):
        with open(self.path, "wb") as f:
            f.write(data)

    def test_round_trip(self):
        """What is written reads back equal, as a world-readable file holding version 1."""
        self.assertEqual(demo.write(self.dir, STATE), self.path)
        self.assertEqual(demo.read(self.dir), STATE)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o644)
        with open(self.path) as f:
            self.assertEqual(json.load(f)["version"], 1)
        self.assertEqual([n for n in os.listdir(self.dir)], ["demo.json"])

    def test_absent(self):
        """No state file: no demo (a production runtime dir)."""
        self.assertIsNone(demo.read(self.dir))

    def test_environment(self):
        """The variables the demo daemon runs with, and its SMTP address."""
        self.assertEqual(STATE.environment(), {"AIMX_NAMESERVERS": "127.0.0.1:5353",
                                               "AIMX_SMTP_OUT_PORT": "2526"})
        self.assertEqual(STATE.smtp, "127.0.0.1:2525")

    def test_not_a_state_file(self):
        """Anything but a version-1 state with valid fields is refused, naming the file."""
        fields = dict(attrs.asdict(STATE), version=1)
        for data in (b"not json", b"[]", json.dumps(dict(fields, version=2)).encode(),
                     json.dumps({k: v for k, v in fields.items() if k != "log"}).encode(),
                     json.dumps(dict(fields, port=0)).encode(),
                     json.dumps(dict(fields, port="2525")).encode(),
                     json.dumps(dict(fields, port=True)).encode(),
                     json.dumps(dict(fields, log="")).encode(),
                     json.dumps(dict(fields, extra=1)).encode()):
            self.put(data)
            e = self.assertRaises(demo.DemoStateError, demo.read, self.dir)
            self.assertIn(f"{self.path} is not an aimx demo state file", str(e))

    def test_size_bound(self):
        """A state file over 64 KiB is not read whole."""
        self.put(b" " * (demo.MAX_STATE_BYTES + 1))
        e = self.assertRaises(demo.DemoStateError, demo.read, self.dir)
        self.assertIn("over 64 KiB", str(e))

    def test_unreadable(self):
        """A state file that cannot be opened (here: a directory) says why."""
        os.mkdir(self.path)
        e = self.assertRaises(demo.DemoStateError, demo.read, self.dir)
        self.assertIn(f"cannot read the demo state {self.path}: ", str(e))
