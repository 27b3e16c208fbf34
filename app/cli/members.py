"""`orgsvc members list ORG` and `orgsvc invitations list ORG`: an organization's team, for the
operator (read-only; one JSON object per line, every page)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import typer

from app.cli.base import no_such_organization, organization_named, run
from app.members.schemas import last_login
from app.wiring import AppState

members_cli = typer.Typer(help="An organization's members (read-only).", no_args_is_help=True)
invitations_cli = typer.Typer(
    help="An organization's pending invitations (read-only).", no_args_is_help=True
)

PAGE = 100


def _each_page(
    name: str, fetch: Callable[[AppState, str, str | None], Awaitable[tuple[list[Any], str | None]]]
) -> list[dict[str, Any]]:
    async def go(state: AppState) -> list[dict[str, Any]] | None:
        org = await organization_named(state, name)
        if org is None:
            return None
        rows: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            items, after = await fetch(state, org.organization_id, after)
            rows.extend(items)
            if after is None:
                return rows

    found = run(go)
    if found is None:
        raise no_such_organization(name)
    return found


@members_cli.command("list")
def members_list(
    name: str = typer.Argument(..., help="Organization name (matched by slug)."),
) -> None:
    """Every member: id, email, role, created, last login."""

    async def fetch(
        state: AppState, org_id: str, after: str | None
    ) -> tuple[list[Any], str | None]:
        views, last = await state.team.members_of(org_id, limit=PAGE, after=after)
        rows = []
        for v in views:
            logged_in = last_login(v.last_login_ms)
            rows.append(
                {
                    "member_id": v.member_id,
                    "email": v.email,
                    "role": v.role,
                    "created_at": str(v.created_at),
                    "last_login_at": None if logged_in is None else str(logged_in),
                }
            )
        return rows, last

    for row in _each_page(name, fetch):
        typer.echo(json.dumps(row, ensure_ascii=False))


@invitations_cli.command("list")
def invitations_list(
    name: str = typer.Argument(..., help="Organization name (matched by slug)."),
) -> None:
    """Every pending invitation: id, email, role, inviter, created, expires (never a token)."""

    async def fetch(
        state: AppState, org_id: str, after: str | None
    ) -> tuple[list[Any], str | None]:
        found, last = await state.team.invitations_of(org_id, limit=PAGE, after=after)
        rows = [
            {
                "invitation_id": i.invitation_id,
                "email": i.email,
                "role": i.role,
                "invited_by": i.invited_by,
                "created_at": str(i.created_at),
                "expires_at": str(i.expires_at),
            }
            for i in found
        ]
        return rows, last

    for row in _each_page(name, fetch):
        typer.echo(json.dumps(row, ensure_ascii=False))
