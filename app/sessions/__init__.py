"""Sessions: what a login opens, kept alive by rotating refresh tokens (contract section 2)."""
