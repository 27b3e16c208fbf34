"""The root command and the one way commands reach the database: the service's own state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import typer
from pydantic import ValidationError

from app.kit.db import make_client
from app.kit.errors import InvalidInput, NotFound
from app.kit.metrics import Metrics
from app.kit.settings import Settings, get_settings
from app.organizations.records import Organization
from app.wiring import AppState, build_state

T = TypeVar("T")

cli = typer.Typer(help="Organization service.", no_args_is_help=True, add_completion=False)


def load_settings() -> Settings:
    """The settings, or exit 2 with the reasons they are refused."""
    try:
        return get_settings()
    except ValidationError as exc:
        reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        typer.echo(f"orgsvc: invalid settings: {reasons}", err=True)
        raise typer.Exit(2) from None


@asynccontextmanager
async def service_state(settings: Settings) -> AsyncIterator[AppState]:
    """The services over MONGODB_URL, wired as the HTTP service wires them (the CLI never
    starts an embedded store)."""
    if settings.mongodb_url is None:
        raise typer.BadParameter("set MONGODB_URL to the database of a running service")
    client = make_client(settings.mongodb_url.get_secret_value(), settings)
    state = build_state(settings, client, Metrics(), owner="cli")
    try:
        yield state
    finally:
        state.hasher.close()
        await client.close()


def run(make: Callable[[AppState], Awaitable[T]]) -> T:
    """Run `make(state)` with the service's state, and return what it returned."""

    async def go() -> T:
        async with service_state(load_settings()) as state:
            return await make(state)

    return asyncio.run(go())


async def organization_named(state: AppState, name: str) -> Organization | None:
    """The active organization named `name` (matched by slug), None when there is none; a bad
    name is the usage error it is."""
    try:
        return await state.orgs.get_any(name)
    except NotFound:
        return None
    except InvalidInput as exc:
        detail = exc.detail if isinstance(exc.detail, str) else exc.detail[0]["msg"]
        raise typer.BadParameter(str(detail)) from None


def no_such_organization(name: str) -> typer.Exit:
    typer.echo(f"no organization named {name!r}", err=True)
    return typer.Exit(1)
