"""Refresh tokens: `<session id>.<generation>.<MAC>`, opaque to clients.

The MAC is an HMAC of the session id, the generation and the session's random nonce under a key
derived from the service's signing key. The store keeps the current token's SHA-256 (it checks
the current generation by hash) and the nonce: with the key, the service can tell a token of an
*earlier* generation of a real session (a rotated token presented again: reuse, the session
ends) from a forged one (just invalid), without keeping every old token's hash. The database
alone cannot make a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from app.kit.keys import KeyRing

_TOKEN = re.compile(r"^([0-9a-f]{24})\.([0-9]{1,9})\.([A-Za-z0-9_-]{43})\Z")


@dataclass(frozen=True, slots=True)
class Presented:
    session_id: str
    generation: int
    token: str


class RefreshTokens:
    def __init__(self, keys: KeyRing) -> None:
        self._key = keys.derived_secret("orgsvc refresh tokens v1")

    @staticmethod
    def new_nonce() -> str:
        return secrets.token_hex(16)

    def make(self, session_id: str, generation: int, nonce: str) -> str:
        mac = hmac.new(self._key, f"{session_id}:{generation}:{nonce}".encode(), hashlib.sha256)
        text = base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")
        return f"{session_id}.{generation}.{text}"

    def is_of(self, presented: Presented, nonce: str) -> bool:
        """Whether the service made this token for this session (at its generation)."""
        expected = self.make(presented.session_id, presented.generation, nonce)
        return hmac.compare_digest(expected, presented.token)


def parse(token: str) -> Presented | None:
    match = _TOKEN.match(token)
    if match is None:
        return None
    return Presented(match.group(1), int(match.group(2)), token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
