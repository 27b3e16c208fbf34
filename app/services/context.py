"""The stores and helpers a service needs, built once per process in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from app.config import Settings
from app.faults import FaultInjector
from app.repositories.admins import AdminRepository
from app.repositories.api_keys import ApiKeyRepository
from app.repositories.audit import AuditRepository
from app.repositories.base import Database
from app.repositories.claims import ClaimRepository
from app.repositories.operations import OperationRepository
from app.repositories.organizations import OrganizationRepository
from app.repositories.rate_limits import LoginAttemptRepository
from app.repositories.revocations import RevocationRepository
from app.repositories.tenants import TenantCollections


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
