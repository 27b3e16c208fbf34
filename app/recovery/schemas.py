"""Bodies of the recovery routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.auth.schemas import Password
from app.kit.fields import Email, StrictModel


class ForgotRequest(StrictModel):
    """Body of `POST /admin/password/forgot`."""

    email: Email


class ForgotResponse(BaseModel):
    """The same answer for every well-formed address, an account's or not."""

    status: Literal["accepted"] = "accepted"


class ResetRequest(StrictModel):
    """Body of `POST /admin/password/reset`: the token from the mail, and the new password."""

    token: str = Field(min_length=1, max_length=200)
    password: Password
