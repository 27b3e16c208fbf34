"""A collection's rename on the embedded store is a metadata change, as in MongoDB: the
launcher's patch 6 in app/kit/nxserver.py (neosqlite rebuilt every index of the collection to
rename it, O(n) in its documents: bench figure 4).

Two kinds of tests. On the launched store (`nx_client`, nx-27017 in its per-database mode
through the launcher, one SQLite file per database), what a client sees after a rename
(documents, indexes listed, used and enforced, drop_index, rename back, the old name free), and
in the database's SQLite file, read by a connection of this process opened before the rename
(so it also shows that another connection sees the new schema): the indexes' names, root pages,
query plans, integrity, and the pages the rename wrote. In this process, on neosqlite patched
by the launcher: the work of a rename counted (SQLite's virtual-machine instructions, which grow
with every row an index rebuild reads, and the statements run), the schema it leaves compared
with neosqlite's own rename, and its atomicity. No timings (speed is measured in bench/, figure
4): what is counted is deterministic.
"""

from __future__ import annotations

import inspect
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError, OperationFailure

from app.kit.db import EmbeddedMongo
from app.kit.nxserver import patch

Client = AsyncMongoClient[Any]

pytestmark = pytest.mark.realstore

# With the patch a rename's work is the same whatever the size (the schema is what it works on);
# the slack only absorbs a different schema's size. Without it, an index rebuild reads every row.
SLACK_RATIO, SLACK_ABS = 1.25, 200  # SQLite instructions, in process
SLACK_PAGES = 8  # pages written, on the launched store
INDEX_DDL = re.compile(r"\s*(CREATE\s+(UNIQUE\s+)?INDEX|DROP\s+INDEX)\b", re.IGNORECASE)


async def _index_keys(col: Any) -> list[tuple[list[tuple[str, int]], bool]]:
    """The collection's indexes, oldest first: their keys and whether they are unique."""
    found = [index async for index in await col.list_indexes()]
    return [(list(index["key"].items()), bool(index.get("unique"))) for index in found]


@contextmanager
def _sqlite_file(server: EmbeddedMongo, database: str) -> Iterator[sqlite3.Connection]:
    """A connection of this process to the SQLite file of one of the store's databases (beside
    nx-27017's own), closed again (the next test drops the database)."""
    path = server.db_dir / f"{database}.db"
    assert path.is_file(), path
    file = sqlite3.connect(path, isolation_level=None)
    try:
        yield file
    finally:
        file.close()


def _indexes(file: sqlite3.Connection, table: str) -> dict[str, tuple[int, str]]:
    """The table's indexes in SQLite's schema as SQLite itself lists them (`pragma_index_list`,
    from its in-memory schema: stale if the schema cookie were not bumped), by the key part of
    their name (`idx_<table>_<key>` -> `<key>`): (root page, text without the index's and the
    table's names)."""
    listed = [row[0] for row in file.execute("SELECT name FROM pragma_index_list(?)", (table,))]
    found = {}
    for name in listed:
        rootpage, sql = file.execute(
            "SELECT rootpage, sql FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)
        ).fetchone()
        assert name.startswith(f"idx_{table}_"), name
        text = sql.replace(name, "<name>", 1)
        for quoted in (f' ON "{table}"(', f" ON {table}("):
            text = text.replace(quoted, " ON <table>(", 1)
        found[name[len(f"idx_{table}_") :]] = (rootpage, text)
    return found


def _plan(file: sqlite3.Connection, table: str, key: str, value: object) -> str:
    """SQLite's plan for an equality on the first column of the index `idx_<table>_<key>` (its
    own expression, taken from its text), in one line."""
    (sql,) = file.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (f"idx_{table}_{key}",)
    ).fetchone()
    rows = file.execute(
        f'EXPLAIN QUERY PLAN SELECT id FROM "{table}" WHERE {_first_column(sql)} = ?', (value,)
    ).fetchall()
    return " | ".join(str(row[-1]) for row in rows)


def _first_column(sql: str) -> str:
    """The first column (an expression) of `CREATE INDEX <name> ON <table>(<columns>) ...`."""
    start = sql.index("(", sql.index(" ON ")) + 1
    depth = 0
    for end in range(start, len(sql)):
        if sql[end] == "(":
            depth += 1
        elif sql[end] in ",)" and depth == 0:
            return sql[start:end]
        elif sql[end] == ")":
            depth -= 1
    raise AssertionError(sql)


def _ok(file: sqlite3.Connection) -> None:
    assert file.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def _pages_written_by(file: sqlite3.Connection) -> int:
    """Frames in the file's write-ahead log since `_empty_log`: the pages written meanwhile."""
    busy, frames, _ = file.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0
    return int(frames)


def _empty_log(file: sqlite3.Connection) -> None:
    busy, frames, done = file.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert (busy, frames, done) == (0, 0, 0), (busy, frames, done)


# ------------------------------------------------------------------------- the launched store

DOCS = 20_000


async def test_a_renamed_collection_keeps_its_documents_and_its_indexes(
    nx_client: Client, nx_server: EmbeddedMongo
) -> None:
    db = nx_client["db_a"]
    col = db["org_old"]
    await col.insert_many([{"_id": i, "slug": f"s{i}", "kind": i % 7, "n": i} for i in range(DOCS)])
    await col.create_index("slug", unique=True)
    await col.create_index([("kind", 1), ("n", 1)])
    listed = await _index_keys(col)
    assert listed == [
        ([("_id", 1)], False),
        ([("slug", 1)], True),
        ([("kind", 1), ("n", 1)], False),
    ]

    with _sqlite_file(nx_server, "db_a") as file:  # opened before the rename, kept open
        before = _indexes(file, "org_old")
        assert set(before) == {"id", "slug", "kind_n"}
        await col.rename("org_new")
        # This connection sees the new schema (the cookie changed): the same indexes (the same
        # expressions, root pages, uniqueness) under the new names, none under the old ones.
        assert _indexes(file, "org_new") == before
        assert file.execute("SELECT name FROM pragma_index_list('org_old')").fetchall() == []
        assert "USING INDEX idx_org_new_slug" in _plan(file, "org_new", "slug", "s5")
        assert "USING INDEX idx_org_new_kind_n" in _plan(file, "org_new", "kind_n", 3)
        keys = file.execute("SELECT index_name, keys_json FROM neosqlite_index_keys").fetchall()
        assert sorted(keys) == [
            ("idx_org_new_kind_n", '["kind", "n"]'),
            ("idx_org_new_slug", '["slug"]'),
        ]
        _ok(file)

    moved = db["org_new"]
    assert await db.list_collection_names() == ["org_new"]
    assert await moved.count_documents({}) == DOCS
    assert await _index_keys(moved) == listed
    assert await moved.find_one({"slug": "s12345"}) == {
        "_id": 12345,
        "slug": "s12345",
        "kind": 4,
        "n": 12345,
    }
    assert [d["_id"] async for d in moved.find({"kind": 3, "n": {"$lt": 30}})] == [3, 10, 17, 24]
    plan = await moved.find({"slug": "s5"}).explain()  # nx-27017's explain: SQLite's plan
    assert "idx_org_new_slug" in str(plan["queryPlanner"]["winningPlan"]), plan
    with pytest.raises(DuplicateKeyError):
        await moved.insert_one({"_id": "dup", "slug": "s7"})
    with pytest.raises(DuplicateKeyError):
        await moved.insert_one({"_id": 7})

    # An index of the renamed collection drops by its name; the collection renames back. (Not
    # the compound one: nx-27017 drops no compound index by its name, renamed or not.)
    await moved.drop_index("slug_1")
    assert await _index_keys(moved) == [listed[0], listed[2]]
    await moved.insert_one({"_id": "dup", "slug": "s7"})  # no longer unique
    with _sqlite_file(nx_server, "db_a") as file:
        left = _indexes(file, "org_new")  # (the drop moved a root page: SQLite's auto-vacuum)
        assert set(left) == {"id", "kind_n"}
        await moved.rename("org_old")
        assert _indexes(file, "org_old") == left
        assert "USING INDEX idx_org_old_kind_n" in _plan(file, "org_old", "kind_n", 3)
        _ok(file)
    back = db["org_old"]
    assert await _index_keys(back) == [listed[0], listed[2]]
    assert await back.count_documents({}) == DOCS + 1
    with pytest.raises(DuplicateKeyError):
        await back.insert_one({"_id": 7})


async def test_after_a_rename_the_old_name_is_free_and_the_new_one_drops(
    nx_client: Client, nx_server: EmbeddedMongo
) -> None:
    """The old name makes a new collection, with an index set of its own; the renamed collection
    drops with its indexes; another database's collection of the same name is left alone."""
    a, b = nx_client["db_a"], nx_client["db_b"]
    for database in (a, b):
        await database["org_old"].insert_many([{"_id": i, "slug": f"s{i}"} for i in range(200)])
        await database["org_old"].create_index("slug", unique=True)
    await a["org_old"].rename("org_new")

    fresh = a["org_old"]
    await fresh.insert_many([{"_id": 1, "slug": "same"}, {"_id": 2, "slug": "same"}])
    assert await _index_keys(fresh) == [([("_id", 1)], False)]
    renamed = a["org_new"]
    assert await _index_keys(renamed) == [([("_id", 1)], False), ([("slug", 1)], True)]
    with _sqlite_file(nx_server, "db_a") as file:
        old, new = _indexes(file, "org_old"), _indexes(file, "org_new")
        assert set(old) == {"id"} and set(new) == {"id", "slug"}
        assert old["id"][0] not in {rootpage for rootpage, _ in new.values()}  # its own b-tree

    await a.drop_collection("org_new")
    assert await a.list_collection_names() == ["org_old"]
    with _sqlite_file(nx_server, "db_a") as file:
        assert file.execute("SELECT name FROM pragma_index_list('org_new')").fetchall() == []
        left = file.execute("SELECT name FROM sqlite_master WHERE name LIKE 'idx_org_new%'")
        assert left.fetchall() == []
        _ok(file)
    kept = b["org_old"]
    assert await _index_keys(kept) == [([("_id", 1)], False), ([("slug", 1)], True)]
    with pytest.raises(DuplicateKeyError):
        await kept.insert_one({"slug": "s3"})


@pytest.mark.parametrize(("first", "second"), [("org_a", "org_a_b"), ("org_a_b", "org_a")])
async def test_a_rename_to_a_name_that_extends_the_old_one_and_back(
    nx_client: Client, nx_server: EmbeddedMongo, first: str, second: str
) -> None:
    """`idx_org_a_b_x` starts with `idx_org_a_`: neosqlite would take it for an old name (the
    patch parks such indexes under a name of its own first). The key `b_x` makes the other
    direction's case: `idx_org_a_b_x` of `org_a` starts with `idx_org_a_b_`."""
    db = nx_client["db_a"]
    await db[first].insert_many([{"_id": i, "slug": f"s{i}", "b_x": i} for i in range(100)])
    await db[first].create_index("slug", unique=True)
    await db[first].create_index("b_x")
    listed = await _index_keys(db[first])
    for source, target in ((first, second), (second, first), (first, second)):
        await db[source].rename(target)
        assert await db.list_collection_names() == [target]
        assert await _index_keys(db[target]) == listed
        with pytest.raises(DuplicateKeyError):
            await db[target].insert_one({"slug": "s1"})
        with _sqlite_file(nx_server, "db_a") as file:
            assert set(_indexes(file, target)) == {"id", "slug", "b_x"}
            assert "USING INDEX" in _plan(file, target, "b_x", 5)
            _ok(file)


async def test_a_rename_writes_as_many_pages_for_20000_documents_as_for_10(
    nx_client: Client, nx_server: EmbeddedMongo
) -> None:
    """The pages a rename writes (the write-ahead log's frames), counted from this process: a
    metadata change writes the schema's pages; rebuilding the indexes wrote all of theirs."""
    db = nx_client["db_a"]
    for name, size in (("org_small", 10), ("org_large", DOCS)):
        await db[name].insert_many([{"_id": i, "slug": f"s{i}", "n": i} for i in range(size)])
        await db[name].create_index("slug", unique=True)
        await db[name].create_index([("n", 1), ("slug", 1)])
    written = {}
    with _sqlite_file(nx_server, "db_a") as file:
        for name in ("org_small", "org_large"):
            _empty_log(file)
            await db[name].rename(name + "_renamed")
            written[name] = _pages_written_by(file)
        _ok(file)
    assert written["org_small"] > 0
    assert written["org_large"] <= written["org_small"] + SLACK_PAGES, written
    assert await db["org_large_renamed"].count_documents({}) == DOCS


async def test_a_failed_rename_changes_nothing(nx_client: Client, nx_server: EmbeddedMongo) -> None:
    """Onto an existing collection (neosqlite's refusal), and onto a name whose index names are
    taken: `org_q`'s index on `b_x` would be `idx_org_q_b_x`, already `org_q_b`'s index on `x`
    (neosqlite failed there after renaming the table; the rename is now one transaction)."""
    db = nx_client["db_a"]
    await db["org_z"].insert_many([{"_id": i, "b_x": i} for i in range(50)])
    await db["org_z"].create_index("b_x", unique=True)
    await db["org_q_b"].insert_one({"_id": 1, "x": 1})
    await db["org_q_b"].create_index("x")
    await db["org_y"].insert_one({"_id": 1})
    with _sqlite_file(nx_server, "db_a") as file:
        schema = file.execute("SELECT * FROM sqlite_master ORDER BY name").fetchall()
        for target in ("org_y", "org_q"):
            with pytest.raises(OperationFailure, match="already exists"):
                await db["org_z"].rename(target)
            assert file.execute("SELECT * FROM sqlite_master ORDER BY name").fetchall() == schema
        _ok(file)
    assert set(await db.list_collection_names()) == {"org_z", "org_q_b", "org_y"}
    assert await db["org_z"].count_documents({}) == 50
    assert await _index_keys(db["org_z"]) == [([("_id", 1)], False), ([("b_x", 1)], True)]
    with pytest.raises(DuplicateKeyError):
        await db["org_z"].insert_one({"b_x": 3})


# -------------------------------------------------------------------------- in this process


@dataclass
class Counted:
    instructions: int  # SQLite virtual-machine instructions run by the rename
    index_ddl: list[str]  # CREATE INDEX / DROP INDEX statements it ran


def _neosqlite(path: Path) -> Any:
    patch()  # the launcher's patches, in this process (idempotent)
    import neosqlite

    return neosqlite.Connection(str(path))


def _filled(connection: Any, name: str, size: int, *, text: bool = False) -> Any:
    """A collection of `size` documents with a unique index, a compound index, an index whose
    key makes `idx_<name>_b_x`, and (`text`) a full-text index."""
    col = connection[name]
    batch = 10_000
    for start in range(0, size, batch):
        docs = [
            {"slug": f"s{i}", "kind": i % 7, "n": i, "b_x": i, "body": f"word{i % 5} text"}
            for i in range(start, min(size, start + batch))
        ]
        col.insert_many(docs)
    col.create_index("slug", unique=True)
    col.create_index([("kind", 1), ("n", 1)])
    col.create_index("b_x", sparse=True)
    if text:
        col.create_index("body", fts=True)
    return col


def _count(connection: Any, rename: Any) -> Counted:
    db = connection.db
    steps = [0]
    statements: list[str] = []

    def step() -> int:
        steps[0] += 1
        return 0  # go on

    db.set_progress_handler(step, 1)
    db.set_trace_callback(statements.append)
    try:
        rename()
    finally:
        db.set_progress_handler(None, 1)
        db.set_trace_callback(None)
    return Counted(steps[0], [s for s in statements if INDEX_DDL.match(s)])


def _schema(connection: Any) -> list[tuple[str, str, str, str | None]]:
    rows = connection.db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")
    return sorted(rows.fetchall(), key=repr)


def test_the_work_of_a_rename_does_not_grow_with_the_documents(tmp_path: Path) -> None:
    """100,000 documents and 10, the same indexes (`_id`'s, a unique one, a compound one, one
    more), in one file: the rename of either runs as many SQLite instructions, and no index is
    created or dropped. (Without the patch: about 12 instructions per document and index.)"""
    connection = _neosqlite(tmp_path / "work.db")
    small = _filled(connection, "org_small", 10)
    large = _filled(connection, "org_large", 100_000)
    counted = {
        "small": _count(connection, lambda: small.rename("org_small_renamed")),
        "large": _count(connection, lambda: large.rename("org_large_renamed")),
    }
    for found in counted.values():
        assert found.index_ddl == [], found.index_ddl
    few, many = counted["small"].instructions, counted["large"].instructions
    assert few > 0
    assert many <= few * SLACK_RATIO + SLACK_ABS, counted
    assert large.name == "org_large_renamed"
    assert large.count_documents({}) == 100_000
    assert large.find_one({"slug": "s99999"})["n"] == 99_999
    assert connection.db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


@pytest.mark.parametrize(
    ("old", "new"), [("org_a", "org_z"), ("org_a", "org_a_b"), ("org_a_b", "org_a")]
)
def test_the_rename_leaves_the_schema_neosqlite_s_rename_leaves(
    tmp_path: Path, old: str, new: str
) -> None:
    """The same collection (with a full-text index: its FTS table and triggers move too) renamed
    by the patched rename and by neosqlite's own: the same schema (every table, index and
    trigger, by name and text), the same index keys, the same answers; the patched one without
    rebuilding an index. A second connection, open before, sees the new names."""
    from neosqlite.collection import Collection

    neosqlite_rename = inspect.unwrap(Collection.rename)
    assert neosqlite_rename.__module__ == "neosqlite.collection"

    results = {}
    for which in ("patched", "neosqlite"):
        connection = _neosqlite(tmp_path / f"{which}.db")
        col = _filled(connection, old, 500, text=True)
        other = sqlite3.connect(tmp_path / f"{which}.db", isolation_level=None)
        assert other.execute("SELECT count(*) FROM pragma_index_list(?)", (old,)).fetchone() == (4,)
        if which == "patched":
            found = _count(connection, lambda col=col: col.rename(new))
            assert found.index_ddl == []
        else:
            neosqlite_rename(col, new)
        keys = connection.db.execute("SELECT * FROM neosqlite_index_keys ORDER BY 1").fetchall()
        results[which] = (
            _schema(connection),
            keys,
            col.list_indexes(),
            col.list_indexes(as_keys=True),
            col.index_information(),
            [d["n"] for d in col.find({"$text": {"$search": "word3"}}, limit=3, sort=[("n", 1)])],
            col.find_one({"b_x": 7})["slug"],
        )
        assert {
            row[0] for row in other.execute("SELECT name FROM pragma_index_list(?)", (new,))
        } == {f"idx_{new}_{key}" for key in ("id", "slug", "kind_n", "b_x")}
        assert other.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        with pytest.raises(sqlite3.IntegrityError):
            other.execute(
                f"INSERT INTO {new}(_id, data) VALUES ('x', json('{{\"slug\": \"s1\"}}'))"
            )
        other.close()
    assert results["patched"] == results["neosqlite"]
    schema = results["patched"][0]
    indexes = sorted(name for kind, name, table, _ in schema if kind == "index" and table == new)
    assert indexes == sorted(f"idx_{new}_{key}" for key in ("id", "slug", "kind_n", "b_x"))
    assert not [row for row in schema if "orgsvc" in row[1]]  # no parked name left


def test_a_rename_that_fails_at_its_last_step_leaves_the_old_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error after every statement of the rename (neosqlite's last step raises) rolls the
    whole rename back: the table, its indexes, their keys, its FTS table and triggers keep their
    old names, and the collection object its old name. (neosqlite's rename, statement by
    statement, left the new names.)"""
    from neosqlite.collection import Collection

    connection = _neosqlite(tmp_path / "failed.db")
    col = _filled(connection, "org_a", 300, text=True)
    before = _schema(connection)

    def fail(self: Any) -> None:
        raise RuntimeError("stopped before the commit")

    monkeypatch.setattr(Collection, "_invalidate_ttl_cache", fail)
    with pytest.raises(RuntimeError, match="before the commit"):
        col.rename("org_b_c")
    monkeypatch.undo()
    assert _schema(connection) == before
    assert col.name == "org_a"
    assert connection.db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert col.count_documents({}) == 300
    with pytest.raises(Exception, match="UNIQUE"):
        col.insert_one({"slug": "s1"})
    col.rename("org_b_c")  # and it renames afterwards
    assert col.find_one({"slug": "s299"})["n"] == 299


def test_the_rename_patch_is_idempotent_and_sits_beneath_patch_1() -> None:
    from neosqlite.collection import Collection

    patch()
    first = Collection.rename
    patch()
    assert Collection.rename is first
    assert getattr(first, "_orgsvc_patched", False)  # patch 1: the cache moves with a rename
    beneath = first.__wrapped__
    assert getattr(beneath, "_orgsvc_metadata_rename", False)  # patch 6, called by patch 1
    assert beneath.__wrapped__.__module__ == "neosqlite.collection"
