"""What the database decides, on the real wire-protocol store: concurrent accepts of one token,
last-owner races, seats under concurrent invitations, and a removal seen by a second process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from app.kit.db import EmbeddedMongo
from app.kit.settings import Settings
from tests.support.clients import PASSWORD, bearer, create_and_login, org_body
from tests.support.consistency import assert_consistent
from tests.support.processes import PROCS_DB, ServiceProcess, once_seen, procs_service_env
from tests.support.teams import add_member, invitation_token, invite, token_from_store

Pair = tuple[httpx.AsyncClient, FastAPI]


async def test_two_concurrent_accepts_of_one_token_give_one_member(real_api: Pair) -> None:
    http, app = real_api
    _, owner = await create_and_login(http, "Acme", "owner@acme.com")
    outcomes = []
    for i in range(5):  # five invitations, each accepted twice at once
        res = await invite(http, owner, f"twice{i}@acme.com")
        token = await invitation_token(app, res.json()["invitation_id"])
        body = {"token": token, "password": PASSWORD}
        both = await asyncio.gather(
            http.post("/invitations/accept", json=body), http.post("/invitations/accept", json=body)
        )
        outcomes.append(sorted((r.status_code, r.json().get("code")) for r in both))
    print("concurrent accepts:", outcomes)
    assert all(o == [(201, None), (410, "invitation_invalid")] for o in outcomes), outcomes
    members = (await http.get("/org/members", headers=bearer(owner))).json()["items"]
    assert len(members) == 6  # the owner and one member per invitation


async def test_two_owners_demoting_each_other_at_once_leave_one_owner(real_api: Pair) -> None:
    http, app = real_api
    results = []
    for round_ in range(4):
        _, first = await create_and_login(http, f"Race {round_}", f"a{round_}@race.com")
        second_m, second = await add_member(http, app, first, f"b{round_}@race.com", "owner")
        members = (await http.get("/org/members", headers=bearer(first))).json()["items"]
        ids = {m["email"]: m["member_id"] for m in members}
        first_id, second_id = ids[f"a{round_}@race.com"], second_m["member_id"]
        if round_ % 2:  # each demotes the other
            calls = [(first, second_id), (second, first_id)]
        else:  # each demotes itself
            calls = [(first, first_id), (second, second_id)]
        answers = await asyncio.gather(
            *(
                http.patch(f"/org/members/{target}", json={"role": "admin"}, headers=bearer(tok))
                for tok, target in calls
            )
        )
        codes = sorted((r.status_code, r.json().get("code")) for r in answers)
        results.append(codes)
        members = (await http.get("/org/members", headers=bearer(first))).json()["items"]
        assert [m["role"] for m in members].count("owner") == 1, (round_, codes, members)
    print("owner races:", results)
    assert all(r[0] == (200, None) and r[1][0] in (403, 409) for r in results), results


async def test_two_last_owners_leaving_at_once_leave_one(real_api: Pair) -> None:
    http, app = real_api
    _, first = await create_and_login(http, "Leavers", "a@leave.com")
    second_m, second = await add_member(http, app, first, "b@leave.com", "owner")
    members = (await http.get("/org/members", headers=bearer(first))).json()["items"]
    first_id = next(m["member_id"] for m in members if m["email"] == "a@leave.com")
    answers = await asyncio.gather(
        http.delete(f"/org/members/{first_id}", headers=bearer(first)),
        http.delete(f"/org/members/{second_m['member_id']}", headers=bearer(second)),
    )
    codes = sorted((r.status_code, r.json().get("code") if r.content else None) for r in answers)
    assert codes == [(204, None), (409, "last_owner")], codes


async def test_seats_hold_under_concurrent_invitations(
    real_api: Pair, nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    """max_members 5: the owner, one member, and at most three pending invitations, however
    many are sent at once; a revoked invitation frees its seat."""
    http, app = real_api
    org, owner = await create_and_login(http, "Seats", "owner@seats.com")
    await nx_client[settings.mongodb_db].organizations.update_one(
        {"_id": org["organization_id"]}, {"$set": {"max_members": 5}}
    )
    await add_member(http, app, owner, "m@seats.com")
    answers = await asyncio.gather(*(invite(http, owner, f"s{i}@seats.com") for i in range(12)))
    codes = sorted((r.status_code, r.json().get("code")) for r in answers)
    print("12 invitations at once, 3 seats free:", codes)
    assert codes.count((201, None)) == 3 and codes.count((409, "seat_limit")) == 9, codes
    pending = (await http.get("/org/invitations", headers=bearer(owner))).json()["items"]
    assert len(pending) == 3
    assert (await invite(http, owner, "late@seats.com")).json()["code"] == "seat_limit"
    res = await http.delete(
        f"/org/invitations/{pending[0]['invitation_id']}", headers=bearer(owner)
    )
    assert res.status_code == 204
    assert (await invite(http, owner, "late@seats.com")).status_code == 201
    # The invitation records that lost the race are gone with their operations.
    db = nx_client[settings.mongodb_db]
    statuses = sorted(i["status"] for i in await db.invitations.find().to_list(None))
    assert statuses == ["accepted", "pending", "pending", "pending", "revoked"], statuses
    assert await db.operations.count_documents({}) == 0
    await assert_consistent(db)


async def test_removal_ends_the_members_tokens_on_another_process(
    nx_server: EmbeddedMongo, nx_client: AsyncMongoClient[Any], logs_dir: Path
) -> None:
    a = ServiceProcess(procs_service_env(nx_server), log_path=logs_dir / "a.log")
    b = ServiceProcess(procs_service_env(nx_server), log_path=logs_dir / "b.log")
    try:
        await asyncio.gather(a.start(), b.start())
        async with httpx.AsyncClient(timeout=30) as http:
            assert (
                await http.post(a.url + "/org/create", json=org_body("Two", "o@two.com"))
            ).status_code == 201
            owner = (
                await http.post(
                    a.url + "/admin/login", json={"email": "o@two.com", "password": PASSWORD}
                )
            ).json()["access_token"]
            res = await http.post(
                a.url + "/org/invitations",
                json={"email": "m@two.com", "role": "member"},
                headers=bearer(owner),
            )
            token = await token_from_store(nx_client[PROCS_DB], res.json()["invitation_id"])
            res = await http.post(
                b.url + "/invitations/accept", json={"token": token, "password": PASSWORD}
            )
            assert res.status_code == 201, res.text
            member, member_id = res.json()["access_token"], res.json()["member"]["member_id"]
            assert (
                await http.get(b.url + "/org/members", headers=bearer(member))
            ).status_code == 200
            res = await http.delete(a.url + f"/org/members/{member_id}", headers=bearer(owner))
            assert res.status_code == 204
            res = await once_seen(
                lambda: http.get(b.url + "/org/members", headers=bearer(member)),
                lambda r: r.status_code == 401,
            )
            assert res.status_code == 401 and res.json()["code"] == "token_revoked"
            assert (
                await http.get(b.url + "/org/members", headers=bearer(owner))
            ).status_code == 200
    finally:
        a.stop()
        b.stop()
