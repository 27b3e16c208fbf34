"""create_app(): the lifespan (client, indexes, reconciler), routers and error handlers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pymongo import AsyncMongoClient

from app import __version__
from app.api_keys import router as org_keys_router
from app.audit import router as audit_router
from app.auth import jwks
from app.auth import router as auth_router
from app.events import router as events_router
from app.kit.db import EmbeddedMongo, make_client, require_embedded_store
from app.kit.edges import install_edges
from app.kit.errors import install_error_handlers
from app.kit.metrics import Metrics
from app.kit.middleware import RequestContextMiddleware
from app.kit.responses import document_suspension
from app.kit.settings import Settings, get_settings
from app.members import router as members_router
from app.ops import health
from app.ops import metrics as metrics_router
from app.organizations import move_router
from app.organizations import operator as operator_router
from app.organizations import router as org_router
from app.pages import reset as reset_page
from app.pages import router as pages_router
from app.recovery import router as recovery_router
from app.sessions import router as sessions_router
from app.webhooks import router as webhooks_router
from app.wiring import build_state

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
            await state.prepare()
            await state.hasher.dummy_hash()
            fixed = await state.reconciler.run_once()
            if fixed:
                log.info("start-up reconcile: %s", dict(fixed))
            state.auth_cache.start()
            state.reconciler.start()
            state.mail.start()
            state.webhooks.start()
            state.publisher.on_published.append(lambda _: state.webhooks.kick())
            state.publisher.start()
            app.state.svc = state
            yield
        finally:
            # uvicorn has drained in-flight requests by now; stop what runs in the background.
            await state.reconciler.stop()
            await state.moves.stop()
            await state.auth_cache.stop()
            await state.mail.stop()
            await state.publisher.stop()
            await state.webhooks.stop()
            state.hasher.close()
            await state.repos.tenants.clusters.close()  # the other clusters' clients
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
    app.include_router(org_router.router)
    app.include_router(operator_router.router)
    app.include_router(move_router.router)
    app.include_router(org_keys_router.router)
    app.include_router(webhooks_router.router)
    app.include_router(events_router.router)
    app.include_router(auth_router.router)
    app.include_router(health.router)
    app.include_router(metrics_router.router)
    app.include_router(audit_router.router)
    app.include_router(members_router.router)
    app.include_router(sessions_router.router)
    app.include_router(jwks.router)
    app.include_router(pages_router.router)
    app.include_router(pages_router.page)
    app.include_router(recovery_router.router)
    app.include_router(reset_page.router)
    app.include_router(reset_page.page)
    if settings.org_create_requires_key:
        org_router.document_required_create_key(app)
    document_suspended_answers(app)
    return app


def document_suspended_answers(app: FastAPI) -> None:
    """The 403 `organization_suspended` of every route a member or an organization's key
    calls, in the OpenAPI schema (`app.kit.responses.document_suspension`)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()  # built once and cached by FastAPI; the edit is idempotent
        document_suspension(
            schema,
            also=[
                ("post", "/admin/login"),
                ("post", "/admin/refresh"),
                ("post", "/invitations/accept"),
            ],
        )
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
