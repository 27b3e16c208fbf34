"""Where mails go: an SMTP server, `.eml` files in a folder, or the log (MAIL_BACKEND).

Every backend is a `Mailer`: it sends one finished message or raises. A failure the worker should
know about is a `MailSendError` whose text is safe to store and log: it never holds the SMTP
password, and never the message (which may hold a token).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import tempfile
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

import aiosmtplib
from pydantic import SecretStr

from app.kit.settings import Settings
from app.mail.message import as_bytes, plain_text

log = logging.getLogger("orgsvc.mail")

MAX_ERROR_CHARS = 200


class Mailer(Protocol):
    """Sends one message; returns when the backend has taken it, raises when it has not."""

    async def send(self, msg: EmailMessage) -> None: ...


class MailSendError(Exception):
    """A message was not sent. `str()` is short and holds no secret; `permanent` is True when
    sending it again cannot work (every recipient refused for good)."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason[:MAX_ERROR_CHARS])
        self.permanent = permanent


class ConsoleMailer:
    """Development: the message is logged (`orgsvc.mail`, INFO), plain-text body included.

    The contract allows this one log line to hold a token (an invitation link): that is the
    point of the backend, a developer follows the link from the log.
    """

    async def send(self, msg: EmailMessage) -> None:
        log.info(
            "mail (console backend) to %s: %s\n\n%s",
            msg["To"],
            msg["Subject"],
            plain_text(msg),
            extra={"message_id": msg["Message-ID"]},
        )


class FileMailer:
    """One RFC 5322 `.eml` file per message in `directory` (MAIL_FILE_DIR).

    A reader of the folder never sees half a message: each is written to a temporary file, then
    renamed into place (`os.replace` is atomic within a filesystem). Names are unique (time, then
    a random part), so concurrent senders and processes never overwrite one another. The files
    are readable by the owner only (mails hold tokens). The writing runs in a thread so the event
    loop never waits for the disk.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    async def send(self, msg: EmailMessage) -> None:
        data = as_bytes(msg)
        try:
            await asyncio.to_thread(self._write, data)
        except OSError as exc:
            raise MailSendError(f"cannot write to MAIL_FILE_DIR: {exc.strerror}") from None

    def _write(self, data: bytes) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        # Time first, so that `ls` lists the mails in the order they were written.
        final = self.directory / f"{time.time_ns():020d}-{uuid.uuid4().hex}.eml"
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return final


class SmtpMailer:
    """Sends through an SMTP server with aiosmtplib (asyncio: no thread per mail).

    STARTTLS, when on, is required (a server that does not offer it fails the send rather than
    getting the message, and the password, in clear); the server's certificate is verified
    against the system's CAs, or `cafile` (SMTP_CA_FILE), or `tls_context`. AUTH is used when a
    username is given. Every step gives up after `timeout` seconds.
    """

    def __init__(
        self,
        host: str,
        port: int = 587,
        *,
        username: str | None = None,
        password: SecretStr | None = None,
        starttls: bool = True,
        timeout: float = 10.0,
        cafile: str | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("SMTP username and password go together")
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.starttls = starttls
        self.timeout = timeout
        if tls_context is None and cafile is not None:
            tls_context = ssl.create_default_context(cafile=cafile)
        self.tls_context = tls_context

    def __repr__(self) -> str:  # never the password, whatever prints this object
        return f"SmtpMailer({self.host}:{self.port}, starttls={self.starttls})"

    async def send(self, msg: EmailMessage) -> None:
        password = self._password.get_secret_value() if self._password is not None else None
        try:
            await aiosmtplib.send(
                msg,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=password,
                start_tls=self.starttls,
                use_tls=False,
                timeout=self.timeout,
                tls_context=self.tls_context if self.starttls else None,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [e.code for e in exc.recipients]
            raise MailSendError(
                self._safe(f"SMTP recipient refused ({', '.join(map(str, codes))})", password),
                permanent=bool(codes) and all(500 <= c < 600 for c in codes),
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise MailSendError(self._safe(f"SMTP {exc.code}: {exc.message}", password)) from None
        except (aiosmtplib.SMTPException, OSError) as exc:  # timeouts, refused, TLS, ...
            raise MailSendError(self._safe(f"{type(exc).__name__}: {exc}", password)) from None

    @staticmethod
    def _safe(text: str, password: str | None) -> str:
        """`text` without the password, on one line (a server's reply may echo anything)."""
        if password:
            text = text.replace(password, "***")
        return " ".join(text.split())[:MAX_ERROR_CHARS]


def mailer_from_settings(
    settings: Settings, *, tls_context: ssl.SSLContext | None = None
) -> Mailer:
    """The backend MAIL_BACKEND names (the settings have checked what each one needs)."""
    if settings.mail_backend == "smtp":
        if settings.smtp_host is None:  # refused by Settings; kept for the type checker
            raise ValueError("MAIL_BACKEND=smtp needs SMTP_HOST")
        return SmtpMailer(
            settings.smtp_host,
            settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
            timeout=settings.smtp_timeout_seconds,
            cafile=settings.smtp_ca_file,
            tls_context=tls_context,
        )
    if settings.mail_backend == "file":
        if settings.mail_file_dir is None:  # refused by Settings; kept for the type checker
            raise ValueError("MAIL_BACKEND=file needs MAIL_FILE_DIR")
        return FileMailer(settings.mail_file_dir)
    if settings.environment == "production":
        log.warning(
            "MAIL_BACKEND=console in production: invitation mails go to this log (with their "
            "links) instead of to anyone; set MAIL_BACKEND=smtp"
        )
    return ConsoleMailer()
