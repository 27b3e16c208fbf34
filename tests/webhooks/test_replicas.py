"""Two service processes deliver every event once in steady state (leases on each attempt,
fan-out by compare-and-set), and both verify with `standardwebhooks`."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from app.api_keys.repository import ApiKeyRepository
from app.api_keys.service import ApiKeyService
from app.audit.repository import AuditRepository
from app.audit.service import Actor, AuditService, RequestMeta
from app.kit.db import EmbeddedMongo
from tests.support.feed import publish
from tests.support.processes import PROCS_DB, ServiceProcess, procs_service_env
from tests.support.receiver import Receiver

pytestmark = pytest.mark.realstore

ENV = {
    "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
    "WEBHOOK_POLL_SECONDS": "0.05",
    "WEBHOOK_RETRY_BASE_SECONDS": "0.3",
}


@pytest.fixture
async def two(
    nx_server: EmbeddedMongo, nx_client: AsyncMongoClient[Any], logs_dir: Path
) -> AsyncIterator[tuple[ServiceProcess, ServiceProcess]]:
    a = ServiceProcess(procs_service_env(nx_server, **ENV), log_path=logs_dir / "a.log")
    b = ServiceProcess(procs_service_env(nx_server, **ENV), log_path=logs_dir / "b.log")
    try:
        await asyncio.gather(a.start(), b.start())
        yield a, b
    finally:
        a.stop()
        b.stop()


async def test_two_replicas_deliver_each_event_once(
    two: tuple[ServiceProcess, ServiceProcess], nx_client: AsyncMongoClient[Any]
) -> None:
    a, b = two
    db = nx_client[PROCS_DB]
    keys = ApiKeyService(ApiKeyRepository(db), AuditService(AuditRepository(db), retention_days=1))
    _, key = await keys.create(
        name="hooks", scopes=["webhooks:manage"], actor=Actor("cli", "test"), meta=RequestMeta()
    )
    receiver = Receiver()
    url = await receiver.start()
    try:
        async with httpx.AsyncClient(headers={"X-API-Key": key}, timeout=10) as http:
            res = await http.post(
                a.url + "/webhooks", json={"url": url, "types": ["organization.updated"]}
            )
            assert res.status_code == 201, res.text
            hook = res.json()
            receiver.secrets = [hook["secret"]]
            events = []
            for _ in range(10):  # in bursts, while both workers poll
                events += await publish(db, 6)
                await asyncio.sleep(0.05)
            await receiver.wait_for(lambda: len(receiver.arrivals) >= len(events), timeout=30)
            await asyncio.sleep(1.0)  # any duplicate would have arrived by now
            counts = Counter(receiver.ids())
            assert set(counts) == {e.id for e in events}
            assert max(counts.values()) == 1, [i for i, n in counts.items() if n > 1]
            assert all(arrival.verified[hook["secret"]] for arrival in receiver.arrivals)
            page = await http.get(
                b.url + f"/webhooks/{hook['webhook_id']}/deliveries", params={"limit": 100}
            )
            items = page.json()["items"]
            assert len(items) == len(events)
            assert {(d["status"], d["attempts"]) for d in items} == {("delivered", 1)}
            owners = await db["webhook_deliveries"].distinct("owner")
            assert len(owners) == 2  # both replicas took part
    finally:
        await receiver.close()
