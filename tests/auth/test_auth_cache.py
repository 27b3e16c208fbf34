"""The authentication cache (app/auth/cache.py): no round trip when it serves, and it fails
closed: a change it has not seen, a lost stream, a read that raced a change, a store without
change streams or the setting off all mean the request reads the database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from mongomock_motor import AsyncMongoMockClient
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure
from pymongo.monitoring import CommandListener

from app.auth.cache import RECENT_CHANGES, AuthCache
from app.auth.tokens import LEEWAY_SECONDS, InvalidToken, TokenManager
from app.kit.db import EmbeddedMongo, free_port
from app.kit.settings import Settings
from app.kit.watch import LocalWrites
from app.organizations.records import Organization
from tests.mail.support import wait_until
from tests.support.apps import app_client, make_settings, new_key
from tests.support.clients import bearer, create_and_login
from tests.support.commands import RequestCommands
from tests.support.processes import stop_process
from tests.support.stores import start_nx
from tests.support.teams import add_member


def cached_client(url: str, *listeners: CommandListener) -> AsyncMongoClient[Any]:
    """A client as `make_client` makes it (with `LocalWrites`), plus `listeners`."""
    return AsyncMongoClient(
        url,
        tz_aware=True,
        event_listeners=[LocalWrites(), *listeners],
        serverSelectionTimeoutMS=2000,
    )


async def serving(cache: AuthCache) -> None:
    await cache.ready()
    await wait_until(lambda: _true(cache.serving()), timeout=5)


async def _true(value: bool) -> bool:
    return value


async def get(http: Any, token: str, name: str = "Acme") -> int:
    res = await http.get("/org/get", params={"organization_name": name}, headers=bearer(token))
    status: int = res.status_code
    return status


# --- on the real store ------------------------------------------------------------------------


async def test_a_cached_request_makes_no_database_round_trip(
    nx_server: EmbeddedMongo, nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    commands = RequestCommands()
    client = cached_client(nx_server.url, commands)
    try:
        async with app_client(settings, client) as (http, app):
            cache: AuthCache = app.state.svc.auth_cache
            _, owner = await create_and_login(http, "Acme", "owner@acme.com")
            _, member = await add_member(http, app, owner, "m1@acme.com")
            await serving(cache)
            for token in (owner, member):
                # The first request reads (one find), the next ones read nothing at all.
                await wait_until(lambda: _true(cache.serving()))
                commands.seen.clear()
                assert await get(http, token) == 200
                first = list(commands.seen)
                commands.seen.clear()
                hits = cache.hits
                for _ in range(20):
                    assert await get(http, token) == 200
                assert commands.seen == [], commands.seen
                assert cache.hits - hits == 20
                assert first == [("find", "organizations")], first
            assert app.state.svc.metrics.registry.get_sample_value(
                "orgsvc_auth_cache_lookups_total", {"result": "hit"}
            ) == float(cache.hits)
            ready = await http.get("/ready")
            assert ready.json()["auth_cache"] == "serving"
    finally:
        await client.close()


async def test_this_processs_own_change_is_seen_by_its_very_next_request(
    nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    """Password change, logout-all, a member's removal, suspension: each made through this
    process, with the entry cached just before; the next request is refused at once (the
    cache waits for its stream to pass this process's own write)."""
    async with app_client(settings, nx_client) as (http, app):
        cache: AuthCache = app.state.svc.auth_cache
        key = await _operator_key(app)
        for trial in range(4):
            name = f"Own {trial}"
            created, owner = await create_and_login(http, name, f"o{trial}@own.com")
            org_id = created["organization_id"]
            member, member_token = await add_member(http, app, owner, f"m{trial}@own.com")
            for token in (owner, member_token):
                await serving(cache)
                assert await get(http, token, name) == 200
                assert await get(http, token, name) == 200  # served from the cache
            password = {"password": f"new-pass-{trial}"}
            removal = f"/org/members/{member['member_id']}"
            changes: list[tuple[str, Callable[[], Awaitable[httpx.Response]]]] = [
                (owner, partial(http.put, "/org/update", json=password, headers=bearer(owner))),
                (owner, partial(http.post, "/admin/logout-all", headers=bearer(owner))),
                (member_token, partial(http.delete, removal, headers=bearer(owner))),
                (owner, partial(http.post, f"/orgs/{org_id}/suspend", headers=key)),
            ]
            victim, change = changes[trial]
            res = await change()
            assert res.status_code in (200, 204), res.text
            hits = cache.hits
            assert await get(http, victim, name) in (401, 403)
            assert cache.hits == hits, "served from the cache after this process's own change"


async def test_a_change_made_elsewhere_reaches_the_cache_through_the_stream(
    nx_server: EmbeddedMongo, nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    """Another client (another replica, the CLI) bumps the token version: the entry this
    process cached is dropped when the change event arrives, within milliseconds."""
    other: AsyncMongoClient[Any] = AsyncMongoClient(nx_server.url, tz_aware=True)
    try:
        async with app_client(settings, nx_client) as (http, app):
            cache: AuthCache = app.state.svc.auth_cache
            created, owner = await create_and_login(http, "Acme", "owner@acme.com")
            await serving(cache)

            async def served_from_memory() -> bool:
                hits = cache.hits
                assert await get(http, owner) == 200
                return cache.hits > hits

            # Until a GET is a hit: the first is a miss, and what it read is kept only if the
            # cache may still serve when the read lands (on a loaded machine a feed can fall
            # past AUTH_CACHE_MAX_LAG_MS meanwhile: a CI run once saw two GETs and no hit).
            await wait_until(served_from_memory, timeout=5)
            await bump_version(other[settings.mongodb_db], created)
            took = await wait_until(lambda: _refused(http, owner), timeout=2, step=0.002)
            assert took < 1.0
    finally:
        await other.close()


async def bump_version(db: Any, created: dict[str, Any]) -> None:
    """What a password change elsewhere does to the token state: a new token version."""
    admin_id = created["admin"]["admin_id"]
    await db.organizations.update_one(
        {"_id": created["organization_id"]},
        {"$inc": {f"team.members.{admin_id}.token_version": 1, "team.version": 1}},
    )


async def _refused(http: Any, token: str) -> bool:
    return await get(http, token) == 401


async def test_a_lost_stream_empties_the_cache_and_requests_read_until_it_is_back(
    tmp_path: Path,
) -> None:
    """The store restarts under a warm cache. While it is down requests read (503: nothing is
    served from memory); a token revoked right after it is back, before the stream reopened,
    is refused by the first answer that is not a 503."""
    server = EmbeddedMongo(tmp_path / "nx", port=free_port())
    proc = start_nx(server)
    settings = make_settings(mongodb_db="restart", mongodb_timeout_ms=500)
    client = cached_client(server.url)
    try:
        async with app_client(settings, client) as (http, app):
            cache: AuthCache = app.state.svc.auth_cache
            created, owner = await create_and_login(http, "Acme", "owner@acme.com")
            await serving(cache)
            assert await get(http, owner) == 200
            assert await get(http, owner) == 200
            assert cache.members
            stop_process(proc)
            await wait_until(lambda: _true(not cache.serving()), timeout=5)
            await wait_until(lambda: _true(not cache.members), timeout=5)  # the error empties it
            assert cache.mode == "reading"
            assert await get(http, owner) == 503  # read, not served
            proc = start_nx(server)
            other: AsyncMongoClient[Any] = AsyncMongoClient(server.url, tz_aware=True)
            await bump_version(other["restart"], created)
            await other.close()
            answers = []
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                answers.append(await get(http, owner))
                if answers[-1] != 503:
                    break
                await asyncio.sleep(0.05)
            assert answers[-1] == 401, answers
            assert set(answers) <= {503, 401}, answers
            await serving(cache)  # the stream is back: the cache serves again
            assert sum(feed.resets for feed in cache.feeds) >= 1
    finally:
        await client.close()
        stop_process(proc)


async def test_with_the_setting_off_every_request_reads(
    nx_server: EmbeddedMongo, nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    commands = RequestCommands()
    client = cached_client(nx_server.url, commands)
    try:
        off = settings.model_copy(update={"auth_cache": False})
        async with app_client(off, client) as (http, app):
            cache: AuthCache = app.state.svc.auth_cache
            _, owner = await create_and_login(http, "Acme", "owner@acme.com")
            await asyncio.sleep(0.2)
            for _ in range(3):
                commands.seen.clear()
                assert await get(http, owner) == 200
                assert commands.seen == [("find", "organizations")], commands.seen
            assert cache.mode == "off" and cache.members == {}
            assert all(feed.fresh_at == -math.inf for feed in cache.feeds)  # never started
            assert (await http.get("/ready")).json()["auth_cache"] == "off"
    finally:
        await client.close()


async def test_a_stream_opened_after_its_collection_was_dropped_sees_changes(
    nx_client: AsyncMongoClient[Any],
) -> None:
    """The launcher's 4th nx-27017 patch: after a drop, a new stream gets triggers again
    (without it this stream stayed empty forever, and the cache served stale entries)."""
    first = nx_client["drop_a"]["watched"]
    await first.insert_one({"_id": 1})
    async with await first.watch() as stream:
        assert await stream.try_next() is None
        await nx_client["drop_a"].drop_collection("watched")
    second = nx_client["drop_b"]["watched"]
    await second.insert_one({"_id": 1})
    async with await second.watch() as stream:
        await second.update_one({"_id": 1}, {"$set": {"x": 1}})
        change = None
        for _ in range(50):
            change = await stream.try_next()
            if change is not None:
                break
            await asyncio.sleep(0.01)
        assert change is not None and change["operationType"] == "update"


# --- the logic, with a stand-in for the streams -----------------------------------------------


@pytest.fixture
async def cache() -> AsyncIterator[AuthCache]:
    """A cache whose feeds claim to be caught up (no task runs: the test drives it)."""
    db: Any = AsyncMongoMockClient()["logic"]
    made = AuthCache(
        db.organizations, db.revoked_tokens, enabled=True, max_entries=3, max_lag_ms=1000,
        local=LocalWrites(),
    )  # fmt: skip
    for feed in made.feeds:
        feed.fresh_at = time.monotonic() + 3600
    yield made


def org(org_id: str, version: int = 0) -> Organization:
    return Organization.model_validate(
        {
            "_id": org_id,
            "organization_name": org_id,
            "slug": org_id,
            "collection_name": f"org_{org_id}",
            "admin": {"admin_id": "a", "email": "a@x.com", "token_version": version},
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
        }
    )


async def version(cache: AuthCache, loader: Loader) -> int:
    got, _ = await cache.member("o1", "a", loader)
    assert got is not None
    return got.admin.token_version


def changed(org_id: str) -> dict[str, Any]:
    return {"operationType": "update", "documentKey": {"_id": org_id}}


async def settle() -> None:
    """Let the tasks just made run up to where they wait (the shared read is a task too)."""
    for _ in range(5):
        await asyncio.sleep(0)


class Loader:
    """Counts its reads; each may be held until released."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> Any:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        return self.value


async def test_a_read_that_raced_a_change_of_its_organization_is_not_stored(
    cache: AuthCache,
) -> None:
    stale = Loader(org("o1", version=0))
    stale.gate = asyncio.Event()
    reading = asyncio.create_task(cache.member("o1", "a", stale))
    await settle()
    cache._org_changed(changed("o1"))  # the revocation's event arrives during the read
    stale.gate.set()
    raced, remembered = await reading
    assert raced is not None and raced.admin.token_version == 0  # concurrent: allowed
    assert not remembered
    assert ("o1", "a") not in cache.members  # but never served after it
    fresh = Loader(org("o1", version=1))
    assert await version(cache, fresh) == 1
    assert fresh.calls == 1 and ("o1", "a") in cache.members


async def test_a_change_of_another_organization_does_not_spoil_a_read(cache: AuthCache) -> None:
    loader = Loader(org("o1"))
    loader.gate = asyncio.Event()
    reading = asyncio.create_task(cache.member("o1", "a", loader))
    await settle()
    cache._org_changed(changed("o2"))
    loader.gate.set()
    await reading
    assert ("o1", "a") in cache.members


async def test_more_changes_during_a_read_than_remembered_spoil_it(cache: AuthCache) -> None:
    loader = Loader(org("o1"))
    loader.gate = asyncio.Event()
    reading = asyncio.create_task(cache.member("o1", "a", loader))
    await settle()
    for i in range(RECENT_CHANGES + 1):
        cache._org_changed(changed(f"other{i}"))
    loader.gate.set()
    await reading
    assert ("o1", "a") not in cache.members


async def test_concurrent_misses_share_one_read_and_a_change_starts_a_new_one(
    cache: AuthCache,
) -> None:
    loader = Loader(org("o1"))
    loader.gate = asyncio.Event()
    early = [asyncio.create_task(cache.member("o1", "a", loader)) for _ in range(50)]
    await settle()
    assert loader.calls == 1  # a cold start: one read, not fifty
    cache._org_changed(changed("o1"))
    late = asyncio.create_task(cache.member("o1", "a", loader))
    await settle()
    assert loader.calls == 2  # after the change, callers do not join the older read
    loader.gate.set()
    await asyncio.gather(*early, late)
    # A caller that goes away does not cancel the shared read for the others.
    loader.gate = asyncio.Event()
    cache._org_changed(changed("o1"))
    gone = asyncio.create_task(cache.member("o1", "a", loader))
    stays = asyncio.create_task(cache.member("o1", "a", loader))
    await settle()
    gone.cancel()
    loader.gate.set()
    kept, _ = await stays
    assert kept is not None and kept.organization_id == "o1"


async def test_memory_is_bounded_least_recently_used_first(cache: AuthCache) -> None:
    for name in ("o1", "o2", "o3"):
        await cache.member(name, "a", Loader(org(name)))
    assert (await cache.member("o1", "a", Loader(None)))[1]  # a hit: o1 is the most recent
    await cache.member("o4", "a", Loader(org("o4")))
    assert list(cache.members) == [("o3", "a"), ("o1", "a"), ("o4", "a")]
    assert set(cache._by_org) == {"o1", "o3", "o4"}
    for i in range(10):
        await cache.revoked([f"jti{i}"], Loader(False))
    assert len(cache.denied) == 3


async def test_a_denylist_change_drops_every_denylist_answer(cache: AuthCache) -> None:
    assert await cache.revoked(["j1", "sid:s1"], Loader(False)) is False
    assert await cache.revoked(["j1", "sid:s1"], Loader(True)) is False  # cached
    cache._deny_changed({"operationType": "insert", "documentKey": {"_id": "sid:s1"}})
    assert await cache.revoked(["j1", "sid:s1"], Loader(True)) is True


async def test_it_serves_only_while_every_stream_is_caught_up_and_past_local_writes(
    cache: AuthCache,
) -> None:
    await cache.member("o1", "a", Loader(org("o1")))
    assert cache.serving()
    loader = Loader(org("o1", version=5))
    # The organizations stream last proved itself 2 s ago (more than the 1 s allowed).
    cache.feeds[0].fresh_at = time.monotonic() - 2
    assert not cache.serving() and cache.mode == "reading"
    assert await version(cache, loader) == 5
    assert loader.calls == 1
    cache.feeds[0].fresh_at = time.monotonic()
    # This process wrote to the denylist after that stream's last empty poll.
    assert cache.local is not None
    cache.local.finished_at["revoked_tokens"] = cache.feeds[1].fresh_at + 1
    assert not cache.serving()
    await cache.member("o1", "a", loader)
    assert loader.calls == 2
    # A reset (a stream error) empties everything, and a read from before it is not stored.
    cache.local.finished_at.clear()
    slow = Loader(org("o9"))
    slow.gate = asyncio.Event()
    reading = asyncio.create_task(cache.member("o9", "a", slow))
    await settle()
    cache._reset("error")
    slow.gate.set()
    await reading
    assert cache.members == {} and cache.denied == {}


class NoStreams:
    """A standalone mongod, as the feed sees it: `$changeStream` is refused."""

    name = "organizations"

    def __init__(self) -> None:
        self.database = self
        self.client = self

    @contextlib.asynccontextmanager
    async def start_session(self) -> AsyncIterator[None]:
        yield None

    async def command(self, command: dict[str, Any], **_: Any) -> Any:
        assert "aggregate" in command
        raise OperationFailure(
            "The $changeStream stage is only supported on replica sets", code=40573
        )


async def test_a_store_without_change_streams_reads_per_request_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store: Any = NoStreams()
    cache = AuthCache(
        store, store, enabled=True, max_entries=10, max_lag_ms=1000, local=LocalWrites()
    )
    with caplog.at_level(logging.WARNING, logger="orgsvc.auth"):
        cache.start()
        await asyncio.wait_for(cache.ready(), 5)
        await asyncio.sleep(0.2)  # no retries: the feed stopped
        loader = Loader(org("o1"))
        for _ in range(3):
            await cache.member("o1", "a", loader)
    await cache.stop()
    assert cache.mode == "unsupported" and loader.calls == 3
    said = [r for r in caplog.records if "no change streams" in r.getMessage()]
    assert len(said) == 1  # once, at start-up, never again


async def test_the_in_memory_double_has_no_streams_and_the_cache_stays_off() -> None:
    async with app_client(make_settings(mongodb_db="mm"), AsyncMongoMockClient()) as (http, app):
        cache: AuthCache = app.state.svc.auth_cache
        _, owner = await create_and_login(http, "Acme", "owner@acme.com")
        assert await get(http, owner) == 200
        assert cache.mode == "off" and cache.hits == 0


async def _operator_key(app: Any) -> dict[str, str]:
    return {"X-API-Key": await new_key(app, "org:list", "org:read", "org:write")}


def test_a_remembered_token_still_expires_and_only_its_exact_text_is_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokens = TokenManager(issuer="i", audience="a", expires_minutes=1, secret="s" * 40, remember=2)
    token, claims = tokens.issue(admin_id="a" * 24, organization_id="o" * 24, version=0)
    assert tokens.verify(token) == claims
    assert token in tokens._verified
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    with pytest.raises(InvalidToken):
        tokens.verify(forged)  # not the remembered text: checked, and refused
    assert forged not in tokens._verified
    later = time.time() + 60 + LEEWAY_SECONDS + 1
    monkeypatch.setattr("app.auth.tokens.time.time", lambda: later)
    with pytest.raises(InvalidToken):
        tokens.verify(token)  # remembered, but expired since
    assert token not in tokens._verified
    monkeypatch.undo()
    for version in range(3):  # at most `remember` tokens are kept
        tokens.verify(tokens.issue(admin_id="a" * 24, organization_id="o" * 24, version=version)[0])
    assert len(tokens._verified) == 2
    plain = TokenManager(issuer="i", audience="a", expires_minutes=1, secret="s" * 40)
    plain.verify(plain.issue(admin_id="a" * 24, organization_id="o" * 24, version=0)[0])
    assert plain._verified == {}  # remember=0 (AUTH_CACHE=false): nothing kept
