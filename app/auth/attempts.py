"""The `login_attempts` collection: per key (an email or a client IP), a fixed number of slots.

A login must take a free slot of each of its keys *before* any password is checked; a slot stays
taken for the window after a failed attempt and is given back after a successful one. A slot is
taken with one conditional `find_one_and_update` (or created with a unique `_id`), so however many
requests arrive at once, on however many replicas, at most `limit` password checks per key run
in any window. Times compared in queries are integer epoch milliseconds; `expires_at` only feeds
the TTL index that garbage-collects slots of keys not seen for a window.
"""

from __future__ import annotations

from datetime import UTC, datetime

from app.kit.store import Collection, Database, Doc, insert_unique


def _expiry(until_ms: int) -> datetime:
    return datetime.fromtimestamp(until_ms / 1000, UTC)


class LoginAttemptRepository:
    """Login-attempt slots, `limit` per key."""

    def __init__(self, db: Database) -> None:
        self.col: Collection = db["login_attempts"]

    async def ensure_indexes(self) -> None:
        await self.col.create_index([("key", 1), ("n", 1)])
        await self.col.create_index("expires_at", expireAfterSeconds=0)

    async def take_free(
        self, key: str, *, limit: int, now_ms: int, until_ms: int, rid: str
    ) -> bool:
        """Take one existing slot of `key` that is free now (numbered below `limit`)."""
        doc = await self.col.find_one_and_update(
            {"key": key, "n": {"$lt": limit}, "until_ms": {"$lte": now_ms}},
            {"$set": {"until_ms": until_ms, "rid": rid, "expires_at": _expiry(until_ms)}},
            projection={"_id": 1},
        )
        return doc is not None

    async def slots(self, key: str, *, limit: int) -> list[Doc]:
        """The slots of `key` numbered below `limit`: `{_id, n, until_ms}`."""
        cursor = self.col.find({"key": key, "n": {"$lt": limit}}, {"n": 1, "until_ms": 1})
        return await cursor.to_list(length=limit)

    async def create_taken(self, key: str, n: int, *, until_ms: int, rid: str) -> bool:
        """Create slot `n` of `key`, taken; False when it exists already."""
        slot = {"_id": f"{key}#{n}", "key": key, "n": n, "until_ms": until_ms, "rid": rid}
        return await insert_unique(self.col, {**slot, "expires_at": _expiry(until_ms)})

    async def release(self, keys: list[str], *, rid: str) -> None:
        """Give back the slots that reservation `rid` took (its attempt did not fail)."""
        if keys:
            await self.col.update_many(
                {"key": {"$in": keys}, "rid": rid}, {"$set": {"until_ms": 0, "rid": None}}
            )

    async def clear(self, key: str) -> None:
        """Free every slot of `key` (a successful login forgets its email's failures)."""
        await self.col.update_many({"key": key}, {"$set": {"until_ms": 0, "rid": None}})
