"""The host around the daemon (L1, blocking): its init system and the commands it runs."""
