"""The reset page without a browser (in-process app over the real store, mails as files): the
form as a plain urlencoded POST, each outcome's status and words, the page headers, and the
token kept out of the page's text and the log."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from app.pages.reset import INVALID
from app.pages.web import CONTENT_SECURITY_POLICY
from tests.pages.markup import read
from tests.recovery.test_reset_api import OWNER, mailed_token, settings_for
from tests.support.apps import app_client
from tests.support.clients import PASSWORD, create_and_login, org_body

pytestmark = pytest.mark.timeout(60)
PAGE, FORM = "/password/reset", "/password/reset/form"
NEW_PASSWORD = "a brand new password"


@pytest.fixture
async def http(
    db_name: str, tmp_path: Path, nx_client: AsyncMongoClient[Any]
) -> AsyncIterator[httpx.AsyncClient]:
    (tmp_path / "mail").mkdir()
    async with app_client(settings_for(db_name, tmp_path / "mail"), nx_client) as (client, _):
        yield client


async def form(http: httpx.AsyncClient, token: str, password: str, confirm: str) -> Any:
    fields = {"token": token, "password": password, "password_confirm": confirm}
    return await http.post(FORM, data=fields)


async def test_the_page_its_form_and_every_outcome(
    http: httpx.AsyncClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # A name that needs escaping shows as text.
    res = await http.post("/org/create", json=org_body("<b>Acme</b> & Co", OWNER))
    assert res.status_code == 201, res.text
    token = await mailed_token(http, tmp_path / "mail")

    page = await http.get(PAGE, params={"token": token})
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    shown = read(page.text)
    assert f"Choose a new password for {OWNER} at <b>Acme</b> & Co." in shown.text
    assert token not in shown.text and "<b>Acme" not in page.text
    assert shown.all("form") == [{"method": "post", "action": FORM}]
    assert shown.inputs()["token"]["value"] == token

    mismatch = await form(http, token, NEW_PASSWORD, NEW_PASSWORD + "!")
    assert mismatch.status_code == 422
    assert read(mismatch.text).alert == "The two passwords do not match."
    short = await form(http, token, "short", "short")
    assert short.status_code == 422 and "8 to 72 bytes" in (read(short.text).alert or "")

    done = await form(http, token, NEW_PASSWORD, NEW_PASSWORD)
    assert done.status_code == 200, done.text
    assert read(done.text).text.startswith("Password changed")
    login = {"email": OWNER, "password": NEW_PASSWORD}
    assert (await http.post("/admin/login", json=login)).status_code == 200

    for again in (
        await http.get(PAGE, params={"token": token}),
        await form(http, token, PASSWORD, PASSWORD),
        await form(http, token, "short", "short"),  # the link first: the password would not help
    ):
        assert again.status_code == 410
        assert read(again.text).alert == INVALID
        assert read(again.text).all("form") == []
    # The service's log lines (not the test client's own) never hold the token.
    service_lines = [r.getMessage() + str(r.__dict__) for r in caplog.records if r.name != "httpx"]
    assert service_lines and all(token.partition(".")[2] not in line for line in service_lines)


@pytest.mark.parametrize("token", ["", "x", "0" * 24 + "." + "A" * 43])
async def test_a_link_that_is_no_reset_is_410(http: httpx.AsyncClient, token: str) -> None:
    res = await http.get(PAGE, params={"token": token})
    assert res.status_code == 410
    assert read(res.text).alert == INVALID


async def test_an_unreadable_form_is_400(http: httpx.AsyncClient) -> None:
    await create_and_login(http, "Acme", OWNER)
    res = await http.post(FORM, content=b"token=\xff", headers={"content-type": "text/plain"})
    assert res.status_code == 400
    assert "could not be read" in (read(res.text).alert or "")
