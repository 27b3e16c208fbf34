"""The `audit_log` collection: who did what to which organization, from where, with what outcome.

Entries are only inserted (their dates are real dates, on every store). Live organizations'
entries have `expires_at: null`, which a TTL index ignores; when an organization is deleted its
entries get an `expires_at` and the TTL index removes them after the retention period. Entries
that belong to no organization (e.g. failed logins for unknown emails) get one at insert.
Order is (`at_ms`, `_id`) descending; nx-27017 cannot index `_id` inside a compound index, so the
index covers (`organization_id`, `at_ms`) and `_id` only breaks ties.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from app.kit.store import Collection, Database, Doc, Record, StoredTime


class ActorRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: str  # "admin" | "api_key" | "cli" | "anonymous"
    id: str | None = None


class AuditRecord(Record):
    """One entry as stored (`details` already cleaned of anything secret-looking)."""

    id: str = Field(validation_alias=AliasChoices("_id", "id"))
    at: StoredTime
    at_ms: int
    action: str
    outcome: str
    code: str | None = None
    actor: ActorRecord
    organization_id: str | None = None
    ip: str | None = None
    request_id: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)

    def to_doc(self) -> Doc:
        return {"_id": self.id, **self.model_dump(exclude={"id"})}


class AuditRepository:
    """Append-only audit entries."""

    def __init__(self, db: Database) -> None:
        self.col: Collection = db["audit_log"]

    async def ensure_indexes(self) -> None:
        await self.col.create_index([("organization_id", 1), ("at_ms", -1)])
        await self.col.create_index("expires_at", expireAfterSeconds=0)

    async def insert(
        self, entry: AuditRecord, *, expires_at: datetime | None, expires_ms: int | None = None
    ) -> None:
        """Store `entry`; `expires_at` starts its retention clock (None: kept while its
        organization lives)."""
        doc = {**entry.to_doc(), "expires_at": expires_at}
        if expires_ms is not None:
            doc["expires_ms"] = expires_ms
        await self.col.insert_one(doc)

    async def page(
        self, organization_id: str, *, limit: int, before: tuple[int, str] | None
    ) -> list[AuditRecord]:
        """Up to `limit` entries of the organization, newest first, older than `before`."""
        query: Doc = {"organization_id": organization_id}
        if before is not None:
            at_ms, entry_id = before
            query["$or"] = [{"at_ms": {"$lt": at_ms}}, {"at_ms": at_ms, "_id": {"$lt": entry_id}}]
        cursor = self.col.find(query).sort([("at_ms", -1), ("_id", -1)]).limit(limit)
        return [AuditRecord.model_validate(doc) for doc in await cursor.to_list(length=limit)]

    async def expire_organization(
        self, organization_id: str, *, expires_at: datetime, expires_ms: int
    ) -> int:
        """Start the retention clock on every entry of a deleted organization.

        On MongoDB the TTL index then removes them; nx-27017 stores a `$set` date as a string,
        which its TTL monitor ignores (a development store: nothing is collected there).
        """
        res = await self.col.update_many(
            {"organization_id": organization_id},
            {"$set": {"expires_at": expires_at, "expires_ms": expires_ms}},
        )
        return res.modified_count
