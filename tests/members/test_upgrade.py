"""Upgrade in place: a store written by the release before teams (`fixtures/v1_store.json`, made
by that release's own code: `fixtures/make_v1_store.py`) is upgraded at start-up by several
replicas at once; every v1 admin becomes its organization's owner, and v1 tokens keep working
(or stay revoked) exactly as before."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from bson import json_util
from pymongo import AsyncMongoClient

from app.kit.keys import hmac_kid
from app.kit.settings import Settings
from app.organizations.repository import OrganizationRepository
from app.organizations.team import TeamRepository
from tests.support.apps import app_client, new_key
from tests.support.clients import PASSWORD, TEST_SECRET, bearer

FIXTURE = Path(__file__).parent / "fixtures" / "v1_store.json"


def as_of_now(dump: dict[str, list[dict[str, Any]]]) -> None:
    """Move the fixture's revocation clocks to now: it was made at one time and is loaded at
    another, and a logout's denylist mark lasts only as long as the tokens it covers."""
    made = max(o["updated_at"] for o in dump["organizations"])
    made = made if made.tzinfo else made.replace(tzinfo=UTC)
    offset = datetime.now(UTC) - made
    for org in dump["organizations"]:
        if org["admin"].get("denylist_until_ms"):
            org["admin"]["denylist_until_ms"] += int(offset.total_seconds() * 1000)
    for revoked in dump["revoked_tokens"]:
        revoked["expires_at"] = revoked["expires_at"] + offset


async def load_v1_store(db: Any) -> dict[str, list[dict[str, Any]]]:
    dump: dict[str, list[dict[str, Any]]] = json_util.loads(FIXTURE.read_text())
    as_of_now(dump)
    for name, docs in dump.items():
        if docs:
            await db[name].insert_many(docs)
        elif name.startswith("org_"):
            await db.create_collection(name)
    return dump


def v1_token(org: dict[str, Any], *, version: int, jti: str | None = None) -> str:
    """A token as the v1 release issued it (no `role` claim)."""
    now = int(time.time())
    admin_id = org["admin"]["admin_id"]
    claims = {
        "sub": admin_id, "admin_id": admin_id, "organization_id": org["_id"], "iat": now,
        "exp": now + 600, "jti": jti or uuid.uuid4().hex, "iss": "orgsvc", "aud": "orgsvc-api",
        "ver": version,
    }  # fmt: skip
    return jwt.encode(claims, TEST_SECRET, "HS256", headers={"kid": hmac_kid(TEST_SECRET)})


async def test_a_v1_store_is_upgraded_once_by_replicas_starting_together(
    nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    db = nx_client[settings.mongodb_db]
    dump = await load_v1_store(db)
    orgs = {o["organization_name"]: o for o in dump["organizations"]}
    assert all("team" not in o for o in orgs.values())

    # Four replicas' upgrades racing: each record is upgraded exactly once.
    counts = await asyncio.gather(*(TeamRepository(db).upgrade_v1() for _ in range(4)))
    print("upgrades by four racing replicas:", counts)
    assert sum(counts) == 3
    assert await TeamRepository(db).upgrade_v1() == 0  # idempotent

    async with contextlib.AsyncExitStack() as stack:
        # Two replicas starting at once (their start-up runs the upgrade again: nothing to do).
        (http, _), (other, _) = await asyncio.gather(
            stack.enter_async_context(app_client(settings, nx_client)),
            stack.enter_async_context(app_client(settings, nx_client)),
        )
        for name, org in orgs.items():
            stored = await db.organizations.find_one({"_id": org["_id"]})
            assert stored is not None
            admin_id = org["admin"]["admin_id"]
            assert stored["team"]["owners"] == [admin_id]
            assert stored["team"]["members"][admin_id]["role"] == "owner"
            assert stored["team"]["version"] == 1, name
        alpha, beta, gamma = orgs["Alpha"], orgs["Beta"], orgs["Gamma Two"]

        # v1 tokens keep working; the ones v1 had revoked stay revoked.
        for org, version in ((alpha, 0), (beta, 1), (gamma, 0)):
            res = await other.get(
                "/org/get",
                params={"organization_name": org["organization_name"]},
                headers=bearer(v1_token(org, version=version)),
            )
            assert res.status_code == 200, res.text
            assert res.json()["member_count"] == 1
            assert res.json()["admin"]["admin_id"] == org["admin"]["admin_id"]
        before_change = await http.get(
            "/org/members", headers=bearer(v1_token(beta, version=0))
        )  # issued before Beta's password change
        assert before_change.status_code == 401
        [revoked] = dump["revoked_tokens"]
        logged_out = await http.get(
            "/org/members", headers=bearer(v1_token(alpha, version=0, jti=revoked["_id"]))
        )
        assert logged_out.status_code == 401 and logged_out.json()["code"] == "token_revoked"

        # The admins log in as their organizations' owners, and act as owners.
        for email, password in (
            ("a@alpha.com", PASSWORD),
            ("b@beta.com", "beta's new password"),
            ("g@gamma.com", PASSWORD),
        ):
            login = await http.post("/admin/login", json={"email": email, "password": password})
            assert login.status_code == 200, login.text
            token = login.json()["access_token"]
            members = (await other.get("/org/members", headers=bearer(token))).json()["items"]
            assert [(m["email"], m["role"]) for m in members] == [(email, "owner")]
            res = await http.post(
                "/org/invitations",
                json={"email": f"new.{email}", "role": "admin"},
                headers=bearer(token),
            )
            assert res.status_code == 201, res.text


async def test_the_upgrade_runs_at_start_up(
    nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    db = nx_client[settings.mongodb_db]
    await load_v1_store(db)
    async with app_client(settings, nx_client) as (http, _):
        assert await db.organizations.count_documents({"team": {"$exists": False}}) == 0
        assert await db.organizations.count_documents({"order_key": {"$exists": False}}) == 0
        login = await http.post("/admin/login", json={"email": "a@alpha.com", "password": PASSWORD})
        assert login.status_code == 200
        res = await http.get("/org/audit", headers=bearer(login.json()["access_token"]))
        assert res.status_code == 200  # v1's audit entries, read by the owner
        assert any(e["action"] == "org.create" for e in res.json()["items"])


async def test_records_of_before_the_lifecycle_are_listed_after_the_upgrade(
    nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    """Records written before `GET /orgs` existed get their listing key and public state at
    start-up, once whatever the number of replicas, and are then listed like any other."""
    db = nx_client[settings.mongodb_db]
    dump = await load_v1_store(db)
    counts = await asyncio.gather(*(OrganizationRepository(db).upgrade_v2() for _ in range(4)))
    assert sum(counts) == 3, counts
    assert await OrganizationRepository(db).upgrade_v2() == 0
    by_time = sorted(dump["organizations"], key=lambda o: (o["created_at"], o["_id"]))
    async with app_client(settings, nx_client) as (http, app):
        key = {"X-API-Key": await new_key(app, "org:list")}
        res = await http.get("/orgs", params={"limit": 2}, headers=key)
        page = res.json()
        rest = await http.get("/orgs", params={"cursor": page["next_cursor"]}, headers=key)
        listed = page["items"] + rest.json()["items"]
        assert [o["organization_id"] for o in listed] == [o["_id"] for o in by_time]
        assert {(o["status"], o["plan"], o["display_name"]) for o in listed} == {
            ("active", "free", None)
        }
        assert page["total"] == 3
        res = await http.get("/orgs", params={"q": "GAMMA"}, headers=key)
        assert [o["organization_name"] for o in res.json()["items"]] == ["Gamma Two"]
