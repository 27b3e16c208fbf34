"""The `orgsvc` command as a process over a test's database, and reading what it printed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

from app.kit.db import EmbeddedMongo
from app.kit.settings import Settings
from tests.support.processes import ROOT, nx_service_env


class Cli:
    """`python -m app.cli ...` over the test's database."""

    def __init__(self, nx: EmbeddedMongo, settings: Settings) -> None:
        self.env = {**os.environ, **nx_service_env(nx, db=settings.mongodb_db)}
        self.env.pop("ORGSVC_PROGRESS", None)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "app.cli", *args]

    def sync(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args), cwd=ROOT, env=self.env, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip

    async def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(self.sync, *args)


def lines(res: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """The JSON lines the command printed on stdout."""
    return [json.loads(line) for line in res.stdout.splitlines()]


def no_traceback(res: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr
