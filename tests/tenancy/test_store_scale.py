"""The embedded store's cost per operation does not grow with the number of collections (one per
organization): the launcher's patch 3 in app/kit/nxserver.py.

No timings (speed is measured in bench/, figure 11). What is counted is the work the store does
for one operation, which is deterministic: the virtual-machine instructions SQLite runs (its
progress handler, called at every instruction) and the calls into nx-27017, neosqlite and the
launcher's patch (a profile hook). Reading them needs the store in this process: the
launcher's patched nx-27017 serves the wire protocol from a thread here, and PyMongo talks to
it over loopback as to the launched process. Each operation is counted with no other
collection, then with `EXTRA` tenant collections (one document and its `_id` index each, as
the service makes them); the least of a few runs is kept (a PyMongo heartbeat may land in
one). Without the patch a `find_one` by `_id` runs about 11 SQLite instructions per other
collection (a scan of `sqlite_master`) and a Python call per other collection.

The same operations' answers are checked on the launched store (`nx_client`), patched in its
own process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import pymongo
import pytest
from pymongo import AsyncMongoClient, ReturnDocument

from app.kit.db import free_port
from app.kit.nxserver import patch
from app.tenancy.collections import TenantCollections
from app.tenancy.placement import Clusters, Topology
from tests.support.stores import nx_code_roots, nx_in_thread

EXTRA = 1500  # tenant collections added between the two counts
RUNS = 3  # of each operation at each size; the least is kept
# With `EXTRA` collections, an operation may cost at most this much more than with none.
SLACK_RATIO, SLACK_ABS = 1.25, 30

pytestmark = pytest.mark.realstore

Work = dict[str, int]


@dataclass
class InProcessStore:
    """The launcher's patched nx-27017, serving from a thread of this process, with counters."""

    handler: Any
    url: str
    roots: tuple[str, ...]  # the files whose calls count: nx-27017's, neosqlite's, the launcher
    counting: bool = False
    vm_steps: int = 0
    calls: int = 0

    def _vm_step(self) -> int:
        if self.counting:
            self.vm_steps += 1
        return 0  # go on

    def _profile(self, frame: FrameType, event: str, arg: object) -> None:
        if self.counting and event == "call" and frame.f_code.co_filename.startswith(self.roots):
            self.calls += 1

    @contextmanager
    def count(self) -> Iterator[Work]:
        work: Work = {}
        self.vm_steps = self.calls = 0
        self.counting = True
        try:
            yield work
        finally:
            self.counting = False
        work.update(sqlite_instructions=self.vm_steps, store_python_calls=self.calls)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessStore]:
    patch()  # the launcher's patches, in this process (idempotent)
    from nx_27017.handler import NeoSQLiteHandler  # (a development extra)

    path = tmp_path_factory.mktemp("scale") / "orgsvc.db"
    handler = NeoSQLiteHandler(db_path=str(path))
    port = free_port()
    found = InProcessStore(
        handler, f"mongodb://127.0.0.1:{port}/?directConnection=true", nx_code_roots()
    )
    handler.conn.db.set_progress_handler(found._vm_step, 1)
    try:
        with nx_in_thread(handler, port, name="nx-27017-in-process", profile=found._profile):
            yield found
    finally:
        handler.conn.db.set_progress_handler(None, 1)


@pytest.fixture(scope="module")
def counted(store: InProcessStore) -> dict[str, tuple[Work, Work]]:
    """Each operation's work with no other collection and with `EXTRA` of them."""
    return asyncio.run(_count_both(store))


async def _count_both(store: InProcessStore) -> dict[str, tuple[Work, Work]]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(store.url, tz_aware=True)
    try:
        db = client["scale"]
        org = db["organizations"]
        await org.insert_one({"_id": "o1", "slug": "acme", "n": 0})
        await org.create_index("slug", unique=True)
        await db["org_acme"].insert_one({"_id": 1})
        few = await _each(store, client)
        for start in range(0, EXTRA, 100):
            await asyncio.gather(
                *(db[f"org_t{i:05d}"].insert_one({"_id": i}) for i in range(start, start + 100))
            )
        assert len(await db.list_collection_names()) == EXTRA + 2 + 1  # + `ops`
        many = await _each(store, client)
    finally:
        await client.close()
    return {name: (few[name], many[name]) for name in few}


async def _each(store: InProcessStore, client: AsyncMongoClient[Any]) -> dict[str, Work]:
    db = client["scale"]
    org, ops = db["organizations"], db["ops"]
    tenants = TenantCollections(Clusters(db.client, Topology.single(db.name), None))
    here = tenants.home(None)
    seq = iter(range(10**6))

    async def insert_delete() -> None:
        n = next(seq)
        await ops.insert_one({"_id": n})
        await ops.delete_one({"_id": n})

    operations: dict[str, Callable[[], Awaitable[Any]]] = {
        "find_one by _id": lambda: org.find_one({"_id": "o1"}),
        "find_one by an indexed field": lambda: org.find_one({"slug": "acme"}),
        "find_one in a missing collection": lambda: db["org_missing"].find_one({"_id": 1}),
        "update_one": lambda: org.update_one({"_id": "o1"}, {"$inc": {"n": 1}}),
        "find_one_and_update": lambda: org.find_one_and_update(
            {"_id": "o1"}, {"$inc": {"n": 1}}, return_document=ReturnDocument.AFTER
        ),
        "insert_one + delete_one": insert_delete,
        "TenantCollections.exists (there)": lambda: tenants.exists(here, "org_acme"),
        "TenantCollections.exists (not there)": lambda: tenants.exists(here, "org_missing"),
        "TenantCollections.create (already there)": lambda: tenants.create(here, "org_acme"),
    }
    found: dict[str, Work] = {}
    for name, op in operations.items():
        await op()  # warm: statement caches, the collection objects
        runs = []
        for _ in range(RUNS):
            with store.count() as work:
                await op()
            runs.append(work)
        found[name] = {k: min(run[k] for run in runs) for k in runs[0]}
    return found


OPERATIONS = [
    "find_one by _id",
    "find_one by an indexed field",
    "find_one in a missing collection",
    "update_one",
    "find_one_and_update",
    "insert_one + delete_one",
    "TenantCollections.exists (there)",
    "TenantCollections.exists (not there)",
    "TenantCollections.create (already there)",
]


@pytest.mark.parametrize("operation", OPERATIONS)
def test_the_store_does_as_much_work_with_many_collections_as_with_none(
    counted: dict[str, tuple[Work, Work]], operation: str
) -> None:
    few, many = counted[operation]
    assert few["sqlite_instructions"] > 0 and few["store_python_calls"] > 0, few  # counted
    for what in ("sqlite_instructions", "store_python_calls"):
        assert many[what] <= few[what] * SLACK_RATIO + SLACK_ABS, (
            f"{operation}: {many[what]} {what} with {EXTRA} other collections, "
            f"{few[what]} with none"
        )


# ------------------------------------------------------ the same answers, on the launched store


@pytest.fixture
async def scale_db(nx_client: AsyncMongoClient[Any]) -> AsyncIterator[Any]:
    db = nx_client["scale"]
    await db["org_acme"].insert_one({"_id": 1, "slug": "acme"})
    await db["org_zeta"].insert_one({"_id": 1})
    yield db


async def test_list_collections_by_name_answers_for_that_name_only(scale_db: Any) -> None:
    assert await scale_db.list_collection_names(filter={"name": "org_acme"}) == ["org_acme"]
    assert await scale_db.list_collection_names(filter={"name": "org_nope"}) == []
    assert sorted(await scale_db.list_collection_names()) == ["org_acme", "org_zeta"]
    # neosqlite's own tables are no collections, asked for by name or not
    assert await scale_db.list_collection_names(filter={"name": "sqlite_master"}) == []
    # any other filter is nx-27017's own (which ignores it): everything
    both = await scale_db.list_collection_names(filter={"name": {"$in": ["org_acme"]}})
    assert sorted(both) == ["org_acme", "org_zeta"]


async def test_tenant_collections_exist_and_create_as_before(scale_db: Any) -> None:
    tenants = TenantCollections(Clusters(scale_db.client, Topology.single(scale_db.name), None))
    here = tenants.home(None)
    assert await tenants.exists(here, "org_acme")
    assert not await tenants.exists(here, "org_new")
    assert await tenants.create(here, "org_new") is True
    assert await tenants.create(here, "org_new") is False  # already there: left as it is
    assert await tenants.exists(here, "org_new")
    await tenants.drop(here, "org_new")
    assert not await tenants.exists(here, "org_new")


async def test_finds_inserts_and_deletes_see_the_collections_that_exist(scale_db: Any) -> None:
    missing = scale_db["org_missing"]
    assert await missing.find_one({"_id": 1}) is None
    assert "org_missing" not in await scale_db.list_collection_names()  # not made by reading
    # (a delete does make it: nx-27017's own behaviour, with or without the patch)
    assert (await missing.delete_one({"_id": 1})).deleted_count == 0
    await missing.insert_one({"_id": 1, "v": "x"})
    assert await missing.find_one({"_id": 1}) == {"_id": 1, "v": "x"}
    assert (await missing.delete_one({"_id": 1})).deleted_count == 1
    await scale_db.drop_collection("org_missing")
    assert await missing.find_one({}) is None  # dropped: nothing read from a stale table
    assert (await missing.delete_many({})).deleted_count == 0


async def test_indexes_are_found_listed_and_dropped_as_before(scale_db: Any) -> None:
    col = scale_db["org_acme"]
    await col.create_index("slug", unique=True)
    await col.create_index([("a", 1), ("b", 1)])
    await col.insert_one({"_id": 2, "slug": "beta", "a": 1, "b": 2})
    assert await col.find_one({"slug": "beta"}) == {"_id": 2, "slug": "beta", "a": 1, "b": 2}
    with pytest.raises(pymongo.errors.DuplicateKeyError):
        await col.insert_one({"_id": 3, "slug": "beta"})
    assert await _index_keys(col) == [[("_id", 1)], [("slug", 1)], [("a", 1), ("b", 1)]]
    await col.drop_index("slug_1")
    assert await _index_keys(col) == [[("_id", 1)], [("a", 1), ("b", 1)]]
    await col.insert_one({"_id": 3, "slug": "beta"})  # no longer unique
    assert await col.count_documents({"slug": "beta"}) == 2


async def _index_keys(col: Any) -> list[list[tuple[str, int]]]:
    """The collection's indexes, oldest first, by their keys (nx-27017 names them its own way)."""
    return [list(index["key"].items()) async for index in await col.list_indexes()]


def test_the_patch_is_idempotent() -> None:
    from neosqlite import connection
    from nx_27017.handler import NeoSQLiteHandler

    patch()
    first = (connection.Connection.connect, NeoSQLiteHandler.handle_command)
    patch()
    assert (connection.Connection.connect, NeoSQLiteHandler.handle_command) == first
    assert getattr(connection.Connection.list_collection_names, "_orgsvc_patched", False)
