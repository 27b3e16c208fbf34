"""Child processes (nx-27017, the service, the bare app), their CPU time and memory via /proc, and
the CPU of the whole machine (what else competes with the measurement)."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx

from tests.support.processes import stop_process

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the whole process (all its threads), in seconds."""
    data = Path(f"/proc/{pid}/stat").read_text()
    fields = data[data.rindex(")") + 2 :].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def status_kib(pid: int, key: str) -> int | None:
    """A `kB` line of /proc/<pid>/status (VmRSS, VmHWM, ...), or None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


class Child:
    """A subprocess in its own process group, with its output in a log file."""

    def __init__(self, name: str, *, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path) -> None:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def adopt(self, proc: subprocess.Popen[bytes]) -> None:
        """Watch a process started elsewhere (in its own session, writing to `log_path`)."""
        self.proc = proc

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the process group, SIGKILL after `timeout`."""
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc, timeout=timeout)
        if self._log is not None:
            self._log.close()
            self._log = None


def wait_http(child: Child, url: str, *, timeout: float = 60.0) -> None:
    """Poll `url` until it answers 200; fail early, with the log tail, if the child dies."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if not child.alive():
                raise RuntimeError(f"{child.name} exited early; its log:\n{child.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return
            time.sleep(0.1)
    raise RuntimeError(f"{child.name} did not answer {url} in {timeout:.0f}s:\n{child.log_tail()}")


class RssSampler(threading.Thread):
    """Samples a process's resident set size every `interval` seconds; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self.samples = 0
        self.hwm_kib: int | None = None  # the kernel's own high-water mark, read at stop()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def sample(self) -> None:
        rss = status_kib(self.pid, "VmRSS")
        if rss is not None:
            self.peak_kib = max(self.peak_kib, rss)
            self.samples += 1

    def stop(self) -> None:
        """Stop sampling; call while the process still runs to read VmHWM too."""
        self.sample()
        self.hwm_kib = status_kib(self.pid, "VmHWM")
        self._stop_event.set()
        self.join(timeout=2)

    @property
    def peak_mb(self) -> float:
        return max(self.peak_kib, self.hwm_kib or 0) / 1024


def system_cpu() -> tuple[float, float]:
    """Machine-wide (busy, steal) CPU seconds since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


def descendants(root: int) -> list[int]:
    """Every live process below `root` (children, grandchildren, ...)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            data = (entry / "stat").read_text()
        except OSError:
            continue
        parent[int(entry.name)] = int(data[data.rindex(")") + 2 :].split()[1])
    found, frontier = [], [root]
    while frontier:
        current = frontier.pop()
        kids = [pid for pid, ppid in parent.items() if ppid == current]
        found += kids
        frontier += kids
    return found


def our_cpu() -> float:
    """CPU seconds of this process and all its descendants, live or already reaped."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        total += ru.ru_utime + ru.ru_stime
    for pid in descendants(os.getpid()):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += cpu_seconds(pid)
    return total


class CpuClock:
    """CPU used between two points: by each watched child, by this whole process tree, by the
    rest of the machine (`foreign`: someone else's work competing with the measurement) and
    stolen by the hypervisor."""

    def __init__(self, watch: Sequence[Child]) -> None:
        self.watch = list(watch)
        self.t0 = time.monotonic()
        self.start = self._read()

    def _read(self) -> dict[str, float]:
        busy, steal = system_cpu()
        snap = {c.name: c.cpu() for c in self.watch}
        snap.update({"_ours": our_cpu(), "_busy": busy, "_steal": steal})
        return snap

    def stop(self) -> dict[str, float]:
        end = self._read()
        d = {k: end[k] - self.start[k] for k in end}
        out = {c.name: d[c.name] for c in self.watch}
        wall = max(time.monotonic() - self.t0, 1e-9)
        out["foreign_cores"] = max(0.0, d["_busy"] - d["_ours"]) / wall
        out["steal_cores"] = d["_steal"] / wall
        return out
