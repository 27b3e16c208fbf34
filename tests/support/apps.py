"""The app in-process: settings for tests, a client on its ASGI interface, API keys."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI
from mongomock_motor import AsyncMongoMockClient

from app.audit.service import Actor, RequestMeta
from app.kit.settings import Settings
from app.main import create_app
from tests.support.clients import TEST_SECRET


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


@contextlib.asynccontextmanager
async def custom_app(
    client: Any = None, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The in-process app over the in-memory double (or `client`), with settings overrides."""
    overrides.setdefault("mongodb_db", "sec_test")
    settings = make_settings(**overrides)
    async with app_client(settings, client or AsyncMongoMockClient(tz_aware=True)) as pair:
        yield pair


async def new_key(app: FastAPI, *scopes: str, name: str = "billing") -> str:
    """Create an API key through the app's own service; returns the key (shown once)."""
    _, key = await app.state.svc.api_keys.create(
        name=name, scopes=list(scopes), actor=Actor("cli", "test"), meta=RequestMeta()
    )
    assert isinstance(key, str)
    return key
