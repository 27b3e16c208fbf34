"""DDL on tenant collections: create, rename, drop. Every call is idempotent.

Collection names reaching this module were built by `app.tenancy.names` from a stored slug, and are
checked once more here: request text never chooses a collection. Each call names the placement
(`app.tenancy.placement`) it acts in, which comes from the organization's record or intent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from pymongo.errors import CollectionInvalid, OperationFailure

from app.kit.store import Collection, Database
from app.tenancy.names import assert_safe_collection
from app.tenancy.placement import Clusters, Placement

NAMESPACE_EXISTS = 48
NAMESPACE_NOT_FOUND = 26


@dataclass(frozen=True, slots=True)
class CollectionStats:
    """What the database itself says of a collection (no document is read)."""

    documents: int
    storage_bytes: int
    indexes: int


class TenantCollections:
    """The per-organization `org_<slug>` collections."""

    def __init__(self, clusters: Clusters) -> None:
        self.clusters = clusters
        self.db = clusters.db(clusters.topology.default)  # where v1 kept every tenant

    def home(self, placement: Placement | None) -> Placement:
        """Where a record's (or an intent's) tenant collection lives: its placement, or for one
        written before placement, where v1 kept every tenant."""
        return placement if placement is not None else self.clusters.topology.default

    def collection(self, where: Placement, name: str) -> Collection:
        """The tenant collection itself (a move copies it)."""
        assert_safe_collection(name)
        return self._db(where)[name]

    def _db(self, where: Placement) -> Database:
        return self.clusters.db(where)

    async def exists(self, where: Placement, name: str) -> bool:
        """One `listCollections` filtered by the name, which MongoDB looks up in its catalog by
        that name, and the embedded store too through its launcher (`app/kit/nxserver.py`,
        patch 3; nx-27017 itself would list every collection): the cost does not grow with the
        number of organizations. The membership check stays for a store that ignores filters."""
        assert_safe_collection(name)
        return name in await self._db(where).list_collection_names(filter={"name": name})

    async def create(self, where: Placement, name: str) -> bool:
        """Create the collection; False (and left as it is) when it already exists.

        PyMongo asks first (`check_exists`: the same filtered `listCollections` as `exists`, as
        cheap), and that check stays: mongos, recent mongod releases (SERVER-60064) and
        nx-27017 answer `create` of an existing collection with success, so NamespaceExists
        alone would not tell a new collection from an orphan."""
        assert_safe_collection(name)
        try:
            await self._db(where).create_collection(name)
        except CollectionInvalid:
            return False  # already there
        except OperationFailure as exc:
            if exc.code != NAMESPACE_EXISTS:
                raise
            return False
        return True

    async def estimated_count(self, where: Placement, name: str) -> int:
        assert_safe_collection(name)
        return await self._db(where)[name].estimated_document_count()

    async def stats(self, where: Placement, name: str) -> CollectionStats:
        """The collection's document count, storage size and index count from the database's
        own statistics (`$collStats`), not from its documents. MongoDB gives `nindexes` there;
        nx-27017 leaves it out, so the index list (metadata, too) counts them. A missing
        collection is all zeros."""
        assert_safe_collection(name)
        col = self._db(where)[name]
        try:
            found = await (await col.aggregate([{"$collStats": {"storageStats": {}}}])).to_list(1)
        except OperationFailure as exc:
            if exc.code != NAMESPACE_NOT_FOUND:
                raise
            found = []
        storage = found[0].get("storageStats", {}) if found else {}
        indexes = storage.get("nindexes")
        if indexes is None:
            indexes = len(await (await col.list_indexes()).to_list(None)) if found else 0
        return CollectionStats(
            documents=int(storage.get("count", 0)),
            storage_bytes=int(storage.get("storageSize", 0)),
            indexes=int(indexes),
        )

    async def accepts_unicode_names(self) -> bool:
        """Whether this store can name a collection with non-ASCII letters (MongoDB can;
        a store that cannot gets a clear 422 for such names instead of a failed create)."""
        probe = f"_probe_\u00e9_{uuid.uuid4().hex[:8]}"  # a name nobody else uses
        try:
            await self.db.create_collection(probe)
        except OperationFailure:
            return False
        await self.db.drop_collection(probe)
        return True

    async def is_empty(self, where: Placement, name: str) -> bool:
        assert_safe_collection(name)
        return await self._db(where)[name].find_one({}, {"_id": 1}) is None

    async def rename(self, where: Placement, old: str, new: str) -> None:
        """renameCollection old -> new (metadata only); a no-op when it has already happened."""
        assert_safe_collection(old)
        assert_safe_collection(new)
        # Look before renaming: a retried step must not touch a source that is already gone.
        if await self._settle(where, old, new):
            return
        try:
            await self._db(where)[old].rename(new)
        except OperationFailure:
            if not await self._settle(where, old, new):  # someone else finished it meanwhile?
                raise

    async def _settle(self, where: Placement, old: str, new: str) -> bool:
        """True when nothing is left to rename (and an absent tenant collection is made)."""
        if await self.exists(where, old):
            return False
        if not await self.exists(where, new):
            await self.create(where, new)  # the tenant never had a collection: give it an empty one
        return True

    async def drop(self, where: Placement, name: str) -> None:
        """Drop the collection, and with it its database when that is the organization's own
        (a dedicated database holds nothing else)."""
        assert_safe_collection(name)
        await self._db(where).drop_collection(name)
        if where.dedicated:
            await self.clusters.clients[where.cluster].drop_database(where.database)
