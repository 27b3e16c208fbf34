"""The machine the bench runs on: cores, CPU model, versions, commit, one bcrypt's time."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import time
from importlib import metadata
from pathlib import Path

import bcrypt

from bench.common import PASSWORD, REPO, Doc


def version_of(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def usable_cores() -> int:
    """CPUs this process may run on (what the service's hash pool defaults to)."""
    return max(1, len(os.sched_getaffinity(0)))


def machine_info() -> Doc:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    quota = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        raw = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if raw[0] != "max":
            quota = round(int(raw[0]) / int(raw[1]), 2)
    return {
        "cores": usable_cores(),
        "os_cpu_count": os.cpu_count(),
        "cgroup_cpu_quota": quota,
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "app"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return rev + (" (app/ has uncommitted changes)" if dirty else "")


def measure_bcrypt(rounds: int, verifies: int = 5, hashes: int = 3) -> tuple[float, float]:
    """Median seconds of one bcrypt checkpw and of one hashpw at `rounds`, in this process."""
    pw = PASSWORD.encode()
    hash_times, hashed = [], b""
    for _ in range(hashes):
        t0 = time.perf_counter()
        hashed = bcrypt.hashpw(pw, bcrypt.gensalt(rounds=rounds))
        hash_times.append(time.perf_counter() - t0)
    verify_times = []
    for _ in range(verifies):
        t0 = time.perf_counter()
        assert bcrypt.checkpw(pw, hashed)
        verify_times.append(time.perf_counter() - t0)
    return statistics.median(verify_times), statistics.median(hash_times)
