"""Who may read which organization through `GET /org/get`, and in which order the answers come
(declared by one dependency: a bad name is a 422 before any 403, a missing caller a 401 first)."""

from __future__ import annotations

import httpx

from tests.support.apps import custom_app, new_key
from tests.support.clients import bearer, create_and_login


async def get(http: httpx.AsyncClient, name: str, headers: dict[str, str]) -> httpx.Response:
    return await http.get("/org/get", params={"organization_name": name}, headers=headers)


async def test_who_reads_what_and_in_which_order() -> None:
    async with custom_app() as (http, app):
        _, token = await create_and_login(http, "Acme", "a@acme.com")
        await create_and_login(http, "Other", "o@other.com")
        reader = {"X-API-Key": await new_key(app, "org:read")}
        lister = {"X-API-Key": await new_key(app, "org:list", name="lister")}
        cases = [
            # (name, headers) -> (status, code)
            ("Acme", bearer(token), 200, None),
            ("Other", bearer(token), 403, "forbidden"),
            ("Nobody", bearer(token), 404, "not_found"),
            ("Other", reader, 200, None),
            ("Nobody", reader, 404, "not_found"),
            ("Other", lister, 403, "insufficient_scope"),
            ("!!!", lister, 403, "insufficient_scope"),  # the scope is checked before slug rules
            ("", lister, 422, "validation_error"),  # a name the schema refuses: 422 first
            ("x" * 201, reader, 422, "validation_error"),
            ("Acme", {}, 401, "not_authenticated"),
            ("", {}, 401, "not_authenticated"),  # no caller at all: 401 before anything
        ]
        for name, headers, status, code in cases:
            res = await get(http, name, headers)
            assert res.status_code == status, (name, headers, res.text)
            if code is not None:
                assert res.json()["code"] == code, (name, res.text)
            else:
                assert res.json()["slug"] == name.lower(), res.text
