"""Moving an organization's tenant collection to another database or cluster, online (contract
v2, section 6).

`POST /orgs/{id}/move` records the intent (`MoveOp`, with a lease and a fence like every other
multi-step change), locks the record (`pending_op`: rename, delete, suspension and another move
answer 409 `operation_in_progress` meanwhile) in the same write as the `organization.moving`
event (tenant writers pause on it), and answers 202 with the operation's id; the copy runs in
the background:

1. copy the documents in `_id` order, in batches, the count copied so far kept as the
   checkpoint (`moves`: what `GET /operations/{id}` shows);
2. make the same indexes on the target;
3. verify: the same number of documents, the same content (SHA-256 over each side's BSON in
   `_id` order) and the same indexes (`app.tenancy.copy`); a difference rolls the move back;
4. commit point, then switch the record to the new placement in the write that carries
   `organization.moved`;
5. only then drop the source (and its database, when it was the organization's own).

A crash (or a stall past the lease) anywhere leaves the intent to the reconciler of any replica,
which resumes it: before the commit point the copy goes on from its checkpoint (a batch copied
twice is harmless), after it the switch and the drop are finished. A move that cannot be
resumed (the record is no longer held by it) is rolled back: the target dropped, never the
source, and the record unlocked with an `organization.moved` whose placement is the source.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, Literal

from pydantic import AliasChoices, Field

from app.audit.service import Actor, AuditService, RequestMeta
from app.kit.errors import AppError, NotFound, OperationInProgress
from app.kit.events import DomainEvent, EventHook
from app.kit.store import Collection, Database, Doc, Record, StoredTime, StoreError, utcnow
from app.kit.tasks import cancel_and_wait
from app.organizations.events import event_actor, org_event
from app.organizations.records import Organization
from app.organizations.repository import OrganizationRepository
from app.organizations.steps import OrgOperation
from app.tenancy.collections import TenantCollections
from app.tenancy.context import OperationContext
from app.tenancy.copy import copy_documents, copy_indexes, fingerprint
from app.tenancy.lease import Hold, OperationLost
from app.tenancy.names import MAX_NAMESPACE_BYTES
from app.tenancy.operations import Operation, OperationRepository
from app.tenancy.placement import Placement, PlacementCounts

log = logging.getLogger("orgsvc.moves")

MoveStatus = Literal["pending", "running", "done", "failed", "rolled_back"]
Phase = Literal["queued", "copying", "indexes", "verifying", "switching", "dropping_source", "done"]
MAX_TRIES = 20
BATCH = 1000
STOP_SECONDS = 5.0  # shutdown waits this long for the copies to stop


class UnknownPlacement(AppError):
    status, code = 422, "unknown_placement"
    detail = "No such placement: a cluster of TENANT_CLUSTERS with one of its TENANT_DATABASES."


class AlreadyPlaced(AppError):
    status, code, detail = 409, "already_placed", "The organization is already there."


class NamespaceTooLong(AppError):
    status, code = 422, "namespace_too_long"
    detail = "The tenant collection's name does not fit a MongoDB namespace in that database."


class OperationNotFound(AppError):
    status, code, detail = 404, "not_found", "Operation not found."


class MoveOp(OrgOperation):
    kind: Literal["move"] = "move"
    source: Placement
    target: Placement
    collection: str


class MoveRecord(Record):
    """A move as `GET /operations/{id}` shows it (kept after the move ends)."""

    operation_id: str = Field(validation_alias=AliasChoices("_id", "operation_id"))
    kind: str = "move"
    organization_id: str
    status: MoveStatus
    phase: Phase = "queued"
    copied: int = 0
    total: int = 0
    error: str | None = None
    source: Placement
    target: Placement
    created_at: StoredTime
    updated_at: StoredTime


class MoveRecords:
    """`moves`: each move's status and checkpoint."""

    def __init__(self, db: Database) -> None:
        self.col: Collection = db["moves"]

    async def ensure_indexes(self) -> None:
        await self.col.create_index("organization_id")

    async def insert(self, op: MoveOp, total: int) -> None:
        now = utcnow()
        record = MoveRecord(
            operation_id=op.op_id, organization_id=op.organization_id, status="pending",
            total=total, source=op.source, target=op.target, created_at=now, updated_at=now,
        )  # fmt: skip
        doc = record.model_dump(exclude={"operation_id"})
        await self.col.update_one({"_id": op.op_id}, {"$setOnInsert": doc}, upsert=True)

    async def get(self, op_id: str) -> MoveRecord | None:
        doc = await self.col.find_one({"_id": op_id})
        return None if doc is None else MoveRecord.model_validate(doc)

    async def set(self, op_id: str, **fields: Any) -> None:
        await self.col.update_one({"_id": op_id}, {"$set": {**fields, "updated_at": utcnow()}})


class Moves:
    """Starts moves, runs them, and finishes or undoes the ones left by a crash."""

    def __init__(
        self,
        *,
        orgs: OrganizationRepository,
        ops: OperationRepository,
        records: MoveRecords,
        tenants: TenantCollections,
        counts: PlacementCounts,
        ctx: OperationContext,
        audit: AuditService,
        batch: int = BATCH,
    ) -> None:
        self.orgs = orgs
        self.ops = ops
        self.records = records
        self.tenants = tenants
        self.counts = counts
        self.ctx = ctx
        self.audit = audit
        self.events: EventHook = ctx.events
        self.batch = batch
        self._tasks: set[asyncio.Task[None]] = set()

    # ---------------------------------------------------------------- the request
    async def start(
        self, org_id: str, target: Placement, *, actor: Actor, meta: RequestMeta
    ) -> str:
        """Record and lock the move, publish `organization.moving`, and start the copy in the
        background; the operation's id. Audited as `org.move`."""
        details = {"cluster": target.cluster, "database": target.database}
        async with self.audit.track(
            "org.move", actor=actor, meta=meta, organization_id=org_id, details=details
        ) as entry:
            op = await self._start(org_id, target, actor)
            entry.details["operation_id"] = op.op_id
        task = asyncio.create_task(self._run_held(op), name=f"move-{op.op_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return op.op_id

    async def _start(self, org_id: str, target: Placement, actor: Actor) -> MoveOp:
        org = await self.orgs.get_active(org_id)
        if org is None:
            raise NotFound()
        if org.pending_op is not None:
            raise OperationInProgress()  # a rename, delete or another move holds it
        source = self.tenants.home(org.placement)
        if target == source:
            raise AlreadyPlaced()
        if not self.tenants.clusters.topology.allows(target, org_id):
            raise UnknownPlacement()
        collection = org.collection_name
        if len(target.database.encode()) + 1 + len(collection.encode()) > MAX_NAMESPACE_BYTES:
            raise NamespaceTooLong()
        op = MoveOp(
            op_id=_op_id(), organization_id=org_id, actor=event_actor(actor),
            source=source, target=target, collection=collection,
        )  # fmt: skip
        lease = self.ctx.settings.operation_lease_seconds
        await self.ops.start(op, owner=self.ctx.owner, lease_seconds=lease)
        total = await self.tenants.estimated_count(source, collection)
        await self.records.insert(op, total)
        if not await self._lock(op, org):
            await self.records.set(op.op_id, status="failed", error="operation_in_progress")
            await self.ops.finish(op.op_id)
            raise OperationInProgress()
        self.ctx.fault("move.after_lock")
        return op

    async def _lock(self, op: MoveOp, read: Organization) -> bool:
        """Take the record for this move, with its `organization.moving` event (conditional on
        the revision `read` has; read again when another write came first)."""
        org: Organization | None = read
        for _ in range(MAX_TRIES):
            if org is None or org.pending_op is not None:
                return False
            event = org_event(
                "organization.moving", org, op.event_actor, extra=_move_data(op, "moving")
            )
            if await self.orgs.lock_with_event(org, op_id=op.op_id, event=event):
                return True
            org = await self.orgs.get_active(op.organization_id)
        return False

    async def _run_held(self, op: MoveOp) -> None:
        """The background copy of a move this process started (a crash leaves it to the
        reconciler; so does a store error)."""
        lease = self.ctx.settings.operation_lease_seconds
        try:
            async with Hold(self.ops, op.op_id, fence=1, lease_seconds=lease) as hold:
                outcome = await self.run(op, hold)
            log.info(
                "move %s: %s", op.op_id, outcome, extra={"organization_id": op.organization_id}
            )
        except OperationLost:
            log.warning("move %s: taken over by another replica", op.op_id)
        except StoreError as exc:
            log.warning("move %s stopped (%s); the reconciler resumes it", op.op_id, exc)
        except Exception:
            log.exception("move %s failed; the reconciler resumes or undoes it", op.op_id)

    async def stop(self) -> None:
        """At shutdown: stop the copies this process runs (their intents stay; the reconciler
        of any replica resumes them when their lease ends)."""
        deadline = asyncio.get_running_loop().time() + STOP_SECONDS
        for task in list(self._tasks):
            left = max(0.0, deadline - asyncio.get_running_loop().time())
            if not await cancel_and_wait(task, within=left):
                log.warning("move task %s still running at shutdown", task.get_name())

    # ---------------------------------------------------------------- the steps
    async def run(self, op: MoveOp, hold: Hold) -> str:
        """Carry the move on from wherever it is; what was done."""
        if op.committed:
            return await self._finish(op, hold)
        org = await self.orgs.get(op.organization_id)
        if org is None or org.pending_op != op.op_id:
            return await self._roll_back(op, hold, org, "the move lost its organization")
        record = await self.records.get(op.op_id)
        resumable = record is not None and record.phase in ("copying", "indexes", "verifying")
        start = record.copied if record is not None and resumable else 0
        source = self.tenants.collection(op.source, op.collection)
        target = self.tenants.collection(op.target, op.collection)
        if start == 0:
            await hold.check()
            # Nothing of this move is there yet, or a copy from before its checkpoint: the
            # target is this organization's name (the slug is claimed), so it is ours to clear.
            await self.tenants.drop(op.target, op.collection)
            await self.tenants.create(op.target, op.collection)
        await self.records.set(op.op_id, status="running", phase="copying", copied=start)

        async def checkpoint(copied: int) -> None:
            await hold.check()
            await self.records.set(op.op_id, copied=copied)
            self.ctx.fault("move.after_batch")

        copied = await copy_documents(
            source, target, start=start, batch=self.batch, checkpoint=checkpoint
        )
        await hold.check()
        await self.records.set(op.op_id, phase="indexes", copied=copied)
        await copy_indexes(source, target)
        self.ctx.fault("move.after_indexes")
        await hold.check()
        await self.records.set(op.op_id, phase="verifying")
        before, after = await fingerprint(source), await fingerprint(target)
        if before != after:
            why = _difference(before.documents, after.documents, before.indexes, after.indexes)
            return await self._roll_back(op, hold, org, f"verification failed: {why}")
        self.ctx.fault("move.after_verify")
        await hold.commit()
        self.ctx.fault("move.after_commit")
        return await self._finish(op, hold)

    async def _finish(self, op: MoveOp, hold: Hold) -> str:
        """After the commit point: switch the record, then drop the source."""
        await self.records.set(op.op_id, status="running", phase="switching")
        for _ in range(MAX_TRIES):
            org = await self.orgs.get(op.organization_id)
            if org is None or org.pending_op != op.op_id:
                break  # switched already (by whoever held the move before)
            after = org.model_copy(update={"placement": op.target, "pending_op": None})
            event = org_event(
                "organization.moved", after, op.event_actor, extra=_move_data(op, "moved")
            )
            await hold.check()
            if await self._release(org, op, {"placement": op.target.model_dump()}, event):
                await self.counts.add(op.target, +1)
                await self.counts.add(op.source, -1)
                break
        else:
            raise OperationLost()
        self.ctx.fault("move.after_switch")
        org = await self.orgs.get(op.organization_id)
        if org is not None and self.tenants.home(org.placement) != op.target:
            # Only a record edited by hand gets here: never drop what it still points at.
            log.error("move %s: the record is not at its target; source kept", op.op_id)
        elif await self._taken(op):
            log.warning("move %s: %s is another organization's now; kept", op.op_id, op.collection)
        else:
            await self.records.set(op.op_id, phase="dropping_source")
            await hold.check()
            await self.tenants.drop(op.source, op.collection)
        self.ctx.fault("move.after_drop")
        await self.records.set(op.op_id, status="done", phase="done")
        await hold.finish()
        await self.events.emit(
            DomainEvent("organization.moved", op.organization_id, _move_data(op, "moved"),
                        op_id=op.op_id)
        )  # fmt: skip
        return "move_completed"

    async def _roll_back(self, op: MoveOp, hold: Hold, org: Organization | None, why: str) -> str:
        """Before the commit point: drop what was copied (never the source), unlock the record
        with an `organization.moved` that says it stayed, and record why."""
        await hold.check()
        held_by_another = org is not None and org.pending_op not in (None, op.op_id)
        at_target = org is not None and self.tenants.home(org.placement) == op.target
        if not held_by_another and not at_target and not await self._taken(op):
            await self.tenants.drop(op.target, op.collection)
        if org is not None and org.pending_op == op.op_id:
            for _ in range(MAX_TRIES):
                current = await self.orgs.get(op.organization_id)
                if current is None or current.pending_op != op.op_id:
                    break
                event = org_event(
                    "organization.moved", current.model_copy(update={"pending_op": None}),
                    op.event_actor, extra=_move_data(op, "rolled_back"),
                )  # fmt: skip
                if await self._release(current, op, {}, event):
                    break
        await self.records.set(op.op_id, status="rolled_back", error=why)
        await hold.finish()
        log.warning("move %s rolled back: %s", op.op_id, why)
        return "move_rolled_back"

    async def _taken(self, op: MoveOp) -> bool:
        """Whether another organization's record names this move's collection now (this one
        was renamed or deleted since, and the name given again): then neither copy is this
        move's to drop."""
        return await self.orgs.other_uses_collection(op.collection, org_id=op.organization_id)

    async def _release(self, org: Organization, op: MoveOp, fields: Doc, event: Any) -> bool:
        fields = {**fields, "updated_at": utcnow()}
        return await self.orgs.release(org, op_id=op.op_id, fields=fields, event=event)

    # ---------------------------------------------------------------- the reconciler's part
    async def reconcile(self, stored: Operation, hold: Hold) -> str:
        """Resume (or, when it cannot be, roll back) a move left by a crash."""
        return await self.run(stored.as_kind(MoveOp), hold)

    # ---------------------------------------------------------------- reads
    async def get(self, op_id: str) -> MoveRecord:
        record = await self.records.get(op_id)
        if record is None:
            raise OperationNotFound()
        return record


def _op_id() -> str:
    return uuid.uuid4().hex


def _move_data(op: MoveOp, outcome: str) -> dict[str, Any]:
    return {
        "operation_id": op.op_id,
        "from": op.source.model_dump(),
        "to": op.target.model_dump(),
        "outcome": outcome,
    }


def _difference(
    documents: int,
    copied: int,
    indexes: tuple[tuple[str, str], ...],
    made: tuple[tuple[str, str], ...],
) -> str:
    if documents != copied:
        return f"{documents} documents at the source, {copied} at the target"
    if indexes != made:
        return "the indexes differ"
    return "the content differs (was the tenant written to during the move?)"
