"""Reading the event feed in tests: wait until every pending event is published, then look.

No pytest in here.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any


async def settled_events(db: Any, *, timeout: float = 20.0) -> list[dict[str, Any]]:
    """Every published event (tombstones left out), in order, once no event is pending: no
    organization record has an outbox and `event_outbox` is empty (a running service's
    publisher empties them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = await db.organizations.count_documents({"outbox_since_ms": {"$gt": 0}})
        staged = await db.event_outbox.count_documents({})
        if not waiting and not staged:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("events still pending after the timeout")
    counter = await db.event_counters.find_one({"_id": "events"}) or {"published": 0}
    docs = (
        await db.events.find({"seq": {"$lte": counter["published"]}}).sort("seq", 1).to_list(None)
    )
    return [d for d in docs if not d.get("tombstone")]


def of_org(events: list[dict[str, Any]], org_id: str) -> list[str]:
    """The types of one organization's events, in order."""
    return [e["type"] for e in events if e["organization_id"] == org_id]
