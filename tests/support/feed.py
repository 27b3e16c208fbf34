"""Put events in the published feed without the publisher: `StoredEvent`-shaped documents in
`events` (`_id` = `seq` = the position) and the counter's high-water mark moved over them.

Test-only and single-writer (it reads the counter, then writes above it). No pytest in here.
"""

from __future__ import annotations

from typing import Any

from app.events.records import EventActor, StoredEvent, new_event_id
from app.events.store import COUNTER_ID
from app.kit.store import Database, utcnow


async def publish(
    db: Database,
    count: int = 1,
    *,
    type_: str = "organization.updated",
    organization_id: str = "6650f2a9c1d4e8b7a3f01234",
    data: dict[str, Any] | None = None,
) -> list[StoredEvent]:
    """Append `count` published events of `type_` to the feed; returns them in order."""
    counter = await db["event_counters"].find_one({"_id": COUNTER_ID})
    top = int(counter["published"]) if counter else 0
    made: list[StoredEvent] = []
    for n in range(1, count + 1):
        event = StoredEvent(
            seq=top + n,
            id=new_event_id(),
            type=type_,
            organization_id=organization_id,
            occurred_at=utcnow(),
            actor=EventActor(type="system"),
            data=data if data is not None else {"n": top + n},
        )
        await db["events"].insert_one(event.to_doc())
        made.append(event)
    top += count
    await db["event_counters"].update_one(
        {"_id": COUNTER_ID},
        {"$set": {"published": top, "allocated": top, "fence": 0}},
        upsert=True,
    )
    return made
