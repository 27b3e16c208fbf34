"""What the schemathesis run (`make fuzz`) found, pinned so it stays fixed."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from app.kit.settings import Settings
from app.tenancy.names import NameRules
from tests.support.clients import create_and_login, org_body
from tests.support.consistency import assert_consistent

Pair = tuple[httpx.AsyncClient, FastAPI]


async def test_login_with_a_password_over_72_bytes_is_a_plain_401(api: httpx.AsyncClient) -> None:
    """bcrypt 5 raises past 72 bytes: that was a 500. Now it is the usual 401, same body."""
    await create_and_login(api, "Acme", "a@acme.com")
    long_pw = "é" * 100  # 200 bytes
    known = await api.post("/admin/login", json={"email": "a@acme.com", "password": long_pw})
    unknown = await api.post("/admin/login", json={"email": "n@x.com", "password": long_pw})
    assert known.status_code == unknown.status_code == 401
    assert known.json() == unknown.json()


async def test_a_body_that_is_not_utf8_is_a_documented_400(api: httpx.AsyncClient) -> None:
    for path in ("/org/create", "/admin/login"):
        res = await api.post(
            path, content=b"\xff\xfe{\x80}", headers={"content-type": "application/json"}
        )
        assert res.status_code == 400, res.text
        assert res.json()["code"] == "bad_request"
    spec = (await api.get("/openapi.json")).json()
    for path, method in (("/org/create", "post"), ("/org/update", "put"), ("/admin/login", "post")):
        documented = spec["paths"][path][method]["responses"]
        assert {"400", "413", "422"} <= set(documented), (path, sorted(documented))


async def test_non_ascii_names_work_on_the_embedded_store(
    real_api: Pair, nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    """nx-27017 refused non-ASCII collection names (MongoDB accepts them): that was a 500 with a
    failed clean-up, then a 422. Its launcher (app/kit/nxserver.py) now lifts that limit, so the
    start-up probe finds Unicode names work and they behave as the contract says."""
    http, app = real_api
    assert not app.state.svc.orgs.names.ascii_only
    res = await http.post("/org/create", json=org_body("Café Zürich", "cafe@x.com"))
    assert res.status_code == 201, res.text
    assert res.json()["collection_name"] == "org_café_zürich"
    _, token = await create_and_login(http, "Plain", "p@x.com")
    res = await http.put(
        "/org/update",
        json={"organization_name": "Plaîn Two"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert res.status_code == 200, res.text
    orgs = await assert_consistent(nx_client[settings.mongodb_db])
    assert sorted(o["slug"] for o in orgs) == ["café_zürich", "plaîn_two"]


async def test_a_store_that_refuses_non_ascii_names_gets_a_clear_422(
    real_api: Pair, nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    """On a store whose start-up probe found non-ASCII collection names refused (nx-27017
    without the launcher's patch), such names are a 422 that leaves nothing behind, not a 500."""
    http, app = real_api
    svc = app.state.svc
    svc.orgs.names = NameRules(svc.settings.mongodb_db, ascii_only=True)  # as the probe finds
    res = await http.post("/org/create", json=org_body("Café Zürich", "cafe@x.com"))
    assert res.status_code == 422, res.text
    assert "ASCII" in res.json()["detail"][0]["msg"]
    _, token = await create_and_login(http, "Plain", "p@x.com")
    res = await http.put(
        "/org/update",
        json={"organization_name": "Plaîn Two"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert res.status_code == 422
    orgs = await assert_consistent(nx_client[settings.mongodb_db])
    assert [o["slug"] for o in orgs] == ["plain"]


async def test_the_in_memory_double_keeps_unicode_names(api: httpx.AsyncClient) -> None:
    res = await api.post("/org/create", json=org_body("Café Zürich", "cafe@x.com"))
    assert res.status_code == 201 and res.json()["slug"] == "café_zürich"


async def test_openapi_lists_the_security_endpoints_and_schemes(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    for path in (
        "/admin/logout",
        "/admin/logout-all",
        "/org/audit",
        "/org/list",
        "/.well-known/jwks.json",
    ):
        assert path in spec["paths"], path
    schemes = spec["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"http", "apiKey"}
    get_security = spec["paths"]["/org/get"]["get"]["security"]
    assert len(get_security) == 2  # bearer OR api key
