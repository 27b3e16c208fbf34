"""The `api_keys` collection: service API keys, stored only as a SHA-256 hash.

`_id` is the key's public id (also inside the key's visible prefix), so finding the record of a
presented key is one primary-key read; its hash is then compared in constant time.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pymongo import ReturnDocument

from app.kit.store import Collection, Database, Doc, Record, epoch_ms, utcnow

ACTIVE, REVOKED = "active", "revoked"
# Never hand the hash out of this module unless the caller asked for it to verify a key. An
# inclusion projection (built from the record, below): nx-27017 0.8 sometimes answers the
# exclusion `{"hash": 0}` with `_id` alone once other queries ran on the collection.


class ApiKey(Record):
    """A key's public record (never its hash)."""

    key_id: str = Field(validation_alias=AliasChoices("_id", "key_id"))
    name: str
    prefix: str
    scopes: list[str]
    organization_id: str | None = None  # an organization's own key acts for it only
    status: str = ACTIVE
    created_ms: int | None = None
    last_used_ms: int | None = None
    revoked_ms: int | None = None


PUBLIC_FIELDS: Doc = dict.fromkeys(set(ApiKey.model_fields) - {"key_id"}, 1)


def _key(doc: Doc | None) -> ApiKey | None:
    return None if doc is None else ApiKey.model_validate(doc)


class ApiKeyRepository:
    """API key records."""

    def __init__(self, db: Database) -> None:
        self.col: Collection = db["api_keys"]

    async def ensure_indexes(self) -> None:
        await self.col.create_index("name")
        await self.col.create_index("organization_id", sparse=True)

    async def insert(self, key: ApiKey, *, key_hash: str) -> None:
        doc = {"_id": key.key_id, **key.model_dump(exclude={"key_id"})}
        await self.col.insert_one({**doc, "created_at": utcnow(), "hash": key_hash})

    async def get_with_hash(self, key_id: str) -> tuple[ApiKey, str] | None:
        """The record and its hash, for verifying a presented key."""
        doc = await self.col.find_one({"_id": key_id})
        return None if doc is None else (ApiKey.model_validate(doc), str(doc.get("hash", "")))

    async def list_keys(
        self, *, include_revoked: bool, organization_id: str | None = None
    ) -> list[ApiKey]:
        """Every key (`organization_id`: that organization's only), oldest first."""
        query: Doc = {} if include_revoked else {"status": ACTIVE}
        if organization_id is not None:
            query["organization_id"] = organization_id
        docs = await self.col.find(query, PUBLIC_FIELDS).sort("created_ms", 1).to_list(None)
        return [ApiKey.model_validate(doc) for doc in docs]

    async def revoke(self, key_id: str, *, organization_id: str | None = None) -> ApiKey | None:
        """Mark the key revoked; None when no active key has this id (of this organization,
        when `organization_id` is given)."""
        query: Doc = {"_id": key_id, "status": ACTIVE}
        if organization_id is not None:
            query["organization_id"] = organization_id
        return _key(
            await self.col.find_one_and_update(
                query,
                {"$set": {"status": REVOKED, "revoked_ms": epoch_ms()}},
                projection=PUBLIC_FIELDS,
                return_document=ReturnDocument.AFTER,
            )
        )

    async def touch(self, key_id: str, *, now_ms: int) -> None:
        """Record a use (an integer time: nx-27017 stores `$set` datetimes as strings)."""
        await self.col.update_one({"_id": key_id}, {"$set": {"last_used_ms": now_ms}})

    async def revoke_of_org(self, organization_id: str) -> int:
        """Revoke every key of the organization (it is being deleted); how many were live."""
        res = await self.col.update_many(
            {"organization_id": organization_id, "status": ACTIVE},
            {"$set": {"status": REVOKED, "revoked_ms": epoch_ms()}},
        )
        return res.modified_count

    async def page_of_org(
        self, organization_id: str, *, limit: int, after: str | None = None
    ) -> list[ApiKey]:
        """The organization's live keys by id, after the id `after` (a page)."""
        query: Doc = {"organization_id": organization_id, "status": ACTIVE}
        if after is not None:
            query["_id"] = {"$gt": after}
        cursor = self.col.find(query, PUBLIC_FIELDS).sort("_id", 1).limit(limit)
        return [ApiKey.model_validate(doc) for doc in await cursor.to_list(length=limit)]
