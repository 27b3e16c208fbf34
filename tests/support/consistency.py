"""One check for "the store is consistent": no orphans, nothing half-made, nothing pending."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase


async def assert_consistent(db: AsyncDatabase[Any]) -> list[dict[str, Any]]:
    """Every organization is whole and nothing else exists; returns the organizations."""
    orgs = await db.organizations.find().to_list(length=None)
    admins = await db.admins.find().to_list(length=None)
    claims = await db.name_claims.find().to_list(length=None)
    ops = await db.operations.find().to_list(length=None)
    tenant_collections = {n for n in await db.list_collection_names() if n.startswith("org_")}

    assert ops == [], f"operations left pending: {ops}"
    for org in orgs:
        assert org["status"] == "active" and org["pending_op"] is None, org
        assert org["collection_name"] == "org_" + org["slug"], org
        own = sorted(a["_id"] for a in admins if a["organization_id"] == org["_id"])
        team = org.get("team")
        if team is None:  # a record of v1: one admin
            assert own == [org["admin"]["admin_id"]], (org, own)
            continue
        # Every account is a member on the team and the reverse; the primary owner is an owner.
        assert own == sorted(team["members"]), (org, own)
        assert team["count"] == len(team["members"]), org
        assert team["owners"] and set(team["owners"]) <= set(team["members"]), org
        assert all(team["members"][o]["role"] == "owner" for o in team["owners"]), org
        assert org["admin"]["admin_id"] == team["owners"][0], org
    assert {a["organization_id"] for a in admins} == {o["_id"] for o in orgs}, "orphan admin"
    invitations = await db.invitations.find().to_list(length=None)
    assert {i["organization_id"] for i in invitations} <= {o["_id"] for o in orgs}, (
        "orphan invitation"
    )
    assert tenant_collections == {o["collection_name"] for o in orgs}, (
        f"collections {sorted(tenant_collections)} vs organizations "
        f"{sorted(o['collection_name'] for o in orgs)}"
    )
    assert {(c["_id"], c["organization_id"]) for c in claims} == {
        (o["slug"], o["_id"]) for o in orgs
    }, f"claims {claims} do not match organizations"
    return orgs
