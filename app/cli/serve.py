"""`orgsvc serve` and `orgsvc reconcile`."""

from __future__ import annotations

import json
import signal
from types import FrameType
from typing import Any

import typer
import uvicorn

from app.cli.base import cli, load_settings, run
from app.kit.db import embedded_store_missing
from app.kit.edges import head_limited_protocol
from app.kit.logs import configure_logging
from app.kit.settings import Settings
from app.wiring import AppState


@cli.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (default: the HOST setting)."),
    port: int | None = typer.Option(None, help="Port (default: the PORT setting)."),
) -> None:
    """Run the HTTP service (uvicorn); SIGTERM drains in-flight requests, then exits 0."""
    settings = load_settings()
    missing = embedded_store_missing() if settings.mongodb_url is None else None
    if missing is not None:  # refuse before uvicorn: a lifespan refusal would exit 3, noisily
        typer.echo(f"orgsvc: {missing}", err=True)
        raise typer.Exit(2)
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


@cli.command()
def reconcile() -> None:
    """Finish or undo abandoned operations once, and report what was fixed."""

    async def go(state: AppState) -> dict[str, int]:
        return dict(await state.reconciler.run_once())

    fixed = run(go)
    typer.echo(json.dumps({"fixed": fixed, "total": sum(fixed.values())}))
