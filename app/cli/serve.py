"""`orgsvc serve` and `orgsvc reconcile`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

import typer
import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from app.cli.base import cli, load_settings, run
from app.kit.db import EmbeddedMongo, embedded_store_missing
from app.kit.edges import head_limited_protocol
from app.kit.logs import configure_logging
from app.kit.settings import Settings, get_settings
from app.main import create_app
from app.wiring import AppState

log = logging.getLogger("orgsvc")

# What a worker process of `serve --workers N` imports: uvicorn spawns its workers (a fresh
# interpreter each) and sends them its config pickled, so the app and the HTTP protocol class
# travel as import strings (the protocol class is made at run time, and pickle refuses it).
WORKER_APP = "app.cli.serve:worker_app"
WORKER_HTTP = "app.cli.serve:WorkerHttpProtocol"


@cli.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (default: the HOST setting)."),
    port: int | None = typer.Option(None, help="Port (default: the PORT setting)."),
    workers: int = typer.Option(
        1,
        min=1,
        help="Worker processes on one socket, under uvicorn's supervisor (restarts a dead one). "
        "1 serves in this process.",
    ),
) -> None:
    """Run the HTTP service (uvicorn); SIGTERM drains in-flight requests, then exits 0."""
    settings = load_settings()
    missing = embedded_store_missing() if settings.mongodb_url is None else None
    if missing is not None:  # refuse before uvicorn: a lifespan refusal would exit 3, noisily
        typer.echo(f"orgsvc: {missing}", err=True)
        raise typer.Exit(2)
    configure_logging(settings.log_level)
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal; let that final
    # re-raise end the process with status 0, since the shutdown it asked for went well. With
    # workers, this covers the start (the supervisor then takes SIGTERM and SIGINT over).
    signal.signal(signal.SIGTERM, _exit_cleanly)
    bind_host, bind_port = host or settings.host, port or settings.port
    if workers == 1:
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=bind_host,
            port=bind_port,
            **server_options(settings),
        )
        return
    code = _serve_workers(settings, host=bind_host, port=bind_port, workers=workers)
    if code:
        raise typer.Exit(code)


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


def worker_options(settings: Settings) -> dict[str, Any]:
    """`server_options` as sent to worker processes: the same, the protocol class by name."""
    return {**server_options(settings), "http": WORKER_HTTP}


def worker_app() -> FastAPI:
    """The app of one worker process: the service's logging, then the whole app and lifespan
    (the reconciler, publisher, mail and webhook workers are lease-based: safe on every one)."""
    settings = get_settings()
    configure_logging(settings.log_level)
    return create_app(settings)


@functools.cache
def _worker_http_protocol() -> type[asyncio.Protocol]:
    protocol: type[asyncio.Protocol] = server_options(get_settings())["http"]
    return protocol


def __getattr__(name: str) -> Any:
    """`WorkerHttpProtocol` (`WORKER_HTTP`): `server_options(settings)["http"]`, made in the
    worker from the same settings; uvicorn resolves the import string with getattr."""
    if name == "WorkerHttpProtocol":
        return _worker_http_protocol()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _serve_workers(settings: Settings, *, host: str, port: int, workers: int) -> int:
    """`workers` processes under uvicorn's supervisor (what `uvicorn.run(workers=N)` runs),
    over one store; the exit status: 0 after a drain, 3 when a worker could not start.

    The supervisor forwards SIGTERM and SIGINT to the workers, each drains its in-flight
    requests and runs its lifespan's shutdown, and the supervisor returns once all have exited.
    `uvicorn.run` would then end with 0 even when a worker failed to start (the database was
    unreachable, say), which is why the supervisor is run here and its workers looked at.
    """
    config = uvicorn.Config(
        WORKER_APP,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        **worker_options(settings),
    )
    sock = config.bind_socket()  # a taken port fails here, before any store or worker starts
    try:
        # From here on a signal is queued for the supervisor's loop: none interrupts the
        # start or stop of the store.
        supervisor = Multiprocess(config, sockets=[sock])
        with _store_for_workers(settings):
            supervisor.run()
    finally:
        sock.close()
    failed = [p.pid for p in supervisor.processes if p.exitcode == STARTUP_FAILURE]
    if failed:
        log.error("a worker process failed to start (pid %s): stopped", failed[0])
        return STARTUP_FAILURE
    return 0


@contextlib.contextmanager
def _store_for_workers(settings: Settings) -> Iterator[None]:
    """With no MONGODB_URL, one embedded store for all the workers: started here, before them,
    its URL handed to them as MONGODB_URL, and stopped after they have all exited."""
    if settings.mongodb_url is not None:
        yield
        return
    embedded = EmbeddedMongo(settings.embedded_data_dir, port=settings.embedded_port)
    log.warning(
        "MONGODB_URL is not set: starting an embedded nx-27017 store for the workers (SQLite, "
        "data in %s, port %d). This is for development only, NOT for production.",
        embedded.data_dir,
        embedded.port,
    )
    loop = asyncio.new_event_loop()  # one loop for the store's start and stop: it owns the child
    try:
        try:
            loop.run_until_complete(embedded.start())
        except RuntimeError as exc:  # it exited, or did not answer in time
            log.error("the embedded store did not start: %s", exc)
            raise typer.Exit(STARTUP_FAILURE) from None
        os.environ["MONGODB_URL"] = embedded.url  # the workers are spawned with this environment
        yield
    finally:
        os.environ.pop("MONGODB_URL", None)
        loop.run_until_complete(embedded.stop())
        loop.close()
        log.info("embedded store stopped", extra={"embedded_store_stopped": True})


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


@cli.command()
def reconcile() -> None:
    """Finish or undo abandoned operations once, and report what was fixed."""

    async def go(state: AppState) -> dict[str, int]:
        return dict(await state.reconciler.run_once())

    fixed = run(go)
    typer.echo(json.dumps({"fixed": fixed, "total": sum(fixed.values())}))
