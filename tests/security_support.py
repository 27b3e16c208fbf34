"""Helpers for the security tests: apps with custom settings, service processes on one nx store."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from mongomock_motor import AsyncMongoMockClient

from app.db import EmbeddedMongo
from app.services.audit import Actor, RequestMeta
from tests.helpers import ServiceProcess, app_client, make_settings, nx_service_env

PROC_DB = "org_service_security"


@contextlib.asynccontextmanager
async def custom_app(
    client: Any = None, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The in-process app over the in-memory double (or `client`), with settings overrides."""
    overrides.setdefault("mongodb_db", "sec_test")
    settings = make_settings(**overrides)
    async with app_client(settings, client or AsyncMongoMockClient(tz_aware=True)) as pair:
        yield pair


def service_env(nx: EmbeddedMongo, **extra: str) -> dict[str, str]:
    return nx_service_env(nx, db=PROC_DB, **extra)


@contextlib.asynccontextmanager
async def services(
    nx: EmbeddedMongo, logs_dir: Path, *, count: int = 2, **extra: str
) -> AsyncIterator[list[ServiceProcess]]:
    """`count` service processes on one nx-27017 store, stopped afterwards."""
    import asyncio

    procs = [
        ServiceProcess(service_env(nx, **extra), log_path=logs_dir / f"svc{i}.log")
        for i in range(count)
    ]
    try:
        await asyncio.gather(*(p.start() for p in procs))
        yield procs
    finally:
        for p in procs:
            p.stop()


async def new_key(app: FastAPI, *scopes: str, name: str = "billing") -> str:
    """Create an API key through the app's own service; returns the key (shown once)."""
    _, key = await app.state.svc.api_keys.create(
        name=name, scopes=list(scopes), actor=Actor("cli", "test"), meta=RequestMeta()
    )
    assert isinstance(key, str)
    return key
