"""Everything one process builds at start-up, handed to routes through dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymongo import AsyncMongoClient

from app.config import Settings
from app.metrics import Metrics
from app.security.passwords import PasswordHasher
from app.security.tokens import TokenManager
from app.services.api_keys import ApiKeyService
from app.services.audit import AuditService
from app.services.auth import AuthService
from app.services.context import Stores
from app.services.organizations import OrganizationService
from app.services.reconciler import Reconciler


@dataclass(slots=True)
class AppState:
    """The process's client, stores and services."""

    settings: Settings
    metrics: Metrics
    client: AsyncMongoClient[dict[str, Any]]
    stores: Stores
    hasher: PasswordHasher
    tokens: TokenManager
    orgs: OrganizationService
    auth: AuthService
    reconciler: Reconciler
    audit: AuditService
    api_keys: ApiKeyService
