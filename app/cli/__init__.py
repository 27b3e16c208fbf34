"""The `orgsvc` command line: serve, organizations, members, invitations, service API keys, the
events feed, webhooks and tenant placement.

Every command that touches the database builds the same process state as the HTTP service
(`app.wiring.build_state`, over `MONGODB_URL`) and calls its services; nothing here speaks to a
repository of its own.
"""

from __future__ import annotations

from app.cli.api_keys import api_key_cli
from app.cli.base import cli
from app.cli.events import events_cli
from app.cli.members import invitations_cli, members_cli
from app.cli.orgs import orgs_cli
from app.cli.serve import server_options
from app.cli.tenants import tenants_cli
from app.cli.webhooks import webhooks_cli

cli.add_typer(orgs_cli, name="orgs")
cli.add_typer(api_key_cli, name="api-key")
cli.add_typer(members_cli, name="members")
cli.add_typer(invitations_cli, name="invitations")
cli.add_typer(events_cli, name="events")
cli.add_typer(webhooks_cli, name="webhooks")
cli.add_typer(tenants_cli, name="tenants")

__all__ = ["cli", "main", "server_options"]


def main() -> None:
    cli()
