"""Disk adapters (L1): message files, mailbox directories, config file, keys, the
owner lookup; no Twisted.

L{aimx.store.safefs} holds every file operation that must not follow a link
(directory descriptors, exclusive create, publish, atomic replace, bounded reads);
L{aimx.store.passwd} is the one owner lookup.  Host commands are L{aimx.host}.
"""
