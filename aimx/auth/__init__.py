"""Authentication adapters (L1): DNS, DKIM, SPF, DMARC lookups; blocking, no Twisted."""
