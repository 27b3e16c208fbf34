"""The `login_failures` collection: one document per failed login, per key (email, client IP).

Counting recent documents gives a sliding window shared by every replica. Times compared in
queries are integer epoch milliseconds (`at_ms`); `expires_at` is an inserted date that only
feeds the TTL index, which garbage-collects old failures (correctness never waits for it).
"""

from __future__ import annotations

from datetime import timedelta

from app.repositories.base import Collection, Database, Doc, epoch_ms, utcnow


class LoginFailureRepository:
    """Failed-login marks, counted per key inside a time window."""

    def __init__(self, db: Database) -> None:
        self.col: Collection = db["login_failures"]

    async def ensure_indexes(self) -> None:
        await self.col.create_index([("key", 1), ("at_ms", -1)])
        await self.col.create_index("expires_at", expireAfterSeconds=0)

    async def record(self, keys: list[str], *, window_seconds: float) -> None:
        """One failure for each key, now."""
        if not keys:
            return
        now_ms, expires_at = epoch_ms(), utcnow() + timedelta(seconds=window_seconds)
        docs: list[Doc] = [{"key": k, "at_ms": now_ms, "expires_at": expires_at} for k in keys]
        await self.col.insert_many(docs, ordered=False)

    async def count_since(self, key: str, since_ms: int) -> int:
        return await self.col.count_documents({"key": key, "at_ms": {"$gt": since_ms}})

    async def nth_newest_ms(self, key: str, since_ms: int, n: int) -> int | None:
        """The time of the n-th newest failure of `key` in the window (1 = the newest)."""
        docs = (
            await self.col.find({"key": key, "at_ms": {"$gt": since_ms}}, {"at_ms": 1})
            .sort("at_ms", -1)
            .skip(n - 1)
            .limit(1)
            .to_list(length=1)
        )
        return int(docs[0]["at_ms"]) if docs else None

    async def clear(self, key: str) -> None:
        await self.col.delete_many({"key": key})
