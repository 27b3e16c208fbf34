"""create_app(): the lifespan (client, indexes, reconciler), routers and error handlers."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pymongo import AsyncMongoClient

from app import __version__
from app.api import admin, audit, health, jwks, ops, org
from app.config import Settings, get_settings
from app.db import EmbeddedMongo, make_client, require_embedded_store
from app.edges import install_edges
from app.errors import install_error_handlers
from app.faults import FaultInjector
from app.metrics import Metrics
from app.middleware import RequestContextMiddleware
from app.security.keys import KeyRing
from app.security.passwords import PasswordHasher
from app.security.tokens import TokenManager
from app.services.api_keys import ApiKeyService
from app.services.audit import AuditService
from app.services.auth import AuthService
from app.services.context import OperationContext, Stores
from app.services.organizations import OrganizationService
from app.services.rate_limit import LoginLimiter
from app.services.reconciler import Reconciler
from app.state import AppState

log = logging.getLogger("orgsvc")

Client = AsyncMongoClient[dict[str, Any]]


async def _open_client(settings: Settings) -> tuple[Client, EmbeddedMongo | None]:
    if settings.mongodb_url is not None:
        return make_client(settings.mongodb_url.get_secret_value(), settings), None
    require_embedded_store()  # the `embedded` extra; a clear refusal rather than a dead child
    embedded = EmbeddedMongo(settings.embedded_data_dir, port=settings.embedded_port)
    log.warning(
        "MONGODB_URL is not set: starting an embedded nx-27017 store (SQLite, data in %s, "
        "port %d). This is for development only, NOT for production.",
        embedded.data_dir,
        embedded.port,
    )
    await embedded.start()
    return make_client(embedded.url, settings), embedded


def build_state(
    settings: Settings, client: Client, metrics: Metrics, *, owner: str = "api"
) -> AppState:
    """Wire the stores and services of one process over `client` (the HTTP service and the
    CLI alike); `owner` names the process in the operations it holds."""
    stores = Stores.over(client[settings.mongodb_db])
    ctx = OperationContext(
        settings=settings,
        owner=f"{owner}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
        fault=FaultInjector(settings.fault_point_set),
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
    reconciler.deleted_observers.append(audit_log.organization_deleted)
    return AppState(
        settings=settings,
        metrics=metrics,
        client=client,
        stores=stores,
        hasher=hasher,
        tokens=tokens,
        orgs=OrganizationService(stores, ctx, hasher),
        auth=AuthService(
            stores,
            hasher,
            tokens,
            limiter=LoginLimiter(stores.login_attempts, settings),
            audit=audit_log,
        ),
        reconciler=reconciler,
        audit=audit_log,
        api_keys=ApiKeyService(stores.api_keys, audit_log),
    )


def create_app(settings: Settings | None = None, *, client: Client | None = None) -> FastAPI:
    """The ASGI app. Tests may hand in their own settings and client (e.g. an in-memory double)."""
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        embedded = None
        own_client = client is None
        if client is None:
            the_client, embedded = await _open_client(settings)
        else:
            the_client = client
        state = build_state(settings, the_client, metrics)
        try:
            await state.stores.ensure_indexes()
            await state.hasher.dummy_hash()
            fixed = await state.reconciler.run_once()
            if fixed:
                log.info("start-up reconcile: %s", dict(fixed))
            state.reconciler.start()
            app.state.svc = state
            yield
        finally:
            # uvicorn has drained in-flight requests by now; stop what runs in the background.
            await state.reconciler.stop()
            state.hasher.close()
            if own_client:
                await the_client.close()
            if embedded is not None:
                await embedded.stop()
            log.info(
                "shutdown complete: reconciler stopped, hash pool closed, database client closed",
                extra={"embedded_store_stopped": embedded is not None},
            )

    app = FastAPI(
        title="Organization service",
        version=__version__,
        summary="Organizations, their tenant collections, and admin login with JWTs.",
        lifespan=lifespan,
        # A trailing slash is a plain 404: Starlette's redirect would build its Location from
        # the Host header (an open redirect to whatever host the caller names).
        redirect_slashes=False,
    )
    # First: its unexpected-error middleware must stay innermost, so a 500 passes through all
    # the others (request id, security headers, access log).
    install_error_handlers(app, on_db_error=metrics.observe_db_error)
    install_edges(app, settings)  # inner to the request context: 413s get a request id too
    app.add_middleware(RequestContextMiddleware, observers=[metrics.observe_request])
    app.include_router(org.router)
    app.include_router(admin.router)
    app.include_router(health.router)
    app.include_router(ops.router)
    app.include_router(audit.router)
    app.include_router(jwks.router)
    if settings.org_create_requires_key:
        org.document_required_create_key(app)
    return app
