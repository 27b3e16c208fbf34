"""Field types and models every feature shares: strict models, emails, UTC times.

Rules JSON Schema keywords cannot state (a UTF-8 byte count, "has a letter or digit", what a
cursor decodes to) are named by a `format` and spelled out in the description; the keywords
around them (lengths, types) are exact. The fuzz run generates each format with its rule.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field, PlainSerializer

EMAIL_FORMAT = "email-address"
EMAIL_DESCRIPTION = (
    "An address as the `email-validator` package accepts it without DNS lookups: "
    "internationalized addresses are fine; a quoted local part, an IP-literal domain, a domain "
    "without a dot and a special-use domain (`.test`, `.local`, `.localhost`, `.invalid`, "
    "`.onion`, `.arpa`, ...) are not; at most 254 characters. Otherwise 422."
)


def no_null(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain the null character")
    return value


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


def utc_text(value: datetime) -> str:
    """`2026-11-22T10:00:00.000Z` (isoformat is C code; strftime showed up in the profile)."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


UtcTime = Annotated[datetime, PlainSerializer(utc_text, return_type=str)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)
