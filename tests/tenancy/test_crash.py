"""kill -9 in the middle of create, rename and delete; on restart the reconciler repairs.

The fault hook (FAULT_POINTS, test-only) SIGKILLs the service exactly between two writes. The
restarted service, with no fault point, must leave the store consistent: no orphan collection,
admin or organization, no tenant document lost, and the name usable again.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from app.kit.db import EmbeddedMongo
from tests.support.clients import PASSWORD, bearer, org_body
from tests.support.consistency import assert_consistent
from tests.support.events import of_org, settled_events
from tests.support.processes import PROCS_DB as DB
from tests.support.processes import ServiceProcess
from tests.support.processes import procs_service_env as service_env

TENANT_DOCS = 10_000


async def crash_then_recover(
    nx: EmbeddedMongo, logs: Path, point: str, action: Any
) -> ServiceProcess:
    """Run `action(http, url)` on a service armed to die at `point`; restart it clean."""
    doomed = ServiceProcess(
        service_env(nx, FAULT_POINTS=point, OPERATION_LEASE_SECONDS="1"),
        log_path=logs / "doomed.log",
    )
    await doomed.start()
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            with pytest.raises(httpx.TransportError):
                await action(http, doomed.url)
        assert await doomed.wait_exit() == -9, "the fault hook did not kill the process"
    finally:
        doomed.stop()
    assert "fault injection: SIGKILL at " + point in (logs / "doomed.log").read_text()
    healed = ServiceProcess(
        service_env(nx, RECONCILE_INTERVAL_SECONDS="0.3"), log_path=logs / "healed.log"
    )
    await healed.start()
    return healed


async def wait_reconciled(client: AsyncMongoClient[Any], *, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while await client[DB].operations.count_documents({}) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)


async def setup_orgs(nx: EmbeddedMongo, logs: Path, *orgs: tuple[str, str]) -> list[str]:
    """Create `(name, email)` organizations through a service started for that; their tokens."""
    setup = ServiceProcess(service_env(nx), log_path=logs / "setup.log")
    await setup.start()
    tokens: list[str] = []
    try:
        async with httpx.AsyncClient(base_url=setup.url, timeout=30) as http:
            for name, email in orgs:
                res = await http.post("/org/create", json=org_body(name, email))
                assert res.status_code == 201, res.text
                login = await http.post("/admin/login", json={"email": email, "password": PASSWORD})
                tokens.append(login.json()["access_token"])
    finally:
        setup.stop()
    return tokens


@pytest.mark.parametrize(
    "point",
    [
        "create.after_intent",
        "create.after_claim",
        "create.after_org",
        "create.after_admin",
        "create.after_collection",
        "create.after_activate",
    ],
)
async def test_crash_during_create(
    point: str, nx_server: EmbeddedMongo, nx_client: AsyncMongoClient[Any], logs_dir: Path
) -> None:
    async def create(http: httpx.AsyncClient, url: str) -> None:
        await http.post(url + "/org/create", json=org_body("Phoenix", "ph@x.com"))

    healed = await crash_then_recover(nx_server, logs_dir, point, create)
    try:
        await wait_reconciled(nx_client)
        orgs = await assert_consistent(nx_client[DB])
        async with httpx.AsyncClient(timeout=30) as http:
            again = await http.post(
                healed.url + "/org/create", json=org_body("Phoenix", "ph@x.com")
            )
        events = await settled_events(nx_client[DB])
        if point == "create.after_activate":
            # Every write had landed: the create is complete, so the name is taken.
            assert [o["slug"] for o in orgs] == ["phoenix"]
            assert again.status_code == 409
            # ... and its event exists, once (it was written with the activation).
            assert [e["type"] for e in events] == ["organization.created"]
            assert events[0]["organization_id"] == orgs[0]["_id"]
        else:
            assert orgs == []
            assert again.status_code == 201, again.text
            # The undone create left no event; the new one has its own.
            assert [e["type"] for e in events] == ["organization.created"]
            assert events[0]["organization_id"] == again.json()["organization_id"]
        await assert_consistent(nx_client[DB])
    finally:
        healed.stop()


@pytest.mark.parametrize(
    "point",
    ["rename.after_lock", "rename.after_claim", "rename.after_collection", "rename.after_record"],
)
async def test_crash_during_rename_loses_no_document(
    point: str, nx_server: EmbeddedMongo, nx_client: AsyncMongoClient[Any], logs_dir: Path
) -> None:
    [token] = await setup_orgs(nx_server, logs_dir, ("Big Tenant", "big@x.com"))
    db = nx_client[DB]
    await db["org_big_tenant"].insert_many([{"n": i} for i in range(TENANT_DOCS)])
    await db["org_big_tenant"].create_index("n")

    async def rename(http: httpx.AsyncClient, url: str) -> None:
        await http.put(
            url + "/org/update", json={"organization_name": "Huge Tenant"}, headers=bearer(token)
        )

    healed = await crash_then_recover(nx_server, logs_dir, point, rename)
    try:
        await wait_reconciled(nx_client)
        [org] = await assert_consistent(db)
        # Before the claim the rename is undone; from the claim on it is completed.
        expected = "big_tenant" if point == "rename.after_lock" else "huge_tenant"
        assert org["slug"] == expected
        tenant = db[org["collection_name"]]
        assert await tenant.count_documents({}) == TENANT_DOCS
        assert any(v["key"] == [("n", 1)] for v in (await tenant.index_information()).values())
        # The event exists if and only if the rename happened, once.
        renames = of_org(await settled_events(db), org["_id"]).count("organization.renamed")
        assert renames == (0 if expected == "big_tenant" else 1)
        # The name that is no longer used is free again; the token still works.
        free = "Huge Tenant" if expected == "big_tenant" else "Big Tenant"
        async with httpx.AsyncClient(timeout=30) as http:
            res = await http.get(
                healed.url + "/org/get",
                params={"organization_name": org["organization_name"]},
                headers=bearer(token),
            )
            assert res.status_code == 200, res.text
            again = await http.post(healed.url + "/org/create", json=org_body(free, "free@x.com"))
            assert again.status_code == 201, again.text
        await assert_consistent(db)
        assert await tenant.count_documents({}) == TENANT_DOCS
    finally:
        healed.stop()


@pytest.mark.parametrize(
    "point",
    ["delete.after_lock", "delete.after_drop", "delete.after_admins", "delete.after_record"],
)
async def test_crash_during_delete(
    point: str, nx_server: EmbeddedMongo, nx_client: AsyncMongoClient[Any], logs_dir: Path
) -> None:
    token, _ = await setup_orgs(
        nx_server, logs_dir, ("Goner", "gone@x.com"), ("Bystander", "by@x.com")
    )
    db = nx_client[DB]
    await db["org_bystander"].insert_many([{"n": i} for i in range(100)])

    async def delete(http: httpx.AsyncClient, url: str) -> None:
        await http.delete(
            url + "/org/delete", params={"organization_name": "Goner"}, headers=bearer(token)
        )

    goner = await db.organizations.find_one({"slug": "goner"})
    assert goner is not None
    goner_id = goner["_id"]
    healed = await crash_then_recover(nx_server, logs_dir, point, delete)
    try:
        await wait_reconciled(nx_client)
        orgs = await assert_consistent(db)
        assert [o["slug"] for o in orgs] == ["bystander"]
        # The delete happened: its event exists, once, after the organization's others.
        assert of_org(await settled_events(db), goner_id) == [
            "organization.created",
            "organization.deleted",
        ]
        # The reconciler that finished the delete also started the audit retention clock.
        entries = await db.audit_log.find({"organization_id": goner_id}).to_list(length=None)
        assert entries and all(e.get("expires_ms") for e in entries), entries
        assert await db["org_bystander"].count_documents({}) == 100
        async with httpx.AsyncClient(timeout=30) as http:
            res = await http.get(
                healed.url + "/org/get",
                params={"organization_name": "Goner"},
                headers=bearer(token),
            )
            assert res.status_code == 401
            again = await http.post(
                healed.url + "/org/create", json=org_body("Goner", "gone@x.com")
            )
            assert again.status_code == 201, again.text
        await assert_consistent(db)
    finally:
        healed.stop()


async def test_crash_during_password_change_still_revokes_old_tokens(
    nx_server: EmbeddedMongo, nx_client: AsyncMongoClient[Any], logs_dir: Path
) -> None:
    """kill -9 after the new hash is stored but before the revocation: the reconciler revokes."""
    [token] = await setup_orgs(nx_server, logs_dir, ("Keyholder", "key@x.com"))

    async def change(http: httpx.AsyncClient, url: str) -> None:
        await http.put(
            url + "/org/update", json={"password": "the-new-password"}, headers=bearer(token)
        )

    healed = await crash_then_recover(nx_server, logs_dir, "password.after_hash", change)
    try:
        await wait_reconciled(nx_client)
        await assert_consistent(nx_client[DB])
        async with httpx.AsyncClient(base_url=healed.url, timeout=30) as http:
            res = await http.get(
                "/org/get", params={"organization_name": "Keyholder"}, headers=bearer(token)
            )
            assert res.status_code == 401 and res.json()["code"] == "token_revoked", res.text
            old = await http.post("/admin/login", json={"email": "key@x.com", "password": PASSWORD})
            assert old.status_code == 401
            new = await http.post(
                "/admin/login", json={"email": "key@x.com", "password": "the-new-password"}
            )
            assert new.status_code == 200, new.text
    finally:
        healed.stop()
