"""Authentication is one database round trip per request, whatever the size of the team: the
organization record with the caller's team entry only (measured with the driver's command
monitoring on the real store)."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient

from app.kit.db import EmbeddedMongo
from app.kit.settings import Settings
from tests.mail.support import wait_until
from tests.support.apps import app_client
from tests.support.clients import bearer, create_and_login
from tests.support.commands import RequestCommands
from tests.support.events import settled_events
from tests.support.teams import add_member


async def _drained(outbox: Any) -> bool:
    pending: int = await outbox.count_documents({"state": "pending"})
    return pending == 0


async def test_an_authenticated_request_costs_one_read(
    nx_server: EmbeddedMongo, nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    commands = RequestCommands()
    commands.on = False
    client: AsyncMongoClient[Any] = AsyncMongoClient(
        nx_server.url, tz_aware=True, event_listeners=[commands]
    )
    try:
        async with app_client(settings, client) as (http, app):
            _, owner = await create_and_login(http, "Acme", "owner@acme.com")
            _, member = await add_member(http, app, owner, "m1@acme.com")
            for i in range(2, 12):  # a team of 12: still one read of one entry
                await add_member(http, app, owner, f"m{i}@acme.com")
            outbox = client[settings.mongodb_db].mail_outbox
            await wait_until(lambda: _drained(outbox))
            await settled_events(client[settings.mongodb_db])  # the publisher is idle too
            for token in (owner, member):
                commands.seen.clear()
                commands.on = True
                res = await http.get(
                    "/org/get", params={"organization_name": "Acme"}, headers=bearer(token)
                )
                commands.on = False
                assert res.status_code == 200
                assert res.json()["member_count"] == 12
                assert commands.seen == [("find", "organizations")], commands.seen
    finally:
        await client.close()


async def test_a_sessions_last_use_costs_one_write_per_touch_interval(
    nx_server: EmbeddedMongo, nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    """The one thing a request may add: its session's `last_used_at`, written at most once per
    SESSION_TOUCH_SECONDS by a process (here 0: every request), never a second read."""
    commands = RequestCommands()
    commands.on = False
    client: AsyncMongoClient[Any] = AsyncMongoClient(
        nx_server.url, tz_aware=True, event_listeners=[commands]
    )
    try:
        every = settings.model_copy(update={"session_touch_seconds": 0})
        async with app_client(every, client) as (http, _):
            _, owner = await create_and_login(http, "Acme", "owner@acme.com")
            await settled_events(client[every.mongodb_db])  # the publisher is idle
            commands.seen.clear()
            commands.on = True
            res = await http.get("/org/members", headers=bearer(owner))
            commands.on = False
            assert res.status_code == 200
            assert commands.seen[:2] == [("find", "organizations"), ("update", "sessions")]
    finally:
        await client.close()
