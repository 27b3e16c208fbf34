"""Tenant placement on real stores: two nx-27017 processes stand in for two clusters (`main` and
`eu`), each holding several databases. New organizations spread over the shared databases, a
dedicated plan gets a database of its own, rename and delete act where the tenant is, a move
carries every document and index across clusters, and a cluster that is down fails only its own
tenants' operations."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pymongo
import pytest
from fastapi import FastAPI
from pymongo import AsyncMongoClient
from pymongo.errors import ConnectionFailure, DuplicateKeyError

from app.kit.db import EmbeddedMongo
from app.kit.watch import LocalWrites
from tests.support.apps import app_client, make_settings, new_key
from tests.support.clients import PASSWORD, bearer, create_and_login

pytestmark = pytest.mark.realstore


@dataclass
class Site:
    http: httpx.AsyncClient
    app: FastAPI
    db: str  # the control database (MONGODB_DB), also main's first tenant database
    main: AsyncMongoClient[Any]
    eu: AsyncMongoClient[Any]
    eu_server: EmbeddedMongo

    def client(self, cluster: str) -> AsyncMongoClient[Any]:
        return self.main if cluster == "main" else self.eu

    async def collections(self, placement: dict[str, str]) -> list[str]:
        names = await self.client(placement["cluster"])[
            placement["database"]
        ].list_collection_names()
        return sorted(n for n in names if n.startswith("org_"))

    async def operator(self, *scopes: str) -> dict[str, str]:
        return {"X-API-Key": await new_key(self.app, *scopes, name=uuid.uuid4().hex[:8])}


@pytest.fixture
async def site(clusters: tuple[EmbeddedMongo, ...]) -> AsyncIterator[Site]:
    main_server, eu_server = clusters
    db = "p_" + uuid.uuid4().hex[:10]
    settings = make_settings(
        mongodb_db=db,
        tenant_clusters=f"eu={eu_server.url}",
        tenant_databases=f"main={db},{db}_b;eu={db}_eu",
        dedicated_database_plans="enterprise",
    )
    main: AsyncMongoClient[Any] = AsyncMongoClient(
        main_server.url, tz_aware=True, event_listeners=[LocalWrites()]
    )
    eu: AsyncMongoClient[Any] = AsyncMongoClient(eu_server.url, serverSelectionTimeoutMS=2000)
    try:
        async with app_client(settings, main) as (http, app):
            yield Site(http, app, db, main, eu, eu_server)
    finally:
        await main.close()
        await eu.close()


def unique(name: str) -> str:
    return f"{name} {uuid.uuid4().hex[:6]}"


async def create(site: Site, name: str, **extra: Any) -> dict[str, Any]:
    body = {"organization_name": name, "email": f"{uuid.uuid4().hex[:8]}@x.com",
            "password": PASSWORD, **extra}  # fmt: skip
    headers = await site.operator("org:create") if "plan" in extra else {}
    res = await site.http.post("/org/create", json=body, headers=headers)
    assert res.status_code == 201, res.text
    org: dict[str, Any] = res.json()
    return org


async def test_new_organizations_spread_over_every_shared_database(site: Site) -> None:
    # Unicode names, on every placement (a collection name of non-ASCII letters in each).
    orgs = [await create(site, unique("Ünïcødé Spréad")) for _ in range(6)]
    assert all(o["collection_name"].startswith("org_ünïcødé_spréad") for o in orgs)
    placements = [(o["placement"]["cluster"], o["placement"]["database"]) for o in orgs]
    expected = {("main", site.db), ("main", f"{site.db}_b"), ("eu", f"{site.db}_eu")}
    assert set(placements) == expected
    assert all(placements.count(p) == 2 for p in expected), placements  # fewest tenants first
    for org in orgs:
        # The collection is where the record says, and nowhere else.
        assert org["collection_name"] in await site.collections(org["placement"])
        others = [{"cluster": c, "database": d} for c, d in expected - {
            (org["placement"]["cluster"], org["placement"]["database"])}]  # fmt: skip
        for other in others:
            assert org["collection_name"] not in await site.collections(other)
    counts = {d["_id"]: d["tenants"] async for d in site.main[site.db]["placements"].find()}
    assert counts == {f"{c}/{d}": 2 for c, d in expected}


async def test_a_dedicated_plan_gets_its_own_database_and_delete_drops_it(site: Site) -> None:
    name = unique("Société Générale")  # Unicode names on a dedicated database too
    org = await create(site, name, plan="enterprise")
    own = f"orgdata_{org['organization_id']}"
    assert org["placement"] == {"cluster": "main", "database": own}  # main: fewest tenants
    assert await site.collections(org["placement"]) == [org["collection_name"]]
    login = await site.http.post(
        "/admin/login", json={"email": org["admin"]["email"], "password": PASSWORD}
    )
    token = login.json()["access_token"]
    res = await site.http.delete(
        "/org/delete", params={"organization_name": name}, headers=bearer(token)
    )
    assert res.status_code == 204, res.text
    assert own not in await site.main.list_database_names()


async def test_a_plan_at_creation_needs_an_api_key(site: Site) -> None:
    body = {"organization_name": unique("Plan"), "email": "p@x.com", "password": PASSWORD,
            "plan": "enterprise"}  # fmt: skip
    res = await site.http.post("/org/create", json=body)
    assert res.status_code == 403 and res.json()["code"] == "forbidden", res.text


async def test_rename_and_delete_act_where_the_tenant_is(site: Site) -> None:
    # Fill main's two databases first, so that the third organization lands on `eu`.
    for _ in range(2):
        await create(site, unique("Filler"))
    name = unique("Zürich Bank")
    org, token = await create_and_login(site.http, name)
    assert org["placement"]["cluster"] == "eu", org["placement"]
    where = org["placement"]
    tenant = site.eu[where["database"]][org["collection_name"]]
    await tenant.insert_many([{"_id": i, "v": i} for i in range(50)])
    new_name = unique("Zürich Bank Neu")
    res = await site.http.put(
        "/org/update", json={"organization_name": new_name}, headers=bearer(token)
    )
    assert res.status_code == 200, res.text
    renamed = res.json()
    assert renamed["placement"] == where
    assert await site.collections(where) == [renamed["collection_name"]]
    assert await site.eu[where["database"]][renamed["collection_name"]].count_documents({}) == 50
    res = await site.http.delete(
        "/org/delete", params={"organization_name": new_name}, headers=bearer(token)
    )
    assert res.status_code == 204, res.text
    assert await site.collections(where) == []


async def wait_done(site: Site, op_id: str, headers: dict[str, str]) -> dict[str, Any]:
    for _ in range(600):
        res = await site.http.get(f"/operations/{op_id}", headers=headers)
        assert res.status_code == 200, res.text
        if res.json()["status"] not in ("pending", "running"):
            found: dict[str, Any] = res.json()
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"move {op_id} did not end: {res.json()}")


async def move_events(site: Site, org_id: str, at_least: int) -> list[dict[str, Any]]:
    """The organization's `organization.moving`/`moved` events in the feed, once it has
    `at_least` of them (the publisher puts an event in the feed a moment after its write)."""
    headers = await site.operator("events:read")
    for _ in range(100):
        res = await site.http.get("/events", params={"organization_id": org_id}, headers=headers)
        assert res.status_code == 200, res.text
        found = [e for e in res.json()["items"] if e["type"].startswith("organization.mov")]
        if len(found) >= at_least:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} move events in the feed: {found}")


async def test_a_move_across_clusters_keeps_every_document_and_index(site: Site) -> None:
    name = unique("Mover")
    org, token = await create_and_login(site.http, name)
    source = org["placement"]
    assert source == {"cluster": "main", "database": site.db}
    tenant = site.main[site.db][org["collection_name"]]
    docs = [{"_id": i, "email": f"u{i}@x.com", "n": i, "tags": ["a", i % 7]} for i in range(10_000)]
    await tenant.insert_many(docs)
    await tenant.create_index("email", unique=True, name="email_unique")
    # (nx-27017 names indexes itself: compare with what the source has)
    source_indexes = {i["name"]: i async for i in await tenant.list_indexes()}
    assert len(source_indexes) == 2
    mover = await site.operator("org:move")
    target = {"cluster": "eu", "database": f"{site.db}_eu"}

    res = await site.http.post(f"/orgs/{org['organization_id']}/move", json=target, headers=mover)
    assert res.status_code == 202, res.text
    op_id = res.json()["operation_id"]
    # While it runs: rename, delete and another move are refused.
    busy = [
        await site.http.put("/org/update", json={"organization_name": unique("X")},
                            headers=bearer(token)),
        await site.http.delete("/org/delete", params={"organization_name": name},
                               headers=bearer(token)),
        await site.http.post(f"/orgs/{org['organization_id']}/move", json=source, headers=mover),
    ]  # fmt: skip
    assert [(r.status_code, r.json()["code"]) for r in busy] == [(409, "operation_in_progress")] * 3
    done = await wait_done(site, op_id, mover)
    assert done["status"] == "done", done
    assert done["progress"] == {"phase": "done", "copied": 10_000, "total": 10_000}

    moved = site.eu[target["database"]][org["collection_name"]]
    assert await moved.count_documents({}) == 10_000
    # (in Python's order: nx-27017 sorts integer `_id`s as text)
    assert sorted([d async for d in moved.find({})], key=lambda d: d["_id"]) == docs
    indexes = {i["name"]: i async for i in await moved.list_indexes()}
    assert indexes == source_indexes
    assert [i.get("unique") for i in indexes.values()] == [None, True]
    with pytest.raises(DuplicateKeyError):  # and the unique index holds there
        await moved.insert_one({"_id": "again", "email": "u1@x.com"})
    assert org["collection_name"] not in await site.collections(source)  # source dropped
    got = await site.http.get("/org/get", params={"organization_name": name}, headers=bearer(token))
    assert got.json()["placement"] == target
    # The events around it: moving (still at the source), then moved (at the target).
    events = await move_events(site, org["organization_id"], at_least=2)
    feed = [(e["type"], e["data"]["placement"]) for e in events]
    assert feed == [("organization.moving", source), ("organization.moved", target)], feed


async def test_move_refuses_what_is_not_a_placement(site: Site) -> None:
    org = await create(site, unique("Stay"))
    mover = await site.operator("org:move")
    url = f"/orgs/{org['organization_id']}/move"
    cases = [
        ({"cluster": "nowhere", "database": site.db}, 422, "unknown_placement"),
        ({"cluster": "main", "database": "admin"}, 422, "unknown_placement"),
        ({"cluster": "main", "database": "orgdata_0123456789abcdef01234567"}, 422,
         "unknown_placement"),  # another organization's own database
        ({"cluster": "main", "database": "a.b"}, 422, "validation_error"),
        (org["placement"], 409, "already_placed"),
    ]  # fmt: skip
    for body, status, code in cases:
        res = await site.http.post(url, json=body, headers=mover)
        assert (res.status_code, res.json()["code"]) == (status, code), (body, res.text)
    writer = await site.operator("org:write")
    res = await site.http.post(url, json={"cluster": "eu", "database": f"{site.db}_eu"},
                               headers=writer)  # fmt: skip
    assert res.status_code == 403, res.text
    assert (await site.http.get("/operations/nope", headers=mover)).status_code == 404


async def test_a_cluster_down_fails_only_its_own_tenants(site: Site) -> None:
    here = await create(site, unique("Here"))
    await create(site, unique("Here Too"))
    there = await create(site, unique("There"))
    assert there["placement"]["cluster"] == "eu"
    reader = await site.operator("org:read")
    ready = await site.http.get("/ready")
    assert ready.json()["clusters"] == {"main": "up", "eu": "up"}

    # Stand `eu` down (stopped: its port takes connections and answers nothing).
    proc_pid = _pid_of(site.eu_server)
    os.kill(proc_pid, signal.SIGSTOP)
    try:
        stats_there = await site.http.get(f"/orgs/{there['organization_id']}/stats", headers=reader)
        stats_here = await site.http.get(f"/orgs/{here['organization_id']}/stats", headers=reader)
        ready = await site.http.get("/ready")
        created = await create(site, unique("Created While Down"))
    finally:
        os.kill(proc_pid, signal.SIGCONT)
    assert stats_there.status_code == 503, stats_there.text
    assert stats_here.status_code == 200, stats_here.text
    assert ready.status_code == 200 and ready.json()["clusters"] == {"main": "up", "eu": "down"}
    assert created["placement"]["cluster"] == "main"  # the cluster that is down is passed over


def _pid_of(server: EmbeddedMongo) -> int:
    return int(server.pid_file.read_text().strip())


async def test_a_move_whose_source_changed_is_rolled_back_and_the_source_kept(
    site: Site, clusters: tuple[EmbeddedMongo, ...]
) -> None:
    """A tenant written to during the copy (its writers did not pause on
    `organization.moving`) fails verification: the move is rolled back, the target dropped,
    the source kept with every document, and the record unlocked where it was."""
    name = unique("Busy Writer")
    org, token = await create_and_login(site.http, name)
    source = org["placement"]
    tenant = site.main[source["database"]][org["collection_name"]]
    await tenant.insert_many([{"_id": i} for i in range(2_500)])
    moves = site.app.state.svc.moves

    def late_writer(point: str) -> None:
        if point == "move.after_indexes":  # copied, not yet verified: a writer that did not pause
            sync: pymongo.MongoClient[Any] = pymongo.MongoClient(clusters[0].url)
            with sync:
                sync[source["database"]][org["collection_name"]].insert_one({"_id": "late"})

    moves.ctx = replace(moves.ctx, fault=late_writer)
    mover = await site.operator("org:move")
    target = {"cluster": "eu", "database": f"{site.db}_eu"}
    res = await site.http.post(f"/orgs/{org['organization_id']}/move", json=target, headers=mover)
    assert res.status_code == 202, res.text
    ended = await wait_done(site, res.json()["operation_id"], mover)
    assert ended["status"] == "rolled_back", ended
    assert ended["error"] == "verification failed: 2501 documents at the source, 2500 at the target"
    assert await tenant.count_documents({}) == 2_501  # the source, every document
    assert org["collection_name"] not in await site.collections(target)  # the copy dropped
    got = await site.http.get("/org/get", params={"organization_name": name}, headers=bearer(token))
    assert got.json()["placement"] == source
    renamed = await site.http.put(
        "/org/update", json={"organization_name": unique("Still Here")}, headers=bearer(token)
    )
    assert renamed.status_code == 200, renamed.text  # unlocked
    events = await move_events(site, org["organization_id"], at_least=2)
    moved = [e["data"] for e in events if e["type"] == "organization.moved"]
    assert [(d["outcome"], d["placement"]) for d in moved] == [("rolled_back", source)]


async def test_records_of_before_placement_get_the_default_at_start_up(site: Site) -> None:
    """An organization written by a release before placement has no `placement`: a start-up
    records where v1 kept every tenant (nothing moves), and sets the counts from the records
    when there are none."""
    org, token = await create_and_login(site.http, unique("Old Timer"))
    records = site.main[site.db]["organizations"]
    await records.update_one({"_id": org["organization_id"]}, {"$unset": {"placement": ""}})
    await site.main[site.db]["placements"].delete_many({})
    got = await site.http.get(
        "/org/get", params={"organization_name": org["organization_name"]}, headers=bearer(token)
    )
    assert got.json()["placement"] is None  # until a start-up records it
    await site.app.state.svc.prepare()  # what every start-up runs
    got = await site.http.get(
        "/org/get", params={"organization_name": org["organization_name"]}, headers=bearer(token)
    )
    assert got.json()["placement"] == {"cluster": "main", "database": site.db}
    counts = {d["_id"]: d["tenants"] async for d in site.main[site.db]["placements"].find()}
    assert counts == {f"main/{site.db}": 1}


async def test_a_create_abandoned_in_a_dedicated_database_is_undone_there(site: Site) -> None:
    """The create's intent records its placement before anything is made, so the reconciler
    undoes an abandoned create where it was made: here its own database, dropped whole."""
    svc = site.app.state.svc

    def store_lost(point: str) -> None:
        if point == "create.after_collection":  # made everything, then lost the store
            raise ConnectionFailure("store lost")

    svc.orgs.ctx = replace(svc.orgs.ctx, fault=store_lost)
    name = unique("Abandoned Corp")
    body = {"organization_name": name, "email": "abandon@x.com", "password": PASSWORD,
            "plan": "enterprise"}  # fmt: skip
    res = await site.http.post("/org/create", json=body, headers=await site.operator("org:create"))
    assert res.status_code == 503, res.text
    [intent] = await site.main[site.db]["operations"].find({}).to_list(None)
    own = f"orgdata_{intent['organization_id']}"
    assert intent["placement"] == {"cluster": "main", "database": own}
    assert own in await site.main.list_database_names()  # made, then abandoned
    await site.main[site.db]["operations"].update_one(
        {"_id": intent["_id"]}, {"$set": {"lease_until": 0}}
    )  # its lease has run out
    assert dict(await svc.reconciler.run_once()) == {"create_undone": 1}
    assert own not in await site.main.list_database_names()
    assert await site.main[site.db]["organizations"].count_documents({}) == 0
    svc.orgs.ctx = replace(svc.orgs.ctx, fault=lambda point: None)
    again = await site.http.post("/org/create", json={**body, "plan": "free"})
    assert again.status_code == 403  # a plan needs a key; without it, the name is free again:
    del body["plan"]
    assert (await site.http.post("/org/create", json=body)).status_code == 201


async def test_a_resumed_move_never_drops_a_name_given_again_meanwhile(site: Site) -> None:
    """A move stopped after its switch, before dropping its source; the organization is then
    renamed and a new organization takes the old name, in the source's database. The move
    resumed by the reconciler must leave that collection alone: it is not the move's any more."""
    svc = site.app.state.svc
    name = unique("First Holder")
    org, token = await create_and_login(site.http, name)
    assert org["placement"] == {"cluster": "main", "database": site.db}

    def stop_after_switch(point: str) -> None:
        if point == "move.after_switch":
            raise RuntimeError("the process stops here")

    svc.moves.ctx = replace(svc.moves.ctx, fault=stop_after_switch)
    mover = await site.operator("org:move")
    target = {"cluster": "eu", "database": f"{site.db}_eu"}
    res = await site.http.post(f"/orgs/{org['organization_id']}/move", json=target, headers=mover)
    op_id = res.json()["operation_id"]
    for _ in range(200):  # until the record has switched (the move stopped right after)
        got = await site.http.get(
            "/org/get", params={"organization_name": name}, headers=bearer(token)
        )
        if got.json()["placement"] == target:
            break
        await asyncio.sleep(0.02)
    assert got.json()["placement"] == target
    # Until the copy's task has stopped at the fault by itself (its counts written, its hold
    # renewing no lease): cancelling it could land before the counts and skew the next choice.
    for _ in range(200):
        if not svc.moves._tasks:
            break
        await asyncio.sleep(0.02)
    assert not svc.moves._tasks
    svc.moves.ctx = replace(svc.moves.ctx, fault=lambda point: None)
    renamed = await site.http.put(
        "/org/update", json={"organization_name": unique("Renamed Holder")}, headers=bearer(token)
    )
    assert renamed.status_code == 200, renamed.text
    second = await create(site, name)  # the old name, given again
    assert second["collection_name"] == org["collection_name"]
    assert second["placement"] == {"cluster": "main", "database": site.db}  # the move's source
    their = site.main[site.db][second["collection_name"]]
    await their.insert_one({"_id": "theirs"})

    await site.main[site.db]["operations"].update_one({"_id": op_id}, {"$set": {"lease_until": 0}})
    assert dict(await svc.reconciler.run_once()) == {"move_completed": 1}
    assert await their.count_documents({}) == 1  # kept
    status = await site.http.get(f"/operations/{op_id}", headers=mover)
    assert status.json()["status"] == "done"


async def test_shutdown_stops_a_running_move_and_the_reconciler_finishes_it(site: Site) -> None:
    """At shutdown a copy in flight stops (its intent and checkpoint stay); once its lease has
    run out the reconciler goes on from the checkpoint to the end."""
    svc = site.app.state.svc
    org, _ = await create_and_login(site.http, unique("Interrupted"))
    tenant = site.main[site.db][org["collection_name"]]
    await tenant.insert_many([{"_id": f"d{i:05d}"} for i in range(6_000)])
    svc.moves.batch = 100  # many batches: the stop lands in the middle
    mover = await site.operator("org:move")
    target = {"cluster": "eu", "database": f"{site.db}_eu"}
    res = await site.http.post(f"/orgs/{org['organization_id']}/move", json=target, headers=mover)
    op_id = res.json()["operation_id"]
    for _ in range(500):
        status = (await site.http.get(f"/operations/{op_id}", headers=mover)).json()
        if status["progress"]["copied"] >= 300:
            break
        await asyncio.sleep(0.01)
    await svc.moves.stop()
    stopped = (await site.http.get(f"/operations/{op_id}", headers=mover)).json()
    await asyncio.sleep(0.3)
    still = (await site.http.get(f"/operations/{op_id}", headers=mover)).json()
    assert stopped == still and still["status"] == "running", still  # nothing goes on
    assert 300 <= still["progress"]["copied"] < 6_000
    await site.main[site.db]["operations"].update_one({"_id": op_id}, {"$set": {"lease_until": 0}})
    assert dict(await svc.reconciler.run_once()) == {"move_completed": 1}
    moved = site.eu[target["database"]][org["collection_name"]]
    assert await moved.count_documents({}) == 6_000
