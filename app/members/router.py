"""`/org/members`, `/org/invitations` and `POST /invitations/accept` (contract section 1).

Who may do what is decided by the roles table (`app.auth.roles`), asked by the service, which
sees both sides of a change (the caller's role now and the target's)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import WithJsonSchema

from app.deps import CurrentAdmin, Meta, Teams
from app.kit.pagination import decode_cursor, encode_cursor, invalid_cursor
from app.kit.responses import BODY_ERRORS, errors
from app.members.invitations import Invitation
from app.members.schemas import (
    MEMBER_ID_PATTERN,
    AcceptRequest,
    AcceptResponse,
    InvitationCreate,
    InvitationPage,
    InvitationRead,
    MemberPage,
    MemberRead,
    RoleChange,
    last_login,
)
from app.members.service import MemberView
from app.organizations.team import is_member_id

router = APIRouter(tags=["members"])

S403 = "`insufficient_role`: the caller's role does not allow this (see the roles table)."
CURSOR_FORMAT = "id-cursor"

Limit = Annotated[int, Query(ge=1, le=100, description="Page size.")]
Cursor = Annotated[
    str | None,
    WithJsonSchema({"type": "string", "minLength": 2, "maxLength": 64, "format": CURSOR_FORMAT}),
    Query(
        min_length=2,
        max_length=64,
        description=(
            "`next_cursor` of the previous page, passed back unchanged (the base64url of the "
            "last item's 24-hex-digit id). Anything else is a 422."
        ),
    ),
]
MemberId = Annotated[str, Path(pattern=MEMBER_ID_PATTERN, description="The member's id.")]
InvitationId = Annotated[str, Path(pattern=MEMBER_ID_PATTERN, description="The invitation's id.")]


def _after(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    text = decode_cursor(cursor)
    if not is_member_id(text):
        raise invalid_cursor()
    return text


def _next(last: str | None) -> str | None:
    return encode_cursor(last) if last else None


def member_read(view: MemberView) -> MemberRead:
    return MemberRead.model_validate(
        {
            "member_id": view.member_id,
            "email": view.email,
            "role": view.role,
            "created_at": view.created_at,
            "last_login_at": last_login(view.last_login_ms),
        }
    )


def invitation_read(invitation: Invitation) -> InvitationRead:
    return InvitationRead.model_validate(invitation, from_attributes=True)


@router.get("/org/members", response_model=MemberPage, responses=errors(401, 422, 503))
async def list_members(
    caller: CurrentAdmin, teams: Teams, limit: Limit = 20, cursor: Cursor = None
) -> MemberPage:
    """The caller's organization's members (every role may look), by id."""
    views, last = await teams.members_page(caller, limit=limit, after=_after(cursor))
    return MemberPage(items=[member_read(v) for v in views], next_cursor=_next(last))


@router.patch(
    "/org/members/{member_id}",
    response_model=MemberRead,
    responses={
        **errors(
            401, 403, 404, 409, 422, 503,
            s403=S403,
            s404="`not_found`: no such member in this organization.",
            s409="`last_owner`: the organization would have no owner; or `operation_in_progress`.",
        ),
        **BODY_ERRORS,
    },
)  # fmt: skip
async def change_role(
    member_id: MemberId, body: RoleChange, caller: CurrentAdmin, teams: Teams, meta: Meta
) -> MemberRead:
    """Change a member's role: an owner sets any role; an admin moves someone between
    `member` and `admin`, never an owner. Takes effect at the member's next request."""
    return member_read(await teams.change_role(caller, member_id, body.role, meta=meta))


@router.delete(
    "/org/members/{member_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=errors(
        401, 403, 404, 409, 422, 503,
        s403=S403,
        s404="`not_found`: no such member in this organization.",
        s409="`last_owner`: the organization would have no owner; or `operation_in_progress`.",
        interruptible=True,
    ),
)  # fmt: skip
async def remove_member(
    member_id: MemberId, caller: CurrentAdmin, teams: Teams, meta: Meta
) -> Response:
    """Remove a member (any member may remove itself: leave). Its tokens stop working at
    once, on every replica."""
    await teams.remove(caller, member_id, meta=meta)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/org/invitations",
    status_code=status.HTTP_201_CREATED,
    response_model=InvitationRead,
    responses={
        **errors(
            401, 403, 409, 422, 503,
            s403=S403,
            s409=(
                "`email_taken` (already a member of an organization), `invitation_exists` "
                "(pending for this email here), `seat_limit`, or `operation_in_progress`."
            ),
            interruptible=True,
        ),
        **BODY_ERRORS,
    },
)  # fmt: skip
async def create_invitation(
    body: InvitationCreate, caller: CurrentAdmin, teams: Teams, meta: Meta
) -> InvitationRead:
    """Invite someone by email (admins and owners; only an owner invites an owner). The token
    goes only to that address, by mail; it is never in an answer."""
    return invitation_read(await teams.invite(caller, body.email, body.role, meta=meta))


@router.get(
    "/org/invitations",
    response_model=InvitationPage,
    responses=errors(401, 403, 422, 503, s403=S403),
)
async def list_invitations(
    caller: CurrentAdmin, teams: Teams, limit: Limit = 20, cursor: Cursor = None
) -> InvitationPage:
    """The organization's pending invitations (admins and owners), by id."""
    found, last = await teams.invitations_page(caller, limit=limit, after=_after(cursor))
    return InvitationPage(items=[invitation_read(i) for i in found], next_cursor=_next(last))


@router.delete(
    "/org/invitations/{invitation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=errors(
        401, 403, 404, 409, 422, 503,
        s403=S403,
        s404="`not_found`: no such pending invitation in this organization.",
        s409="`operation_in_progress`.",
    ),
)  # fmt: skip
async def revoke_invitation(
    invitation_id: InvitationId, caller: CurrentAdmin, teams: Teams, meta: Meta
) -> Response:
    """Revoke a pending invitation (admins and owners): its link stops working."""
    await teams.revoke(caller, invitation_id, meta=meta)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/invitations/accept",
    status_code=status.HTTP_201_CREATED,
    response_model=AcceptResponse,
    responses={
        **errors(
            409,
            410,
            422,
            503,
            s409="`email_taken` (the address joined an organization meanwhile) or `seat_limit`.",
            interruptible=True,
        ),
        **BODY_ERRORS,
    },
)
async def accept_invitation(body: AcceptRequest, teams: Teams, meta: Meta) -> AcceptResponse:
    """Accept an invitation with the token from its mail and a new password: the member is
    made and logged in."""
    login, view = await teams.accept(body.token, body.password, meta=meta)
    return AcceptResponse(**login.model_dump(), member=member_read(view))
