"""An organization's own API keys (`/org/api-keys`): made by owners and admins, acting for
their organization only (another is 404), dead with it, silenced while it is suspended."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.support.apps import new_key
from tests.support.clients import PASSWORD, bearer, create_and_login
from tests.support.teams import add_member

Api = tuple[httpx.AsyncClient, FastAPI]


async def make_key(
    http: httpx.AsyncClient, token: str, *scopes: str, name: str = "sync"
) -> dict[str, Any]:
    res = await http.post(
        "/org/api-keys", json={"name": name, "scopes": list(scopes)}, headers=bearer(token)
    )
    assert res.status_code == 201, res.text
    body: dict[str, Any] = res.json()
    return body


def key_header(made: dict[str, Any]) -> dict[str, str]:
    return {"X-API-Key": made["key"]}


async def test_an_organization_key_sees_its_organization_only(real_api: Api) -> None:
    http, app = real_api
    mine, token = await create_and_login(http, "Key Owner")
    other, _ = await create_and_login(http, "Key Other")
    made = await make_key(http, token, "org:read")
    assert made["key"].startswith(f"osk_{made['key_id']}_")
    assert (made["name"], made["scopes"]) == ("sync", ["org:read"])
    key = key_header(made)

    res = await http.get("/org/get", params={"organization_name": "Key Owner"}, headers=key)
    assert (res.status_code, res.json()["organization_id"]) == (200, mine["organization_id"])
    res = await http.get("/org/get", params={"organization_name": "Key Other"}, headers=key)
    assert (res.status_code, res.json()["code"]) == (404, "not_found")  # not 403: unseen
    res = await http.get("/org/get", params={"organization_name": "No Such Org"}, headers=key)
    assert res.status_code == 404
    assert (await http.get(f"/orgs/{mine['organization_id']}", headers=key)).status_code == 200
    assert (await http.get(f"/orgs/{other['organization_id']}", headers=key)).status_code == 404
    res = await http.get(f"/orgs/{mine['organization_id']}/stats", headers=key)
    assert (res.status_code, res.json()["member_count"]) == (200, 1)
    assert (
        await http.get(f"/orgs/{other['organization_id']}/stats", headers=key)
    ).status_code == 404
    # nothing beyond its scopes: no listing, no change, no create
    for method, path in [
        ("GET", "/orgs"),
        ("GET", "/org/list"),
        ("POST", f"/orgs/{mine['organization_id']}/suspend"),
        ("DELETE", f"/orgs/{mine['organization_id']}"),
    ]:
        res = await http.request(method, path, headers=key)
        assert (res.status_code, res.json()["code"]) == (403, "insufficient_scope"), path
    res = await http.post(
        "/org/create",
        json={"organization_name": "Sneaky", "email": "s@sneaky.example.com", "password": "x" * 12},
        headers=key,
    )
    assert res.status_code == 403
    # an events-only key may not read the organization
    events_only = key_header(await make_key(http, token, "events:read", name="feed"))
    res = await http.get(f"/orgs/{mine['organization_id']}", headers=events_only)
    assert (res.status_code, res.json()["code"]) == (403, "insufficient_scope")
    # a service key still sees every organization
    service = {"X-API-Key": await new_key(app, "org:read")}
    res = await http.get("/org/get", params={"organization_name": "Key Other"}, headers=service)
    assert res.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"name": "k", "scopes": ["org:write"]},
        {"name": "k", "scopes": ["org:list"]},
        {"name": "k", "scopes": ["webhooks:manage"]},
        {"name": "k", "scopes": []},
        {"name": "", "scopes": ["org:read"]},
        {"name": "-bad", "scopes": ["org:read"]},
        {"name": "k", "scopes": ["org:read"], "organization_id": "ffffffffffffffffffffffff"},
    ],
)
async def test_create_rejects(real_api: Api, body: dict[str, Any]) -> None:
    http, _ = real_api
    _, token = await create_and_login(http, "Key Rules")
    res = await http.post("/org/api-keys", json=body, headers=bearer(token))
    assert (res.status_code, res.json()["code"]) == (422, "validation_error"), body


async def test_owners_and_admins_manage_members_do_not(real_api: Api) -> None:
    http, app = real_api
    _, owner = await create_and_login(http, "Key Roles")
    _, admin = await add_member(http, app, owner, "second@keyroles.example.com", "admin")
    _, member = await add_member(http, app, owner, "member@keyroles.example.com")
    by_admin = await make_key(http, admin, "org:read", name="by-admin")
    for method, path, body in [
        ("POST", "/org/api-keys", {"name": "m", "scopes": ["org:read"]}),
        ("GET", "/org/api-keys", None),
        ("DELETE", f"/org/api-keys/{by_admin['key_id']}", None),
    ]:
        res = await http.request(method, path, json=body, headers=bearer(member))
        assert (res.status_code, res.json()["code"]) == (403, "insufficient_role"), path
    await make_key(http, owner, "org:read", "events:read", name="by-owner")
    res = await http.get("/org/api-keys", params={"limit": 1}, headers=bearer(owner))
    page = res.json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    rest = await http.get(
        "/org/api-keys", params={"limit": 5, "cursor": page["next_cursor"]}, headers=bearer(owner)
    )
    names = {k["name"] for k in page["items"] + rest.json()["items"]}
    assert names == {"by-admin", "by-owner"}
    assert all("key" not in k and "hash" not in k for k in page["items"] + rest.json()["items"])


async def test_revoke_and_keys_of_another_organization(real_api: Api) -> None:
    http, _ = real_api
    _, token = await create_and_login(http, "Key Revoke")
    _, other_token = await create_and_login(http, "Key Stranger")
    made = await make_key(http, token, "org:read")
    theirs = await make_key(http, other_token, "org:read")
    # another organization's key is not ours to revoke: 404, and it keeps working
    res = await http.delete(f"/org/api-keys/{theirs['key_id']}", headers=bearer(token))
    assert res.status_code == 404
    params = {"organization_name": "Key Stranger"}
    assert (
        await http.get("/org/get", params=params, headers=key_header(theirs))
    ).status_code == 200
    assert (await http.delete("/org/api-keys/nonsense", headers=bearer(token))).status_code == 404
    res = await http.delete(f"/org/api-keys/osk_{made['key_id']}", headers=bearer(token))
    assert res.status_code == 204
    res = await http.get(
        "/org/get", params={"organization_name": "Key Revoke"}, headers=key_header(made)
    )
    assert (res.status_code, res.json()["code"]) == (401, "invalid_api_key")
    res = await http.delete(f"/org/api-keys/{made['key_id']}", headers=bearer(token))
    assert res.status_code == 404  # already revoked


async def test_a_key_dies_with_its_organization_and_sleeps_while_suspended(
    real_api: Api,
) -> None:
    http, app = real_api
    org, token = await create_and_login(http, "Key Mortal")
    made = await make_key(http, token, "org:read")
    key = key_header(made)
    params = {"organization_name": "Key Mortal"}
    operator = {"X-API-Key": await new_key(app, "org:write")}
    await http.post(f"/orgs/{org['organization_id']}/suspend", headers=operator)
    res = await http.get("/org/get", params=params, headers=key)
    assert (res.status_code, res.json()["code"]) == (403, "organization_suspended")
    await http.post(f"/orgs/{org['organization_id']}/restore", headers=operator)
    # the key comes back with the restore (tokens do not: their holders log in again)
    assert (await http.get("/org/get", params=params, headers=key)).status_code == 200
    login = {"email": "admin@keymortal.example.com", "password": PASSWORD}
    token = (await http.post("/admin/login", json=login)).json()["access_token"]

    res = await http.delete("/org/delete", params=params, headers=bearer(token))
    assert res.status_code == 204
    res = await http.get("/org/get", params=params, headers=key)
    assert (res.status_code, res.json()["code"]) == (401, "invalid_api_key")
    stored = await app.state.svc.repos.api_keys.col.find_one({"_id": made["key_id"]})
    assert stored is not None and stored["status"] == "revoked"
    # a new organization of the same name does not bring the key back
    await create_and_login(http, "Key Mortal", "again@keymortal.example.com")
    assert (await http.get("/org/get", params=params, headers=key)).status_code == 401


async def test_key_actions_are_audited_and_announced(real_api: Api) -> None:
    http, app = real_api
    seen: list[tuple[str, dict[str, Any]]] = []

    async def collect(event: Any) -> None:
        seen.append((event.type, dict(event.data)))

    app.state.svc.events.subscribe(collect)
    org, token = await create_and_login(http, "Key Audit")
    made = await make_key(http, token, "org:read")
    await http.delete(f"/org/api-keys/{made['key_id']}", headers=bearer(token))
    entries = await app.state.svc.repos.audit.col.find(
        {"organization_id": org["organization_id"], "action": {"$regex": "^api_key"}}
    ).to_list(None)
    assert sorted(e["action"] for e in entries) == ["api_key.create", "api_key.revoke"]
    assert made["key"] not in repr(entries)
    types = [t for t, _ in seen if t.startswith("api_key")]
    assert types == ["api_key.created", "api_key.revoked"]
    assert all(made["key"] not in repr(data) for _, data in seen)
