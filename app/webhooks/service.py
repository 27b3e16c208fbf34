"""The webhooks feature's parts, as the composition root (`app.wiring`) builds and runs them:
the endpoints' rules (the API's `/webhooks`) and the delivery worker of this process."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from app.audit.service import Actor, AuditService, RequestMeta
from app.events.store import EventStore
from app.kit.errors import InvalidInput, NotFound
from app.kit.metrics import Metrics
from app.kit.pagination import decode_cursor, encode_cursor, invalid_cursor
from app.kit.settings import Settings
from app.kit.store import Database, Doc, epoch_ms, is_id, new_id, utcnow
from app.webhooks import guard
from app.webhooks.repository import DeliveryRecord, WebhookRecord, WebhookRepository
from app.webhooks.secrets import SecretBox, new_secret
from app.webhooks.worker import DeliveryPolicy, DeliveryWorker

MAX_LIVE_SECRETS = 5  # the current one and at most four still in their overlap
_DELIVERY_CURSOR = re.compile(r"^([0-9]{1,18})\.([0-9]{1,9})\Z")


def webhook_not_found() -> NotFound:
    return NotFound("Webhook not found.")


def _unsafe(exc: guard.UnsafeUrl) -> InvalidInput:
    return InvalidInput([{"type": "value_error", "loc": ["body", "url"], "msg": str(exc)}])


class Webhooks:
    """Endpoints, deliveries and the delivery worker of one process."""

    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        events: EventStore,
        metrics: Metrics,
        audit: AuditService,
        owner: str,
    ) -> None:
        self.settings = settings
        self.db = db
        self.events = events
        self.metrics = metrics
        self.audit = audit
        self.owner = owner
        self.repo = WebhookRepository(
            db,
            retention_days=settings.webhook_delivery_retention_days,
            retry_hours=settings.webhook_retry_hours,
        )
        self.box = SecretBox.from_settings(settings)
        self.overlap = timedelta(hours=settings.webhook_secret_overlap_hours)
        self.worker = DeliveryWorker(
            self.repo,
            events,
            box=self.box,
            metrics=metrics,
            audit=audit,
            owner=owner,
            policy=DeliveryPolicy.from_settings(settings),
        )

    async def ensure_indexes(self) -> None:
        """Create this feature's indexes (start-up)."""
        await self.repo.ensure_indexes()

    def start(self) -> None:
        """Start the delivery worker (lifespan start)."""
        self.worker.start()

    async def stop(self) -> None:
        """Stop the delivery worker (lifespan end), letting an attempt in flight finish."""
        await self.worker.stop()

    def kick(self) -> None:
        """New events were published: look for deliveries now rather than at the next tick."""
        self.worker.kick()

    # --- endpoints -------------------------------------------------------------------------

    async def _check_url(self, url: str) -> None:
        try:
            await guard.check(url, allow_private=self.settings.webhook_allow_private_networks)
        except guard.UnsafeUrl as exc:
            raise _unsafe(exc) from exc

    async def get(self, webhook_id: str) -> WebhookRecord:
        """The endpoint, or 404 `not_found`."""
        hook = await self.repo.get(webhook_id) if is_id(webhook_id) else None
        if hook is None:
            raise webhook_not_found()
        return hook

    async def create(
        self, *, url: str, types: list[str], description: str, actor: Actor, meta: RequestMeta
    ) -> tuple[WebhookRecord, str]:
        """Register an endpoint (its URL checked by the SSRF guard); returns it and its secret.
        It receives the events published from now on."""
        await self._check_url(url)
        webhook_id = new_id()
        secret = new_secret()
        now = utcnow()
        doc: Doc = {
            "_id": webhook_id,
            "url": url,
            "types": types,
            "description": description,
            "enabled": True,
            "created_at": now,
            "secrets": [{**self.box.seal(secret, webhook_id=webhook_id), "created_ms": epoch_ms()}],
            "cursor": await self.events.published(),
            "generation": 0,
            "failing_since_ms": None,
            "disabled_reason": None,
        }
        await self.repo.insert(doc)
        await self.audit.record(
            "webhook.created",
            actor=actor,
            meta=meta,
            organization_id=None,
            details={"webhook_id": webhook_id, "url": url, "types": types},
        )
        self.kick()
        return WebhookRecord.model_validate(doc), secret

    async def page(
        self, *, limit: int, cursor: str | None
    ) -> tuple[list[WebhookRecord], str | None]:
        """A page of endpoints, oldest first, and the next page's cursor."""
        after = None
        if cursor is not None:
            after = decode_cursor(cursor)
            if not is_id(after):
                raise invalid_cursor()
        found = await self.repo.page(after=after, limit=limit + 1)
        more = len(found) > limit
        found = found[:limit]
        return found, encode_cursor(found[-1].webhook_id) if more and found else None

    async def update(
        self, webhook_id: str, changes: Doc, *, actor: Actor, meta: RequestMeta
    ) -> WebhookRecord:
        """Change any of url, types, description, enabled (a new URL is checked again)."""
        hook = await self.get(webhook_id)
        if "url" in changes:
            await self._check_url(changes["url"])
        if changes.get("enabled") is True and not hook.enabled:
            # Resumed from the feed's end, with a clean failure record.
            changes = {
                **changes,
                "cursor": await self.events.published(),
                "failing_since_ms": None,
                "disabled_reason": None,
            }
        if changes.get("enabled") is False and hook.enabled:
            changes = {**changes, "disabled_reason": "disabled by an operator"}
        updated = await self.repo.update(webhook_id, changes)
        if updated is None:
            raise webhook_not_found()
        if changes.get("enabled") is False and hook.enabled:
            await self.repo.fail_pending(webhook_id, error="endpoint disabled")
        await self.audit.record(
            "webhook.updated",
            actor=actor,
            meta=meta,
            organization_id=None,
            details={"webhook_id": webhook_id, "fields": sorted(k for k in changes if k in (
                "url", "types", "description", "enabled"))},
        )  # fmt: skip
        self.kick()
        return updated

    async def delete(self, webhook_id: str, *, actor: Actor, meta: RequestMeta) -> None:
        """Remove an endpoint and its delivery history."""
        if not is_id(webhook_id) or not await self.repo.delete(webhook_id):
            raise webhook_not_found()
        await self.audit.record(
            "webhook.deleted",
            actor=actor,
            meta=meta,
            organization_id=None,
            details={"webhook_id": webhook_id},
        )

    async def rotate_secret(
        self, webhook_id: str, *, actor: Actor, meta: RequestMeta
    ) -> tuple[str, datetime]:
        """A new signing secret; the previous one keeps signing for the overlap (24 h).
        Returns the new secret (shown once) and when the previous one stops."""
        hook = await self.get(webhook_id)
        now_ms = epoch_ms()
        until_ms = now_ms + int(self.overlap.total_seconds() * 1000)
        kept = []
        for sealed in hook.secrets:
            expires = sealed.get("expires_ms")
            if expires is None:
                kept.append({**sealed, "expires_ms": until_ms})
            elif int(expires) > now_ms:
                kept.append(sealed)
        secret = new_secret()
        fresh = {**self.box.seal(secret, webhook_id=webhook_id), "created_ms": now_ms}
        secrets = [fresh, *kept][:MAX_LIVE_SECRETS]
        if await self.repo.update(webhook_id, {"secrets": secrets}) is None:
            raise webhook_not_found()
        await self.audit.record(
            "webhook.secret_rotated",
            actor=actor,
            meta=meta,
            organization_id=None,
            details={"webhook_id": webhook_id},
        )
        return secret, datetime.fromtimestamp(until_ms / 1000, UTC)

    async def deliveries(
        self, webhook_id: str, *, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[DeliveryRecord], str | None]:
        """A page of the endpoint's deliveries, newest event first."""
        await self.get(webhook_id)
        before = None
        if cursor is not None:
            match = _DELIVERY_CURSOR.match(decode_cursor(cursor))
            if match is None:
                raise invalid_cursor()
            before = (int(match.group(1)), int(match.group(2)))
        found = await self.repo.deliveries_page(
            webhook_id, status=status, before=before, limit=limit + 1
        )
        more = len(found) > limit
        found = found[:limit]
        last = found[-1] if more and found else None
        return found, encode_cursor(f"{last.seq}.{last.generation}") if last else None

    async def replay(self, webhook_id: str, *, after: str, actor: Actor, meta: RequestMeta) -> int:
        """Queue every matching event after `after` for delivery again; returns the replay's
        generation (the suffix of its deliveries' ids)."""
        await self.get(webhook_id)
        seq = await self.events.seq_of(after)
        if seq is None:
            raise InvalidInput(
                [{"type": "value_error", "loc": ["body", "after"], "msg": "unknown event id"}]
            )
        upto = await self.events.published()
        generation = await self.repo.next_generation(webhook_id)
        if generation is None:
            raise webhook_not_found()
        await self.repo.add_replay(webhook_id, generation=generation, after=seq, upto=upto)
        await self.audit.record(
            "webhook.replayed",
            actor=actor,
            meta=meta,
            organization_id=None,
            details={"webhook_id": webhook_id, "after": after, "generation": generation},
        )
        self.kick()
        return generation
