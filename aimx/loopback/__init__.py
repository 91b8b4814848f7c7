"""The loopback kit (L2): an authoritative DNS server, a recording SMTP sink and DKIM
keys on loopback.  C{aimx demo} runs on it; the tests use it too."""

#: The domain C{aimx demo} serves, and the one its sample mail comes from.
DEMO_DOMAIN = "demo.localhost"
SENDER_DOMAIN = "sender.localhost"
