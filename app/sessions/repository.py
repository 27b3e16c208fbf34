"""The `sessions` collection: one record per login, with the current refresh token's hash.

A session is live while it is not ended, has not expired (`expires_ms`; the TTL index on
`expires_at` removes it some time after), and its `token_version` is still its member's (a
password change, logout-all or reset moves the member's version: every session opened before it
is dead, with no write to them). Rotation is one conditional write on the generation, so of two
refreshes with one token exactly one wins.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import AliasChoices, Field
from pymongo import ReturnDocument

from app.kit.store import Collection, Database, Doc, Record, StoredTime, epoch_ms, utcnow


class Session(Record):
    session_id: str = Field(validation_alias=AliasChoices("_id", "session_id"))
    organization_id: str
    member_id: str
    token_version: int  # the member's when the session opened
    generation: int = 0  # of the current refresh token
    refresh_hash: str
    nonce: str
    remember_me: bool = False
    created_at: StoredTime
    last_used_ms: int
    expires_ms: int
    ip: str | None = None
    user_agent: str | None = None
    ended: bool = False

    @property
    def expired(self) -> bool:
        return self.expires_ms <= epoch_ms()


def _session(doc: Doc | None) -> Session | None:
    return None if doc is None else Session.model_validate(doc)


class SessionRepository:
    def __init__(self, db: Database) -> None:
        self.col: Collection = db["sessions"]

    async def ensure_indexes(self) -> None:
        await self.col.create_index([("member_id", 1), ("organization_id", 1)])
        await self.col.create_index("expires_at", expireAfterSeconds=0)

    async def create(self, session: Session, *, expires_at: datetime) -> None:
        doc = {"_id": session.session_id, **session.model_dump(exclude={"session_id"})}
        await self.col.insert_one({**doc, "expires_at": expires_at})

    async def get(self, session_id: str) -> Session | None:
        return _session(await self.col.find_one({"_id": session_id}))

    async def rotate(
        self,
        session_id: str,
        *,
        generation: int,
        refresh_hash: str,
        expires_ms: int,
        expires_at: datetime,
    ) -> Session | None:
        """Move to the next refresh token if `generation` is still current and the session
        live; None when another refresh (or an end) came first."""
        return _session(
            await self.col.find_one_and_update(
                {"_id": session_id, "generation": generation, "ended": False},
                {
                    "$inc": {"generation": 1},
                    "$set": {
                        "refresh_hash": refresh_hash,
                        "last_used_ms": epoch_ms(),
                        "expires_ms": expires_ms,
                        "expires_at": expires_at,
                    },
                },
                return_document=ReturnDocument.AFTER,
            )
        )

    async def end(self, session_id: str) -> Session | None:
        """End a live session; None when it was not live (already ended, or unknown)."""
        return _session(
            await self.col.find_one_and_update(
                {"_id": session_id, "ended": False},
                {"$set": {"ended": True, "ended_at": utcnow()}},
                return_document=ReturnDocument.AFTER,
            )
        )

    async def end_all(self, organization_id: str, member_id: str) -> None:
        await self.col.update_many(
            {"organization_id": organization_id, "member_id": member_id, "ended": False},
            {"$set": {"ended": True, "ended_at": utcnow()}},
        )

    async def touch(self, session_id: str, *, now_ms: int) -> None:
        await self.col.update_one({"_id": session_id}, {"$max": {"last_used_ms": now_ms}})

    async def live_of(
        self,
        organization_id: str,
        member_id: str,
        *,
        token_version: int,
        limit: int,
        after: str | None,
    ) -> list[Session]:
        query: Doc = {
            "organization_id": organization_id,
            "member_id": member_id,
            "ended": False,
            "token_version": token_version,
            "expires_ms": {"$gt": epoch_ms()},
        }
        if after is not None:
            query["_id"] = {"$gt": after}
        cursor = self.col.find(query).sort("_id", 1).limit(limit)
        return [Session.model_validate(doc) for doc in await cursor.to_list(length=limit)]
