"""Unicode organization names: invisible characters and bidi controls (over the in-memory
double), and non-ASCII tenant collections on the embedded store (nx-27017, through the
launcher's patch in app/nxserver.py)."""

from __future__ import annotations

import httpx

from tests.helpers import bearer, create_and_login, org_body


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
