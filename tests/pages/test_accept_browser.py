"""The accept page in a real browser (Debian's headless Chromium through Selenium) against a real
service process on nx-27017: the invitation mail's link, a wrong confirmation, the success, the
member's first login, and the same link again.

Selenium Manager is never asked for anything (it would download a driver): the driver and the
browser are Debian's `chromium-driver` and `chromium` (`.ci/run` installs them).
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from pymongo import AsyncMongoClient
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from app.kit.db import EmbeddedMongo
from app.pages.invitations import INVALID
from tests.support.clients import PASSWORD, bearer, create_and_login
from tests.support.processes import PROCS_DB, ROOT, ServiceProcess, procs_service_env
from tests.support.teams import invite

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
DOCS_SCREENSHOT = ROOT / "docs" / "accept-page.png"
NEWCOMER = "new.member@acme.example"
WAIT = 15.0  # seconds for any one page or mail
WINDOW = (800, 720)
FITS = "return document.documentElement.scrollWidth <= document.documentElement.clientWidth"


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[webdriver.Chrome]:
    """Headless Chromium, quit whatever happens."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    assert not missing, f"{missing}: apt-get install chromium chromium-driver (as .ci/run does)"
    # Were Selenium Manager reached anyway, it must not download anything.
    monkeypatch.setenv("SE_OFFLINE", "true")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--disable-dev-shm-usage",
        "--window-size={},{}".format(*WINDOW),
    ):
        options.add_argument(argument)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to run as root with it
    service = Service(
        executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log")
    )
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_page_load_timeout(WAIT)
        driver.set_script_timeout(WAIT)
        yield driver
    finally:
        driver.quit()


def wait_for_mail(folder: Path, timeout: float = WAIT) -> EmailMessage:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(folder.glob("*.eml")) if folder.is_dir() else []
        if found:
            message = email.message_from_bytes(found[0].read_bytes(), policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            return message
        time.sleep(0.1)
    raise AssertionError(f"no mail in {folder} after {timeout} s")


def accept_link(message: EmailMessage, base_url: str) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None and isinstance(part, EmailMessage)
    found = re.search(r"(\S+/invitations/accept\?token=\S+)", part.get_content())
    assert found is not None, part.get_content()
    link = found.group(1)
    assert link.startswith(base_url + "/invitations/accept?token="), link
    return link


def submit(driver: webdriver.Chrome, password: str, confirm: str) -> None:
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "password_confirm").send_keys(confirm)
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(driver, WAIT).until(expected_conditions.staleness_of(old))


def heading(driver: webdriver.Chrome) -> str:
    return driver.find_element(By.TAG_NAME, "h1").text


def alert(driver: webdriver.Chrome) -> str:
    """The text of the page's role="alert" box (there must be one)."""
    found = driver.find_elements(By.CSS_SELECTOR, "[role=alert]")
    assert found, "no alert on the page: " + driver.find_element(By.TAG_NAME, "main").text
    return found[0].text


@pytest.mark.timeout(180)
async def test_accept_an_invitation_in_a_browser(
    nx_server: EmbeddedMongo,
    nx_client: AsyncMongoClient[dict[str, object]],
    logs_dir: Path,
    tmp_path: Path,
    browser: webdriver.Chrome,
) -> None:
    mail_dir = tmp_path / "mail"
    svc = ServiceProcess(procs_service_env(nx_server), log_path=logs_dir / "service.log")
    svc.env.update(MAIL_BACKEND="file", MAIL_FILE_DIR=str(mail_dir), PUBLIC_BASE_URL=svc.url)
    try:
        await svc.start()
        async with httpx.AsyncClient(base_url=svc.url, timeout=WAIT) as http:
            _, owner = await create_and_login(http, "Acme", "owner@acme.example")
            res = await invite(http, owner, NEWCOMER)
            assert res.status_code == 201, res.text
            link = accept_link(wait_for_mail(mail_dir), svc.url)
            token = link.partition("?token=")[2]

            # The link: the form, styled by the service's own stylesheet under the page's CSP.
            browser.get(link)
            assert heading(browser) == "Accept the invitation"
            body = browser.find_element(By.TAG_NAME, "body").text
            assert f"You are invited to join Acme as member. Choose a password for {NEWCOMER}" in (
                " ".join(body.split())
            )
            assert token not in body
            main = browser.find_element(By.TAG_NAME, "main")
            assert main.value_of_css_property("max-width") == "480px"  # pages.css was applied
            assert browser.find_elements(By.CSS_SELECTOR, "[role=alert]") == []
            # A phone's width: nothing wider than the screen.
            browser.set_window_size(375, 740)
            assert browser.execute_script(FITS)
            assert browser.find_element(By.ID, "password").size["width"] <= 375
            assert browser.save_screenshot(str(tmp_path / "accept-phone.png"))
            browser.set_window_size(*WINDOW)

            # A confirmation that differs: 422, said in words; nothing is made.
            submit(browser, PASSWORD, PASSWORD + "!")
            assert "The two passwords do not match." in alert(browser)
            login = {"email": NEWCOMER, "password": PASSWORD}
            assert (await http.post("/admin/login", json=login)).status_code == 401
            assert await nx_client[PROCS_DB].admins.count_documents({"email": NEWCOMER}) == 0

            # The link again, the password twice: the success page.
            browser.get(link)
            browser.find_element(By.ID, "password").send_keys(PASSWORD)
            browser.find_element(By.ID, "password_confirm").send_keys(PASSWORD)
            form_png = tmp_path / "accept-form.png"
            assert browser.save_screenshot(str(form_png))
            old = browser.find_element(By.TAG_NAME, "html")
            browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            WebDriverWait(browser, WAIT).until(expected_conditions.staleness_of(old))
            assert heading(browser) == "Invitation accepted"
            result = " ".join(browser.find_element(By.TAG_NAME, "main").text.split())
            assert (
                f"You are now a member of Acme as member. You can log in with {NEWCOMER}." in result
            )
            assert browser.save_screenshot(str(tmp_path / "accept-result.png"))
            if not DOCS_SCREENSHOT.is_file() or DOCS_SCREENSHOT.read_bytes() != (
                form_png.read_bytes()
            ):
                DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
                shutil.copyfile(form_png, DOCS_SCREENSHOT)  # shown by the README

            # The new member logs in; the team has two members.
            res = await http.post("/admin/login", json=login)
            assert res.status_code == 200, res.text
            res = await http.get("/org/members", headers=bearer(res.json()["access_token"]))
            assert res.status_code == 200, res.text
            assert sorted(m["email"] for m in res.json()["items"]) == [
                NEWCOMER,
                "owner@acme.example",
            ]

            # The same link again: the invalid-invitation message, no form (410).
            browser.get(link)
            assert alert(browser) == INVALID
            assert browser.find_elements(By.TAG_NAME, "form") == []
            fields = {"token": token, "password": PASSWORD, "password_confirm": PASSWORD}
            again = await http.post("/invitations/accept/form", data=fields)
            assert again.status_code == 410
            assert INVALID in again.text
            assert (await http.get("/invitations/accept", params={"token": token})).status_code == (
                410
            )
    finally:
        svc.stop()
    log = (logs_dir / "service.log").read_text()
    assert "/invitations/accept" in log  # the access log was written...
    assert token.partition(".")[2] not in log  # ...and never with the token
