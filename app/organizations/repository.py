"""The `organizations` collection: one record per organization, with its admin's public facts."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from app.events.records import PendingEvent
from app.kit.errors import ExternalIdTaken, OperationInProgress
from app.kit.store import (
    Collection,
    Database,
    Doc,
    aggregate,
    as_utc,
    count,
    insert_unique,
    utcnow,
)
from app.organizations.events import revision_filter, with_events
from app.organizations.profile import prefix_range
from app.organizations.records import (
    ACTIVE,
    CREATING,
    DEFAULT_PLAN,
    DELETING,
    SUSPENDED,
    Organization,
    order_key,
)
from app.tenancy.placement import Placement

__all__ = ["ACTIVE", "CREATING", "DELETING", "OrganizationRepository"]


MAX_TRIES = 20  # compare-and-set rounds on the revision before a 409


def _record(doc: Doc | None) -> Organization | None:
    return None if doc is None else Organization.model_validate(doc)


@dataclass(frozen=True, slots=True)
class OrgFilter:
    """`GET /orgs`' filters, as stored values: `state` (active | suspended), `plan`, `prefix`
    (NFKC-casefolded, of the slug or of the display name), and the order-key range that
    `created_after`/`created_before` and the cursor leave (`records.keys_after/_before`)."""

    state: str | None = None
    plan: str | None = None
    prefix: str | None = None
    above: str = ""  # order keys strictly greater than this
    below: str | None = None  # and strictly less than this


# How `GET /orgs` queries are written so that each is served by an index on MongoDB and on
# nx-27017 alike (the query plans are pinned by tests/organizations/test_operator_api.py):
# - without `q`, by the `(status, [state | plan], order_key)` index, walked in order: `$eq`
#   (nx-27017 pushes `$eq` into SQL; a plain equality on a field without a single-field index
#   it checks row by row, since it might be an array);
# - with `q`, one query by the slug's index and one by the display key's, merged by order key;
#   there the other conditions are `$in` (row checks on nx-27017, so that its planner keeps the
#   prefix's index; the same meaning and plan choice to MongoDB).
LIST_INDEXES: list[list[tuple[str, int]]] = [
    [("status", 1), ("order_key", 1)],
    [("status", 1), ("state", 1), ("order_key", 1)],
    [("status", 1), ("plan", 1), ("order_key", 1)],
]


def _walk_query(f: OrgFilter, *, indexed: bool) -> Doc:

    def cond(value: str) -> Doc:
        return {"$eq": value} if indexed else {"$in": [value]}

    query: Doc = {"status": cond(ACTIVE)}
    if f.state is not None:
        query["state"] = cond(f.state)
    if f.plan is not None:
        query["plan"] = cond(f.plan)
    keys: Doc = {"$gt": f.above}
    if f.below is not None:
        keys["$lt"] = f.below
    query["order_key"] = keys
    return query


def list_queries(f: OrgFilter) -> list[Doc]:
    """One query without a prefix; with one, a query per field it may match."""
    if f.prefix is None:
        return [_walk_query(f, indexed=True)]
    return [
        {field: prefix_range(f.prefix), **_walk_query(f, indexed=False)}
        for field in ("slug", "display_key")
    ]


class OrganizationRepository:
    """Reads and conditional writes of organization records."""

    def __init__(self, db: Database) -> None:
        self.col: Collection = db["organizations"]
        self.outbox: Collection = db["event_outbox"]

    async def ensure_indexes(self) -> None:
        await self.col.create_index("slug", unique=True)
        await self.col.create_index("collection_name", unique=True)
        await self.col.create_index("pending_op")
        # `GET /orgs`: the listing order (unique: the cursor), each filter's index, `q`'s two.
        await self.col.create_index("order_key", unique=True, sparse=True)
        for keys in LIST_INDEXES:  # (status, order_key) also serves the organizations gauge
            await self.col.create_index(keys)
        await self.col.create_index("display_key", sparse=True)
        await self.col.create_index("external_id", unique=True, sparse=True)
        await self.col.create_index("outbox_since_ms", sparse=True)  # the event publisher's

    async def insert(self, org: Organization) -> bool:
        """False when another record has this slug or collection (unique indexes)."""
        return await insert_unique(self.col, org.to_doc())

    async def get(self, org_id: str) -> Organization | None:
        return _record(await self.col.find_one({"_id": org_id}))

    async def get_active(self, org_id: str) -> Organization | None:
        return _record(await self.col.find_one({"_id": org_id, "status": ACTIVE}))

    async def get_active_by_slug(self, slug: str) -> Organization | None:
        return _record(await self.col.find_one({"slug": slug, "status": ACTIVE}))

    async def activate(self, org: Organization, *, op_id: str, event: PendingEvent) -> bool:
        """Make the created record an organization, with its `organization.created` event."""
        res = await self.col.update_one(
            {"_id": org.organization_id, "pending_op": op_id, "status": CREATING,
             **revision_filter(org)},
            with_events({"$set": {"status": ACTIVE, "pending_op": None}}, org, [event]),
        )  # fmt: skip
        return res.modified_count == 1

    async def lock(
        self, org_id: str, *, op_id: str, status: str = ACTIVE, if_suspended: bool = False
    ) -> Organization | None:
        """Mark the active organization as busy with `op_id`; None when missing or busy, or
        suspended unless `if_suspended` (an operator's delete)."""
        query: Doc = {"_id": org_id, "status": ACTIVE, "pending_op": None}
        if not if_suspended:
            query["state"] = {"$ne": SUSPENDED}
        return _record(
            await self.col.find_one_and_update(
                query,
                {"$set": {"pending_op": op_id, "status": status}},
                return_document=ReturnDocument.AFTER,
            )
        )

    async def unlock(self, org_id: str, *, op_id: str) -> None:
        """Undo `lock` by `op_id` (a rename or delete that did not reach its commit point)."""
        await self.col.update_one(
            {"_id": org_id, "pending_op": op_id, "status": {"$in": [ACTIVE, DELETING]}},
            {"$set": {"pending_op": None, "status": ACTIVE}},
        )

    async def other_uses_collection(self, collection: str, *, org_id: str) -> bool:
        """True when a record other than `org_id`'s names `collection` (unique index)."""
        doc = await self.col.find_one({"collection_name": collection}, {"_id": 1})
        return doc is not None and doc["_id"] != org_id

    async def lock_with_event(self, org: Organization, *, op_id: str, event: PendingEvent) -> bool:
        """Mark the active, unheld record as busy with `op_id`, with `event`, conditional on the
        revision `org` was read at (a move's `organization.moving`); False on a lost race."""
        res = await self.col.update_one(
            {"_id": org.organization_id, "status": ACTIVE, "pending_op": None,
             **revision_filter(org)},
            with_events({"$set": {"pending_op": op_id}}, org, [event]),
        )  # fmt: skip
        return res.modified_count == 1

    async def release(
        self, org: Organization, *, op_id: str, fields: Doc, event: PendingEvent
    ) -> bool:
        """Set `fields` and free the record `op_id` holds, with `event` (a rename's switch, a
        move's); False when the record moved on since `org` was read (read again) or is not this
        operation's any more."""
        res = await self.col.update_one(
            {"_id": org.organization_id, "pending_op": op_id, **revision_filter(org)},
            with_events({"$set": {**fields, "pending_op": None}}, org, [event]),
        )
        return res.modified_count == 1

    async def touch(self, org_id: str) -> Organization | None:
        """A new `updated_at` (no event: nothing callers see changed but the time); the
        record, or None if not active."""
        return _record(
            await self.col.find_one_and_update(
                {"_id": org_id, "status": ACTIVE},
                {"$set": {"updated_at": utcnow()}},
                return_document=ReturnDocument.AFTER,
            )
        )

    async def change(
        self,
        org_id: str,
        decide: Callable[[Organization], tuple[Doc, list[PendingEvent]] | None],
        *,
        seats: bool = False,
    ) -> Organization | None:
        """Write `decide(record)`'s fields (a None value removes the field) with its events,
        on the record as read, conditional on its revision (read again on a lost race); the
        record after, or None when there is no active organization. `decide` returning None
        changes nothing. `seats`: the seat limit changes, which moves `team.version` so that
        an invitation decided on the old limit loses its compare-and-set and decides again.
        409 `external_id_taken` when another organization has that external id."""
        for attempt in range(MAX_TRIES):
            org = await self.get_active(org_id)
            if org is None:
                return None
            decided = decide(org)
            if decided is None:
                return org
            fields, events = decided
            update: Doc = {"$set": {"updated_at": utcnow()}}
            for name, value in fields.items():
                if value is None and name in ("external_id", "display_key"):
                    update.setdefault("$unset", {})[name] = ""
                else:
                    update["$set"][name] = value
            if seats:
                update["$inc"] = {"team.version": 1}
            query = {"_id": org_id, "status": ACTIVE, **revision_filter(org)}
            try:
                # `update_one`, then a read: nx-27017 answers a `findAndModify` that breaks a
                # unique index with "nothing found" instead of the duplicate-key error.
                res = await self.col.update_one(query, with_events(update, org, events))
            except DuplicateKeyError:
                raise ExternalIdTaken() from None
            if res.matched_count:
                return await self.get(org_id)
            await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # noqa: S311 - backoff
        raise OperationInProgress()

    async def stage_deleted(self, org: Organization, event: PendingEvent) -> None:
        """Before a deleted organization's record goes: its events not yet published, then its
        `organization.deleted`, into `event_outbox` (idempotent: a second run adds nothing)."""
        last = event.model_copy(update={"n": org.revision + 1})
        for pending in [*sorted(org.outbox.values(), key=lambda e: e.n), last]:
            doc = {"_id": pending.id, "organization_id": org.organization_id, "n": pending.n,
                   "event": pending.to_doc()}  # fmt: skip
            await insert_unique(self.outbox, doc)

    async def delete(self, org_id: str, *, op_id: str) -> bool:
        """Remove the record this operation holds; True when this call removed it."""
        res = await self.col.delete_one({"_id": org_id, "pending_op": op_id})
        return res.deleted_count == 1

    async def count_active(self) -> int:
        return await count(self.col, {"status": {"$eq": ACTIVE}})

    async def page(self, f: OrgFilter, *, limit: int) -> list[Organization]:
        """Up to `limit` organizations matching `f`, in order-key order."""
        found: dict[str, Doc] = {}
        for query in list_queries(f):
            cursor = self.col.find(query).sort("order_key", 1).limit(limit)
            for doc in await cursor.to_list(length=limit):
                found[doc["_id"]] = doc
        docs = sorted(found.values(), key=lambda doc: str(doc["order_key"]))[:limit]
        return [Organization.model_validate(doc) for doc in docs]

    async def count(self, f: OrgFilter) -> int:
        """How many organizations match `f` (an organization whose slug and display name both
        match counts once)."""
        queries = list_queries(f)
        total = sum([await count(self.col, query) for query in queries])
        if len(queries) == 2:
            both = {**queries[0], "display_key": queries[1]["display_key"]}
            total -= await count(self.col, both)
        return total

    async def upgrade_v2(self) -> int:
        """Give every record written before the lifecycle release its listing key and public
        state; each write is conditional on the key still missing (replicas starting at once
        upgrade each record once). An organization created meanwhile by a replica still on the
        older release gets its key at the next start of any replica."""
        upgraded = 0
        async for doc in self.col.find({"order_key": {"$exists": False}}, {"created_at": 1}):
            key = order_key(as_utc(doc["created_at"]), str(doc["_id"]))
            res = await self.col.update_one(
                {"_id": doc["_id"], "order_key": {"$exists": False}},
                {"$set": {"order_key": key, "state": ACTIVE, "plan": DEFAULT_PLAN, "revision": 0}},
            )
            upgraded += res.modified_count
        return upgraded

    async def upgrade_placement(self, default: Placement) -> int:
        """Record where the tenant collection of every record written before placement lives:
        where v1 kept them all (`default`). Nothing moves; one write for them all."""
        res = await self.col.update_many(
            {"placement": {"$exists": False}}, {"$set": {"placement": default.model_dump()}}
        )
        return res.modified_count

    async def placement_counts(self) -> dict[Placement, int]:
        """How many organizations (in any state) each database holds, from the records.

        Grouped by the `cluster/database` key as a string: nx-27017 gives a `$group` key that
        is a subdocument back as JSON text (in the stored field order), and MongoDB would tell
        two field orders apart."""
        key = {"$concat": ["$placement.cluster", "/", "$placement.database"]}
        pipeline: list[Doc] = [
            {"$match": {"placement": {"$exists": True}}},
            {"$group": {"_id": key, "n": {"$sum": 1}}},
        ]
        counts: dict[Placement, int] = {}
        for doc in await aggregate(self.col, pipeline):
            cluster, _, database = str(doc["_id"]).partition("/")
            where = Placement(cluster=cluster, database=database)
            counts[where] = counts.get(where, 0) + int(doc["n"])
        return counts

    async def list_active(self, *, limit: int, after: str | None = None) -> list[Organization]:
        query: Doc = {"status": ACTIVE}
        if after is not None:
            query["slug"] = {"$gt": after}
        docs = await self.col.find(query).sort("slug", 1).limit(limit).to_list(length=limit)
        return [Organization.model_validate(doc) for doc in docs]
