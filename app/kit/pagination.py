"""One page shape and one cursor codec for every list endpoint.

A cursor is the base64url (RFC 4648 §5, `=` padding optional) of a short UTF-8 text that the
listing feature chooses (the last slug of a page, `<at_ms>.<id>` of the last audit entry);
anything that does not decode is the same 422 wherever it is sent.
"""

from __future__ import annotations

import base64
import binascii
from typing import Generic, TypeVar

from pydantic import BaseModel

from app.kit.errors import InvalidInput

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of items; pass `next_cursor` back as `cursor` for the next (null: no more)."""

    items: list[T]
    next_cursor: str | None


def encode_cursor(text: str) -> str:
    """The opaque cursor of `text`."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The text of a cursor this service made; a 422 `validation_error` for anything else."""
    try:
        padded = (cursor + "=" * (-len(cursor) % 4)).encode("ascii")
        text = base64.b64decode(padded, altchars=b"-_", validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        text = ""
    if not text:
        raise invalid_cursor()
    return text


def invalid_cursor() -> InvalidInput:
    return InvalidInput(
        [{"type": "value_error", "loc": ["query", "cursor"], "msg": "invalid cursor"}]
    )
