"""`orgsvc api-key create|list|revoke`: service API keys (a key is shown once, at creation)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

import typer

from app.api_keys.repository import ApiKey
from app.api_keys.service import SCOPES
from app.audit.service import CLI_META, Actor
from app.cli.base import run
from app.wiring import AppState

api_key_cli = typer.Typer(
    help="Service API keys for other backend services: create, list, revoke.",
    no_args_is_help=True,
)


def _ms_to_iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return (
        datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def _public(key: ApiKey) -> dict[str, Any]:
    """A key's record as shown to the operator (the record never holds its hash)."""
    return {
        "id": key.key_id,
        "name": key.name,
        "prefix": key.prefix,
        "scopes": key.scopes,
        "organization_id": key.organization_id,  # an organization's own key; None: a service key
        "status": key.status,
        "created_at": _ms_to_iso(key.created_ms),
        "last_used_at": _ms_to_iso(key.last_used_ms),
        "revoked_at": _ms_to_iso(key.revoked_ms),
    }


def _actor() -> Actor:
    return Actor("cli", os.environ.get("USER") or None)


@api_key_cli.command("create")
def create(
    name: str = typer.Option(..., help="Who the key is for, e.g. `billing`."),
    scopes: str = typer.Option(..., help=f"Comma-separated scopes: {', '.join(SCOPES)}."),
) -> None:
    """Create a key and print it ONCE (only its SHA-256 hash is stored)."""
    wanted = [s.strip() for s in scopes.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(SCOPES))
    if unknown or not wanted:
        raise typer.BadParameter(
            f"scopes must be some of {', '.join(SCOPES)}", param_hint="--scopes"
        )

    async def go(state: AppState) -> tuple[ApiKey, str]:
        try:
            made = await state.api_keys.create(
                name=name, scopes=wanted, actor=_actor(), meta=CLI_META
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        return made

    record, key = run(go)
    typer.echo(json.dumps({**_public(record), "key": key}))
    typer.echo("Store this key now: it cannot be shown again.", err=True)


@api_key_cli.command("list")
def list_keys(
    all_: bool = typer.Option(False, "--all", help="Include revoked keys."),
) -> None:
    """List keys (id, name, prefix, scopes, last use), one JSON object per line."""

    async def go(state: AppState) -> list[ApiKey]:
        return await state.api_keys.list_keys(include_revoked=all_)

    for key in run(go):
        typer.echo(json.dumps(_public(key)))


@api_key_cli.command("revoke")
def revoke(key_id: str = typer.Argument(..., help="The key's id or prefix (osk_<id>).")) -> None:
    """Revoke a key: it is refused from the next request on, on every replica."""

    async def go(state: AppState) -> ApiKey | None:
        return await state.api_keys.revoke(key_id, actor=_actor(), meta=CLI_META)

    record = run(go)
    if record is None:
        typer.echo(f"no active API key {key_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(_public(record)))
