"""Stores for tests and the bench: an nx-27017 server started and waited for, and emptied.

The one "start nx-27017 and wait until it answers" of the tests, the fuzz run and the bench
(the app's own `EmbeddedMongo.start` is the async twin, for `orgsvc serve`; the app does not
import tests). No pytest in here: the bench imports this module too.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pymongo
from pymongo import AsyncMongoClient

from app.kit.db import EmbeddedMongo
from tests.support.processes import ROOT, stop_process


def answers(server: EmbeddedMongo) -> bool:
    """True when the server answers a ping right now."""
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(server.url, serverSelectionTimeoutMS=300)
    try:
        client.admin.command("ping")
    except pymongo.errors.PyMongoError:
        return False
    finally:
        client.close()
    return True


def _tail(path: Path | None, chars: int = 2000) -> str:
    if path is None:
        return ""
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return ""


def wait_nx(
    server: EmbeddedMongo,
    proc: subprocess.Popen[bytes],
    *,
    timeout: float = 30.0,
    output: Path | None = None,
) -> None:
    """Wait until `server` (run by `proc`) answers a ping; fail early, with its log, if it exits.

    `output` is where the process's stdout/stderr went, if anywhere: its tail joins the error.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            logs = _tail(server.log_file) + _tail(output)
            raise RuntimeError(f"nx-27017 exited with {proc.returncode}: {logs}")
        if answers(server):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nx-27017 did not start: {_tail(server.log_file) + _tail(output)}")


def start_nx(
    server: EmbeddedMongo,
    *,
    cwd: Path = ROOT,
    env: Mapping[str, str] | None = None,
    output: Path | None = None,
    timeout: float = 30.0,
) -> subprocess.Popen[bytes]:
    """Start an nx-27017 server (through the app's launcher) and wait until it answers.

    In its own process group (stop it with `stop_process`); its stdout/stderr go to `output`, or
    nowhere (it also writes its own log to `server.log_file`). Stopped again if the wait fails.
    """
    server.data_dir.mkdir(parents=True, exist_ok=True)
    out = output.open("wb") if output is not None else None
    try:
        proc = subprocess.Popen(
            server.command(), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=out or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if out else subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    finally:
        if out is not None:
            out.close()
    try:
        wait_nx(server, proc, timeout=timeout, output=output)
    except BaseException:
        stop_process(proc)
        raise
    return proc


async def empty_store(client: AsyncMongoClient[Any]) -> None:
    """Drop every database (tests reuse database names), but empty `admin` instead: nx-27017
    keeps that one open. (Each database is its own SQLite file: app/kit/nxserver.py, 5.)"""
    for database in await client.list_database_names():
        if database != "admin":
            await client.drop_database(database)
            continue
        for name in await client[database].list_collection_names():
            await client[database].drop_collection(name)


def nx_code_roots() -> tuple[str, ...]:
    """Where the code of nx-27017, neosqlite and the launcher lives (to count calls into it)."""
    import neosqlite  # (a development extra: only tests that serve it in-process import it)
    import nx_27017

    import app.kit.nxserver as launcher

    packages = (neosqlite.__file__, nx_27017.__file__)
    return (*(str(Path(p).resolve().parent) for p in packages if p), launcher.__file__)


@contextlib.contextmanager
def nx_in_thread(
    handler: Any, port: int, *, name: str, profile: Callable[..., object] | None = None
) -> Iterator[str]:
    """nx-27017's server for `handler` (the launcher's patches applied first by the caller) on
    127.0.0.1:`port`, served by an event loop in a thread of this process; its URL once it
    answers a ping. `profile` is the threading profile hook for the threads started meanwhile
    (the handler runs in the loop's executor threads). Stopped, and the hook removed, after."""
    from nx_27017.server import run_server  # (a development extra, as above)

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    server_task: list[asyncio.Task[None]] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        server_task.append(loop.create_task(run_server("127.0.0.1", port, handler)))
        loop.call_soon(ready.set)
        try:
            loop.run_until_complete(server_task[0])
        except asyncio.CancelledError:
            pass
        finally:
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    if profile is not None:
        threading.setprofile(profile)
    thread = threading.Thread(target=serve, name=name, daemon=True)
    thread.start()
    url = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    try:
        assert ready.wait(10)
        client: pymongo.MongoClient[Any] = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
        try:
            client.admin.command("ping")
        finally:
            client.close()
        yield url
    finally:
        threading.setprofile(None)
        loop.call_soon_threadsafe(server_task[0].cancel)
        thread.join(10)
