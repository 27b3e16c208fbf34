"""Organization name -> slug -> collection name: the contract's slug rules in one place.

The slug is the only thing from a request that ever becomes part of a MongoDB namespace, and it
is built from letters, digits and `_` alone, so `$`, `.`, the null character and a `system.`
prefix can never reach a namespace whatever the caller sends.

Invisible characters cannot make look-alike organizations: every Default_Ignorable_Code_Point
(ZWJ, ZWSP, soft hyphen, word joiner, variation selectors, BOM, Hangul fillers ...) is dropped
before slugging, so "Ac<ZWJ>me Corp" is "Acme Corp"; the name itself keeps them (an emoji
sequence or a Persian ZWNJ still displays right). Bidirectional controls, which can make a name
display as another, are refused anywhere in a name.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import regex

COLLECTION_PREFIX = "org_"
MAX_NAME_CHARS = 200
# MongoDB (4.4+) limits a namespace, "<db>.<collection>", to 255 bytes.
MAX_NAMESPACE_BYTES = 255

_SEPARATOR_RUN = re.compile(r"_+")
# Unicode's derived property (DerivedCoreProperties.txt), kept current by the `regex` package;
# Python's unicodedata does not expose it.
_DEFAULT_IGNORABLE = regex.compile(r"\p{Default_Ignorable_Code_Point}+")
# The explicit directional formatting characters (UAX #9): ALM, LRM, RLM, LRE..RLO, LRI..PDI.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


class InvalidName(ValueError):
    """The organization name cannot become a slug or a namespace."""


def slugify(name: str) -> str:
    """Drop invisibles, NFKC-normalise and casefold, collapse non-alphanumeric runs to `_`, trim."""
    # Dropped first, so that "e\u200d\u0301" composes to "é" like "e\u0301" does.
    visible = _DEFAULT_IGNORABLE.sub("", name)
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", visible).casefold())
    chars = [ch if ch.isalnum() else "_" for ch in text]
    return _SEPARATOR_RUN.sub("_", "".join(chars)).strip("_")


def collection_for(slug: str) -> str:
    """The tenant collection of an organization whose slug is `slug`."""
    return COLLECTION_PREFIX + slug


def max_slug_bytes(db_name: str) -> int:
    """The longest slug (in UTF-8 bytes) whose namespace still fits MongoDB's limit."""
    return MAX_NAMESPACE_BYTES - len(db_name.encode()) - 1 - len(COLLECTION_PREFIX)


def validate_name(name: str, *, db_name: str) -> str:
    """Return the slug of `name`, or raise InvalidName with a reason a caller can act on.

    A pure function of its arguments, and every request naming an organization asks it (twice:
    the query's validation, then the lookup), so the slugs of the last names seen are kept
    (`functools.lru_cache`: a failure is never kept, it raises again)."""
    return _validated(name, db_name)


@functools.lru_cache(maxsize=4096)
def _validated(name: str, db_name: str) -> str:
    if not name.strip():
        raise InvalidName("organization_name must not be blank")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidName(f"organization_name must be at most {MAX_NAME_CHARS} characters")
    if "\x00" in name:
        raise InvalidName("organization_name must not contain the null character")
    bidi = next((ch for ch in name if ch in BIDI_CONTROLS), None)
    if bidi is not None:
        raise InvalidName(
            "organization_name must not contain bidirectional control characters "
            f"(found U+{ord(bidi):04X})"
        )
    slug = slugify(name)
    if not slug:
        raise InvalidName("organization_name must contain at least one letter or digit")
    if len(slug.encode()) > max_slug_bytes(db_name):
        raise InvalidName("organization_name is too long for a MongoDB namespace")
    assert_safe_collection(collection_for(slug))
    return slug


def assert_safe_collection(collection: str) -> None:
    """Last line of defence before any DDL: a namespace-breaking collection name is a bug."""
    if (
        not collection.startswith(COLLECTION_PREFIX)
        or "$" in collection
        or "." in collection
        or "\x00" in collection
        or collection.startswith("system.")
        or slugify(collection) != collection
    ):
        raise InvalidName(f"unsafe collection name {collection!r}")


@dataclass(frozen=True, slots=True)
class NameRules:
    """The slug rules of one deployment: the namespace limit of its database, and whether its
    store takes non-ASCII collection names (nx-27017 without the launcher's patch does not:
    found out at start-up, so such names are a clear 422 rather than a failed create)."""

    db_name: str = "org_service"
    ascii_only: bool = False

    def slug(self, name: str) -> str:
        """The slug of `name`, or InvalidName."""
        slug = validate_name(name, db_name=self.db_name)
        if self.ascii_only and not slug.isascii():
            raise InvalidName("this database only supports ASCII organization names")
        return slug


# The rules the name type of the request models checks against (`OrganizationName`): pydantic
# has no way to hand a validator the app's state, so the organization routes put their app's
# rules here for the request (its own task and context), and the CLI for its command.
DEFAULT_RULES = NameRules()  # frozen: safe to share
_rules: ContextVar[NameRules] = ContextVar("name_rules", default=DEFAULT_RULES)


def current_rules() -> NameRules:
    return _rules.get()


def use_rules(rules: NameRules) -> None:
    """Make `rules` the ones of the current context (a request's task)."""
    _rules.set(rules)


@contextmanager
def rules_in_force(rules: NameRules) -> Iterator[None]:
    """`rules` for the duration of a block (a CLI command, a test)."""
    token = _rules.set(rules)
    try:
        yield
    finally:
        _rules.reset(token)
