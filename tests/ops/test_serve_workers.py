"""`orgsvc serve --workers N`: uvicorn's supervisor over N worker processes, one embedded store.

Which worker answered a request is read from the operating system, not from the service: the
server side of the test's TCP connection is a socket that exactly one worker process holds
(`/proc/net/tcp` gives its inode, `/proc/<pid>/fd` who holds it). Linux only, as the CI is.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from uvicorn.importer import import_from_string

from app.cli.serve import WORKER_APP, WORKER_HTTP, server_options, worker_options
from app.kit.db import free_port
from app.kit.settings import get_settings
from tests.support.clients import PASSWORD, TEST_SECRET, bearer, org_body
from tests.support.processes import ROOT

WORKERS = 2


def test_workers_get_the_same_server_options() -> None:
    settings = get_settings()
    single, workers = server_options(settings), worker_options(settings)
    assert {k: v for k, v in workers.items() if k != "http"} == {
        k: v for k, v in single.items() if k != "http"
    }
    # The protocol class travels by name (a worker is a spawned interpreter; pickle refuses a
    # class made at run time) and resolves, in the worker, to the same head-limited protocol.
    with pytest.raises(pickle.PicklingError):
        pickle.dumps(single["http"])
    resolved = import_from_string(workers["http"])
    assert resolved.__bases__ == single["http"].__bases__
    assert resolved.max_head_bytes == single["http"].max_head_bytes == settings.max_header_bytes
    config = uvicorn.Config(WORKER_APP, factory=True, workers=WORKERS, **workers)
    assert pickle.loads(pickle.dumps(config)).http == WORKER_HTTP


def _proc_state(pid: int) -> str | None:
    """The process's state letter, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _alive(pid: int) -> bool:
    return _proc_state(pid) not in (None, "Z", "X")  # a zombie has finished


def _children(pid: int) -> dict[int, str]:
    """The live child processes of `pid`, with their command lines."""
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid and _alive(int(entry)):
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
                found[int(entry)] = cmd.decode(errors="replace")
    return found


def _holder_of_server_side(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """Which of `pids` holds the server side of the loopback connection from `client_port`."""
    local, remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            inode = fields[9]
    if inode is None:
        return None
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                        return pid
    return None


def _get_on_a_new_connection(
    port: int, path: str, headers: dict[str, str], workers: list[int]
) -> tuple[int, int | None]:
    """GET `path` on a connection of its own; the status and the worker that answered."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        res = conn.getresponse()
        res.read()
        assert conn.sock is not None  # kept alive: HTTP/1.1
        client_port = conn.sock.getsockname()[1]
        return res.status, _holder_of_server_side(port, client_port, workers)
    finally:
        conn.close()


def _serve_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "MONGODB_URL": "",  # empty = not set (also over a .env file): the embedded store
        "JWT_SECRET": TEST_SECRET,
        "ENVIRONMENT": "development",
        **extra,
    }


@contextlib.contextmanager
def _serve(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`orgsvc serve ...` in a session of its own; killed with all it left, whatever happens."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    seen: set[int] = set()
    try:
        yield proc
    finally:
        if proc.poll() is None:
            seen |= set(_children(proc.pid))  # the store is in a session of its own
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for pid in seen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def _wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.realstore  # starts `orgsvc serve --workers 2` and, through it, nx-27017
async def test_two_workers_one_store_and_sigterm_drains_then_exits_0(tmp_path: Path) -> None:
    port, data, log = free_port(), tmp_path / "data", tmp_path / "serve.log"
    env = _serve_env(EMBEDDED_DATA_DIR=str(data), MONGODB_DB="serve_workers", BCRYPT_ROUNDS="14")
    args = ["--workers", str(WORKERS), "--host", "127.0.0.1", "--port", str(port)]
    with _serve(args, env, log) as proc:
        base = f"http://127.0.0.1:{port}"
        started = "Application startup complete."
        await _wait_for(
            "both workers to start",
            lambda: proc.poll() is not None or log.read_text().count(started) == WORKERS,
            timeout=90,
        )
        assert proc.poll() is None, log.read_text()[-3000:]
        children = _children(proc.pid)
        workers = sorted(pid for pid, cmd in children.items() if "multiprocessing.spawn" in cmd)
        stores = [pid for pid, cmd in children.items() if "app.kit.nxserver" in cmd]
        assert len(workers) == WORKERS, children
        # One store, the supervisor's child (not a worker's), at the pid its file names.
        assert stores == [int((data / "nx-27017.pid").read_text().strip())], children
        for worker in workers:
            assert not _children(worker), f"worker {worker} started something of its own"

        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            res = await client.post("/org/create", json=org_body("Forked", "f@x.com"))
            assert res.status_code == 201, res.text
            res = await client.post("/admin/login", json={"email": "f@x.com", "password": PASSWORD})
            assert res.status_code == 200, res.text
            auth = bearer(res.json()["access_token"])

            # A new connection per request, until both workers have answered one: each reads
            # the organization written through whichever worker took the create (one store).
            answered: set[int] = set()
            deadline = time.monotonic() + 30
            while answered != set(workers) and time.monotonic() < deadline:
                status, pid = _get_on_a_new_connection(
                    port, "/org/get?organization_name=Forked", auth, workers
                )
                assert status == 200
                if pid is not None:
                    answered.add(pid)
            assert answered == set(workers), f"answered by {answered} of {workers}"

            # The head-limited protocol class made it into the workers (a name, then resolved).
            big = {"x-big": "a" * (get_settings().max_header_bytes + 1024)}
            assert (await client.get("/health", headers=big)).status_code == 431

            login = asyncio.create_task(
                client.post("/admin/login", json={"email": "f@x.com", "password": PASSWORD})
            )
            await asyncio.sleep(0.3)  # the login is now inside bcrypt (cost 14: about 1 s)
            os.kill(proc.pid, signal.SIGTERM)  # the supervisor only, as an orchestrator does
            signalled = time.monotonic()
            res = await login
            assert time.monotonic() - signalled > 0.2, "the login was not in flight at SIGTERM"
            assert res.status_code == 200, res.text
            assert res.json()["access_token"]

        await _wait_for("the supervisor to exit", lambda: proc.poll() is not None, timeout=60)
        assert proc.returncode == 0, log.read_text()[-3000:]
        # Workers, store and multiprocessing's resource tracker (it ends when it reads the
        # supervisor's end of its pipe close, so a moment after the supervisor).
        await _wait_for(
            f"{children} to end", lambda: not any(_alive(pid) for pid in children), timeout=10
        )
        assert not (data / "nx-27017.pid").exists()

    text = log.read_text()
    assert "Traceback" not in text and '"level": "error"' not in text, text[-3000:]
    assert text.count("starting an embedded nx-27017 store") == 1  # the supervisor's, only
    assert text.count("shutdown complete: reconciler stopped") == WORKERS
    assert text.index("Stopping parent process") < text.index("embedded store stopped")


@pytest.mark.realstore  # starts `orgsvc serve --workers 2`
async def test_workers_that_cannot_start_fail_the_command(tmp_path: Path) -> None:
    """No database: each worker's lifespan fails; the command ends with 3, as uvicorn's
    single-process serve does, not 0 (an orchestrator must see a failed start)."""
    log = tmp_path / "serve.log"
    nowhere = f"mongodb://127.0.0.1:{free_port()}/?directConnection=true"
    env = _serve_env(MONGODB_URL=nowhere, MONGODB_TIMEOUT_MS="300")
    args = ["--workers", str(WORKERS), "--host", "127.0.0.1", "--port", str(free_port())]
    with _serve(args, env, log) as proc:
        children: set[int] = set()

        def ended() -> bool:
            children.update(_children(proc.pid))
            return proc.poll() is not None

        await _wait_for("the supervisor to exit", ended, timeout=90)
        assert proc.returncode == 3, log.read_text()[-3000:]
        await _wait_for(
            f"{children} to end", lambda: not any(_alive(pid) for pid in children), timeout=10
        )
    assert "a worker process failed to start" in log.read_text()
