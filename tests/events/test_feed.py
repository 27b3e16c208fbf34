"""The event feed on the real store: every change is one event, recorded by the write that
makes it, published in one global order; none for a change that did not happen."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from fastapi import FastAPI

from tests.support.apps import new_key
from tests.support.clients import PASSWORD, bearer, create_and_login
from tests.support.teams import add_member, invite

Api = tuple[httpx.AsyncClient, FastAPI]


async def feed(
    http: httpx.AsyncClient, key: dict[str, str], *, settle: float = 0.5, **params: Any
) -> list[dict[str, Any]]:
    """Every event of the feed, paging with `after`, once nothing new came for `settle` s."""
    seen: list[dict[str, Any]] = []
    after: str | None = None
    quiet_since = asyncio.get_running_loop().time()
    while asyncio.get_running_loop().time() - quiet_since < settle:
        query = {**params, "limit": 100, **({"after": after} if after else {})}
        res = await http.get("/events", params=query, headers=key)
        assert res.status_code == 200, res.text
        page = res.json()
        if page["items"]:
            seen += page["items"]
            after = page["next_cursor"]
            quiet_since = asyncio.get_running_loop().time()
        else:
            await asyncio.sleep(0.05)
    return seen


async def test_every_change_is_one_event_in_order(real_api: Api) -> None:
    http, app = real_api
    key = {"X-API-Key": await new_key(app, "events:read", "org:write", "org:read")}
    org, token = await create_and_login(http, "Eventful")
    org_id = org["organization_id"]
    await http.put("/org/update", json={"display_name": "Eventful Ltd"}, headers=bearer(token))
    await http.put("/org/update", json={"organization_name": "Eventful Two"}, headers=bearer(token))
    member, _ = await add_member(http, app, token, "m@eventful.example.com")
    res = await http.patch(
        f"/org/members/{member['member_id']}", json={"role": "admin"}, headers=bearer(token)
    )
    assert res.status_code == 200, res.text
    pending = (await invite(http, token, "later@eventful.example.com")).json()
    await http.delete(f"/org/invitations/{pending['invitation_id']}", headers=bearer(token))
    await http.delete(f"/org/members/{member['member_id']}", headers=bearer(token))
    made = await http.post(
        "/org/api-keys", json={"name": "sync", "scopes": ["org:read"]}, headers=bearer(token)
    )
    await http.delete(f"/org/api-keys/{made.json()['key_id']}", headers=bearer(token))
    await http.post(f"/orgs/{org_id}/suspend", json={"reason": "audit"}, headers=key)
    await http.post(f"/orgs/{org_id}/restore", headers=key)
    await http.patch(f"/orgs/{org_id}", json={"plan": "pro"}, headers=key)
    res = await http.delete(f"/orgs/{org_id}", headers=key)
    assert res.status_code == 204

    events = await feed(http, key)
    assert [e["type"] for e in events] == [
        "organization.created",
        "organization.updated",
        "organization.renamed",
        "member.invited",
        "member.joined",
        "member.role_changed",
        "member.invited",
        "invitation.revoked",
        "member.removed",
        "api_key.created",
        "api_key.revoked",
        "organization.suspended",
        "organization.restored",
        "organization.updated",
        "organization.deleted",
    ]
    assert len({e["id"] for e in events}) == len(events)
    assert {e["organization_id"] for e in events} == {org_id}
    by_type = {e["type"]: e for e in events}
    assert by_type["organization.created"]["data"]["organization_name"] == "Eventful"
    renamed = by_type["organization.renamed"]["data"]
    assert (renamed["slug"], renamed["previous_slug"]) == ("eventful_two", "eventful")
    assert renamed["previous_collection_name"] == "org_eventful"
    assert by_type["organization.suspended"]["data"]["status"] == "suspended"
    assert by_type["organization.deleted"]["data"]["plan"] == "pro"  # as it was
    assert by_type["member.role_changed"]["data"]["role"] == "admin"
    assert by_type["member.joined"]["actor"] == {"type": "admin", "id": member["member_id"]}
    assert by_type["organization.suspended"]["actor"]["type"] == "api_key"
    text = json.dumps(events)
    assert PASSWORD not in text and made.json()["key"] not in text
    assert "hash" not in text and "token" not in text.replace("token_version", "")


async def test_filters_and_an_organizations_own_key(real_api: Api) -> None:
    http, app = real_api
    service = {"X-API-Key": await new_key(app, "events:read")}
    mine, token = await create_and_login(http, "Feed Mine")
    other, other_token = await create_and_login(http, "Feed Other")
    await http.put("/org/update", json={"display_name": "Mine"}, headers=bearer(token))
    await http.put("/org/update", json={"display_name": "Other"}, headers=bearer(other_token))
    everything = await feed(http, service)
    assert [e["type"] for e in everything] == [
        "organization.created",
        "organization.created",
        "organization.updated",
        "organization.updated",
    ]
    # types, organization_id and after
    only = await feed(http, service, types="organization.updated")
    assert [e["organization_id"] for e in only] == [
        mine["organization_id"],
        other["organization_id"],
    ]
    theirs = await feed(http, service, organization_id=other["organization_id"])
    assert {e["organization_id"] for e in theirs} == {other["organization_id"]}
    res = await http.get("/events", params={"after": everything[1]["id"]}, headers=service)
    assert [e["id"] for e in res.json()["items"]] == [e["id"] for e in everything[2:]]
    for bad in (
        {"after": "evt_ffffffffffffffffffffffff"},  # well-formed, unknown
        {"after": "nope"},
        {"types": "organization.exploded"},
        {"limit": 0},
    ):
        res = await http.get("/events", params=bad, headers=service)
        assert (res.status_code, res.json()["code"]) == (422, "validation_error"), bad
    # An organization's own key with events:read sees its organization's events only.
    made = await http.post(
        "/org/api-keys", json={"name": "feed", "scopes": ["events:read"]}, headers=bearer(token)
    )
    own = {"X-API-Key": made.json()["key"]}
    seen = await feed(http, own)
    assert {e["organization_id"] for e in seen} == {mine["organization_id"]}
    assert [e["type"] for e in seen] == [
        "organization.created",
        "organization.updated",
        "api_key.created",
    ]
    res = await http.get(
        "/events", params={"organization_id": other["organization_id"]}, headers=own
    )
    assert (res.status_code, res.json()["code"]) == (404, "not_found")
    # A key without the scope: 403; none: 401.
    reader = {"X-API-Key": await new_key(app, "org:read")}
    assert (await http.get("/events", headers=reader)).status_code == 403
    assert (await http.get("/events")).status_code == 401
