"""`orgsvc orgs list|show`: read-only looks at organizations."""

from __future__ import annotations

import json
from typing import Any

import typer

from app.cli.base import no_such_organization, organization_named, run
from app.organizations.records import Organization
from app.wiring import AppState

orgs_cli = typer.Typer(help="Look at organizations (read-only).", no_args_is_help=True)


def _public(org: Organization) -> dict[str, Any]:
    return {
        **org.model_dump(
            mode="json",
            include={"organization_id", "organization_name", "slug", "collection_name", "status"},
        ),
        "admin": {"admin_id": org.admin.admin_id, "email": org.admin.email},
        "created_at": str(org.created_at),
    }


@orgs_cli.command("list")
def orgs_list(
    limit: int = typer.Option(100, min=1, max=10_000, help="At most this many."),
    after: str | None = typer.Option(None, help="Start after this slug (pagination)."),
) -> None:
    """List active organizations by slug, one JSON object per line."""

    async def go(state: AppState) -> list[Organization]:
        orgs, _ = await state.orgs.list_page(limit=limit, after=after)
        return orgs

    for org in run(go):
        typer.echo(json.dumps(_public(org), ensure_ascii=False))


@orgs_cli.command("show")
def orgs_show(name: str = typer.Argument(..., help="Organization name (matched by slug).")) -> None:
    """Show one organization and how many documents its tenant collection holds."""

    async def go(state: AppState) -> dict[str, Any] | None:
        org = await organization_named(state, name)
        if org is None:
            return None
        return {**_public(org), "documents": await state.orgs.document_count(org)}

    found = run(go)
    if found is None:
        raise no_such_organization(name)
    typer.echo(json.dumps(found, ensure_ascii=False, indent=2))
