"""Documented error responses for OpenAPI: every status a route really answers, with its codes.

The fuzz run (`tests/fuzz`) holds the service to these: an undocumented status, a missing
`WWW-Authenticate` on a 401 or `Retry-After` on a 429, or a body off the `{detail, code}` model
fails it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from app.kit.errors import ErrorBody

Responses = dict[int | str, dict[str, Any]]

WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": "Always `Bearer` (also when an `X-API-Key` was refused).",
        "required": True,
        "schema": {"type": "string", "enum": ["Bearer"]},
    }
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds until a login for this email and client IP is counted again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}

_DEFAULTS = {
    400: "`bad_request`: the body is not UTF-8.",
    401: (
        "`not_authenticated` (no credentials), `invalid_token` (malformed, tampered, expired, or "
        "not ours), `token_revoked` (logout, logout-all, password change, deleted organization)."
    ),
    403: "`forbidden`: not the caller's organization.",
    404: "`not_found`: no active organization with this name.",
    409: "`organization_exists`, `email_taken` or `operation_in_progress`.",
    410: "`invitation_invalid`: unknown, malformed, used, revoked or expired (one answer for all).",
    413: "`payload_too_large`: the body is larger than MAX_BODY_BYTES.",
    422: "`validation_error`: invalid input; `detail` lists the problems (never echoing input).",
    429: "`rate_limited`: too many failed logins for this email or client IP.",
    503: "`database_unavailable`: the database did not answer within MONGODB_TIMEOUT_MS.",
}
_HEADERS: dict[int, dict[str, Any]] = {401: WWW_AUTHENTICATE, 429: RETRY_AFTER}
INTERRUPTED = (
    " Or `operation_interrupted`, with `Retry-After`: the replica handling this change stalled "
    "past its lease and another one took it over and decides its outcome; retry."
)
RETRY_AFTER_IF_INTERRUPTED = {
    "Retry-After": {
        "description": "Seconds to wait before retrying (with `operation_interrupted` only).",
        "required": False,
        "schema": {"type": "integer", "minimum": 1},
    }
}


def errors(*statuses: int, interruptible: bool = False, **descriptions: str) -> Responses:
    """OpenAPI `responses` entries with the `{detail, code}` model for each status; a keyword
    `s401="..."` replaces that status's default description (which names its codes);
    `interruptible` for the multi-step changes that can answer 503 `operation_interrupted`."""
    out: Responses = {}
    for status in statuses:
        entry: dict[str, Any] = {
            "model": ErrorBody,
            "description": descriptions.get(f"s{status}", _DEFAULTS[status]),
        }
        if status in _HEADERS:
            entry["headers"] = _HEADERS[status]
        if status == 503 and interruptible:
            entry["description"] += INTERRUPTED
            entry["headers"] = RETRY_AFTER_IF_INTERRUPTED
        out[status] = entry
    return out


# Every route that reads a JSON body can answer these two before validation.
BODY_ERRORS: Responses = errors(400, 413)


SUSPENDED_403 = (
    "`organization_suspended`: the caller's organization is suspended (every token, refresh "
    "token and organization API key of it, until an operator restores it)."
)
SUSPENDABLE = ("HTTPBearer", "APIKeyHeader")


def document_suspension(schema: dict[str, Any], *, also: Iterable[tuple[str, str]] = ()) -> None:
    """Every operation that a member's token or an organization's key may call can answer 403
    `organization_suspended`: add it to each one's 403 (made when missing), and to the
    operations in `also` (login and refresh, which take their credentials in the body)."""
    extra = set(also)
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            schemes = {name for req in operation.get("security", []) for name in req}
            if not (schemes & set(SUSPENDABLE)) and (method, path) not in extra:
                continue
            responses = operation.setdefault("responses", {})
            entry = responses.get("403")
            if entry is None:
                responses["403"] = {
                    "description": SUSPENDED_403,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                    },
                }
            elif "organization_suspended" not in entry["description"]:
                entry["description"] += " " + SUSPENDED_403
