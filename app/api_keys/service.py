"""API keys: service keys made by the operator's CLI, and an organization's own keys made by
its owners and admins (`POST /org/api-keys`); shown once, stored only as a SHA-256 hash.

A key looks like `osk_<12 hex id>_<43 random url-safe chars>` (256 bits of randomness). The id
part is public: it is the record's `_id` and, as `osk_<id>`, the prefix shown in listings. The
whole key is hashed with SHA-256 (the key is high-entropy random, so a slow hash adds nothing)
and compared in constant time. Scopes of a service key: `org:read` (read any organization),
`org:create`, `org:list`, `org:write` (change, suspend, restore, delete any organization),
`org:move`, `events:read`, `webhooks:manage`. An organization's key has `org:read` and/or
`events:read` and acts for its organization only: any other is 404 to it, and it is revoked
with its organization.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from app.api_keys.repository import ACTIVE, REVOKED, ApiKey, ApiKeyRepository
from app.audit.service import Actor, AuditService, RequestMeta
from app.events.records import PendingEvent, Requirement
from app.kit.errors import AppError, NotFound, Unauthorized
from app.kit.events import DomainEvent, EventHook
from app.kit.store import epoch_ms
from app.organizations.events import event_actor
from app.organizations.records import Organization
from app.organizations.repository import OrganizationRepository

SCOPES = (
    "org:read",
    "org:create",
    "org:list",
    "org:write",
    "org:move",
    "events:read",
    "webhooks:manage",
)
ORG_SCOPES = ("org:read", "events:read")  # what an organization's own key may have
KEY_PATTERN = re.compile(r"^osk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})\Z")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:-]{0,63}\Z")
TOUCH_EVERY_MS = 60_000  # `last_used` is at most a minute stale: no write on every request


class InsufficientScope(AppError):
    status, code, detail = 403, "insufficient_scope", "This API key lacks the required scope."


def invalid_key() -> Unauthorized:
    return Unauthorized("Invalid or revoked API key.", code="invalid_api_key")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyPrincipal:
    """A caller authenticated by an API key: a service key (no organization: its scopes say
    what it may do), or an organization's own key (`organization`, read with the key)."""

    key_id: str
    name: str
    scopes: frozenset[str]
    organization_id: str | None = None
    organization: Organization | None = None

    @property
    def actor(self) -> Actor:
        return Actor("api_key", self.key_id)

    def require(self, scope: str) -> None:
        """403 `insufficient_scope` unless this key has `scope`."""
        if scope not in self.scopes:
            raise InsufficientScope(f"This API key lacks the {scope} scope.")


class ApiKeyService:
    """Creates, lists, revokes and checks API keys."""

    def __init__(
        self,
        repo: ApiKeyRepository,
        audit: AuditService,
        events: EventHook | None = None,
        orgs: OrganizationRepository | None = None,
    ) -> None:
        self.repo = repo
        self.audit = audit
        self.events = events or EventHook()
        self.orgs = orgs  # where an organization's key's events are recorded

    async def create(
        self,
        *,
        name: str,
        scopes: list[str],
        actor: Actor,
        meta: RequestMeta,
        organization_id: str | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key's public record and the key itself (shown once, never stored); with
        `organization_id`, that organization's own key (ORG_SCOPES only)."""
        if not NAME_PATTERN.match(name):
            raise ValueError("name: 1-64 letters, digits, space, . _ : - (starting alphanumeric)")
        allowed = ORG_SCOPES if organization_id is not None else SCOPES
        unknown = sorted(set(scopes) - set(allowed))
        if unknown or not scopes:
            raise ValueError(f"scopes must be some of {', '.join(allowed)}; got {unknown or '[]'}")
        key_id = secrets.token_hex(6)
        key = f"osk_{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(
            key_id=key_id,
            name=name,
            prefix=f"osk_{key_id}",
            scopes=sorted(set(scopes)),
            organization_id=organization_id,
            created_ms=epoch_ms(),
        )
        if organization_id is not None:
            # Its event first, in the organization's outbox, published once the key exists.
            exists = Requirement(collection="api_keys", doc_id=key_id, field="_id", value=key_id)
            await self._announce("api_key.created", organization_id, record, actor, exists)
        await self.repo.insert(record, key_hash=hash_key(key))
        await self.audit.record(
            "api_key.create",
            actor=actor,
            meta=meta,
            organization_id=organization_id,
            details={"key_id": key_id, "name": name, "scopes": record.scopes},
        )
        if organization_id is not None:
            await self.events.emit(DomainEvent("api_key.created", organization_id, _public(record)))
        return record, key

    async def list_keys(
        self, *, include_revoked: bool = False, organization_id: str | None = None
    ) -> list[ApiKey]:
        """Every key's public record (never a hash), oldest first; `organization_id`: that
        organization's own keys only."""
        return await self.repo.list_keys(
            include_revoked=include_revoked, organization_id=organization_id
        )

    async def revoke(
        self,
        key_id: str,
        *,
        actor: Actor,
        meta: RequestMeta,
        organization_id: str | None = None,
    ) -> ApiKey | None:
        """Revoke a key by id or prefix (`organization_id`: only one of that organization's);
        None when no active key matches."""
        key_id = key_id.removeprefix("osk_")
        if organization_id is not None:
            found = await self.repo.get_with_hash(key_id)  # one read by id, not a listing
            live = found[0] if found is not None else None
            if (
                live is not None
                and live.organization_id == organization_id
                and (live.status == ACTIVE)
            ):
                revoked = Requirement(
                    collection="api_keys", doc_id=key_id, field="status", value=REVOKED
                )
                await self._announce("api_key.revoked", organization_id, live, actor, revoked)
        record = await self.repo.revoke(key_id, organization_id=organization_id)
        await self.audit.record(
            "api_key.revoke",
            actor=actor,
            meta=meta,
            organization_id=organization_id,
            outcome="success" if record else "failure",
            code=None if record else "not_found",
            details={"key_id": key_id},
        )
        if record is not None and record.organization_id is not None:
            await self.events.emit(
                DomainEvent("api_key.revoked", record.organization_id, _public(record))
            )
        return record

    async def _announce(
        self, type_: str, org_id: str, key: ApiKey, actor: Actor, requires: Requirement
    ) -> None:
        """Record the key's event in its organization's outbox, to be published once the
        change it names is in `api_keys` (`requires`; dropped if that never happens)."""
        if self.orgs is None:
            return
        event = PendingEvent.of(
            type_, org_id, _public(key), actor=event_actor(actor), requires=requires
        )
        if await self.orgs.change(org_id, lambda _: ({}, [event])) is None:
            raise NotFound()

    async def authenticate(self, presented: str) -> KeyPrincipal:
        """The key's principal; 401 `invalid_api_key` for a malformed, unknown or revoked key."""
        match = KEY_PATTERN.match(presented)
        if match is None:
            raise invalid_key()
        found = await self.repo.get_with_hash(match.group(1))
        if found is None:
            raise invalid_key()
        record, stored_hash = found
        if not hmac.compare_digest(stored_hash, hash_key(presented)) or record.status != ACTIVE:
            raise invalid_key()
        now = epoch_ms()
        if (record.last_used_ms or 0) < now - TOUCH_EVERY_MS:
            await self.repo.touch(record.key_id, now_ms=now)
        return KeyPrincipal(
            key_id=record.key_id,
            name=record.name,
            scopes=frozenset(record.scopes),
            organization_id=record.organization_id,
        )


def _public(record: ApiKey) -> dict[str, object]:
    data = record.model_dump(mode="json", include={"key_id", "name", "prefix", "scopes"})
    return {**data, "organization_id": record.organization_id}
