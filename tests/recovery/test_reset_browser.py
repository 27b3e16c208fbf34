"""The reset page in a real browser (Debian's headless Chromium through Selenium, as
`tests/pages/test_accept_browser.py`) against a real service process on nx-27017: the mailed
link, a wrong confirmation, the success, a login with the new password, and the link again."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from app.kit.db import EmbeddedMongo
from app.pages.reset import INVALID
from tests.pages.test_accept_browser import CHROMEDRIVER, CHROMIUM, WAIT, alert, heading, submit
from tests.recovery.support import reset_link, token_of, wait_for_mail
from tests.support.clients import PASSWORD, bearer, create_and_login
from tests.support.processes import ServiceProcess, procs_service_env

OWNER = "owner@acme.example"
NEW_PASSWORD = "a brand new password"


@pytest.fixture
def chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[webdriver.Chrome]:
    """Headless Chromium, quit whatever happens."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    assert not missing, f"{missing}: apt-get install chromium chromium-driver (as .ci/run does)"
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not download anything
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--disable-dev-shm-usage", "--window-size=800,720"):
        options.add_argument(argument)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")
    service = Service(
        executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log")
    )
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_page_load_timeout(WAIT)
        yield driver
    finally:
        driver.quit()


@pytest.mark.timeout(180)
async def test_reset_a_password_in_a_browser(
    nx_server: EmbeddedMongo,
    nx_client: AsyncMongoClient[Any],
    logs_dir: Path,
    tmp_path: Path,
    chromium: webdriver.Chrome,
) -> None:
    mail_dir = tmp_path / "mail"
    svc = ServiceProcess(procs_service_env(nx_server), log_path=logs_dir / "service.log")
    svc.env.update(MAIL_BACKEND="file", MAIL_FILE_DIR=str(mail_dir), PUBLIC_BASE_URL=svc.url)
    try:
        await svc.start()
        async with httpx.AsyncClient(base_url=svc.url, timeout=WAIT) as http:
            _, old_access = await create_and_login(http, "Acme", OWNER)
            res = await http.post("/admin/password/forgot", json={"email": OWNER})
            assert res.status_code == 202
            link = reset_link(await wait_for_mail(mail_dir, OWNER))
            assert link.startswith(svc.url + "/password/reset?token=")
            token = token_of(link)

            chromium.get(link)
            assert heading(chromium) == "Reset your password"
            body = " ".join(chromium.find_element(By.TAG_NAME, "body").text.split())
            assert f"Choose a new password for {OWNER} at Acme." in body
            assert token not in body
            assert chromium.find_elements(By.CSS_SELECTOR, "[role=alert]") == []

            # A confirmation that differs: said in words; nothing changes.
            submit(chromium, NEW_PASSWORD, NEW_PASSWORD + "!")
            assert "The two passwords do not match." in alert(chromium)
            login = {"email": OWNER, "password": PASSWORD}
            assert (await http.post("/admin/login", json=login)).status_code == 200

            # The password twice: the success page.
            chromium.get(link)
            submit(chromium, NEW_PASSWORD, NEW_PASSWORD)
            assert heading(chromium) == "Password changed"
            result = " ".join(chromium.find_element(By.TAG_NAME, "main").text.split())
            assert "Your password was changed." in result
            assert chromium.save_screenshot(str(tmp_path / "reset-result.png"))

            # Logged in with the new password only; the token from before is dead.
            assert (await http.post("/admin/login", json=login)).status_code == 401
            new = await http.post("/admin/login", json={**login, "password": NEW_PASSWORD})
            assert new.status_code == 200, new.text
            assert (await http.get("/admin/sessions", headers=bearer(old_access))).status_code == (
                401
            )

            # The same link again: why it does not work, no form.
            chromium.get(link)
            assert alert(chromium) == INVALID
            assert chromium.find_elements(By.TAG_NAME, "form") == []
    finally:
        svc.stop()
    log = (logs_dir / "service.log").read_text()
    assert "/password/reset" in log  # the access log was written...
    assert token.partition(".")[2] not in log  # ...and never with the token
