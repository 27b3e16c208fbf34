"""HTTP load: wrk (a separate, C process) when installed, else an in-process httpx fallback.

A load is a closed loop: `connections` clients, each sending its next request as soon as the
previous answer arrives, for `duration` seconds. Bodies rotate through `bodies`, or are made from
`body_template`, where `{tid}` (load-generator thread) and `{n}` (its request counter) make every
body unique (for creates).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

_MARKER = "BENCHJSON "


@dataclass(frozen=True)
class LoadSpec:
    method: str
    path: str
    connections: int
    duration: int  # seconds
    headers: dict[str, str] = field(default_factory=dict)
    bodies: tuple[str, ...] = ()
    body_template: str | None = None
    threads: int = 1


@dataclass
class LoadResult:
    tool: str
    method: str
    path: str
    connections: int
    duration_s: float
    requests: int  # responses received
    ok: int  # 2xx/3xx
    non_ok: int  # any other status
    socket_errors: int  # connect/read/write errors and timeouts
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(
        cls,
        latencies: list[float],
        *,
        tool: str,
        method: str,
        path: str,
        connections: int,
        duration_s: float,
        ok: int,
        socket_errors: int = 0,
    ) -> LoadResult:
        """A result measured in this process: one latency (seconds) per response received."""
        lat = sorted(latencies)
        return cls(
            tool=tool,
            method=method,
            path=path,
            connections=connections,
            duration_s=duration_s,
            requests=len(lat),
            ok=ok,
            non_ok=len(lat) - ok,
            socket_errors=socket_errors,
            p50_ms=percentile(lat, 50) * 1000,
            p90_ms=percentile(lat, 90) * 1000,
            p99_ms=percentile(lat, 99) * 1000,
            max_ms=(lat[-1] if lat else 0.0) * 1000,
        )

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def ok_rps(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rps"] = round(self.rps, 2)
        out["ok_rps"] = round(self.ok_rps, 2)
        return out


class RunningLoad(Protocol):
    def wait(self) -> LoadResult: ...


class LoadGenerator(Protocol):
    label: str

    def start(self, spec: LoadSpec) -> RunningLoad: ...

    def close(self) -> None:
        """Stop whatever load is still running (on an early exit)."""


def run(gen: LoadGenerator, spec: LoadSpec) -> LoadResult:
    return gen.start(spec).wait()


# ----------------------------------------------------------------------------------- wrk
def find_wrk() -> str | None:
    return shutil.which("wrk")


def _lua_str(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


_LUA = """
local method = {method}
local path = {path}
local headers = {{ {headers} }}
local bodies = {{ {bodies} }}
local template = {template}
local counter = 0
local next_tid = 0

function setup(thread)
  next_tid = next_tid + 1
  thread:set("tid", next_tid)
end

function request()
  counter = counter + 1
  local body = nil
  if template ~= nil then
    body = template:gsub("{{tid}}", tostring(tid)):gsub("{{n}}", tostring(counter))
  elseif #bodies > 0 then
    body = bodies[(counter % #bodies) + 1]
  end
  return wrk.format(method, path, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{marker}{{"requests": %d, "duration_us": %d, "status": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "timeout": %d, "p50": %d, "p90": %d, "p99": %d, "max": %d}}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def lua_script(spec: LoadSpec) -> str:
    headers = ", ".join(f"[{_lua_str(k)}] = {_lua_str(v)}" for k, v in spec.headers.items())
    bodies = ", ".join(_lua_str(b) for b in spec.bodies)
    template = "nil" if spec.body_template is None else _lua_str(spec.body_template)
    return _LUA.format(
        method=_lua_str(spec.method),
        path=_lua_str(spec.path),
        headers=headers,
        bodies=bodies,
        template=template,
        marker=_MARKER,
    )


class _WrkRun:
    def __init__(self, proc: subprocess.Popen[str], spec: LoadSpec, script: Path) -> None:
        self.proc, self.spec, self.script = proc, spec, script

    def wait(self) -> LoadResult:
        try:
            out, err = self.proc.communicate(timeout=self.spec.duration + 60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise RuntimeError(f"wrk did not finish: {err.strip()}") from None
        finally:
            self.script.unlink(missing_ok=True)
        line = next((ln for ln in out.splitlines() if ln.startswith(_MARKER)), None)
        if self.proc.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({self.proc.returncode}): {err.strip()}\n{out}")
        d = json.loads(line[len(_MARKER) :])
        return LoadResult(
            tool="wrk",
            method=self.spec.method,
            path=self.spec.path,
            connections=self.spec.connections,
            duration_s=d["duration_us"] / 1e6,
            requests=d["requests"],
            ok=d["requests"] - d["status"],
            non_ok=d["status"],
            socket_errors=d["connect"] + d["read"] + d["write"] + d["timeout"],
            p50_ms=d["p50"] / 1000,
            p90_ms=d["p90"] / 1000,
            p99_ms=d["p99"] / 1000,
            max_ms=d["max"] / 1000,
        )


class Wrk:
    """wrk with a generated Lua script; `--latency` percentiles come from the `done` hook."""

    def __init__(self, wrk: str, base_url: str, workdir: Path) -> None:
        self.wrk, self.base_url, self.workdir = wrk, base_url, workdir
        self._seq = 0
        self._procs: list[subprocess.Popen[str]] = []
        version = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        first = (version.stdout or version.stderr).splitlines()
        self.label = first[0].split(" Copyright")[0].strip() if first else "wrk"

    def start(self, spec: LoadSpec) -> _WrkRun:
        self._seq += 1
        script = self.workdir / f"load-{self._seq}.lua"
        script.write_text(lua_script(spec))
        threads = max(1, min(spec.threads, spec.connections))
        argv = [
            self.wrk,
            f"-t{threads}",
            f"-c{spec.connections}",
            f"-d{spec.duration}s",
            "--timeout",
            "30s",
            "--latency",
            "-s",
            str(script),
            self.base_url,
        ]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._procs = [p for p in self._procs if p.poll() is None] + [proc]
        return _WrkRun(proc, spec, script)

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self._procs = []


# ----------------------------------------------------------------------------- httpx fallback
def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class _HttpxRun(threading.Thread):
    def __init__(self, base_url: str, spec: LoadSpec) -> None:
        super().__init__(name="httpx-load", daemon=True)
        self.base_url, self.spec = base_url, spec
        self.result: LoadResult | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = asyncio.run(self._main())
        except BaseException as exc:  # reported by wait()
            self.error = exc

    async def _main(self) -> LoadResult:
        spec = self.spec
        latencies: list[float] = []
        counts = {"ok": 0, "non_ok": 0, "errors": 0}
        limits = httpx.Limits(
            max_connections=spec.connections, max_keepalive_connections=spec.connections
        )
        async with httpx.AsyncClient(
            base_url=self.base_url, limits=limits, timeout=30.0, trust_env=False
        ) as client:
            started = time.perf_counter()
            deadline = started + spec.duration

            async def worker(tid: int) -> None:
                n = 0
                while time.perf_counter() < deadline:
                    n += 1
                    if spec.body_template is not None:
                        body: str | None = spec.body_template.replace("{tid}", str(tid)).replace(
                            "{n}", str(n)
                        )
                    elif spec.bodies:
                        body = spec.bodies[n % len(spec.bodies)]
                    else:
                        body = None
                    t0 = time.perf_counter()
                    try:
                        resp = await client.request(
                            spec.method, spec.path, headers=spec.headers, content=body
                        )
                    except httpx.HTTPError:
                        counts["errors"] += 1
                        continue
                    latencies.append(time.perf_counter() - t0)
                    counts["ok" if resp.status_code < 400 else "non_ok"] += 1

            await asyncio.gather(*(worker(i + 1) for i in range(spec.connections)))
            elapsed = time.perf_counter() - started
        return LoadResult.of(
            latencies,
            tool="httpx",
            method=spec.method,
            path=spec.path,
            connections=spec.connections,
            duration_s=elapsed,
            ok=counts["ok"],
            socket_errors=counts["errors"],
        )

    def wait(self) -> LoadResult:
        self.join(timeout=self.spec.duration + 120)
        if self.error is not None:
            raise RuntimeError(f"httpx load failed: {self.error!r}") from self.error
        if self.result is None:
            raise RuntimeError("httpx load did not finish")
        return self.result


class HttpxLoad:
    """FALLBACK: an asyncio/httpx closed loop inside the bench process. It competes with the
    service for CPU and is much slower than wrk, so its figures are less trustworthy."""

    label = "httpx in-process FALLBACK (no wrk): the load generator shares the CPU"

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def close(self) -> None:
        pass  # its threads end by themselves within `duration`

    def start(self, spec: LoadSpec) -> _HttpxRun:
        thread = _HttpxRun(self.base_url, spec)
        thread.start()
        return thread


_SAFE = re.compile(r"^[A-Za-z0-9_./:-]+$")


def make_generator(base_url: str, workdir: Path, *, force_httpx: bool = False) -> LoadGenerator:
    """wrk against `base_url` if it is installed (and not refused), else the httpx fallback."""
    assert _SAFE.match(base_url), base_url
    wrk = None if force_httpx else find_wrk()
    if wrk is None:
        return HttpxLoad(base_url)
    return Wrk(wrk, base_url, workdir)
