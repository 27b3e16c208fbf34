"""What the database decides, against a real nx-27017 wire-protocol server."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from app.kit.events import EventHook
from app.kit.faults import FaultInjector
from app.kit.settings import Settings
from app.kit.store import epoch_ms, utcnow
from app.organizations.steps import KINDS, OrganizationSteps
from app.tenancy.context import OperationContext
from app.tenancy.reconciler import Reconciler
from app.wiring import Repositories
from tests.support.clients import PASSWORD, bearer, create_and_login, org_body

Pair = tuple[httpx.AsyncClient, FastAPI]


async def collections(client: AsyncMongoClient[Any], db: str) -> set[str]:
    return {n for n in await client[db].list_collection_names() if n.startswith("org_")}


async def test_unique_indexes_exist(
    real_api: Pair, nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    db = nx_client[settings.mongodb_db]
    org_idx = await db.organizations.index_information()
    unique = {tuple(k for k, _ in v["key"]) for v in org_idx.values() if v.get("unique")}
    assert {("slug",), ("collection_name",)} <= unique
    admin_idx = await db.admins.index_information()
    assert any(v.get("unique") and v["key"][0][0] == "email_lower" for v in admin_idx.values())


async def test_create_race_gives_one_winner(
    real_api: Pair, nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    http, _ = real_api
    spellings = ["Race Corp", "race-corp", " RACE corp", "race_corp", "Race  Corp"]
    bodies = [org_body(spellings[i % len(spellings)], f"racer{i}@x.com") for i in range(12)]
    results = await asyncio.gather(*(http.post("/org/create", json=b) for b in bodies))
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(201) == 1, statuses
    assert statuses.count(409) == 11, statuses
    assert all(r.json()["code"] == "organization_exists" for r in results if r.status_code == 409)
    db = nx_client[settings.mongodb_db]
    assert await collections(nx_client, settings.mongodb_db) == {"org_race_corp"}
    assert await db.organizations.count_documents({}) == 1
    assert await db.admins.count_documents({}) == 1
    assert await db.operations.count_documents({}) == 0


async def test_email_race_gives_one_winner(
    real_api: Pair, nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    http, _ = real_api
    results = await asyncio.gather(
        *(http.post("/org/create", json=org_body(f"Org {i}", "same@x.com")) for i in range(10))
    )
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(201) == 1 and statuses.count(409) == 9, statuses
    db = nx_client[settings.mongodb_db]
    assert await db.organizations.count_documents({}) == 1
    assert len(await collections(nx_client, settings.mongodb_db)) == 1
    assert await db.name_claims.count_documents({}) == 1


async def test_rename_keeps_documents_and_indexes(
    real_api: Pair, nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    http, _ = real_api
    org, token = await create_and_login(http, "Old Name", "r@x.com")
    db = nx_client[settings.mongodb_db]
    tenant = db[org["collection_name"]]
    await tenant.insert_many([{"i": i, "kind": "user"} for i in range(500)])
    await tenant.create_index("i", unique=True)
    res = await http.put(
        "/org/update", json={"organization_name": "New Name"}, headers=bearer(token)
    )
    assert res.status_code == 200, res.text
    assert res.json()["collection_name"] == "org_new_name"
    assert await collections(nx_client, settings.mongodb_db) == {"org_new_name"}
    moved = db["org_new_name"]
    assert await moved.count_documents({}) == 500
    assert sorted([d["i"] async for d in moved.find({}, {"i": 1})]) == list(range(500))
    info = await moved.index_information()
    assert any(v["key"] == [("i", 1)] and v.get("unique") for v in info.values()), info
    # The old name answers 404 and can be taken by a new organization.
    res = await http.get(
        "/org/get", params={"organization_name": "Old Name"}, headers=bearer(token)
    )
    assert res.status_code == 404
    again = await http.post("/org/create", json=org_body("Old Name", "n@x.com"))
    assert again.status_code == 201
    assert await db["org_old_name"].count_documents({}) == 0
    assert await collections(nx_client, settings.mongodb_db) == {"org_new_name", "org_old_name"}


async def test_rename_race_for_one_name(
    real_api: Pair, nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    http, _ = real_api
    tokens = [(await create_and_login(http, f"Contender {i}", f"c{i}@x.com"))[1] for i in range(6)]
    results = await asyncio.gather(
        *(
            http.put("/org/update", json={"organization_name": "Prize"}, headers=bearer(t))
            for t in tokens
        )
    )
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(200) == 1 and statuses.count(409) == 5, statuses
    assert len(await collections(nx_client, settings.mongodb_db)) == 6
    assert "org_prize" in await collections(nx_client, settings.mongodb_db)


async def test_delete_drops_the_collection(
    real_api: Pair, nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    http, _ = real_api
    org, token = await create_and_login(http, "Doomed", "d@x.com")
    keep, _ = await create_and_login(http, "Keeper", "k@x.com")
    db = nx_client[settings.mongodb_db]
    await db[org["collection_name"]].insert_many([{"i": i} for i in range(50)])
    await db[keep["collection_name"]].insert_one({"precious": True})
    res = await http.delete(
        "/org/delete", params={"organization_name": "doomed"}, headers=bearer(token)
    )
    assert res.status_code == 204
    assert await collections(nx_client, settings.mongodb_db) == {"org_keeper"}
    assert await db.organizations.count_documents({}) == 1
    assert await db.admins.count_documents({"email_lower": "d@x.com"}) == 0
    assert await db.name_claims.count_documents({"_id": "doomed"}) == 0
    assert await db["org_keeper"].count_documents({"precious": True}) == 1
    res = await http.post("/admin/login", json={"email": "d@x.com", "password": PASSWORD})
    assert res.status_code == 401


async def test_concurrent_rename_and_delete_of_one_org(
    real_api: Pair, nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    http, _ = real_api
    _, token = await create_and_login(http, "Busy", "b@x.com")
    rename, delete = await asyncio.gather(
        http.put("/org/update", json={"organization_name": "Busier"}, headers=bearer(token)),
        http.delete("/org/delete", params={"organization_name": "Busy"}, headers=bearer(token)),
    )
    assert rename.status_code in {200, 401, 409}, rename.text
    assert delete.status_code in {204, 409}, delete.text
    db = nx_client[settings.mongodb_db]
    orgs = await db.organizations.find().to_list(length=None)
    cols = await collections(nx_client, settings.mongodb_db)
    assert {o["collection_name"] for o in orgs} == cols
    assert await db.operations.count_documents({}) == 0


async def test_old_name_is_really_empty_after_rename(nx_client: AsyncMongoClient[Any]) -> None:
    """The embedded store's launcher fixes nx-27017's stale cache after renameCollection."""
    db = nx_client["anydb"]
    await db.create_collection("org_before")
    await db["org_before"].insert_many([{"i": i} for i in range(5)])
    await db["org_before"].rename("org_after")
    assert await db["org_before"].count_documents({}) == 0
    await db.drop_collection("org_before")  # must not touch the renamed collection
    assert await db["org_after"].count_documents({}) == 5


async def test_reconcilers_on_two_replicas_share_the_work(
    nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    """Leases: two reconcilers racing over the same abandoned operations handle each once."""
    db = nx_client[settings.mongodb_db]
    repos = Repositories.over(db)
    await repos.ensure_indexes()
    for i in range(8):  # eight creates abandoned after their collection was made
        await db.operations.insert_one(
            {"_id": f"op{i}", "kind": "create", "organization_id": f"o{i}", "admin_id": f"a{i}",
             "slug": f"ghost{i}", "lease_until": 0}
        )  # fmt: skip
        await db.name_claims.insert_one(
            {"_id": f"ghost{i}", "organization_id": f"o{i}", "op_id": f"op{i}"}
        )
        await db.organizations.insert_one(
            {"_id": f"o{i}", "organization_name": f"Ghost {i}", "slug": f"ghost{i}",
             "collection_name": f"org_ghost{i}", "status": "creating", "pending_op": f"op{i}",
             "admin": {"admin_id": f"a{i}", "email": f"a{i}@example.com"},
             "created_at": utcnow(), "updated_at": utcnow()}
        )  # fmt: skip
        await db.create_collection(f"org_ghost{i}")

    def reconciler(owner: str) -> Reconciler:
        return organization_reconciler(repos, settings, owner)

    one, two = await asyncio.gather(reconciler("r1").run_once(), reconciler("r2").run_once())
    assert one["create_undone"] + two["create_undone"] == 8
    assert sum(one.values()) + sum(two.values()) == 8  # nobody handled an operation twice
    assert await collections(nx_client, settings.mongodb_db) == set()
    assert await db.operations.count_documents({}) == 0
    assert await db.organizations.count_documents({}) == 0
    assert await db.name_claims.count_documents({}) == 0


async def test_live_operation_is_left_alone_until_its_lease_ends(
    nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    db = nx_client[settings.mongodb_db]
    repos = Repositories.over(db)
    await db.operations.insert_one(
        {"_id": "live", "kind": "create", "organization_id": "o", "admin_id": "a",
         "slug": "busy", "lease_until": epoch_ms(60)}
    )  # fmt: skip
    assert sum((await organization_reconciler(repos, settings, "r").run_once()).values()) == 0
    assert await db.operations.count_documents({"_id": "live"}) == 1


def organization_reconciler(repos: Repositories, settings: Settings, owner: str) -> Reconciler:
    """A reconciler wired as `app.wiring` wires it, named `owner`."""
    ctx = OperationContext(settings=settings, owner=owner, fault=FaultInjector(frozenset()))
    steps = OrganizationSteps(
        repos.orgs,
        repos.admins,
        repos.claims,
        repos.tenants,
        EventHook(),
        team=repos.team,
        invitations=repos.invitations,
        api_keys=repos.api_keys,
        counts=repos.placements,
    )
    return Reconciler(repos.ops, {kind: steps.reconcile for kind in KINDS}, ctx)
