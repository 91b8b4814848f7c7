"""Disk and host adapters (L1): message files, mailbox directories, config file, keys,
passwd, programs; no Twisted.

L{aimx.store.safefs} holds every file operation that must not follow a link
(directory descriptors, exclusive create, publish, atomic replace, bounded reads);
L{aimx.store.passwd} is the one owner lookup, L{aimx.store.programs} the one
program runner.
"""
