"""`orgsvc events tail` and `orgsvc webhooks list|deliveries`, run as processes over the same
nx-27017 store as an in-process service (`real_api`), which publishes the events and delivers
the webhooks."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.audit.service import Actor, RequestMeta
from app.kit.db import EmbeddedMongo
from app.kit.settings import Settings
from app.wiring import AppState
from tests.support.apps import make_settings
from tests.support.cli import Cli, lines, no_traceback
from tests.support.clients import bearer, create_and_login
from tests.support.feed import publish
from tests.support.processes import ROOT
from tests.support.receiver import Receiver, always

Api = tuple[httpx.AsyncClient, FastAPI]


@pytest.fixture
def settings(db_name: str) -> Settings:
    # Loopback receivers are allowed; the in-process worker polls and retries quickly.
    return make_settings(
        mongodb_db=db_name,
        webhook_allow_private_networks=True,
        webhook_poll_seconds=0.05,
        webhook_retry_base_seconds=0.3,
        webhook_timeout_seconds=2.0,
    )


@pytest.fixture
def cli(nx_server: EmbeddedMongo, settings: Settings) -> Cli:
    return Cli(nx_server, settings)


def svc(app: FastAPI) -> AppState:
    state: AppState = app.state.svc
    return state


async def published(app: FastAPI, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    """The whole feed (`public()` shape) once it holds `count` events (the in-process
    publisher publishes them in the background)."""
    store = svc(app).repos.events
    deadline = time.monotonic() + timeout
    while True:
        events = [e.public() for e in await store.page(after_seq=0, limit=1000)]
        if len(events) >= count:
            assert len(events) == count, [e["type"] for e in events]
            shown: list[dict[str, Any]] = json.loads(json.dumps(events))
            return shown
        assert time.monotonic() < deadline, [e["type"] for e in events]
        await asyncio.sleep(0.05)


async def rename(http: httpx.AsyncClient, token: str, name: str) -> None:
    res = await http.put("/org/update", json={"organization_name": name}, headers=bearer(token))
    assert res.status_code == 200, res.text


# --- events tail ----------------------------------------------------------------------------


async def test_tail_once_prints_the_feed_in_order(real_api: Api, cli: Cli) -> None:
    http, app = real_api
    org, token = await create_and_login(http, "Tailed")
    org_id = org["organization_id"]
    up = await http.put("/org/update", json={"display_name": "Tailed Ltd"}, headers=bearer(token))
    assert up.status_code == 200, up.text
    await rename(http, token, "Tailed Two")
    other, _ = await create_and_login(http, "Other")
    feed = await published(app, 4)

    res = await cli("events", "tail", "--from-start", "--once")
    assert res.returncode == 0, res.stderr
    no_traceback(res)
    shown = lines(res)
    assert shown == feed  # every event, in the global order, in the `GET /events` shape
    assert set(shown[0]) == {"id", "type", "occurred_at", "organization_id", "actor", "data"}
    mine = [e["type"] for e in shown if e["organization_id"] == org_id]
    assert mine == ["organization.created", "organization.updated", "organization.renamed"]
    theirs = [e["type"] for e in shown if e["organization_id"] == other["organization_id"]]
    assert theirs == ["organization.created"]
    renamed = next(e for e in shown if e["type"] == "organization.renamed")
    assert (renamed["data"]["slug"], renamed["data"]["previous_slug"]) == ("tailed_two", "tailed")

    # --after: only the later ones (exclusive).
    res = await cli("events", "tail", "--after", feed[1]["id"], "--once")
    assert res.returncode == 0, res.stderr
    assert lines(res) == feed[2:]
    res = await cli("events", "tail", "--after", feed[-1]["id"], "--once")
    assert (res.returncode, res.stdout) == (0, "")

    # --types and --org filter (and combine with --after).
    res = await cli("events", "tail", "--from-start", "--once", "--types", "organization.created")
    assert res.returncode == 0, res.stderr
    assert [e["organization_id"] for e in lines(res)] == [
        e["organization_id"] for e in feed if e["type"] == "organization.created"
    ]
    assert {e["type"] for e in lines(res)} == {"organization.created"}
    res = await cli(
        "events", "tail", "--after", feed[0]["id"], "--once",
        "--types", "organization.renamed, organization.created",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert lines(res) == [
        e for e in feed[1:] if e["type"] in ("organization.renamed", "organization.created")
    ]
    res = await cli("events", "tail", "--from-start", "--once", "--org", org_id)
    assert res.returncode == 0, res.stderr
    assert lines(res) == [e for e in feed if e["organization_id"] == org_id]
    res = await cli("events", "tail", "--from-start", "--once", "--org", "Other")  # by name
    assert res.returncode == 0, res.stderr
    assert lines(res) == [e for e in feed if e["organization_id"] == other["organization_id"]]

    # Without --after or --from-start it starts at the end: nothing yet.
    res = await cli("events", "tail", "--once")
    assert (res.returncode, res.stdout) == (0, ""), res.stderr


async def test_tail_pages_past_a_page_and_skips_tombstones(real_api: Api, cli: Cli) -> None:
    _, app = real_api
    db = svc(app).webhooks.db
    made = await publish(db, 130)  # more than one read (100)
    # A position the publisher allocated but could not fill: never shown, never a stop.
    await db["events"].insert_one({"_id": 131, "seq": 131, "tombstone": True})
    await db["event_counters"].update_one(
        {"_id": "events"}, {"$set": {"published": 131, "allocated": 131}}
    )
    made += await publish(db, 5, type_="member.joined")

    res = await cli("events", "tail", "--from-start", "--once")
    assert res.returncode == 0, res.stderr
    assert [e["id"] for e in lines(res)] == [e.id for e in made]
    res = await cli("events", "tail", "--from-start", "--once", "--types", "member.joined")
    assert [e["id"] for e in lines(res)] == [e.id for e in made[-5:]]


async def test_tail_refusals(real_api: Api, cli: Cli) -> None:
    _, app = real_api
    [event] = await publish(svc(app).webhooks.db)
    unknown = "evt_" + "0" * 24

    res = await cli("events", "tail", "--after", unknown, "--once")
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.strip() == f"orgsvc: unknown event id {unknown!r} (not in the feed)"
    res = await cli("events", "tail", "--org", "No Such Org", "--once")
    assert res.returncode == 1 and "no organization named" in res.stderr
    for bad in (
        ["--types", "organization.exploded"],
        ["--types", " , "],
        ["--after", "not-an-event"],
        ["--after", event.id, "--from-start"],
        ["--interval", "0"],
    ):
        res = await cli("events", "tail", "--once", *bad)
        assert res.returncode == 2, (bad, res.stderr)
        assert res.stdout == ""
        no_traceback(res)
    res = await cli("events", "tail", "--once", "--types", "organization.exploded")
    assert "unknown event types: organization.exploded" in res.stderr


@pytest.fixture
async def tail_process(cli: Cli) -> AsyncIterator[asyncio.subprocess.Process]:
    """`orgsvc events tail` (following, from the feed's end) as a process; killed if the test
    left it running."""
    proc = await asyncio.create_subprocess_exec(
        *cli.command("events", "tail", "--interval", "0.1"),
        cwd=ROOT, env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    yield proc
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_tail_follows_until_interrupted(
    real_api: Api, tail_process: asyncio.subprocess.Process, signum: signal.Signals
) -> None:
    http, app = real_api
    proc = tail_process
    assert proc.stdout is not None and proc.stderr is not None
    org, token = await create_and_login(http, "Followed")
    before = {e["id"] for e in await published(app, 1)}  # published before the tail started

    # The tail starts at the feed's end once it is up: change until a line comes.
    first: dict[str, Any] | None = None
    for n in range(40):
        await rename(http, token, f"Followed {n}")
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=1.0)
        except TimeoutError:
            continue
        assert line, (await proc.stderr.read()).decode()
        first = json.loads(line)
        break
    assert first is not None, "the tail printed nothing"
    assert first["id"] not in before
    assert (first["type"], first["organization_id"]) == (
        "organization.renamed",
        org["organization_id"],
    )

    # A change made while it follows appears within a few seconds, in the feed's order.
    await rename(http, token, "Followed Last")
    started = time.monotonic()
    seen = [first]
    while seen[-1]["data"]["organization_name"] != "Followed Last":
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=5.0)
        seen.append(json.loads(line))
    assert time.monotonic() - started < 5
    feed = [e.public() for e in await svc(app).repos.events.page(after_seq=0, limit=1000)]
    at = [e["id"] for e in feed].index(first["id"])
    assert seen == json.loads(json.dumps(feed[at:]))  # each once, none skipped, up to the last

    proc.send_signal(signum)  # Ctrl-C (or a supervisor's stop): a clean exit
    code = await asyncio.wait_for(proc.wait(), timeout=20)
    rest, err = await proc.stdout.read(), await proc.stderr.read()
    assert code == 0, err.decode()
    assert rest == b"" and err == b""  # no traceback, no "Aborted!"


# --- webhooks ---------------------------------------------------------------------------------


@pytest.fixture
async def receivers() -> AsyncIterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for receiver in made:
        await receiver.close()


async def test_webhooks_list_and_deliveries(
    real_api: Api, cli: Cli, receivers: list[Receiver]
) -> None:
    _, app = real_api
    state = svc(app)
    actor, meta = Actor("cli", "test"), RequestMeta()
    ok, failing = Receiver(), Receiver(policy=always(500))
    receivers += [ok, failing]
    good, good_secret = await state.webhooks.create(
        url=await ok.start(), types=["organization.updated"], description="billing",
        actor=actor, meta=meta,
    )  # fmt: skip
    bad, bad_secret = await state.webhooks.create(
        url=await failing.start(), types=["organization.updated"], description="flaky",
        actor=actor, meta=meta,
    )  # fmt: skip
    off, off_secret = await state.webhooks.create(
        url="http://127.0.0.1:9/off", types=["member.joined"], description="", actor=actor,
        meta=meta,
    )  # fmt: skip
    await state.webhooks.update(off.webhook_id, {"enabled": False}, actor=actor, meta=meta)

    res = await cli("webhooks", "list")
    assert res.returncode == 0, res.stderr
    listed = lines(res)
    assert [h["webhook_id"] for h in listed] == [good.webhook_id, bad.webhook_id]
    assert listed[0] == {
        "webhook_id": good.webhook_id,
        "url": good.url,
        "types": ["organization.updated"],
        "description": "billing",
        "enabled": True,
        "created_at": listed[0]["created_at"],
        "disabled_reason": None,
    }
    assert listed[0]["created_at"].endswith("Z")
    res = await cli("webhooks", "list", "--all")
    assert res.returncode == 0, res.stderr
    every = lines(res)
    assert [h["webhook_id"] for h in every] == [good.webhook_id, bad.webhook_id, off.webhook_id]
    assert (every[2]["enabled"], every[2]["disabled_reason"]) == (False, "disabled by an operator")
    for secret in (good_secret, bad_secret, off_secret):
        assert secret not in res.stdout
    assert "whsec_" not in res.stdout and "secret" not in res.stdout

    events = await publish(state.webhooks.db, 3)
    state.webhooks.kick()
    deadline = time.monotonic() + 15
    while True:  # delivered to one, failed at least once at the other
        done, _ = await state.webhooks.deliveries(
            good.webhook_id, status="delivered", limit=10, cursor=None
        )
        tried = [
            d
            for d in (await state.webhooks.deliveries(
                bad.webhook_id, status=None, limit=10, cursor=None))[0]
            if d.last_status_code == 500
        ]  # fmt: skip
        if len(done) == 3 and len(tried) == 3:
            break
        assert time.monotonic() < deadline, (done, tried)
        await asyncio.sleep(0.05)

    res = await cli("webhooks", "deliveries", good.webhook_id)
    assert res.returncode == 0, res.stderr
    rows = lines(res)
    assert [r["event_id"] for r in rows] == [e.id for e in reversed(events)]  # newest first
    for row in rows:
        assert set(row) == {
            "delivery_id", "event_id", "status", "attempts", "last_status_code", "last_error",
            "next_attempt_at",
        }  # fmt: skip
        assert (row["status"], row["attempts"], row["last_status_code"]) == ("delivered", 1, 200)
        assert (row["last_error"], row["next_attempt_at"]) == (None, None)
        assert row["delivery_id"] == f"{good.webhook_id}:{row['event_id']}:0"

    res = await cli("webhooks", "deliveries", bad.webhook_id, "--status", "pending")
    assert res.returncode == 0, res.stderr
    pending = lines(res)
    assert {r["event_id"] for r in pending} == {e.id for e in events}
    for row in pending:
        assert row["status"] == "pending" and row["attempts"] >= 1
        assert row["last_status_code"] == 500 and row["next_attempt_at"].endswith("Z")
    res = await cli("webhooks", "deliveries", bad.webhook_id, "--status", "delivered")
    assert (res.returncode, res.stdout) == (0, "")
    res = await cli("webhooks", "deliveries", good.webhook_id, "--limit", "2")
    assert [r["event_id"] for r in lines(res)] == [events[2].id, events[1].id]

    res = await cli("webhooks", "deliveries", "0" * 24)
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.strip() == "orgsvc: Webhook not found. (not_found)"
    res = await cli("webhooks", "deliveries", good.webhook_id, "--status", "lost")
    assert res.returncode == 2
    no_traceback(res)
