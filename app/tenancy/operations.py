"""The `operations` collection: the recorded intent of every multi-step change.

A request writes its intent here, with a lease and a fencing token (`fence`), before its first
side effect, and deletes it after its last. Whatever is left with an expired lease belongs to a
process that died or stalled; the reconciler takes it over with `find_one_and_update`, which
increments `fence`. From then on every renewal or commit of the previous holder, being
conditional on the fence it knew, fails: a process that lost its lease cannot act through it.

`state` is `started` until the operation's commit point (`committed`): the reconciler undoes a
started operation and rolls a committed one forward.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TypeVar

from pydantic import AliasChoices, ConfigDict, Field, ValidationError
from pymongo import ReturnDocument

from app.kit.store import Collection, Database, Doc, Record, epoch_ms, utcnow

STARTED, COMMITTED = "started", "committed"
log = logging.getLogger("orgsvc.reconciler")

Kind = TypeVar("Kind", bound="Operation")


class Operation(Record):
    """An intent as stored. Each kind (a feature's own subclass, with a `kind` literal and the
    fields its steps need) reads its fields through `as_kind`."""

    # The fields of a kind travel through this base, so none is dropped before `as_kind`.
    model_config = ConfigDict(extra="allow")

    op_id: str = Field(validation_alias=AliasChoices("_id", "op_id"))
    kind: str
    organization_id: str
    state: str | None = None  # None: recorded by a release before commit points
    fence: int = 1

    @property
    def committed(self) -> bool:
        return self.state == COMMITTED

    def as_kind(self, cls: type[Kind]) -> Kind:
        """This operation as its kind's record (a ValidationError if it is not one)."""
        return cls.model_validate(self.model_dump())

    def as_one_of(self, kinds: Mapping[str, type[Operation]]) -> Operation | None:
        """This operation as the record of its kind among `kinds`; None (logged) when it is not
        one of them or its fields do not read as that kind (the reconciler leaves it)."""
        cls = kinds.get(self.kind)
        if cls is not None:
            try:
                return self.as_kind(cls)
            except ValidationError:
                pass
        log.error("malformed %s operation %s; leaving it", self.kind, self.op_id)
        return None

    def to_doc(self) -> Doc:
        """The intent's own fields (the repository adds the lease, fence and state)."""
        fields = self.model_dump(exclude={"op_id", "state", "fence"})
        return {"_id": self.op_id, **fields}


class OperationRepository:
    """Intent records with leases and fencing tokens."""

    def __init__(self, db: Database) -> None:
        self.col: Collection = db["operations"]

    async def ensure_indexes(self) -> None:
        await self.col.create_index("lease_until")
        await self.col.create_index("organization_id")

    async def start(self, op: Operation, *, owner: str, lease_seconds: float) -> int:
        """Record the intent; returns its first fencing token."""
        await self.col.insert_one(
            {
                **op.to_doc(),
                "owner": owner,
                "fence": 1,
                "state": STARTED,
                "created_at": utcnow(),
                "lease_until": epoch_ms(lease_seconds),
            }
        )
        return 1

    async def renew(self, op_id: str, *, fence: int, lease_seconds: float) -> bool:
        """Extend the lease; False when the fence moved on (someone took the operation over)."""
        res = await self.col.update_one(
            {"_id": op_id, "fence": fence}, {"$set": {"lease_until": epoch_ms(lease_seconds)}}
        )
        return res.matched_count == 1

    async def commit(self, op_id: str, *, fence: int, lease_seconds: float) -> bool:
        """Pass the commit point (from here on the operation is rolled forward, never undone);
        False when the fence moved on."""
        res = await self.col.update_one(
            {"_id": op_id, "fence": fence},
            {"$set": {"state": COMMITTED, "lease_until": epoch_ms(lease_seconds)}},
        )
        return res.matched_count == 1

    async def finish(self, op_id: str, *, fence: int | None = None) -> bool:
        """Delete the intent (only while `fence` still holds, when given)."""
        query: Doc = {"_id": op_id} if fence is None else {"_id": op_id, "fence": fence}
        res = await self.col.delete_one(query)
        return res.deleted_count == 1

    async def exists(self, op_id: str) -> bool:
        return await self.col.find_one({"_id": op_id}, {"_id": 1}) is not None

    async def expired(self, *, limit: int = 100) -> list[str]:
        """The ids of operations whose lease has expired, oldest lease first."""
        cursor = self.col.find({"lease_until": {"$lt": epoch_ms()}}, {"_id": 1})
        docs = await cursor.sort("lease_until", 1).limit(limit).to_list(length=limit)
        return [str(doc["_id"]) for doc in docs]

    async def take_over(self, op_id: str, *, owner: str, lease_seconds: float) -> Operation | None:
        """Claim an expired operation for this process, with a new fencing token; None when
        someone else holds it."""
        doc = await self.col.find_one_and_update(
            {"_id": op_id, "lease_until": {"$lt": epoch_ms()}},
            {
                "$set": {"owner": owner, "lease_until": epoch_ms(lease_seconds)},
                "$inc": {"fence": 1},
            },
            return_document=ReturnDocument.AFTER,
        )
        return None if doc is None else Operation.model_validate(doc)
