"""`/webhooks`: endpoints that receive events (scope `webhooks:manage`)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/webhooks", tags=["webhooks"])
