"""Brute-force protection on /admin/login: per email, per client IP, shared by every replica."""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from app.kit.db import EmbeddedMongo
from app.kit.edges import client_ip
from app.kit.store import epoch_ms
from tests.support.apps import custom_app
from tests.support.clients import PASSWORD, create_and_login
from tests.support.processes import PROC_DB, services

WRONG = "not-the-password"


def login(email: str, password: str = WRONG) -> dict[str, str]:
    return {"email": email, "password": password}


def assert_429(res: httpx.Response) -> int:
    assert res.status_code == 429, res.text
    assert res.json() == {"detail": res.json()["detail"], "code": "rate_limited"}
    retry_after = int(res.headers["retry-after"])
    assert retry_after >= 1
    return retry_after


async def test_email_limit_then_429_even_with_the_right_password() -> None:
    async with custom_app(login_max_failures_per_email=3, login_failure_window_seconds=600) as (
        http,
        _,
    ):
        await create_and_login(http, "Acme", "a@acme.com")
        for _ in range(3):
            res = await http.post("/admin/login", json=login("a@acme.com"))
            assert res.status_code == 401
        retry_after = assert_429(await http.post("/admin/login", json=login("a@acme.com")))
        assert 590 <= retry_after <= 600
        # Locked: the right password is refused too, and the address is matched case-blind.
        assert_429(await http.post("/admin/login", json=login("A@ACME.com", PASSWORD)))
        # Another account from the same IP is still fine (the IP limit is higher).
        await create_and_login(http, "Other", "o@other.com")


async def test_unknown_email_is_limited_the_same_way() -> None:
    """No enumeration through the limiter: unknown emails get the same 401s, then the same 429."""
    async with custom_app(login_max_failures_per_email=2) as (http, _):
        await create_and_login(http, "Acme", "a@acme.com")
        known = [await http.post("/admin/login", json=login("a@acme.com")) for _ in range(3)]
        unknown = [await http.post("/admin/login", json=login("ghost@x.com")) for _ in range(3)]
        assert [r.status_code for r in known] == [r.status_code for r in unknown] == [401, 401, 429]
        assert known[0].json() == unknown[0].json()
        assert known[2].json() == unknown[2].json()


async def test_success_resets_the_email_counter() -> None:
    async with custom_app(login_max_failures_per_email=3) as (http, _):
        await create_and_login(http, "Acme", "a@acme.com")
        for _ in range(2):
            assert (await http.post("/admin/login", json=login("a@acme.com"))).status_code == 401
        ok = await http.post("/admin/login", json=login("a@acme.com", PASSWORD))
        assert ok.status_code == 200
        # Two more failures would be 4 in the window without the reset: still 401, not 429.
        for _ in range(2):
            assert (await http.post("/admin/login", json=login("a@acme.com"))).status_code == 401
        assert (await http.post("/admin/login", json=login("a@acme.com", PASSWORD))).is_success


async def test_ip_limit_across_many_emails() -> None:
    async with custom_app(login_max_failures_per_email=100, login_max_failures_per_ip=4) as (
        http,
        _,
    ):
        statuses = [
            (await http.post("/admin/login", json=login(f"user{i}@x.com"))).status_code
            for i in range(6)
        ]
        assert statuses == [401, 401, 401, 401, 429, 429]


async def test_429_is_decided_before_any_bcrypt_work() -> None:
    async with custom_app(login_max_failures_per_email=2) as (http, app):
        await create_and_login(http, "Acme", "a@acme.com")
        hasher = app.state.svc.hasher
        calls = 0
        original = hasher.verify

        async def counting(password: str, hashed: str | None) -> bool:
            nonlocal calls
            calls += 1
            ok: bool = await original(password, hashed)
            return ok

        hasher.verify = counting
        for _ in range(2):
            await http.post("/admin/login", json=login("a@acme.com"))
        assert calls == 2
        for _ in range(5):
            assert_429(await http.post("/admin/login", json=login("a@acme.com")))
        assert calls == 2  # no bcrypt for a rejected attempt


async def test_forwarded_for_is_ignored_from_an_untrusted_peer() -> None:
    """A client cannot dodge the IP limit by inventing X-Forwarded-For."""
    async with custom_app(login_max_failures_per_ip=3, login_max_failures_per_email=100) as (
        http,
        _,
    ):
        statuses = [
            (
                await http.post(
                    "/admin/login",
                    json=login(f"u{i}@x.com"),
                    headers={"X-Forwarded-For": f"203.0.113.{i}"},
                )
            ).status_code
            for i in range(5)
        ]
        assert statuses == [401, 401, 401, 429, 429]


async def test_forwarded_for_is_used_from_a_trusted_proxy() -> None:
    # The in-process client's peer address is 127.0.0.1: make it the trusted proxy.
    async with custom_app(
        login_max_failures_per_ip=2, login_max_failures_per_email=100, trusted_proxies="127.0.0.1"
    ) as (http, app):

        async def attempt(xff: str, i: int) -> int:
            res = await http.post(
                "/admin/login", json=login(f"u{i}@x.com"), headers={"X-Forwarded-For": xff}
            )
            return res.status_code

        assert [await attempt("198.51.100.7", i) for i in range(3)] == [401, 401, 429]
        # Another client behind the same proxy has its own counter.
        assert [await attempt("198.51.100.8", i) for i in range(2)] == [401, 401]
        # A forged left-most hop does not help: the proxy appended the real client last.
        assert await attempt("1.2.3.4, 198.51.100.7", 9) == 429
        entries = await app.state.svc.repos.audit.col.find({"action": "admin.login"}).to_list(None)
        assert {e["ip"] for e in entries} == {"198.51.100.7", "198.51.100.8"}


def test_client_ip_resolution_rules() -> None:
    trusted = (ip_network("10.0.0.0/8"), ip_network("127.0.0.1/32"))
    assert client_ip("127.0.0.1", [], ()) == "127.0.0.1"
    assert client_ip("203.0.113.5", ["1.1.1.1"], trusted) == "203.0.113.5"  # untrusted peer
    assert client_ip("127.0.0.1", ["1.1.1.1"], trusted) == "1.1.1.1"
    assert client_ip("127.0.0.1", ["6.6.6.6, 1.1.1.1, 10.0.0.2"], trusted) == "1.1.1.1"
    assert client_ip("127.0.0.1", ["6.6.6.6", "1.1.1.1"], trusted) == "1.1.1.1"  # two headers
    assert client_ip("127.0.0.1", ["10.0.0.3, 10.0.0.2"], trusted) == "10.0.0.3"  # all proxies
    assert client_ip("127.0.0.1", ["garbage, 10.0.0.2"], trusted) == "10.0.0.2"
    assert client_ip("127.0.0.1", ["::1"], trusted) == "::1"
    assert client_ip(None, ["1.1.1.1"], trusted) is None


async def test_login_limit_is_shared_by_two_processes(
    nx_server: EmbeddedMongo, nx_client: AsyncMongoClient[Any], logs_dir: Path
) -> None:
    async with (
        services(
            nx_server,
            logs_dir,
            LOGIN_MAX_FAILURES_PER_EMAIL="4",
            LOGIN_FAILURE_WINDOW_SECONDS="300",
        ) as (a, b),
        httpx.AsyncClient(timeout=30) as http,
    ):
        body = {"organization_name": "Shared", "email": "s@x.com", "password": PASSWORD}
        assert (await http.post(a.url + "/org/create", json=body)).status_code == 201
        # Two failures on each replica: four in all.
        for svc in (a, b, a, b):
            res = await http.post(svc.url + "/admin/login", json=login("s@x.com"))
            assert res.status_code == 401, res.text
        # Both replicas now refuse, even the right password.
        for svc in (a, b):
            assert_429(await http.post(svc.url + "/admin/login", json=login("s@x.com")))
            res = await http.post(svc.url + "/admin/login", json=login("s@x.com", PASSWORD))
            assert_429(res)
    # The counters are documents in MongoDB (TTL-indexed), not process memory.
    col = nx_client[PROC_DB]["login_attempts"]
    taken = {"key": {"$regex": "^email:"}, "until_ms": {"$gt": epoch_ms()}}
    assert await col.count_documents(taken) == 4
    indexes = await col.index_information()
    assert any(v.get("expireAfterSeconds") == 0 for v in indexes.values()), indexes
