"""Two service processes (uvicorn, different ports) on one nx-27017 server."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from tests.support.clients import PASSWORD, bearer, org_body
from tests.support.consistency import assert_consistent
from tests.support.processes import PROCS_DB as DB
from tests.support.processes import ServiceProcess, once_seen


async def test_create_race_across_two_processes(
    replicas: tuple[ServiceProcess, ServiceProcess], nx_client: AsyncMongoClient[Any]
) -> None:
    a, b = replicas
    spellings = ["Shared Name", "shared-name", "SHARED name", "shared_name"]
    async with httpx.AsyncClient(timeout=30) as http:
        results = await asyncio.gather(
            *(
                http.post(
                    (a if i % 2 else b).url + "/org/create",
                    json=org_body(spellings[i % len(spellings)], f"p{i}@x.com"),
                )
                for i in range(16)
            )
        )
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(201) == 1, statuses
    assert statuses.count(409) == 15, statuses
    orgs = await assert_consistent(nx_client[DB])
    assert [o["collection_name"] for o in orgs] == ["org_shared_name"]


async def test_password_change_on_one_revokes_on_the_other(
    replicas: tuple[ServiceProcess, ServiceProcess],
) -> None:
    a, b = replicas
    async with httpx.AsyncClient(timeout=30) as http:
        assert (
            await http.post(a.url + "/org/create", json=org_body("Rev", "rev@x.com"))
        ).status_code == 201
        login = await http.post(
            b.url + "/admin/login", json={"email": "rev@x.com", "password": PASSWORD}
        )
        token = login.json()["access_token"]
        params = {"organization_name": "Rev"}
        assert (
            await http.get(b.url + "/org/get", params=params, headers=bearer(token))
        ).status_code == 200
        res = await http.put(
            a.url + "/org/update", json={"password": "another-pass"}, headers=bearer(token)
        )
        assert res.status_code == 200
        res = await once_seen(
            lambda: http.get(b.url + "/org/get", params=params, headers=bearer(token)),
            lambda r: r.status_code == 401,
        )
        assert res.status_code == 401
        assert res.json()["code"] == "token_revoked"
