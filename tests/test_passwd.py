"""The passwd lookups: owner names to ids, uids to names."""

import grp
import os
import pwd

from twisted.trial.unittest import SynchronousTestCase

from aimx.store import passwd
from aimx.store.passwd import Owner, Passwd


class PasswdTests(SynchronousTestCase):
    def test_root_without_lookup(self):
        """root is 0:0 without asking pwd; uid 0 is root."""

        def fail(*args):
            raise AssertionError("pwd consulted")

        self.patch(pwd, "getpwnam", fail)
        self.patch(pwd, "getpwuid", fail)
        self.assertEqual(passwd.owner("root"), Owner("root", 0, 0))
        self.assertEqual(passwd.username(0), "root")

    def test_lookup(self):
        """A known user resolves to its uid and primary gid, and back."""
        me = pwd.getpwuid(os.geteuid())
        self.assertEqual(passwd.owner(me.pw_name), Owner(me.pw_name, me.pw_uid, me.pw_gid))
        self.assertEqual(passwd.username(me.pw_uid), me.pw_name)

    def test_unknown(self):
        """An unknown name has no ids; an unknown uid no name; an unknown user no home."""
        self.assertEqual(passwd.owner("nosuchuser123"), Owner("nosuchuser123", None, None))
        self.assertIsNone(passwd.username(2**31 - 2))
        self.assertIsNone(passwd.home("nosuchuser123"))

    def test_home(self):
        """home() is the passwd entry's directory."""
        self.assertEqual(passwd.home("root"), pwd.getpwnam("root").pw_dir)

    def test_in_group(self):
        """A user is in a group it is listed in, or whose gid is its primary gid; an
        unknown group or uid has nobody."""
        me = pwd.getpwuid(os.geteuid())
        primary = grp.getgrgid(me.pw_gid).gr_name
        self.assertTrue(passwd.in_group(me.pw_uid, primary))
        users = {entry.pw_name: entry for entry in pwd.getpwall()}
        listed = [(g.gr_name, users[name]) for g in grp.getgrall() for name in g.gr_mem
                  if name in users and users[name].pw_gid != g.gr_gid]
        for group, member in listed[:1]:
            self.assertTrue(passwd.in_group(member.pw_uid, group))
        outsider = next(g.gr_name for g in grp.getgrall()
                        if g.gr_gid != me.pw_gid and me.pw_name not in g.gr_mem)
        self.assertFalse(passwd.in_group(me.pw_uid, outsider))
        self.assertFalse(passwd.in_group(me.pw_uid, "nosuchgroup123"))
        self.assertFalse(passwd.in_group(2**31 - 2, primary))

    def test_injectable(self):
        """Passwd offers the same two lookups as methods (the injected seam)."""
        self.assertEqual(Passwd().owner("root"), Owner("root", 0, 0))
        self.assertEqual(Passwd().username(0), "root")
