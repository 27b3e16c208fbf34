"""The `revoked_tokens` collection: a denylist of token ids (jti) and ended sessions
(`sid:<id>`) that lives as long as the tokens they cover.

A revoked token is rejected while its document exists; the document's `expires_at` is the
token's own expiry, so the TTL index removes it once the token could not be used anyway.
"""

from __future__ import annotations

from datetime import datetime

from app.kit.store import Collection, Database, insert_unique, utcnow


class RevocationRepository:
    """Revoked jtis, keyed by the jti itself (one primary-key read per check)."""

    def __init__(self, db: Database) -> None:
        self.col: Collection = db["revoked_tokens"]

    async def ensure_indexes(self) -> None:
        await self.col.create_index("expires_at", expireAfterSeconds=0)

    async def revoke(
        self, jti: str, *, admin_id: str, organization_id: str, expires_at: datetime
    ) -> None:
        """Deny `jti` from now until `expires_at`; revoking twice is fine."""
        entry = {"_id": jti, "admin_id": admin_id, "organization_id": organization_id}
        await insert_unique(self.col, {**entry, "revoked_at": utcnow(), "expires_at": expires_at})

    async def is_revoked(self, jti: str) -> bool:
        return await self.col.find_one({"_id": jti}, {"_id": 1}) is not None

    async def any_revoked(self, keys: list[str]) -> bool:
        """Whether any of these (a token's jti, its session's `sid:<id>`) is denied: one read."""
        return await self.col.find_one({"_id": {"$in": keys}}, {"_id": 1}) is not None
