"""The operator API (`/orgs`), the profile fields and the listing's query plans, on the real
store (nx-27017): what the database decides (unique external ids, index use, statistics)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from app.kit.errors import OrganizationSuspended
from app.organizations.records import keys_after, keys_before
from app.organizations.repository import OrgFilter, list_queries
from tests.support.apps import new_key
from tests.support.clients import PASSWORD, bearer, create_and_login
from tests.support.consistency import assert_consistent
from tests.support.teams import add_member, invitation_token, invite

Api = tuple[httpx.AsyncClient, FastAPI]


async def operator_key(app: FastAPI, *scopes: str) -> dict[str, str]:
    return {"X-API-Key": await new_key(app, *(scopes or ("org:read", "org:list", "org:write")))}


# ------------------------------------------------------------------ profile
async def test_profile_through_put_update(real_api: Api) -> None:
    http, app = real_api
    org, token = await create_and_login(http, "Profile Co")
    assert (org["display_name"], org["metadata"], org["plan"], org["status"]) == (
        None,
        {},
        "free",
        "active",
    )
    assert (org["external_id"], org["max_members"], org["suspended_at"]) == (None, None, None)
    meta = {"region": "eu", "crm": {"ids": [1, 2, {"deep": {"x": True}}]}, "n-1": None}
    res = await http.put(
        "/org/update",
        json={"display_name": "Profile Company GmbH", "metadata": meta},
        headers=bearer(token),
    )
    assert res.status_code == 200, res.text
    assert (res.json()["display_name"], res.json()["metadata"]) == ("Profile Company GmbH", meta)
    got = await http.get(
        "/org/get", params={"organization_name": "Profile Co"}, headers=bearer(token)
    )
    assert (got.json()["display_name"], got.json()["metadata"]) == ("Profile Company GmbH", meta)
    # metadata replaces the whole object; a null display_name removes it
    res = await http.put(
        "/org/update", json={"display_name": None, "metadata": {"a": 1}}, headers=bearer(token)
    )
    assert (res.json()["display_name"], res.json()["metadata"]) == (None, {"a": 1})
    # a member may not edit the profile
    _, member = await add_member(http, app, token, "m@profile.example.com")
    res = await http.put("/org/update", json={"display_name": "X"}, headers=bearer(member))
    assert (res.status_code, res.json()["code"]) == (403, "insufficient_role")
    res = await http.put("/org/update", json={"metadata": {}}, headers=bearer(member))
    assert (res.status_code, res.json()["code"]) == (403, "insufficient_role")


def _nested(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        node = {"k": node}
    return node


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"metadata": {f"k{i}": i for i in range(65)}}, "65 keys"),
        ({"metadata": {"a.b": 1}}, "a dot in a key"),
        ({"metadata": {"key\n": 1}}, "a newline after a key ($ would let it through)"),
        ({"metadata": {"$where": 1}}, "a dollar in a key"),
        ({"metadata": {"x": {"bad key": 1}}}, "a bad nested key"),
        ({"metadata": {"x": [{"ok": {"no!": 1}}]}}, "a bad key inside an array"),
        ({"metadata": {"k" * 65: 1}}, "a 65-character key"),
        ({"metadata": _nested(6)}, "6 levels"),
        ({"metadata": {"x": [[[[[1]]]]]}}, "arrays to level 6"),
        ({"metadata": {"big": "x" * 8200}}, "more than 8 KiB"),
        ({"metadata": {"n": 2**63}}, "an integer past 64 bits"),
        ({"metadata": {"s": "a\x00b"}}, "a NUL in a string"),
        ({"metadata": [1, 2]}, "not an object"),
        ({"display_name": ""}, "an empty display name"),
        ({"display_name": "x" * 201}, "201 characters"),
    ],
)
async def test_profile_rules(real_api: Api, body: dict[str, Any], why: str) -> None:
    http, _ = real_api
    _, token = await create_and_login(http, "Rules Co")
    res = await http.put("/org/update", json=body, headers=bearer(token))
    assert (res.status_code, res.json()["code"]) == (422, "validation_error"), why


async def test_profile_limits_are_inclusive(real_api: Api) -> None:
    http, _ = real_api
    _, token = await create_and_login(http, "Edge Co")
    exactly: dict[str, Any] = {f"k{i}": i for i in range(64)}
    res = await http.put("/org/update", json={"metadata": exactly}, headers=bearer(token))
    assert res.status_code == 200, res.text
    res = await http.put("/org/update", json={"metadata": _nested(5)}, headers=bearer(token))
    assert res.status_code == 200, res.text
    big = {"b": "x" * (8192 - len('{"b":""}'))}  # exactly 8 KiB as compact JSON
    res = await http.put("/org/update", json={"metadata": big}, headers=bearer(token))
    assert res.status_code == 200, res.text
    res = await http.put("/org/update", json={"display_name": "é" * 200}, headers=bearer(token))
    assert res.status_code == 200, res.text


# ------------------------------------------------------------------ PATCH /orgs/{id}
async def test_patch_every_field_and_external_id_uniqueness(real_api: Api) -> None:
    http, app = real_api
    seen: list[tuple[str, str]] = []

    async def collect(event: Any) -> None:
        seen.append((event.type, event.organization_id))

    app.state.svc.events.subscribe(collect)
    a, token_a = await create_and_login(http, "Patch A")
    b, _ = await create_and_login(http, "Patch B")
    key = await operator_key(app)
    body = {
        "display_name": "Patch A Inc.",
        "metadata": {"tier": "gold"},
        "plan": "enterprise",
        "external_id": "cus_123",
        "max_members": 2,
    }
    res = await http.patch(f"/orgs/{a['organization_id']}", json=body, headers=key)
    assert res.status_code == 200, res.text
    assert {k: res.json()[k] for k in body} == body
    # external_id is unique (the database's unique index decides)
    res = await http.patch(
        f"/orgs/{b['organization_id']}", json={"external_id": "cus_123"}, headers=key
    )
    assert (res.status_code, res.json()["code"]) == (409, "external_id_taken")
    # cleared, it is free again; many organizations may have none
    res = await http.patch(f"/orgs/{a['organization_id']}", json={"external_id": None}, headers=key)
    assert res.json()["external_id"] is None
    res = await http.patch(
        f"/orgs/{b['organization_id']}", json={"external_id": "cus_123"}, headers=key
    )
    assert res.status_code == 200
    # max_members 2: one member and one invitation fill it
    _, _ = await add_member(http, app, token_a, "second@patch.example.com")
    res = await invite(http, token_a, "third@patch.example.com")
    assert (res.status_code, res.json()["code"]) == (409, "seat_limit")
    res = await http.patch(f"/orgs/{a['organization_id']}", json={"max_members": None}, headers=key)
    assert res.json()["max_members"] is None
    assert (await invite(http, token_a, "third@patch.example.com")).status_code == 201
    # the member's token still reads the profile the operator wrote
    got = await http.get(
        "/org/get", params={"organization_name": "Patch A"}, headers=bearer(token_a)
    )
    assert (got.json()["plan"], got.json()["display_name"]) == ("enterprise", "Patch A Inc.")
    # audited (the field names, not the values) and announced, every time
    entries = await app.state.svc.repos.audit.col.find(
        {"organization_id": a["organization_id"], "action": "org.update"}
    ).to_list(None)
    assert [(e["outcome"], e["actor"]["type"]) for e in entries] == [
        ("success", "api_key"),
        ("success", "api_key"),
        ("success", "api_key"),
    ]
    assert entries[0]["details"]["fields"] == sorted(body)
    assert "cus_123" not in repr(entries)
    failed = await app.state.svc.repos.audit.col.find_one(
        {"organization_id": b["organization_id"], "action": "org.update", "outcome": "failure"}
    )
    assert failed is not None and failed["code"] == "external_id_taken"
    updates = [e for e in seen if e[0] == "organization.updated"]
    assert updates.count(("organization.updated", a["organization_id"])) == 3


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"plan": None},
        {"metadata": None},
        {"plan": "no spaces"},
        {"external_id": ""},
        {"external_id": "tab\there"},
        {"max_members": 0},
        {"max_members": "3"},
        {"status": "suspended"},
    ],
)
async def test_patch_rejects(real_api: Api, body: dict[str, Any]) -> None:
    http, app = real_api
    org, _ = await create_and_login(http, "Patch Bad")
    res = await http.patch(
        f"/orgs/{org['organization_id']}", json=body, headers=await operator_key(app)
    )
    assert (res.status_code, res.json()["code"]) == (422, "validation_error"), body


async def test_scopes_and_unknown_ids(real_api: Api) -> None:
    http, app = real_api
    org, _ = await create_and_login(http, "Scoped")
    org_id = org["organization_id"]
    reader = await operator_key(app, "org:read")
    assert (await http.get(f"/orgs/{org_id}", headers=reader)).status_code == 200
    for method, path in [
        ("PATCH", f"/orgs/{org_id}"),
        ("POST", f"/orgs/{org_id}/suspend"),
        ("POST", f"/orgs/{org_id}/restore"),
        ("DELETE", f"/orgs/{org_id}"),
        ("GET", "/orgs"),
    ]:
        res = await http.request(method, path, headers=reader, json={"plan": "x"})
        assert (res.status_code, res.json()["code"]) == (403, "insufficient_scope"), path
        res = await http.request(method, path, json={"plan": "x"})
        assert res.status_code == 401, path
    writer = await operator_key(app)
    for method, path in [
        ("GET", "/orgs/ffffffffffffffffffffffff"),
        ("GET", "/orgs/not-an-id"),
        ("GET", "/orgs/ffffffffffffffffffffffff/stats"),
        ("PATCH", "/orgs/ffffffffffffffffffffffff"),
        ("POST", "/orgs/ffffffffffffffffffffffff/suspend"),
        ("POST", "/orgs/ffffffffffffffffffffffff/restore"),
        ("DELETE", "/orgs/ffffffffffffffffffffffff"),
    ]:
        body = {"plan": "x"} if method == "PATCH" else None
        res = await http.request(method, path, headers=writer, json=body)
        assert (res.status_code, res.json()["code"]) == (404, "not_found"), path


# ------------------------------------------------------------------ suspend / restore
async def test_suspend_and_restore(real_api: Api) -> None:
    http, app = real_api
    seen: list[tuple[str, str]] = []

    async def collect(event: Any) -> None:
        seen.append((event.type, event.organization_id))

    app.state.svc.events.subscribe(collect)
    org, token = await create_and_login(http, "Sleepy")
    org_id = org["organization_id"]
    login = {"email": "admin@sleepy.example.com", "password": PASSWORD}
    refresh = (await http.post("/admin/login", json=login)).json()["refresh_token"]
    key = await operator_key(app)
    params = {"organization_name": "Sleepy"}

    res = await http.post(f"/orgs/{org_id}/suspend", json={"reason": "unpaid"}, headers=key)
    assert res.status_code == 200, res.text
    body = res.json()
    assert (body["status"], body["suspension_reason"]) == ("suspended", "unpaid")
    assert body["suspended_at"] is not None
    # the data and the name stay
    assert (await http.get("/org/get", params=params, headers=key)).json()["status"] == "suspended"
    # every credential of the organization: 403 organization_suspended
    for res in [
        await http.get("/org/get", params=params, headers=bearer(token)),
        await http.get("/org/members", headers=bearer(token)),
        await http.post("/admin/login", json=login),
        await http.post("/admin/refresh", json={"refresh_token": refresh}),
    ]:
        assert (res.status_code, res.json()["code"]) == (403, "organization_suspended")
    # a wrong password is still the plain 401 (suspension is told to password holders only)
    res = await http.post("/admin/login", json={**login, "password": "wrong-password-1"})
    assert (res.status_code, res.json()["code"]) == (401, "invalid_credentials")
    # suspending again changes nothing
    again = await http.post(f"/orgs/{org_id}/suspend", headers=key)
    assert (again.status_code, again.json()["suspended_at"]) == (200, body["suspended_at"])

    res = await http.post(f"/orgs/{org_id}/restore", headers=key)
    assert (res.status_code, res.json()["status"], res.json()["suspended_at"]) == (
        200,
        "active",
        None,
    )
    # tokens of before the suspension stay dead; members log in again
    res = await http.get("/org/get", params=params, headers=bearer(token))
    assert (res.status_code, res.json()["code"]) == (401, "token_revoked")
    res = await http.post("/admin/refresh", json={"refresh_token": refresh})
    assert res.status_code == 401
    fresh = await http.post("/admin/login", json=login)
    assert fresh.status_code == 200
    res = await http.get("/org/get", params=params, headers=bearer(fresh.json()["access_token"]))
    assert res.status_code == 200
    assert (await http.post(f"/orgs/{org_id}/restore", headers=key)).status_code == 200

    assert seen.count(("organization.suspended", org_id)) == 1
    assert seen.count(("organization.restored", org_id)) == 1
    audit = await app.state.svc.repos.audit.col.find(
        {"organization_id": org_id, "action": {"$in": ["org.suspend", "org.restore"]}}
    ).to_list(None)
    actions = sorted((e["action"], e["outcome"], e["actor"]["type"]) for e in audit)
    assert actions == [
        ("org.restore", "success", "api_key"),
        ("org.restore", "success", "api_key"),
        ("org.suspend", "success", "api_key"),
        ("org.suspend", "success", "api_key"),
    ]
    assert any(e.get("details", {}).get("reason") == "unpaid" for e in audit)


async def test_suspended_organization_blocks_joins_and_renames(real_api: Api) -> None:
    http, app = real_api
    org, token = await create_and_login(http, "Frozen")
    res = await invite(http, token, "late@frozen.example.com")
    secret = await invitation_token(app, res.json()["invitation_id"])
    key = await operator_key(app)
    await http.post(f"/orgs/{org['organization_id']}/suspend", headers=key)
    res = await http.post("/invitations/accept", json={"token": secret, "password": PASSWORD})
    assert (res.status_code, res.json()["code"]) == (403, "organization_suspended")
    assert (
        await app.state.svc.repos.admins.col.count_documents({"email": "late@frozen.example.com"})
        == 0
    )
    # a rename that got past authentication just before the suspension cannot lock the record
    record = await app.state.svc.repos.orgs.get(org["organization_id"])
    with pytest.raises(OrganizationSuspended):
        await app.state.svc.orgs.rename(record, "Thawed", "thawed")
    await http.post(f"/orgs/{org['organization_id']}/restore", headers=key)
    res = await http.post("/invitations/accept", json={"token": secret, "password": PASSWORD})
    assert res.status_code == 201, res.text


async def test_operator_deletes_a_suspended_organization(
    real_api: Api, nx_client: AsyncMongoClient[Any], db_name: str
) -> None:
    http, app = real_api
    org, _ = await create_and_login(http, "Doomed")
    await create_and_login(http, "Kept")
    key = await operator_key(app)
    await http.post(f"/orgs/{org['organization_id']}/suspend", headers=key)
    res = await http.delete(f"/orgs/{org['organization_id']}", headers=key)
    assert res.status_code == 204
    assert (await http.get(f"/orgs/{org['organization_id']}", headers=key)).status_code == 404
    orgs = await assert_consistent(nx_client[db_name])
    assert [o["organization_name"] for o in orgs] == ["Kept"]
    entry = await app.state.svc.repos.audit.col.find_one(
        {"organization_id": org["organization_id"], "action": "org.delete"}
    )
    assert entry is not None and entry["actor"]["type"] == "api_key"


# ------------------------------------------------------------------ GET /orgs
PLANS = ["free", "pro", "enterprise"]


async def _fleet(http: httpx.AsyncClient, key: dict[str, str], n: int) -> list[dict[str, Any]]:
    """`n` organizations with a mix of plans, display names and suspensions."""
    made = []
    for i in range(n):
        org, _ = await create_and_login(http, f"Fleet {i:02d}", f"f{i}@fleet.example.com")
        patch: dict[str, Any] = {"plan": PLANS[i % 3]}
        if i % 4 == 0:
            patch["display_name"] = f"Ärger Werke {i:02d}" if i % 8 == 0 else f"Blue {i:02d}"
        res = await http.patch(f"/orgs/{org['organization_id']}", json=patch, headers=key)
        if i % 5 == 0:
            res = await http.post(f"/orgs/{org['organization_id']}/suspend", headers=key)
        made.append(res.json())
    return made


def _expected(fleet: list[dict[str, Any]], **f: Any) -> list[str]:
    def keep(o: dict[str, Any]) -> bool:
        if f.get("status") and o["status"] != f["status"]:
            return False
        if f.get("plan") and o["plan"] != f["plan"]:
            return False
        if f.get("q"):
            q = f["q"].casefold()
            names = [o["slug"], (o["display_name"] or "\x00").casefold()]
            if not any(n.startswith(q) for n in names):
                return False
        return True

    return [o["organization_id"] for o in fleet if keep(o)]


async def _walk(
    http: httpx.AsyncClient, key: dict[str, str], limit: int, **params: Any
) -> tuple[list[str], int]:
    seen: list[str] = []
    cursor = None
    total = -1
    for _ in range(100):
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        res = await http.get("/orgs", params=query, headers=key)
        assert res.status_code == 200, res.text
        page = res.json()
        assert len(page["items"]) <= limit
        total = page["total"]
        seen += [o["organization_id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen, total
    raise AssertionError("pagination did not end")


async def test_list_filters_pages_and_total(real_api: Api) -> None:
    http, app = real_api
    key = await operator_key(app)
    fleet = await _fleet(http, key, 16)
    combos = [
        {},
        {"status": "active"},
        {"status": "suspended"},
        {"plan": "pro"},
        {"plan": "enterprise", "status": "active"},
        {"q": "fleet_1"},
        {"q": "FLEET_0"},
        {"q": "ärger"},  # a display name, case-insensitively
        {"q": "ÄRGER W"},
        {"q": "blue", "plan": "free"},
        {"q": "fleet", "status": "suspended"},
        {"q": "nothing-like-this"},
    ]
    for params, limit in itertools.product(combos, [1, 3, 20]):
        seen, total = await _walk(http, key, limit, **params)
        expected = _expected(fleet, **params)
        assert seen == expected, (params, limit)  # creation order, no repeat, no gap
        assert total == len(expected), params


async def test_list_by_creation_time(real_api: Api) -> None:
    http, app = real_api
    key = await operator_key(app)
    fleet = await _fleet(http, key, 6)
    times = [datetime.fromisoformat(o["created_at"].replace("Z", "+00:00")) for o in fleet]
    middle = times[2]
    seen, total = await _walk(http, key, 2, created_after=middle.isoformat())
    assert seen == [o["organization_id"] for o, t in zip(fleet, times, strict=True) if t > middle]
    assert total == len(seen)
    seen, _ = await _walk(http, key, 2, created_before=middle.isoformat())
    assert seen == [o["organization_id"] for o, t in zip(fleet, times, strict=True) if t < middle]
    naive = middle.astimezone(UTC).replace(tzinfo=None).isoformat()  # read as UTC
    assert (await _walk(http, key, 5, created_before=naive))[0] == seen
    window = {
        "created_after": (times[0] - timedelta(seconds=1)).isoformat(),
        "created_before": times[-1].isoformat(),
    }
    assert (await _walk(http, key, 4, **window))[0] == [o["organization_id"] for o in fleet[:-1]]


@pytest.mark.parametrize(
    "params",
    [
        {"status": "deleting"},
        {"limit": 0},
        {"limit": 101},
        {"cursor": "!!"},
        {"cursor": "bm90LWEta2V5"},  # base64url of "not-a-key"
        {"q": ""},
        {"q": "x" * 201},
        {"plan": "a b"},
        {"created_after": "yesterday"},
    ],
)
async def test_list_rejects(real_api: Api, params: dict[str, Any]) -> None:
    http, app = real_api
    res = await http.get("/orgs", params=params, headers=await operator_key(app))
    assert (res.status_code, res.json()["code"]) == (422, "validation_error"), params


def _filters() -> list[OrgFilter]:
    above, below = keys_after(datetime(2026, 1, 1, tzinfo=UTC)), keys_before(datetime.now(UTC))
    out = []
    for state, plan, prefix, window in itertools.product(
        [None, "suspended"], [None, "pro"], [None, "fleet"], [False, True]
    ):
        out.append(
            OrgFilter(
                state=state,
                plan=plan,
                prefix=prefix,
                above=above if window else "",
                below=below if window else None,
            )
        )
    return out


async def test_every_listing_query_uses_an_index(
    real_api: Api, nx_client: AsyncMongoClient[Any], db_name: str
) -> None:
    """No filter of `GET /orgs` makes the store scan `organizations`: each query the listing
    sends (and counts with) is served by an index (nx-27017 answers `explain` with SQLite's
    query plan: `SEARCH ... USING INDEX`, or `SCAN organizations` for a table scan)."""
    http, app = real_api
    await _fleet(http, await operator_key(app), 3)
    db = nx_client[db_name]
    plans = {}
    for f in _filters():
        for query in list_queries(f):
            found = await db.command({"explain": {"find": "organizations", "filter": query}})
            details = [step["detail"] for step in found["queryPlanner"]["winningPlan"]]
            plans[repr(query)] = details
            assert not any(d.startswith("SCAN organizations") for d in details), (query, details)
            assert any("USING INDEX" in d for d in details), (query, details)
    assert len(plans) == 24  # 16 filters; with a prefix, one query per field
    # and the check can fail: a query on a field without an index is a scan
    found = await db.command(
        {"explain": {"find": "organizations", "filter": {"metadata.x": {"$eq": 1}}}}
    )
    details = [step["detail"] for step in found["queryPlanner"]["winningPlan"]]
    assert any(d.startswith("SCAN organizations") for d in details), details


# ------------------------------------------------------------------ stats
async def test_stats_from_the_database(
    real_api: Api, nx_client: AsyncMongoClient[Any], db_name: str
) -> None:
    http, app = real_api
    org, token = await create_and_login(http, "Counted")
    key = await operator_key(app, "org:read")
    res = await http.get(f"/orgs/{org['organization_id']}/stats", headers=key)
    assert res.status_code == 200, res.text
    before = res.json()
    assert (before["member_count"], before["pending_invitations"]) == (1, 0)
    assert (before["tenant_documents"], before["tenant_indexes"]) == (0, 1)
    assert before["last_login_at"] is not None
    tenant = nx_client[db_name][org["collection_name"]]
    await tenant.insert_many([{"n": i, "pad": "x" * 200} for i in range(250)])
    await tenant.create_index("n")
    await add_member(http, app, token, "two@counted.example.com")
    for i in range(3):
        assert (await invite(http, token, f"p{i}@counted.example.com")).status_code == 201
    after = (await http.get(f"/orgs/{org['organization_id']}/stats", headers=key)).json()
    assert (after["member_count"], after["pending_invitations"]) == (2, 3)
    assert (after["tenant_documents"], after["tenant_indexes"]) == (250, 2)
    assert after["tenant_storage_bytes"] > 250 * 200
