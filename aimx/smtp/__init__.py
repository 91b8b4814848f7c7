"""SMTP over Twisted (L2): the inbound server and the ingest chain."""
