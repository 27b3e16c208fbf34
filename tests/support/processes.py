"""The service as a real subprocess on a free loopback port, and stopping child processes.

No pytest in here: the bench imports this module too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx

from app.kit.db import EmbeddedMongo, free_port
from tests.support.clients import TEST_SECRET

ROOT = Path(__file__).resolve().parent.parent.parent

# Another replica learns a change when its authentication cache's change stream brings it (bench
# figure 8: tens of milliseconds), not at its very next request: tests give it this long.
SEEN_WITHIN_SECONDS = 1.0

PROC_DB = "org_service_security"  # the database of `services()` (the security tests)
PROCS_DB = "org_service_procs"  # the database of the multi-process and crash tests


def stop_process(proc: subprocess.Popen[bytes], *, timeout: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


def nx_service_env(nx: EmbeddedMongo, *, db: str, **extra: str) -> dict[str, str]:
    """Environment for a service subprocess on `nx`: fast bcrypt, the test secret, plus `extra`."""
    return {
        "MONGODB_URL": nx.url,
        "MONGODB_DB": db,
        "JWT_SECRET": TEST_SECRET,
        "BCRYPT_ROUNDS": "4",
        "ENVIRONMENT": "development",
        **extra,
    }


def service_env(nx: EmbeddedMongo, **extra: str) -> dict[str, str]:
    """`nx_service_env` on the security tests' database (`PROC_DB`)."""
    return nx_service_env(nx, db=PROC_DB, **extra)


def procs_service_env(nx: EmbeddedMongo, **extra: str) -> dict[str, str]:
    """`nx_service_env` on the multi-process and crash tests' database (`PROCS_DB`)."""
    return nx_service_env(nx, db=PROCS_DB, **extra)


class ServiceProcess:
    """The service as a real uvicorn subprocess on a free loopback port."""

    def __init__(self, env: dict[str, str], *, log_path: Path) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, *, timeout: float = 30.0) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"service exited: {self.log_path.read_text()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(self.url + "/health", timeout=1)).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError("service did not become healthy")

    async def wait_exit(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        code = self.proc.poll()
        assert code is not None, "service did not exit"
        return code

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=15)


@contextlib.asynccontextmanager
async def services(
    nx: EmbeddedMongo, logs_dir: Path, *, count: int = 2, **extra: str
) -> AsyncIterator[list[ServiceProcess]]:
    """`count` service processes on one nx-27017 store, stopped afterwards."""
    procs = [
        ServiceProcess(service_env(nx, **extra), log_path=logs_dir / f"svc{i}.log")
        for i in range(count)
    ]
    try:
        await asyncio.gather(*(p.start() for p in procs))
        yield procs
    finally:
        for p in procs:
            p.stop()


async def once_seen(
    fetch: Callable[[], Awaitable[httpx.Response]],
    seen: Callable[[httpx.Response], bool],
    *,
    within: float = SEEN_WITHIN_SECONDS,
) -> httpx.Response:
    """`fetch()` again (every 5 ms) until `seen(answer)` or `within` seconds passed; the last
    answer, for the caller to assert on (a change made on another replica)."""
    deadline = time.monotonic() + within
    while True:
        res = await fetch()
        if seen(res) or time.monotonic() > deadline:
            return res
        await asyncio.sleep(0.005)
