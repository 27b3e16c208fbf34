"""The invitation mail, end to end with real components: a service process sending through a
real SMTP server (aiosmtpd on loopback, STARTTLS and AUTH), the link read from the received
message and accepted through; and a kill -9 between storing the invitation and sending its
mail, after which a restarted service sends it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import trustme
from pymongo import AsyncMongoClient

from app.kit.db import EmbeddedMongo
from tests.mail.support import SMTP_PASSWORD, SMTP_USER, SmtpServer, server_tls, wait_until
from tests.support.clients import PASSWORD, bearer, org_body
from tests.support.consistency import assert_consistent
from tests.support.processes import PROCS_DB, ServiceProcess, procs_service_env

LINK = re.compile(r"(https?://\S+/invitations/accept\?token=\S+)")


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
        "MAIL_RETRY_BASE_SECONDS": "0.2",
    }


def service(nx: EmbeddedMongo, logs: Path, name: str, env: dict[str, str]) -> ServiceProcess:
    svc = ServiceProcess(procs_service_env(nx, **env), log_path=logs / f"{name}.log")
    svc.env["PUBLIC_BASE_URL"] = "https://app.acme.example.com"
    return svc


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def owner_token(http: httpx.AsyncClient, url: str, name: str, email: str) -> str:
    assert (await http.post(url + "/org/create", json=org_body(name, email))).status_code == 201
    login = await http.post(url + "/admin/login", json={"email": email, "password": PASSWORD})
    token: str = login.json()["access_token"]
    return token


def token_in(message: EmailMessage) -> str:
    """The accept link's token, read from the plain-text part as a person would click it."""
    text = message.get_body(preferencelist=("plain",))
    assert text is not None
    match = LINK.search(text.get_content())
    assert match is not None, text.get_content()
    link = urlsplit(match.group(1))
    assert (link.scheme, link.netloc, link.path) == (
        "https", "app.acme.example.com", "/invitations/accept"
    )  # fmt: skip
    return parse_qs(link.query)["token"][0]


async def test_the_invitation_mail_arrives_and_its_link_makes_a_member(
    nx_server: EmbeddedMongo,
    nx_client: AsyncMongoClient[Any],
    smtp: tuple[SmtpServer, trustme.CA],
    mail_env: dict[str, str],
    logs_dir: Path,
    http: httpx.AsyncClient,
) -> None:
    server, _ = smtp
    svc = service(nx_server, logs_dir, "svc", mail_env)
    await svc.start()
    try:
        owner = await owner_token(http, svc.url, "Société Acme", "owner@acme.example.com")
        res = await http.post(
            svc.url + "/org/invitations",
            json={"email": "new.hire@acme.example.com", "role": "admin"},
            headers=bearer(owner),
        )
        assert res.status_code == 201, res.text
        assert "token" not in res.text  # only the mail holds it

        async def arrived() -> bool:
            return len(server.received) == 1

        took = await wait_until(arrived, timeout=10)
        print(f"invitation mail received {took:.2f} s after the 201")
        [received] = server.received
        message = received.message
        assert received.rcpt_tos == ["new.hire@acme.example.com"]
        assert message["To"] == "new.hire@acme.example.com"
        assert "Société Acme" in str(message["Subject"])
        html = message.get_body(preferencelist=("html",))
        assert html is not None and "Société Acme" in html.get_content()
        token = token_in(message)
        assert token in html.get_content()

        accepted = await http.post(
            svc.url + "/invitations/accept", json={"token": token, "password": PASSWORD}
        )
        assert accepted.status_code == 201, accepted.text
        assert accepted.json()["member"]["role"] == "admin"
        login = await http.post(
            svc.url + "/admin/login",
            json={"email": "new.hire@acme.example.com", "password": PASSWORD},
        )
        assert login.status_code == 200
        members = await http.get(svc.url + "/org/members", headers=bearer(owner))
        assert sorted(m["role"] for m in members.json()["items"]) == ["admin", "owner"]
        again = await http.post(
            svc.url + "/invitations/accept", json={"token": token, "password": PASSWORD}
        )
        assert again.status_code == 410 and again.json()["code"] == "invitation_invalid"
        # The service's log holds neither the token nor the relay's password.
        log = svc.log_path.read_text()
        assert token not in log and token.split(".")[1] not in log and SMTP_PASSWORD not in log
    finally:
        svc.stop()


@pytest.mark.parametrize(
    ("point", "mailed"), [("invite.after_team", True), ("invite.after_record", False)]
)
async def test_a_crash_between_storing_the_invitation_and_sending_its_mail(
    nx_server: EmbeddedMongo,
    nx_client: AsyncMongoClient[Any],
    smtp: tuple[SmtpServer, trustme.CA],
    mail_env: dict[str, str],
    logs_dir: Path,
    http: httpx.AsyncClient,
    point: str,
    mailed: bool,
) -> None:
    """kill -9 after the invitation holds its seat (before its mail is queued): the restarted
    service's reconciler queues it and the mail arrives, once. kill -9 before it held a seat:
    the invitation is undone, no mail, the seat is free."""
    server, _ = smtp
    env = {**mail_env, "OPERATION_LEASE_SECONDS": "1", "RECONCILE_INTERVAL_SECONDS": "0.5"}
    doomed = service(nx_server, logs_dir, "doomed", {**env, "FAULT_POINTS": point})
    await doomed.start()
    try:
        owner = await owner_token(http, doomed.url, "Crashy", "owner@crashy.example.com")
        with pytest.raises(httpx.HTTPError):
            await http.post(
                doomed.url + "/org/invitations",
                json={"email": "late@crashy.example.com", "role": "member"},
                headers=bearer(owner),
            )
        assert await doomed.wait_exit() == -9
    finally:
        doomed.stop()
    db = nx_client[PROCS_DB]
    assert await db.operations.count_documents({}) == 1  # the intent the crash left
    assert server.received == []

    restarted = service(nx_server, logs_dir, "restarted", env)
    await restarted.start()
    try:

        async def settled() -> bool:
            return await db.operations.count_documents({}) == 0

        await wait_until(settled, timeout=15)
        if mailed:

            async def arrived() -> bool:
                return len(server.received) == 1

            await wait_until(arrived, timeout=15)
            token = token_in(server.received[0].message)
            res = await http.post(
                restarted.url + "/invitations/accept", json={"token": token, "password": PASSWORD}
            )
            assert res.status_code == 201, res.text
            await asyncio.sleep(1.5)  # a second pass of the reconciler and the mail worker
            assert len(server.received) == 1  # sent once
        else:
            await asyncio.sleep(1.5)
            assert server.received == []
            assert await db.invitations.count_documents({}) == 0
            # The seat and the email are free again: the same invitation can be made.
            res = await http.post(
                restarted.url + "/org/invitations",
                json={"email": "late@crashy.example.com", "role": "member"},
                headers=bearer(owner),
            )
            assert res.status_code == 201, res.text
        await assert_consistent(db)
    finally:
        restarted.stop()
