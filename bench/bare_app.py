"""The bare FastAPI baseline of figure 1: `GET /org/get` answering a constant organization object.

The harness passes the exact JSON the real service returned for its organization in
`BENCH_BARE_BODY`, so both servers send the same bytes; this one has no auth, no database, no
middleware. Run as `uvicorn bench.bare_app:app`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from fastapi import FastAPI

_DEFAULT = {
    "organization_id": "6741f0c2a1b2c3d4e5f60718",
    "organization_name": "Bench Org 00",
    "slug": "bench_org_00",
    "collection_name": "org_bench_org_00",
    "admin": {"admin_id": "6741f0c2a1b2c3d4e5f60719", "email": "bench-00@bench.example.com"},
    "created_at": "2026-11-22T10:00:00.000Z",
    "updated_at": "2026-11-22T10:00:00.000Z",
}
ORGANIZATION: dict[str, Any] = json.loads(os.environ.get("BENCH_BARE_BODY") or json.dumps(_DEFAULT))

app = FastAPI(title="bare baseline")


@app.get("/org/get")
async def get_organization(organization_name: str) -> dict[str, Any]:
    """The same organization object as the service, from a constant."""
    return ORGANIZATION


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
