"""Copying one tenant collection to another place, resumably, and proving the copy.

Used by a move (`app.organizations.moves`): documents go in `_id` order, in batches, and after
each batch the number copied so far is the checkpoint, from which a copy that was interrupted
goes on (a batch copied twice is harmless: a document already there is a duplicate `_id`, left
as it is). Then the indexes, then the proof: the same number of documents, the same content
(a SHA-256 over every document's BSON in `_id` order, on each side) and the same indexes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import IndexModel
from pymongo.errors import BulkWriteError

from app.kit.store import Collection

DUPLICATE_KEY = 11000
RAW: CodecOptions[RawBSONDocument] = CodecOptions(document_class=RawBSONDocument)
# What an index keeps of its options when it is made again elsewhere (`listIndexes` also gives
# `v` and `key`, and MongoDB 4.2- `ns`; those are not options).
INDEX_OPTIONS = frozenset(
    {"unique", "sparse", "partialFilterExpression", "expireAfterSeconds", "collation",
     "hidden", "weights", "default_language", "language_override", "textIndexVersion",
     "2dsphereIndexVersion", "bits", "min", "max", "wildcardProjection"}
)  # fmt: skip

Checkpoint = Callable[[int], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What a copy must match: how many documents, their content, and the indexes."""

    documents: int
    checksum: str
    indexes: tuple[tuple[str, str], ...]  # (name, key and options), sorted


async def copy_documents(
    source: Collection, target: Collection, *, start: int, batch: int, checkpoint: Checkpoint
) -> int:
    """Copy `source` into `target` in `_id` order from the `start`-th document; after each
    batch, `checkpoint(copied so far)`. Returns the number copied in all."""
    copied = start
    cursor = source.with_options(codec_options=RAW).find({}, sort=[("_id", 1)], skip=start)
    pending: list[RawBSONDocument] = []
    async for doc in cursor.batch_size(batch):
        pending.append(doc)
        if len(pending) >= batch:
            copied += await _insert(target, pending)
            pending = []
            await checkpoint(copied)
    if pending:
        copied += await _insert(target, pending)
        await checkpoint(copied)
    return copied


async def _insert(target: Collection, docs: list[RawBSONDocument]) -> int:
    try:
        await target.with_options(codec_options=RAW).insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
    return len(docs)


async def copy_indexes(source: Collection, target: Collection) -> int:
    """Make every index of `source` but `_id`'s on `target` (same name, keys and options)."""
    models = [
        IndexModel(list(spec["key"].items()), name=spec["name"], **_options(spec))
        for spec in await (await source.list_indexes()).to_list(None)
        if spec["name"] != "_id_"
    ]
    if models:
        await target.create_indexes(models)
    return len(models)


def _options(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k in INDEX_OPTIONS}


async def fingerprint(col: Collection) -> Fingerprint:
    """The collection's fingerprint, read from every document (in `_id` order) and its index
    list."""
    digest = hashlib.sha256()
    documents = 0
    async for doc in col.with_options(codec_options=RAW).find({}, sort=[("_id", 1)]):
        digest.update(len(doc.raw).to_bytes(4, "little"))
        digest.update(doc.raw)
        documents += 1
    indexes = sorted(
        (spec["name"], repr((list(spec["key"].items()), sorted(_options(spec).items()))))
        for spec in await (await col.list_indexes()).to_list(None)
    )
    return Fingerprint(documents, digest.hexdigest(), tuple(indexes))
