"""Test support shipped with the package: loopback DNS fixture, DKIM helpers."""
