"""The stores and helpers a service needs, built once per process in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.api_keys.repository import ApiKeyRepository
from app.audit.repository import AuditRepository
from app.auth.admins import AdminRepository
from app.auth.attempts import LoginAttemptRepository
from app.auth.revocations import RevocationRepository
from app.kit.events import EventHook
from app.kit.faults import FaultInjector
from app.kit.settings import Settings
from app.kit.store import Database
from app.organizations.repository import OrganizationRepository
from app.tenancy.claims import ClaimRepository
from app.tenancy.collections import TenantCollections
from app.tenancy.operations import OperationRepository


@dataclass(slots=True)
class Stores:
    """Every repository, over one database."""

    orgs: OrganizationRepository
    admins: AdminRepository
    claims: ClaimRepository
    ops: OperationRepository
    tenants: TenantCollections
    login_attempts: LoginAttemptRepository
    revocations: RevocationRepository
    api_keys: ApiKeyRepository
    audit: AuditRepository
    # The store refuses non-ASCII collection names (nx-27017 does; MongoDB does not): found out
    # at start-up, so such names are a clear 422 there instead of a failed create or rename.
    ascii_only_names: bool = False

    @classmethod
    def over(cls, db: Database) -> Stores:
        return cls(
            orgs=OrganizationRepository(db),
            admins=AdminRepository(db),
            claims=ClaimRepository(db),
            ops=OperationRepository(db),
            tenants=TenantCollections(db),
            login_attempts=LoginAttemptRepository(db),
            revocations=RevocationRepository(db),
            api_keys=ApiKeyRepository(db),
            audit=AuditRepository(db),
        )

    async def ensure_indexes(self) -> None:
        """Create every index the service relies on (idempotent; run at start-up)."""
        await self.orgs.ensure_indexes()
        await self.admins.ensure_indexes()
        await self.claims.ensure_indexes()
        await self.ops.ensure_indexes()
        await self.login_attempts.ensure_indexes()
        await self.revocations.ensure_indexes()
        await self.api_keys.ensure_indexes()
        await self.audit.ensure_indexes()
        self.ascii_only_names = not await self.tenants.accepts_unicode_names()


@dataclass(slots=True)
class OperationContext:
    """What a multi-step operation needs besides the stores."""

    settings: Settings
    owner: str  # this process's identity, recorded on the operations it holds
    fault: FaultInjector
    events: EventHook = field(default_factory=EventHook)  # where the steps' events go
