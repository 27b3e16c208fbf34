"""The `mail_outbox` collection: every mail to send, stored before it is sent.

A feature enqueues an entry in the request that makes what the mail is about; the worker sends
it afterwards. The entry's `_id` is the caller's idempotency key (`invitation:<id>`): enqueueing
it again is a no-op, so a retried request never mails twice. The entry holds a reference to what
the mail is about (`ref`, non-secret ids), never the mail itself: a token is not stored here; the
kind's composer rebuilds the message from `ref` when it sends.

A worker claims a due entry with one `find_one_and_update` that sets a lease and increments
`attempts`; however many workers run, on however many processes, one claim wins. `attempts` is
the fence: every finishing write (sent, dropped, retry, dead) is conditional on the owner and
attempt it claimed, so a worker that stalled past its lease, whose entry another worker has
claimed since, changes nothing. An entry whose worker died keeps `pending` and becomes due again
when its lease runs out: a crash between storing and sending never loses a mail (it may, rarely,
send it twice: when the process dies after the server took the mail and before `mark_sent`).

Times compared in queries are integer epoch milliseconds (nx-27017 stores `$set` datetimes as
strings); `finished_at` only feeds the TTL index that removes finished entries.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field
from pymongo import ReturnDocument

from app.kit.store import (
    Collection,
    Database,
    Doc,
    Record,
    StoredTime,
    epoch_ms,
    insert_unique,
    utcnow,
)

PENDING, SENT, DROPPED, DEAD = "pending", "sent", "dropped", "dead"
# Finished entries (sent, dropped, dead) are kept this long for whoever looks into a mail
# ("was it sent? why not?"), then removed by the TTL index.
FINISHED_TTL_SECONDS = 14 * 86_400
MAX_ERROR_CHARS = 200


class OutboxEntry(Record):
    """An entry as stored; one returned by `claim_due` is a claim (its `attempts` the fence)."""

    entry_id: str = Field(validation_alias=AliasChoices("_id", "entry_id"))
    kind: str
    ref: dict[str, Any] = Field(default_factory=dict)
    to: str
    state: str
    attempts: int = 0
    next_attempt_ms: int = 0
    lease_until_ms: int = 0
    owner: str | None = None
    created_at: StoredTime | None = None
    sent_at: StoredTime | None = None
    finished_at: StoredTime | None = None  # set when sent, dropped or dead (the TTL's clock)
    last_error: str | None = None


class OutboxRepository:
    """Outbox entries with claims, leases and fencing by attempt number."""

    def __init__(self, db: Database) -> None:
        self.col: Collection = db["mail_outbox"]

    async def ensure_indexes(self) -> None:
        # The due query: pending entries by the time of their next attempt.
        await self.col.create_index([("state", 1), ("next_attempt_ms", 1)])
        # Set only when an entry is finished, so pending ones are never removed.
        await self.col.create_index("finished_at", expireAfterSeconds=FINISHED_TTL_SECONDS)

    async def enqueue(self, entry_id: str, *, kind: str, ref: Doc, to: str) -> bool:
        """Store a mail to send now; False (nothing written) when `entry_id` is stored already."""
        return await insert_unique(
            self.col,
            {
                "_id": entry_id,
                "kind": kind,
                "ref": ref,
                "to": to,
                "state": PENDING,
                "attempts": 0,
                "next_attempt_ms": epoch_ms(),
                "lease_until_ms": 0,
                "owner": None,
                "created_at": utcnow(),
                "sent_at": None,
                "last_error": None,
            },
        )

    async def get(self, entry_id: str) -> OutboxEntry | None:
        doc = await self.col.find_one({"_id": entry_id})
        return None if doc is None else OutboxEntry.model_validate(doc)

    async def claim_due(self, owner: str, *, lease_seconds: float, limit: int) -> list[OutboxEntry]:
        """Claim up to `limit` due entries (pending, their next attempt due, nobody's lease
        running), earliest first, each with its own atomic `find_one_and_update`."""
        claims: list[OutboxEntry] = []
        for _ in range(limit):
            now = epoch_ms()
            doc = await self.col.find_one_and_update(
                {
                    "state": PENDING,
                    "next_attempt_ms": {"$lte": now},
                    "lease_until_ms": {"$lte": now},
                },
                {
                    "$set": {"owner": owner, "lease_until_ms": now + int(lease_seconds * 1000)},
                    "$inc": {"attempts": 1},
                },
                sort=[("next_attempt_ms", 1)],
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                break
            claims.append(OutboxEntry.model_validate(doc))
        return claims

    async def mark_sent(self, claim: OutboxEntry) -> bool:
        """The backend took the mail. False: the claim was lost (someone else holds the entry)."""
        now = utcnow()
        return await self._finish(
            claim, {"state": SENT, "sent_at": now, "finished_at": now, "last_error": None}
        )

    async def mark_dropped(self, claim: OutboxEntry) -> bool:
        """What the mail was about is gone (e.g. a revoked invitation): nothing to send."""
        return await self._finish(claim, {"state": DROPPED, "finished_at": utcnow()})

    async def retry_later(self, claim: OutboxEntry, *, next_attempt_ms: int, error: str) -> bool:
        """This attempt failed; the entry is due again at `next_attempt_ms`."""
        return await self._finish(
            claim, {"next_attempt_ms": next_attempt_ms, "last_error": error[:MAX_ERROR_CHARS]}
        )

    async def mark_dead(self, claim: OutboxEntry, *, error: str) -> bool:
        """Given up: the entry stays (until the TTL) with the reason, and is never sent."""
        return await self._finish(
            claim,
            {"state": DEAD, "finished_at": utcnow(), "last_error": error[:MAX_ERROR_CHARS]},
        )

    async def _finish(self, claim: OutboxEntry, fields: Doc) -> bool:
        """Write `fields` and release the lease, only while `claim` still holds the entry."""
        res = await self.col.update_one(
            {
                "_id": claim.entry_id,
                "state": PENDING,
                "owner": claim.owner,
                "attempts": claim.attempts,
            },
            {"$set": {**fields, "lease_until_ms": 0}},
        )
        return res.matched_count == 1
