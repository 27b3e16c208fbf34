"""Reading the event feed in tests: wait until every pending event is published, then look.

No pytest in here.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from app.api_keys.repository import ApiKey, ApiKeyRepository
from app.api_keys.service import hash_key
from app.kit.store import epoch_ms


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
    return [{**d, "id": d["event_id"]} for d in docs if not d.get("tombstone")]


def of_org(events: list[dict[str, Any]], org_id: str) -> list[str]:
    """The types of one organization's events, in order."""
    return [e["type"] for e in events if e["organization_id"] == org_id]


async def service_key(db: Any, *scopes: str) -> dict[str, str]:
    """A service API key with `scopes`, stored as the CLI stores one; its header."""
    key_id = secrets.token_hex(6)
    key = f"osk_{key_id}_{secrets.token_urlsafe(32)}"
    record = ApiKey(
        key_id=key_id,
        name="ops",
        prefix=f"osk_{key_id}",
        scopes=sorted(scopes),
        created_ms=epoch_ms(),
    )
    await ApiKeyRepository(db).insert(record, key_hash=hash_key(key))
    return {"X-API-Key": key}
