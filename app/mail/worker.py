"""The mail worker: sends what the outbox holds, in the background, on every process.

`kick()` after an enqueue wakes it, so a new mail goes out within milliseconds of the request
that stored it; besides, it looks for due entries every MAIL_POLL_SECONDS, which picks up retries
and the entries of a process that died while it held them (their lease runs out). Each attempt
composes the message (through the composer its kind registered) and sends it, bounded in time;
a failure is retried with exponential backoff and jitter, and after MAIL_MAX_ATTEMPTS the entry
is `dead`, logged as an error. Nothing a composer or a backend does stops the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from app.kit.settings import Settings
from app.kit.store import Doc, StoreError, epoch_ms
from app.mail.backends import MAX_ERROR_CHARS, Mailer, MailSendError
from app.mail.message import MailMessage, build_email, message_id_for
from app.mail.outbox import OutboxEntry, OutboxRepository

log = logging.getLogger("orgsvc.mail")

# Builds the mail of one entry from its `ref`; None when what the mail was about is gone (a
# revoked invitation), and the entry is dropped unsent.
Composer = Callable[[Doc], Awaitable[MailMessage | None]]

SENT, DROPPED, RETRY, DEAD, LOST, FAILED = "sent", "dropped", "retry", "dead", "lost", "failed"


@dataclass(frozen=True, slots=True)
class MailPolicy:
    """The worker's numbers. The lease must outlast one whole attempt, so that no other worker
    claims an entry while its sender is still within its time."""

    max_attempts: int = 8
    retry_base_seconds: float = 5.0
    retry_max_seconds: float = 3600.0
    poll_seconds: float = 5.0
    attempt_timeout_seconds: float = 30.0
    lease_seconds: float = 60.0
    batch: int = 10  # entries claimed, and sent concurrently, per pass

    def __post_init__(self) -> None:
        if self.lease_seconds <= self.attempt_timeout_seconds:
            raise ValueError("the lease must be longer than one attempt")

    @classmethod
    def from_settings(cls, settings: Settings) -> MailPolicy:
        # SMTP_TIMEOUT_SECONDS bounds each step with the server; a whole attempt (compose,
        # connect, STARTTLS, AUTH, DATA) is cut at three times that, and the lease adds a margin
        # for the store's writes around it.
        attempt = 3 * settings.smtp_timeout_seconds
        return cls(
            max_attempts=settings.mail_max_attempts,
            retry_base_seconds=settings.mail_retry_base_seconds,
            poll_seconds=settings.mail_poll_seconds,
            attempt_timeout_seconds=attempt,
            lease_seconds=attempt + 30,
        )

    def backoff_seconds(self, attempts: int) -> float:
        """The wait after failed attempt number `attempts` (1, 2, ...): doubling from the base,
        capped, times a random factor in [0.5, 1] so that failed mails spread out instead of
        hitting a recovering server all at once."""
        exponent = min(max(attempts - 1, 0), 32)
        delay = min(self.retry_max_seconds, self.retry_base_seconds * 2.0**exponent)
        return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret


class MailWorker:
    """Claims due outbox entries and sends them, through the composer of each one's kind."""

    def __init__(
        self,
        outbox: OutboxRepository,
        mailer: Mailer,
        composers: Mapping[str, Composer],
        *,
        sender: str,
        owner: str,
        policy: MailPolicy | None = None,
        observers: list[Callable[[str, str], None]] | None = None,
    ) -> None:
        self.outbox = outbox
        self.mailer = mailer
        self.composers = dict(composers)
        self.sender = sender  # MAIL_FROM
        self.owner = owner
        self.policy = policy or MailPolicy()
        self.observers = observers or []  # (kind, outcome) for metrics
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()

    def kick(self) -> None:
        """Something was enqueued: look now rather than at the next poll."""
        self._wake.set()

    async def run_once(self) -> Counter[str]:
        """Claim up to a batch of due entries and send them; returns what happened, by outcome."""
        claims = await self.outbox.claim_due(
            self.owner, lease_seconds=self.policy.lease_seconds, limit=self.policy.batch
        )
        results = await asyncio.gather(
            *(self._deliver(claim) for claim in claims), return_exceptions=True
        )
        done: Counter[str] = Counter()
        for claim, result in zip(claims, results, strict=True):
            if isinstance(result, BaseException):
                # The store failed while recording the outcome: the entry is tried again when
                # this claim's lease runs out.
                log.warning(
                    "mail %s: could not record the outcome: %s",
                    claim.entry_id,
                    type(result).__name__,
                    extra={"entry_id": claim.entry_id, "kind": claim.kind},
                )
                outcome = FAILED
            else:
                outcome = result
            for observe in self.observers:
                observe(claim.kind, outcome)
            done[outcome] += 1
        return done

    async def _deliver(self, claim: OutboxEntry) -> str:
        """One attempt at one claimed entry; returns the outcome."""
        extra = {"entry_id": claim.entry_id, "kind": claim.kind, "attempts": claim.attempts}
        if claim.attempts > self.policy.max_attempts:
            # Earlier claims never recorded an outcome (their processes died while sending).
            return await self._give_up(claim, "attempts ran out without an outcome", extra)
        composer = self.composers.get(claim.kind)
        if composer is None:
            return await self._give_up(claim, f"no composer for kind {claim.kind!r}", extra)

        permanent = False
        timeout = self.policy.attempt_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                sent = await self._compose_and_send(claim, composer)
        except MailSendError as exc:
            error, permanent = str(exc), exc.permanent
        except TimeoutError:
            error = f"timed out after {timeout:g} s"
        except StoreError as exc:  # a composer could not read what the mail is about
            error = f"store unavailable to the composer: {type(exc).__name__}"
        except Exception as exc:
            # A composer's or a backend's bug: logged with its traceback, and retried like any
            # failure (the loop goes on).
            log.exception("mail %s: attempt failed", claim.entry_id, extra=extra)
            error = " ".join(f"{type(exc).__name__}: {exc}".split())[:MAX_ERROR_CHARS]
        else:
            if sent:
                return SENT if await self.outbox.mark_sent(claim) else LOST
            log.info("mail %s dropped: nothing to send any more", claim.entry_id, extra=extra)
            return DROPPED if await self.outbox.mark_dropped(claim) else LOST

        if permanent or claim.attempts >= self.policy.max_attempts:
            return await self._give_up(claim, error, extra)
        delay = self.policy.backoff_seconds(claim.attempts)
        retried = await self.outbox.retry_later(claim, next_attempt_ms=epoch_ms(delay), error=error)
        log.warning(
            "mail %s: attempt %d failed (%s); next in %.1f s",
            claim.entry_id,
            claim.attempts,
            error,
            delay,
            extra=extra,
        )
        return RETRY if retried else LOST

    async def _compose_and_send(self, claim: OutboxEntry, composer: Composer) -> bool:
        """Build the entry's mail and send it; False when the composer says there is none."""
        msg = await composer(dict(claim.ref))
        if msg is None:
            return False
        message_id = message_id_for(claim.entry_id, self.sender)
        await self.mailer.send(build_email(msg, sender=self.sender, message_id=message_id))
        return True

    async def _give_up(self, claim: OutboxEntry, error: str, extra: dict[str, object]) -> str:
        dead = await self.outbox.mark_dead(claim, error=error)
        log.error(
            "mail %s given up after %d attempts: %s",
            claim.entry_id,
            claim.attempts,
            error,
            extra=extra,
        )
        return DEAD if dead else LOST

    def start(self) -> None:
        """Send in the background until `stop`; the first pass runs at once."""
        self._stop.clear()
        self._task = asyncio.create_task(self._loop(), name="mail-worker")

    async def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # a kick from here on means another pass
            busy = False
            try:
                done = await self.run_once()
                busy = sum(done.values()) >= self.policy.batch
            except StoreError as exc:
                log.warning("mail pass skipped: %s", type(exc).__name__)
            except Exception:
                log.exception("mail pass failed")
            if busy:
                continue  # a full batch: more may be due right now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.policy.poll_seconds)

    async def stop(self) -> None:
        """Let the current pass finish its attempts (each bounded in time), then stop."""
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, timeout=self.policy.attempt_timeout_seconds + 5)
            self._task = None
