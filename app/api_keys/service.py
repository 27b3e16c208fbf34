"""Service API keys: created by the operator's CLI, shown once, stored only as a SHA-256 hash.

A key looks like `osk_<12 hex id>_<43 random url-safe chars>` (256 bits of randomness). The id
part is public: it is the record's `_id` and, as `osk_<id>`, the prefix shown in listings. The
whole key is hashed with SHA-256 (the key is high-entropy random, so a slow hash adds nothing)
and compared in constant time. Scopes: `org:read` (GET /org/get, any organization), `org:create`
(POST /org/create), `org:list` (GET /org/list).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from app.api_keys.repository import ACTIVE, ApiKey, ApiKeyRepository
from app.audit.service import Actor, AuditService, RequestMeta
from app.kit.errors import AppError, Unauthorized
from app.kit.store import epoch_ms

SCOPES = ("org:read", "org:create", "org:list")
KEY_PATTERN = re.compile(r"^osk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:-]{0,63}$")
TOUCH_EVERY_MS = 60_000  # `last_used` is at most a minute stale: no write on every request


class InsufficientScope(AppError):
    status, code, detail = 403, "insufficient_scope", "This API key lacks the required scope."


def invalid_key() -> Unauthorized:
    return Unauthorized("Invalid or revoked API key.", code="invalid_api_key")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyPrincipal:
    """A caller authenticated by a service API key."""

    key_id: str
    name: str
    scopes: frozenset[str]

    @property
    def actor(self) -> Actor:
        return Actor("api_key", self.key_id)

    @property
    def organization(self) -> None:
        """A service key acts for no one organization (its scopes say what it may do)."""
        return None

    def require(self, scope: str) -> None:
        """403 `insufficient_scope` unless this key has `scope`."""
        if scope not in self.scopes:
            raise InsufficientScope(f"This API key lacks the {scope} scope.")


class ApiKeyService:
    """Creates, lists, revokes and checks API keys."""

    def __init__(self, repo: ApiKeyRepository, audit: AuditService) -> None:
        self.repo = repo
        self.audit = audit

    async def create(
        self, *, name: str, scopes: list[str], actor: Actor, meta: RequestMeta
    ) -> tuple[ApiKey, str]:
        """A new key's public record and the key itself (shown once, never stored)."""
        if not NAME_PATTERN.match(name):
            raise ValueError("name: 1-64 letters, digits, space, . _ : - (starting alphanumeric)")
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; got {unknown or '[]'}")
        key_id = secrets.token_hex(6)
        key = f"osk_{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(
            key_id=key_id,
            name=name,
            prefix=f"osk_{key_id}",
            scopes=sorted(set(scopes)),
            created_ms=epoch_ms(),
        )
        await self.repo.insert(record, key_hash=hash_key(key))
        await self.audit.record(
            "api_key.create",
            actor=actor,
            meta=meta,
            organization_id=None,
            details={"key_id": key_id, "name": name, "scopes": record.scopes},
        )
        return record, key

    async def list_keys(self, *, include_revoked: bool = False) -> list[ApiKey]:
        """Every key's public record (never a hash), oldest first."""
        return await self.repo.list_keys(include_revoked=include_revoked)

    async def revoke(self, key_id: str, *, actor: Actor, meta: RequestMeta) -> ApiKey | None:
        """Revoke a key by id or prefix; None when no active key matches."""
        key_id = key_id.removeprefix("osk_")
        record = await self.repo.revoke(key_id)
        await self.audit.record(
            "api_key.revoke",
            actor=actor,
            meta=meta,
            organization_id=None,
            outcome="success" if record else "failure",
            code=None if record else "not_found",
            details={"key_id": key_id},
        )
        return record

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
        return KeyPrincipal(key_id=record.key_id, name=record.name, scopes=frozenset(record.scopes))
