"""Stores for tests and the bench: an nx-27017 server started and waited for, and emptied.

The one "start nx-27017 and wait until it answers" of the tests, the fuzz run and the bench
(the app's own `EmbeddedMongo.start` is the async twin, for `orgsvc serve`; the app does not
import tests). No pytest in here: the bench imports this module too.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping
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
