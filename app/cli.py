"""The `orgsvc` command line: serve, reconcile, and read-only looks at organizations."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any, TypeVar

import typer
import uvicorn
from pydantic import ValidationError

from app.config import Settings, get_settings
from app.keys_cli import api_key_cli
from app.logs import configure_logging

cli = typer.Typer(help="Organization service.", no_args_is_help=True, add_completion=False)
orgs_cli = typer.Typer(help="Look at organizations (read-only).", no_args_is_help=True)
cli.add_typer(orgs_cli, name="orgs")
cli.add_typer(api_key_cli, name="api-key")

T = TypeVar("T")


@cli.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (default: the HOST setting)."),
    port: int | None = typer.Option(None, help="Port (default: the PORT setting)."),
) -> None:
    """Run the HTTP service (uvicorn); SIGTERM drains in-flight requests, then exits 0."""
    try:
        settings = get_settings()
    except ValidationError as exc:
        reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        typer.echo(f"orgsvc: invalid settings: {reasons}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.log_level)
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal; let that final
    # re-raise end the process with status 0, since the shutdown it asked for went well.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        **server_options(settings),
    )


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn options of `serve` (tests run a server with the same ones)."""
    from app.edges import head_limited_protocol

    return {
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "date_header": True,
        "timeout_graceful_shutdown": 30,
        "proxy_headers": False,
        # The request head is bounded while it is read (431), not after uvicorn buffered it.
        "http": head_limited_protocol(settings.max_header_bytes),
        "h11_max_incomplete_event_size": settings.max_header_bytes,
    }


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


@asynccontextmanager
async def _stores(settings: Settings) -> AsyncIterator[Any]:
    """The stores over MONGODB_URL (the CLI never starts an embedded store)."""
    from app.db import make_client
    from app.services.context import Stores

    if settings.mongodb_url is None:
        raise typer.BadParameter("set MONGODB_URL to the database of a running service")
    client = make_client(settings.mongodb_url.get_secret_value(), settings)
    try:
        yield Stores.over(client[settings.mongodb_db])
    finally:
        await client.close()


def _run(make: Callable[[Any], Awaitable[T]]) -> T:
    async def go() -> T:
        async with _stores(get_settings()) as stores:
            return await make(stores)

    return asyncio.run(go())


@cli.command()
def reconcile() -> None:
    """Finish or undo abandoned operations once, and report what was fixed."""
    from app.faults import FaultInjector
    from app.services.context import OperationContext
    from app.services.reconciler import Reconciler

    async def go(stores: Any) -> dict[str, int]:
        settings = get_settings()
        ctx = OperationContext(settings=settings, owner="cli", fault=FaultInjector(frozenset()))
        return dict(await Reconciler(stores, ctx).run_once())

    fixed = _run(go)
    typer.echo(json.dumps({"fixed": fixed, "total": sum(fixed.values())}))


def _public(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "organization_id": doc["_id"],
        "organization_name": doc["organization_name"],
        "slug": doc["slug"],
        "collection_name": doc["collection_name"],
        "admin": {"admin_id": doc["admin"]["admin_id"], "email": doc["admin"]["email"]},
        "status": doc["status"],
        "created_at": str(doc["created_at"]),
    }


@orgs_cli.command("list")
def orgs_list(
    limit: int = typer.Option(100, min=1, max=10_000, help="At most this many."),
    after: str | None = typer.Option(None, help="Start after this slug (pagination)."),
) -> None:
    """List active organizations by slug, one JSON object per line."""

    async def go(stores: Any) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = await stores.orgs.list_active(limit=limit, after=after)
        return docs

    for doc in _run(go):
        typer.echo(json.dumps(_public(doc), ensure_ascii=False))


@orgs_cli.command("show")
def orgs_show(name: str = typer.Argument(..., help="Organization name (matched by slug).")) -> None:
    """Show one organization and how many documents its tenant collection holds."""
    from app.names import InvalidName, validate_name

    settings = get_settings()
    try:
        slug = validate_name(name, db_name=settings.mongodb_db)
    except InvalidName as exc:
        raise typer.BadParameter(str(exc)) from None

    async def go(stores: Any) -> dict[str, Any] | None:
        doc = await stores.orgs.get_active_by_slug(slug)
        if doc is None:
            return None
        out = _public(doc)
        out["documents"] = await stores.tenants.db[
            doc["collection_name"]
        ].estimated_document_count()
        return out

    found = _run(go)
    if found is None:
        typer.echo(f"no organization named {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(found, ensure_ascii=False, indent=2))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
