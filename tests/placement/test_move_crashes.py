"""kill -9 at every step of a move across clusters; the restarted service resumes it, and nothing
is lost.

A service armed with `FAULT_POINTS=move.<step>` SIGKILLs itself there during a move of a tenant of
3,500 documents (four batches) with a unique index from cluster `main` to cluster `eu` (two
nx-27017 processes). A clean service started after it must finish the move on its own (the
reconciler takes the intent over when its lease ends): the operation ends `done`, the record
points at the target, every document and index is there, the source is gone, no intent is left,
and the record is free again (a rename goes through).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from app.kit.db import EmbeddedMongo
from tests.support.apps import app_client, make_settings, new_key
from tests.support.clients import bearer, create_and_login
from tests.support.processes import ServiceProcess, nx_service_env

pytestmark = pytest.mark.realstore
DOCS = 3_500
STEPS = [
    "move.after_lock",  # the record is locked and `organization.moving` written; nothing copied
    "move.after_batch",  # one batch of 1,000 copied and checkpointed
    "move.after_indexes",  # every document copied, indexes made
    "move.after_verify",  # verified, commit point not passed
    "move.after_commit",  # commit point passed, record not switched
    "move.after_switch",  # record switched, source not dropped
    "move.after_drop",  # source dropped, operation not marked done
]


@pytest.fixture
async def main_client(clusters: tuple[EmbeddedMongo, ...]) -> AsyncIterator[Any]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(clusters[0].url, tz_aware=True)
    yield client
    await client.close()


@pytest.fixture
async def eu_client(clusters: tuple[EmbeddedMongo, ...]) -> AsyncIterator[Any]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(clusters[1].url, tz_aware=True)
    yield client
    await client.close()


def env(clusters: tuple[EmbeddedMongo, ...], db: str, **extra: str) -> dict[str, str]:
    return nx_service_env(
        clusters[0], db=db, TENANT_CLUSTERS=f"eu={clusters[1].url}",
        TENANT_DATABASES=f"main={db};eu={db}_eu", OPERATION_LEASE_SECONDS="1", **extra,
    )  # fmt: skip


@pytest.mark.parametrize("step", STEPS)
async def test_a_move_killed_at_any_step_is_finished_by_the_next_service(
    step: str,
    clusters: tuple[EmbeddedMongo, ...],
    main_client: Any,
    eu_client: Any,
    tmp_path: Path,
) -> None:
    db = "mv_" + uuid.uuid4().hex[:10]
    # The organization, its documents and a key, through the app in-process on the same stores.
    settings = make_settings(
        mongodb_db=db, tenant_clusters=f"eu={clusters[1].url}",
        tenant_databases=f"main={db};eu={db}_eu",
    )  # fmt: skip
    async with app_client(settings, main_client) as (http, app):
        org, token = await create_and_login(http, f"Crash {step}")
        key = {"X-API-Key": await new_key(app, "org:move")}
    assert org["placement"] == {"cluster": "main", "database": db}
    source = main_client[db][org["collection_name"]]
    docs = [{"_id": f"d{i:05d}", "email": f"u{i}@x.com", "n": i} for i in range(DOCS)]
    await source.insert_many(docs)
    await source.create_index("email", unique=True)
    indexes = sorted([i async for i in await source.list_indexes()], key=lambda i: i["name"])
    target = {"cluster": "eu", "database": f"{db}_eu"}

    doomed = ServiceProcess(env(clusters, db, FAULT_POINTS=step), log_path=tmp_path / "a.log")
    await doomed.start()
    op_id = None
    try:
        async with httpx.AsyncClient(base_url=doomed.url, timeout=30) as client:
            try:
                res = await client.post(
                    f"/orgs/{org['organization_id']}/move", json=target, headers=key
                )
                assert res.status_code == 202, res.text
                op_id = res.json()["operation_id"]
            except httpx.TransportError:
                assert step == "move.after_lock"  # it died before answering
        assert await doomed.wait_exit(timeout=30) == -9, "the fault hook did not kill it"
    finally:
        doomed.stop()
    assert f"fault injection: SIGKILL at {step}" in (tmp_path / "a.log").read_text()
    if op_id is None:
        [record] = await main_client[db]["moves"].find({}).to_list(None)
        op_id = record["_id"]

    healed = ServiceProcess(
        env(clusters, db, RECONCILE_INTERVAL_SECONDS="0.3"), log_path=tmp_path / "b.log"
    )
    await healed.start()
    try:
        async with httpx.AsyncClient(base_url=healed.url, timeout=30) as client:
            status = await wait_ended(client, op_id, key)
            assert status["status"] == "done", (step, status)
            assert status["progress"]["copied"] == DOCS
            got = await client.get(
                "/org/get", params={"organization_name": org["organization_name"]},
                headers=bearer(token),
            )  # fmt: skip
            assert got.json()["placement"] == target, got.text
            # The record is free again: a rename goes through (in place, at the target).
            renamed = await client.put(
                "/org/update", json={"organization_name": f"Moved {step}"}, headers=bearer(token)
            )
            assert renamed.status_code == 200, renamed.text
            collection = renamed.json()["collection_name"]
    finally:
        healed.stop()

    moved = eu_client[f"{db}_eu"][collection]
    assert sorted([d async for d in moved.find({})], key=lambda d: d["_id"]) == docs
    made = sorted([i async for i in await moved.list_indexes()], key=lambda i: i["name"])
    assert [(i["name"], i.get("unique")) for i in made] == [
        (i["name"].replace(org["collection_name"], collection), i.get("unique")) for i in indexes
    ]
    assert [n for n in await main_client[db].list_collection_names() if n.startswith("org_")] == []
    assert await main_client[db]["operations"].count_documents({}) == 0
    counts = {d["_id"]: d["tenants"] async for d in main_client[db]["placements"].find()}
    assert counts == {f"main/{db}": 0, f"eu/{db}_eu": 1}


async def wait_ended(
    client: httpx.AsyncClient, op_id: str, key: dict[str, str], timeout: float = 40.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = await client.get(f"/operations/{op_id}", headers=key)
        assert res.status_code == 200, res.text
        found: dict[str, Any] = res.json()
        if found["status"] not in ("pending", "running"):
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"the move did not end: {found}")
