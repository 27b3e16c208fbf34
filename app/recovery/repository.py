"""The `password_resets` collection: one record per reset mail actually sent to an account.

A record is made by the mail's composer (`app.recovery.mail`), never by the request: the request
only queues the mail, so a known and an unknown address cost the same. Its `_id` is the reset id
the request chose, so a retried compose finds the record it made instead of making another.
It holds the token's SHA-256 (never the token), the member, the organization and the expiry.

`use` is the single-use guard: one conditional write (`used: false` → `true`, on the hash, while
unexpired) per token; of two concurrent resets with one token exactly one gets the record.
`expires_at` feeds the TTL index: expired records disappear on their own (MongoDB's TTL monitor;
queries never trust it, they compare `expires_ms`).
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pymongo import ReturnDocument

from app.kit.store import Collection, Database, Record, StoredTime, epoch_ms, insert_unique, utcnow


class PasswordReset(Record):
    reset_id: str = Field(validation_alias=AliasChoices("_id", "reset_id"))
    organization_id: str
    member_id: str
    token_hash: str
    nonce: str  # with the service's key, makes the token again (a retried mail)
    created_at: StoredTime
    expires_at: StoredTime
    expires_ms: int
    used: bool = False

    @property
    def expired(self) -> bool:
        return self.expires_ms <= epoch_ms()


class ResetRepository:
    def __init__(self, db: Database) -> None:
        self.col: Collection = db["password_resets"]

    async def ensure_indexes(self) -> None:
        await self.col.create_index("expires_at", expireAfterSeconds=0)

    async def insert(self, reset: PasswordReset) -> bool:
        """Store a new reset; False (nothing written) when its id is stored already."""
        doc = {"_id": reset.reset_id, **reset.model_dump(exclude={"reset_id"})}
        return await insert_unique(self.col, doc)

    async def get(self, reset_id: str) -> PasswordReset | None:
        doc = await self.col.find_one({"_id": reset_id})
        return None if doc is None else PasswordReset.model_validate(doc)

    async def use(self, reset_id: str, *, token_hash: str) -> PasswordReset | None:
        """Take the unused, unexpired reset of this token for one reset; None otherwise."""
        doc = await self.col.find_one_and_update(
            {
                "_id": reset_id,
                "token_hash": token_hash,
                "used": False,
                "expires_ms": {"$gt": epoch_ms()},
            },
            {"$set": {"used": True, "used_at": utcnow()}},
            return_document=ReturnDocument.AFTER,
        )
        return None if doc is None else PasswordReset.model_validate(doc)
