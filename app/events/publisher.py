"""The publisher: moves pending events from the outboxes into the one global order.

One replica at a time publishes, under a lease on the `event_counters` document (`owner`,
`lease_until_ms`, and a `fence` that every takeover moves). A pass:

1. gathers pending events: the organization records with an outbox (`outbox_since_ms`), each
   organization's events in the order its writes committed (`n`), and the `event_outbox`
   collection (what a deleted organization left: its last events and `organization.deleted`);
2. allocates positions for them (`allocated += k`, conditional on the fence);
3. writes each event at its position (`events._id`); an event already published (a pass that
   died before step 5) is not written twice (unique `id`): its new position becomes a tombstone;
4. advances `published` (conditional on the fence): only now are these positions visible;
5. removes them from their outboxes.

Readers see positions up to `published` only, so an event never appears below a position a
reader has passed: a publisher that lost its lease between 2 and 4 cannot advance `published`,
and the next holder first fills every position the old one allocated but did not publish with a
tombstone (a late write of the old holder then fails on the unique `_id`), before it publishes
anything. A conditional event (`requires`: an API key's, whose change is written just after it)
waits, with the rest of its organization's events, until its change is there, and is dropped
if that has not happened within `REQUIREMENT_GRACE_MS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from pymongo import ReturnDocument

from app.events.records import PendingEvent, StoredEvent
from app.events.store import COUNTER_ID
from app.kit.store import Collection, Database, StoreError, epoch_ms, insert_unique

log = logging.getLogger("orgsvc.events")

LEASE_MS = 5_000
INTERVAL_S = 0.1  # a holder's pass interval when nothing kicks it
CONTEND_S = 1.0  # how often a non-holder tries for the lease
BATCH = 500
REQUIREMENT_GRACE_MS = 30_000


@dataclass(slots=True)
class _Source:
    """Where a pending event lives, to remove it once published."""

    org_id: str
    in_record: bool  # the record's outbox; else `event_outbox`


@dataclass(slots=True)
class _Batch:
    events: list[PendingEvent] = field(default_factory=list)
    sources: list[_Source] = field(default_factory=list)
    dropped: list[tuple[PendingEvent, _Source]] = field(default_factory=list)


class EventPublisher:
    """Runs on every replica; publishes while it holds the lease."""

    def __init__(
        self,
        db: Database,
        *,
        owner: str,
        on_published: list[Callable[[int], None]] | None = None,
    ) -> None:
        self.db = db
        self.orgs: Collection = db["organizations"]
        self.outbox: Collection = db["event_outbox"]
        self.events: Collection = db["events"]
        self.counters: Collection = db["event_counters"]
        self.owner = owner
        self.fence: int | None = None
        self.on_published = on_published or []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._counter_made = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="event-publisher")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.fence is not None:
            with contextlib.suppress(StoreError):
                await self.counters.update_one(
                    {"_id": COUNTER_ID, "owner": self.owner, "fence": self.fence},
                    {"$set": {"lease_until_ms": 0}},
                )  # let another replica take over at once
            self.fence = None

    def kick(self) -> None:
        """Something was recorded here: publish now rather than at the next tick."""
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                published = await self.run_once()
            except StoreError as exc:
                log.warning("event publisher pass failed", extra={"error": type(exc).__name__})
                published = 0
            wait = INTERVAL_S if self.fence is not None else CONTEND_S
            if published:
                continue  # more may be waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait * random.uniform(0.8, 1.2))  # noqa: S311
            self._wake.clear()

    # ------------------------------------------------------------------ one pass
    async def run_once(self) -> int:
        """One pass if this process holds (or takes) the lease; how many it published."""
        if not await self._hold():
            return 0
        batch = await self._gather()
        published = 0
        if batch.events:
            published = await self._publish(batch)
        for event, source in batch.dropped:
            log.warning(
                "event dropped: its change never happened",
                extra={"event": event.type, "organization_id": event.organization_id},
            )
            await self._remove([event], [source])
        return published

    async def _hold(self) -> bool:
        """Take or renew the lease; on a takeover, close the previous holder's gap first."""
        now = epoch_ms()
        if not self._counter_made:
            await insert_unique(
                self.counters,
                {"_id": COUNTER_ID, "fence": 0, "owner": None, "lease_until_ms": 0,
                 "allocated": 0, "published": 0},
            )  # fmt: skip
            self._counter_made = True
        if self.fence is not None:
            renewed = await self.counters.find_one_and_update(
                {"_id": COUNTER_ID, "owner": self.owner, "fence": self.fence},
                {"$set": {"lease_until_ms": now + LEASE_MS}},
                return_document=ReturnDocument.AFTER,
            )
            if renewed is not None:
                return True
            self.fence = None  # lost it
        taken = await self.counters.find_one_and_update(
            {"_id": COUNTER_ID, "lease_until_ms": {"$lt": now}},
            {"$set": {"owner": self.owner, "lease_until_ms": now + LEASE_MS}, "$inc": {"fence": 1}},
            return_document=ReturnDocument.AFTER,
        )
        if taken is None or taken.get("owner") != self.owner:
            return False
        self.fence = int(taken["fence"])
        await self._close_gap(int(taken["published"]), int(taken["allocated"]))
        return self.fence is not None

    async def _close_gap(self, published: int, allocated: int) -> None:
        """Positions the previous holder allocated but did not publish: a tombstone for each
        one it did not write (its late writes then fail), then make them all visible."""
        for seq in range(published + 1, allocated + 1):
            await insert_unique(self.events, {"_id": seq, "seq": seq, "tombstone": True})
        if allocated > published:
            await self._advance(published, allocated)

    async def _advance(self, before: int, upto: int) -> bool:
        res = await self.counters.update_one(
            {"_id": COUNTER_ID, "owner": self.owner, "fence": self.fence, "published": before},
            {"$set": {"published": upto}},
        )
        if res.modified_count != 1:
            self.fence = None
            return False
        return True

    async def _gather(self) -> _Batch:
        """Each organization's publishable events (a lane, in its own order), merged into one
        batch by the time they happened (an organization's lane keeps its order)."""
        batch = _Batch()
        now = epoch_ms()
        lanes: list[list[tuple[PendingEvent, _Source]]] = []
        cursor = self.orgs.find({"outbox_since_ms": {"$gt": 0}}, {"outbox": 1}).limit(100)
        async for doc in cursor:
            org_id = str(doc["_id"])
            pending = sorted(
                (PendingEvent.model_validate(v) for v in (doc.get("outbox") or {}).values()),
                key=lambda e: e.n,
            )
            if not pending:
                await self._clear_marker(org_id)
                continue
            lanes.append(await self._lane(batch, pending, _Source(org_id, in_record=True), now))
        staged = await self.outbox.find({}).sort([("organization_id", 1), ("n", 1)]).to_list(BATCH)
        by_org: dict[str, list[PendingEvent]] = {}
        for doc in staged:
            by_org.setdefault(str(doc["organization_id"]), []).append(
                PendingEvent.model_validate(doc["event"])
            )
        for org_id, pending in by_org.items():
            # A record still there (its delete is finishing) has its own lane too: the staged
            # copies are the same events (a copy published second becomes a tombstone), and
            # `organization.deleted` is the last of them in time.
            lanes.append(await self._lane(batch, pending, _Source(org_id, in_record=False), now))
        heads = [(lane[0][0].occurred_at, i, 0) for i, lane in enumerate(lanes) if lane]
        heapq.heapify(heads)
        while heads and len(batch.events) < BATCH:
            _, i, j = heapq.heappop(heads)
            event, source = lanes[i][j]
            batch.events.append(event)
            batch.sources.append(source)
            if j + 1 < len(lanes[i]):
                heapq.heappush(heads, (lanes[i][j + 1][0].occurred_at, i, j + 1))
        return batch

    async def _lane(
        self, batch: _Batch, pending: list[PendingEvent], source: _Source, now: int
    ) -> list[tuple[PendingEvent, _Source]]:
        """An organization's pending events, in order, up to the first one whose change is
        not there yet (the rest wait with it); the expired ones of those go to `dropped`."""
        lane: list[tuple[PendingEvent, _Source]] = []
        for event in pending:
            need = event.requires
            if need is not None:
                found = await self.db[need.collection].find_one(
                    {"_id": need.doc_id, need.field: need.value}, {"_id": 1}
                )
                if found is None:
                    if now - int(event.occurred_at.timestamp() * 1000) > REQUIREMENT_GRACE_MS:
                        batch.dropped.append((event, source))
                        continue
                    break  # its change may still come: this organization waits
            lane.append((event, source))
        return lane

    async def _publish(self, batch: _Batch) -> int:
        count = len(batch.events)
        allocated = await self.counters.find_one_and_update(
            {"_id": COUNTER_ID, "owner": self.owner, "fence": self.fence},
            {"$inc": {"allocated": count}},
            return_document=ReturnDocument.AFTER,
        )
        if allocated is None:
            self.fence = None
            return 0
        end = int(allocated["allocated"])
        start = end - count + 1
        published_before = int(allocated["published"])
        if published_before != start - 1:
            # Positions allocated earlier and never published (this holder failed mid-pass):
            # close them first, as a new holder would.
            await self._close_gap(published_before, start - 1)
            if self.fence is None:
                return 0
        written = 0
        for offset, event in enumerate(batch.events):
            seq = start + offset
            doc = StoredEvent(seq=seq, **event.model_dump(exclude={"n", "requires"})).to_doc()
            if await insert_unique(self.events, doc):
                written += 1
                continue
            # Already published (a pass that died before removing it), or our position was
            # tombstoned by a new holder (we lost the lease): a tombstone if the slot is free.
            await insert_unique(self.events, {"_id": seq, "seq": seq, "tombstone": True})
        if not await self._advance(start - 1, end):
            return 0
        await self._remove(batch.events, batch.sources)
        for observe in self.on_published:
            observe(end)
        return written

    async def _clear_marker(self, org_id: str) -> None:
        """Unmark a record whose outbox is empty, unless an event came meanwhile: conditional
        on the revision read with the empty outbox (every event moves it). (Not on
        `outbox: {}`: nx-27017 matches an empty-object equality with any object.)"""
        doc = await self.orgs.find_one({"_id": org_id}, {"outbox": 1, "revision": 1})
        if doc is None or doc.get("outbox"):
            return
        await self.orgs.update_one(
            {"_id": org_id, "revision": doc.get("revision", 0)},
            {"$unset": {"outbox_since_ms": ""}},
        )

    async def _remove(self, events: list[PendingEvent], sources: list[_Source]) -> None:
        in_record: dict[str, list[str]] = {}
        staged: list[str] = []
        for event, source in zip(events, sources, strict=True):
            if source.in_record:
                in_record.setdefault(source.org_id, []).append(event.id)
            else:
                staged.append(event.id)
        for org_id, ids in in_record.items():
            await self.orgs.update_one(
                {"_id": org_id}, {"$unset": {f"outbox.{event_id}": "" for event_id in ids}}
            )
            await self._clear_marker(org_id)
        if staged:
            await self.outbox.delete_many({"_id": {"$in": staged}})
