"""Operability: database outages, graceful shutdown, metrics, structured logs, CLI."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from app.kit.db import EmbeddedMongo
from tests.support.clients import PASSWORD, bearer, org_body
from tests.support.processes import ROOT, ServiceProcess, nx_service_env, stop_process
from tests.support.stores import start_nx


def env_for(nx: EmbeddedMongo, **extra: str) -> dict[str, str]:
    return nx_service_env(nx, db="ops_db", **extra)


@pytest.mark.realstore  # starts its own nx-27017 and a service process
async def test_database_outage_is_a_quick_503_and_heals(tmp_path: Path) -> None:
    nx = EmbeddedMongo(tmp_path / "nx")
    nx_proc = start_nx(nx)
    svc = ServiceProcess(env_for(nx), log_path=tmp_path / "svc.log")  # default timeout
    try:
        await svc.start()
        async with httpx.AsyncClient(base_url=svc.url, timeout=30) as http:
            assert (
                await http.post("/org/create", json=org_body("Steady", "s@x.com"))
            ).status_code == 201
            login = await http.post("/admin/login", json={"email": "s@x.com", "password": PASSWORD})
            token = login.json()["access_token"]
            params = {"organization_name": "Steady"}

            stop_process(nx_proc)  # the database goes away under a running service
            calls: list[Callable[[], Awaitable[httpx.Response]]] = [
                lambda: http.get("/org/get", params=params, headers=bearer(token)),
                lambda: http.post("/org/create", json=org_body("During", "d@x.com")),
                lambda: http.post("/admin/login", json={"email": "s@x.com", "password": PASSWORD}),
                lambda: http.get("/ready"),
            ]
            for call in calls:
                started = time.monotonic()
                res = await call()
                elapsed = time.monotonic() - started
                assert res.status_code == 503, res.text
                assert res.json()["code"] == "database_unavailable"
                assert elapsed < 5.0, f"took {elapsed:.1f}s"
            assert (await http.get("/health")).status_code == 200  # the process itself is fine

            nx_proc = start_nx(nx)  # same port, same data file
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if (await http.get("/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.2)
            res = await http.get("/org/get", params=params, headers=bearer(token))
            assert res.status_code == 200, res.text
            assert (
                await http.post("/org/create", json=org_body("After", "a@x.com"))
            ).status_code == 201
        assert svc.proc is not None and svc.proc.poll() is None, "the service must not restart"
    finally:
        svc.stop()
        stop_process(nx_proc)


async def test_sigterm_lets_a_slow_login_finish(
    nx_server: EmbeddedMongo, nx_client: Any, tmp_path: Path
) -> None:
    svc = ServiceProcess(env_for(nx_server, BCRYPT_ROUNDS="14"), log_path=tmp_path / "svc.log")
    await svc.start()
    try:
        async with httpx.AsyncClient(base_url=svc.url, timeout=60) as http:
            res = await http.post("/org/create", json=org_body("Slow", "slow@x.com"))
            assert res.status_code == 201
            login = asyncio.create_task(
                http.post("/admin/login", json={"email": "slow@x.com", "password": PASSWORD})
            )
            await asyncio.sleep(0.3)  # the login is now inside bcrypt (cost 14: about 1 s)
            assert svc.proc is not None
            os.kill(svc.proc.pid, signal.SIGTERM)
            signalled = time.monotonic()
            res = await login
            assert time.monotonic() - signalled > 0.2, "the login was not in flight at SIGTERM"
            assert res.status_code == 200, res.text
            assert res.json()["access_token"]
        assert await svc.wait_exit(timeout=30) == 0
    finally:
        svc.stop()
    log = (tmp_path / "svc.log").read_text()
    assert '"level": "error"' not in log and "Traceback" not in log
    assert "shutdown complete: reconciler stopped, hash pool closed, database client closed" in log


async def test_metrics_move(nx_server: EmbeddedMongo, nx_client: Any, tmp_path: Path) -> None:
    svc = ServiceProcess(env_for(nx_server), log_path=tmp_path / "svc.log")
    await svc.start()
    try:
        async with httpx.AsyncClient(base_url=svc.url, timeout=30) as http:
            before = (await http.get("/metrics")).text
            await http.post("/org/create", json=org_body("Metered", "m@x.com"))
            for _ in range(3):
                await http.post("/admin/login", json={"email": "m@x.com", "password": PASSWORD})
            await http.get("/org/get", params={"organization_name": "x"})
            after = (await http.get("/metrics")).text
    finally:
        svc.stop()

    def value(text: str, pattern: str) -> float:
        total = 0.0
        for line in text.splitlines():
            if re.match(pattern, line):
                total += float(line.rsplit(" ", 1)[1])
        return total

    login_count = (
        r"orgsvc_http_request_duration_seconds_count"
        r'\{method="POST",route="/admin/login",status="200"\}'
    )
    assert value(after, login_count) - value(before, login_count) == 3
    assert (
        value(after, r'orgsvc_http_requests_total\{method="GET",route="/org/get",status="401"\}')
        == 1
    )
    assert 'le="0.1"' in after and "orgsvc_http_request_duration_seconds_bucket" in after
    assert value(after, r"orgsvc_hash_pool_wait_seconds_count") >= 4  # 1 hash + 3 verifies
    assert "orgsvc_hash_pool_queue_length" in after
    assert value(after, r"orgsvc_organizations_total") >= 1
    assert "orgsvc_database_errors_total" in after and "orgsvc_reconciler_actions_total" in after
    # Bounded labels: no organization name or id ever becomes a label.
    assert "Metered" not in after and "metered" not in after


async def test_json_logs_have_request_fields_and_no_secrets(
    nx_server: EmbeddedMongo, nx_client: Any, tmp_path: Path
) -> None:
    log_path = tmp_path / "svc.log"
    svc = ServiceProcess(env_for(nx_server), log_path=log_path)
    await svc.start()
    secret_password = "Sup3r-secret-pw!"
    try:
        async with httpx.AsyncClient(base_url=svc.url, timeout=30) as http:
            res = await http.post(
                "/org/create", json=org_body("Logged", "l@x.com", secret_password)
            )
            assert res.status_code == 201
            res = await http.post(
                "/admin/login",
                json={"email": "l@x.com", "password": secret_password},
                headers={"X-Request-ID": "trace-me-123"},
            )
            assert res.headers["x-request-id"] == "trace-me-123"
            token = res.json()["access_token"]
            res = await http.get(
                "/org/get", params={"organization_name": "Logged"}, headers=bearer(token)
            )
            generated = res.headers["x-request-id"]
            assert re.fullmatch(r"[0-9a-f]{32}", generated)
            await http.post(
                "/admin/login", json={"email": "l@x.com", "password": "wrong-password!"}
            )
            await http.put(
                "/org/update",
                json={"password": "another-" + secret_password},
                headers=bearer(token),
            )
    finally:
        svc.stop()
    admins: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(nx_server.url)
    hashes: list[str] = [
        d["password_hash"] async for d in admins["ops_db"].admins.find({}, {"password_hash": 1})
    ]
    await admins.close()
    text = log_path.read_text()
    entries = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    requests = [e for e in entries if e.get("msg") == "request"]
    assert len(requests) >= 5
    for e in requests:
        assert {"method", "route", "status", "duration_ms", "request_id"} <= e.keys()
    login = next(e for e in requests if e["request_id"] == "trace-me-123")
    assert (login["route"], login["status"]) == ("/admin/login", 200)
    get = next(e for e in requests if e["request_id"] == generated)
    assert get["organization_id"] and get["route"] == "/org/get"
    for forbidden in [secret_password, token, token.split(".")[2], "$2b$", *hashes]:
        assert forbidden not in text


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.realstore  # runs the CLI as a process
@pytest.mark.parametrize(
    "args",
    [
        [],
        ["serve"],
        ["reconcile"],
        ["orgs"],
        ["orgs", "list"],
        ["orgs", "show"],
        ["members", "list"],
        ["invitations", "list"],
    ],
)
def test_cli_help(args: list[str]) -> None:
    res = run_cli(*args, "--help", env={})
    assert res.returncode == 0, res.stderr
    assert "Usage" in res.stdout and len(res.stdout) > 100


async def test_cli_reconcile_and_orgs(
    nx_server: EmbeddedMongo, nx_client: Any, tmp_path: Path
) -> None:
    env = env_for(nx_server)
    svc = ServiceProcess(env, log_path=tmp_path / "svc.log")
    await svc.start()
    try:
        async with httpx.AsyncClient(base_url=svc.url, timeout=30) as http:
            for name in ["Beta Org", "Alpha Org"]:
                assert (await http.post("/org/create", json=org_body(name))).status_code == 201
            body = org_body("Alpha Org")
            login = await http.post(
                "/admin/login", json={"email": body["email"], "password": body["password"]}
            )
            invited = await http.post(
                "/org/invitations",
                json={"email": "new@alpha.example.com", "role": "admin"},
                headers={"Authorization": f"Bearer {login.json()['access_token']}"},
            )
            assert invited.status_code == 201, invited.text
    finally:
        svc.stop()
    db = nx_client["ops_db"]
    await db["org_alpha_org"].insert_many([{"i": i} for i in range(7)])
    # An abandoned create, as a crash would leave it.
    await db.operations.insert_one(
        {"_id": "op1", "kind": "create", "organization_id": "o1", "admin_id": "a1",
         "slug": "ghost", "lease_until": 0}
    )  # fmt: skip
    await db.name_claims.insert_one({"_id": "ghost", "organization_id": "o1", "op_id": "op1"})
    await db.create_collection("org_ghost")

    res = await asyncio.to_thread(run_cli, "reconcile", env=env)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report == {"fixed": {"create_undone": 1}, "total": 1}
    assert "org_ghost" not in await db.list_collection_names()

    res = await asyncio.to_thread(run_cli, "orgs", "list", env=env)
    assert res.returncode == 0, res.stderr
    listed = [json.loads(line) for line in res.stdout.splitlines()]
    assert [o["slug"] for o in listed] == ["alpha_org", "beta_org"]
    assert all("password" not in line for line in res.stdout.splitlines())

    res = await asyncio.to_thread(run_cli, "orgs", "show", "ALPHA-org", env=env)
    assert res.returncode == 0, res.stderr
    shown = json.loads(res.stdout)
    assert (shown["slug"], shown["documents"]) == ("alpha_org", 7)
    res = await asyncio.to_thread(run_cli, "orgs", "show", "nobody", env=env)
    assert res.returncode == 1

    res = await asyncio.to_thread(run_cli, "members", "list", "Alpha Org", env=env)
    assert res.returncode == 0, res.stderr
    [member] = [json.loads(line) for line in res.stdout.splitlines()]
    assert (member["email"], member["role"]) == (org_body("Alpha Org")["email"], "owner")
    assert member["last_login_at"] is not None
    res = await asyncio.to_thread(run_cli, "invitations", "list", "alpha-org", env=env)
    assert res.returncode == 0, res.stderr
    [invitation] = [json.loads(line) for line in res.stdout.splitlines()]
    assert (invitation["email"], invitation["role"]) == ("new@alpha.example.com", "admin")
    assert invitation["invited_by"] == member["member_id"]
    assert "token" not in res.stdout and "nonce" not in res.stdout
    res = await asyncio.to_thread(run_cli, "members", "list", "nobody", env=env)
    assert res.returncode == 1
