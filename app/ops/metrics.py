"""`/metrics` for Prometheus (not part of the public API schema)."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.deps import State
from app.kit.store import StoreError

router = APIRouter(include_in_schema=False)


@router.get("/metrics")
async def metrics(state: State) -> Response:
    """Prometheus exposition of this process's metrics."""
    with contextlib.suppress(StoreError, TimeoutError):
        async with asyncio.timeout(1.0):  # a slow database must not stall the scrape
            state.metrics.organizations.set(await state.orgs.count_active())
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
