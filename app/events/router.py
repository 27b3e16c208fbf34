"""`GET /events`: the feed, in the one global order (scope `events:read`).

A consumer pages with `after` = the id of the last event it saw: it never misses an event and
never sees one twice (`app.events.publisher` says why). An organization's own key with
`events:read` sees its organization's events only.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field, WithJsonSchema

from app.api_keys.service import KeyPrincipal
from app.deps import State, require_scope
from app.events.records import EVENT_TYPES
from app.kit.errors import InvalidInput, NotFound
from app.kit.fields import UtcTime
from app.kit.responses import errors

router = APIRouter(tags=["events"])

EVENT_ID_PATTERN = r"^evt_[0-9a-f]{24}$"
# `types`: a comma-separated list of EVENT_TYPES (blanks around an item ignored), at least one;
# a rule JSON Schema keywords cannot state, so the schema names it with a format.
EVENT_TYPES_FORMAT = "event-types"
MAX_TYPES_CHARS = 2000


class EventActorRead(BaseModel):
    type: str = Field(description="`admin`, `api_key`, `cli`, `anonymous` or `system`.")
    id: str | None


class EventRead(BaseModel):
    """One event: `data` is the organization object after the change for `organization.*`
    (`organization.renamed` adds `previous_slug` and `previous_collection_name`;
    `organization.deleted` has the object as it was), the member for `member.joined`,
    `member.role_changed` and `member.removed`, the invitation for `member.invited` and
    `invitation.revoked`, the key's public fields for `api_key.*`. Never a secret."""

    id: str
    type: str
    occurred_at: UtcTime
    organization_id: str
    actor: EventActorRead
    data: dict[str, Any]


class EventPage(BaseModel):
    """Events in the global order; pass `next_cursor` (the last event's id) as `after` for
    the next page (null: nothing newer yet; keep your `after` and ask again later)."""

    items: list[EventRead]
    next_cursor: str | None


def _types(value: str | None) -> list[str] | None:
    if value is None:
        return None
    wanted = [t.strip() for t in value.split(",") if t.strip()]
    unknown = sorted(set(wanted) - set(EVENT_TYPES))
    if unknown or not wanted:
        raise InvalidInput(
            [{"type": "value_error", "loc": ["query", "types"],
              "msg": f"unknown event types: {', '.join(unknown) or '(none given)'}"}]
        )  # fmt: skip
    return wanted


@router.get(
    "/events",
    response_model=EventPage,
    responses=errors(
        401,
        403,
        404,
        422,
        503,
        s401="`not_authenticated` (no `X-API-Key`) or `invalid_api_key` (unknown or revoked).",
        s403="`insufficient_scope`: the key lacks `events:read`.",
        s404="`not_found`: an organization's key asked for another organization's events.",
        s422="`validation_error`: a malformed or unknown `after`, an unknown type, a bad limit.",
    ),
)
async def list_events(
    state: State,
    key: Annotated[KeyPrincipal, Depends(require_scope("events:read"))],
    after: Annotated[
        str | None,
        Query(
            pattern=EVENT_ID_PATTERN,
            description="A published event's id: the page starts after it (an id the feed "
            "does not have is a 422).",
        ),
    ] = None,
    types: Annotated[
        str | None,
        WithJsonSchema(
            {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_TYPES_CHARS,
                "format": EVENT_TYPES_FORMAT,
            }
        ),
        Query(
            min_length=1,
            max_length=MAX_TYPES_CHARS,
            description="Comma-separated event types (at least one), of: "
            f"{', '.join(EVENT_TYPES)}.",
        ),
    ] = None,
    organization_id: Annotated[
        str | None, Query(pattern=r"^[0-9a-f]{24}$", description="One organization's events.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 20,
) -> EventPage:
    """Events after `after` (from the first without it), oldest first."""
    own = key.organization.organization_id if key.organization is not None else None
    if own is not None and organization_id is not None and organization_id != own:
        raise NotFound("No such organization.")
    wanted = _types(types)
    store = state.repos.events
    after_seq = 0
    if after is not None:
        found = await store.seq_of(after)
        if found is None:
            raise InvalidInput(
                [{"type": "value_error", "loc": ["query", "after"], "msg": "unknown event id"}]
            )
        after_seq = found
    items = await store.page(
        after_seq=after_seq, limit=limit, types=wanted, organization_id=own or organization_id
    )
    return EventPage(
        items=[EventRead.model_validate(e.public()) for e in items],
        next_cursor=items[-1].id if items else None,
    )
