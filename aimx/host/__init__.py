"""The host around the daemon (L1, blocking): its init system (L{initsystem}) and the
one runner of the programs aimx starts and waits for (L{programs})."""
