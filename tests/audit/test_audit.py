"""The audit log: an entry for every mutating action and login, never a secret, paged per org."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pymongo import AsyncMongoClient
from pymongo.errors import AutoReconnect

from app.audit.service import clean
from app.kit.settings import Settings
from tests.support.apps import custom_app
from tests.support.clients import PASSWORD, bearer, create_and_login, org_body

Pair = tuple[httpx.AsyncClient, FastAPI]
NEW_PASSWORD = "a-brand-new-password"


async def all_entries(app: FastAPI) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = await app.state.svc.repos.audit.col.find().to_list(None)
    return docs


def assert_no_secrets(entries: list[dict[str, Any]], *secrets: str) -> None:
    dumped = json.dumps(entries, default=str)
    for secret in secrets:
        assert secret not in dumped
    assert "$2b$" not in dumped and "password_hash" not in dumped


async def test_every_action_is_audited_without_secrets() -> None:
    async with custom_app() as (http, app):
        rid = {"X-Request-ID": "req-create-1"}
        res = await http.post("/org/create", json=org_body("Acme", "a@acme.com"), headers=rid)
        org_id = res.json()["organization_id"]
        admin_id = res.json()["admin"]["admin_id"]
        assert (await http.post("/org/create", json=org_body("Acme", "b@x.com"))).status_code == 409
        bad = await http.post("/admin/login", json={"email": "a@acme.com", "password": "nope-nope"})
        assert bad.status_code == 401
        ghost = await http.post("/admin/login", json={"email": "g@x.com", "password": "nope-nope"})
        assert ghost.status_code == 401
        login = await http.post("/admin/login", json={"email": "a@acme.com", "password": PASSWORD})
        token = login.json()["access_token"]
        res = await http.put("/org/update", json={"email": "boss@acme.com"}, headers=bearer(token))
        assert res.status_code == 200
        res = await http.put(
            "/org/update", json={"organization_name": "Acme Two"}, headers=bearer(token)
        )
        assert res.status_code == 200
        res = await http.put("/org/update", json={"password": NEW_PASSWORD}, headers=bearer(token))
        assert res.status_code == 200
        login = await http.post(
            "/admin/login", json={"email": "boss@acme.com", "password": NEW_PASSWORD}
        )
        token = login.json()["access_token"]
        assert (await http.post("/admin/logout", headers=bearer(token))).status_code == 204
        login = await http.post(
            "/admin/login", json={"email": "boss@acme.com", "password": NEW_PASSWORD}
        )
        token = login.json()["access_token"]
        assert (await http.post("/admin/logout-all", headers=bearer(token))).status_code == 204
        login = await http.post(
            "/admin/login", json={"email": "boss@acme.com", "password": NEW_PASSWORD}
        )
        token = login.json()["access_token"]
        res = await http.delete(
            "/org/delete", params={"organization_name": "Acme Two"}, headers=bearer(token)
        )
        assert res.status_code == 204

        entries = await all_entries(app)
        seen = [
            (e["action"], e["outcome"], e["code"])
            for e in sorted(entries, key=lambda e: (e["at_ms"], e["_id"]))
        ]
        assert seen == [
            ("org.create", "success", None),
            ("org.create", "failure", "organization_exists"),
            ("admin.login", "failure", "invalid_credentials"),
            ("admin.login", "failure", "invalid_credentials"),
            ("session.created", "success", None),
            ("admin.login", "success", None),
            ("org.update", "success", None),
            ("org.rename", "success", None),
            ("org.update", "success", None),
            ("session.created", "success", None),
            ("admin.login", "success", None),
            ("session.ended", "success", None),
            ("admin.logout", "success", None),
            ("session.created", "success", None),
            ("admin.login", "success", None),
            ("admin.logout_all", "success", None),
            ("session.created", "success", None),
            ("admin.login", "success", None),
            ("org.delete", "success", None),
        ]
        for entry in entries:
            assert entry["ip"] == "127.0.0.1"
            assert entry["request_id"]
            assert isinstance(entry["at"], datetime)
        first = min(entries, key=lambda e: e["at_ms"])
        assert first["request_id"] == "req-create-1"
        assert first["actor"] == {"type": "anonymous", "id": None}
        assert first["organization_id"] == org_id
        by_action = {e["action"]: e for e in entries}
        assert by_action["org.rename"]["details"] == {
            "fields": ["organization_name"], "from": "Acme", "to": "Acme Two"
        }  # fmt: skip
        password_change = [
            e
            for e in entries
            if e["action"] == "org.update" and "password" in e["details"]["fields"]
        ]
        assert len(password_change) == 1  # the field's name, never its value
        assert by_action["admin.logout"]["actor"] == {"type": "admin", "id": admin_id}
        wrong_pw, unknown = [e for e in entries if e["code"] == "invalid_credentials"]
        assert wrong_pw["organization_id"] == org_id  # the org sees attempts on its admin
        assert unknown["organization_id"] is None and unknown["actor"]["type"] == "anonymous"
        assert_no_secrets(entries, PASSWORD, NEW_PASSWORD, token, "nope-nope")


async def test_rate_limited_logins_are_audited() -> None:
    async with custom_app(login_max_failures_per_email=1) as (http, app):
        for _ in range(2):
            await http.post("/admin/login", json={"email": "x@x.com", "password": "whatever1"})
        codes = sorted(e["code"] for e in await all_entries(app))
        assert codes == ["invalid_credentials", "rate_limited"]


async def test_get_audit_is_the_callers_org_newest_first_with_cursor() -> None:
    async with custom_app() as (http, _app):
        _, token = await create_and_login(http, "Acme", "a@acme.com")
        _, other = await create_and_login(http, "Globex", "g@globex.com")
        for i in range(5):
            res = await http.put(
                "/org/update", json={"organization_name": f"Acme {i}"}, headers=bearer(token)
            )
            assert res.status_code == 200
        seen: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 3}
            if cursor:
                params["cursor"] = cursor
            res = await http.get("/org/audit", params=params, headers=bearer(token))
            assert res.status_code == 200, res.text
            assert res.headers["cache-control"] == "no-store"
            page = res.json()
            assert len(page["items"]) <= 3
            seen += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                break
        actions = [e["action"] for e in seen]
        # create, session, login, 5 renames: newest first, nothing of Globex.
        assert actions == ["org.rename"] * 5 + ["admin.login", "session.created", "org.create"]
        assert [e["details"]["to"] for e in seen[:5]] == [f"Acme {i}" for i in range(4, -1, -1)]
        assert len({e["id"] for e in seen}) == 8
        times = [e["at"] for e in seen]
        assert times == sorted(times, reverse=True)
        globex = (await http.get("/org/audit", headers=bearer(other))).json()["items"]
        assert [e["action"] for e in globex] == ["admin.login", "session.created", "org.create"]
        for bad in ("nonsense", "MTIz", "x" * 300):
            res = await http.get("/org/audit", params={"cursor": bad}, headers=bearer(token))
            assert res.status_code == 422 and res.json()["code"] == "validation_error"
        assert (await http.get("/org/audit")).status_code == 401


async def test_deleted_orgs_entries_expire_after_retention(
    real_api: Pair, nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    http, _app = real_api
    org, token = await create_and_login(http, "Acme", "a@acme.com")
    keep, _ = await create_and_login(http, "Keep", "k@keep.com")
    res = await http.delete(
        "/org/delete", params={"organization_name": "Acme"}, headers=bearer(token)
    )
    assert res.status_code == 204
    col = nx_client[settings.mongodb_db]["audit_log"]
    gone = await col.find({"organization_id": org["organization_id"]}).to_list(None)
    actions = {e["action"] for e in gone}
    assert actions == {"org.create", "session.created", "admin.login", "org.delete"}
    retention = timedelta(days=settings.audit_retention_days)
    now = datetime.now(UTC)
    for entry in gone:
        # nx-27017 stores a `$set` date as a string; MongoDB keeps it a date (both parse).
        expires = entry["expires_at"]
        expires = datetime.fromisoformat(expires) if isinstance(expires, str) else expires
        expires = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
        assert abs((expires - (now + retention)).total_seconds()) < 60
        assert entry["expires_ms"] > 0
    # The live organization's entries are kept (a TTL index ignores a null date).
    live = await col.find({"organization_id": keep["organization_id"]}).to_list(None)
    assert live and all(e["expires_at"] is None for e in live)
    indexes = await col.index_information()
    assert any(
        v.get("expireAfterSeconds") == 0 and v["key"][0][0] == "expires_at"
        for v in indexes.values()
    ), indexes


async def test_entries_of_no_organization_get_a_retention_clock() -> None:
    async with custom_app(audit_retention_days=7) as (http, app):
        await http.post("/admin/login", json={"email": "nobody@x.com", "password": "whatever1"})
        (entry,) = await all_entries(app)
        assert entry["organization_id"] is None
        expires = entry["expires_at"].replace(tzinfo=UTC)
        assert abs((expires - datetime.now(UTC) - timedelta(days=7)).total_seconds()) < 60


async def test_a_failed_audit_write_does_not_fail_the_action(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with custom_app() as (http, app):
        repo = app.state.svc.repos.audit

        async def broken(entry: Any, **_: Any) -> None:
            raise AutoReconnect("audit store down")

        repo.insert = broken
        with caplog.at_level(logging.ERROR, logger="orgsvc.audit"):
            res = await http.post("/org/create", json=org_body("Acme", "a@acme.com"))
        assert res.status_code == 201  # the organization exists: the answer says so
        records = [r for r in caplog.records if r.getMessage() == "audit entry not written"]
        assert len(records) == 1
        logged = records[0].__dict__["audit"]
        assert logged["action"] == "org.create" and logged["outcome"] == "success"
        assert PASSWORD not in json.dumps(logged, default=str)


def test_details_are_cleaned_of_secret_keys() -> None:
    dirty = {"password": "x", "Token": "t", "nested": {"api_key": "k", "ok": 1}, "name": "n"}
    assert clean(dirty) == {"nested": {"ok": 1}, "name": "n"}
