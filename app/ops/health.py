"""`/health` (the process is up) and `/ready` (MongoDB answers)."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import State
from app.kit.db import ping
from app.kit.errors import DatabaseUnavailable
from app.kit.responses import errors
from app.ops.schemas import HealthResponse, ReadyResponse

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthResponse)
async def health() -> HealthResponse:
    """Liveness: the process is up (no database call)."""
    return HealthResponse()


@router.get("/ready", response_model=ReadyResponse, responses=errors(503))
async def ready(state: State) -> ReadyResponse:
    """Readiness: MongoDB answers a ping (and how authentication reads: `auth_cache`)."""
    if not await ping(state.client):
        raise DatabaseUnavailable()
    return ReadyResponse(auth_cache=state.auth_cache.mode)
