"""Stores for tests: an in-memory double for logic, a real nx-27017 server for the database.

Two tiers: every test that uses the real store or service processes carries the `realstore`
marker (given here from its fixtures, or by the test itself when it starts processes on its
own), so `pytest -m "not realstore"` runs only the in-memory tests.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from mongomock_motor import AsyncMongoMockClient
from pymongo import AsyncMongoClient

from app.kit.db import EmbeddedMongo
from app.kit.settings import Settings
from app.kit.watch import LocalWrites
from tests.support.apps import app_client, make_settings
from tests.support.processes import ServiceProcess, procs_service_env, stop_process
from tests.support.stores import empty_store, start_nx

# A test that asks for any of these (directly or through another fixture) is a realstore test.
REALSTORE_FIXTURES = frozenset({"nx_server", "nx_client", "real_api"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "realstore: uses a real nx-27017 store or starts processes (service, store, CLI); "
        'deselect with -m "not realstore" for the in-memory tier',
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if REALSTORE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.realstore)


@pytest.fixture(scope="session")
def nx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedMongo]:
    """One nx-27017 wire-protocol server (file mode, loopback, free port) for the session."""
    server = EmbeddedMongo(tmp_path_factory.mktemp("nx"))
    proc = start_nx(server)
    yield server
    stop_process(proc)


@pytest.fixture
def db_name() -> str:
    return "t_" + uuid.uuid4().hex[:12]


@pytest.fixture
async def nx_client(nx_server: EmbeddedMongo) -> AsyncIterator[AsyncMongoClient[Any]]:
    """A client on the shared server; the server starts each test empty (every database is
    dropped before the test: tests reuse database names)."""
    # With the listener `make_client` installs, so the authentication cache serves (and sees
    # this client's writes, the test's own included, at once), as in a service process.
    client: AsyncMongoClient[Any] = AsyncMongoClient(
        nx_server.url, tz_aware=True, event_listeners=[LocalWrites()]
    )
    await empty_store(client)
    yield client
    await client.close()


@pytest.fixture
def settings(db_name: str) -> Settings:
    return make_settings(mongodb_db=db_name)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app over the in-memory double (fast logic tests)."""
    async with app_client(settings, AsyncMongoMockClient(tz_aware=True)) as (http, _):
        yield http


@pytest.fixture
async def real_api(
    settings: Settings, nx_client: AsyncMongoClient[Any]
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The app over the real nx-27017 server."""
    async with app_client(settings, nx_client) as pair:
        yield pair


@pytest.fixture
def logs_dir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture
async def replicas(
    nx_server: EmbeddedMongo, nx_client: AsyncMongoClient[Any], logs_dir: Path
) -> AsyncIterator[tuple[ServiceProcess, ServiceProcess]]:
    """Two service processes (uvicorn, their own free ports) over one nx-27017 server, on the
    multi-process tests' database (emptied first, by `nx_client`)."""
    a = ServiceProcess(procs_service_env(nx_server), log_path=logs_dir / "a.log")
    b = ServiceProcess(procs_service_env(nx_server), log_path=logs_dir / "b.log")
    try:
        await asyncio.gather(a.start(), b.start())
        yield a, b
    finally:
        a.stop()
        b.stop()
