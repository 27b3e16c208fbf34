"""The worker against a real SMTP server: sends at once when kicked, retries with backoff until
the server is back, gives up after the last attempt, drops what is gone, survives its composers'
and backends' failures, and finishes what a dead worker left."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from email.message import EmailMessage
from typing import Any

import pytest
import trustme
from pydantic import SecretStr

from app.kit.settings import Settings
from app.kit.store import Doc
from app.mail.backends import Mailer, SmtpMailer
from app.mail.message import MailMessage, message_id_for
from app.mail.outbox import DEAD, DROPPED, PENDING, SENT, OutboxRepository
from app.mail.worker import Composer, MailPolicy, MailWorker
from tests.mail.support import (
    SENDER,
    SMTP_PASSWORD,
    SMTP_USER,
    SmtpServer,
    composer_from_ref,
    invitation,
    leaked,
    secret_forms,
    server_tls,
    wait_until,
)

pytestmark = pytest.mark.timeout(30)

FAST = {
    "poll_seconds": 0.02,
    "retry_base_seconds": 0.02,
    "retry_max_seconds": 0.1,
    "attempt_timeout_seconds": 5.0,
    "lease_seconds": 10.0,
}


def make_worker(
    outbox: OutboxRepository,
    mailer: Mailer,
    *,
    owner: str = "w1",
    composers: dict[str, Composer] | None = None,
    **policy: Any,
) -> MailWorker:
    return MailWorker(
        outbox,
        mailer,
        composers if composers is not None else {"invitation": composer_from_ref()},
        sender=SENDER,
        owner=owner,
        policy=MailPolicy(**{**FAST, **policy}),
    )


async def enqueue(outbox: OutboxRepository, n: int, *, to: str = "invitee@example.com") -> str:
    key = f"invitation:{n}"
    assert await outbox.enqueue(key, kind="invitation", ref={"n": n, "to": to}, to=to)
    return key


async def state(outbox: OutboxRepository, key: str) -> str:
    entry = await outbox.get(key)
    assert entry is not None
    return entry.state


def mail_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "orgsvc.mail" and r.levelno >= logging.ERROR]


def down_server(ca: trustme.CA) -> SmtpServer:
    """A server not started yet: nothing listens on its port."""
    return SmtpServer(server_tls(ca))


async def test_a_kicked_worker_sends_a_new_mail_within_milliseconds(
    outbox: OutboxRepository, smtp: SmtpServer, mailer: SmtpMailer
) -> None:
    worker = make_worker(outbox, mailer, poll_seconds=30)  # the poll would be far too late
    worker.start()
    try:
        await asyncio.sleep(0.05)  # its first pass is over; it waits
        key = await enqueue(outbox, 1)
        worker.kick()
        took = await wait_until(lambda: _received(smtp, 1), timeout=3)
        assert took < 1.0, f"{took:.3f} s after the kick"
        await wait_until(lambda: _is(outbox, key, SENT))
    finally:
        await worker.stop()
    [got] = smtp.received
    assert got.message["Message-ID"] == message_id_for(key, SENDER)
    assert got.message["Subject"] == invitation(1).subject


async def test_enqueueing_twice_sends_one_mail(
    outbox: OutboxRepository, smtp: SmtpServer, mailer: SmtpMailer
) -> None:
    key = await enqueue(outbox, 2)
    assert not await outbox.enqueue(key, kind="invitation", ref={"n": 2}, to="x@example.com")
    worker = make_worker(outbox, mailer)
    assert await worker.run_once() == Counter({"sent": 1})
    assert await worker.run_once() == Counter()
    assert smtp.message_ids() == Counter({message_id_for(key, SENDER): 1})


async def test_a_server_that_is_down_is_retried_with_backoff_until_it_is_up(
    outbox: OutboxRepository, ca: trustme.CA, mailer: SmtpMailer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="orgsvc.mail")
    server = down_server(ca)
    mailer.port = server.port
    worker = make_worker(outbox, mailer, max_attempts=100)
    key = await enqueue(outbox, 3)
    worker.start()
    try:
        await wait_until(lambda: _attempts_at_least(outbox, key, 3))
        entry = await outbox.get(key)
        assert entry is not None and entry.state == PENDING
        assert entry.last_error and "SMTPConnect" in entry.last_error
        retries = [r for r in caplog.records if "failed" in r.getMessage()]
        assert len(retries) >= 2 and all(r.levelno == logging.WARNING for r in retries)
        await asyncio.to_thread(server.start)
        await wait_until(lambda: _is(outbox, key, SENT))
    finally:
        await worker.stop()
        server.stop()
    assert server.message_ids() == Counter({message_id_for(key, SENDER): 1})


async def test_after_the_last_attempt_the_mail_is_dead_and_logged_as_an_error(
    outbox: OutboxRepository, ca: trustme.CA, mailer: SmtpMailer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = down_server(ca)
    mailer.port = server.port
    worker = make_worker(outbox, mailer, max_attempts=3)
    key = await enqueue(outbox, 4)
    worker.start()
    try:
        await wait_until(lambda: _is(outbox, key, DEAD))
        await asyncio.sleep(0.1)  # more polls: a dead entry is never tried again
        assert worker._task is not None and not worker._task.done(), "the loop goes on"
    finally:
        await worker.stop()
    entry = await outbox.get(key)
    assert entry is not None and entry.attempts == 3 and entry.finished_at is not None
    [error] = mail_errors(caplog)
    assert key in error.getMessage() and "3 attempts" in error.getMessage()
    assert not leaked(caplog.records, secret_forms(SMTP_PASSWORD))


async def test_a_refused_recipient_is_dead_at_once(
    outbox: OutboxRepository, smtp: SmtpServer, mailer: SmtpMailer
) -> None:
    key = await enqueue(outbox, 5, to="refused@example.com")
    worker = make_worker(outbox, mailer)
    assert await worker.run_once() == Counter({"dead": 1})
    entry = await outbox.get(key)
    assert entry is not None and entry.attempts == 1 and "550" in (entry.last_error or "")
    assert smtp.received == []


async def test_a_composer_answering_none_drops_the_mail_unsent(
    outbox: OutboxRepository, smtp: SmtpServer, mailer: SmtpMailer
) -> None:
    seen: list[Doc] = []

    async def revoked(ref: Doc) -> MailMessage | None:
        seen.append(ref)
        return None

    key = await enqueue(outbox, 6)
    worker = make_worker(outbox, mailer, composers={"invitation": revoked})
    assert await worker.run_once() == Counter({"dropped": 1})
    assert seen == [{"n": 6, "to": "invitee@example.com"}]
    assert await state(outbox, key) == DROPPED
    assert await worker.run_once() == Counter()
    assert smtp.received == []


async def test_an_unknown_kind_is_dead_with_an_error_log(
    outbox: OutboxRepository, smtp: SmtpServer, mailer: SmtpMailer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="orgsvc.mail")
    assert await outbox.enqueue("reset:1", kind="password_reset", ref={}, to="a@example.com")
    worker = make_worker(outbox, mailer)
    assert await worker.run_once() == Counter({"dead": 1})
    assert await state(outbox, "reset:1") == DEAD
    [error] = mail_errors(caplog)
    assert "password_reset" in error.getMessage()
    assert smtp.received == []


class FlakyMailer:
    """Fails its first `failures` sends with a bug (not a MailSendError), then passes them on."""

    def __init__(self, inner: Mailer, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    async def send(self, msg: EmailMessage) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("backend bug")
        await self.inner.send(msg)


async def test_failing_composers_and_mailers_never_stop_the_loop(
    outbox: OutboxRepository, smtp: SmtpServer, mailer: SmtpMailer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="orgsvc.mail")
    calls = Counter[int]()

    async def flaky_composer(ref: Doc) -> MailMessage | None:
        calls[int(ref["n"])] += 1
        if calls[int(ref["n"])] <= 2:
            raise KeyError("composer bug")
        return invitation(int(ref["n"]))

    worker = make_worker(
        outbox, FlakyMailer(mailer, failures=2), composers={"invitation": flaky_composer}
    )
    keys = [await enqueue(outbox, n) for n in (7, 8)]
    worker.start()
    try:

        async def all_sent() -> bool:
            return all([await _is(outbox, key, SENT) for key in keys])

        await wait_until(all_sent)
    finally:
        await worker.stop()
    assert smtp.message_ids() == Counter({message_id_for(k, SENDER): 1 for k in keys})
    bugs = [r for r in caplog.records if r.exc_info]
    assert {r.exc_info[0] for r in bugs if r.exc_info} == {KeyError, RuntimeError}


class HangingMailer:
    async def send(self, msg: EmailMessage) -> None:
        await asyncio.sleep(60)


async def test_a_send_that_hangs_is_cut_off_and_retried(outbox: OutboxRepository) -> None:
    key = await enqueue(outbox, 9)
    worker = make_worker(outbox, HangingMailer(), attempt_timeout_seconds=0.1, lease_seconds=1.0)
    assert await asyncio.wait_for(worker.run_once(), timeout=2) == Counter({"retry": 1})
    entry = await outbox.get(key)
    assert entry is not None and entry.state == PENDING
    assert entry.last_error == "timed out after 0.1 s"


async def test_an_entry_whose_worker_died_is_sent_by_another(
    outbox: OutboxRepository, smtp: SmtpServer, mailer: SmtpMailer
) -> None:
    key = await enqueue(outbox, 10)
    # A worker claims it and dies before sending: its claim is all that is left of it.
    [crashed] = await outbox.claim_due("crashed", lease_seconds=0.3, limit=1)
    worker = make_worker(outbox, mailer, owner="survivor")
    assert await worker.run_once() == Counter(), "the lease still holds"
    worker.start()
    try:
        await wait_until(lambda: _is(outbox, key, SENT), timeout=5)
    finally:
        await worker.stop()
    entry = await outbox.get(key)
    assert entry is not None and (entry.owner, entry.attempts) == ("survivor", 2)
    assert smtp.message_ids() == Counter({message_id_for(key, SENDER): 1})
    # Were the crashed worker to wake up now, its claim would change nothing.
    assert not await outbox.mark_sent(crashed)
    assert not await outbox.retry_later(crashed, next_attempt_ms=0, error="late")


async def test_a_wrong_password_is_retried_and_never_logged_or_stored(
    outbox: OutboxRepository,
    smtp: SmtpServer,
    mailer: SmtpMailer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "Wr0ng-" + SMTP_PASSWORD
    bad = SmtpMailer(
        "127.0.0.1",
        smtp.port,
        username=SMTP_USER,
        password=SecretStr(wrong),
        timeout=5,
        tls_context=mailer.tls_context,
    )
    key = await enqueue(outbox, 11)
    worker = make_worker(outbox, bad)
    assert await worker.run_once() == Counter({"retry": 1})
    await asyncio.sleep(0.05)  # the backoff (at most 0.02 s after the first attempt)
    assert await worker.run_once() == Counter({"retry": 1})
    entry = await outbox.get(key)
    assert entry is not None and entry.attempts == 2 and "535" in (entry.last_error or "")
    assert smtp.received == []

    worker.mailer = mailer  # the operator fixes the password
    await asyncio.sleep(0.1)
    assert await worker.run_once() == Counter({"sent": 1})
    assert len(smtp.received) == 1
    stored = str(await outbox.col.find_one({"_id": key}))
    secrets = secret_forms(wrong) + secret_forms(SMTP_PASSWORD)
    assert not [s for s in secrets if s in stored]
    assert not leaked(caplog.records, secrets)


async def test_stop_is_prompt_while_the_worker_waits(
    outbox: OutboxRepository, mailer: SmtpMailer
) -> None:
    worker = make_worker(outbox, mailer, poll_seconds=30)
    worker.start()
    await asyncio.sleep(0.05)
    await asyncio.wait_for(worker.stop(), timeout=1)
    assert worker._task is None


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    policy = MailPolicy(retry_base_seconds=5, retry_max_seconds=3600)
    for attempts in range(1, 20):
        full = min(3600.0, 5.0 * 2 ** (attempts - 1))
        samples = [policy.backoff_seconds(attempts) for _ in range(200)]
        assert all(full / 2 <= s <= full for s in samples), attempts
        assert len(set(samples)) > 1, "jittered"
    assert max(policy.backoff_seconds(1000) for _ in range(50)) <= 3600


def test_the_policy_from_settings_leases_longer_than_an_attempt() -> None:
    settings = Settings(
        _env_file=None,
        mail_max_attempts=4,
        mail_retry_base_seconds=2,
        mail_poll_seconds=7,
        smtp_timeout_seconds=10,
    )
    policy = MailPolicy.from_settings(settings)
    assert (policy.max_attempts, policy.retry_base_seconds, policy.poll_seconds) == (4, 2, 7)
    assert policy.attempt_timeout_seconds == 30 and policy.lease_seconds > 30
    with pytest.raises(ValueError, match="lease"):
        MailPolicy(attempt_timeout_seconds=10, lease_seconds=10)


async def _received(server: SmtpServer, count: int) -> bool:
    return len(server.received) >= count


async def _is(outbox: OutboxRepository, key: str, expected: str) -> bool:
    return await state(outbox, key) == expected


async def _attempts_at_least(outbox: OutboxRepository, key: str, count: int) -> bool:
    entry = await outbox.get(key)
    return entry is not None and entry.attempts >= count and entry.lease_until_ms == 0
