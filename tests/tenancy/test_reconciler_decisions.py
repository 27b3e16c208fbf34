"""The reconciler's decision table, in-process on the real store: for each kind of abandoned
operation, before and after its commit point (and as an older release wrote it, with no
`state`), what it finds and what it leaves. Every case ends with a consistent store."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from app.kit.settings import Settings
from app.kit.store import utcnow
from tests.support.clients import PASSWORD, create_and_login
from tests.support.consistency import assert_consistent
from tests.support.operations import abandon, reconcile

Pair = tuple[httpx.AsyncClient, FastAPI]


async def half_made_create(db: Any, op_id: str, slug: str) -> tuple[str, str]:
    """Claim, record (`creating`), admin and collection of a create that stopped there."""
    org_id, admin_id = uuid.uuid4().hex[:24], uuid.uuid4().hex[:24]
    await db.name_claims.insert_one({"_id": slug, "organization_id": org_id, "op_id": op_id})
    now = utcnow()
    await db.organizations.insert_one(
        {
            "_id": org_id, "organization_name": slug.title(), "slug": slug,
            "collection_name": f"org_{slug}", "status": "creating", "pending_op": op_id,
            "admin": {"admin_id": admin_id, "email": f"{slug}@x.com", "token_version": 0},
            "created_at": now, "updated_at": now,
        }
    )  # fmt: skip
    await db.admins.insert_one(
        {"_id": admin_id, "email": f"{slug}@x.com", "email_lower": f"{slug}@x.com",
         "organization_id": org_id, "password_hash": "x", "password_version": 0}
    )  # fmt: skip
    await db.create_collection(f"org_{slug}")
    return org_id, admin_id


@pytest.mark.parametrize(
    ("state", "outcome"), [("started", "create_undone"), ("committed", "create_completed")]
)
async def test_an_abandoned_create(
    real_api: Pair, nx_client: AsyncMongoClient[Any], settings: Settings, state: str, outcome: str
) -> None:
    _, app = real_api
    db = nx_client[settings.mongodb_db]
    op_id = uuid.uuid4().hex
    org_id, admin_id = await half_made_create(db, op_id, "halfway")
    await abandon(
        db, op_id, kind="create", organization_id=org_id, admin_id=admin_id, slug="halfway",
        state=state,
    )  # fmt: skip
    assert await reconcile(app) == {outcome: 1}
    orgs = await assert_consistent(db)
    if state == "started":
        assert orgs == []  # undone: claim, record, admin and collection gone
    else:
        assert [(o["_id"], o["status"]) for o in orgs] == [(org_id, "active")]


@pytest.mark.parametrize(
    ("state", "outcome", "slug"),
    [
        ("started", "rename_undone", "old_name"),
        ("committed", "rename_completed", "new_name"),
        (None, "rename_completed", "new_name"),  # an older release's intent, its claim held
    ],
)
async def test_an_abandoned_rename(
    real_api: Pair,
    nx_client: AsyncMongoClient[Any],
    settings: Settings,
    state: str | None,
    outcome: str,
    slug: str,
) -> None:
    http, app = real_api
    db = nx_client[settings.mongodb_db]
    org, _ = await create_and_login(http, "Old Name", "rn@x.com")
    await db["org_old_name"].insert_many([{"n": i} for i in range(25)])
    op = {"kind": "rename", "organization_id": org["organization_id"], "from_slug": "old_name",
          "to_slug": "new_name", "to_name": "New Name"}  # fmt: skip
    if state is not None:
        op["state"] = state
    op_id = await abandon(db, **op)
    await db.organizations.update_one(
        {"_id": org["organization_id"]}, {"$set": {"pending_op": op_id}}
    )
    await db.name_claims.insert_one(
        {"_id": "new_name", "organization_id": org["organization_id"], "op_id": op_id}
    )
    assert await reconcile(app) == {outcome: 1}
    [stored] = await assert_consistent(db)
    assert stored["slug"] == slug
    assert await db[stored["collection_name"]].count_documents({}) == 25


@pytest.mark.parametrize(
    ("state", "outcome", "left"),
    [
        ("started", "delete_not_started", 1),
        ("committed", "delete_completed", 0),
        (None, "delete_completed", 0),
    ],
)
async def test_an_abandoned_delete(
    real_api: Pair,
    nx_client: AsyncMongoClient[Any],
    settings: Settings,
    state: str | None,
    outcome: str,
    left: int,
) -> None:
    http, app = real_api
    db = nx_client[settings.mongodb_db]
    org, _ = await create_and_login(http, "Doomed", "dd@x.com")
    op = {"kind": "delete", "organization_id": org["organization_id"], "slug": "doomed"}
    if state is not None:
        op["state"] = state
    op_id = await abandon(db, **op)
    await db.organizations.update_one(
        {"_id": org["organization_id"]}, {"$set": {"pending_op": op_id, "status": "deleting"}}
    )
    assert await reconcile(app) == {outcome: 1}
    orgs = await assert_consistent(db)
    assert len(orgs) == left
    login = await http.post("/admin/login", json={"email": "dd@x.com", "password": PASSWORD})
    assert login.status_code == (200 if left else 401)


@pytest.mark.parametrize(
    ("state", "outcome", "bumped"),
    [("started", "password_not_started", 0), ("committed", "password_revoked", 1)],
)
async def test_an_abandoned_password_change(
    real_api: Pair,
    nx_client: AsyncMongoClient[Any],
    settings: Settings,
    state: str,
    outcome: str,
    bumped: int,
) -> None:
    http, app = real_api
    db = nx_client[settings.mongodb_db]
    org, token = await create_and_login(http, "Keys", "pw@x.com")
    await abandon(
        db, kind="password", organization_id=org["organization_id"],
        admin_id=org["admin"]["admin_id"], state=state,
    )  # fmt: skip
    assert await reconcile(app) == {outcome: 1}
    [stored] = await assert_consistent(db)
    admin_id = org["admin"]["admin_id"]
    assert stored["team"]["members"][admin_id]["token_version"] == bumped  # the member's own
    got = await http.get(
        "/org/get",
        params={"organization_name": "Keys"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert got.status_code == (401 if bumped else 200)


async def test_an_unknown_kind_is_left_alone(
    real_api: Pair, nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    _, app = real_api
    db = nx_client[settings.mongodb_db]
    op_id = await abandon(db, kind="mystery", organization_id="nobody")
    assert await reconcile(app) == {"unknown": 1}
    assert await db.operations.find_one({"_id": op_id}) is not None
