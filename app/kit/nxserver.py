"""Launch the embedded `nx-27017` store, with fixes for six of its gaps.

1. nx-27017 0.8 serves `renameCollection` by renaming its cached collection object in place, but
   leaves that object cached under the *old* name too: afterwards, `org_old` still reads, and a
   `drop` of it would drop, the renamed `org_new` table. Real MongoDB has no such cache. We move
   the cache entry with the rename so the embedded store behaves like MongoDB here
   (`tests/organizations/test_real_store.py::test_old_name_is_really_empty_after_rename` pins it).

2. Its SQLite layer (neosqlite 1.17, `neosqlite.sql_utils.quote_identifier`, which every table,
   index and trigger name passes through before it is spliced into SQL unquoted) allows only
   `[A-Za-z_][A-Za-z0-9_]*`, so every command on a collection such as `org_société_générale`
   (create, insert, createIndexes, renameCollection, drop) fails, although MongoDB and our
   contract accept Unicode names. We also let through names made of those characters plus
   non-ASCII letters and digits (`str.isalnum`). That is still one safe, unquoted SQLite
   identifier: SQLite treats every byte >= 0x80 as an identifier character and has no non-ASCII
   keyword. ASCII names are checked exactly as before; `$`, `.`, `-`, spaces, quotes and the
   like stay refused. Caveat kept from SQLite: identifiers ignore ASCII case only, so `org_é`
   and `org_É` are two collections (as in MongoDB) but `org_é` and `ORG_é` are one (slugs are
   casefolded, so the service never makes both). Change streams on such a collection stay empty
   (neosqlite checks those names separately; the service does not watch tenant collections).
   (`tests/tenancy/test_unicode_names.py` pins it.)

3. Its cost per operation grows with the number of collections in the store. Every `find` and
   `insert` asks whether the collection exists with `coll_name in db.list_collection_names()`
   (`nx_27017.handler.NeoSQLiteHandler.handle_command` and `handle_insert`), which reads every
   collection name out of `sqlite_master` and filters them in Python; a `find` on any field
   but `_id` lists the collection's indexes (`neosqlite.collection.index_manager.IndexManager
   .list_indexes`, through the query builder's `_field_has_index`) and `delete_one`/`delete_many`
   look the table up (`neosqlite.collection.query_engine.crud_operations`), both by a query on
   `sqlite_master`, which SQLite can only scan (it has no index on the schema table); and
   `listCollections` ignores its filter, so PyMongo's `create_collection` (which asks first)
   and the service's `TenantCollections.exists` list every collection. With one table and one
   index per organization, a `find_one` by `_id` took 0.7 ms with no other collections, 2.1 ms
   with 1,000 and 7 ms with 3,000. Real MongoDB has no such cost: it finds a collection, its
   indexes, or a `listCollections` filtered by name, in its catalog by name. We answer the same
   questions from SQLite's in-memory schema, looked up by name, instead of scanning it:
   `list_collection_names()` returns a read-only sequence whose `in` asks SQLite about that one
   name (`pragma_table_info`; the same exclusions as the listing: `sqlite_*` and neosqlite's
   own tables), while iterating it lists every name as before (read once, at first use); the
   two `sqlite_master` queries by table name above (and those of `drop_index` and of the
   query optimizer, three per `count`) are rewritten, on the SQLite connections neosqlite
   opens, to `pragma_table_info` / `pragma_index_list` (same columns, same rows, in the same
   order; the optimizer's now sees only its own table's indexes, where its `LIKE` also took in
   any other table's whose name it matched); and a `listCollections` whose filter is exactly
   `{"name": <string>}` is answered for that one name. Differences left: SQLite matches table
   names ignoring ASCII case, so those lookups now do too (as `update`, `count` and
   `aggregate` already did: one SQLite table serves both spellings, see 2.), and a view would
   count as a collection (nx-27017 makes none). Still linear in SQLite, which rewrites and
   rereads its schema table: DDL (create, drop, rename) and an aggregation that goes through
   temporary tables (a `count` does). (`tests/tenancy/test_store_scale.py` pins it: SQLite's
   work per operation with 1,500 other collections.)

4. Change streams (neosqlite's `ChangeStream`) install one set of SQLite triggers per collection
   name, counted per connection, and create them only for the first stream. Dropping the
   collection drops its triggers but not the count (nx-27017 keeps a tracker per database and
   collection, never closed, and in file mode every database shares one connection): a stream
   opened after a drop and re-creation answers every `getMore` at once and never reports a
   change. A cache invalidated by that stream would serve stale entries. We create the triggers
   again whenever they are missing (`tests/auth/test_auth_cache.py` pins it).

5. Its single-file mode (`--db FILE`) keeps every database in one SQLite namespace:
   `db_a.org_x` is `db_b.org_x`, `listCollections` lists every database's collections and
   `dropDatabase` drops them all. MongoDB keeps databases apart, and the service places tenant
   collections in several databases of one store and moves them between databases. nx-27017's
   per-database mode (`--data-dir DIR`: one SQLite file `DIR/<database>.db` per database, made
   on first use, with its own connection, lock, indexes and change-stream triggers;
   `dropDatabase` deletes the file) keeps them apart, and is what `EmbeddedMongo` runs; this
   launcher refuses the single-file mode unless `--single-db-compat` asks for it by name. We fix
   what the per-database mode gets wrong. (a) Drivers send `renameCollection` to `admin` with
   whole namespaces, and nx-27017 renamed in the database the command was sent to, whose file
   has no such collection: the rename was silently lost. We send it to its source's database,
   where it runs as in the single-file mode (metadata only; patch 1 holds). A rename into
   another database is refused with mongos's error for two databases whose primaries are on
   different shards (`CommandFailed`, code 125: each database here is a file of its own, so it
   would be a copy, as on a single mongod); the service moves a tenant between databases by
   copying it itself, which works on every deployment. (b) Every command with a session id
   looked for a transaction of that session in another database by going through every session
   nx-27017 keeps, one per session id and database written, so its cost grew with the number of
   databases (a session's database is part of its key: a driver's session touches them all).
   We keep, per session id, the databases in which it began a transaction, and look there
   only (same refusal of a transaction spanning two databases). (c) It kept 100 databases open
   and closed the least recently used to open another (reopening one costs about 2 ms, and the
   close does not wait for a command using it): we keep up to 1,000 (about 0.2 MB and 3 file
   descriptors each; the launcher raises its soft limit on open files to fit, or keeps fewer).
   (d) `listDatabases` listed every file, also those made by merely reading a database: as in
   MongoDB, a database without collections is not listed (`admin` is). Caveats: database names
   are nx-27017's `[A-Za-z0-9][A-Za-z0-9_-]{0,63}`; reading a database leaves an empty file;
   past 1,000 databases in use at once, an operation may pay a reopen; a store written in the
   single-file mode is not read (`EmbeddedMongo` keeps its databases in a directory beside it).
   Patch 4's case (two databases on one connection) no longer arises in this mode.
   (`tests/tenancy/test_store_databases.py` pins it.)

6. Its rename (neosqlite's `Collection.rename`) renames the table in O(1) (`ALTER TABLE ...
   RENAME`), but then renames each of the collection's indexes, `idx_<old>_<key>` to
   `idx_<new>_<key>`, by dropping it and creating it again (SQLite has no `ALTER INDEX ...
   RENAME`), which reads every document: O(n) in the collection's size (bench figure 4: 100,000
   documents took 29 times as long as 10). In MongoDB, `renameCollection` within a database is
   a metadata change. An index's name is metadata in SQLite too: its entry in the schema table
   (`name`, and the name in its `CREATE INDEX` text); its b-tree (`rootpage`) does not hold it.
   We rename those entries in place, as SQLite's documentation describes for schema changes
   that leave the stored content alone (lang_altertable.html, "Making other kinds of table
   schema changes"): in a transaction, `PRAGMA writable_schema`, `UPDATE sqlite_master` of the
   name and of the name in the text (nothing else: same `tbl_name`, `rootpage`, index
   expression), `PRAGMA schema_version` one higher (every connection to the file, this one
   included, reloads its schema before its next statement), `writable_schema` off; then we
   check that SQLite's reloaded schema has exactly the new names. neosqlite's rename then runs
   unchanged in the same transaction (the table, its FTS tables and triggers, as before) and
   finds no index left to rebuild. Index names that would still look like the old name's
   (`org_a` to `org_a_b`: `idx_org_a_b_x` starts with `idx_org_a_`, so neosqlite would rename
   it again) are parked under a name of ours first and given their final name after it.
   neosqlite's key table (`neosqlite_index_keys`) follows the names, and the planner's
   statistics of the old names (`sqlite_stat1`/`sqlite_stat4`, if any) go as `DROP INDEX`
   dropped them. The whole rename (table, indexes, FTS tables, triggers) is now one
   transaction: an error or a crash leaves the old names or the new ones, never a mix
   (neosqlite's ran statement by statement, so a failing index creation could leave the table
   renamed without that index). Where the rewrite does not apply (an index whose text is not
   `CREATE [UNIQUE] INDEX <name> ...`, a new name taken by another object, a SQLite that
   refuses `writable_schema`, as with `SQLITE_DBCONFIG_DEFENSIVE`), nothing is rewritten and
   neosqlite rebuilds the indexes as before (in O(n), but now in one transaction). The patch
   sits beneath patch 1 (whose cache move then happens only once the rename is committed) and
   marks itself `_orgsvc_metadata_rename`, as patch 1 already marks the same method
   `_orgsvc_patched`. (`tests/tenancy/test_store_rename.py` pins it: no index is created or
   dropped, the SQLite instructions run and the pages written do not grow with the documents,
   the schema left is neosqlite's, and a failed rename changes nothing. An unchanged `rootpage`
   would prove nothing: a rebuilt index mostly gets its old root page back from the freelist.)

Every patch is idempotent. Run as `python -m app.kit.nxserver [nx-27017 options]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from types import SimpleNamespace
from typing import Any, overload

# One unquoted SQLite identifier: an ASCII letter, `_` or a non-ASCII letter first, then any of
# those or digits. Python's Unicode `\w` is exactly `str.isalnum()` plus `_`.
_UNICODE_IDENTIFIER = re.compile(r"(?![0-9])\w+")

# Patch 3: neosqlite's schema queries by name, and what SQLite answers them with from its
# in-memory schema (a hash lookup by name) instead of a scan of `sqlite_master`. Same
# parameters, same columns, same rows in the same order (`pragma_index_list` lists a table's
# indexes newest first). A query not listed here runs as written.
_SCHEMA_LOOKUPS = {
    # Does this table exist (delete_one, delete_many, rename's target, GridFS)?
    "SELECT name FROM sqlite_master WHERE type='table' AND name=?": (
        "SELECT ?1 AS name FROM pragma_table_info(?1, 'main') LIMIT 1"
    ),
    # The table's indexes named by neosqlite's pattern (the query builder, create_index).
    "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name = ? AND name LIKE ? "
    "ESCAPE '\\'": (
        "SELECT name FROM pragma_index_list(?1, 'main') WHERE name LIKE ?2 ESCAPE '\\'"
        " ORDER BY seq DESC"
    ),
    # All of the table's indexes (drop_index).
    "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name=?": (
        "SELECT name FROM pragma_index_list(?1, 'main') ORDER BY seq DESC"
    ),
    # The indexes named `idx_<table>_%` (the query optimizer, three times per count): those of
    # that table. (As written, `_` being LIKE's any-character, it also took in indexes of
    # other tables, e.g. `idx_org_a_b_x` of `org_a_b` for `org_a`.)
    "SELECT name FROM sqlite_master WHERE type='index' AND name LIKE ?": (
        "SELECT name FROM pragma_index_list(substr(?1, 5, length(?1) - 6), 'main')"
        " WHERE name LIKE ?1 ORDER BY seq DESC"
    ),
}  # fmt: skip
# Is this one a collection: a table of the main schema, not `sqlite_%` (the listing's own
# exclusion; neosqlite's internal tables are left out in Python, as the listing does).
_HAS_COLLECTION = "SELECT 1 FROM pragma_table_info(?1, 'main') WHERE ?1 NOT LIKE 'sqlite_%' LIMIT 1"


class CollectionNames(Sequence[str]):
    """What the patched `list_collection_names()` returns: `name in names` asks SQLite about
    that one name; anything else (iterating, `len`, indexing) lists every collection once, as
    the original did, and answers from that list."""

    __slots__ = ("_exists", "_listing", "_names")

    def __init__(self, exists: Callable[[str], bool], listing: Callable[[], list[str]]) -> None:
        self._exists = exists
        self._listing = listing
        self._names: list[str] | None = None

    def _all(self) -> list[str]:
        if self._names is None:
            self._names = self._listing()
        return self._names

    def __contains__(self, name: object) -> bool:
        if self._names is not None:
            return name in self._names
        return isinstance(name, str) and self._exists(name)

    def __len__(self) -> int:
        return len(self._all())

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        return self._all()[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CollectionNames):
            other = other._all()
        return self._all() == other

    __hash__ = None  # type: ignore[assignment]  # like the list it stands for

    def __repr__(self) -> str:
        return repr(self._all())


def _patch_rename_cache() -> None:
    # Imported here: nx-27017 is a development extra, loaded only by this launcher's process.
    from neosqlite.collection import Collection

    original = Collection.rename
    if getattr(original, "_orgsvc_patched", False):
        return

    def rename(self: Any, new_name: str) -> None:
        old_name = self.name
        original(self, new_name)
        cache = getattr(getattr(self, "_database", None), "_collections", None)
        if isinstance(cache, dict) and cache.get(old_name) is self:
            del cache[old_name]
            cache[new_name] = self

    rename._orgsvc_patched = True  # type: ignore[attr-defined]
    rename.__wrapped__ = original  # type: ignore[attr-defined]  # (patch 6 looks beneath)
    Collection.rename = rename


def _patch_unicode_identifiers() -> None:
    # Imported here: nx-27017 is a development extra, loaded only by this launcher's process.
    from neosqlite import sql_utils

    original: Callable[[str], str] = sql_utils.quote_identifier
    if getattr(original, "_orgsvc_patched", False):
        return

    def quote_identifier(identifier: str) -> str:
        if identifier.isascii() or not _UNICODE_IDENTIFIER.fullmatch(identifier):
            return original(identifier)  # unchanged: the same answer and the same errors
        return identifier

    quote_identifier._orgsvc_patched = True  # type: ignore[attr-defined]
    # `quote_table_name` looks `quote_identifier` up in sql_utils at call time; modules that
    # imported the function itself (e.g. the index manager) hold their own reference.
    sql_utils.quote_identifier = quote_identifier
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(("neosqlite", "nx_27017")):
            continue
        for attr, value in list(vars(module).items()):
            if value is original:
                setattr(module, attr, quote_identifier)


def _patch_schema_lookups() -> None:
    # Imported here, all three: nx-27017 is a development extra, loaded only by this launcher.
    from neosqlite import connection as neo
    from neosqlite._sqlite import sqlite3  # (the sqlite3 module neosqlite connects with)
    from nx_27017.handler import NeoSQLiteHandler  # (its wire-command dispatcher)

    if getattr(neo.Connection.list_collection_names, "_orgsvc_patched", False):
        return

    # (a) Every SQLite connection neosqlite opens from now on rewrites the schema queries.
    class SchemaLookups(sqlite3.Connection):  # type: ignore[misc]
        def execute(self, sql: str, parameters: Any = (), /) -> Any:
            return super().execute(_SCHEMA_LOOKUPS.get(sql, sql), parameters)

    original_connect = neo.Connection.connect

    def connect(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("factory", SchemaLookups)
        original_connect(self, *args, **kwargs)

    # (b) `name in db.list_collection_names()` asks about that name only.
    original_list = neo.Connection.list_collection_names
    is_internal: Callable[[str], bool] = neo._is_internal_collection_name

    def list_collection_names(self: Any) -> CollectionNames:
        def exists(name: str) -> bool:
            if is_internal(name):
                return False
            return self.db.execute(_HAS_COLLECTION, (name,)).fetchone() is not None

        return CollectionNames(exists, lambda: original_list(self))

    # (c) `listCollections` filtered by one name answers for that name.
    original_command = NeoSQLiteHandler.handle_command

    def handle_command(self: Any, msg: dict[str, Any]) -> Any:
        named = _listed_by_name(msg)
        if named is None:
            return original_command(self, msg)
        db_name, name = named
        try:
            with self._lock_for(db_name):
                found = name in self.get_database(db_name).list_collection_names()
        except Exception:
            return original_command(self, msg)  # let nx-27017 answer (or fail) as it would
        one = SimpleNamespace(list_collection_names=lambda: [name] if found else [])
        return self._handle_list_collections(msg["request_id"], one, db_name)

    connect._orgsvc_patched = True  # type: ignore[attr-defined]
    list_collection_names._orgsvc_patched = True  # type: ignore[attr-defined]
    handle_command._orgsvc_patched = True  # type: ignore[attr-defined]
    neo.Connection.connect = connect
    neo.Connection.list_collection_names = list_collection_names
    NeoSQLiteHandler.handle_command = handle_command


def _listed_by_name(msg: dict[str, Any]) -> tuple[str, str] | None:
    """(database, name) when `msg` is a `listCollections` whose filter is exactly
    `{"name": <string>}`; None for anything else."""
    body = next((doc for kind, doc in msg.get("sections", ()) if kind == "body"), None)
    if not isinstance(body, dict) or next(iter(body), None) != "listCollections":
        return None
    found = body.get("filter")
    if not isinstance(found, dict) or list(found) != ["name"] or not isinstance(found["name"], str):
        return None
    db_name = body.get("$db", "test")
    return (db_name if isinstance(db_name, str) and db_name else "test"), found["name"]


def _patch_lost_stream_triggers() -> None:
    # Imported here: nx-27017 is a development extra, loaded only by this launcher's process.
    from neosqlite import changestream

    stream_class: Any = changestream.ChangeStream
    original = stream_class._setup_triggers
    if getattr(original, "_orgsvc_patched", False):
        return

    def setup_triggers(self: Any) -> None:
        db, name = self._collection.db, self._collection.name
        wanted = [f"_neosqlite_{self._sanitized_name}_{op}_trigger" for op in _STREAM_OPS]
        found = db.execute(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name IN (?, ?, ?)",
            wanted,
        ).fetchone()
        counts: dict[str, int] = changestream._registry_entry(db)["counts"]
        held = counts.get(name, 0)
        if held == 0 or (found and found[0] == len(_STREAM_OPS)):
            original(self)
            return
        # Streams are counted, but their triggers went with a dropped table: create them again
        # (`CREATE TRIGGER IF NOT EXISTS`, which the original runs only for a count of 0).
        counts[name] = 0
        try:
            original(self)
        finally:
            counts[name] = held + 1

    setup_triggers._orgsvc_patched = True  # type: ignore[attr-defined]
    stream_class._setup_triggers = setup_triggers


_STREAM_OPS = ("insert", "update", "delete")


# Patch 5: nx-27017's per-database mode (`--data-dir`).
_RENAME = frozenset({"renameCollection", "renamecollection"})
_LIST_DATABASES = frozenset({"listDatabases", "listdatabases"})
_OPEN_DATABASES = 1000  # SQLite files kept open at most (nx-27017 keeps 100)
_FDS_PER_DATABASE = 3  # the database file, its write-ahead log and its shared-memory file
_FDS_SPARE = 256  # client sockets, the log file, Python's own


class Sessions(MutableMapping[tuple[str, str], Any]):
    """nx-27017's sessions, keyed (session id, database) as before, and beside them the databases
    in which each session id has begun a transaction (whether it is still open or not)."""

    __slots__ = ("_sessions", "transactions")

    def __init__(self, sessions: Mapping[tuple[str, str], Any]) -> None:
        self._sessions: dict[tuple[str, str], Any] = dict(sessions)
        self.transactions: dict[str, set[str]] = {}

    def began_transaction(self, key: tuple[str, str]) -> None:
        if key in self._sessions:
            self.transactions.setdefault(key[0], set()).add(key[1])

    def __getitem__(self, key: tuple[str, str]) -> Any:
        return self._sessions[key]

    def __setitem__(self, key: tuple[str, str], session: Any) -> None:
        self._sessions[key] = session

    def __delitem__(self, key: tuple[str, str]) -> None:
        del self._sessions[key]
        databases = self.transactions.get(key[0])
        if databases is not None:
            databases.discard(key[1])
            if not databases:
                del self.transactions[key[0]]

    def __contains__(self, key: object) -> bool:
        return key in self._sessions

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._sessions)

    def __len__(self) -> int:
        return len(self._sessions)


def _patch_databases() -> None:
    # Imported here: nx-27017 is a development extra, loaded only by this launcher's process.
    from nx_27017 import handler as nx

    handler_class: Any = nx.NeoSQLiteHandler
    if getattr(handler_class.handle_command, "_orgsvc_databases", False):
        return

    # (a) `renameCollection` runs in its source's database; across databases it is refused.
    # (d) `listDatabases` leaves out the databases without collections.
    original_command = handler_class.handle_command

    def handle_command(self: Any, msg: dict[str, Any]) -> Any:
        body = _command_body(msg) if self._mode != "single" else None
        command = next(iter(body), None) if body is not None else None
        if command in _LIST_DATABASES:
            return _without_empty_databases(original_command(self, msg))
        if body is None or command not in _RENAME:
            return original_command(self, msg)
        source, target = body[command], body.get("to")
        if not isinstance(source, str) or not isinstance(target, str):
            return original_command(self, msg)  # nx-27017's own answer (or error)
        source_db, target_db = _database_of(source), _database_of(target)
        if source_db is None:
            return msg["request_id"], _error(
                73, "InvalidNamespace", "Invalid source namespace: " + source
            )
        if target_db is None:
            return msg["request_id"], _error(
                73, "InvalidNamespace", "Invalid target namespace: " + target
            )
        if source_db != target_db:
            return msg["request_id"], _error(
                125, "CommandFailed", "Source and destination collections must be on same shard"
            )
        sent = {**body, "$db": source_db}
        sections = [(kind, sent if doc is body else doc) for kind, doc in msg["sections"]]
        return original_command(self, {**msg, "sections": sections})

    # (b) A session id's transactions in other databases, found through that id.
    original_init = handler_class.__init__
    original_session = handler_class._get_or_create_session
    original_reject = handler_class._reject_cross_db_tx

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self._sessions = Sessions(self._sessions)

    def get_or_create_session(
        self: Any, command_doc: dict[str, Any], db: Any = None, db_name: str = "test"
    ) -> Any:
        session = original_session(self, command_doc, db, db_name)
        if session is not None and command_doc.get("startTransaction"):
            key = (nx._extract_session_id(command_doc["lsid"]), self._session_scope(db_name))
            with self._sessions_lock:
                self._sessions.began_transaction(key)
        return session

    def reject_cross_db_tx(self: Any, session_id: str, scope: str) -> None:
        sessions = self._sessions
        if self._mode == "single" or not scope or not isinstance(sessions, Sessions):
            original_reject(self, session_id, scope)
            return
        for other in sessions.transactions.get(session_id, ()):
            session = sessions.get((session_id, other))
            if other != scope and session is not None and session.in_transaction:
                raise nx.CrossDBTransactionError(
                    "Cross-database transactions are not supported: "
                    f"transaction open on {other!r}, operation targets {scope!r}"
                )

    # (c) More databases open at once.
    nx._MAX_OPEN_DBS = max(nx._MAX_OPEN_DBS, _open_databases())

    handle_command._orgsvc_databases = True  # type: ignore[attr-defined]
    handler_class.handle_command = handle_command
    handler_class.__init__ = __init__
    handler_class._get_or_create_session = get_or_create_session
    handler_class._reject_cross_db_tx = reject_cross_db_tx


def _without_empty_databases(reply: Any) -> Any:
    """nx-27017's `listDatabases` reply without the databases that hold no collection: a database
    that was only read (nx-27017 made its file) does not exist in MongoDB."""
    request_id, doc = reply
    listed = doc.get("databases") if isinstance(doc, dict) else None
    if isinstance(listed, list):
        doc["databases"] = [
            entry
            for entry in listed
            if not (isinstance(entry, dict) and entry.get("empty") and entry.get("name") != "admin")
        ]
    return request_id, doc


def _command_body(msg: dict[str, Any]) -> dict[str, Any] | None:
    body = next((doc for kind, doc in msg.get("sections", ()) if kind == "body"), None)
    return body if isinstance(body, dict) else None


def _database_of(namespace: str) -> str | None:
    """The database of a whole namespace `<database>.<collection>`, or None if it is not one."""
    database, dot, collection = namespace.partition(".")
    return database if database and dot and collection else None


def _error(code: int, code_name: str, message: str) -> dict[str, Any]:
    return {"ok": 0, "errmsg": message, "code": code, "codeName": code_name}


def _open_databases() -> int:
    """How many databases nx-27017 may keep open: `_OPEN_DATABASES`, or as many as this process
    may open the files of (nx-27017's own 100 at least)."""
    try:
        import resource  # POSIX only (not on Windows): imported where it is used
    except ImportError:
        return _OPEN_DATABASES
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return _OPEN_DATABASES
    return max(100, min(_OPEN_DATABASES, (soft - _FDS_SPARE) // _FDS_PER_DATABASE))


def _raise_file_limit() -> None:
    """Raise this process's soft limit on open files to what `_OPEN_DATABASES` needs, as far as
    its hard limit allows."""
    try:
        import resource  # POSIX only (not on Windows): imported where it is used
    except ImportError:
        return
    needed = _OPEN_DATABASES * _FDS_PER_DATABASE + _FDS_SPARE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


# Patch 6: a collection's indexes renamed in SQLite's schema table instead of rebuilt.
_RENAME_SAVEPOINT = "orgsvc_rename"
_MOVES_SAVEPOINT = "orgsvc_rename_indexes"
_PARKED = "orgsvc_renaming_index_{}"  # an index's name between the two moves (see 6)
_INDEX_HEADS = ("CREATE INDEX ", "CREATE UNIQUE INDEX ")  # as SQLite stores them
# The planner's statistics (if ANALYZE made them), by index name: DROP INDEX deleted them.
_STAT_DELETES = {
    "sqlite_stat1": "DELETE FROM sqlite_stat1 WHERE idx = ?",
    "sqlite_stat4": "DELETE FROM sqlite_stat4 WHERE idx = ?",
}


class _NotMoved(Exception):
    """The schema was not rewritten as intended (rolled back: neosqlite rebuilds instead)."""


def _patch_metadata_rename() -> None:
    # Imported here: nx-27017 is a development extra, loaded only by this launcher's process.
    from neosqlite import sql_utils
    from neosqlite.collection import Collection  # (the class whose rename this wraps)

    original = Collection.rename
    if _marked(original, "_orgsvc_metadata_rename"):
        return

    def rename(self: Any, new_name: str) -> None:
        old_name = self.name
        if new_name == old_name or not isinstance(new_name, str):
            original(self, new_name)  # neosqlite's no-op (or error)
            return
        try:
            sql_utils.quote_table_name(new_name)
        except ValueError:
            original(self, new_name)  # neosqlite's error, before any change
            return
        db = self.db
        try:
            with _atomically(db, _RENAME_SAVEPOINT):
                parked = _move_indexes_aside(db, old_name, new_name, sql_utils.quote_identifier)
                original(self, new_name)  # finds no `idx_<old>_` index left to rebuild
                if parked:
                    _rewrite_index_entries(db, new_name, parked)
        except BaseException:
            self.name = old_name  # (neosqlite names it before its last step)
            raise

    rename._orgsvc_metadata_rename = True  # type: ignore[attr-defined]
    rename.__wrapped__ = original  # type: ignore[attr-defined]
    Collection.rename = rename


def _marked(function: object, marker: str) -> bool:
    """Whether `function`, or one it wraps (`__wrapped__`), carries `marker`."""
    seen = 0
    while function is not None and seen < 10:
        if getattr(function, marker, False):
            return True
        function, seen = getattr(function, "__wrapped__", None), seen + 1
    return False


@contextlib.contextmanager
def _atomically(db: Any, savepoint: str) -> Iterator[None]:
    """One transaction (a savepoint inside one already open): committed, or rolled back on any
    exception. `BEGIN IMMEDIATE` takes the write lock at once, as every step here writes."""
    nested = db.in_transaction
    db.execute(f"SAVEPOINT {savepoint}" if nested else "BEGIN IMMEDIATE")
    try:
        yield
        db.execute(f"RELEASE {savepoint}" if nested else "COMMIT")
    except BaseException:
        if nested:
            db.execute(f"ROLLBACK TO {savepoint}")
            db.execute(f"RELEASE {savepoint}")
        elif db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _renamed_index_sql(sql: str, name: str, new_name: str) -> str | None:
    """An index's `CREATE INDEX` text under `new_name`, or None if the text does not begin with
    `CREATE [UNIQUE] INDEX <name> ` as SQLite stores neosqlite's (then it is not rewritten)."""
    for head in _INDEX_HEADS:
        if sql.startswith(f"{head}{name} "):
            return f"{head}{new_name}{sql[len(head) + len(name) :]}"
    return None


def _move_indexes_aside(
    db: Any, old_name: str, new_name: str, quote_identifier: Callable[[str], str]
) -> list[tuple[str, str]]:
    """Rename the indexes that neosqlite's rename would rebuild, `idx_<old>_<key>` of the table
    `old_name`, to `idx_<new>_<key>`, in the schema table (see 6). Those whose new name still
    starts with `idx_<old>_` (neosqlite would take them for old ones) get a parking name instead:
    returned as (parking name, final name), for `_rewrite_index_entries` after neosqlite's
    rename. Nothing is changed (and neosqlite rebuilds them all, as before) if any of the names
    given is taken, if an index's text is not as expected, or if SQLite does not take the
    rewrite."""
    from neosqlite._sqlite import sqlite3  # (the sqlite3 module neosqlite connects with)

    old_prefix = f"idx_{old_name}_"
    rows = db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1 COLLATE NOCASE"
        " AND sql IS NOT NULL",
        (old_name,),
    ).fetchall()
    moves: list[tuple[str, str, str]] = []  # (name, name given now, final name)
    parked: list[tuple[str, str]] = []
    for name, sql in rows:
        if not name.startswith(old_prefix):
            continue  # not one of neosqlite's: it leaves it alone, and so do we
        try:
            final = quote_identifier(f"idx_{new_name}_{name[len(old_prefix) :]}")
        except ValueError:
            return []  # (neosqlite's rename refuses the name itself)
        given = final
        if final.startswith(old_prefix):
            given = _PARKED.format(len(parked))
            parked.append((given, final))
        if _renamed_index_sql(sql, name, given) is None:
            return []
        moves.append((name, given, final))
    if not moves:
        return []
    wanted = [name for _, given, final in moves for name in {given, final}]
    taken = db.execute(  # (an index's name is also not that of a table, view or trigger)
        "SELECT 1 FROM sqlite_master WHERE lower(name) IN"
        " (SELECT lower(value) FROM json_each(?)) LIMIT 1",
        (json.dumps(wanted),),
    ).fetchone()
    if taken is not None:
        return []  # neosqlite's rename fails on it as before (and is rolled back whole)
    try:
        with _atomically(db, _MOVES_SAVEPOINT):
            _rewrite_index_entries(db, old_name, [(name, given) for name, given, _ in moves])
            # neosqlite's own bookkeeping, by index name (as its rename and DROP INDEX did)
            if _has_table(db, "neosqlite_index_keys"):
                db.executemany(
                    "UPDATE neosqlite_index_keys SET index_name = ? WHERE index_name = ?",
                    [(final, name) for name, _, final in moves],
                )
            for stat, delete in _STAT_DELETES.items():
                if _has_table(db, stat):
                    db.executemany(delete, [(name,) for name, _, _ in moves])
    except (_NotMoved, sqlite3.Error):
        return []  # rolled back: neosqlite rebuilds them, as before
    return parked


def _rewrite_index_entries(db: Any, table: str, renames: list[tuple[str, str]]) -> None:
    """Rename indexes of `table` in the schema table, (name, new name) each, as SQLite's
    documentation has it: `writable_schema`, the rows' `name` and `sql`, `schema_version` one
    higher (every connection reloads its schema), `writable_schema` off; then check that the
    reloaded schema lists the new names and none of the old. Run inside a transaction."""
    db.execute("PRAGMA writable_schema = ON")
    try:
        for name, new_name in renames:
            (sql,) = db.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)
            ).fetchone()
            new_sql = _renamed_index_sql(sql, name, new_name)
            if new_sql is None:
                raise _NotMoved(name)
            changed = db.execute(
                "UPDATE sqlite_master SET name = ?, sql = ? WHERE type = 'index' AND name = ?",
                (new_name, new_sql, name),
            ).rowcount
            if changed != 1:
                raise _NotMoved(name)
        (version,) = db.execute("PRAGMA schema_version").fetchone()
        db.execute(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        db.execute("PRAGMA writable_schema = OFF")
    listed = {row[0] for row in db.execute("SELECT name FROM pragma_index_list(?)", (table,))}
    if not {new for _, new in renames} <= listed or listed & {old for old, _ in renames}:
        raise _NotMoved(f"{table}: SQLite lists {sorted(listed)}")


def _has_table(db: Any, name: str) -> bool:
    return bool(db.execute("SELECT 1 FROM pragma_table_info(?) LIMIT 1", (name,)).fetchone())


SINGLE_NAMESPACE_REFUSED = (
    "app.kit.nxserver: nx-27017's single-file mode (--db FILE, or no --data-dir) keeps every "
    "database in one namespace, unlike MongoDB; give --data-dir DIR (one SQLite file per "
    "database), or --single-db-compat to have the single namespace anyway"
)


def shares_one_namespace(argv: Sequence[str]) -> bool:
    """True when nx-27017, given these options, would serve every database from one namespace
    (its single-file mode) without being asked for it by name (`--single-db-compat`)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--db", dest="db_path", default="nx-27017.db")
    parser.add_argument("--data-dir", dest="data_dir")
    for flag in ("--single-db-compat", "--stop", "--status", "--help"):
        parser.add_argument(flag, action="store_true")
    found, _ = parser.parse_known_args(list(argv))
    if found.single_db_compat or found.stop or found.status or found.help or "-h" in argv:
        return False
    return found.data_dir is None and not os.path.isdir(found.db_path)


def patch() -> None:
    """Apply every fix to the nx-27017 modules of this process (idempotent)."""
    _patch_metadata_rename()  # (before 1, which wraps it: see 6)
    _patch_rename_cache()
    _patch_unicode_identifiers()
    _patch_lost_stream_triggers()
    _patch_schema_lookups()
    _patch_databases()


def main() -> int:
    if shares_one_namespace(sys.argv[1:]):
        print(SINGLE_NAMESPACE_REFUSED, file=sys.stderr)
        return 2
    _raise_file_limit()
    patch()
    # Imported after patching, so every module nx-27017 loads sees the patched functions.
    from nx_27017.nx_27017 import main as nx_main

    result = nx_main()
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
