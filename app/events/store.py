"""The `events` collection: published events, `_id` (and `seq`) = the position in the global
order; and the counter that hands out positions and says how far the feed is visible.

Readers see an event only at or below `published` (the high-water mark the publisher advances
after it has written a batch), so an event can never appear below a position a reader has
already passed. A position the publisher allocated but could not fill (it lost its lease) is a
tombstone (`{_id, seq, tombstone: true}`), never shown.
"""

from __future__ import annotations

from typing import Any

from app.events.records import StoredEvent
from app.kit.store import Collection, Database, Doc

COUNTER_ID = "events"


class EventStore:
    """Reads of the published feed (the publisher writes it: `app.events.publisher`)."""

    def __init__(self, db: Database) -> None:
        self.events: Collection = db["events"]
        self.counters: Collection = db["event_counters"]
        self.outbox: Collection = db["event_outbox"]

    async def ensure_indexes(self) -> None:
        # `event_id`, not `id`: nx-27017 silently makes no index on a field named `id` (its
        # SQLite tables use that name); tombstones have none (sparse).
        await self.events.create_index("event_id", unique=True, sparse=True)
        await self.events.create_index("seq")
        await self.events.create_index([("organization_id", 1), ("seq", 1)])
        await self.events.create_index([("type", 1), ("seq", 1)])
        await self.outbox.create_index([("organization_id", 1), ("n", 1)])

    async def published(self) -> int:
        """The highest visible position (0: nothing published yet)."""
        doc = await self.counters.find_one({"_id": COUNTER_ID}, {"published": 1})
        return int(doc["published"]) if doc else 0

    async def seq_of(self, event_id: str) -> int | None:
        """The position of a published event, by its id."""
        doc = await self.events.find_one({"event_id": event_id}, {"seq": 1})
        return None if doc is None else int(doc["seq"])

    async def page(
        self,
        *,
        after_seq: int,
        limit: int,
        types: list[str] | None = None,
        organization_id: str | None = None,
        upto: int | None = None,
    ) -> list[StoredEvent]:
        """Up to `limit` published events after position `after_seq`, in order; only `types`
        and/or one organization's when given; never past `upto` (default: `published()`)."""
        top = await self.published() if upto is None else upto
        if top <= after_seq:
            return []
        query: Doc = {"seq": {"$gt": after_seq, "$lte": top}}
        if organization_id is not None:
            query["organization_id"] = {"$eq": organization_id}
        if types:
            query["type"] = {"$in": list(types)}
        else:
            query["event_id"] = {"$gt": ""}  # not a tombstone
        cursor = self.events.find(query).sort("seq", 1).limit(limit)
        docs: list[dict[str, Any]] = await cursor.to_list(length=limit)
        return [StoredEvent.model_validate(doc) for doc in docs if not doc.get("tombstone")]
