"""Test helpers: settings, an in-process app client, service subprocesses on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from app.config import Settings
from app.db import EmbeddedMongo, free_port
from app.main import create_app

ROOT = Path(__file__).resolve().parent.parent
TEST_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
PASSWORD = "correct horse battery"


def make_settings(**overrides: Any) -> Settings:
    """Settings for tests: fast bcrypt, no `.env` file, a quiet reconciler."""
    values: dict[str, Any] = {
        "jwt_secret": TEST_SECRET,
        "bcrypt_rounds": 4,
        "hash_pool_size": 2,
        "reconcile_interval_seconds": 3600,
        "mongodb_timeout_ms": 2000,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@contextlib.asynccontextmanager
async def app_client(
    settings: Settings, client: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """An httpx client talking to an in-process app whose lifespan has run."""
    app = create_app(settings, client=client)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http, app


def nx_service_env(nx: EmbeddedMongo, *, db: str, **extra: str) -> dict[str, str]:
    """Environment for a service subprocess on `nx`: fast bcrypt, the test secret, plus `extra`."""
    return {
        "MONGODB_URL": nx.url,
        "MONGODB_DB": db,
        "JWT_SECRET": TEST_SECRET,
        "BCRYPT_ROUNDS": "4",
        "ENVIRONMENT": "development",
        **extra,
    }


def org_body(name: str, email: str | None = None, password: str = PASSWORD) -> dict[str, str]:
    email = email or f"admin@{''.join(c for c in name.lower() if c.isalnum()) or 'x'}.example.com"
    return {"organization_name": name, "email": email, "password": password}


async def create_and_login(
    http: httpx.AsyncClient, name: str, email: str | None = None
) -> tuple[dict[str, Any], str]:
    """Create an organization and log its admin in; returns (organization, token)."""
    body = org_body(name, email)
    res = await http.post("/org/create", json=body)
    assert res.status_code == 201, res.text
    login = await http.post(
        "/admin/login", json={"email": body["email"], "password": body["password"]}
    )
    assert login.status_code == 200, login.text
    return res.json(), login.json()["access_token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class ServiceProcess:
    """The service as a real uvicorn subprocess on a free loopback port."""

    def __init__(self, env: dict[str, str], *, log_path: Path) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, *, timeout: float = 30.0) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"service exited: {self.log_path.read_text()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(self.url + "/health", timeout=1)).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError("service did not become healthy")

    async def wait_exit(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        code = self.proc.poll()
        assert code is not None, "service did not exit"
        return code

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=15)


def start_nx(server: EmbeddedMongo, *, timeout: float = 30.0) -> subprocess.Popen[bytes]:
    """Start an nx-27017 server (through the app's launcher) and wait until it answers."""
    import pymongo

    server.data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        server.command(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nx-27017 exited: {server.log_file.read_text()[-2000:]}")
        client: pymongo.MongoClient[Any] = pymongo.MongoClient(
            server.url, serverSelectionTimeoutMS=300
        )
        try:
            client.admin.command("ping")
            return proc
        except pymongo.errors.PyMongoError:
            time.sleep(0.1)
        finally:
            client.close()
    stop_process(proc)
    raise RuntimeError("nx-27017 did not start")


def stop_process(proc: subprocess.Popen[bytes], *, timeout: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
