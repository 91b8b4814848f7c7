"""The passwd and group databases (L1): owner names to uid and primary gid, uids to
names, group membership.

The one place aimx asks C{pwd} and C{grp}.  C{root} is uid/gid 0 without a lookup
(docs/security.md, "Files and ownership").  Nothing is cached: a user
removed and their uid given to another must not keep receiving mail as the old one.
"""

import grp
import pwd

import attrs


@attrs.frozen
class Owner:
    """A mailbox owner resolved through the passwd database.

    @ivar uid: the user's uid, or C{None} when the name does not resolve.
    @ivar gid: the user's primary gid, or C{None} likewise.
    """

    name: str
    uid: int | None
    gid: int | None


def owner(name: str) -> Owner:
    """The uid and primary gid of C{name}; both C{None} for an unknown user."""
    if name == "root":
        return Owner(name, 0, 0)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return Owner(name, None, None)
    return Owner(name, entry.pw_uid, entry.pw_gid)


def username(uid: int) -> str | None:
    """The name of C{uid}, or C{None} when it has no passwd entry."""
    if uid == 0:
        return "root"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def home(name: str) -> str | None:
    """The home directory of C{name}, or C{None} when it has no entry (or an empty one)."""
    try:
        return pwd.getpwnam(name).pw_dir or None
    except KeyError:
        return None


def in_group(uid: int, group: str) -> bool:
    """Whether C{uid}'s user is in C{group}: listed as a member, or its primary group."""
    try:
        entry = grp.getgrnam(group)
    except KeyError:
        return False
    try:
        user = pwd.getpwuid(uid)
    except KeyError:
        return False
    return user.pw_gid == entry.gr_gid or user.pw_name in entry.gr_mem


class Passwd:
    """L{owner}, L{username}, L{home} and L{in_group} as an object, for the code that takes them
    injected (the control commands, the CLI session); tests pass a fake with these
    methods."""

    owner = staticmethod(owner)
    username = staticmethod(username)
    home = staticmethod(home)
    in_group = staticmethod(in_group)
