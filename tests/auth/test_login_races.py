"""Logins under adversarial concurrency (issue 8): the limiter reserves before bcrypt, a login
racing a password change never outlives it, hashes follow BCRYPT_ROUNDS. On the real store."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
from mongomock_motor import AsyncMongoMockClient
from pymongo import AsyncMongoClient

from app.kit.db import EmbeddedMongo
from tests.support.apps import app_client, make_settings
from tests.support.clients import PASSWORD, bearer, create_and_login, org_body
from tests.support.processes import services

WRONG = "not-the-password"
BURST = 50


def hash_calls(metrics_text: str) -> float:
    """bcrypt calls (hash or verify) a service process has run: its pool's wait-time count."""
    match = re.search(r"^orgsvc_hash_pool_wait_seconds_count (\S+)$", metrics_text, re.M)
    assert match, "hash pool metric missing"
    return float(match.group(1))


async def burst(
    urls: list[str], bodies: list[dict[str, str]]
) -> tuple[list[httpx.Response], float]:
    """Send every login at once, spread over `urls`; returns the answers and the bcrypt calls."""
    async with httpx.AsyncClient(timeout=60) as http:
        before = [hash_calls((await http.get(u + "/metrics")).text) for u in urls]
        answers = await asyncio.gather(
            *(
                http.post(urls[i % len(urls)] + "/admin/login", json=body)
                for i, body in enumerate(bodies)
            )
        )
        after = [hash_calls((await http.get(u + "/metrics")).text) for u in urls]
    return list(answers), sum(after) - sum(before)


async def test_a_burst_of_wrong_passwords_runs_at_most_the_email_limit_of_bcrypt_checks(
    nx_server: EmbeddedMongo, nx_client: AsyncMongoClient[Any], logs_dir: Path
) -> None:
    """50 concurrent logins for one email on two replicas, the right password last: at most
    LOGIN_MAX_FAILURES_PER_EMAIL (5) password checks run, and no token is issued."""
    async with services(nx_server, logs_dir) as (a, b):
        async with httpx.AsyncClient(timeout=30) as http:
            res = await http.post(a.url + "/org/create", json=org_body("Burst", "burst@x.com"))
            assert res.status_code == 201, res.text
        bodies = [{"email": "burst@x.com", "password": WRONG}] * (BURST - 1)
        bodies.append({"email": "burst@x.com", "password": PASSWORD})
        answers, checks = await burst([a.url, b.url], bodies)
    statuses = [r.status_code for r in answers]
    checked = [s for s in statuses if s != 429]
    print(f"email burst: {BURST} logins -> {sorted(set(statuses))}, "
          f"{len(checked)} checked, bcrypt calls {checks:.0f}")  # fmt: skip
    assert set(statuses) <= {401, 429, 200}
    assert len(checked) <= 5, statuses
    assert checks <= 5
    # The limit held: the right password either lost the race for a slot (429) or was one of
    # the five checked; never a sixth check.
    assert statuses.count(429) >= BURST - 5
    if statuses[-1] == 200:
        assert statuses.count(401) <= 4


async def test_a_burst_from_one_ip_runs_at_most_the_ip_limit_of_bcrypt_checks(
    nx_server: EmbeddedMongo, nx_client: AsyncMongoClient[Any], logs_dir: Path
) -> None:
    """50 concurrent logins for 50 different emails from one IP: at most 20 checks run."""
    async with services(nx_server, logs_dir) as (a, b):
        bodies = [{"email": f"u{i}@spray.example", "password": WRONG} for i in range(BURST)]
        answers, checks = await burst([a.url, b.url], bodies)
    statuses = [r.status_code for r in answers]
    print(f"ip burst: {BURST} logins -> {statuses.count(401)} x 401, "
          f"{statuses.count(429)} x 429, bcrypt calls {checks:.0f}")  # fmt: skip
    assert set(statuses) <= {401, 429}
    assert statuses.count(401) <= 20
    assert checks <= 20
    assert all(int(r.headers["retry-after"]) >= 1 for r in answers if r.status_code == 429)


async def test_a_successful_login_gives_its_slots_back(
    nx_client: AsyncMongoClient[Any], db_name: str
) -> None:
    """Limit 2: a right password between failures frees the email's slots (as before)."""
    settings = make_settings(mongodb_db=db_name, login_max_failures_per_email=2)
    async with app_client(settings, nx_client) as (http, _):
        await create_and_login(http, "Slots", "s@x.com")
        for _ in range(10):
            for password, status in ((WRONG, 401), (PASSWORD, 200)):
                res = await http.post(
                    "/admin/login", json={"email": "s@x.com", "password": password}
                )
                assert res.status_code == status, res.text
        for _ in range(2):
            res = await http.post("/admin/login", json={"email": "s@x.com", "password": WRONG})
            assert res.status_code == 401
        res = await http.post("/admin/login", json={"email": "s@x.com", "password": PASSWORD})
        assert res.status_code == 429


async def test_no_login_verified_against_the_old_password_outlives_a_password_change(
    nx_client: AsyncMongoClient[Any], db_name: str
) -> None:
    """Old-password logins racing a password change (bcrypt cost 10, 8 trials): once the change
    is acknowledged, every token they got is revoked, and none can change the password again."""
    settings = make_settings(
        mongodb_db=db_name, bcrypt_rounds=10, login_max_failures_per_email=10_000,
        login_max_failures_per_ip=1_000_000,
    )  # fmt: skip
    survivors: list[str] = []
    issued = 0
    async with app_client(settings, nx_client) as (http, _):
        for trial in range(8):
            email = f"race{trial}@x.com"
            _, token = await create_and_login(http, f"Race {trial}", email)
            new_password = f"brand-new-password-{trial}"

            async def old_login(delay: float, email: str = email) -> httpx.Response:
                await asyncio.sleep(delay)
                return await http.post("/admin/login", json={"email": email, "password": PASSWORD})

            change = http.put("/org/update", json={"password": new_password}, headers=bearer(token))
            results = await asyncio.gather(change, *(old_login(i * 0.01) for i in range(12)))
            assert results[0].status_code == 200, results[0].text
            for res in results[1:]:
                if res.status_code != 200:
                    assert res.status_code == 401, res.text
                    continue
                issued += 1
                old_token = res.json()["access_token"]
                got = await http.get(
                    "/org/get", params={"organization_name": f"Race {trial}"},
                    headers=bearer(old_token),
                )  # fmt: skip
                if got.status_code != 401:
                    survivors.append(f"trial {trial}: {got.status_code}")
                    again = await http.put(
                        "/org/update", json={"password": "attacker-password"},
                        headers=bearer(old_token),
                    )  # fmt: skip
                    assert again.status_code == 401, "an old-password token changed the password"
                else:
                    assert got.json()["code"] == "token_revoked"
            # The owner still logs in with the new password.
            res = await http.post("/admin/login", json={"email": email, "password": new_password})
            assert res.status_code == 200
    print(f"password race: {issued} old-password tokens issued in 8 trials, "
          f"{len(survivors)} survived the change")  # fmt: skip
    assert survivors == []


async def test_create_that_collides_with_an_unclaimed_record_is_409_and_touches_nothing(
    nx_client: AsyncMongoClient[Any], db_name: str
) -> None:
    """A record whose name claim is missing (a store left so by a lost lease in an older
    release): creating its name is 409 and the other organization's collection survives."""
    settings = make_settings(mongodb_db=db_name)
    db = nx_client[db_name]
    async with app_client(settings, nx_client) as (http, _):
        victim, token = await create_and_login(http, "Victim", "v@x.com")
        await db["org_victim"].insert_many([{"n": i} for i in range(50)])
        await db.name_claims.delete_one({"_id": "victim"})
        res = await http.post("/org/create", json=org_body("VICTIM", "intruder@x.com"))
        assert res.status_code == 409, res.text
        assert res.json()["code"] == "organization_exists"
        assert await db["org_victim"].count_documents({}) == 50
        assert await db.organizations.count_documents({}) == 1
        assert await db.admins.count_documents({}) == 1
        assert await db.operations.count_documents({}) == 0
        assert await db.name_claims.count_documents({}) == 0  # nothing of the failed create
        got = await http.get(
            "/org/get", params={"organization_name": "Victim"}, headers=bearer(token)
        )
        assert got.status_code == 200 and got.json() == victim


async def test_login_upgrades_a_hash_made_at_another_cost() -> None:
    """BCRYPT_ROUNDS 4 -> 5: a successful login rehashes at cost 5, a failed one does not."""
    client: Any = AsyncMongoMockClient(tz_aware=True)
    async with app_client(make_settings(mongodb_db="rehash", bcrypt_rounds=4), client) as (h, _):
        await create_and_login(h, "Rehash", "r@x.com")
    admins = client["rehash"]["admins"]

    async def stored_hash() -> str:
        doc = await admins.find_one({})
        assert doc is not None
        return str(doc["password_hash"])

    assert (await stored_hash()).startswith("$2b$04$")
    async with app_client(make_settings(mongodb_db="rehash", bcrypt_rounds=5), client) as (h, _):
        bad = await h.post("/admin/login", json={"email": "r@x.com", "password": WRONG})
        assert bad.status_code == 401
        assert (await stored_hash()).startswith("$2b$04$")
        good = await h.post("/admin/login", json={"email": "r@x.com", "password": PASSWORD})
        assert good.status_code == 200
        stored = await stored_hash()
        assert stored.startswith("$2b$05$")
        # The upgraded hash still verifies, and the token from that login works.
        again = await h.post("/admin/login", json={"email": "r@x.com", "password": PASSWORD})
        assert again.status_code == 200
        got = await h.get(
            "/org/get", params={"organization_name": "Rehash"},
            headers=bearer(good.json()["access_token"]),
        )  # fmt: skip
        assert got.status_code == 200
        assert (await stored_hash()) == stored
