"""The reset mail end to end with real components: a service process sends it through a real
SMTP server (aiosmtpd on loopback, STARTTLS and AUTH); the link read from the received message
resets the password through the API; a second process then refuses the member's access and
refresh tokens from before, and the same link again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trustme
from pymongo import AsyncMongoClient

from app.kit.db import EmbeddedMongo
from tests.mail.support import SMTP_PASSWORD, SMTP_USER, SmtpServer, server_tls, wait_until
from tests.recovery.support import reset_link, token_of
from tests.support.clients import PASSWORD, bearer, org_body
from tests.support.processes import ServiceProcess, procs_service_env

OWNER = "owner@acme.example.com"
NEW_PASSWORD = "a brand new password"


@pytest.fixture
def smtp() -> Iterator[tuple[SmtpServer, trustme.CA]]:
    ca = trustme.CA()
    server = SmtpServer(server_tls(ca))
    server.start()
    try:
        yield server, ca
    finally:
        server.stop()


@pytest.fixture
def mail_env(smtp: tuple[SmtpServer, trustme.CA], tmp_path: Path) -> dict[str, str]:
    server, ca = smtp
    ca_file = tmp_path / "relay-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return {
        "MAIL_BACKEND": "smtp",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(server.port),
        "SMTP_USERNAME": SMTP_USER,
        "SMTP_PASSWORD": SMTP_PASSWORD,
        "SMTP_STARTTLS": "true",
        "SMTP_CA_FILE": str(ca_file),
        "MAIL_FROM": "Acme accounts <accounts@acme.example.com>",
        "MAIL_POLL_SECONDS": "0.5",
        "PUBLIC_BASE_URL": "https://app.acme.example.com",
    }


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


@pytest.mark.timeout(120)
async def test_the_reset_mail_arrives_and_its_link_resets_the_password(
    nx_server: EmbeddedMongo,
    nx_client: AsyncMongoClient[Any],
    smtp: tuple[SmtpServer, trustme.CA],
    mail_env: dict[str, str],
    logs_dir: Path,
    http: httpx.AsyncClient,
) -> None:
    server, _ = smtp
    one = ServiceProcess(procs_service_env(nx_server, **mail_env), log_path=logs_dir / "one.log")
    two = ServiceProcess(procs_service_env(nx_server, **mail_env), log_path=logs_dir / "two.log")
    try:
        await one.start()
        await two.start()
        res = await http.post(one.url + "/org/create", json=org_body("Société Acme", OWNER))
        assert res.status_code == 201, res.text
        login = await http.post(
            one.url + "/admin/login", json={"email": OWNER, "password": PASSWORD}
        )
        assert login.status_code == 200
        old_access, old_refresh = login.json()["access_token"], login.json()["refresh_token"]

        res = await http.post(one.url + "/admin/password/forgot", json={"email": OWNER})
        assert res.status_code == 202 and res.json() == {"status": "accepted"}

        async def arrived() -> bool:
            return len(server.received) == 1

        took = await wait_until(arrived, timeout=10)
        print(f"reset mail received {took:.2f} s after the 202")
        [received] = server.received
        message = received.message
        assert received.rcpt_tos == [OWNER]
        assert "Société Acme" in str(message["Subject"])
        link = reset_link(message)
        parts = urlsplit(link)
        assert (parts.scheme, parts.netloc, parts.path) == (
            "https", "app.acme.example.com", "/password/reset"
        )  # fmt: skip
        token = token_of(link)
        html = message.get_body(preferencelist=("html",))
        assert html is not None and token in html.get_content()

        res = await http.post(
            one.url + "/admin/password/reset", json={"token": token, "password": NEW_PASSWORD}
        )
        assert res.status_code == 204, res.text

        # On the other process: the old password is refused, the new one works, and every
        # token from before is dead.
        old = await http.post(two.url + "/admin/login", json={"email": OWNER, "password": PASSWORD})
        assert old.status_code == 401
        new = await http.post(
            two.url + "/admin/login", json={"email": OWNER, "password": NEW_PASSWORD}
        )
        assert new.status_code == 200
        sessions = await http.get(two.url + "/admin/sessions", headers=bearer(old_access))
        assert sessions.status_code == 401
        refreshed = await http.post(two.url + "/admin/refresh", json={"refresh_token": old_refresh})
        assert refreshed.status_code == 401
        assert refreshed.json()["code"] == "invalid_refresh_token"
        fresh = await http.get(
            two.url + "/admin/sessions", headers=bearer(new.json()["access_token"])
        )
        assert fresh.status_code == 200
        assert [s["current"] for s in fresh.json()["items"]] == [True]  # the old one ended

        again = await http.post(
            two.url + "/admin/password/reset", json={"token": token, "password": PASSWORD}
        )
        assert again.status_code == 410 and again.json()["code"] == "reset_token_invalid"
        # Neither log holds the token or the relay's password.
        for svc in (one, two):
            log = svc.log_path.read_text()
            assert token.split(".")[1] not in log and SMTP_PASSWORD not in log
    finally:
        one.stop()
        two.stop()
