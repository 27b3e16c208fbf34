"""Webhook tests run the app over the real nx-27017 store, with short delivery settings; a
test changes them with `@pytest.mark.webhook_settings(name=value, ...)`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.kit.settings import Settings
from app.kit.store import Database
from tests.support.apps import make_settings, new_key
from tests.support.receiver import Receiver

SHORT = {
    "webhook_allow_private_networks": True,
    "webhook_poll_seconds": 0.05,
    "webhook_retry_base_seconds": 0.3,
    "webhook_timeout_seconds": 2.0,
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "webhook_settings(**values): settings for this test")


@pytest.fixture
def settings(db_name: str, request: pytest.FixtureRequest) -> Settings:
    values: dict[str, Any] = {"mongodb_db": db_name, **SHORT}
    marker = request.node.get_closest_marker("webhook_settings")
    if marker is not None:
        values.update(marker.kwargs)
    return make_settings(**values)


@dataclass
class Hooks:
    """The app under test, a `webhooks:manage` key, and its database."""

    http: httpx.AsyncClient
    app: FastAPI
    headers: dict[str, str]
    db: Database

    async def create(self, url: str, types: list[str] | None = None, **extra: Any) -> Any:
        body = {"url": url, "types": types or ["organization.updated"], **extra}
        res = await self.http.post("/webhooks", json=body, headers=self.headers)
        assert res.status_code == 201, res.text
        return res.json()

    async def deliveries(self, webhook_id: str, **params: Any) -> list[dict[str, Any]]:
        res = await self.http.get(
            f"/webhooks/{webhook_id}/deliveries",
            params={"limit": 100, **params},
            headers=self.headers,
        )
        assert res.status_code == 200, res.text
        items: list[dict[str, Any]] = res.json()["items"]
        return items

    def kick(self) -> None:
        self.app.state.svc.webhooks.kick()


@pytest.fixture
async def hooks(real_api: tuple[httpx.AsyncClient, FastAPI], settings: Settings) -> Hooks:
    http, app = real_api
    key = await new_key(app, "webhooks:manage", name="hooks")
    db = app.state.svc.webhooks.db
    return Hooks(http=http, app=app, headers={"X-API-Key": key}, db=db)


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Awaitable[tuple[Receiver, str]]]]:
    """Start receivers (closed after the test): `receiver, url = await receivers(...)`."""
    made: list[Receiver] = []

    async def start(**kwargs: Any) -> tuple[Receiver, str]:
        receiver = Receiver(**kwargs)
        made.append(receiver)
        return receiver, await receiver.start()

    yield start
    for receiver in made:
        await receiver.close()
