"""`/health` (the process is up) and `/ready` (MongoDB answers)."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter

from app.deps import State
from app.kit.db import ping
from app.kit.errors import DatabaseUnavailable
from app.kit.responses import errors
from app.ops.schemas import HealthResponse, ReadyResponse
from app.tenancy.placement import MAIN

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthResponse)
async def health() -> HealthResponse:
    """Liveness: the process is up (no database call)."""
    return HealthResponse()


@router.get("/ready", response_model=ReadyResponse, responses=errors(503))
async def ready(state: State) -> ReadyResponse:
    """Readiness: MongoDB answers a ping (and how authentication reads: `auth_cache`; which
    tenant clusters answer: `clusters`)."""
    if not await ping(state.client):
        raise DatabaseUnavailable()
    clusters = state.repos.tenants.clusters
    others = [name for name in clusters.clients if name != MAIN]
    answers = await asyncio.gather(*(_answers(clusters.clients[name]) for name in others))
    up: dict[str, Literal["up", "down"]] = {MAIN: "up"}
    up.update({name: "up" if ok else "down" for name, ok in zip(others, answers, strict=True)})
    return ReadyResponse(auth_cache=state.auth_cache.mode, clusters=up)


async def _answers(client: Any) -> bool:
    """A ping within a second (a cluster that is down must not make `/ready` slow)."""
    try:
        return await asyncio.wait_for(ping(client), timeout=1.0)
    except TimeoutError:
        return False
