"""`orgsvc serve` in development with no MONGODB_URL runs on an embedded nx-27017 store."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.kit.db import free_port
from tests.support.clients import org_body
from tests.support.processes import ROOT

# Every test here runs `orgsvc serve` as a process (and the first its embedded store).
pytestmark = pytest.mark.realstore

CLEAN_ENV = {
    k: v
    for k, v in os.environ.items()
    if not k.startswith(("MONGODB_", "JWT_", "ENVIRONMENT", "FAULT_", "EMBEDDED_"))
}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_serve_starts_and_stops_an_embedded_store(tmp_path: Path) -> None:
    port = free_port()
    env = {**CLEAN_ENV, "BCRYPT_ROUNDS": "4", "PYTHONPATH": str(ROOT)}
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/ready")).status_code == 200:
                        break
                assert proc.poll() is None, log_path.read_text()
                await asyncio.sleep(0.2)
            res = await http.post("/org/create", json=org_body("Local Dev", "dev@x.com"))
            assert res.status_code == 201, res.text

        data = tmp_path / "data"
        assert (data / "orgsvc" / "org_service.db").exists()  # one SQLite file per database
        assert (data / "nx-27017.log").exists()
        nx_pid = int((data / "nx-27017.pid").read_text().strip())
        assert alive(nx_pid)
        lines = [json.loads(x) for x in log_path.read_text().splitlines() if x.startswith("{")]
        warning = next(e for e in lines if "embedded nx-27017" in e["msg"])
        assert warning["level"] == "warning" and "NOT for production" in warning["msg"]
        assert str(data) in warning["msg"]

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while alive(nx_pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not alive(nx_pid), "the embedded store outlived the service"
        assert not (data / "nx-27017.pid").exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # The store runs in a session of its own: a failed check above must not leave it behind.
        pid_file = tmp_path / "data" / "nx-27017.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)


def test_production_refuses_to_start_without_secret_or_url(tmp_path: Path) -> None:
    env = {**CLEAN_ENV, "ENVIRONMENT": "production", "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(free_port())],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode != 0
    output = res.stdout + res.stderr
    assert "refusing to start in production" in output
    assert "JWT_SECRET" in output and "MONGODB_URL" in output
    assert not (tmp_path / "data").exists()
