"""Pure core (L0): parsing, decisions and rendering; no I/O, no Twisted."""
