"""The `name_claims` collection: whoever inserts `{_id: slug}` first owns that slug.

A rename must hold its new slug before it touches any collection, while the organization record
still carries the old one; a claim document keyed by the slug gives that, race-free, on any store.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field

from app.kit.store import Collection, Database, Record, insert_unique, utcnow


class Claim(Record):
    """Who holds a slug, and through which operation."""

    slug: str = Field(validation_alias=AliasChoices("_id", "slug"))
    organization_id: str
    op_id: str | None = None


class ClaimRepository:
    """Slug ownership; the `_id` is the slug, so uniqueness is the database's job."""

    def __init__(self, db: Database) -> None:
        self.col: Collection = db["name_claims"]

    async def ensure_indexes(self) -> None:
        await self.col.create_index("organization_id")

    async def claim(self, slug: str, *, org_id: str, op_id: str) -> bool:
        """True when this call won the slug; False when it is taken."""
        claim = {"_id": slug, "organization_id": org_id, "op_id": op_id, "created_at": utcnow()}
        return await insert_unique(self.col, claim)

    async def owner(self, slug: str) -> Claim | None:
        doc = await self.col.find_one({"_id": slug})
        return None if doc is None else Claim.model_validate(doc)

    async def release(self, slug: str, *, org_id: str) -> None:
        await self.col.delete_one({"_id": slug, "organization_id": org_id})

    async def release_for_op(self, slug: str, *, op_id: str) -> None:
        """Release a claim only if this very operation made it."""
        await self.col.delete_one({"_id": slug, "op_id": op_id})

    async def release_all(self, org_id: str) -> None:
        """Release every slug the organization holds (its delete is ending)."""
        await self.col.delete_many({"organization_id": org_id})
