"""Request and response models: validation at the edge, including byte lengths and Unicode."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    PlainSerializer,
    StringConstraints,
    model_validator,
)

from app.names import MAX_NAME_CHARS
from app.security.passwords import MAX_PASSWORD_BYTES, MIN_PASSWORD_BYTES

# Rules JSON Schema keywords cannot state (a UTF-8 byte count, "has a letter or digit", what a
# cursor decodes to) are named by a `format` and spelled out in the description; the keywords
# around them (lengths, types) are exact. The fuzz run generates each format with its rule.
NAME_FORMAT = "organization-name"
PASSWORD_FORMAT = "password-8-72-bytes"  # noqa: S105 (a format name)
EMAIL_FORMAT = "email-address"
SLUG_CURSOR_FORMAT = "slug-cursor"  # `GET /org/list`
AUDIT_CURSOR_FORMAT = "audit-cursor"  # `GET /org/audit`
NAME_DESCRIPTION = (
    f"1 to {MAX_NAME_CHARS} characters with at least one letter or digit, no NUL and no "
    "bidirectional control character. Matched by its slug (invisible default-ignorable "
    "characters dropped, NFKC, casefolded, every run of non-letters/digits to `_`, trimmed), "
    "which must fit a MongoDB namespace as `org_<slug>`. Otherwise 422."
)
EMAIL_DESCRIPTION = (
    "An address as the `email-validator` package accepts it without DNS lookups: "
    "internationalized addresses are fine; a quoted local part, an IP-literal domain, a domain "
    "without a dot and a special-use domain (`.test`, `.local`, `.localhost`, `.invalid`, "
    "`.onion`, `.arpa`, ...) are not; at most 254 characters. Otherwise 422."
)
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


def _no_null(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain the null character")
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
OrganizationName = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=MAX_NAME_CHARS),
    AfterValidator(_no_null),
    Field(
        examples=["Acme Corp"],
        description=NAME_DESCRIPTION,
        json_schema_extra={"format": NAME_FORMAT},
    ),
]
Email = Annotated[
    EmailStr,
    Field(
        max_length=254,
        examples=["admin@acme.com"],
        description=EMAIL_DESCRIPTION,
        # Not JSON Schema's `email`: internationalized addresses are accepted, and some RFC 5321
        # forms are not (see the description).
        json_schema_extra={"format": EMAIL_FORMAT},
    ),
]


def _utc_text(value: datetime) -> str:
    """`2026-11-22T10:00:00.000Z` (isoformat is C code; strftime showed up in the profile)."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


UtcTime = Annotated[datetime, PlainSerializer(_utc_text, return_type=str)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class OrganizationCreate(StrictModel):
    """Body of `POST /org/create`."""

    organization_name: OrganizationName
    email: Email
    password: Password


_UPDATE_FIELDS = ("organization_name", "email", "password")


class OrganizationUpdate(StrictModel):
    """Body of `PUT /org/update`: new values for the caller's organization, at least one
    (a null is the same as leaving the field out)."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": [name], "properties": {name: {"type": "string"}}}
                for name in _UPDATE_FIELDS
            ]
        }
    )

    organization_name: OrganizationName | None = None
    email: Email | None = None
    password: Password | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> OrganizationUpdate:
        if self.organization_name is None and self.email is None and self.password is None:
            raise ValueError("give at least one of organization_name, email, password")
        return self


class LoginRequest(StrictModel):
    """Body of `POST /admin/login`."""

    email: Email
    # Any length is accepted here so that a wrong-length password is a plain 401, not a hint.
    password: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=1024)]


class AdminRead(BaseModel):
    admin_id: str
    email: str


class OrganizationRead(BaseModel):
    """The organization object of the contract."""

    organization_id: str
    organization_name: str
    slug: str
    collection_name: str
    admin: AdminRead
    created_at: UtcTime
    updated_at: UtcTime


class TokenResponse(BaseModel):
    """A fresh access token."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int
    admin_id: str
    organization_id: str


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    status: Literal["ready"] = "ready"
