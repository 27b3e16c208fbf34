"""The accept page without a browser (the in-process app over the in-memory store): the form
works as a plain urlencoded POST (no JavaScript), every outcome has its status and words, and
the page's headers keep the token in the URL from leaking (no referrer, no cache, no script)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from mongomock_motor import AsyncMongoMockClient

from app.pages.invitations import INVALID
from tests.pages.markup import Page, read
from tests.support.apps import custom_app
from tests.support.clients import PASSWORD, bearer, create_and_login, org_body
from tests.support.teams import invitation_token, invite

pytestmark = pytest.mark.timeout(60)

PAGE = "/invitations/accept"
FORM = "/invitations/accept/form"
NEWCOMER = "new.member@acme.example"
WRONG_CONFIRM = "correct horse battery!"


@dataclass
class World:
    http: httpx.AsyncClient
    app: FastAPI
    db: Any
    org: dict[str, Any]
    owner: str  # the owner's access token

    async def invite(self, email: str = NEWCOMER, role: str = "member") -> str:
        """Invite `email`; the token its mail would carry."""
        res = await invite(self.http, self.owner, email, role)
        assert res.status_code == 201, res.text
        return await invitation_token(self.app, res.json()["invitation_id"])

    async def post(self, token: str, password: str = PASSWORD, confirm: str | None = None) -> Any:
        fields = {"token": token, "password": password, "password_confirm": confirm or password}
        return await self.http.post(FORM, data=fields)

    async def members(self) -> list[str]:
        res = await self.http.get("/org/members", headers=bearer(self.owner))
        assert res.status_code == 200, res.text
        return sorted(m["email"] for m in res.json()["items"])


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    client: Any = AsyncMongoMockClient(tz_aware=True)
    # Mails to files: the console backend's line is the one log line allowed to hold a token.
    mail = {"mail_backend": "file", "mail_file_dir": str(tmp_path / "mail")}
    async with custom_app(client, **mail) as (http, app):
        org, owner = await create_and_login(http, "Acme", "owner@acme.example")
        yield World(http, app, client["sec_test"], org, owner)


def alert(page: Page) -> str:
    """The text of the page's role="alert" box (there must be one)."""
    assert page.alert is not None, page.text
    return page.alert


async def test_the_form_its_headers_and_where_the_token_is(world: World) -> None:
    token = await world.invite()
    res = await world.http.get(PAGE, params={"token": token})
    assert res.status_code == 200
    assert res.headers["content-type"] == "text/html; charset=utf-8"
    # The URL holds the token: no referrer, no cache, no script, only our own stylesheet.
    assert res.headers["referrer-policy"] == "no-referrer"
    assert res.headers["cache-control"] == "no-store"
    csp = {
        part.split()[0]: part.split()[1:]
        for part in res.headers["content-security-policy"].split(";")
    }
    assert csp["default-src"] == ["'none'"] and csp["style-src"] == ["'self'"]
    assert "script-src" not in csp and "unsafe-inline" not in res.headers["content-security-policy"]
    assert csp["form-action"] == ["'self'"] and csp["frame-ancestors"] == ["'none'"]
    assert res.headers["x-frame-options"] == "DENY"  # the edge middleware's, not fought

    page = read(res.text)
    assert page.all("html") == [{"lang": "en"}]
    assert len(page.all("main")) == 1 and len(page.all("h1")) == 1
    assert page.all("script") == [] and not [a for _, a in page.tags if "style" in a]
    assert page.all("link") == [{"rel": "stylesheet", "href": "/static/pages.css"}]
    (form,) = page.all("form")
    assert form == {"method": "post", "action": FORM}
    fields = page.inputs()
    # The token: only in the hidden field, never in the text a person (or a screenshot) sees.
    assert fields["token"] == {"type": "hidden", "name": "token", "value": token}
    assert token not in page.text
    assert [v for v in page.attribute_values() if token in v] == [token]
    labelled = {a["for"] for a in page.all("label")}
    for name in ("password", "password_confirm"):
        field = fields[name]
        assert field["id"] in labelled
        assert field["type"] == "password" and field["autocomplete"] == "new-password"
        # UTF-16 units: 3 can hold 8 bytes (three 3-byte characters); 72 bytes never need more.
        assert (field["minlength"], field["maxlength"]) == ("3", "72")
        assert "required" in field
    assert "You are invited to join Acme as member" in page.text
    assert NEWCOMER in page.text


async def test_the_form_without_javascript_makes_the_member(world: World) -> None:
    token = await world.invite()
    res = await world.post(token)
    assert res.status_code == 200, res.text
    assert res.headers["content-security-policy"]
    page = read(res.text)
    assert f"You are now a member of Acme as member. You can log in with {NEWCOMER}." in page.text
    assert token not in res.text  # the success page holds no form, so no token at all
    # Joined without a session: the page hands out no tokens, so it opens none.
    assert await world.db.sessions.count_documents({}) == 1  # the owner's own login
    login = await world.http.post("/admin/login", json={"email": NEWCOMER, "password": PASSWORD})
    assert login.status_code == 200, login.text
    assert await world.members() == [NEWCOMER, "owner@acme.example"]


async def test_a_used_link_is_410_on_the_page_and_in_the_form(world: World) -> None:
    token = await world.invite()
    assert (await world.post(token)).status_code == 200
    for res in (await world.http.get(PAGE, params={"token": token}), await world.post(token)):
        assert res.status_code == 410
        page = read(res.text)
        assert INVALID in alert(page)
        assert page.all("form") == [] and token not in res.text
    assert await world.members() == [NEWCOMER, "owner@acme.example"]


async def test_password_rules_and_a_different_confirmation_are_422_and_make_nothing(
    world: World,
) -> None:
    token = await world.invite()
    cases = [
        ("short", "short", "Password must be 8 to 72 bytes of UTF-8 (got 5)."),
        ("é" * 37, "é" * 37, "Password must be 8 to 72 bytes of UTF-8 (got 74)."),
        ("with a \x00 in it", "with a \x00 in it", "must not contain the null character"),
        (PASSWORD, WRONG_CONFIRM, "The two passwords do not match."),
    ]
    for password, confirm, message in cases:
        res = await world.post(token, password, confirm)
        assert res.status_code == 422, (password, res.text)
        page = read(res.text)
        assert message in alert(page)
        # The form again, with the same token, so the invitee can simply try again.
        assert page.inputs()["token"]["value"] == token
        assert password not in res.text and confirm not in res.text  # never echoed
    assert await world.members() == ["owner@acme.example"]
    assert await world.db.admins.count_documents({"email": NEWCOMER}) == 0
    # Nothing was spent: the link still works.
    assert (await world.post(token)).status_code == 200


async def test_missing_malformed_unknown_and_revoked_links_are_410(world: World) -> None:
    token = await world.invite()
    invitation_id = token.partition(".")[0]
    unknown = "0" * 24 + "." + token.partition(".")[2]
    forged = invitation_id + "." + "A" * 43  # a live invitation's id, not its secret
    markup = '"><script>alert(1)</script>'
    assert (await world.http.get(PAGE)).status_code == 410  # no token at all
    for bad in ("", "abc", unknown, forged, markup, token + "x"):
        res = await world.http.get(PAGE, params={"token": bad})
        assert res.status_code == 410, bad
        assert INVALID in alert(read(res.text))
        assert "<script>" not in res.text  # nothing of the query comes back
        res = await world.post(bad)
        assert res.status_code == 410, bad
        assert INVALID in read(res.text).text
    res = await world.http.delete(f"/org/invitations/{invitation_id}", headers=bearer(world.owner))
    assert res.status_code == 204
    assert (await world.http.get(PAGE, params={"token": token})).status_code == 410
    assert (await world.post(token)).status_code == 410
    assert await world.members() == ["owner@acme.example"]


async def test_email_taken_and_seat_limit_are_409(world: World) -> None:
    token = await world.invite()
    # The address became an organization's admin after it was invited here.
    res = await world.http.post("/org/create", json=org_body("Other", NEWCOMER))
    assert res.status_code == 201, res.text
    res = await world.post(token)
    assert res.status_code == 409
    assert "already belongs to an account" in alert(read(res.text))

    second = await world.invite("second@acme.example")
    org_id = world.org["organization_id"]
    await world.db.organizations.update_one({"_id": org_id}, {"$set": {"max_members": 1}})
    res = await world.post(second)
    assert res.status_code == 409
    assert "no free seat" in alert(read(res.text))
    assert await world.members() == ["owner@acme.example"]


async def test_a_body_that_is_not_a_form_is_400(world: World) -> None:
    token = await world.invite()
    as_json = await world.http.post(FORM, json={"token": token, "password": PASSWORD})
    bad_utf8 = await world.http.post(
        FORM,
        content=b"token=x&password=%FF%FE&password_confirm=%FF%FE",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    many = await world.http.post(FORM, data={f"f{i}": "x" for i in range(50)})
    for res in (as_json, bad_utf8, many):
        assert res.status_code == 400, res.text
        assert "could not be read" in alert(read(res.text))
    assert await world.members() == ["owner@acme.example"]


async def test_the_stylesheet_and_the_pages_in_the_openapi_schema(world: World) -> None:
    css = await world.http.get("/static/pages.css")
    assert css.status_code == 200
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    assert ":focus-visible" in css.text
    paths = world.app.openapi()["paths"]
    assert "/static/pages.css" not in paths and FORM not in paths
    # The link's page is documented (an HTML answer, the contract names its path); its form's
    # route and the stylesheet are the page's own, not the API's.
    assert sorted(paths[PAGE]) == ["get", "post"]
    assert set(paths[PAGE]["get"]["responses"]["410"]["content"]) == {"text/html"}


async def test_the_token_is_in_no_log_line(world: World, caplog: pytest.LogCaptureFixture) -> None:
    token = await world.invite()
    with caplog.at_level(logging.DEBUG):
        await world.http.get(PAGE, params={"token": token})
        await world.post(token, PASSWORD, WRONG_CONFIRM)
        assert (await world.post(token)).status_code == 200
        await world.post(token)  # used: 410
    # The service's lines (httpx's own lines are the test client's, which knows the URL).
    records = [r for r in caplog.records if r.name.startswith("orgsvc")]
    assert len([r for r in records if r.name == "orgsvc.access"]) == 4, "no access log?"
    for record in records:
        line = record.getMessage() + " " + repr(record.__dict__)
        assert token not in line and token.partition(".")[2] not in line


async def test_what_the_store_holds_is_escaped(world: World) -> None:
    name = 'Evil <script>alert(1)</script> & "Co"'  # a valid organization name
    res = await world.http.post("/org/create", json=org_body(name, "owner@evil.example"))
    assert res.status_code == 201, res.text
    login = {"email": "owner@evil.example", "password": PASSWORD}
    owner = (await world.http.post("/admin/login", json=login)).json()["access_token"]
    res = await invite(world.http, owner, NEWCOMER)
    token = await invitation_token(world.app, res.json()["invitation_id"])
    form = await world.http.get(PAGE, params={"token": token})
    done = await world.post(token)
    assert (form.status_code, done.status_code) == (200, 200)
    for res in (form, done):
        assert "<script>" not in res.text and "&lt;script&gt;" in res.text
        assert name in read(res.text).text  # as the person reads it
