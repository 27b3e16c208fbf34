"""What the mail tests share: a real SMTP server on loopback, test messages, waiting.

The server is aiosmtpd's `Controller` (its own thread and event loop) on 127.0.0.1 and a free
port, with STARTTLS (a certificate from a throwaway `trustme` CA) and AUTH (one username and
password); it records every message it accepts, as bytes, for the tests to parse.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import Parser
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from app.kit.db import free_port
from app.kit.store import Doc
from app.mail.message import MailMessage

SMTP_USER = "mailer@example.com"
SMTP_PASSWORD = "s3cret-Pa55word-for-the-relay"  # must never appear in any log record
SENDER = "Organisation Ünicode <no-reply@example.com>"


@dataclass(frozen=True)
class Received:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return parse_mail(self.data)


def parse_mail(data: bytes) -> EmailMessage:
    """A message as a mail client reads it. Headers may be raw UTF-8 (SMTPUTF8, RFC 6532), which
    the bytes parser would leave as escapes in addresses: decode first, then parse the text."""
    parsed = Parser(policy=policy.default).parsestr(data.decode("utf-8"))
    assert isinstance(parsed, EmailMessage)
    return parsed


class _Recorder:
    def __init__(self) -> None:
        self.received: list[Received] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.startswith("refused"):  # a mailbox that does not exist: refused for good
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content
        assert data is not None and envelope.mail_from is not None
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), data))
        return "250 OK"


def _authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == SMTP_USER.encode()
        and auth_data.password == SMTP_PASSWORD.encode()
    )
    if ok:
        return AuthResult(success=True)
    # A careless server echoes what it was sent; the client must not pass that on.
    tried = auth_data.password.decode() if isinstance(auth_data, LoginPassword) else "?"
    return AuthResult(success=False, handled=False, message=f"535 5.7.8 Bad credentials {tried}")


class SmtpServer:
    """A real SMTP server on 127.0.0.1 that can be stopped and started again on its port."""

    def __init__(self, tls: ssl.SSLContext | None, *, auth: bool = True) -> None:
        self.port = free_port()
        self.tls = tls
        self.auth = auth
        self.recorder = _Recorder()
        self._controller: Controller | None = None

    @property
    def received(self) -> list[Received]:
        return self.recorder.received

    def start(self) -> None:
        assert self._controller is None
        kwargs: dict[str, Any] = {}
        if self.tls is not None:
            kwargs.update(tls_context=self.tls, require_starttls=True)
        if self.auth:
            kwargs.update(authenticator=_authenticate, auth_required=True, auth_require_tls=True)
        self._controller = Controller(
            self.recorder, hostname="127.0.0.1", port=self.port, ready_timeout=10, **kwargs
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def message_ids(self) -> Counter[str]:
        return Counter(str(r.message["Message-ID"]) for r in self.received)


def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    return ctx


def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def invitation(n: int, to: str = "invitee@example.com") -> MailMessage:
    return MailMessage(
        to=to,
        subject=f"Invitation {n} to „Müller & Söhne“ ✉",
        text=f"Hallo Zoë, join Müller & Söhne: https://orgs.example/invitations/accept?token=t{n}\n",
        html=f'<p>Hallo Zoë, <a href="https://orgs.example/invitations/accept?token=t{n}">join</a></p>',
    )


def composer_from_ref() -> Callable[[Doc], Awaitable[MailMessage | None]]:
    """A composer building `invitation(ref["n"], ref["to"])`, counting its calls."""

    async def compose(ref: Doc) -> MailMessage | None:
        return invitation(int(ref["n"]), str(ref.get("to", "invitee@example.com")))

    return compose


async def wait_until(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 10.0, step: float = 0.01
) -> float:
    """Poll `check` until it holds; returns the seconds it took. Fails after `timeout`."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(step)
    return time.monotonic() - start


def secret_forms(password: str, user: str = SMTP_USER) -> list[str]:
    """The password as it could leak: plain, and as AUTH PLAIN / AUTH LOGIN send it."""
    return [
        password,
        base64.b64encode(f"\0{user}\0{password}".encode()).decode(),
        base64.b64encode(password.encode()).decode(),
    ]


def leaked(records: list[logging.LogRecord], secrets: list[str]) -> list[str]:
    """The log lines (message, extras, traceback) holding any of `secrets`, but the test SMTP
    server's own (`mail.log`, aiosmtpd): it stands for another party, and echoes on purpose."""
    hits = []
    for record in records:
        if record.name == "mail.log":
            continue
        text = record.getMessage() + " " + " ".join(str(v) for v in vars(record).values())
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        if any(s in text for s in secrets):
            hits.append(f"{record.name}: {record.getMessage()}")
    return hits
