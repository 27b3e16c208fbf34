"""Fixtures of the mail tests: the SMTP server, its TLS, a mailer that trusts it, an outbox."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trustme
from mongomock_motor import AsyncMongoMockClient
from pydantic import SecretStr

from app.mail.backends import SmtpMailer
from app.mail.outbox import OutboxRepository
from tests.mail.support import SMTP_PASSWORD, SMTP_USER, SmtpServer, client_tls, server_tls


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def trust(ca: trustme.CA) -> ssl.SSLContext:
    """What the client trusts: the test CA only."""
    return client_tls(ca)


@pytest.fixture
def smtp(ca: trustme.CA) -> Iterator[SmtpServer]:
    """A running SMTP server requiring STARTTLS and AUTH."""
    server = SmtpServer(server_tls(ca))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mailer(smtp: SmtpServer, trust: ssl.SSLContext) -> SmtpMailer:
    return SmtpMailer(
        "127.0.0.1",
        smtp.port,
        username=SMTP_USER,
        password=SecretStr(SMTP_PASSWORD),
        starttls=True,
        timeout=5,
        tls_context=trust,
    )


@pytest.fixture
async def outbox() -> AsyncIterator[OutboxRepository]:
    """An outbox over the in-memory double."""
    client: Any = AsyncMongoMockClient(tz_aware=True)
    repo = OutboxRepository(client["mail_" + uuid.uuid4().hex[:8]])
    await repo.ensure_indexes()
    yield repo
