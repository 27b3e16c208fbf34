"""Shared types for repositories: the only code that speaks to MongoDB."""

from __future__ import annotations

import inspect
import re
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from bson import ObjectId
from pydantic import BaseModel, BeforeValidator, ConfigDict
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, DuplicateKeyError, PyMongoError

Doc = dict[str, Any]

# The driver's errors under the names the layers above the repositories use, so that only
# repositories import the driver: any database error, and "the database cannot be reached".
StoreError = PyMongoError
StoreUnavailable = ConnectionFailure
Database = AsyncDatabase[Doc]
Collection = AsyncCollection[Doc]


async def insert_unique(col: Collection, doc: Doc) -> bool:
    """Insert `doc`; False (nothing written) when a unique index already holds one of its keys.
    Uniqueness is the database's job: this is how a repository asks it."""
    try:
        await col.insert_one(doc)
    except DuplicateKeyError:
        return False
    return True


async def aggregate(col: Collection, pipeline: list[Doc]) -> list[Doc]:
    """Every document an aggregation returns. (PyMongo's async `aggregate` is a coroutine that
    gives a cursor; the in-memory double's gives the cursor at once.)"""
    cursor: Any = col.aggregate(pipeline)
    if inspect.isawaitable(cursor):
        cursor = await cursor
    docs: list[Doc] = await cursor.to_list(None)
    return docs


async def count(col: Collection, query: Doc) -> int:
    """How many documents of `col` match `query`, by the `count` command.

    The command is counted by the index on MongoDB and in SQL on nx-27017, where
    `count_documents` (an aggregation) reads every matching document through a temporary table
    that holds its database's lock: 3 s for a few thousand rows once that database holds 30,000
    collections (bench figure 12). The in-memory test double has no `count` command.
    """
    try:
        found = await col.database.command({"count": col.name, "query": query})
    except NotImplementedError:
        return await col.count_documents(query)
    return int(found["n"])


def new_id() -> str:
    """A new record id: an ObjectId's 24 hex digits, kept as a string (ids are compared in
    queries, and some stores match ObjectId values only in `_id`)."""
    return str(ObjectId())


_ID = re.compile(r"^[0-9a-f]{24}\Z")


def is_id(value: str) -> bool:
    """Whether `value` has the form of an id `new_id` makes (so it is safe in a field path, and
    worth a read)."""
    return bool(_ID.match(value))


def utcnow() -> datetime:
    """Now, in UTC, at the millisecond precision MongoDB stores."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def as_utc(value: datetime | str) -> datetime:
    """A datetime read back from the store, in UTC.

    nx-27017 (the test server) stores a datetime written with `$set` as a string, and the
    in-memory double drops the timezone; both read back here as aware UTC datetimes.
    """
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def epoch_ms(offset_seconds: float = 0.0) -> int:
    """Now plus an offset, in integer epoch milliseconds: a time that must be compared in queries.

    Integers compare the same on every store (nx-27017 turns `$set` datetimes into strings).
    """
    return int(time.time() * 1000 + offset_seconds * 1000)


def _stored_time(value: object) -> object:
    return as_utc(value) if isinstance(value, datetime | str) else value


# A datetime as read back from any store: aware, in UTC (see `as_utc`).
StoredTime = Annotated[datetime, BeforeValidator(_stored_time)]


class Record(BaseModel):
    """A stored document as a typed, read-only value: what repositories return.

    Field names are the contract's JSON names (a record's `_id` is read into the field the
    contract calls it, e.g. `organization_id`); fields the code does not know are ignored, so a
    document written by a newer release still reads. Each repository builds its own documents.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")
