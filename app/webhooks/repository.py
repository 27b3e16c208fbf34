"""The webhooks' collections: `webhooks` (endpoints), `webhook_deliveries`, `webhook_replays`.

An endpoint carries its own `cursor` over the events feed (the position its fan-out has
reached) and moves it only by compare-and-set, so any number of replicas can fan out at once: a
delivery's `_id` is `<webhook_id>:<event_id>:<generation>` (0 for the live feed, the replay's
number for a replay), and a second insert of it is a no-op. A delivery attempt is a claim: a
conditional update that takes a lease (`owner`, `lease_until_ms`) and counts the attempt; the
outcome is written only by the claim's owner with that attempt number (the fence), so two
replicas never send the same attempt, and a replica that lost its lease cannot overwrite the
next one's result. Times that queries compare are integer epoch milliseconds (nx-27017 turns
`$set` datetimes into strings).

Retention: every delivery has an `expires_at` (a TTL index): while pending, the retry window
plus the retention; once delivered or failed, WEBHOOK_DELIVERY_RETENTION_DAYS (30) from then.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import AliasChoices, Field
from pymongo import ReturnDocument

from app.kit.store import (
    Collection,
    Database,
    Doc,
    Record,
    StoredTime,
    count,
    epoch_ms,
    insert_unique,
    utcnow,
)

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
LIVE = 0  # the generation of deliveries from the live feed


class WebhookRecord(Record):
    """An endpoint as stored (its secrets sealed: `app.webhooks.secrets`)."""

    webhook_id: str = Field(validation_alias=AliasChoices("_id", "webhook_id"))
    url: str
    types: list[str]
    description: str = ""
    enabled: bool = True
    created_at: StoredTime
    secrets: list[dict[str, Any]] = Field(default_factory=list)
    cursor: int = 0
    generation: int = 0  # the last replay's number
    failing_since_ms: int | None = None  # first failed attempt since the last success
    disabled_reason: str | None = None


class DeliveryRecord(Record):
    """One event for one endpoint (one generation), and how its attempts went."""

    delivery_id: str = Field(validation_alias=AliasChoices("_id", "delivery_id"))
    webhook_id: str
    event_id: str
    seq: int
    generation: int = LIVE
    status: str = PENDING
    attempts: int = 0
    last_status_code: int | None = None
    last_error: str | None = None
    next_attempt_ms: int | None = None
    lease_until_ms: int = 0
    owner: str | None = None
    created_ms: int = 0


class ReplayJob(Record):
    """A replay being fanned out: the events after `cursor` up to `upto` (the feed's top when
    it was asked for), as deliveries of generation `generation`."""

    job_id: str = Field(validation_alias=AliasChoices("_id", "job_id"))
    webhook_id: str
    generation: int
    cursor: int
    upto: int


class WebhookRepository:
    """Every read and write of the webhooks feature."""

    def __init__(self, db: Database, *, retention_days: float, retry_hours: float) -> None:
        self.hooks: Collection = db["webhooks"]
        self.deliveries: Collection = db["webhook_deliveries"]
        self.replays: Collection = db["webhook_replays"]
        self.retention = timedelta(days=retention_days)
        self.retry = timedelta(hours=retry_hours)

    async def ensure_indexes(self) -> None:
        await self.hooks.create_index("enabled")
        await self.deliveries.create_index(
            [("webhook_id", 1), ("status", 1), ("next_attempt_ms", 1)]
        )
        await self.deliveries.create_index([("webhook_id", 1), ("seq", -1), ("generation", -1)])
        await self.deliveries.create_index([("status", 1), ("created_ms", 1)])
        await self.deliveries.create_index("expires_at", expireAfterSeconds=0)
        await self.replays.create_index("webhook_id")

    # --- endpoints -------------------------------------------------------------------------

    async def insert(self, doc: Doc) -> None:
        await self.hooks.insert_one(doc)

    async def get(self, webhook_id: str) -> WebhookRecord | None:
        doc = await self.hooks.find_one({"_id": webhook_id})
        return None if doc is None else WebhookRecord.model_validate(doc)

    async def page(self, *, after: str | None, limit: int) -> list[WebhookRecord]:
        query: Doc = {"_id": {"$gt": after}} if after else {}
        docs = await self.hooks.find(query).sort("_id", 1).limit(limit).to_list(length=limit)
        return [WebhookRecord.model_validate(d) for d in docs]

    async def enabled(self) -> list[WebhookRecord]:
        docs = await self.hooks.find({"enabled": True}).sort("_id", 1).to_list(length=None)
        return [WebhookRecord.model_validate(d) for d in docs]

    async def update(self, webhook_id: str, changes: Doc) -> WebhookRecord | None:
        doc = await self.hooks.find_one_and_update(
            {"_id": webhook_id}, {"$set": changes}, return_document=ReturnDocument.AFTER
        )
        return None if doc is None else WebhookRecord.model_validate(doc)

    async def delete(self, webhook_id: str) -> bool:
        res = await self.hooks.delete_one({"_id": webhook_id})
        await self.deliveries.delete_many({"webhook_id": webhook_id})
        await self.replays.delete_many({"webhook_id": webhook_id})
        return res.deleted_count == 1

    async def advance(self, webhook_id: str, *, cursor: int, to: int) -> bool:
        """Compare-and-set of the endpoint's feed position (False: another replica moved it)."""
        res = await self.hooks.update_one(
            {"_id": webhook_id, "cursor": cursor}, {"$set": {"cursor": to}}
        )
        return res.modified_count == 1

    async def note_failure(self, webhook_id: str, now_ms: int) -> int | None:
        """Start the endpoint's failing clock if it is not running; its start (None: gone)."""
        await self.hooks.update_one(
            {"_id": webhook_id, "failing_since_ms": None}, {"$set": {"failing_since_ms": now_ms}}
        )
        doc = await self.hooks.find_one({"_id": webhook_id}, {"failing_since_ms": 1})
        return None if doc is None else doc.get("failing_since_ms")

    async def note_success(self, webhook_id: str) -> None:
        await self.hooks.update_one(
            {"_id": webhook_id, "failing_since_ms": {"$ne": None}},
            {"$set": {"failing_since_ms": None}},
        )

    async def disable(self, webhook_id: str, *, since_ms: int, reason: str) -> bool:
        """Disable an enabled endpoint still failing since `since_ms` (True: this call did)."""
        res = await self.hooks.update_one(
            {"_id": webhook_id, "enabled": True, "failing_since_ms": since_ms},
            {"$set": {"enabled": False, "disabled_reason": reason}},
        )
        return res.modified_count == 1

    async def fail_pending(self, webhook_id: str, *, error: str) -> int:
        """Every pending delivery of a disabled endpoint ends `failed` (replay re-sends)."""
        res = await self.deliveries.update_many(
            {"webhook_id": webhook_id, "status": PENDING},
            {"$set": {"status": FAILED, "last_error": error, **self._finished()}},
        )
        return res.modified_count

    # --- deliveries ------------------------------------------------------------------------

    async def add_deliveries(self, docs: list[Doc]) -> None:
        """Insert deliveries; those stored already (another replica's fan-out) are left as is."""
        if not docs:
            return
        ids = [d["_id"] for d in docs]
        found = await self.deliveries.find({"_id": {"$in": ids}}, {"_id": 1}).to_list(length=None)
        have = {d["_id"] for d in found}
        for doc in docs:
            if doc["_id"] in have:
                continue
            # One by one: a duplicate (a replica racing) is a no-op, not a failed batch.
            await insert_unique(self.deliveries, doc)

    def new_delivery(self, webhook_id: str, event_id: str, seq: int, generation: int) -> Doc:
        now = epoch_ms()
        return {
            "_id": f"{webhook_id}:{event_id}:{generation}",
            "webhook_id": webhook_id,
            "event_id": event_id,
            "seq": seq,
            "generation": generation,
            "status": PENDING,
            "attempts": 0,
            "last_status_code": None,
            "last_error": None,
            "next_attempt_ms": now,
            "lease_until_ms": 0,
            "owner": None,
            "created_ms": now,
            "created_at": utcnow(),
            "expires_at": utcnow() + self.retry + self.retention,
        }

    async def claim(
        self, webhook_id: str, *, owner: str, lease_seconds: float, limit: int
    ) -> list[DeliveryRecord]:
        """Claim up to `limit` due deliveries of one endpoint, oldest event first, each with an
        atomic conditional update (a lease, and the attempt counted)."""
        claims: list[DeliveryRecord] = []
        for _ in range(limit):
            now = epoch_ms()
            doc = await self.deliveries.find_one_and_update(
                {
                    "webhook_id": webhook_id,
                    "status": PENDING,
                    "next_attempt_ms": {"$lte": now},
                    "lease_until_ms": {"$lte": now},
                },
                {
                    "$set": {"owner": owner, "lease_until_ms": now + int(lease_seconds * 1000)},
                    "$inc": {"attempts": 1},
                },
                sort=[("seq", 1), ("generation", 1)],
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                break
            claims.append(DeliveryRecord.model_validate(doc))
        return claims

    def _finished(self) -> Doc:
        now = utcnow()
        return {"finished_at": now, "expires_at": now + self.retention, "lease_until_ms": 0}

    async def _settle(self, claim: DeliveryRecord, changes: Doc) -> bool:
        res = await self.deliveries.update_one(
            {"_id": claim.delivery_id, "owner": claim.owner, "attempts": claim.attempts},
            {"$set": changes},
        )
        return res.modified_count == 1

    async def mark_delivered(self, claim: DeliveryRecord, *, status_code: int) -> bool:
        return await self._settle(
            claim,
            {
                "status": DELIVERED,
                "last_status_code": status_code,
                "last_error": None,
                "next_attempt_ms": None,
                "delivered_at": utcnow(),
                **self._finished(),
            },
        )

    async def mark_failed(
        self, claim: DeliveryRecord, *, status_code: int | None, error: str | None
    ) -> bool:
        return await self._settle(
            claim,
            {
                "status": FAILED,
                "last_status_code": status_code,
                "last_error": error,
                "next_attempt_ms": None,
                **self._finished(),
            },
        )

    async def retry_later(
        self, claim: DeliveryRecord, *, status_code: int | None, error: str | None, at_ms: int
    ) -> bool:
        return await self._settle(
            claim,
            {
                "last_status_code": status_code,
                "last_error": error,
                "next_attempt_ms": at_ms,
                "lease_until_ms": 0,
            },
        )

    async def deliveries_page(
        self,
        webhook_id: str,
        *,
        status: str | None,
        before: tuple[int, int] | None,
        limit: int,
    ) -> list[DeliveryRecord]:
        """An endpoint's deliveries, newest event first (then newest generation)."""
        query: Doc = {"webhook_id": webhook_id}
        if status is not None:
            query["status"] = status
        if before is not None:
            seq, gen = before
            query["$or"] = [{"seq": {"$lt": seq}}, {"seq": seq, "generation": {"$lt": gen}}]
        cursor = self.deliveries.find(query).sort([("seq", -1), ("generation", -1)]).limit(limit)
        docs = await cursor.to_list(length=limit)
        return [DeliveryRecord.model_validate(d) for d in docs]

    async def backlog(self) -> tuple[int, int | None]:
        """How many deliveries are pending, and when the oldest was queued (epoch ms)."""
        pending = await count(self.deliveries, {"status": PENDING})
        oldest = await self.deliveries.find_one(
            {"status": PENDING}, {"created_ms": 1}, sort=[("created_ms", 1)]
        )
        return pending, None if oldest is None else int(oldest["created_ms"])

    # --- replays ---------------------------------------------------------------------------

    async def next_generation(self, webhook_id: str) -> int | None:
        doc = await self.hooks.find_one_and_update(
            {"_id": webhook_id},
            {"$inc": {"generation": 1}},
            projection={"generation": 1},
            return_document=ReturnDocument.AFTER,
        )
        return None if doc is None else int(doc["generation"])

    async def add_replay(self, webhook_id: str, *, generation: int, after: int, upto: int) -> None:
        await self.replays.insert_one(
            {
                "_id": f"{webhook_id}:{generation}",
                "webhook_id": webhook_id,
                "generation": generation,
                "cursor": after,
                "upto": upto,
            }
        )

    async def replay_jobs(self) -> list[ReplayJob]:
        docs = await self.replays.find({}).sort("_id", 1).to_list(length=None)
        return [ReplayJob.model_validate(d) for d in docs]

    async def advance_replay(self, job: ReplayJob, *, to: int) -> bool:
        """Compare-and-set of a replay's position; the job is removed once it reaches `upto`."""
        if to >= job.upto:
            res = await self.replays.delete_one({"_id": job.job_id, "cursor": job.cursor})
            return res.deleted_count == 1
        moved = await self.replays.update_one(
            {"_id": job.job_id, "cursor": job.cursor}, {"$set": {"cursor": to}}
        )
        return moved.modified_count == 1
