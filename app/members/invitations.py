"""The `invitations` collection: who was invited to which organization, with what role, and the
SHA-256 of the invitation token (never the token: it reaches the invitee only by mail).

Whether an invitation is still pending is decided by the team on the organization record (its
seat, `Team.invites`); this record's `status` follows: `pending` → `accepting` (one accept holds
it: two concurrent accepts of one token get one winner) → `accepted`, or `revoked`.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import AliasChoices, Field
from pymongo import ReturnDocument

from app.kit.store import Collection, Database, Record, StoredTime, epoch_ms, utcnow

PENDING, ACCEPTING, ACCEPTED, REVOKED = "pending", "accepting", "accepted", "revoked"


class Invitation(Record):
    invitation_id: str = Field(validation_alias=AliasChoices("_id", "invitation_id"))
    organization_id: str
    email: str
    role: str
    invited_by: str | None
    created_at: StoredTime
    expires_at: StoredTime
    expires_ms: int
    status: str = PENDING
    token_hash: str
    nonce: str  # with the service's key, makes the token again (a mail resent after a crash)
    op_id: str | None = None

    @property
    def expired(self) -> bool:
        return self.expires_ms <= epoch_ms()


class InvitationRepository:
    def __init__(self, db: Database) -> None:
        self.col: Collection = db["invitations"]

    async def ensure_indexes(self) -> None:
        await self.col.create_index([("organization_id", 1), ("status", 1)])
        # Gone on their own some time after they expired (MongoDB's TTL monitor; nx-27017 keeps
        # them, a development store).
        await self.col.create_index("purge_at", expireAfterSeconds=0)

    async def insert(self, invitation: Invitation, *, purge_at: datetime) -> None:
        doc = {"_id": invitation.invitation_id, **invitation.model_dump(exclude={"invitation_id"})}
        await self.col.insert_one({**doc, "purge_at": purge_at})

    async def get(self, invitation_id: str) -> Invitation | None:
        doc = await self.col.find_one({"_id": invitation_id})
        return None if doc is None else Invitation.model_validate(doc)

    async def pending_of(self, org_id: str, ids: list[str]) -> list[Invitation]:
        """These invitations of the organization (the team's pending ones), by id."""
        cursor = self.col.find({"_id": {"$in": ids}, "organization_id": org_id}).sort("_id", 1)
        return [Invitation.model_validate(doc) for doc in await cursor.to_list(None)]

    async def hold(self, invitation_id: str, *, op_id: str) -> Invitation | None:
        """Take a pending invitation for one accept; None when it is not pending."""
        doc = await self.col.find_one_and_update(
            {"_id": invitation_id, "status": PENDING},
            {"$set": {"status": ACCEPTING, "op_id": op_id}},
            return_document=ReturnDocument.AFTER,
        )
        return None if doc is None else Invitation.model_validate(doc)

    async def release(self, invitation_id: str, *, op_id: str) -> None:
        """Undo `hold` (the accept did not happen)."""
        await self.col.update_one(
            {"_id": invitation_id, "status": ACCEPTING, "op_id": op_id},
            {"$set": {"status": PENDING, "op_id": None}},
        )

    async def accepted(self, invitation_id: str, *, member_id: str) -> None:
        await self.col.update_one(
            {"_id": invitation_id, "status": {"$in": [PENDING, ACCEPTING]}},
            {"$set": {"status": ACCEPTED, "member_id": member_id, "accepted_at": utcnow()}},
        )

    async def revoked(self, invitation_id: str) -> None:
        await self.col.update_one(
            {"_id": invitation_id, "status": {"$in": [PENDING, ACCEPTING]}},
            {"$set": {"status": REVOKED}},
        )

    async def delete(self, invitation_id: str) -> None:
        await self.col.delete_one({"_id": invitation_id})

    async def delete_of_org(self, org_id: str) -> None:
        await self.col.delete_many({"organization_id": org_id})
