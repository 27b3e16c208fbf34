"""`GET /org/audit`: the caller's organization's audit log, newest first, in pages."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, WithJsonSchema

from app.audit.service import AUDIT_CURSOR_FORMAT
from app.auth.roles import Permission
from app.auth.service import Principal
from app.deps import Audit, requires
from app.kit.fields import UtcTime
from app.kit.pagination import Page
from app.kit.responses import errors

router = APIRouter(prefix="/org", tags=["audit"])


class AuditActor(BaseModel):
    """Who acted: `admin` (id = admin_id), `api_key` (id = key id), `cli` or `anonymous`."""

    model_config = ConfigDict(from_attributes=True)

    type: str
    id: str | None


class AuditEntry(BaseModel):
    """One audited action. Never holds a password, hash, token or API key."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    at: UtcTime
    action: str
    outcome: Literal["success", "failure"]
    code: str | None
    actor: AuditActor
    organization_id: str | None
    ip: str | None
    request_id: str | None
    details: dict[str, Any]


class AuditPage(Page[AuditEntry]):
    """One page of entries; pass `next_cursor` back as `cursor` for the next (null: no more)."""


@router.get(
    "/audit",
    response_model=AuditPage,
    responses=errors(
        401, 403, 422, 503, s403="`insufficient_role`: members may not read the audit log."
    ),
)
async def audit_log(
    caller: Annotated[Principal, Depends(requires(Permission.READ_AUDIT))],
    audit: Audit,
    limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 50,
    cursor: Annotated[
        str | None,
        # A query value is a string or absent, never null: the schema says just that.
        WithJsonSchema({"type": "string", "maxLength": 200, "format": AUDIT_CURSOR_FORMAT}),
        Query(
            max_length=200,
            description=(
                "`next_cursor` of the previous page, passed back unchanged (empty: the first "
                "page). It is the base64url (RFC 4648 §5; the service leaves out the `=` padding) "
                "of `<at_ms>.<id>`: the last entry's time in epoch milliseconds (1 to 16 digits) "
                "and its 24-hex-digit id; the page starts after that entry. Any other value is "
                "a 422."
            ),
        ),
    ] = None,
) -> AuditPage:
    """The caller's organization's audit entries, newest first (cursor pagination); owners and
    admins."""
    entries, next_cursor = await audit.page(
        caller.claims.organization_id, limit=limit, cursor=cursor
    )
    return AuditPage(
        items=[AuditEntry.model_validate(e, from_attributes=True) for e in entries],
        next_cursor=next_cursor,
    )
