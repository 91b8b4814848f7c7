"""Disk adapters (L1): config file, message files, mailbox directories, keys, passwd; no Twisted.

L{aimx.store.safefs} holds every file operation that must not follow a link
(directory descriptors, exclusive create, publish, atomic replace, bounded reads).
"""
