"""The loopback kit (L2): an authoritative DNS server, a recording SMTP sink and DKIM
keys on loopback.  C{aimx demo} runs on it; the tests use it too."""
