"""Response models of the operational endpoints."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from app.auth.cache import CacheMode


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    status: Literal["ready"] = "ready"
    # The authentication cache (app/auth/cache.py): `serving` (its change streams are caught
    # up), `reading` (requests read the database until they are), `off` (AUTH_CACHE=false),
    # `unsupported` (the store has no change streams). Readiness does not depend on it.
    auth_cache: CacheMode
    # Each tenant cluster (TENANT_CLUSTERS, `main` being MONGODB_URL's): `up` or `down`. A
    # cluster that is down fails its own tenants' operations (503), not the service, so it does
    # not make the service unready; `main` holds the records and does.
    clusters: dict[str, Literal["up", "down"]]
