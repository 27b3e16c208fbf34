"""Documented error responses for OpenAPI."""

from __future__ import annotations

from typing import Any

from app.errors import ErrorBody


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries with the `{detail, code}` model for each status."""
    text = {
        401: "Missing, malformed, expired, tampered or revoked token.",
        403: "Not the caller's organization.",
        404: "No such organization.",
        409: "Name or email taken, or another change in progress.",
        422: "Invalid input.",
        429: "Too many failed logins for this email or client IP; see `Retry-After`.",
        503: "Database unavailable.",
    }
    return {s: {"model": ErrorBody, "description": text.get(s, "Error.")} for s in statuses}
