"""The audit log: every mutating action and every login, with who, where, and how it ended.

Policy when an entry cannot be written: the action has already happened (or failed) in the
database, so its answer stands; turning a done change into a 500 would make the caller retry a
change that was made. The entry is not lost silently either: it is written to the error log as
one structured `audit entry not written` line (the same fields, no secrets), and the
`error_observers` hooks (metrics) are told. Entries never hold a password, hash, token or API key:
`details` is filtered against a list of secret-looking keys before anything is stored or logged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from app.audit.repository import ActorRecord, AuditRecord, AuditRepository
from app.kit.errors import AppError
from app.kit.events import DomainEvent
from app.kit.pagination import decode_cursor, encode_cursor, invalid_cursor
from app.kit.store import Doc, StoreError, StoreUnavailable, epoch_ms, new_id, utcnow

log = logging.getLogger("orgsvc.audit")

SUCCESS, FAILURE = "success", "failure"
# Never stored, whatever a caller puts in `details`.
SECRET_KEYS = frozenset(
    {"password", "password_hash", "hash", "token", "access_token", "key", "api_key", "secret"}
)
AUDIT_CURSOR_FORMAT = "audit-cursor"  # the OpenAPI format of `GET /org/audit`'s cursor
_CURSOR = re.compile(r"^([0-9]{1,16})\.([0-9a-f]{24})\Z")


@dataclass(frozen=True, slots=True)
class RequestMeta:
    """Where a request came from: the client IP (after trusted proxies) and its request id."""

    ip: str | None = None
    request_id: str | None = None
    user_agent: str | None = None  # kept on sessions (at most 200 characters), not in audit entries


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acted: an admin, a service API key, the operator's CLI, or nobody known."""

    type: str  # "admin" | "api_key" | "cli" | "anonymous"
    id: str | None = None

    def as_record(self) -> ActorRecord:
        return ActorRecord(type=self.type, id=self.id)


ANONYMOUS = Actor("anonymous")
CLI_META = RequestMeta()


@dataclass(slots=True)
class Draft:
    """An entry being tracked; the action may fill in what it learns (e.g. the new org's id)."""

    organization_id: str | None
    details: Doc = field(default_factory=dict)
    # Set by an action that ended its organization: the entry is written after the
    # organization's other entries got their retention clock, so it starts its own.
    closes_organization: bool = False


def clean(details: Doc) -> Doc:
    """`details` without anything that looks like a secret (recursively)."""
    out: Doc = {}
    for key, value in details.items():
        if key.lower() in SECRET_KEYS:
            continue
        out[key] = clean(value) if isinstance(value, dict) else value
    return out


class AuditService:
    """Writes audit entries and pages through them."""

    def __init__(self, repo: AuditRepository, *, retention_days: float) -> None:
        self.repo = repo
        self.retention = timedelta(days=retention_days)
        self.error_observers: list[Callable[[BaseException], None]] = []

    async def record(
        self,
        action: str,
        *,
        actor: Actor,
        meta: RequestMeta,
        organization_id: str | None,
        outcome: str = SUCCESS,
        code: str | None = None,
        details: Doc | None = None,
        log_only: bool = False,
        closes_organization: bool = False,
    ) -> None:
        """Write one entry; a database failure is logged (never raised): see the module doc."""
        now = utcnow()
        entry = AuditRecord(
            id=new_id(),
            at=now,
            at_ms=epoch_ms(),
            action=action,
            outcome=outcome,
            code=code,
            actor=actor.as_record(),
            organization_id=organization_id,
            ip=meta.ip,
            request_id=meta.request_id,
            details=clean(details or {}),
        )
        # An entry of no organization would otherwise live for ever: it gets its clock now.
        expires_at = None if organization_id else now + self.retention
        expires_ms = None
        if closes_organization:
            expires_at = now + self.retention
            expires_ms = epoch_ms(self.retention.total_seconds())
        if log_only:
            log.error(
                "audit entry not written", extra={"audit": entry.to_doc(), "error": "skipped"}
            )
            return
        try:
            await self.repo.insert(entry, expires_at=expires_at, expires_ms=expires_ms)
        except StoreError as exc:
            self._write_failed("audit entry not written", exc, audit=entry.to_doc())

    @asynccontextmanager
    async def track(
        self,
        action: str,
        *,
        actor: Actor,
        meta: RequestMeta,
        organization_id: str | None = None,
        details: Doc | None = None,
    ) -> AsyncIterator[Draft]:
        """Record `action` when the block ends: success, or failure with the error's code."""
        draft = Draft(organization_id=organization_id, details=dict(details or {}))
        try:
            yield draft
        except AppError as exc:
            await self.record(
                action, actor=actor, meta=meta, organization_id=draft.organization_id,
                outcome=FAILURE, code=exc.code, details=draft.details,
            )  # fmt: skip
            raise
        except Exception as exc:
            down = isinstance(exc, StoreUnavailable)
            await self.record(
                action, actor=actor, meta=meta, organization_id=draft.organization_id,
                outcome=FAILURE, code="database_unavailable" if down else "internal_error",
                details=draft.details,
                log_only=down,  # the database just failed: do not wait for it a second time
            )  # fmt: skip
            raise
        await self.record(
            action, actor=actor, meta=meta, organization_id=draft.organization_id,
            details=draft.details, closes_organization=draft.closes_organization,
        )  # fmt: skip

    async def on_event(self, event: DomainEvent) -> None:
        """The audit log's part in domain events: a deleted organization's entries start their
        retention clock, whoever finished the delete (a request or the reconciler)."""
        if event.type == "organization.deleted":
            await self.organization_deleted(event.organization_id)

    async def organization_deleted(self, organization_id: str) -> None:
        """Keep a deleted organization's entries for the retention period, then let TTL go."""
        expires_at = utcnow() + self.retention
        try:
            await self.repo.expire_organization(
                organization_id,
                expires_at=expires_at,
                expires_ms=epoch_ms(self.retention.total_seconds()),
            )
        except StoreError as exc:
            self._write_failed(
                "audit retention not started for a deleted organization",
                exc,
                organization_id=organization_id,
            )

    def _write_failed(self, message: str, exc: StoreError, **fields: Any) -> None:
        """A failed audit write is logged and counted, never raised (see the module docstring)."""
        log.error(message, extra={**fields, "error": type(exc).__name__})
        for observe in self.error_observers:
            observe(exc)

    async def page(
        self, organization_id: str, *, limit: int, cursor: str | None
    ) -> tuple[list[AuditRecord], str | None]:
        """A page of the organization's entries, newest first, and the cursor of the next."""
        before = entry_position(cursor) if cursor else None
        entries = await self.repo.page(organization_id, limit=limit + 1, before=before)
        more = len(entries) > limit
        entries = entries[:limit]
        next_cursor = entry_cursor(entries[-1].at_ms, entries[-1].id) if more else None
        return entries, next_cursor


def entry_cursor(at_ms: int, entry_id: str) -> str:
    return encode_cursor(f"{int(at_ms)}.{entry_id}")


def entry_position(cursor: str) -> tuple[int, str]:
    """(at_ms, id) from an opaque cursor; a 422 for anything this service did not make."""
    match = _CURSOR.match(decode_cursor(cursor))
    if match is None:
        raise invalid_cursor()
    return int(match.group(1)), match.group(2)
