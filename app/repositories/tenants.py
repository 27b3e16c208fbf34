"""DDL on tenant collections: create, rename, drop. Every call is idempotent.

Collection names reaching this module were built by `app.names` from a stored slug, and are
checked once more here: request text never chooses a collection.
"""

from __future__ import annotations

from pymongo.errors import CollectionInvalid, OperationFailure

from app.names import assert_safe_collection
from app.repositories.base import Database

NAMESPACE_NOT_FOUND = 26
NAMESPACE_EXISTS = 48


class TenantCollections:
    """The per-organization `org_<slug>` collections."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def exists(self, name: str) -> bool:
        assert_safe_collection(name)
        # No server-side filter: nx-27017 ignores it, and the membership test below is exact.
        return name in await self.db.list_collection_names()

    async def create(self, name: str) -> None:
        """Create the collection; one that already exists is left as it is."""
        assert_safe_collection(name)
        try:
            await self.db.create_collection(name)
        except CollectionInvalid:
            pass  # already there: a retried step
        except OperationFailure as exc:
            if exc.code != NAMESPACE_EXISTS:
                raise

    async def rename(self, old: str, new: str) -> None:
        """renameCollection old -> new (metadata only); a no-op when it has already happened."""
        assert_safe_collection(old)
        assert_safe_collection(new)
        try:
            await self.db[old].rename(new)
            return
        except OperationFailure:
            # Already renamed by an earlier attempt, or never created? Decide from what exists.
            # (Checked only on this rare path: listing collections is O(tenants).)
            old_exists, new_exists = await self.exists(old), await self.exists(new)
            if new_exists and not old_exists:
                return
            if not new_exists and not old_exists:
                await self.create(new)
                return
            raise

    async def drop(self, name: str) -> None:
        assert_safe_collection(name)
        await self.db.drop_collection(name)
