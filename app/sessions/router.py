"""`POST /admin/refresh`, `GET /admin/sessions`, `DELETE /admin/sessions/{session_id}`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import BaseModel, Field, WithJsonSchema

from app.auth.schemas import TokenResponse
from app.deps import CurrentAdmin, Meta, Sessions
from app.kit.errors import ErrorBody, NotFound
from app.kit.fields import StrictModel, UtcTime
from app.kit.pagination import Page, decode_cursor, encode_cursor, invalid_cursor
from app.kit.responses import BODY_ERRORS, errors
from app.organizations.team import is_member_id

router = APIRouter(prefix="/admin", tags=["sessions"])
SESSION_ID = r"^[0-9a-f]{24}$"
CURSOR_FORMAT = "id-cursor"  # the same cursor as /org/members (base64url of a 24-hex id)


class RefreshRequest(StrictModel):
    """Body of `POST /admin/refresh`."""

    refresh_token: str = Field(min_length=1, max_length=200)


class SessionRead(BaseModel):
    """One live session of the caller."""

    session_id: str
    created_at: UtcTime
    last_used_at: UtcTime
    ip: str | None
    user_agent: str | None
    current: bool = Field(description="The session of the token that asks.")


class SessionPage(Page[SessionRead]):
    """One page of the caller's live sessions, by id."""


@router.post(
    "/refresh",
    response_model=TokenResponse,
    responses={
        **errors(422, 503),
        401: {
            "model": ErrorBody,
            "description": (
                "`invalid_refresh_token` (unknown, malformed, expired or ended), or "
                "`refresh_token_reused`: it was already rotated, so the whole session is ended."
            ),
        },
        **BODY_ERRORS,
    },
)
async def refresh(
    body: RefreshRequest, sessions: Sessions, response: Response, meta: Meta
) -> TokenResponse:
    """A new access token and a new refresh token (rotation) for the session's current one."""
    response.headers["Cache-Control"] = "no-store"
    return await sessions.refresh(body.refresh_token, meta=meta)


@router.get("/sessions", response_model=SessionPage, responses=errors(401, 422, 503))
async def list_sessions(
    caller: CurrentAdmin,
    sessions: Sessions,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 20,
    cursor: Annotated[
        str | None,
        WithJsonSchema(
            {"type": "string", "minLength": 2, "maxLength": 64, "format": CURSOR_FORMAT}
        ),
        Query(min_length=2, max_length=64, description="`next_cursor` of the previous page."),
    ] = None,
) -> SessionPage:
    """The caller's live sessions (not ended, not expired, not ended by a password change or
    logout-all), with where they come from; `current` marks the one asking."""
    after = None
    if cursor is not None:
        after = decode_cursor(cursor)
        if not is_member_id(after):
            raise invalid_cursor()
    entry = (
        caller.organization.team.members.get(caller.member_id) if caller.organization.team else None
    )
    if entry is None:
        raise NotFound()
    found, last = await sessions.live(caller.claims, entry, limit=limit, after=after)
    items = [
        SessionRead(
            session_id=s.session_id,
            created_at=s.created_at,
            last_used_at=datetime.fromtimestamp(s.last_used_ms / 1000, UTC),
            ip=s.ip,
            user_agent=s.user_agent,
            current=s.session_id == caller.claims.session_id,
        )
        for s in found
    ]
    return SessionPage(items=items, next_cursor=encode_cursor(last) if last else None)


@router.delete(
    "/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=errors(401, 404, 422, 503, s404="`not_found`: no such live session of yours."),
)
async def end_session(
    session_id: Annotated[str, Path(pattern=SESSION_ID)],
    caller: CurrentAdmin,
    sessions: Sessions,
    meta: Meta,
) -> Response:
    """End one of the caller's sessions: its access and refresh tokens stop working on every
    replica."""
    await sessions.end_one(caller.claims, session_id, meta=meta, reason="ended_by_member")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
