"""`/orgs/*`: the operator API (section 4 of the contract v2), for service API keys with the
scopes it names; an organization's own key may read its own organization (`org:read`) and sees
no other (404). Every change is audited and announced as an event (`app.organizations.lifecycle`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Response, status
from pydantic import AfterValidator, BeforeValidator, WithJsonSchema

from app.api_keys.service import KeyPrincipal
from app.deps import Lifecycle, Meta, require_scope
from app.kit.pagination import Page
from app.kit.responses import BODY_ERRORS, Responses, errors
from app.organizations.records import Organization
from app.organizations.schemas import (
    OrganizationPatch,
    OrganizationRead,
    OrganizationStats,
    SuspendRequest,
)

router = APIRouter(prefix="/orgs", tags=["operator"])

ORDER_CURSOR_FORMAT = "orgs-cursor"
KEY_401 = "`not_authenticated` (no `X-API-Key`) or `invalid_api_key` (unknown or revoked)."


def _scope_403(scope: str) -> str:
    return f"`insufficient_scope`: the key lacks `{scope}`."


def _write_errors(s409: str, *, body: bool = False, interruptible: bool = False) -> Responses:
    """The documented failures of an `org:write` route (and of its JSON body, if it has one)."""
    found = errors(
        401, 403, 404, 409, 422, 503, s401=KEY_401, s403=_scope_403("org:write"), s409=s409,
        interruptible=interruptible,
    )  # fmt: skip
    return {**found, **BODY_ERRORS} if body else found


BUSY_409 = "`operation_in_progress`: a rename or delete of this organization is under way."


def _utc(value: datetime) -> datetime:
    """A time without an offset is read as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


_DATE_TIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}")


def _date_time(value: object) -> object:
    """A date and a time, as the schema's `date-time` says: not a number (which pydantic would
    read as Unix time) nor a bare date."""
    if isinstance(value, str) and not _DATE_TIME.match(value):
        raise ValueError("not a date-time (YYYY-MM-DDTHH:MM:SS, with an offset or in UTC)")
    return value


OrganizationId = Annotated[
    str,
    Path(
        description="The organization's id (anything else, or an organization this key may "
        "not see, is a 404).",
        examples=["6650f2a9c1d4e8b7a3f01234"],
    ),
]
Moment = Annotated[
    datetime | None, BeforeValidator(_date_time), AfterValidator(lambda v: _utc(v) if v else v)
]

Reader = Annotated[KeyPrincipal, Depends(require_scope("org:read"))]
Writer = Annotated[KeyPrincipal, Depends(require_scope("org:write"))]


class OrganizationListPage(Page[OrganizationRead]):
    """One page of organizations in creation order (oldest first), and how many match."""

    total: int


@router.get(
    "",
    response_model=OrganizationListPage,
    responses=errors(401, 403, 422, 503, s401=KEY_401, s403=_scope_403("org:list")),
)
async def list_organizations(
    lifecycle: Lifecycle,
    _key: Annotated[KeyPrincipal, Depends(require_scope("org:list"))],
    status_: Annotated[
        Literal["active", "suspended"] | None,
        Query(alias="status", description="Only organizations in this status (default: any)."),
    ] = None,
    plan: Annotated[
        str | None,
        Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Only this plan."),
    ] = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            pattern=r"^[^\x00]+$",
            description=(
                "A case-insensitive prefix (NFKC, casefolded) of the slug or of the display name."
            ),
        ),
    ] = None,
    created_after: Annotated[
        Moment, Query(description="Created strictly after this time (UTC if no offset).")
    ] = None,
    created_before: Annotated[
        Moment, Query(description="Created strictly before this time (UTC if no offset).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 20,
    cursor: Annotated[
        str | None,
        WithJsonSchema(
            {"type": "string", "minLength": 2, "maxLength": 200, "format": ORDER_CURSOR_FORMAT}
        ),
        Query(
            min_length=2,
            max_length=200,
            description=(
                "`next_cursor` of the previous page, passed back unchanged (with the same "
                "filters): the base64url of `<13-digit epoch ms>.<organization id>` of that "
                "page's last organization. Anything else is a 422."
            ),
        ),
    ] = None,
) -> OrganizationListPage:
    """Every organization (API key with `org:list`), filtered, in creation order, in pages,
    with `total`: how many match the filters (whatever the cursor). Organizations created or
    deleted between pages never make a page repeat or skip one that existed throughout."""
    found, next_cursor, total = await lifecycle.page(
        status=status_,
        plan=plan,
        q=q,
        created_after=created_after,
        created_before=created_before,
        limit=limit,
        cursor=cursor,
    )
    return OrganizationListPage(
        items=[OrganizationRead.of(org) for org in found], next_cursor=next_cursor, total=total
    )


@router.get(
    "/{organization_id}",
    response_model=OrganizationRead,
    responses=errors(401, 403, 404, 422, 503, s401=KEY_401, s403=_scope_403("org:read")),
)
async def get_organization_by_id(
    organization_id: OrganizationId, lifecycle: Lifecycle, key: Reader
) -> Organization:
    """One organization by id, active or suspended (`org:read`)."""
    return await lifecycle.get(organization_id, within=key.organization)


@router.patch(
    "/{organization_id}",
    response_model=OrganizationRead,
    responses=_write_errors(
        "`external_id_taken`: another organization has this `external_id`.", body=True
    ),
)
async def patch_organization(
    organization_id: OrganizationId,
    body: OrganizationPatch,
    lifecycle: Lifecycle,
    key: Writer,
    meta: Meta,
) -> Organization:
    """Change any of `display_name`, `metadata`, `plan`, `external_id`, `max_members` of any
    organization, suspended ones too (`org:write`)."""
    return await lifecycle.patch(organization_id, body, actor=key.actor, meta=meta)


@router.post(
    "/{organization_id}/suspend",
    response_model=OrganizationRead,
    responses=_write_errors(BUSY_409, body=True),
)
async def suspend_organization(
    organization_id: OrganizationId,
    lifecycle: Lifecycle,
    key: Writer,
    meta: Meta,
    body: SuspendRequest | None = None,
) -> Organization:
    """Suspend an organization (`org:write`): its data and name stay; its members cannot log
    in, and every token and refresh token of it gets 403 `organization_suspended` from the
    next request on, on every replica. Tokens issued before stay revoked after a restore.
    Suspending a suspended organization changes nothing."""
    reason = body.reason if body is not None else None
    return await lifecycle.suspend(organization_id, reason, actor=key.actor, meta=meta)


@router.post(
    "/{organization_id}/restore",
    response_model=OrganizationRead,
    responses=_write_errors("`operation_in_progress`: the organization is being deleted."),
)
async def restore_organization(
    organization_id: OrganizationId, lifecycle: Lifecycle, key: Writer, meta: Meta
) -> Organization:
    """Lift a suspension (`org:write`); members log in again. Restoring an active organization
    changes nothing."""
    return await lifecycle.restore(organization_id, actor=key.actor, meta=meta)


@router.delete(
    "/{organization_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=_write_errors(BUSY_409, interruptible=True),
)
async def delete_organization_by_id(
    organization_id: OrganizationId, lifecycle: Lifecycle, key: Writer, meta: Meta
) -> Response:
    """Delete any organization, suspended ones too (`org:write`), as `DELETE /org/delete`
    does: its tenant collection, members, invitations and API keys, and its name."""
    await lifecycle.delete(organization_id, actor=key.actor, meta=meta)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{organization_id}/stats",
    response_model=OrganizationStats,
    responses=errors(401, 403, 404, 422, 503, s401=KEY_401, s403=_scope_403("org:read")),
)
async def organization_stats(
    organization_id: OrganizationId, lifecycle: Lifecycle, key: Reader
) -> OrganizationStats:
    """Members, pending invitations, the tenant collection's documents, storage bytes and
    indexes (from the database's own statistics), and the latest login (`org:read`)."""
    return await lifecycle.stats(organization_id, within=key.organization)
