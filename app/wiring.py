"""The composition root: everything one process builds at start-up (`build_state`), the only
code that knows every feature; `app.main` runs it in the lifespan, the CLI runs it too."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from pymongo import AsyncMongoClient

from app.api_keys.service import ApiKeyService
from app.audit.service import AuditService
from app.auth.passwords import PasswordHasher
from app.auth.rate_limit import LoginLimiter
from app.auth.service import AuthService
from app.auth.tokens import TokenManager
from app.kit.events import EventHook
from app.kit.faults import FaultInjector
from app.kit.keys import KeyRing
from app.kit.metrics import Metrics
from app.kit.settings import Settings
from app.organizations.service import OrganizationService
from app.tenancy.context import OperationContext, Stores
from app.tenancy.reconciler import Reconciler


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
    events: EventHook


Client = AsyncMongoClient[dict[str, Any]]


def build_state(
    settings: Settings, client: Client, metrics: Metrics, *, owner: str = "api"
) -> AppState:
    """Wire the stores and services of one process over `client` (the HTTP service and the
    CLI alike); `owner` names the process in the operations it holds."""
    stores = Stores.over(client[settings.mongodb_db])
    events = EventHook()
    ctx = OperationContext(
        settings=settings,
        owner=f"{owner}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
        fault=FaultInjector(settings.fault_point_set),
        events=events,
    )
    hasher = PasswordHasher(rounds=settings.bcrypt_rounds, workers=settings.hash_pool_size)
    hasher.observers.append(metrics.hash_wait.observe)
    metrics.hash_queue.set_function(lambda: hasher.queued)
    tokens = TokenManager(
        keys=KeyRing.from_settings(settings),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        expires_minutes=settings.jwt_expires_minutes,
    )
    audit_log = AuditService(stores.audit, retention_days=settings.audit_retention_days)
    audit_log.error_observers.append(metrics.observe_db_error)
    reconciler = Reconciler(stores, ctx)
    reconciler.observers.append(metrics.observe_reconcile)
    reconciler.error_observers.append(metrics.observe_db_error)
    events.subscribe(audit_log.on_event)  # the audit log is the first consumer of events
    return AppState(
        settings=settings,
        metrics=metrics,
        client=client,
        stores=stores,
        hasher=hasher,
        tokens=tokens,
        orgs=OrganizationService(stores, ctx, hasher, audit_log),
        auth=AuthService(
            stores,
            hasher,
            tokens,
            limiter=LoginLimiter(stores.login_attempts, settings),
            audit=audit_log,
            events=events,
        ),
        reconciler=reconciler,
        audit=audit_log,
        api_keys=ApiKeyService(stores.api_keys, audit_log),
        events=events,
    )
