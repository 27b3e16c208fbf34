"""Invitation tokens: `<invitation id>.<secret>`, stored only as their SHA-256.

The secret part is an HMAC of the invitation's id and a random nonce under a key derived from
the service's signing key, so the service can make the same token again to (re)send its mail
after a crash, while the database alone (a leaked backup) cannot: it holds the nonce and the
hash, never the token or the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

from app.kit.keys import KeyRing

_TOKEN = re.compile(r"^([0-9a-f]{24})\.([A-Za-z0-9_-]{43})\Z")


class InvitationTokens:
    def __init__(self, keys: KeyRing) -> None:
        self._key = keys.derived_secret("orgsvc invitation tokens v1")

    @staticmethod
    def new_nonce() -> str:
        return secrets.token_hex(16)

    def make(self, invitation_id: str, nonce: str) -> str:
        mac = hmac.new(self._key, f"{invitation_id}:{nonce}".encode(), hashlib.sha256).digest()
        return f"{invitation_id}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def invitation_id_of(token: str) -> str | None:
    """The invitation id a well-formed token names; None for anything else."""
    match = _TOKEN.match(token)
    return match.group(1) if match else None


def same_hash(token: str, stored: str) -> bool:
    return hmac.compare_digest(token_hash(token), stored)
