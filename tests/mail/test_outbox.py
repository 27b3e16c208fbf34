"""The outbox: one entry per key, claims that exclude one another, finishing writes fenced by
the claim they hold (over the in-memory double; the race on the real store is
test_two_workers.py)."""

from __future__ import annotations

import asyncio

import pytest

from app.kit.store import epoch_ms
from app.mail.outbox import DEAD, DROPPED, PENDING, SENT, OutboxRepository

pytestmark = pytest.mark.timeout(10)


async def test_enqueue_is_idempotent_by_key(outbox: OutboxRepository) -> None:
    assert await outbox.enqueue("invitation:1", kind="invitation", ref={"n": 1}, to="a@x.org")
    assert not await outbox.enqueue("invitation:1", kind="invitation", ref={"n": 2}, to="b@x.org")
    assert await outbox.col.count_documents({}) == 1
    entry = await outbox.get("invitation:1")
    assert entry is not None
    assert (entry.state, entry.attempts, entry.ref, entry.to) == (PENDING, 0, {"n": 1}, "a@x.org")


async def test_a_claimed_entry_is_not_claimed_again_until_its_lease_runs_out(
    outbox: OutboxRepository,
) -> None:
    await outbox.enqueue("k", kind="invitation", ref={}, to="a@x.org")
    [first] = await outbox.claim_due("w1", lease_seconds=0.2, limit=5)
    assert (first.owner, first.attempts) == ("w1", 1)
    assert await outbox.claim_due("w2", lease_seconds=30, limit=5) == []
    await asyncio.sleep(0.25)
    [second] = await outbox.claim_due("w2", lease_seconds=30, limit=5)
    assert (second.owner, second.attempts) == ("w2", 2)
    # The first claim is fenced off: none of its finishing writes lands.
    assert not await outbox.mark_sent(first)
    assert not await outbox.retry_later(first, next_attempt_ms=0, error="x")
    assert not await outbox.mark_dead(first, error="x")
    assert not await outbox.mark_dropped(first)
    assert await outbox.mark_sent(second)
    entry = await outbox.get("k")
    assert entry is not None and entry.state == SENT and entry.sent_at is not None
    assert entry.finished_at is not None and entry.lease_until_ms == 0


async def test_claims_take_due_entries_earliest_first_and_respect_the_limit(
    outbox: OutboxRepository,
) -> None:
    for n in range(3):
        await outbox.enqueue(f"k{n}", kind="invitation", ref={"n": n}, to="a@x.org")
        await asyncio.sleep(0.002)
    claims = await outbox.claim_due("w", lease_seconds=30, limit=2)
    assert [c.entry_id for c in claims] == ["k0", "k1"]
    assert [c.entry_id for c in await outbox.claim_due("w", lease_seconds=30, limit=5)] == ["k2"]


async def test_retry_later_makes_the_entry_due_at_its_time_only(outbox: OutboxRepository) -> None:
    await outbox.enqueue("k", kind="invitation", ref={}, to="a@x.org")
    [claim] = await outbox.claim_due("w", lease_seconds=30, limit=1)
    assert await outbox.retry_later(claim, next_attempt_ms=epoch_ms(0.2), error="SMTP 451: later")
    assert await outbox.claim_due("w", lease_seconds=30, limit=1) == []
    await asyncio.sleep(0.25)
    [again] = await outbox.claim_due("w", lease_seconds=30, limit=1)
    assert again.attempts == 2 and again.last_error == "SMTP 451: later"


async def test_finished_entries_are_never_claimed(outbox: OutboxRepository) -> None:
    for key in ("dropped", "dead"):
        await outbox.enqueue(key, kind="invitation", ref={}, to="a@x.org")
    for claim in await outbox.claim_due("w", lease_seconds=0.01, limit=5):
        if claim.entry_id == "dropped":
            assert await outbox.mark_dropped(claim)
        else:
            assert await outbox.mark_dead(claim, error="e" * 500)
    await asyncio.sleep(0.02)
    assert await outbox.claim_due("w", lease_seconds=30, limit=5) == []
    dead = await outbox.get("dead")
    dropped = await outbox.get("dropped")
    assert dead is not None and dead.state == DEAD and len(dead.last_error or "") == 200
    assert dropped is not None and dropped.state == DROPPED


async def test_indexes_for_the_due_query_and_the_ttl(outbox: OutboxRepository) -> None:
    info = await outbox.col.index_information()
    keys = {tuple(spec["key"]): spec for spec in info.values()}
    assert (("state", 1), ("next_attempt_ms", 1)) in keys
    ttl = keys[(("finished_at", 1),)]
    assert ttl["expireAfterSeconds"] > 0
