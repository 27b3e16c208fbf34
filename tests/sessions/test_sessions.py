"""Sessions (contract section 2): login opens one, refresh rotates its token, a rotated token
presented again ends it, and every way a session ends is seen by another process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from tests.support.apps import custom_app
from tests.support.clients import PASSWORD, bearer, org_body
from tests.support.processes import PROCS_DB, ServiceProcess, once_seen
from tests.support.teams import token_from_store

Pair = tuple[ServiceProcess, ServiceProcess]


@pytest.fixture
async def two() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as http:
        yield http


async def login(http: httpx.AsyncClient, url: str, email: str, **extra: Any) -> dict[str, Any]:
    res = await http.post(
        url + "/admin/login", json={"email": email, "password": PASSWORD, **extra}
    )
    assert res.status_code == 200, res.text
    body: dict[str, Any] = res.json()
    return body


async def refresh(http: httpx.AsyncClient, url: str, token: str) -> httpx.Response:
    return await http.post(url + "/admin/refresh", json={"refresh_token": token})


def code(res: httpx.Response) -> tuple[int, str | None]:
    return res.status_code, (res.json().get("code") if res.content else None)


async def test_rotation_and_a_reused_token_ends_the_session_on_another_process(
    replicas: Pair, two: httpx.AsyncClient
) -> None:
    a, b = replicas
    http = two
    assert (
        await http.post(a.url + "/org/create", json=org_body("Rot", "o@rot.com"))
    ).status_code == 201
    first = await login(http, a.url, "o@rot.com")
    assert first["session_id"] and first["refresh_expires_in"] == 24 * 3600
    res = await refresh(http, b.url, first["refresh_token"])
    assert res.status_code == 200, res.text
    second = res.json()
    assert second["session_id"] == first["session_id"]
    assert second["refresh_token"] != first["refresh_token"]
    assert (
        await http.get(b.url + "/org/members", headers=bearer(second["access_token"]))
    ).status_code == 200
    # The rotated token again (a copy someone kept): the whole session ends, everywhere.
    assert code(await refresh(http, a.url, first["refresh_token"])) == (401, "refresh_token_reused")
    assert code(await refresh(http, b.url, second["refresh_token"])) == (
        401,
        "invalid_refresh_token",
    )
    for access in (first["access_token"], second["access_token"]):
        members = partial(http.get, b.url + "/org/members", headers=bearer(access))
        res = await once_seen(members, lambda r: r.status_code == 401)
        assert code(res) == (401, "token_revoked")
    # Another session of the same member is untouched.
    other = await login(http, b.url, "o@rot.com")
    assert (
        await http.get(a.url + "/org/members", headers=bearer(other["access_token"]))
    ).status_code == 200


async def test_concurrent_refreshes_of_one_token_leave_one_winner_and_no_second_token(
    replicas: Pair, two: httpx.AsyncClient
) -> None:
    a, b = replicas
    http = two
    assert (
        await http.post(a.url + "/org/create", json=org_body("Race", "o@race.com"))
    ).status_code == 201
    outcomes = []
    for _ in range(3):
        session = await login(http, a.url, "o@race.com")
        answers = await asyncio.gather(
            *(refresh(http, (a if i % 2 else b).url, session["refresh_token"]) for i in range(6))
        )
        codes = sorted(code(r) for r in answers)
        outcomes.append(codes)
        assert codes.count((200, None)) == 1, codes
        # The first loser reveals the copy and ends the session; a loser that comes after that
        # finds it ended (invalid): never a second 200.
        assert (401, "refresh_token_reused") in codes, codes
        assert set(codes[1:]) <= {(401, "refresh_token_reused"), (401, "invalid_refresh_token")}
        [winner] = [r.json() for r in answers if r.status_code == 200]
        # The losers revealed a copied token: the session is over, the winner's new token too.
        assert code(await refresh(http, b.url, winner["refresh_token"])) == (
            401,
            "invalid_refresh_token",
        )
    print("6 concurrent refreshes of one token, 3 rounds:", outcomes)


ENDINGS = ["logout", "delete_session", "logout_all", "password_change", "removal", "org_delete"]


@pytest.mark.parametrize("ending", ENDINGS)
async def test_every_way_a_session_ends_is_seen_by_another_process(
    replicas: Pair, two: httpx.AsyncClient, nx_client: AsyncMongoClient[Any], ending: str
) -> None:
    a, b = replicas
    http = two
    assert (
        await http.post(a.url + "/org/create", json=org_body("End", "o@end.com"))
    ).status_code == 201
    owner = await login(http, a.url, "o@end.com")
    res = await http.post(
        a.url + "/org/invitations", json={"email": "m@end.com", "role": "member"},
        headers=bearer(owner["access_token"]),
    )  # fmt: skip
    token = await token_from_store(nx_client[PROCS_DB], res.json()["invitation_id"])
    res = await http.post(
        a.url + "/invitations/accept", json={"token": token, "password": PASSWORD}
    )
    member = res.json()
    session = await login(http, b.url, "m@end.com")  # the session whose end we watch
    auth = bearer(session["access_token"])
    if ending == "logout":
        assert (await http.post(a.url + "/admin/logout", headers=auth)).status_code == 204
    elif ending == "delete_session":
        other = await login(http, a.url, "m@end.com")
        res = await http.delete(
            a.url + f"/admin/sessions/{session['session_id']}",
            headers=bearer(other["access_token"]),
        )
        assert res.status_code == 204
    elif ending == "logout_all":
        assert (await http.post(a.url + "/admin/logout-all", headers=auth)).status_code == 204
    elif ending == "password_change":
        res = await http.put(
            a.url + "/org/update", json={"password": "a new one, long"}, headers=auth
        )
        assert res.status_code == 200
    elif ending == "removal":
        res = await http.delete(
            a.url + f"/org/members/{member['member']['member_id']}",
            headers=bearer(owner["access_token"]),
        )
        assert res.status_code == 204
    else:
        res = await http.delete(
            a.url + "/org/delete", params={"organization_name": "End"},
            headers=bearer(owner["access_token"]),
        )  # fmt: skip
        assert res.status_code == 204
    res = await http.get(b.url + "/org/members", headers=auth)
    assert res.status_code == 401, (ending, res.text)
    res = await refresh(http, b.url, session["refresh_token"])
    assert code(res) == (401, "invalid_refresh_token"), (ending, res.text)


async def test_the_callers_sessions_are_listed_and_one_can_be_ended() -> None:
    async with custom_app(session_touch_seconds=3600) as (http, _):
        assert (await http.post("/org/create", json=org_body("Ls", "o@ls.com"))).status_code == 201
        phone = await http.post(
            "/admin/login", json={"email": "o@ls.com", "password": PASSWORD, "remember_me": True},
            headers={"User-Agent": "Phone/1.0"},
        )  # fmt: skip
        laptop = await http.post(
            "/admin/login", json={"email": "o@ls.com", "password": PASSWORD},
            headers={"User-Agent": "Laptop/2.0"},
        )  # fmt: skip
        assert phone.json()["refresh_expires_in"] == 30 * 86400  # remember_me
        assert laptop.json()["refresh_expires_in"] == 24 * 3600
        res = await http.get("/admin/sessions", headers=bearer(laptop.json()["access_token"]))
        assert res.status_code == 200
        items = res.json()["items"]
        assert {(s["user_agent"], s["current"]) for s in items} == {
            ("Phone/1.0", False),
            ("Laptop/2.0", True),
        }
        assert all(s["ip"] == "127.0.0.1" and s["created_at"] and s["last_used_at"] for s in items)
        used = {s["session_id"]: s["last_used_at"] for s in items}
        # Used again within SESSION_TOUCH_SECONDS: not written again (not per request).
        res = await http.get("/admin/sessions", headers=bearer(laptop.json()["access_token"]))
        assert {s["session_id"]: s["last_used_at"] for s in res.json()["items"]} == used
        phone_id = phone.json()["session_id"]
        res = await http.delete(
            f"/admin/sessions/{phone_id}", headers=bearer(laptop.json()["access_token"])
        )
        assert res.status_code == 204
        res = await http.get("/admin/sessions", headers=bearer(laptop.json()["access_token"]))
        assert [s["session_id"] for s in res.json()["items"]] == [laptop.json()["session_id"]]
        assert (
            await http.get("/org/members", headers=bearer(phone.json()["access_token"]))
        ).status_code == 401
        res = await http.delete(
            f"/admin/sessions/{phone_id}", headers=bearer(laptop.json()["access_token"])
        )
        assert res.status_code == 404  # no longer live


async def test_last_use_is_written_at_most_once_per_touch_interval() -> None:
    async with custom_app(session_touch_seconds=0) as (http, _):
        assert (await http.post("/org/create", json=org_body("T", "o@t.com"))).status_code == 201
        body = (
            await http.post("/admin/login", json={"email": "o@t.com", "password": PASSWORD})
        ).json()
        first = (await http.get("/admin/sessions", headers=bearer(body["access_token"]))).json()
        await asyncio.sleep(0.01)
        second = (await http.get("/admin/sessions", headers=bearer(body["access_token"]))).json()
        assert second["items"][0]["last_used_at"] > first["items"][0]["last_used_at"]


async def test_malformed_and_unknown_refresh_tokens_are_invalid() -> None:
    async with custom_app() as (http, _):
        assert (await http.post("/org/create", json=org_body("M", "o@m.com"))).status_code == 201
        body = (
            await http.post("/admin/login", json={"email": "o@m.com", "password": PASSWORD})
        ).json()
        sid, _, mac = body["refresh_token"].split(".")
        for bad in [
            "x",
            f"{sid}.0.{'A' * 43}",
            f"{'0' * 24}.0.{mac}",
            f"{sid}.1.{mac}",
            f"{sid}.0.{mac}x",
        ]:
            res = await http.post("/admin/refresh", json={"refresh_token": bad})
            assert code(res) == (401, "invalid_refresh_token"), bad
        # After a rotation, a forged token of the earlier generation is not a reuse (the MAC
        # tells): invalid, and the session lives on.
        rotated = await http.post("/admin/refresh", json={"refresh_token": body["refresh_token"]})
        assert rotated.status_code == 200
        forged = f"{sid}.0.{'B' * 43}"
        res = await http.post("/admin/refresh", json={"refresh_token": forged})
        assert code(res) == (401, "invalid_refresh_token")
        current = rotated.json()["refresh_token"]
        res = await http.post("/admin/refresh", json={"refresh_token": current})
        assert res.status_code == 200, res.text


async def test_sessions_and_their_denylist_entries_have_ttl_indexes_and_hashes_only() -> None:
    async with custom_app() as (http, app):
        repos = app.state.svc.repos
        indexes = await repos.sessions.col.index_information()
        ttl = [i for i in indexes.values() if i.get("expireAfterSeconds") == 0]
        assert [i["key"] for i in ttl] == [[("expires_at", 1)]]
        denylist = await repos.revocations.col.index_information()
        assert any(i.get("expireAfterSeconds") == 0 for i in denylist.values())
        assert (await http.post("/org/create", json=org_body("E", "o@e.com"))).status_code == 201
        await http.post("/admin/login", json={"email": "o@e.com", "password": PASSWORD})
        [stored] = await repos.sessions.col.find().to_list(None)
        assert stored["expires_at"] > stored["created_at"]  # what the TTL index reads
        assert "refresh_token" not in stored and len(stored["refresh_hash"]) == 64  # a hash only
