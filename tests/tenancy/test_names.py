"""The slug rules of the contract, in one module."""

from __future__ import annotations

import pytest

from app.tenancy.names import (
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


# Default-ignorable characters are invisible: a name with them is the same organization.
@pytest.mark.parametrize(
    "invisible",
    [
        "\u200d",  # ZERO WIDTH JOINER
        "\u200c",  # ZERO WIDTH NON-JOINER
        "\u200b",  # ZERO WIDTH SPACE
        "\u00ad",  # SOFT HYPHEN
        "\u2060",  # WORD JOINER
        "\u034f",  # COMBINING GRAPHEME JOINER
        "\ufe0f",  # VARIATION SELECTOR-16
        "\U000e0100",  # VARIATION SELECTOR-17
        "\ufeff",  # ZERO WIDTH NO-BREAK SPACE (BOM)
        "\u3164",  # HANGUL FILLER (a letter to str.isalnum, invisible all the same)
        "\U000e0041",  # TAG LATIN CAPITAL LETTER A
    ],
)
def test_default_ignorables_do_not_change_the_slug(invisible: str) -> None:
    for name in (f"Ac{invisible}me Corp", f"{invisible}Acme Corp", f"Acme {invisible}Corp"):
        assert slugify(name) == "acme_corp", ascii(name)
        assert validate_name(name, db_name="org_service") == "acme_corp"


def test_an_ignorable_does_not_stop_composition() -> None:
    assert slugify("Cafe\u200d\u0301") == slugify("Café") == "café"


def test_a_name_of_ignorables_alone_has_no_slug() -> None:
    with pytest.raises(InvalidName, match="letter or digit"):
        validate_name("\u200b\u3164\u00ad", db_name="org_service")


def test_legitimate_joiners_still_make_a_name() -> None:
    """ZWJ in an emoji sequence or ZWNJ in Persian: the name is fine, only the slug ignores them."""
    assert validate_name("Team \U0001f469\u200d\U0001f4bb Rocks", db_name="org_service") == (
        "team_rocks"
    )
    assert validate_name("\u0645\u06cc\u200c\u062e\u0648\u0627\u0645", db_name="x") == (
        "\u0645\u06cc\u062e\u0648\u0627\u0645"
    )


@pytest.mark.parametrize("name", ["Acme Corp", "Straße", "Café Ünïcode", "東京 Tokyo", "\u3164x"])
def test_slugs_are_fixed_points(name: str) -> None:
    slug = slugify(name)
    assert slugify(slug) == slug
    assert_safe_collection(collection_for(slug))


@pytest.mark.parametrize(
    "control",
    [
        "\u061c",  # ARABIC LETTER MARK
        "\u200e",  # LEFT-TO-RIGHT MARK
        "\u200f",  # RIGHT-TO-LEFT MARK
        "\u202a",  # LEFT-TO-RIGHT EMBEDDING
        "\u202b",  # RIGHT-TO-LEFT EMBEDDING
        "\u202c",  # POP DIRECTIONAL FORMATTING
        "\u202d",  # LEFT-TO-RIGHT OVERRIDE
        "\u202e",  # RIGHT-TO-LEFT OVERRIDE
        "\u2066",  # LEFT-TO-RIGHT ISOLATE
        "\u2067",  # RIGHT-TO-LEFT ISOLATE
        "\u2068",  # FIRST STRONG ISOLATE
        "\u2069",  # POP DIRECTIONAL ISOLATE
    ],
)
def test_bidi_controls_are_refused_anywhere(control: str) -> None:
    for name in (f"{control}Acme", f"Ac{control}me", f"Acme{control}", f"Acme {control} Corp"):
        with pytest.raises(InvalidName, match=f"bidirectional.*U\\+{ord(control):04X}"):
            validate_name(name, db_name="org_service")
