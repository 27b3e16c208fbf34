"""`/org/api-keys`: an organization's own API keys, made, listed and revoked by its owners and
admins (section 4 of the contract v2). Such a key acts for its organization only (any other is
404 to it), with `org:read` and/or `events:read`, and is revoked with its organization."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Response, status
from pydantic import BaseModel, Field, StringConstraints, WithJsonSchema

from app.api_keys.repository import ApiKey
from app.auth.roles import Permission
from app.auth.service import Principal
from app.deps import ApiKeys, Meta, requires
from app.kit.errors import NotFound
from app.kit.fields import StrictModel, UtcTime
from app.kit.pagination import Page, decode_cursor, encode_cursor, invalid_cursor
from app.kit.responses import BODY_ERRORS, errors

router = APIRouter(prefix="/org/api-keys", tags=["api keys"])

KEY_ID_CURSOR_FORMAT = "key-id-cursor"
S403 = "`insufficient_role`: only owners and admins manage the organization's API keys."
_KEY_ID = re.compile(r"^(osk_)?[0-9a-f]{12}\Z")

Manager = Annotated[Principal, Depends(requires(Permission.MANAGE_API_KEYS))]
OrgScope = Literal["org:read", "events:read"]


class OrgKeyCreate(StrictModel):
    """Body of `POST /org/api-keys`."""

    name: Annotated[
        str,
        StringConstraints(strict=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._:-]{0,63}$"),
        Field(
            description="1 to 64 letters, digits, space, `.`, `_`, `:`, `-`, starting with a "
            "letter or digit.",
            examples=["billing-sync"],
        ),
    ]
    scopes: Annotated[
        list[OrgScope],
        Field(min_length=1, max_length=2, description="What the key may do, for this "
              "organization only: `org:read` and/or `events:read`."),
    ]  # fmt: skip


class OrgKeyRead(BaseModel):
    """An organization's API key, without the key (shown once, when it is made)."""

    key_id: str
    name: str
    prefix: str = Field(description="`osk_<key_id>`: how the key starts.")
    scopes: list[str]
    created_at: UtcTime
    last_used_at: UtcTime | None

    @classmethod
    def of(cls, key: ApiKey) -> OrgKeyRead:
        return cls(
            key_id=key.key_id,
            name=key.name,
            prefix=key.prefix,
            scopes=key.scopes,
            created_at=_time(key.created_ms) or datetime.now(UTC),
            last_used_at=_time(key.last_used_ms),
        )


class OrgKeyCreated(OrgKeyRead):
    """A new key: `key` is shown this once and never again (only its hash is stored)."""

    key: str


class OrgKeyPage(Page[OrgKeyRead]):
    """One page of the organization's live keys, by id."""


def _time(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=OrgKeyCreated,
    responses={**errors(401, 403, 422, 503, s403=S403), **BODY_ERRORS},
)
async def create_org_key(
    body: OrgKeyCreate, caller: Manager, keys: ApiKeys, meta: Meta
) -> OrgKeyCreated:
    """Make an API key that acts for the caller's organization only (owners and admins)."""
    record, key = await keys.create(
        name=body.name,
        scopes=list(body.scopes),
        actor=caller.actor,
        meta=meta,
        organization_id=caller.organization.organization_id,
    )
    return OrgKeyCreated(**OrgKeyRead.of(record).model_dump(), key=key)


@router.get(
    "",
    response_model=OrgKeyPage,
    responses=errors(401, 403, 422, 503, s403=S403),
)
async def list_org_keys(
    caller: Manager,
    keys: ApiKeys,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 20,
    cursor: Annotated[
        str | None,
        WithJsonSchema(
            {"type": "string", "minLength": 2, "maxLength": 64, "format": KEY_ID_CURSOR_FORMAT}
        ),
        Query(
            min_length=2,
            max_length=64,
            description="`next_cursor` of the previous page, passed back unchanged (the "
            "base64url of the last key's 12-hex-digit id). Anything else is a 422.",
        ),
    ] = None,
) -> OrgKeyPage:
    """The organization's live API keys (owners and admins); never a key or its hash."""
    after = None
    if cursor is not None:
        after = decode_cursor(cursor)
        if not re.fullmatch(r"[0-9a-f]{12}", after):
            raise invalid_cursor()
    found = await keys.repo.page_of_org(
        caller.organization.organization_id, limit=limit + 1, after=after
    )
    more = len(found) > limit
    found = found[:limit]
    return OrgKeyPage(
        items=[OrgKeyRead.of(key) for key in found],
        next_cursor=encode_cursor(found[-1].key_id) if more and found else None,
    )


@router.delete(
    "/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=errors(
        401, 403, 404, 422, 503, s403=S403, s404="`not_found`: no live key of this organization."
    ),
)
async def revoke_org_key(
    key_id: Annotated[str, Path(description="The key's id (or its `osk_<id>` prefix).")],
    caller: Manager,
    keys: ApiKeys,
    meta: Meta,
) -> Response:
    """Revoke one of the organization's API keys (owners and admins); at once, everywhere."""
    if not _KEY_ID.match(key_id):
        raise NotFound("No such API key.")
    revoked = await keys.revoke(
        key_id, actor=caller.actor, meta=meta, organization_id=caller.organization.organization_id
    )
    if revoked is None:
        raise NotFound("No such API key.")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
