"""The three backends against the real thing: an SMTP server with STARTTLS and AUTH, a folder,
the log; and the settings that choose among them."""

from __future__ import annotations

import logging
import os
import ssl
import stat
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trustme
from pydantic import SecretStr, ValidationError

from app.kit.settings import Settings
from app.mail.backends import (
    ConsoleMailer,
    FileMailer,
    MailSendError,
    SmtpMailer,
    mailer_from_settings,
)
from app.mail.message import build_email, message_id_for
from tests.mail.support import (
    SENDER,
    SMTP_PASSWORD,
    SMTP_USER,
    SmtpServer,
    invitation,
    leaked,
    parse_mail,
    secret_forms,
)

pytestmark = pytest.mark.timeout(30)


def mail_settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def _parts(email: EmailMessage) -> tuple[str, str]:
    plain = email.get_body(preferencelist=("plain",))
    html = email.get_body(preferencelist=("html",))
    assert isinstance(plain, EmailMessage) and isinstance(html, EmailMessage)
    return _text(plain.get_content()), _text(html.get_content())


def _text(content: str) -> str:
    """A body as written: the wire's CRLF read back as LF, without the final line end that
    serialisation adds."""
    return content.replace("\r\n", "\n").rstrip("\n")


# --- SMTP -----------------------------------------------------------------------------------


async def test_smtp_delivers_both_parts_and_non_ascii_over_starttls_with_auth(
    smtp: SmtpServer, mailer: SmtpMailer
) -> None:
    msg = invitation(1, to="Zoë Ünicode <zoe@example.com>")
    await mailer.send(build_email(msg, sender=SENDER, message_id=message_id_for("k1", SENDER)))

    [got] = smtp.received
    assert got.rcpt_tos == ["zoe@example.com"] and got.mail_from == "no-reply@example.com"
    email = got.message
    assert email["Subject"] == msg.subject and email["To"] == msg.to
    assert email["Message-ID"] == message_id_for("k1", SENDER)
    assert _parts(email) == (_text(msg.text), msg.html)


async def test_smtp_delivers_to_a_non_ascii_address(smtp: SmtpServer, mailer: SmtpMailer) -> None:
    msg = invitation(2, to="Zoë <zoë@exämple.com>")
    await mailer.send(build_email(msg, sender=SENDER))
    [got] = smtp.received
    assert got.rcpt_tos == ["zoë@exämple.com"]
    assert got.message["To"].addresses[0].addr_spec == "zoë@exämple.com"
    assert got.message["Subject"] == msg.subject
    assert _parts(got.message) == (_text(msg.text), msg.html)


async def test_a_wrong_password_fails_without_the_password_in_the_error_or_the_logs(
    smtp: SmtpServer, trust: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-Password-" + SMTP_PASSWORD[::-1]
    bad = SmtpMailer(
        "127.0.0.1",
        smtp.port,
        username=SMTP_USER,
        password=SecretStr(wrong),
        timeout=5,
        tls_context=trust,
    )
    with pytest.raises(MailSendError) as caught:
        await bad.send(build_email(invitation(3), sender=SENDER))
    assert "535" in str(caught.value) and not caught.value.permanent
    assert wrong not in str(caught.value) and wrong not in repr(bad)
    assert smtp.received == []
    assert not leaked(caplog.records, secret_forms(wrong) + secret_forms(SMTP_PASSWORD))


async def test_starttls_is_required_when_on(trust: ssl.SSLContext) -> None:
    plain = SmtpServer(None, auth=False)  # offers no STARTTLS
    plain.start()
    try:
        mailer = SmtpMailer("127.0.0.1", plain.port, starttls=True, timeout=5, tls_context=trust)
        with pytest.raises(MailSendError):
            await mailer.send(build_email(invitation(4), sender=SENDER))
        assert plain.received == []
        # With STARTTLS off (a local relay), the same server takes it.
        clear = SmtpMailer("127.0.0.1", plain.port, starttls=False, timeout=5)
        await clear.send(build_email(invitation(4), sender=SENDER))
        assert len(plain.received) == 1
    finally:
        plain.stop()


async def test_an_untrusted_certificate_is_refused(smtp: SmtpServer) -> None:
    stranger = ssl.create_default_context()
    trustme.CA().configure_trust(stranger)  # another CA than the server's
    mailer = SmtpMailer(
        "127.0.0.1",
        smtp.port,
        username=SMTP_USER,
        password=SecretStr(SMTP_PASSWORD),
        timeout=5,
        tls_context=stranger,
    )
    with pytest.raises(MailSendError):
        await mailer.send(build_email(invitation(5), sender=SENDER))
    assert smtp.received == []


async def test_a_server_that_is_down_is_a_send_error() -> None:
    down = SmtpServer(None)  # never started: nothing listens on its port
    mailer = SmtpMailer("127.0.0.1", down.port, starttls=False, timeout=2)
    with pytest.raises(MailSendError) as caught:
        await mailer.send(build_email(invitation(6), sender=SENDER))
    assert not caught.value.permanent


async def test_smtp_from_settings_with_a_ca_file(
    smtp: SmtpServer, ca: trustme.CA, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    settings = mail_settings(
        mail_backend="smtp",
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_username=SMTP_USER,
        smtp_password=SMTP_PASSWORD,
        smtp_ca_file=str(ca_file),
        mail_from=SENDER,
    )
    mailer = mailer_from_settings(settings)
    assert isinstance(mailer, SmtpMailer)
    await mailer.send(build_email(invitation(7), sender=settings.mail_from))
    assert len(smtp.received) == 1


# --- file -----------------------------------------------------------------------------------


async def test_the_file_backend_writes_one_parseable_eml_per_message(tmp_path: Path) -> None:
    folder = tmp_path / "outbox"
    mailer = mailer_from_settings(mail_settings(mail_backend="file", mail_file_dir=str(folder)))
    assert isinstance(mailer, FileMailer)
    messages = [invitation(n, to=f"Zoë {n} <zoë{n}@exämple.com>") for n in range(5)]
    for msg in messages:
        await mailer.send(build_email(msg, sender=SENDER))

    files = sorted(folder.iterdir())
    assert [f.suffix for f in files] == [".eml"] * 5, "one file each, no temporary file left"
    got = {}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, "mails hold tokens: owner only"
        email = parse_mail(path.read_bytes())
        assert email["To"].addresses[0].addr_spec.startswith("zoë")
        got[email["To"]] = (email["Subject"], *_parts(email))
    assert got == {m.to: (m.subject, _text(m.text), m.html) for m in messages}


async def test_an_unwritable_folder_is_a_send_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(MailSendError):
        await FileMailer(blocker / "mail").send(build_email(invitation(8), sender=SENDER))
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))
    assert os.listdir(tmp_path) == ["a-file"]


# --- console --------------------------------------------------------------------------------


async def test_the_console_backend_logs_the_text(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="orgsvc.mail")
    mailer = mailer_from_settings(mail_settings())
    assert isinstance(mailer, ConsoleMailer)
    msg = invitation(9)
    await mailer.send(build_email(msg, sender=SENDER))
    [record] = [r for r in caplog.records if r.name == "orgsvc.mail"]
    assert record.levelno == logging.INFO
    assert msg.text in record.getMessage() and msg.subject in record.getMessage()


# --- settings -------------------------------------------------------------------------------


def test_mail_settings_defaults() -> None:
    s = mail_settings()
    assert s.mail_backend == "console" and s.smtp_port == 587 and s.smtp_starttls
    assert s.public_base_url == "http://127.0.0.1:8000"
    assert (s.mail_max_attempts, s.mail_retry_base_seconds, s.mail_poll_seconds) == (8, 5.0, 5.0)
    assert s.smtp_timeout_seconds == 10.0


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"mail_backend": "smtp"}, "needs SMTP_HOST"),
        ({"mail_backend": "smtp", "smtp_host": "  "}, "needs SMTP_HOST"),
        ({"mail_backend": "file"}, "needs MAIL_FILE_DIR"),
        ({"smtp_username": "u"}, "go together"),
        ({"smtp_password": "p"}, "go together"),
        ({"smtp_username": "u", "smtp_password": "p", "smtp_starttls": False}, "in clear"),
        ({"mail_from": "nobody"}, "MAIL_FROM"),
        ({"public_base_url": "ftp://x"}, "public_base_url"),
        ({"mail_backend": "pigeon"}, "mail_backend"),
    ],
)
def test_mail_settings_refuse(values: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        mail_settings(**values)
    assert reason in str(caught.value)


def test_mail_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "MAIL_BACKEND": "smtp",
        "SMTP_HOST": "relay.example.com",
        "SMTP_PORT": "2525",
        "SMTP_USERNAME": "u",
        "SMTP_PASSWORD": "p-a-s-s",
        "SMTP_STARTTLS": "true",
        "SMTP_CA_FILE": "",  # blank: unset
        "MAIL_FILE_DIR": "",
        "PUBLIC_BASE_URL": "https://orgs.example.com/",
        "MAIL_MAX_ATTEMPTS": "3",
        "MAIL_RETRY_BASE_SECONDS": "0.5",
        "MAIL_POLL_SECONDS": "1",
        "SMTP_TIMEOUT_SECONDS": "4",
    }.items():
        monkeypatch.setenv(name, value)
    s = mail_settings()
    assert (s.smtp_host, s.smtp_port, s.smtp_username) == ("relay.example.com", 2525, "u")
    assert s.smtp_password is not None and s.smtp_password.get_secret_value() == "p-a-s-s"
    assert "p-a-s-s" not in repr(s)
    assert s.smtp_ca_file is None and s.mail_file_dir is None
    assert s.public_base_url == "https://orgs.example.com"
    assert (s.mail_max_attempts, s.mail_retry_base_seconds, s.mail_poll_seconds) == (3, 0.5, 1.0)
