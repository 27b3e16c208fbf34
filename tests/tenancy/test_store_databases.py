"""The embedded store keeps databases apart as MongoDB does: the launcher's patch 5 in
app/kit/nxserver.py (nx-27017's per-database mode, one SQLite file per database, with its
`renameCollection` sent to the right database and its cost per operation independent of the
number of databases).

Most tests run on the launched store (`nx_client`, emptied before each test: every database is
dropped). The cost test counts, as tests/tenancy/test_store_scale.py does for collections, the
calls into nx-27017, neosqlite and the launcher for one operation with a few databases and with
`EXTRA_DATABASES` more, on the launcher's patched nx-27017 serving from a thread of this process.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError, OperationFailure

from app.kit.db import EmbeddedMongo, free_port
from app.kit.nxserver import SINGLE_NAMESPACE_REFUSED, patch, shares_one_namespace
from tests.support.processes import ROOT
from tests.support.stores import nx_code_roots, nx_in_thread

Client = AsyncMongoClient[Any]


async def _names(client: Client, database: str) -> set[str]:
    return set(await client[database].list_collection_names())


async def _index_keys(col: Any) -> list[tuple[list[tuple[str, int]], bool]]:
    """The collection's indexes, oldest first: their keys and whether they are unique."""
    found = [index async for index in await col.list_indexes()]
    return [(list(index["key"].items()), bool(index.get("unique"))) for index in found]


# ------------------------------------------------------------------ one namespace per database


async def test_a_collection_of_one_database_is_not_in_another(nx_client: Client) -> None:
    a, b = nx_client["db_a"]["org_x"], nx_client["db_b"]["org_x"]
    await a.insert_one({"_id": 1, "in": "a"})
    assert await b.find_one({"_id": 1}) is None
    assert await b.find_one() is None
    await b.insert_one({"_id": 1, "in": "b"})  # the same _id: another collection
    await b.insert_one({"_id": 2, "in": "b"})
    assert [d async for d in a.find()] == [{"_id": 1, "in": "a"}]
    assert [d async for d in b.find().sort("_id")] == [{"_id": 1, "in": "b"}, {"_id": 2, "in": "b"}]
    await a.update_one({"_id": 1}, {"$set": {"n": 1}})
    assert await b.find_one({"_id": 1}) == {"_id": 1, "in": "b"}
    assert (await b.delete_many({})).deleted_count == 2
    assert await a.count_documents({}) == 1


async def test_list_collections_lists_that_database_only(nx_client: Client) -> None:
    await nx_client["db_a"]["org_x"].insert_one({"_id": 1})
    await nx_client["db_a"]["org_y"].insert_one({"_id": 1})
    await nx_client["db_b"].create_collection("org_x")
    await nx_client["db_b"].create_collection("org_z")
    assert await _names(nx_client, "db_a") == {"org_x", "org_y"}
    assert await _names(nx_client, "db_b") == {"org_x", "org_z"}
    assert await _names(nx_client, "db_c") == set()
    # by name (the launcher's patch 3 answers these for the one name), in its database only
    db_b = nx_client["db_b"]
    assert await db_b.list_collection_names(filter={"name": "org_y"}) == []
    assert await db_b.list_collection_names(filter={"name": "org_z"}) == ["org_z"]


async def test_a_drop_in_one_database_leaves_the_other(nx_client: Client) -> None:
    await nx_client["db_a"]["org_x"].insert_one({"_id": 1})
    await nx_client["db_b"]["org_x"].insert_one({"_id": 2})
    await nx_client["db_a"].drop_collection("org_x")
    assert await _names(nx_client, "db_a") == set()
    assert await _names(nx_client, "db_b") == {"org_x"}
    assert await nx_client["db_b"]["org_x"].find_one() == {"_id": 2}


async def test_drop_database_drops_that_database_only_with_its_indexes(
    nx_client: Client, nx_server: EmbeddedMongo
) -> None:
    for name in ("db_a", "db_b"):
        col = nx_client[name]["org_x"]
        await col.insert_many([{"_id": i, "slug": f"s{i}"} for i in range(3)])
        await col.create_index("slug", unique=True)
        await nx_client[name]["org_y"].insert_one({"_id": 1})
    assert (nx_server.db_dir / "db_a.db").is_file()  # one SQLite file per database

    await nx_client.drop_database("db_a")
    assert not (nx_server.db_dir / "db_a.db").exists()  # (reading db_a would make it, empty)
    assert await _names(nx_client, "db_a") == set()
    assert await _names(nx_client, "db_b") == {"org_x", "org_y"}
    kept = nx_client["db_b"]["org_x"]
    assert await kept.count_documents({}) == 3
    assert await _index_keys(kept) == [([("_id", 1)], False), ([("slug", 1)], True)]
    with pytest.raises(DuplicateKeyError):
        await kept.insert_one({"_id": 9, "slug": "s0"})

    again = nx_client["db_a"]["org_x"]  # made again, empty and without the dropped index
    await again.insert_many([{"_id": 1, "slug": "same"}, {"_id": 2, "slug": "same"}])
    assert await _index_keys(again) == [([("_id", 1)], False)]


async def test_list_databases_lists_each_database_with_collections(nx_client: Client) -> None:
    await nx_client["db_a"]["org_x"].insert_one({"_id": 1})
    await nx_client["db_b"].create_collection("org_x")
    assert await nx_client["db_read_only"]["org_x"].find_one() is None  # exists in no way
    names = await nx_client.list_database_names()
    assert {"db_a", "db_b"} <= set(names)
    assert "db_read_only" not in names
    full = {d["name"]: d async for d in await nx_client.list_databases()}
    assert full["db_a"]["empty"] is False and full["db_b"]["empty"] is False

    await nx_client.drop_database("db_a")
    names = await nx_client.list_database_names()
    assert "db_a" not in names and "db_b" in names


async def test_unique_indexes_are_per_database(nx_client: Client) -> None:
    a, b = nx_client["db_a"]["org_x"], nx_client["db_b"]["org_x"]
    await a.create_index("email", unique=True)
    assert await _index_keys(b) == [([("_id", 1)], False)]  # not made in the other database
    await b.insert_many([{"email": "x@y.z"}, {"email": "x@y.z"}])  # no unique index here
    await a.insert_one({"email": "x@y.z"})  # its own index, which b's documents are not in
    with pytest.raises(DuplicateKeyError):
        await a.insert_one({"email": "x@y.z"})
    await b.create_index("email")
    await a.drop_index("email_1")
    assert await _index_keys(a) == [([("_id", 1)], False)]
    assert await _index_keys(b) == [([("_id", 1)], False), ([("email", 1)], False)]


async def test_unicode_collection_names_in_two_databases(nx_client: Client) -> None:
    """The launcher's patch 2 holds in every database."""
    a, b = nx_client["db_a"], nx_client["db_b"]
    await a["org_société"].insert_one({"_id": 1, "in": "a"})
    await b["org_société"].insert_one({"_id": 1, "in": "b"})
    await a["org_société"].create_index("in", unique=True)
    await a["org_société"].rename("org_東京")
    assert await _names(nx_client, "db_a") == {"org_東京"}
    assert await _names(nx_client, "db_b") == {"org_société"}
    assert await a["org_東京"].find_one() == {"_id": 1, "in": "a"}
    assert await b["org_société"].find_one() == {"_id": 1, "in": "b"}
    assert ([("in", 1)], True) in await _index_keys(a["org_東京"])


# ---------------------------------------------------------------------------- renameCollection


async def test_a_rename_happens_in_its_own_database(nx_client: Client) -> None:
    """Drivers send renameCollection to `admin`: it is carried out in the source's database (it
    was lost there before), metadata only, indexes kept; the other database's same-named
    collection is left alone; the old name is really empty (patch 1 still holds)."""
    a, b = nx_client["db_a"], nx_client["db_b"]
    await a["org_old"].insert_many([{"_id": i, "slug": f"s{i}"} for i in range(20)])
    await a["org_old"].create_index("slug", unique=True)
    await b["org_old"].insert_one({"_id": "b"})

    await a["org_old"].rename("org_new")
    assert await _names(nx_client, "db_a") == {"org_new"}
    assert await _names(nx_client, "db_b") == {"org_old"}
    moved = a["org_new"]
    assert await moved.count_documents({}) == 20
    assert await _index_keys(moved) == [([("_id", 1)], False), ([("slug", 1)], True)]
    with pytest.raises(DuplicateKeyError):
        await moved.insert_one({"slug": "s3"})
    assert await a["org_old"].find_one() is None  # (find: a count would make the collection)
    assert await b["org_old"].find_one() == {"_id": "b"}

    await a.drop_collection("org_old")  # drops nothing: the renamed collection stays
    assert await moved.count_documents({}) == 20


async def test_a_rename_onto_an_existing_collection_fails_as_before(nx_client: Client) -> None:
    a = nx_client["db_a"]
    await a["org_x"].insert_one({"_id": 1})
    await a["org_y"].insert_one({"_id": 2})
    with pytest.raises(OperationFailure, match="already exists"):
        await a["org_x"].rename("org_y")
    assert await a["org_x"].find_one() == {"_id": 1}
    assert await a["org_y"].find_one() == {"_id": 2}


async def test_a_rename_into_another_database_is_refused_like_mongos(nx_client: Client) -> None:
    """MongoDB's answer when the two databases' primaries are on different shards; nothing is
    changed on either side."""
    await nx_client["db_a"]["org_x"].insert_one({"_id": 1})
    await nx_client["db_b"].create_collection("org_other")
    with pytest.raises(OperationFailure) as refused:
        await nx_client.admin.command("renameCollection", "db_a.org_x", to="db_b.org_x")
    assert refused.value.code == 125, refused.value.details
    assert refused.value.details is not None
    assert refused.value.details["codeName"] == "CommandFailed"
    assert "same shard" in str(refused.value)
    assert await _names(nx_client, "db_a") == {"org_x"}
    assert await _names(nx_client, "db_b") == {"org_other"}
    assert await nx_client["db_a"]["org_x"].find_one() == {"_id": 1}


@pytest.mark.parametrize(
    ("source", "target", "which"),
    [("org_x", "db_a.org_y", "source"), ("db_a.org_x", "db_a.", "target"), (".x", "a.y", "source")],
)
async def test_a_rename_between_invalid_namespaces_is_refused(
    nx_client: Client, source: str, target: str, which: str
) -> None:
    await nx_client["db_a"]["org_x"].insert_one({"_id": 1})
    with pytest.raises(OperationFailure, match=f"Invalid {which} namespace") as refused:
        await nx_client.admin.command("renameCollection", source, to=target)
    assert refused.value.code == 73
    assert await _names(nx_client, "db_a") == {"org_x"}


# -------------------------------------------------------------------------------- transactions


async def test_a_transaction_stays_in_its_database(nx_client: Client) -> None:
    """As nx-27017 answers without the patch (which finds a session's transactions through its
    session id instead of going through every session of every database): a transaction is
    committed or aborted in its database, and cannot reach into another."""
    a, b = nx_client["db_a"]["org_x"], nx_client["db_b"]["org_x"]
    async with nx_client.start_session() as session:
        await session.start_transaction()
        await a.insert_one({"_id": 1}, session=session)
        with pytest.raises(OperationFailure, match="Cross-database transactions"):
            await b.insert_one({"_id": 1}, session=session)
        await session.abort_transaction()
        await session.start_transaction()
        await a.insert_one({"_id": 2}, session=session)
        await session.commit_transaction()
    assert [d async for d in a.find()] == [{"_id": 2}]
    assert await b.find_one() is None


# ------------------------------------------------------------------------------ change streams


async def test_a_change_stream_sees_its_own_database_only(nx_client: Client) -> None:
    a, b = nx_client["db_a"]["watched"], nx_client["db_b"]["watched"]
    await a.insert_one({"_id": 0})
    await b.insert_one({"_id": 0})
    async with await a.watch() as on_a, await b.watch() as on_b:
        assert await on_a.try_next() is None and await on_b.try_next() is None
        await b.insert_one({"_id": "in b"})
        await a.insert_one({"_id": "in a"})
        await b.update_one({"_id": 0}, {"$set": {"x": 1}})
        seen_a = await _changes(on_a, 1)
        seen_b = await _changes(on_b, 2)
        assert await on_a.try_next() is None  # nothing more: b's two changes are not a's
    assert [(c["operationType"], c["documentKey"]["_id"]) for c in seen_a] == [("insert", "in a")]
    assert seen_a[0]["ns"] == {"db": "db_a", "coll": "watched"}
    assert [(c["operationType"], c["documentKey"]["_id"]) for c in seen_b] == [
        ("insert", "in b"),
        ("update", "0"),  # (nx-27017 gives an update's _id as a string)
    ]


async def _changes(stream: Any, wanted: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for _ in range(200):
        change = await stream.try_next()
        if change is not None:
            found.append(change)
            if len(found) == wanted:
                return found
        else:
            await asyncio.sleep(0.01)
    raise AssertionError(f"{len(found)} changes of {wanted}: {found}")


# ---------------------------------------------------------------- the launcher's single-file mode


@pytest.mark.parametrize(
    ("argv", "refused"),
    [
        (["--db", "/tmp/x.db"], True),
        ([], True),  # nx-27017's default: a file nx-27017.db
        (["--db", "memory"], True),
        (["--data-dir", "/tmp/x"], False),
        (["--data-dir", "memory"], False),
        (["--db", "/tmp/x.db", "--single-db-compat"], False),  # asked for by name
        (["--db", "/", "--port", "1"], False),  # a directory: nx-27017's per-database mode
        (["--stop"], False),
        (["--help"], False),
    ],
)
def test_the_launcher_refuses_one_namespace_for_every_database(
    argv: list[str], refused: bool
) -> None:
    assert shares_one_namespace(argv) is refused


@pytest.mark.realstore
def test_the_launcher_exits_with_the_reason_in_single_file_mode(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "app.kit.nxserver", "--host", "127.0.0.1"]
    command += ["--port", str(free_port()), "--db", str(tmp_path / "x.db")]
    command += ["--pid-file", str(tmp_path / "pid"), "--log-file", str(tmp_path / "log")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert SINGLE_NAMESPACE_REFUSED in done.stderr
    assert not (tmp_path / "x.db").exists()


def test_the_database_patch_is_idempotent() -> None:
    from nx_27017 import handler

    patch()
    first = (handler.NeoSQLiteHandler.handle_command, handler.NeoSQLiteHandler.__init__)
    patch()
    assert (handler.NeoSQLiteHandler.handle_command, handler.NeoSQLiteHandler.__init__) == first
    assert handler._MAX_OPEN_DBS >= 100


# ----------------------------------------------- the cost of an operation, with many databases

EXTRA_DATABASES = 150  # databases added between the two counts (nx-27017 kept 100 open)
RUNS = 3  # of each operation at each size; the least is kept
SLACK_RATIO, SLACK_ABS = 1.25, 30  # as in test_store_scale.py
FEW = 3  # other databases at the first count


@dataclass
class InProcessStore:
    """The launcher's patched nx-27017 in its per-database mode, serving from a thread of this
    process, counting the calls into nx-27017, neosqlite and the launcher."""

    handler: Any
    url: str
    roots: tuple[str, ...]
    counting: bool = False
    calls: int = 0

    def _profile(self, frame: FrameType, event: str, arg: object) -> None:
        if self.counting and event == "call" and frame.f_code.co_filename.startswith(self.roots):
            self.calls += 1

    @contextmanager
    def count(self) -> Iterator[list[int]]:
        found: list[int] = []
        self.calls = 0
        self.counting = True
        try:
            yield found
        finally:
            self.counting = False
        found.append(self.calls)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessStore]:
    patch()  # the launcher's patches, in this process (idempotent)
    from nx_27017.handler import NeoSQLiteHandler  # (a development extra)

    handler = NeoSQLiteHandler(data_dir=str(tmp_path_factory.mktemp("databases")))
    port = free_port()
    found = InProcessStore(
        handler, f"mongodb://127.0.0.1:{port}/?directConnection=true", nx_code_roots()
    )
    try:
        with nx_in_thread(handler, port, name="nx-27017-databases", profile=found._profile):
            yield found
    finally:
        handler.close_all()


@pytest.fixture(scope="module")
def counted(store: InProcessStore) -> dict[str, tuple[int, int]]:
    """Each operation's calls with `FEW` other databases and with `EXTRA_DATABASES` more."""
    return asyncio.run(_count_both(store))


async def _count_both(store: InProcessStore) -> dict[str, tuple[int, int]]:
    client: Client = AsyncMongoClient(store.url, tz_aware=True)
    try:
        home = client["home"]
        await home["organizations"].insert_one({"_id": "o1", "slug": "acme", "n": 0})
        await home["organizations"].create_index("slug", unique=True)
        others = [f"d{i:04d}" for i in range(FEW + EXTRA_DATABASES)]
        for name in others[:FEW]:
            await client[name]["org_t"].insert_one({"_id": 1})  # (a session of this client)
        few = await _each(store, client, others[:FEW])
        for name in others[FEW:]:
            await client[name]["org_t"].insert_one({"_id": 1})
        assert len(await client.list_database_names()) == 1 + len(others) + 1  # + admin
        many = await _each(store, client, others)
    finally:
        await client.close()
    return {name: (few[name], many[name]) for name in few}


async def _each(store: InProcessStore, client: Client, others: list[str]) -> dict[str, int]:
    home = client["home"]
    org, ops = home["organizations"], home["ops"]
    seq = iter(range(10**6))
    turn = iter(range(10**6))

    async def insert_delete() -> None:
        n = next(seq)
        await ops.insert_one({"_id": n})
        await ops.delete_one({"_id": n})

    async def next_database() -> Any:
        """A find in the database that was used the longest time ago."""
        return await client[others[next(turn) % len(others)]]["org_t"].find_one({"_id": 1})

    operations: dict[str, Callable[[], Awaitable[Any]]] = {
        "find_one by _id": lambda: org.find_one({"_id": "o1"}),
        "find_one by an indexed field": lambda: org.find_one({"slug": "acme"}),
        "update_one": lambda: org.update_one({"_id": "o1"}, {"$inc": {"n": 1}}),
        "insert_one + delete_one": insert_delete,
        "listCollections by name": lambda: home.list_collection_names(filter={"name": "ops"}),
        "find_one in the least recently used database": next_database,
    }
    found: dict[str, int] = {}
    for name, op in operations.items():
        await op()  # warm: statement caches, the collection objects
        runs = []
        for _ in range(RUNS):
            with store.count() as calls:
                await op()
            runs.extend(calls)
        found[name] = min(runs)
    return found


@pytest.mark.realstore
@pytest.mark.parametrize(
    "operation",
    [
        "find_one by _id",
        "find_one by an indexed field",
        "update_one",
        "insert_one + delete_one",
        "listCollections by name",
        "find_one in the least recently used database",
    ],
)
def test_the_store_does_as_much_work_with_many_databases_as_with_few(
    counted: dict[str, tuple[int, int]], operation: str
) -> None:
    few, many = counted[operation]
    assert few > 0, few  # counted
    assert many <= few * SLACK_RATIO + SLACK_ABS, (
        f"{operation}: {many} calls into the store with {FEW + EXTRA_DATABASES} other databases, "
        f"{few} with {FEW}"
    )
