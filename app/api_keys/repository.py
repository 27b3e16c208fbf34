"""The `api_keys` collection: service API keys, stored only as a SHA-256 hash.

`_id` is the key's public id (also inside the key's visible prefix), so finding the record of a
presented key is one primary-key read; its hash is then compared in constant time.
"""

from __future__ import annotations

from pymongo import ReturnDocument

from app.kit.store import Collection, Database, Doc, epoch_ms

ACTIVE, REVOKED = "active", "revoked"
# Never hand the hash out of this module unless the caller asked for it to verify a key.
PUBLIC_FIELDS = {"hash": 0}


class ApiKeyRepository:
    """API key records."""

    def __init__(self, db: Database) -> None:
        self.col: Collection = db["api_keys"]

    async def ensure_indexes(self) -> None:
        await self.col.create_index("name")

    async def insert(self, doc: Doc) -> None:
        await self.col.insert_one(doc)

    async def get_with_hash(self, key_id: str) -> Doc | None:
        """The record, hash included, for verifying a presented key."""
        return await self.col.find_one({"_id": key_id})

    async def list_keys(self, *, include_revoked: bool) -> list[Doc]:
        query: Doc = {} if include_revoked else {"status": ACTIVE}
        return await self.col.find(query, PUBLIC_FIELDS).sort("created_ms", 1).to_list(None)

    async def revoke(self, key_id: str) -> Doc | None:
        """Mark the key revoked; None when no active key has this id."""
        return await self.col.find_one_and_update(
            {"_id": key_id, "status": ACTIVE},
            {"$set": {"status": REVOKED, "revoked_ms": epoch_ms()}},
            projection=PUBLIC_FIELDS,
            return_document=ReturnDocument.AFTER,
        )

    async def touch(self, key_id: str, *, now_ms: int) -> None:
        """Record a use (an integer time: nx-27017 stores `$set` datetimes as strings)."""
        await self.col.update_one({"_id": key_id}, {"$set": {"last_used_ms": now_ms}})
