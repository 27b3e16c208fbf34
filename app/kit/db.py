"""The MongoDB client's lifecycle, the embedded development store, and the readiness ping."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from app.kit.settings import Settings
from app.kit.watch import LocalWrites

log = logging.getLogger("orgsvc.db")


def make_client(url: str, settings: Settings) -> AsyncMongoClient[dict[str, Any]]:
    """One client per process; short timeouts so an outage is a quick 503, not a hang."""
    timeout = settings.mongodb_timeout_ms
    return AsyncMongoClient(
        url,
        tz_aware=True,
        serverSelectionTimeoutMS=timeout,
        connectTimeoutMS=timeout,
        socketTimeoutMS=timeout,
        maxPoolSize=settings.mongodb_max_pool_size,
        appname="orgsvc",
        # This process's own writes, for the caches that must see them at once (app.kit.watch).
        event_listeners=[LocalWrites()],
    )


async def ping(client: AsyncMongoClient[dict[str, Any]]) -> bool:
    """True when the server answers a ping."""
    try:
        await client.admin.command("ping")
    except PyMongoError:
        return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


EMBEDDED_STORE_MISSING = (
    "MONGODB_URL is not set and the embedded development store (nx-27017) is not installed: "
    "install it with `pip install 'orgsvc[embedded]'` (`make run` does), "
    "or set MONGODB_URL to a MongoDB server"
)


class EmbeddedStoreUnavailable(RuntimeError):
    """MONGODB_URL is unset (development) but the optional nx-27017 package is not installed."""


def embedded_store_missing() -> str | None:
    """What to do when the embedded store cannot start (nx-27017 is not installed), or None.

    nx-27017 is a development-only dependency, the `embedded` extra (`orgsvc[embedded]`):
    production images do not carry it and set MONGODB_URL instead.
    """
    return EMBEDDED_STORE_MISSING if importlib.util.find_spec("nx_27017") is None else None


def require_embedded_store() -> None:
    """Refuse early, saying what to do, when the `embedded` extra is not installed."""
    reason = embedded_store_missing()
    if reason is not None:
        raise EmbeddedStoreUnavailable(reason)


class EmbeddedMongo:
    """An `nx-27017` wire-protocol server on loopback, as a child process.

    For development and tests only: it is SQLite underneath, without transactions or
    replication. Its data, pid file and log file live under `data_dir`: each database in its
    own SQLite file, `<data_dir>/<name>/<database>.db`, so that databases are apart as in
    MongoDB (nx-27017's `--data-dir` mode, fixed by the launcher: app/kit/nxserver.py, 5.).
    """

    def __init__(self, data_dir: str | Path, *, port: int = 0, name: str = "orgsvc") -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.db_dir = self.data_dir / name
        self.pid_file = self.data_dir / "nx-27017.pid"
        self.log_file = self.data_dir / "nx-27017.log"
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "app.kit.nxserver",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--data-dir", str(self.db_dir),
            "--pid-file", str(self.pid_file),
            "--log-file", str(self.log_file),
        ]  # fmt: skip

    async def start(self, *, wait_seconds: float = 30.0) -> None:
        """Start the server and wait until it answers a ping."""
        require_embedded_store()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = await asyncio.create_subprocess_exec(
            *self.command(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise RuntimeError(
                    f"nx-27017 exited with {self.process.returncode}; see {self.log_file}"
                )
            if await self._answers():
                return
            await asyncio.sleep(0.1)
        await self.stop()
        raise RuntimeError(f"nx-27017 did not answer on port {self.port} within {wait_seconds}s")

    async def _answers(self) -> bool:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            self.url, serverSelectionTimeoutMS=300, connectTimeoutMS=300
        )
        try:
            return await ping(client)
        finally:
            await client.close()

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; the pid file goes with it."""
        proc, self.process = self.process, None
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout=5)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.pid_file)
