"""Request and response models of login, and the password field type."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from app.auth.passwords import MAX_PASSWORD_BYTES, MIN_PASSWORD_BYTES
from app.kit.fields import Email, StrictModel

PASSWORD_FORMAT = "password-8-72-bytes"  # noqa: S105 (a format name)
PASSWORD_DESCRIPTION = (
    f"{MIN_PASSWORD_BYTES} to {MAX_PASSWORD_BYTES} bytes of UTF-8 (so 2 to {MAX_PASSWORD_BYTES} "
    "characters), no NUL; otherwise 422."
)


def _password_bytes(value: str) -> str:
    size = len(value.encode("utf-8"))
    if size < MIN_PASSWORD_BYTES or size > MAX_PASSWORD_BYTES:
        raise ValueError(
            f"password must be {MIN_PASSWORD_BYTES} to {MAX_PASSWORD_BYTES} bytes of UTF-8 "
            f"(got {size})"
        )
    if "\x00" in value:
        raise ValueError("password must not contain the null character")
    return value


# strict=True: `{"$ne": null}` or a number where a string belongs is a 422, never coerced.
Password = Annotated[
    str,
    StringConstraints(strict=True),
    AfterValidator(_password_bytes),
    Field(
        examples=["s3cret-pass"],
        description=PASSWORD_DESCRIPTION,
        json_schema_extra={
            "format": PASSWORD_FORMAT,
            # The character lengths that can hold 8..72 bytes (1 to 4 bytes a character).
            "minLength": -(-MIN_PASSWORD_BYTES // 4),
            "maxLength": MAX_PASSWORD_BYTES,
        },
    ),
]


class LoginRequest(StrictModel):
    """Body of `POST /admin/login`."""

    email: Email
    # Any length is accepted here so that a wrong-length password is a plain 401, not a hint.
    password: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=1024)]
    # A longer-lived session (REFRESH_TOKEN_REMEMBER_ME_DAYS instead of REFRESH_TOKEN_TTL_HOURS).
    remember_me: bool = False


class TokenResponse(BaseModel):
    """A fresh access token."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int
    admin_id: str
    organization_id: str
    refresh_token: str = Field(
        description="Exchange it at `POST /admin/refresh` (once: each refresh returns a new one)."
    )
    refresh_expires_in: int = Field(description="Seconds until the refresh token expires.")
    session_id: str
