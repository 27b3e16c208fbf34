"""The root command and the one way commands reach the database: the service's own state."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from pymongo.errors import ConnectionFailure
from tqdm import tqdm

from app.kit.db import make_client
from app.kit.errors import AppError, InvalidInput, NotFound
from app.kit.metrics import Metrics
from app.kit.settings import Settings, get_settings
from app.kit.store import is_id
from app.organizations.records import Organization
from app.tenancy.placement import Topology, TopologyError
from app.wiring import AppState, build_state

T = TypeVar("T")

cli = typer.Typer(help="Organization service.", no_args_is_help=True, add_completion=False)


def load_settings() -> Settings:
    """The settings, or exit 2 with the reasons they are refused (the placement settings too)."""
    try:
        settings = get_settings()
        Topology.of(settings)
    except ValidationError as exc:
        reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        typer.echo(f"orgsvc: invalid settings: {reasons}", err=True)
        raise typer.Exit(2) from None
    except TopologyError as exc:
        typer.echo(f"orgsvc: invalid settings: {exc}", err=True)
        raise typer.Exit(2) from None
    return settings


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
        await state.repos.tenants.clusters.close()
        await client.close()


def run(make: Callable[[AppState], Awaitable[T]]) -> T:
    """Run `make(state)` with the service's state, and return what it returned. A refusal of
    the service (an `AppError`: 404, 409 `operation_in_progress`, ...) or an unreachable
    database is one line on stderr and exit 1, never a traceback."""

    async def go() -> T:
        async with service_state(load_settings()) as state:
            return await make(state)

    try:
        return asyncio.run(go())
    except AppError as exc:
        typer.echo(f"orgsvc: {_detail(exc)} ({exc.code})", err=True)
        raise typer.Exit(1) from None
    except ConnectionFailure as exc:  # ServerSelectionTimeoutError, AutoReconnect, ...
        first = str(exc).split(",", 1)[0].split("\n", 1)[0]
        typer.echo(f"orgsvc: the database is unavailable: {first}", err=True)
        raise typer.Exit(1) from None


def _detail(exc: AppError) -> str:
    if isinstance(exc.detail, str):
        return exc.detail
    return "; ".join(str(e.get("msg", e)) for e in exc.detail) or exc.code


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


async def organization_given(state: AppState, given: str) -> Organization | None:
    """The organization `given` names: its id (24 hex; active or suspended), else its name
    (matched by slug, as `organization_named`); None when there is none."""
    if is_id(given):
        try:
            return await state.lifecycle.get(given)
        except NotFound:
            pass  # a name may look like an id too
    return await organization_named(state, given)


def progress(total: int | None, *, desc: str, force: bool | None) -> tqdm[Any]:
    """A progress bar on stderr (stdout stays clean JSON lines): shown when stderr is a
    terminal, or always with `force` True, never with `force` False."""
    return tqdm(
        total=total,
        desc=desc,
        unit="org",
        file=sys.stderr,
        disable=None if force is None else not force,  # None: tqdm's own "not a TTY: off"
        dynamic_ncols=True,
        leave=True,
    )


def echo_line(line: str, bar: tqdm[Any]) -> None:
    """One line on stdout; with a live bar on the same terminal, without tearing it."""
    if bar.disable:
        typer.echo(line)
    else:
        tqdm.write(line, file=sys.stdout)


def no_such_organization(name: str) -> typer.Exit:
    typer.echo(f"no organization named {name!r}", err=True)
    return typer.Exit(1)
