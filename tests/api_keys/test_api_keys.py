"""Service API keys: CLI-made, hashed, scoped (org:read, org:create, org:list), revocable."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from app.api_keys.service import KEY_PATTERN
from app.kit.db import EmbeddedMongo
from tests.support.apps import custom_app, new_key
from tests.support.clients import bearer, create_and_login, org_body
from tests.support.processes import PROC_DB, ROOT, service_env, services

Pair = tuple[httpx.AsyncClient, FastAPI]


def assert_error(res: httpx.Response, status: int, code: str) -> None:
    assert res.status_code == status, res.text
    assert res.json()["code"] == code, res.text


def key_header(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


@pytest.fixture
async def pair() -> Any:
    async with custom_app() as p:
        yield p


async def test_org_read_key_reads_any_organization(pair: Pair) -> None:
    http, app = pair
    acme, _ = await create_and_login(http, "Acme", "a@acme.com")
    await create_and_login(http, "Globex", "g@globex.com")
    key = await new_key(app, "org:read")
    for name, org_id in (("acme", acme["organization_id"]), ("GLOBEX", None)):
        res = await http.get(
            "/org/get", params={"organization_name": name}, headers=key_header(key)
        )
        assert res.status_code == 200, res.text
        if org_id:
            assert res.json()["organization_id"] == org_id
        assert "$2b$" not in res.text and "hash" not in res.text
    res = await http.get("/org/get", params={"organization_name": "Nope"}, headers=key_header(key))
    assert_error(res, 404, "not_found")


async def test_wrong_scope_is_403_unknown_key_is_401(pair: Pair) -> None:
    http, app = pair
    await create_and_login(http, "Acme", "a@acme.com")
    lister = await new_key(app, "org:list")
    reader = await new_key(app, "org:read")
    params = {"organization_name": "Acme"}
    assert_error(
        await http.get("/org/get", params=params, headers=key_header(lister)),
        403,
        "insufficient_scope",
    )
    assert_error(await http.get("/org/list", headers=key_header(reader)), 403, "insufficient_scope")
    assert_error(
        await http.post("/org/create", json=org_body("New"), headers=key_header(reader)),
        403,
        "insufficient_scope",
    )
    # Unknown, malformed, or tampered keys: 401, never a hint of which part was wrong.
    tampered = reader[:-1] + ("A" if reader[-1] != "A" else "B")
    unknown = "osk_000000000000_" + "A" * 43
    for bad in (unknown, tampered, "osk_x", "Bearer " + reader, "x" * 5000):
        res = await http.get("/org/get", params=params, headers=key_header(bad))
        assert_error(res, 401, "invalid_api_key")
        assert res.headers["www-authenticate"] == "Bearer"
    # No key (or an empty one) and no token: the usual 401.
    assert (await http.get("/org/list")).status_code == 401
    assert (await http.get("/org/get", params=params, headers=key_header(""))).status_code == 401


async def test_admin_tokens_cannot_list_organizations(pair: Pair) -> None:
    http, _ = pair
    _, token = await create_and_login(http, "Acme", "a@acme.com")
    assert (await http.get("/org/list", headers=bearer(token))).status_code == 401


async def test_list_pages_through_every_organization(pair: Pair) -> None:
    http, app = pair
    names = [f"Org {c}" for c in "edcbaf"]
    for name in names:
        assert (await http.post("/org/create", json=org_body(name))).status_code == 201
    key = await new_key(app, "org:list")
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 4}
        if cursor:
            params["cursor"] = cursor
        res = await http.get("/org/list", params=params, headers=key_header(key))
        assert res.status_code == 200, res.text
        page = res.json()
        seen += [o["slug"] for o in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 2
    assert seen == sorted(f"org_{c}" for c in "abcdef")
    res = await http.get("/org/list", params={"cursor": "%%%"}, headers=key_header(key))
    assert_error(res, 422, "validation_error")


async def test_org_create_requires_a_key_when_configured() -> None:
    async with custom_app(org_create_requires_key=True) as (http, app):
        res = await http.post("/org/create", json=org_body("Acme"))
        assert_error(res, 401, "not_authenticated")
        reader = await new_key(app, "org:read")
        res = await http.post("/org/create", json=org_body("Acme"), headers=key_header(reader))
        assert_error(res, 403, "insufficient_scope")
        creator = await new_key(app, "org:create", name="signup")
        res = await http.post("/org/create", json=org_body("Acme"), headers=key_header(creator))
        assert res.status_code == 201, res.text
        entry = await app.state.svc.repos.audit.col.find_one(
            {"action": "org.create", "outcome": "success"}
        )
        assert entry["actor"] == {"type": "api_key", "id": creator[4:16]}


async def test_keys_are_stored_only_as_hashes_and_record_last_use(pair: Pair) -> None:
    http, app = pair
    await create_and_login(http, "Acme", "a@acme.com")
    key = await new_key(app, "org:read")
    match = KEY_PATTERN.match(key)
    assert match is not None
    col = app.state.svc.repos.api_keys.col
    doc = await col.find_one({"_id": match.group(1)})
    assert key not in json.dumps(doc, default=str)
    assert match.group(2) not in json.dumps(doc, default=str)
    assert doc["hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert doc["prefix"] == key[:16] and doc["last_used_ms"] is None
    res = await http.get("/org/get", params={"organization_name": "Acme"}, headers=key_header(key))
    assert res.status_code == 200
    assert (await col.find_one({"_id": match.group(1)}))["last_used_ms"] > 0
    # The listing never carries the hash.
    listed = await app.state.svc.api_keys.list_keys()
    assert listed and all("hash" not in d for d in listed)


async def test_revoked_key_is_refused(pair: Pair) -> None:
    http, app = pair
    await create_and_login(http, "Acme", "a@acme.com")
    key = await new_key(app, "org:read")
    params = {"organization_name": "Acme"}
    assert (await http.get("/org/get", params=params, headers=key_header(key))).is_success
    from app.audit.service import Actor, RequestMeta

    svc = app.state.svc.api_keys
    assert await svc.revoke(key[:16], actor=Actor("cli"), meta=RequestMeta()) is not None
    res = await http.get("/org/get", params=params, headers=key_header(key))
    assert_error(res, 401, "invalid_api_key")
    assert await svc.revoke(key[:16], actor=Actor("cli"), meta=RequestMeta()) is None


def run_cli(nx: EmbeddedMongo, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **service_env(nx)}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "api-key", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_cli_create_list_revoke_against_a_running_service(
    nx_server: EmbeddedMongo, nx_client: AsyncMongoClient[Any], logs_dir: Path
) -> None:
    async with (
        services(nx_server, logs_dir, count=1) as (svc,),
        httpx.AsyncClient(timeout=30) as http,
    ):
        assert (await http.post(svc.url + "/org/create", json=org_body("Acme"))).is_success
        made = await asyncio.to_thread(
            run_cli, nx_server, "create", "--name", "billing", "--scopes", "org:read,org:list"
        )
        assert made.returncode == 0, made.stderr
        created = json.loads(made.stdout)
        key = created["key"]
        assert KEY_PATTERN.match(key) and created["prefix"] == key[:16]
        assert created["scopes"] == ["org:list", "org:read"]
        assert "cannot be shown again" in made.stderr

        res = await http.get(
            svc.url + "/org/get", params={"organization_name": "acme"}, headers=key_header(key)
        )
        assert res.status_code == 200, res.text

        listed = await asyncio.to_thread(run_cli, nx_server, "list")
        assert listed.returncode == 0, listed.stderr
        rows = [json.loads(line) for line in listed.stdout.splitlines()]
        assert [r["id"] for r in rows] == [created["id"]]
        assert rows[0]["last_used_at"] is not None  # the request above was recorded
        assert key not in listed.stdout and "hash" not in listed.stdout

        bad = await asyncio.to_thread(
            run_cli, nx_server, "create", "--name", "x", "--scopes", "org:delete"
        )
        assert bad.returncode != 0 and "org:delete" not in bad.stdout

        revoked = await asyncio.to_thread(run_cli, nx_server, "revoke", created["prefix"])
        assert revoked.returncode == 0, revoked.stderr
        assert json.loads(revoked.stdout)["status"] == "revoked"
        res = await http.get(
            svc.url + "/org/get", params={"organization_name": "acme"}, headers=key_header(key)
        )
        assert res.status_code == 401
        again = await asyncio.to_thread(run_cli, nx_server, "revoke", created["id"])
        assert again.returncode == 1
        assert (await asyncio.to_thread(run_cli, nx_server, "list")).stdout == ""
        everything = await asyncio.to_thread(run_cli, nx_server, "list", "--all")
        assert json.loads(everything.stdout)["revoked_at"] is not None
    # The CLI's actions are audited too, without the key.
    entries = (
        await nx_client[PROC_DB]["audit_log"].find({"action": {"$regex": "^api_key"}}).to_list(None)
    )
    assert sorted(e["action"] for e in entries) == [
        "api_key.create",
        "api_key.revoke",
        "api_key.revoke",
    ]
    assert key not in json.dumps(entries, default=str)


async def test_access_log_names_the_api_key_never_the_key(caplog: pytest.LogCaptureFixture) -> None:
    async with custom_app() as (http, app):
        assert (await http.post("/org/create", json=org_body("Logged"))).status_code == 201
        key = await new_key(app, "org:read")
        caplog.set_level("INFO", logger="orgsvc.access")
        res = await http.get(
            "/org/get", params={"organization_name": "Logged"}, headers=key_header(key)
        )
        assert res.status_code == 200
    [line] = [r for r in caplog.records if r.name == "orgsvc.access"]
    match = KEY_PATTERN.match(key)
    assert match is not None
    assert getattr(line, "api_key_id", None) == match.group(1)  # the key's public id
    assert key not in caplog.text and match.group(2) not in caplog.text
