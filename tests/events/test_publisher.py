"""The publisher's hard cases, in-process on the real store: a holder that lost its lease
mid-pass, an event published twice by a pass that died before clearing its outbox, and an
event that waits for its change (an API key's)."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient

from app.events.publisher import REQUIREMENT_GRACE_MS, EventPublisher
from app.events.records import EventActor, PendingEvent, Requirement
from app.events.store import COUNTER_ID, EventStore
from app.kit.settings import Settings
from app.kit.store import epoch_ms

ORG = "6650f2a9c1d4e8b7a3f01234"


async def pending(db: Any, *events: PendingEvent, revision: int = 0) -> None:
    """An organization record whose outbox holds `events` (numbered from 1)."""
    outbox = {e.id: e.model_copy(update={"n": n}).to_doc() for n, e in enumerate(events, 1)}
    await db.organizations.update_one(
        {"_id": ORG},
        {"$set": {"outbox": outbox, "revision": revision + len(events),
                  "outbox_since_ms": epoch_ms()}},
        upsert=True,
    )  # fmt: skip


def event(type_: str = "organization.updated", **extra: Any) -> PendingEvent:
    return PendingEvent.of(type_, ORG, {"n": 1}, actor=EventActor(type="system"), **extra)


async def test_a_lost_holders_positions_become_tombstones(
    nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    db = nx_client[settings.mongodb_db]
    await EventStore(db).ensure_indexes()
    first = EventPublisher(db, owner="first")
    await pending(db, event())
    assert await first.run_once() == 1
    # `first` allocates 3 more positions, then stalls past its lease before writing them.
    await db.event_counters.update_one(
        {"_id": COUNTER_ID}, {"$inc": {"allocated": 3}, "$set": {"lease_until_ms": 0}}
    )
    second = EventPublisher(db, owner="second")
    later = event()
    await pending(db, later, revision=1)
    assert await second.run_once() == 1
    counter = await db.event_counters.find_one({"_id": COUNTER_ID})
    assert counter is not None and (counter["published"], counter["allocated"]) == (5, 5)
    # The stalled holder wakes and writes at its old position: refused (a tombstone is there).
    slot = await db.events.find_one({"_id": 3})
    assert slot is not None and slot.get("tombstone") is True
    page = await EventStore(db).page(after_seq=0, limit=10)
    assert [e.seq for e in page] == [1, 5] and page[1].id == later.id
    # ... and it cannot advance the feed either: its fence is old.
    assert await first.run_once() == 0 and first.fence is None


async def test_an_event_published_twice_is_shown_once(
    nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    db = nx_client[settings.mongodb_db]
    await EventStore(db).ensure_indexes()
    publisher = EventPublisher(db, owner="p")
    once = event()
    await pending(db, once)
    assert await publisher.run_once() == 1
    # A pass that died after writing but before clearing the outbox: the event is still there.
    await pending(db, once)
    assert await publisher.run_once() == 0
    page = await EventStore(db).page(after_seq=0, limit=10)
    assert [e.id for e in page] == [once.id]
    record = await db.organizations.find_one({"_id": ORG})
    assert record is not None and not record.get("outbox") and "outbox_since_ms" not in record


async def test_an_event_waits_for_its_change_and_is_dropped_without_it(
    nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    db = nx_client[settings.mongodb_db]
    await EventStore(db).ensure_indexes()
    publisher = EventPublisher(db, owner="p")
    needs = Requirement(
        collection="api_keys", doc_id="abc123abc123", field="_id", value="abc123abc123"
    )
    created, after = event("api_key.created", requires=needs), event()
    await pending(db, created, after)
    assert await publisher.run_once() == 0  # the key is not there yet: both wait, in order
    await db.api_keys.insert_one({"_id": "abc123abc123"})
    assert await publisher.run_once() == 2
    page = await EventStore(db).page(after_seq=0, limit=10)
    assert [e.id for e in page] == [created.id, after.id]

    never = event(
        "api_key.created", requires=needs.model_copy(update={"doc_id": "nope", "value": "nope"})
    )
    stale = never.model_copy(
        update={"occurred_at": never.occurred_at.fromtimestamp(
            (epoch_ms() - REQUIREMENT_GRACE_MS - 1000) / 1000, never.occurred_at.tzinfo)}
    )  # fmt: skip
    await pending(db, stale, revision=2)
    assert await publisher.run_once() == 0
    assert [e.id for e in await EventStore(db).page(after_seq=0, limit=10)] == [
        created.id,
        after.id,
    ]
    record = await db.organizations.find_one({"_id": ORG})
    assert record is not None and not record.get("outbox")  # dropped: its change never came
