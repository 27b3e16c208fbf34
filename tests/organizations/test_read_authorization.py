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
            # Every bad name is the schema's 422, slug rules included (one name type): before
            # the restructure a name the slug rules refused was a 403 here, and a 422 of
            # another shape for a key that had the scope.
            ("!!!", lister, 422, "validation_error"),
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


BAD_NAMES = [
    ("!!!", "at least one letter or digit"),  # slug rules (the service checked these before)
    ("   ", "must not be blank"),
    ("a\u202eb", "bidirectional control"),
    ("\u00e9" * 200, "too long for a MongoDB namespace"),  # 400 UTF-8 bytes of slug
    ("x" * 201, "at most 200 characters"),  # the schema's own length limit
]


async def test_every_bad_name_is_the_same_422_in_a_body_and_in_a_query() -> None:
    """One name type runs the slug rules inside pydantic: whichever rule a name breaks, the
    answer is the schema's 422, with `loc` naming where the name was and `msg` saying why."""
    async with custom_app() as (http, _):
        _, token = await create_and_login(http, "Acme", "a@acme.com")
        for name, why in BAD_NAMES:
            body = {"organization_name": name, "email": "n@x.com", "password": "long-enough-1"}
            answers = {
                ("body", "organization_name"): await http.post("/org/create", json=body),
                ("body", "organization_name", "put"): await http.put(
                    "/org/update", json={"organization_name": name}, headers=bearer(token)
                ),
                ("query", "organization_name"): await get(http, name, bearer(token)),
                ("query", "organization_name", "delete"): await http.delete(
                    "/org/delete", params={"organization_name": name}, headers=bearer(token)
                ),
            }
            for where, res in answers.items():
                assert res.status_code == 422, (name, where, res.text)
                assert res.json()["code"] == "validation_error"
                [error] = res.json()["detail"]
                assert tuple(error["loc"]) == where[:2], (name, where, error)
                assert why in error["msg"], (name, error)
                assert set(error) == {"type", "loc", "msg"}, error  # the input is never echoed
