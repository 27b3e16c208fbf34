"""The `organizations` collection: one record per organization, with its admin's public facts."""

from __future__ import annotations

from typing import Any

from pymongo import ReturnDocument

from app.kit.store import Collection, Database, Doc, insert_unique, utcnow
from app.organizations.records import ACTIVE, CREATING, DELETING, Organization

__all__ = ["ACTIVE", "CREATING", "DELETING", "OrganizationRepository"]


def _record(doc: Doc | None) -> Organization | None:
    return None if doc is None else Organization.model_validate(doc)


class OrganizationRepository:
    """Reads and conditional writes of organization records."""

    def __init__(self, db: Database) -> None:
        self.col: Collection = db["organizations"]

    async def ensure_indexes(self) -> None:
        await self.col.create_index("slug", unique=True)
        await self.col.create_index("collection_name", unique=True)
        await self.col.create_index("pending_op")
        await self.col.create_index("status")  # the organizations gauge counts on every scrape

    async def insert(self, org: Organization) -> bool:
        """False when another record has this slug or collection (unique indexes)."""
        return await insert_unique(self.col, org.to_doc())

    async def get(self, org_id: str) -> Organization | None:
        return _record(await self.col.find_one({"_id": org_id}))

    async def get_active(self, org_id: str) -> Organization | None:
        return _record(await self.col.find_one({"_id": org_id, "status": ACTIVE}))

    async def get_active_by_slug(self, slug: str) -> Organization | None:
        return _record(await self.col.find_one({"slug": slug, "status": ACTIVE}))

    async def activate(self, org_id: str, *, op_id: str) -> bool:
        res = await self.col.update_one(
            {"_id": org_id, "pending_op": op_id, "status": CREATING},
            {"$set": {"status": ACTIVE, "pending_op": None}},
        )
        return res.modified_count == 1

    async def lock(self, org_id: str, *, op_id: str, status: str = ACTIVE) -> Organization | None:
        """Mark the active organization as busy with `op_id`; None when missing or busy."""
        return _record(
            await self.col.find_one_and_update(
                {"_id": org_id, "status": ACTIVE, "pending_op": None},
                {"$set": {"pending_op": op_id, "status": status}},
                return_document=ReturnDocument.AFTER,
            )
        )

    async def unlock(self, org_id: str, *, op_id: str) -> None:
        """Undo `lock` by `op_id` (a rename or delete that did not reach its commit point)."""
        await self.col.update_one(
            {"_id": org_id, "pending_op": op_id, "status": {"$in": [ACTIVE, DELETING]}},
            {"$set": {"pending_op": None, "status": ACTIVE}},
        )

    async def other_uses_collection(self, collection: str, *, org_id: str) -> bool:
        """True when a record other than `org_id`'s names `collection` (unique index)."""
        doc = await self.col.find_one({"collection_name": collection}, {"_id": 1})
        return doc is not None and doc["_id"] != org_id

    async def finish_rename(
        self, org_id: str, *, op_id: str, name: str, slug: str, collection: str
    ) -> bool:
        res = await self.col.update_one(
            {"_id": org_id, "pending_op": op_id},
            {
                "$set": {
                    "organization_name": name,
                    "slug": slug,
                    "collection_name": collection,
                    "pending_op": None,
                    "updated_at": utcnow(),
                }
            },
        )
        return res.modified_count == 1

    async def _set(self, org_id: str, fields: dict[str, Any]) -> Organization | None:
        fields = {**fields, "updated_at": utcnow()}
        return _record(
            await self.col.find_one_and_update(
                {"_id": org_id, "status": ACTIVE},
                {"$set": fields},
                return_document=ReturnDocument.AFTER,
            )
        )

    async def set_name(self, org_id: str, name: str) -> Organization | None:
        """A new name with the same slug (a rename moves the slug: `finish_rename`); the record,
        or None if not active."""
        return await self._set(org_id, {"organization_name": name})

    async def touch(self, org_id: str) -> Organization | None:
        """A new `updated_at`; the record, or None if not active."""
        return await self._set(org_id, {})

    async def set_admin_email(self, org_id: str, admin_id: str, email: str) -> Organization | None:
        """Show a member's new email as the primary owner's, if that member is the primary
        owner; the record (touched either way), or None if not active."""
        res = await self.col.update_one(
            {"_id": org_id, "status": ACTIVE, "admin.admin_id": admin_id},
            {"$set": {"admin.email": email}},
        )
        del res
        return await self.touch(org_id)

    async def delete(self, org_id: str, *, op_id: str) -> None:
        await self.col.delete_one({"_id": org_id, "pending_op": op_id})

    async def count_active(self) -> int:
        return await self.col.count_documents({"status": ACTIVE})

    async def list_active(self, *, limit: int, after: str | None = None) -> list[Organization]:
        query: Doc = {"status": ACTIVE}
        if after is not None:
            query["slug"] = {"$gt": after}
        docs = await self.col.find(query).sort("slug", 1).limit(limit).to_list(length=limit)
        return [Organization.model_validate(doc) for doc in docs]
