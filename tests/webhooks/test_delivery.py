"""Deliveries to a real local receiver that verifies every signature with `standardwebhooks`."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.support.feed import publish
from tests.support.receiver import Receiver, always
from tests.webhooks.conftest import Hooks

Receivers = Callable[..., Awaitable[tuple[Receiver, str]]]


async def wait_deliveries(
    hooks: Hooks,
    webhook_id: str,
    check: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 15,
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        items = await hooks.deliveries(webhook_id)
        if check(items):
            return items
        assert time.monotonic() < deadline, items
        await asyncio.sleep(0.05)


async def test_every_event_arrives_signed_once(hooks: Hooks, receivers: Receivers) -> None:
    receiver, url = await receivers()
    hook = await hooks.create(url, ["organization.updated", "member.joined"])
    receiver.secrets = [hook["secret"]]
    wanted = await publish(hooks.db, 12)
    await publish(hooks.db, 3, type_="organization.deleted")  # not subscribed
    wanted += await publish(hooks.db, 8, type_="member.joined")
    hooks.kick()
    await receiver.wait_for(lambda: len(receiver.arrivals) >= len(wanted))
    await asyncio.sleep(0.3)  # nothing more comes
    assert sorted(receiver.ids()) == sorted(e.id for e in wanted)
    by_id = {e.id: e for e in wanted}
    for arrival in receiver.arrivals:
        assert arrival.verified == {hook["secret"]: True}
        assert arrival.path == "/hook"
        assert arrival.headers["content-type"] == "application/json"
        assert arrival.headers["webhook-signature"].startswith("v1,")
        assert arrival.json() == json.loads(json.dumps(by_id[arrival.event_id].public()))
    items = await wait_deliveries(
        hooks, hook["webhook_id"], lambda i: all(d["status"] == "delivered" for d in i)
    )
    assert len(items) == len(wanted)
    assert {d["event_id"] for d in items} == set(by_id)
    for item in items:
        assert item["attempts"] == 1
        assert item["last_status_code"] == 200
        assert item["last_error"] is None
        assert item["next_attempt_at"] is None
        assert set(item) == {
            "delivery_id", "event_id", "status", "attempts", "last_status_code", "last_error",
            "next_attempt_at",
        }  # fmt: skip
    # Newest first, paged with a cursor.
    page = await hooks.http.get(
        f"/webhooks/{hook['webhook_id']}/deliveries", params={"limit": 5}, headers=hooks.headers
    )
    first = page.json()
    assert [d["event_id"] for d in first["items"]] == [e.id for e in reversed(wanted)][:5]
    rest = await hooks.http.get(
        f"/webhooks/{hook['webhook_id']}/deliveries",
        params={"limit": 100, "cursor": first["next_cursor"]},
        headers=hooks.headers,
    )
    assert [d["event_id"] for d in rest.json()["items"]] == [e.id for e in reversed(wanted)][5:]
    assert rest.json()["next_cursor"] is None


async def test_events_before_registration_are_not_sent(hooks: Hooks, receivers: Receivers) -> None:
    receiver, url = await receivers()
    await publish(hooks.db, 3)
    hook = await hooks.create(url)
    receiver.secrets = [hook["secret"]]
    later = await publish(hooks.db, 2)
    hooks.kick()
    await receiver.wait_for(lambda: len(receiver.arrivals) >= 2)
    await asyncio.sleep(0.2)
    # Up to WEBHOOK_ENDPOINT_CONCURRENCY attempts run at once: arrival order is not promised.
    assert sorted(receiver.ids()) == sorted(e.id for e in later)


@pytest.mark.webhook_settings(webhook_retry_base_seconds=0.3)
async def test_a_failing_receiver_gets_everything_with_spaced_retries(
    hooks: Hooks, receivers: Receivers
) -> None:
    # 500 for the first three attempts at each event, then 200.
    receiver, url = await receivers(policy=lambda n, _id: 500 if n < 3 else 200)
    hook = await hooks.create(url)
    receiver.secrets = [hook["secret"]]
    events = await publish(hooks.db, 3)
    hooks.kick()
    await receiver.wait_for(lambda: len(receiver.arrivals) >= 12, timeout=20)
    base = 0.3
    for event in events:
        times = [a.at for a in receiver.arrivals if a.event_id == event.id]
        assert len(times) == 4
        gaps = [b - a for a, b in itertools.pairwise(times)]
        for n, gap in enumerate(gaps):  # the n-th retry waits [base*2^n, base*2^(n+1))
            assert base * 2**n * 0.95 <= gap <= base * 2 ** (n + 1) + 0.5, (n, gaps)
    assert all(a.verified[hook["secret"]] for a in receiver.arrivals)
    items = await wait_deliveries(
        hooks, hook["webhook_id"], lambda i: all(d["status"] == "delivered" for d in i)
    )
    assert [d["attempts"] for d in items] == [4, 4, 4]
    assert {d["last_status_code"] for d in items} == {200}


@pytest.mark.webhook_settings(webhook_timeout_seconds=0.5, webhook_retry_base_seconds=0.5)
async def test_a_hanging_receiver_is_cut_off_and_slows_nothing_else(
    hooks: Hooks, receivers: Receivers
) -> None:
    hanging, hang_url = await receivers(policy=lambda _n, _id: None)
    fast, fast_url = await receivers()
    slow_hook = await hooks.create(hang_url)
    fast_hook = await hooks.create(fast_url)
    fast.secrets = [fast_hook["secret"]]
    events = await publish(hooks.db, 10)
    hooks.kick()
    started = time.monotonic()
    await fast.wait_for(lambda: len(fast.arrivals) >= 10, timeout=3)
    assert time.monotonic() - started < 1.5  # not behind the hanging endpoint
    api_started = time.monotonic()
    assert (await hooks.http.get("/webhooks", headers=hooks.headers)).status_code == 200
    assert time.monotonic() - api_started < 0.5
    items = await wait_deliveries(
        hooks,
        slow_hook["webhook_id"],
        lambda i: any(d["last_error"] for d in i),
        timeout=5,
    )
    cut = [d for d in items if d["last_error"]]
    assert all(d["last_error"] == "no answer within 0.5 s" for d in cut)
    assert all(d["status"] == "pending" and d["next_attempt_at"] for d in cut)
    # At most WEBHOOK_ENDPOINT_CONCURRENCY (4) attempts at once on the hanging endpoint.
    first = [a for a in hanging.arrivals if a.at - hanging.arrivals[0].at < 0.4]
    assert len(first) <= 4
    assert {a.event_id for a in hanging.arrivals} <= {e.id for e in events}


async def test_redirects_are_not_followed(hooks: Hooks, receivers: Receivers) -> None:
    target, target_url = await receivers()
    redirecting, url = await receivers(policy=always(302), location=target_url)
    hook = await hooks.create(url)
    await publish(hooks.db, 1)
    hooks.kick()
    items = await wait_deliveries(
        hooks,
        hook["webhook_id"],
        lambda i: bool(i and i[0]["attempts"] >= 2 and i[0]["last_error"]),
    )
    assert items[0]["status"] == "pending"
    assert items[0]["last_status_code"] == 302
    assert "redirects are not followed" in items[0]["last_error"]
    # A delivery counts an attempt when it is claimed, before it is sent: the second one may
    # still be on its way to the receiver (a CI run saw 1 arrival here).
    await redirecting.wait_for(lambda: len(redirecting.arrivals) >= 2)
    assert target.arrivals == []


async def test_replay_delivers_again(hooks: Hooks, receivers: Receivers) -> None:
    receiver, url = await receivers()
    hook = await hooks.create(url, ["organization.updated"])
    receiver.secrets = [hook["secret"]]
    events = await publish(hooks.db, 5)
    await publish(hooks.db, 2, type_="member.removed")
    hooks.kick()
    await receiver.wait_for(lambda: len(receiver.arrivals) >= 5)
    res = await hooks.http.post(
        f"/webhooks/{hook['webhook_id']}/replay",
        json={"after": events[1].id},
        headers=hooks.headers,
    )
    assert res.status_code == 202, res.text
    assert res.json()["generation"] == 1
    hooks.kick()
    await receiver.wait_for(lambda: len(receiver.arrivals) >= 8)
    await asyncio.sleep(0.3)
    # Arrival order within each round is not promised (several attempts run at once), but the
    # replay starts only after the first round arrived: five live deliveries, then three again.
    ids = receiver.ids()
    assert sorted(ids[:5]) == sorted(e.id for e in events)
    assert sorted(ids[5:]) == sorted(e.id for e in events[2:])
    assert all(a.verified[hook["secret"]] for a in receiver.arrivals)
    items = await wait_deliveries(
        hooks,
        hook["webhook_id"],
        lambda i: len(i) == 8 and all(d["status"] == "delivered" for d in i),
    )
    assert sum(d["delivery_id"].endswith(":1") for d in items) == 3
    # Unknown event, unknown endpoint.
    unknown = await hooks.http.post(
        f"/webhooks/{hook['webhook_id']}/replay",
        json={"after": "evt_" + "0" * 24},
        headers=hooks.headers,
    )
    assert unknown.status_code == 422
    missing = await hooks.http.post(
        f"/webhooks/{'0' * 24}/replay", json={"after": events[0].id}, headers=hooks.headers
    )
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")


@pytest.mark.webhook_settings(webhook_secret_overlap_hours=0.0005)  # 1.8 s
async def test_rotation_signs_with_both_secrets_during_the_overlap(
    hooks: Hooks, receivers: Receivers
) -> None:
    receiver, url = await receivers()
    hook = await hooks.create(url)
    old = hook["secret"]
    res = await hooks.http.post(
        f"/webhooks/{hook['webhook_id']}/rotate-secret", headers=hooks.headers
    )
    assert res.status_code == 200, res.text
    new = res.json()["secret"]
    assert new.startswith("whsec_") and new != old
    receiver.secrets = [old, new]
    [during] = await publish(hooks.db, 1)
    hooks.kick()
    await receiver.wait_for(lambda: len(receiver.arrivals) >= 1)
    arrival = receiver.arrivals[0]
    assert arrival.event_id == during.id
    assert len(arrival.headers["webhook-signature"].split(" ")) == 2
    # A receiver that knows only the old secret, and one that knows only the new, both verify.
    assert arrival.verified == {old: True, new: True}
    await asyncio.sleep(2.0)  # the overlap ends
    await publish(hooks.db, 1)
    hooks.kick()
    await receiver.wait_for(lambda: len(receiver.arrivals) >= 2)
    after = receiver.arrivals[1]
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    assert after.verified == {old: False, new: True}


@pytest.mark.webhook_settings(
    webhook_retry_base_seconds=0.1, webhook_retry_hours=0.0003, webhook_disable_after_hours=1
)
async def test_failed_after_the_retry_window(hooks: Hooks, receivers: Receivers) -> None:
    _, url = await receivers(policy=always(503))
    hook = await hooks.create(url)
    await publish(hooks.db, 1)
    hooks.kick()
    items = await wait_deliveries(
        hooks, hook["webhook_id"], lambda i: bool(i) and i[0]["status"] == "failed"
    )
    assert items[0]["attempts"] >= 2
    assert (items[0]["last_status_code"], items[0]["last_error"]) == (503, "HTTP 503")
    assert items[0]["next_attempt_at"] is None
    failed = await hooks.deliveries(hook["webhook_id"], status="failed")
    assert len(failed) == 1
    assert await hooks.deliveries(hook["webhook_id"], status="pending") == []
    # Failing for 1 s is far from the disable window: still enabled.
    got = await hooks.http.get(f"/webhooks/{hook['webhook_id']}", headers=hooks.headers)
    assert got.json()["enabled"] is True


@pytest.mark.webhook_settings(
    webhook_retry_base_seconds=0.1, webhook_retry_hours=1, webhook_disable_after_hours=0.0004
)
async def test_an_endpoint_failing_everything_is_disabled_and_audited(
    hooks: Hooks, receivers: Receivers
) -> None:
    receiver, url = await receivers(policy=always(500))
    hook = await hooks.create(url)
    await publish(hooks.db, 2)
    hooks.kick()
    deadline = time.monotonic() + 15
    while True:
        got = await hooks.http.get(f"/webhooks/{hook['webhook_id']}", headers=hooks.headers)
        if not got.json()["enabled"]:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    entries = await hooks.db["audit_log"].find({"action": "webhook.disabled"}).to_list(None)
    assert len(entries) == 1
    assert entries[0]["details"]["webhook_id"] == hook["webhook_id"]
    assert entries[0]["actor"]["type"] == "system"
    items = await wait_deliveries(
        hooks, hook["webhook_id"], lambda i: all(d["status"] == "failed" for d in i)
    )
    assert {d["last_error"] for d in items} <= {"endpoint disabled", "HTTP 500"}
    count = len(receiver.arrivals)
    await publish(hooks.db, 2)
    hooks.kick()
    await asyncio.sleep(0.5)
    assert len(receiver.arrivals) == count  # a disabled endpoint gets nothing
    metrics = await hooks.http.get("/metrics")
    assert 'orgsvc_webhook_attempts_total{outcome="failed_status"}' in metrics.text


def gauge(text: str, name: str) -> float:
    lines = [line for line in text.splitlines() if line.startswith(name + " ")]
    assert len(lines) == 1, text
    return float(lines[0].split()[1])


@pytest.mark.webhook_settings(webhook_retry_base_seconds=60)
async def test_the_backlog_gauges_count_only_pending_deliveries(
    hooks: Hooks, receivers: Receivers
) -> None:
    failing, failing_url = await receivers(policy=always(503))
    ok, ok_url = await receivers()
    down = await hooks.create(failing_url)
    up = await hooks.create(ok_url)
    await publish(hooks.db, 3)
    hooks.kick()
    await wait_deliveries(
        hooks,
        up["webhook_id"],
        lambda i: len(i) == 3 and all(d["status"] == "delivered" for d in i),
    )
    await wait_deliveries(
        hooks, down["webhook_id"], lambda i: len(i) == 3 and all(d["attempts"] == 1 for d in i)
    )
    assert len(failing.arrivals) == 3 and len(ok.arrivals) == 3
    pending, oldest_ms = await hooks.app.state.svc.webhooks.repo.backlog()
    assert pending == 3  # the 3 failing ones wait a minute; the 3 delivered are not counted
    assert oldest_ms is not None
    deadline = time.monotonic() + 5
    while True:  # the worker refreshes its gauges every few polls
        text = (await hooks.http.get("/metrics")).text
        if gauge(text, "orgsvc_webhook_pending_deliveries") == 3:
            break
        assert time.monotonic() < deadline, text
        await asyncio.sleep(0.1)
    assert gauge(text, "orgsvc_webhook_delivery_lag_seconds") > 0
