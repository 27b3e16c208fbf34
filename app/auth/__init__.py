"""Login, tokens and signing keys, passwords, login rate limits and revocation; the admins
collection."""
