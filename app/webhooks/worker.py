"""The delivery worker: runs on every replica; fans the feed out and sends what is due.

Each pass (every WEBHOOK_POLL_SECONDS, or at once after `kick()`):
1. fan-out: for every enabled endpoint, the events after its `cursor` (of its `types`) become
   deliveries, and the cursor moves by compare-and-set; the same for replay jobs. Replicas may
   do this at once: a delivery's id makes a second insert a no-op.
2. dispatch: for every enabled endpoint with a free slot (WEBHOOK_ENDPOINT_CONCURRENCY per
   endpoint, WEBHOOK_MAX_CONCURRENCY per process), claim due deliveries with a lease and send
   each in its own task. The pass never waits for a receiver: a slow or dead one holds only its
   own slots, never the loop, other endpoints, or the API.

An attempt's outcome is written under its claim (see `app.webhooks.repository`). A failure is
retried after a backoff that doubles from WEBHOOK_RETRY_BASE_SECONDS, jittered over
[d, 2d) (full jitter over the doubling interval: never sooner than the contract's first retry,
spread so that a recovering receiver is not hit by every delivery at once), at most an hour;
a delivery queued more than WEBHOOK_RETRY_HOURS ago that fails again is `failed`. An endpoint
whose every attempt has failed for WEBHOOK_DISABLE_AFTER_HOURS is disabled (audited).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from app.audit.service import Actor, AuditService, RequestMeta
from app.events.records import StoredEvent
from app.events.store import EventStore
from app.kit.metrics import Metrics
from app.kit.settings import Settings
from app.kit.store import StoreError, epoch_ms
from app.webhooks import sender
from app.webhooks.repository import (
    LIVE,
    DeliveryRecord,
    ReplayJob,
    WebhookRecord,
    WebhookRepository,
)
from app.webhooks.secrets import SecretBox, SecretUnreadable, signature_header

log = logging.getLogger("orgsvc.webhooks")

FANOUT_PAGE = 200
FANOUT_PAGES_PER_PASS = 10
MAX_BACKOFF_SECONDS = 3600.0
GAUGE_REFRESH_SECONDS = 5.0
SYSTEM = Actor("system", "webhooks")


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """The worker's numbers, from the settings."""

    timeout_seconds: float = 10.0
    retry_base_seconds: float = 5.0
    retry_hours: float = 24.0
    disable_after_hours: float = 72.0
    allow_private: bool = False
    poll_seconds: float = 1.0
    max_concurrency: int = 64
    endpoint_concurrency: int = 4

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryPolicy:
        return cls(
            timeout_seconds=settings.webhook_timeout_seconds,
            retry_base_seconds=settings.webhook_retry_base_seconds,
            retry_hours=settings.webhook_retry_hours,
            disable_after_hours=settings.webhook_disable_after_hours,
            allow_private=settings.webhook_allow_private_networks,
            poll_seconds=settings.webhook_poll_seconds,
            max_concurrency=settings.webhook_max_concurrency,
            endpoint_concurrency=settings.webhook_endpoint_concurrency,
        )

    @property
    def lease_seconds(self) -> float:
        # Longer than one whole attempt (bounded by the timeout) plus the store's writes around
        # it, so no other replica claims a delivery whose attempt may still be under way.
        return self.timeout_seconds + 30.0

    def backoff_seconds(self, attempts: int) -> float:
        """The wait after failed attempt number `attempts` (1, 2, ...)."""
        exponent = min(max(attempts - 1, 0), 40)
        low = min(MAX_BACKOFF_SECONDS, self.retry_base_seconds * 2.0**exponent)
        return low * random.uniform(1.0, 2.0) if low < MAX_BACKOFF_SECONDS else low  # noqa: S311


def event_body(event: StoredEvent) -> str:
    """The delivered JSON (compact; signed exactly as sent)."""
    return json.dumps(event.public(), separators=(",", ":"), ensure_ascii=False)


def live_secrets(hook: WebhookRecord, now_ms: int) -> list[dict[str, object]]:
    """The endpoint's sealed secrets that still sign: the current one, and previous ones
    within their overlap."""
    return [
        s
        for s in hook.secrets
        if s.get("expires_ms") is None or int(str(s.get("expires_ms"))) > now_ms
    ]


class DeliveryWorker:
    """Fan-out and delivery of one process (see the module docstring)."""

    def __init__(
        self,
        repo: WebhookRepository,
        events: EventStore,
        *,
        box: SecretBox,
        metrics: Metrics,
        audit: AuditService,
        owner: str,
        policy: DeliveryPolicy,
    ) -> None:
        self.repo = repo
        self.events = events
        self.box = box
        self.metrics = metrics
        self.audit = audit
        self.owner = owner
        self.policy = policy
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._inflight: dict[str, int] = defaultdict(int)
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None  # made in `start` (the CLI never starts)
        self._gauges_at = 0.0

    # --- lifecycle -------------------------------------------------------------------------

    def kick(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._stop.clear()
        self._client = sender.make_client(
            timeout=self.policy.timeout_seconds, max_connections=self.policy.max_concurrency
        )
        self._task = asyncio.create_task(self._loop(), name="webhook-worker")

    async def stop(self) -> None:
        """Stop passing; let attempts in flight finish (each bounded by the timeout)."""
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, timeout=self.policy.timeout_seconds + 5)
            self._task = None
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=self.policy.timeout_seconds + 5)
            for task in late:
                task.cancel()  # its lease runs out; another replica retries it
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                await self.run_once()
            except StoreError as exc:
                log.warning("webhook pass skipped: %s", type(exc).__name__)
            except Exception:
                log.exception("webhook pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.policy.poll_seconds)

    # --- one pass --------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Fan out, then start the attempts that are due; returns how many were started."""
        hooks = await self.repo.enabled()
        by_id = {h.webhook_id: h for h in hooks}
        top = await self.events.published()
        for hook in hooks:
            await self._fan_out(hook, top)
        for job in await self.repo.replay_jobs():
            owner = by_id.get(job.webhook_id)
            if owner is not None:
                await self._fan_out_replay(owner, job)
        started = 0
        for hook in hooks:
            started += await self._dispatch(hook)
        await self._refresh_gauges()
        return started

    async def _fan_out(self, hook: WebhookRecord, top: int) -> None:
        cursor = hook.cursor
        for _ in range(FANOUT_PAGES_PER_PASS):
            if cursor >= top:
                return
            page = await self.events.page(
                after_seq=cursor, limit=FANOUT_PAGE, types=hook.types, upto=top
            )
            await self.repo.add_deliveries(
                [self.repo.new_delivery(hook.webhook_id, e.id, e.seq, LIVE) for e in page]
            )
            to = top if len(page) < FANOUT_PAGE else page[-1].seq
            if not await self.repo.advance(hook.webhook_id, cursor=cursor, to=to):
                return  # another replica moved it (or the endpoint changed): next pass
            cursor = to

    async def _fan_out_replay(self, hook: WebhookRecord, job: ReplayJob) -> None:
        for _ in range(FANOUT_PAGES_PER_PASS):
            page = await self.events.page(
                after_seq=job.cursor, limit=FANOUT_PAGE, types=hook.types, upto=job.upto
            )
            await self.repo.add_deliveries(
                [self.repo.new_delivery(hook.webhook_id, e.id, e.seq, job.generation) for e in page]
            )
            to = job.upto if len(page) < FANOUT_PAGE else page[-1].seq
            if not await self.repo.advance_replay(job, to=to) or to >= job.upto:
                return
            job = job.model_copy(update={"cursor": to})

    async def _dispatch(self, hook: WebhookRecord) -> int:
        free = min(
            self.policy.endpoint_concurrency - self._inflight[hook.webhook_id],
            self.policy.max_concurrency - len(self._tasks),
        )
        if free <= 0:
            return 0
        claims = await self.repo.claim(
            hook.webhook_id, owner=self.owner, lease_seconds=self.policy.lease_seconds, limit=free
        )
        for claim in claims:
            self._inflight[hook.webhook_id] += 1
            task = asyncio.create_task(self._attempt(claim), name=f"webhook-{claim.delivery_id}")
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._done, webhook_id=hook.webhook_id))
        return len(claims)

    def _done(self, task: asyncio.Task[None], webhook_id: str) -> None:
        self._tasks.discard(task)
        self._inflight[webhook_id] -= 1
        if self._inflight[webhook_id] <= 0:
            del self._inflight[webhook_id]
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.warning("webhook attempt not recorded: %s", type(exc).__name__)
        self._wake.set()  # a slot is free: the next due delivery of this endpoint may go

    # --- one attempt -----------------------------------------------------------------------

    async def _attempt(self, claim: DeliveryRecord) -> None:
        hook = await self.repo.get(claim.webhook_id)
        if hook is None:
            return  # deleted meanwhile (its deliveries are deleted with it)
        if not hook.enabled:
            await self.repo.mark_failed(claim, status_code=None, error="endpoint disabled")
            return
        doc = await self.events.events.find_one({"_id": claim.seq})
        if doc is None or doc.get("tombstone"):
            await self.repo.mark_failed(claim, status_code=None, error="event not found")
            return
        event = StoredEvent.model_validate(doc)
        now_ms = epoch_ms()
        try:
            keys = [
                self.box.open(sealed, webhook_id=hook.webhook_id)
                for sealed in live_secrets(hook, now_ms)
            ]
        except SecretUnreadable as exc:
            result = sender.Attempt(sender.ERROR, error=str(exc))
        else:
            body = event_body(event)
            timestamp = int(time.time())
            headers = {
                "webhook-id": event.id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": signature_header(
                    keys, msg_id=event.id, timestamp=timestamp, body=body
                ),
            }
            assert self._client is not None, "the worker is not started"
            result = await sender.attempt(
                self._client,
                hook.url,
                body=body.encode(),
                headers=headers,
                timeout_seconds=self.policy.timeout_seconds,
                allow_private=self.policy.allow_private,
            )
        self.metrics.observe_webhook_attempt(result.outcome)
        extra = {"webhook_id": hook.webhook_id, "event_id": event.id, "attempts": claim.attempts}
        if result.outcome == sender.DELIVERED:
            assert result.status_code is not None
            await self.repo.mark_delivered(claim, status_code=result.status_code)
            await self.repo.note_success(hook.webhook_id)
            lag = datetime.now(UTC) - event.occurred_at
            self.metrics.webhook_delivery_seconds.observe(max(0.0, lag.total_seconds()))
            return
        await self._failed(hook, claim, result, extra)

    async def _failed(
        self,
        hook: WebhookRecord,
        claim: DeliveryRecord,
        result: sender.Attempt,
        extra: dict[str, object],
    ) -> None:
        now_ms = epoch_ms()
        window_ms = self.policy.retry_hours * 3_600_000
        if now_ms - claim.created_ms >= window_ms:
            await self.repo.mark_failed(claim, status_code=result.status_code, error=result.error)
            log.warning(
                "webhook delivery failed for good after %d attempts: %s",
                claim.attempts,
                result.error,
                extra=extra,
            )
        else:
            delay = self.policy.backoff_seconds(claim.attempts)
            await self.repo.retry_later(
                claim,
                status_code=result.status_code,
                error=result.error,
                at_ms=now_ms + int(delay * 1000),
            )
            log.info(
                "webhook attempt %d failed (%s); next in %.1f s",
                claim.attempts,
                result.error,
                delay,
                extra=extra,
            )
            # Wake this process when it is due (other replicas find it on their polls).
            asyncio.get_running_loop().call_later(delay, self._wake.set)
        since = await self.repo.note_failure(hook.webhook_id, now_ms)
        if since is None or now_ms - since < self.policy.disable_after_hours * 3_600_000:
            return
        hours = self.policy.disable_after_hours
        if await self.repo.disable(
            hook.webhook_id,
            since_ms=since,
            reason=f"every attempt failed for {hours:g} h",
        ):
            await self.repo.fail_pending(hook.webhook_id, error="endpoint disabled")
            log.warning(
                "webhook endpoint disabled: every attempt failed for %g h", hours, extra=extra
            )
            await self.audit.record(
                "webhook.disabled",
                actor=SYSTEM,
                meta=RequestMeta(),
                organization_id=None,
                details={
                    "webhook_id": hook.webhook_id,
                    "failing_since_ms": since,
                    "last_error": result.error,
                },
            )

    async def _refresh_gauges(self) -> None:
        now = time.monotonic()
        if now - self._gauges_at < min(GAUGE_REFRESH_SECONDS, self.policy.poll_seconds * 5):
            return
        self._gauges_at = now
        count, oldest_ms = await self.repo.backlog()
        self.metrics.webhook_pending.set(count)
        lag = 0.0 if oldest_ms is None else max(0.0, (epoch_ms() - oldest_ms) / 1000)
        self.metrics.webhook_lag.set(lag)
