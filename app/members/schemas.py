"""Request and response models of teams (contract section 1)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.auth.schemas import Password, TokenResponse
from app.kit.fields import Email, StrictModel, UtcTime
from app.kit.pagination import Page

RoleName = Literal["owner", "admin", "member"]
MEMBER_ID_PATTERN = r"^[0-9a-f]{24}$"


class MemberRead(BaseModel):
    """A member of the organization: one account, with its role now."""

    member_id: str = Field(description="The `admin_id` of v1 and of the member's tokens.")
    email: str
    role: RoleName
    created_at: UtcTime
    last_login_at: UtcTime | None


def last_login(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


class MemberPage(Page[MemberRead]):
    """One page of members, by id; pass `next_cursor` back as `cursor` for the next."""


class InvitationCreate(StrictModel):
    """Body of `POST /org/invitations`."""

    email: Email
    role: RoleName


class InvitationRead(BaseModel):
    """A pending invitation (never its token: that goes only to the invitee, by mail)."""

    invitation_id: str
    email: str
    role: RoleName
    invited_by: str | None = Field(description="The `member_id` of the inviter.")
    created_at: UtcTime
    expires_at: UtcTime


class InvitationPage(Page[InvitationRead]):
    """One page of pending invitations; pass `next_cursor` back as `cursor` for the next."""


class RoleChange(StrictModel):
    """Body of `PATCH /org/members/{member_id}`."""

    role: RoleName


class AcceptRequest(StrictModel):
    """Body of `POST /invitations/accept`: the token from the mail, and the new password."""

    token: str = Field(min_length=1, max_length=200)
    password: Password


class AcceptResponse(TokenResponse):
    """The login response, and the member just made."""

    member: MemberRead
