"""Abandoned operations, as a dead process leaves them, and one reconciler pass."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI

from app.kit.store import utcnow


async def abandon(db: Any, op_id: str | None = None, **op: Any) -> str:
    """An intent whose lease ran out long ago (fence 1), as a dead process leaves it."""
    op_id = op_id or uuid.uuid4().hex
    await db.operations.insert_one(
        {"_id": op_id, "owner": "dead", "fence": 1, "lease_until": 0, "created_at": utcnow(), **op}
    )
    return op_id


async def reconcile(app: FastAPI) -> dict[str, int]:
    """One pass of the app's reconciler; what it did, by outcome."""
    return dict(await app.state.svc.reconciler.run_once())
