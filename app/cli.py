"""The `orgsvc` command line."""

from __future__ import annotations

import typer
import uvicorn

from app.config import get_settings

cli = typer.Typer(help="Organization service.", no_args_is_help=True, add_completion=False)


@cli.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (default: HOST setting)."),
    port: int | None = typer.Option(None, help="Port (default: PORT setting)."),
) -> None:
    """Run the HTTP service (uvicorn)."""
    settings = get_settings()
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level,
        server_header=False,
        timeout_graceful_shutdown=30,
    )


@cli.command()
def version() -> None:
    """Print the version."""
    typer.echo("orgsvc 1.0.0")


def main() -> None:
    cli()
