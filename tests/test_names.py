"""The slug rules of the contract, in one module."""

from __future__ import annotations

import pytest

from app.names import (
    InvalidName,
    assert_safe_collection,
    collection_for,
    max_slug_bytes,
    slugify,
    validate_name,
)


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Acme Corp", "acme_corp"),
        ("acme-corp", "acme_corp"),
        (" ACME  corp ", "acme_corp"),
        ("Straße", "strasse"),  # casefold
        ("\uff46\uff55\uff4c\uff4c", "full"),  # NFKC folds fullwidth letters
        ("Café Ünïcode", "café_ünïcode"),
        ("東京 Tokyo", "東京_tokyo"),
        ("a$b.c\x00d", "a_b_c_d"),
        ("system.users", "system_users"),
        ("__x__", "x"),
    ],
)
def test_slugify(name: str, slug: str) -> None:
    assert slugify(name) == slug


def test_equivalent_spellings_share_a_collection() -> None:
    names = ["Acme Corp", "acme-corp", " ACME  corp "]
    assert {collection_for(validate_name(n, db_name="org_service")) for n in names} == {
        "org_acme_corp"
    }


@pytest.mark.parametrize("name", ["", "   ", "!!!", "-_-", "$.$", "\x00", "x" * 400])
def test_unusable_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidName):
        validate_name(name, db_name="org_service")


def test_namespace_limit_counts_utf8_bytes() -> None:
    limit = max_slug_bytes("org_service")
    assert limit == 255 - len("org_service.") - len("org_")
    validate_name("a" * 200, db_name="org_service")
    validate_name("é" * (limit // 2), db_name="org_service")  # 238 bytes: fits
    with pytest.raises(InvalidName, match="namespace"):
        validate_name("é" * (limit // 2 + 1), db_name="org_service")  # 240 bytes: does not


@pytest.mark.parametrize("bad", ["org_a.b", "org_$x", "org_\x00", "system.x", "tenant", "org_A"])
def test_unsafe_collection_names_never_reach_ddl(bad: str) -> None:
    with pytest.raises(InvalidName):
        assert_safe_collection(bad)
