"""Unicode organization names: invisible characters and bidi controls (over the in-memory
double), and non-ASCII tenant collections on the embedded store (nx-27017, through the
launcher's patch in app/kit/nxserver.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure

from app.kit.nxserver import patch
from app.kit.settings import Settings
from tests.support.clients import bearer, create_and_login, org_body
from tests.support.consistency import assert_consistent

Pair = tuple[httpx.AsyncClient, FastAPI]


async def test_an_invisible_joiner_does_not_make_a_new_organization(
    api: httpx.AsyncClient,
) -> None:
    await create_and_login(api, "Acme Corp", "a@acme.com")
    res = await api.post("/org/create", json=org_body("Ac\u200dme Corp", "b@acme.com"))
    assert res.status_code == 409, res.text
    assert res.json()["code"] == "organization_exists"


async def test_a_bidi_override_is_a_422(api: httpx.AsyncClient) -> None:
    res = await api.post("/org/create", json=org_body("\u202eAcme", "a@acme.com"))
    assert res.status_code == 422, res.text
    body = res.json()
    assert body["code"] == "validation_error"
    assert "bidirectional" in body["detail"][0]["msg"]
    assert "U+202E" in body["detail"][0]["msg"]


async def test_get_by_a_name_with_a_zero_width_space_finds_the_organization(
    api: httpx.AsyncClient,
) -> None:
    org, token = await create_and_login(api, "Acme Corp", "a@acme.com")
    res = await api.get(
        "/org/get", params={"organization_name": "Ac\u200bme Corp"}, headers=bearer(token)
    )
    assert res.status_code == 200, res.text
    assert res.json()["organization_id"] == org["organization_id"]


async def test_an_emoji_sequence_keeps_its_joiner_in_the_name(api: httpx.AsyncClient) -> None:
    name = "Coders \U0001f469\u200d\U0001f4bb Club"
    res = await api.post("/org/create", json=org_body(name, "c@x.com"))
    assert res.status_code == 201, res.text
    assert res.json()["organization_name"] == name
    assert res.json()["slug"] == "coders_club"


# ---------------------------------------------------------------- the embedded store (nx-27017)


async def tenant_collections(client: AsyncMongoClient[Any], db: str) -> set[str]:
    return {n for n in await client[db].list_collection_names() if n.startswith("org_")}


async def test_a_unicode_organization_lives_its_whole_life_on_the_embedded_store(
    real_api: Pair, nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    http, app = real_api
    assert app.state.svc.orgs.names.ascii_only is False  # the start-up probe sees the patch
    org, token = await create_and_login(http, "Société Générale", "sg@x.com")
    assert org["slug"] == "société_générale"
    assert org["collection_name"] == "org_société_générale"
    db = nx_client[settings.mongodb_db]
    assert await tenant_collections(nx_client, settings.mongodb_db) == {"org_société_générale"}

    tenant = db["org_société_générale"]
    await tenant.insert_many([{"i": i, "kind": "user"} for i in range(100)])
    await tenant.create_index("i", unique=True)
    res = await http.put(
        "/org/update", json={"organization_name": "Ünïcödé Ltd"}, headers=bearer(token)
    )
    assert res.status_code == 200, res.text
    assert res.json()["collection_name"] == "org_ünïcödé_ltd"
    assert await tenant_collections(nx_client, settings.mongodb_db) == {"org_ünïcödé_ltd"}
    moved = db["org_ünïcödé_ltd"]
    assert sorted([d["i"] async for d in moved.find({}, {"i": 1})]) == list(range(100))
    info = await moved.index_information()
    assert any(v["key"] == [("i", 1)] and v.get("unique") for v in info.values()), info
    # (find, not count_documents: nx-27017 makes a missing collection when it counts it)
    assert await db["org_société_générale"].find_one() is None

    for name, status in (("ÜNÏCÖDÉ ltd", 200), ("Ünïcödé Ltd", 200), ("Société Générale", 404)):
        res = await http.get("/org/get", params={"organization_name": name}, headers=bearer(token))
        assert res.status_code == status, (name, res.text)
    await assert_consistent(db)

    res = await http.delete(
        "/org/delete", params={"organization_name": "Ünïcödé Ltd"}, headers=bearer(token)
    )
    assert res.status_code == 204, res.text
    assert await tenant_collections(nx_client, settings.mongodb_db) == set()
    assert await assert_consistent(db) == []


async def test_the_launcher_lets_pymongo_use_non_ascii_collection_names(
    nx_client: AsyncMongoClient[Any],
) -> None:
    """create, insert/find, create_index, rename to and from a non-ASCII name, drop, list."""
    db = nx_client["anydb"]
    await db.create_collection("org_société")
    await db["org_société"].insert_many([{"i": i} for i in range(20)])
    await db["org_société"].create_index("i", unique=True)
    assert await db["org_société"].count_documents({"i": {"$gte": 10}}) == 10

    await db["org_société"].rename("org_plain")  # from a non-ASCII name
    await db["org_plain"].rename("org_ñandú")  # to one
    await db["org_ñandú"].rename("org_東京")  # between two
    assert set(await db.list_collection_names()) == {"org_東京"}
    moved = db["org_東京"]
    assert await moved.count_documents({}) == 20
    info = await moved.index_information()
    assert any(v["key"] == [("i", 1)] and v.get("unique") for v in info.values()), info
    for old in ("org_société", "org_plain", "org_ñandú"):
        assert await db[old].find_one() is None, old

    await db.drop_collection("org_東京")
    assert await db.list_collection_names() == []


async def test_sqlite_folds_only_ascii_case_in_collection_names(
    nx_client: AsyncMongoClient[Any],
) -> None:
    """`org_é` and `org_É` are two collections, as in MongoDB. (`org_x` and `ORG_X` would be one
    SQLite table; slugs are casefolded, so the service never makes both spellings.)"""
    db = nx_client["anydb"]
    await db["org_é"].insert_one({"who": "lower"})
    await db["org_É"].insert_one({"who": "upper"})
    assert [d["who"] async for d in db["org_é"].find()] == ["lower"]
    assert [d["who"] async for d in db["org_É"].find()] == ["upper"]
    assert set(await db.list_collection_names()) == {"org_é", "org_É"}


@pytest.mark.parametrize(
    "bad", ['org_é"x', "org_é x", "org_é-x", "org_é;x", "org_é\u200bx", "org_é\u00a0x", "1é"]
)
async def test_the_launcher_still_refuses_what_is_not_one_identifier(
    nx_client: AsyncMongoClient[Any], bad: str
) -> None:
    with pytest.raises(OperationFailure, match="Invalid identifier"):
        await nx_client["anydb"].create_collection(bad)


def test_the_unicode_patch_is_idempotent_and_reaches_every_reference() -> None:
    """In this process: the check that every table, index and trigger name passes."""
    from neosqlite import sql_utils
    from neosqlite.collection import index_manager

    patch()
    first = sql_utils.quote_identifier
    patch()
    assert sql_utils.quote_identifier is first
    assert index_manager.quote_identifier is first
    assert sql_utils.quote_table_name("org_société") == "org_société"
    assert sql_utils.quote_identifier("idx_org_société_i") == "idx_org_société_i"
    assert sql_utils.quote_table_name("org_plain") == "org_plain"
    for bad in ("org_é x", "org_é'x", "1é", "org_a.b", ""):
        with pytest.raises(ValueError):
            sql_utils.quote_table_name(bad)
