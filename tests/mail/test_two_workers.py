"""Two workers, as on two processes (each its own client, repository and owner), race over the
same outbox on the real nx-27017 store: every mail goes out exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from app.kit.db import EmbeddedMongo
from app.mail.backends import SmtpMailer
from app.mail.message import message_id_for
from app.mail.outbox import SENT, OutboxRepository
from app.mail.worker import MailPolicy, MailWorker
from tests.mail.support import SENDER, SmtpServer, composer_from_ref, wait_until

pytestmark = pytest.mark.timeout(60)

ENTRIES = 30


async def test_two_workers_over_the_real_store_send_every_mail_exactly_once(
    nx_server: EmbeddedMongo,
    nx_client: AsyncMongoClient[Any],
    db_name: str,
    smtp: SmtpServer,
    mailer: SmtpMailer,
) -> None:
    other: AsyncMongoClient[Any] = AsyncMongoClient(nx_server.url, tz_aware=True)
    outboxes = [OutboxRepository(nx_client[db_name]), OutboxRepository(other[db_name])]
    await outboxes[0].ensure_indexes()
    keys = [f"invitation:{n}" for n in range(ENTRIES)]
    for n, key in enumerate(keys):
        assert await outboxes[n % 2].enqueue(
            key, kind="invitation", ref={"n": n}, to="invitee@example.com"
        )
    # Small batches, so that the two interleave their claims many times over.
    policy = MailPolicy(poll_seconds=0.05, attempt_timeout_seconds=10, lease_seconds=30, batch=3)
    outcomes: Counter[str] = Counter()

    def counting(owner: str) -> Callable[[str, str], None]:
        return lambda kind, outcome: outcomes.update([f"{owner}:{outcome}"])

    workers = [
        MailWorker(
            outbox,
            mailer,
            {"invitation": composer_from_ref()},
            sender=SENDER,
            owner=owner,
            policy=policy,
            observers=[counting(owner)],
        )
        for owner, outbox in zip(("worker-a", "worker-b"), outboxes, strict=True)
    ]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.kick()

        async def all_sent() -> bool:
            return await outboxes[0].col.count_documents({"state": SENT}) == ENTRIES

        await wait_until(all_sent, timeout=40, step=0.05)
        await asyncio.sleep(0.3)  # a duplicate would still be arriving
    finally:
        for worker in workers:
            await worker.stop()
        await other.close()

    expected = Counter({message_id_for(key, SENDER): 1 for key in keys})
    assert smtp.message_ids() == expected, f"by worker: {dict(outcomes)}"
    assert sum(outcomes.values()) == ENTRIES and set(outcomes) <= {"worker-a:sent", "worker-b:sent"}
    docs = await outboxes[0].col.find({}, {"attempts": 1, "owner": 1}).to_list(length=None)
    assert all(d["attempts"] == 1 for d in docs), docs
    print("sent by", dict(outcomes))
