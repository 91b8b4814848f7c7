"""Disk adapters (L1): config file, mail store, keys; no Twisted."""
