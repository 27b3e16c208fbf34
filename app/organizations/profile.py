"""The organization's profile fields (section 3 of the contract v2) as request types, with the
rules JSON Schema cannot state spelled out in their descriptions and checked here.

`metadata` is a JSON object of at most 64 keys and 8 KiB (compact JSON, UTF-8), keys matching
`^[A-Za-z0-9_-]{1,64}$` at every level (so never a `.` or `$`: MongoDB field names stay plain),
at most 5 levels of objects/arrays counting the object itself as level 1. Two rules of ours on
top, for what the store can hold: integers fit in 64 bits (BSON's widest), and strings hold no
NUL character.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints

METADATA_FORMAT = "org-metadata"
METADATA_MAX_KEYS = 64
METADATA_MAX_BYTES = 8 * 1024
METADATA_MAX_LEVELS = 5
_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
_INT64 = (-(2**63), 2**63 - 1)
METADATA_DESCRIPTION = (
    f"A JSON object of at most {METADATA_MAX_KEYS} keys and {METADATA_MAX_BYTES} bytes as "
    "compact JSON in UTF-8; keys match `^[A-Za-z0-9_-]{1,64}$` at every level; at most "
    f"{METADATA_MAX_LEVELS} levels of objects and arrays, the object itself being level 1; "
    "integers within 64 bits; no NUL character in strings. It replaces the whole object. "
    "Otherwise 422."
)


def _check_node(node: object, level: int, path: str) -> None:
    if isinstance(node, dict | list):
        if level > METADATA_MAX_LEVELS:
            raise ValueError(f"{path}: more than {METADATA_MAX_LEVELS} levels of objects/arrays")
        if isinstance(node, dict):
            for key, child in node.items():
                if not isinstance(key, str) or not _KEY.match(key):
                    raise ValueError(f"{path}: key {key!r} does not match ^[A-Za-z0-9_-]{{1,64}}$")
                _check_node(child, level + 1, f"{path}.{key}")
        else:
            for index, child in enumerate(node):
                _check_node(child, level + 1, f"{path}[{index}]")
    elif isinstance(node, bool) or node is None:
        return
    elif isinstance(node, int):
        if not _INT64[0] <= node <= _INT64[1]:
            raise ValueError(f"{path}: integer outside 64 bits")
    elif isinstance(node, float):
        if node != node or node in (float("inf"), float("-inf")):
            raise ValueError(f"{path}: not a finite number")
    elif isinstance(node, str):
        if "\x00" in node:
            raise ValueError(f"{path}: a string must not contain the NUL character")
    else:  # pragma: no cover - JSON has no other types
        raise ValueError(f"{path}: not a JSON value")


def check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    """The contract's metadata rules (see the module docstring); the value unchanged."""
    if len(value) > METADATA_MAX_KEYS:
        raise ValueError(f"at most {METADATA_MAX_KEYS} keys")
    _check_node(value, 1, "metadata")
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > METADATA_MAX_BYTES:
        raise ValueError(f"{size} bytes as compact JSON; at most {METADATA_MAX_BYTES}")
    return value


Metadata = Annotated[
    dict[str, Any],
    AfterValidator(check_metadata),
    Field(
        description=METADATA_DESCRIPTION,
        examples=[{"region": "eu", "crm": {"account": "A-1042"}}],
        json_schema_extra={"format": METADATA_FORMAT, "maxProperties": METADATA_MAX_KEYS},
    ),
]

DisplayName = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=200, pattern=r"^[^\x00]+$"),
    Field(description="1 to 200 characters, no NUL.", examples=["Acme Corporation"]),
]

Plan = Annotated[
    str,
    StringConstraints(strict=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"),
    Field(
        description="1 to 64 letters, digits, `_`, `.`, `-`, starting with a letter or digit.",
        examples=["enterprise"],
    ),
]

ExternalId = Annotated[
    str,
    StringConstraints(strict=True, pattern=r"^[^\x00-\x1f\x7f]{1,255}$"),
    Field(
        description=(
            "Your own id of this organization (a CRM or billing id): 1 to 255 characters, no "
            "control character; unique among organizations (409 `external_id_taken`)."
        ),
        examples=["cus_9s6XKzkNRiz8i3"],
    ),
]


def _integral(value: object) -> object:
    """JSON Schema's `integer` takes 477.0 too (the same number): an integral float is that
    integer; any other non-integer stays a 422 (strict: never a string or a boolean)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


MaxMembers = Annotated[
    int,
    Field(
        strict=True,
        ge=1,
        le=100_000,
        description=(
            "Seats (members plus pending invitations); null for the deployment's "
            "MAX_MEMBERS_PER_ORG. Lowering it below today's count removes no one: it only "
            "stops new invitations until the count is below it."
        ),
    ),
    BeforeValidator(_integral),
]


def search_key(text: str) -> str:
    """What `GET /orgs?q=` compares: NFKC, then casefolded (slugs are already)."""
    return unicodedata.normalize("NFKC", text).casefold()


def prefix_range(prefix: str) -> dict[str, str]:
    """The query range of every string that starts with `prefix` (strings compare by code
    point here, as by UTF-8 bytes in MongoDB; U+10FFFF is the greatest code point)."""
    return {"$gte": prefix, "$lt": prefix + "\U0010ffff"}
