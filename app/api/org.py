"""`/org/*`: create, read, update (rename), delete and list organizations.

Every mutating call is audited (`app.services.audit`): success, or failure with its code.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import BaseModel

from app.api.deps import (
    Audit,
    Caller,
    CurrentAdmin,
    Meta,
    OptionalKey,
    OrgService,
    State,
    require_scope,
)
from app.api.responses import errors
from app.edges import BODY_ERRORS
from app.errors import InvalidInput, Unauthorized
from app.repositories.base import Doc, as_utc
from app.schemas import AdminRead, OrganizationCreate, OrganizationRead, OrganizationUpdate
from app.services.api_keys import KeyPrincipal
from app.services.audit import ANONYMOUS

router = APIRouter(prefix="/org", tags=["organizations"])

NameQuery = Annotated[str, Query(min_length=1, max_length=1000, examples=["Acme Corp"])]


def to_read(doc: Doc) -> OrganizationRead:
    """The contract's organization object from a stored record (no secrets in it)."""
    return OrganizationRead(
        organization_id=doc["_id"],
        organization_name=doc["organization_name"],
        slug=doc["slug"],
        collection_name=doc["collection_name"],
        admin=AdminRead(admin_id=doc["admin"]["admin_id"], email=doc["admin"]["email"]),
        created_at=as_utc(doc["created_at"]),
        updated_at=as_utc(doc["updated_at"]),
    )


async def create_gate(state: State, key: OptionalKey) -> KeyPrincipal | None:
    """Open sign-up, unless ORG_CREATE_REQUIRES_KEY: then an API key with org:create."""
    if key is None and state.settings.org_create_requires_key:
        raise Unauthorized("An API key with the org:create scope is required.")
    if key is not None:
        key.require("org:create")  # a key that is sent must be one allowed to create
    return key


@router.post(
    "/create",
    status_code=status.HTTP_201_CREATED,
    response_model=OrganizationRead,
    responses={**errors(401, 403, 409, 422, 503), **BODY_ERRORS},
)
async def create_organization(
    body: OrganizationCreate,
    orgs: OrgService,
    audit: Audit,
    meta: Meta,
    key: Annotated[KeyPrincipal | None, Depends(create_gate)],
) -> OrganizationRead:
    """Create an organization, its admin and its tenant collection.

    Open to anyone unless ORG_CREATE_REQUIRES_KEY is set; then it needs `X-API-Key` with the
    `org:create` scope (401 without a key, 403 without the scope)."""
    actor = key.actor if key else ANONYMOUS
    details = {"organization_name": body.organization_name}
    async with audit.track("org.create", actor=actor, meta=meta, details=details) as entry:
        org = await orgs.create(body)
        entry.organization_id = org["_id"]
    return to_read(org)


@router.get("/get", response_model=OrganizationRead, responses=errors(401, 403, 404, 422, 503))
async def get_organization(
    organization_name: NameQuery, caller: Caller, orgs: OrgService
) -> OrganizationRead:
    """An organization by name (matched by slug): the caller's own with a bearer token, any
    with an API key that has the `org:read` scope."""
    if isinstance(caller, KeyPrincipal):
        caller.require("org:read")
        return to_read(await orgs.get_any(organization_name))
    return to_read(await orgs.get_for(caller.organization, organization_name))


class OrganizationPage(BaseModel):
    """One page of organizations, by slug; pass `next_cursor` back as `cursor` for the next."""

    items: list[OrganizationRead]
    next_cursor: str | None


@router.get("/list", response_model=OrganizationPage, responses=errors(401, 403, 422, 503))
async def list_organizations(
    orgs: OrgService,
    _key: Annotated[KeyPrincipal, Depends(require_scope("org:list"))],
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
) -> OrganizationPage:
    """Every active organization, by slug, in pages (API key with the `org:list` scope)."""
    docs, last = await orgs.list_page(limit=limit, after=_decode_slug_cursor(cursor))
    return OrganizationPage(
        items=[to_read(d) for d in docs],
        next_cursor=base64.urlsafe_b64encode(last.encode()).decode().rstrip("=") if last else None,
    )


def _decode_slug_cursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        padded = (cursor + "=" * (-len(cursor) % 4)).encode("ascii")
        slug = base64.b64decode(padded, altchars=b"-_", validate=True).decode("utf-8")
        if slug:
            return slug
    except (binascii.Error, UnicodeError, ValueError):
        pass
    raise InvalidInput(
        [{"type": "value_error", "loc": ["query", "cursor"], "msg": "invalid cursor"}]
    )


@router.put(
    "/update",
    response_model=OrganizationRead,
    responses={**errors(401, 404, 409, 422, 503), **BODY_ERRORS},
)
async def update_organization(
    body: OrganizationUpdate, caller: CurrentAdmin, orgs: OrgService, audit: Audit, meta: Meta
) -> OrganizationRead:
    """Rename the caller's organization and/or change its admin's email or password."""
    before = caller.organization
    renaming = orgs.renames(before, body)
    # Field names only, never values: a new password must not reach the log.
    details: dict[str, object] = {"fields": sorted(body.model_dump(exclude_none=True))}
    if renaming:
        details.update({"from": before["organization_name"], "to": body.organization_name})
    async with audit.track(
        "org.rename" if renaming else "org.update",
        actor=caller.actor,
        meta=meta,
        organization_id=before["_id"],
        details=details,
    ):
        org = await orgs.update(before, body)
    return to_read(org)


@router.delete(
    "/delete",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=errors(401, 403, 404, 409, 422, 503),
)
async def delete_organization(
    organization_name: NameQuery, caller: CurrentAdmin, orgs: OrgService, audit: Audit, meta: Meta
) -> Response:
    """Delete the caller's organization, its tenant collection and its admins."""
    org_id = caller.organization["_id"]
    async with audit.track(
        "org.delete",
        actor=caller.actor,
        meta=meta,
        organization_id=org_id,
        details={"organization_name": caller.organization["organization_name"]},
    ):
        await orgs.delete(caller.organization, organization_name)
    # Its entries (this one too) are kept for AUDIT_RETENTION_DAYS, then removed by TTL.
    await audit.organization_deleted(org_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
