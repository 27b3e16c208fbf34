"""The `operations` collection: the recorded intent of every multi-step change.

A request writes its intent here, with a lease, before its first side effect, and deletes it after
its last. Whatever is left with an expired lease belongs to a process that died; the reconciler
claims it with `find_one_and_update` (so one replica at a time) and completes or undoes it.
"""

from __future__ import annotations

from pymongo import ReturnDocument

from app.repositories.base import Collection, Database, Doc, epoch_ms, utcnow


class OperationRepository:
    """Intent records with leases."""

    def __init__(self, db: Database) -> None:
        self.col: Collection = db["operations"]

    async def ensure_indexes(self) -> None:
        await self.col.create_index("lease_until")
        await self.col.create_index("organization_id")

    async def start(self, doc: Doc, *, owner: str, lease_seconds: float) -> None:
        await self.col.insert_one(
            {
                **doc,
                "owner": owner,
                "created_at": utcnow(),
                "lease_until": epoch_ms(lease_seconds),
            }
        )

    async def finish(self, op_id: str) -> None:
        await self.col.delete_one({"_id": op_id})

    async def expired(self, *, limit: int = 100) -> list[Doc]:
        cursor = self.col.find({"lease_until": {"$lt": epoch_ms()}}).sort("lease_until", 1)
        return await cursor.limit(limit).to_list(length=limit)

    async def take_over(self, op_id: str, *, owner: str, lease_seconds: float) -> Doc | None:
        """Claim an expired operation for this process; None when someone else holds it."""
        return await self.col.find_one_and_update(
            {"_id": op_id, "lease_until": {"$lt": epoch_ms()}},
            {"$set": {"owner": owner, "lease_until": epoch_ms(lease_seconds)}},
            return_document=ReturnDocument.AFTER,
        )
