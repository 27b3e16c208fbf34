"""`python -m bench.run` (or `make bench`): the service's performance figures, each a ratio measured
within one run, printed as a markdown table and written to bench/results/latest.{md,json}.

Everything listens on 127.0.0.1, every phase is bounded in time, and every child process and
temporary directory is removed at the end. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import quote

import bcrypt
import httpx
from bson import ObjectId
from pymongo import MongoClient
from pymongo.database import Database

from bench.load import LoadGenerator, LoadResult, LoadSpec, make_generator, run
from bench.procs import Child, CpuClock, RssSampler, free_port, wait_http

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench" / "results" / "latest.json"
PASSWORD = "bench-password-123"
JSON_HEADERS = {"Content-Type": "application/json"}
FOREIGN_WARN_CORES = 0.15  # CPU used by processes outside the bench, averaged over a phase

Doc = dict[str, Any]


# ------------------------------------------------------------------------------ small helpers
_started = time.monotonic()


def say(msg: str) -> None:
    """Progress on stderr (stdout carries only the final table)."""
    print(f"[bench {time.monotonic() - _started:6.1f}s] {msg}", file=sys.stderr, flush=True)


def own_cpu() -> float:
    """CPU seconds of this process plus its reaped children (wrk runs are children)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        total += ru.ru_utime + ru.ru_stime
    return total


def ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


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


# ---------------------------------------------------------------------------------- figures
@dataclass
class Figure:
    num: str
    name: str
    value: float | None
    op: str  # "<=" or ">="
    target: float
    measured: str
    details: Doc = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value <= self.target if self.op == "<=" else self.value >= self.target

    def row(self) -> str:
        value = "n/a" if self.value is None else f"{self.value:.2f}"
        unit = " MiB" if self.num == "6" else ""
        met = {True: "yes", False: "**NO**", None: "n/a"}[self.met]
        op = "≤" if self.op == "<=" else "≥"
        return (
            f"| {self.num} | {self.name} | {self.measured} | {value}{unit} "
            f"| {op} {self.target:g}{unit} | {met} |"
        )

    def as_dict(self) -> Doc:
        return {
            "figure": self.num,
            "name": self.name,
            "value": None if self.value is None else round(self.value, 4),
            "target": f"{self.op} {self.target:g}",
            "met": self.met,
            "measured": self.measured,
            "details": self.details,
        }


# ------------------------------------------------------------------------------------ bench
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cores = usable_cores()
        self.run_id = secrets.token_hex(3)
        self.tmp = Path(tempfile.mkdtemp(prefix="orgsvc-bench-"))
        self.children: list[Child] = []
        self.figures: list[Figure] = []
        self.phases: Doc = {}
        self.notes: list[str] = []
        self.extra: Doc = {}
        self.sampler: RssSampler | None = None
        self.http: httpx.Client | None = None
        self.mongo: MongoClient[Doc] | None = None
        self.db_name = "org_service"
        self.accounts: list[Doc] = []  # {"name", "email", "org", "token"}
        self.generators: list[LoadGenerator] = []

    # ------------------------------------------------------------------ processes
    def child_env(self) -> dict[str, str]:
        """Our environment without any of the service's own settings, plus the repo on the path."""
        from app.config import Settings

        service_vars = {name.upper() for name in Settings.model_fields}
        env = {k: v for k, v in os.environ.items() if k.upper() not in service_vars}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        child = Child(name, argv, env=env, cwd=self.tmp, log_path=self.tmp / f"{name}.log")
        self.children.append(child)
        child.start()
        return child

    def start_store(self) -> str:
        from app.db import EmbeddedMongo

        nx = EmbeddedMongo(self.tmp / "nx", port=free_port())
        nx.data_dir.mkdir(parents=True)
        self.nx = self.spawn("nx-27017", nx.command(), self.child_env())
        deadline = time.monotonic() + 30
        probe: MongoClient[Doc] = MongoClient(nx.url, serverSelectionTimeoutMS=300)
        with probe:
            while True:
                try:
                    probe.admin.command("ping")
                    break
                except Exception:
                    if not self.nx.alive() or time.monotonic() > deadline:
                        tail = self.nx.log_tail()
                        raise RuntimeError(f"nx-27017 did not start:\n{tail}") from None
                    time.sleep(0.1)
        self.mongo = MongoClient(nx.url, tz_aware=True)
        return nx.url

    @property
    def db(self) -> Database[Doc]:
        assert self.mongo is not None
        return self.mongo[self.db_name]

    def start_service(self, mongo_url: str) -> str:
        port = free_port()
        env = self.child_env()
        env.update(
            MONGODB_URL=mongo_url,
            MONGODB_DB=self.db_name,
            BCRYPT_ROUNDS=str(self.args.bcrypt_rounds),
            JWT_SECRET="bench-jwt-secret-" + secrets.token_hex(12),  # 41 characters
            JWT_EXPIRES_MINUTES="600",
            ENVIRONMENT="development",
            LOG_LEVEL="info",
            HOST="127.0.0.1",
            PORT=str(port),
        )
        if self.args.hash_pool_size:
            env["HASH_POOL_SIZE"] = str(self.args.hash_pool_size)
        if self.args.launcher == "orgsvc":
            argv = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1"]
            argv += ["--port", str(port)]
        else:
            argv = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory"]
            argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
            argv += ["--no-access-log"]
        self.service = self.spawn("service", argv, env)
        url = f"http://127.0.0.1:{port}"
        wait_http(self.service, url + "/health")
        self.sampler = RssSampler(self.service.pid)
        self.sampler.start()
        return url

    def start_bare(self, body: Doc) -> str:
        port = free_port()
        env = self.child_env()
        env["BENCH_BARE_BODY"] = json.dumps(body)
        argv = [sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
        self.bare = self.spawn("bare", argv, env)
        url = f"http://127.0.0.1:{port}"
        wait_http(self.bare, url + "/health")
        return url

    def cleanup(self) -> None:
        for gen in self.generators:
            gen.close()
        if self.sampler is not None and self.sampler.is_alive():
            self.sampler.stop()
        if self.http is not None:
            self.http.close()
        if self.mongo is not None:
            self.mongo.close()
        for child in reversed(self.children):
            try:
                child.stop()
            except Exception as exc:  # keep stopping the others
                print(f"could not stop {child.name}: {exc!r}", file=sys.stderr)
        if self.args.keep_tmp:
            say(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------ API calls
    def api(self, method: str, path: str, *, token: str | None = None, **kw: Any) -> httpx.Response:
        assert self.http is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.http.request(method, path, headers=headers, **kw)

    def create_org(self, name: str, email: str) -> Doc:
        body = {"organization_name": name, "email": email, "password": PASSWORD}
        resp = self.api("POST", "/org/create", json=body)
        if resp.status_code != 201:
            raise RuntimeError(f"create {name!r}: {resp.status_code} {resp.text}")
        org: Doc = resp.json()
        return org

    def login(self, email: str) -> str:
        resp = self.api("POST", "/admin/login", json={"email": email, "password": PASSWORD})
        if resp.status_code != 200:
            raise RuntimeError(f"login {email}: {resp.status_code} {resp.text}")
        token: str = resp.json()["access_token"]
        return token

    def account(self, name: str, tag: str) -> Doc:
        email = f"bench-{tag}-{self.run_id}@bench.example.com"
        org = self.create_org(name, email)
        return {"name": name, "email": email, "org": org, "token": self.login(email)}

    def hash_queue(self) -> float | None:
        """The service's bcrypt queue length from /metrics, if it exports one."""
        with contextlib.suppress(httpx.HTTPError):
            text = self.api("GET", "/metrics").text
            found = re.search(r"^orgsvc_hash_pool_queue_length\s+(\S+)$", text, re.M)
            if found:
                return float(found.group(1))
        return None

    # ------------------------------------------------------------------ measuring
    def loaded(
        self, name: str, gen: LoadGenerator, spec: LoadSpec, watch: list[Child]
    ) -> tuple[LoadResult, dict[str, float]]:
        """Run one load; return its result and the CPU seconds each watched process used."""
        clock = CpuClock(watch)
        bench_before = own_cpu()
        result = run(gen, spec)
        cpu = clock.stop()
        cpu["bench+loadgen"] = own_cpu() - bench_before
        self.record(name, result, cpu)
        if cpu["foreign_cores"] > FOREIGN_WARN_CORES or cpu["steal_cores"] > FOREIGN_WARN_CORES:
            self.notes.append(
                f"phase `{name}`: other work on the machine used {cpu['foreign_cores']:.2f} "
                f"cores and the hypervisor stole {cpu['steal_cores']:.2f}: figures are noisier"
            )
        return result, cpu

    def record(self, name: str, result: LoadResult, cpu: dict[str, float] | None = None) -> None:
        entry = result.as_dict()
        if cpu is not None:
            entry["cpu_s"] = {k: round(v, 3) for k, v in cpu.items()}
        self.phases[name] = entry
        say(
            f"{name}: {result.requests} responses ({result.non_ok} non-2xx, "
            f"{result.socket_errors} socket errors) in {result.duration_s:.1f}s = "
            f"{result.rps:.0f}/s, p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms"
            + (f", cpu {entry['cpu_s']}" if cpu is not None else "")
        )
        if result.non_ok or result.socket_errors:
            self.notes.append(
                f"phase `{name}`: {result.non_ok} non-2xx responses and "
                f"{result.socket_errors} socket errors out of {result.requests}"
            )

    # ------------------------------------------------------------------ the run
    def run(self) -> None:
        a = self.args
        d = a.duration
        self.extra["machine"] = machine_info()
        self.whole = CpuClock([])
        say(f"measuring bcrypt at cost {a.bcrypt_rounds} in this process ...")
        self.t_verify, self.t_hash = measure_bcrypt(a.bcrypt_rounds)
        say(f"bcrypt verify {self.t_verify * 1000:.1f} ms, hash {self.t_hash * 1000:.1f} ms")

        mongo_url = self.start_store()
        svc_url = self.start_service(mongo_url)
        self.http = httpx.Client(base_url=svc_url, timeout=120.0, trust_env=False)
        gen = make_generator(svc_url, self.tmp, force_httpx=a.no_wrk)
        self.generators.append(gen)
        self.loadgen = gen.label
        if not gen.label.startswith("wrk"):
            self.notes.append(
                "no wrk (missing, or --no-wrk): load came from the in-process httpx FALLBACK"
            )
        say(f"service {svc_url} (pid {self.service.pid}), load generator: {gen.label}")
        watch = [self.service, self.nx]

        # Ten organizations made through the API: #0 is read by every GET, all ten log in.
        n_small = 10
        for i in range(n_small):
            self.accounts.append(self.account(f"Bench Org {i:02d}", f"{i:02d}"))
        main_acc = self.accounts[0]
        get_path = "/org/get?organization_name=" + quote(main_acc["name"])
        auth = {"Authorization": f"Bearer {main_acc['token']}"}
        first = self.api("GET", get_path, token=main_acc["token"])
        first.raise_for_status()
        bare_url = self.start_bare(first.json())
        bare_gen = make_generator(bare_url, self.tmp, force_httpx=a.no_wrk)
        self.generators.append(bare_gen)
        say(f"bare FastAPI baseline {bare_url} (pid {self.bare.pid})")

        # ---- figure 1: CPU per request, service vs bare, same wrk settings
        get_load = LoadSpec("GET", get_path, a.get_connections, d, headers=auth)
        warm = LoadSpec("GET", get_path, a.get_connections, a.warmup, headers=auth)
        run(gen, warm)
        run(bare_gen, warm)
        svc_res, svc_cpu = self.loaded("f1_service_get", gen, get_load, watch)
        bare_res, bare_cpu = self.loaded("f1_bare_get", bare_gen, get_load, [self.bare])
        svc_per = svc_cpu["service"] / max(svc_res.ok, 1)
        bare_per = bare_cpu["bare"] / max(bare_res.ok, 1)
        nx_per = svc_cpu["nx-27017"] / max(svc_res.ok, 1)
        self.figures.append(
            Figure(
                "1",
                "Service CPU per authenticated GET /org/get ÷ bare FastAPI CPU per request",
                ratio(svc_per, bare_per),
                "<=",
                2.0,
                f"{svc_per * 1e6:.0f} µs vs {bare_per * 1e6:.0f} µs CPU/request "
                f"({a.get_connections} conns; {svc_res.ok_rps:.0f} vs {bare_res.ok_rps:.0f} req/s)",
                {
                    "service_cpu_us_per_request": round(svc_per * 1e6, 1),
                    "bare_cpu_us_per_request": round(bare_per * 1e6, 1),
                    "nx27017_cpu_us_per_request_not_counted": round(nx_per * 1e6, 1),
                },
            )
        )

        # ---- figure 5: GET p50 with 10 organizations, then with 10,000 (seeded directly)
        lat_load = LoadSpec("GET", get_path, a.latency_connections, d, headers=auth)
        few, _ = self.loaded(f"get_latency_{n_small}_orgs", gen, lat_load, watch)
        before = self.db["organizations"].count_documents({})
        t0 = time.perf_counter()
        added = self.seed_organizations(max(0, a.orgs - before), template_org=main_acc["org"])
        total = self.db["organizations"].count_documents({})
        say(f"seeded {added} organizations in {time.perf_counter() - t0:.1f}s: {total} in store")
        run(gen, LoadSpec("GET", get_path, a.latency_connections, a.warmup, headers=auth))
        many, _ = self.loaded(f"get_latency_{total}_orgs", gen, lat_load, watch)
        self.figures.append(
            Figure(
                "5",
                f"GET /org/get p50 with {total:,} organizations ÷ p50 with {n_small}",
                ratio(many.p50_ms, few.p50_ms),
                "<=",
                1.3,
                f"{many.p50_ms:.2f} ms vs {few.p50_ms:.2f} ms ({a.latency_connections} conns)",
                {
                    "organizations": total,
                    "p50_ms_many": many.p50_ms,
                    "p50_ms_few": few.p50_ms,
                    "p99_ms_many": many.p99_ms,
                    "p99_ms_few": few.p99_ms,
                },
            )
        )

        # ---- figure 3: GET p99 while logins saturate the hash pool, vs the run just above
        bodies = tuple(
            json.dumps({"email": acc["email"], "password": PASSWORD}) for acc in self.accounts
        )
        lead = 2
        sat_load = LoadSpec(
            "POST",
            "/admin/login",
            a.login_connections,
            d + 2 * lead,
            headers=JSON_HEADERS,
            bodies=bodies,
        )
        running = gen.start(sat_load)
        time.sleep(lead)
        queue_before = self.hash_queue()
        loaded_get, _ = self.loaded("f3_get_under_login_load", gen, lat_load, watch)
        queue_after = self.hash_queue()
        self.record("f3_background_logins", running.wait())
        self.settle()
        self.figures.append(
            Figure(
                "3",
                "GET /org/get p99 while logins saturate the hash pool ÷ p99 with no login load",
                ratio(loaded_get.p99_ms, many.p99_ms),
                "<=",
                3.0,
                f"{loaded_get.p99_ms:.2f} ms vs {many.p99_ms:.2f} ms "
                f"({a.latency_connections} GET conns + {a.login_connections} login conns)",
                {
                    "p99_ms_under_logins": loaded_get.p99_ms,
                    "p99_ms_idle": many.p99_ms,
                    "p50_ms_under_logins": loaded_get.p50_ms,
                    "p50_ms_idle": many.p50_ms,
                    "hash_queue_seen": [queue_before, queue_after],
                },
            )
        )

        # ---- figure 2: login throughput against the physical bcrypt limit
        login_load = LoadSpec(
            "POST", "/admin/login", a.login_connections, d, headers=JSON_HEADERS, bodies=bodies
        )
        login_res, login_cpu = self.loaded("f2_login", gen, login_load, watch)
        self.settle()
        limit = self.cores / self.t_verify
        self.figures.append(
            Figure(
                "2",
                f"Login throughput at {a.login_connections} connections ÷ (cores ÷ one bcrypt "
                "verify)",
                ratio(login_res.ok_rps, limit),
                ">=",
                0.85,
                f"{login_res.ok_rps:.2f} logins/s vs limit {limit:.2f}/s "
                f"({self.cores} cores ÷ {self.t_verify * 1000:.0f} ms)",
                {
                    "logins_per_s": round(login_res.ok_rps, 3),
                    "physical_limit_per_s": round(limit, 3),
                    "service_cpu_cores_busy": round(login_cpu["service"] / login_res.duration_s, 2),
                    "non_2xx": login_res.non_ok,
                },
            )
        )

        # ---- organization create throughput and its bcrypt share
        self.figure_create(gen)

        # ---- figure 4: rename with a 100,000-document tenant vs a 10-document one
        self.figure_rename()

        noise = self.whole.stop()
        self.extra["noise"] = {k: round(v, 3) for k, v in noise.items()}
        # ---- figure 6: peak RSS of the service process over the whole run
        assert self.sampler is not None
        self.sampler.stop()
        self.figures.append(
            Figure(
                "6",
                "Peak RSS of the service process during all runs above",
                self.sampler.peak_mb,
                "<=",
                150.0,
                f"VmHWM {(self.sampler.hwm_kib or 0) / 1024:.1f} MiB, sampled max "
                f"{self.sampler.peak_kib / 1024:.1f} MiB ({self.sampler.samples} samples)",
                {"vm_hwm_kib": self.sampler.hwm_kib, "sampled_peak_kib": self.sampler.peak_kib},
            )
        )
        self.figures.sort(key=lambda f: f.num)

    def settle(self, timeout: float = 20.0) -> None:
        """Wait until requests abandoned by the last load (still hashing) have drained."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            queued = self.hash_queue()
            if queued is None:  # no metric: wait for the longest plausible queue
                time.sleep((self.args.login_connections / self.cores + 1) * self.t_verify)
                return
            if queued == 0:
                return
            time.sleep(0.05)
        self.notes.append("the hash pool did not drain within 20 s after a login phase")

    def figure_create(self, gen: LoadGenerator) -> None:
        a = self.args
        prefix = f"Bench Create {self.run_id}"
        template = json.dumps(
            {
                "organization_name": prefix + " {tid} {n}",
                "email": f"create-{self.run_id}-{{tid}}-{{n}}@bench.example.com",
                "password": PASSWORD,
            }
        )
        load = LoadSpec(
            "POST", "/org/create", a.login_connections, a.duration, headers=JSON_HEADERS,
            body_template=template,
        )  # fmt: skip
        cpu0 = self.service.cpu()
        cre, _ = self.loaded("create", gen, load, [self.service, self.nx])
        self.settle()  # creates cut off by the end of the load still finish: count them too
        cpu = self.service.cpu() - cpu0
        slug_prefix = f"bench_create_{self.run_id}_"
        made = self.db["organizations"].count_documents(
            {"slug": {"$gte": slug_prefix, "$lt": slug_prefix + "~"}}
        )
        made = max(made, cre.ok)
        orgs_per_s = cre.ok_rps
        self.extra["create"] = {
            "orgs_per_s": round(orgs_per_s, 3),
            "connections": a.login_connections,
            "created_in_window": cre.ok,
            "created_incl_cut_off": made,
            "physical_limit_per_s": round(self.cores / self.t_hash, 3),
            "bcrypt_share_of_service_cpu": ratio(made * self.t_hash, cpu),
            "bcrypt_share_of_machine": orgs_per_s * self.t_hash / self.cores,
            "service_cpu_ms_per_create": round(cpu / max(made, 1) * 1000, 2),
            "p50_ms": cre.p50_ms,
            "p99_ms": cre.p99_ms,
        }

    def figure_rename(self) -> None:
        a = self.args
        small = self.account("Bench Rename Small", "rename-small")
        large = self.account("Bench Rename Large", "rename-large")
        sizes = {"small": a.small_tenant_docs, "large": a.tenant_docs}
        accs = {"small": small, "large": large}
        for key, acc in accs.items():
            col = self.db[acc["org"]["collection_name"]]
            t0 = time.perf_counter()
            n = sizes[key]
            for start in range(0, n, 5000):
                col.insert_many(
                    [
                        {"i": i, "k": f"key-{i:07d}", "payload": "x" * 100, "tags": ["a", "b"]}
                        for i in range(start, min(n, start + 5000))
                    ],
                    ordered=False,
                )
            col.create_index("k")
            say(f"seeded {n} documents into {col.name} in {time.perf_counter() - t0:.1f}s")
        names = {key: [acc["name"], acc["name"] + " B"] for key, acc in accs.items()}
        timings: dict[str, list[float]] = {"small": [], "large": []}
        for rep in range(a.renames + 1):  # the first pair is a warm-up
            for key in ("small", "large"):
                new_name = names[key][(rep + 1) % 2]
                t0 = time.perf_counter()
                resp = self.api(
                    "PUT",
                    "/org/update",
                    token=accs[key]["token"],
                    json={"organization_name": new_name},
                )
                elapsed = time.perf_counter() - t0
                if resp.status_code != 200:
                    raise RuntimeError(f"rename {key}: {resp.status_code} {resp.text}")
                accs[key]["org"] = resp.json()
                if rep:
                    timings[key].append(elapsed)
        # The store's own renameCollection, timed directly (there and back), for attribution.
        store: dict[str, list[float]] = {"small": [], "large": []}
        for _ in range(a.renames):
            for key, acc in accs.items():
                name = acc["org"]["collection_name"]
                t0 = time.perf_counter()
                self.db[name].rename(name + "_x")
                store[key].append(time.perf_counter() - t0)
                self.db[name + "_x"].rename(name)
        store_med = {key: statistics.median(v) * 1000 for key, v in store.items()}
        counts = {
            key: self.db[acc["org"]["collection_name"]].count_documents({})
            for key, acc in accs.items()
        }
        if counts != sizes:
            self.notes.append(f"rename check: documents after renames {counts} != seeded {sizes}")
        med = {key: statistics.median(v) for key, v in timings.items()}
        say(f"rename medians: small {med['small'] * 1000:.1f} ms, large {med['large'] * 1000:.1f}")
        # nx-27017 rebuilds every secondary index to rename it (SQLite cannot rename an index),
        # so its renameCollection is O(documents); what the service adds on top is shown apart.
        own = {key: max(med[key] * 1000 - store_med[key], 0.0) for key in med}
        self.phases["f4_rename"] = {
            "seconds": {k: [round(x, 5) for x in v] for k, v in timings.items()},
            "documents_after": counts,
        }
        self.figures.append(
            Figure(
                "4",
                f"Rename time, tenant of {sizes['large']:,} documents ÷ tenant of "
                f"{sizes['small']:,}",
                ratio(med["large"], med["small"]),
                "<=",
                2.0,
                f"{med['large'] * 1000:.1f} ms vs {med['small'] * 1000:.1f} ms "
                f"(median of {a.renames}; the store's renameCollection alone: "
                f"{store_med['large']:.1f} vs {store_med['small']:.1f} ms, so the service's own "
                f"part: {own['large']:.1f} vs {own['small']:.1f} ms)",
                {
                    "median_ms_large": med["large"] * 1000,
                    "median_ms_small": med["small"] * 1000,
                    "store_rename_only_ms_large": store_med["large"],
                    "store_rename_only_ms_small": store_med["small"],
                    "service_own_ms_large": own["large"],
                    "service_own_ms_small": own["small"],
                },
            )
        )

    def seed_organizations(self, count: int, *, template_org: Doc) -> int:
        """Insert `count` organizations (+ admin, name claim) shaped like one made by the API."""
        org_t = self.db["organizations"].find_one({"_id": template_org["organization_id"]})
        admin_t = self.db["admins"].find_one({"organization_id": template_org["organization_id"]})
        claim_t = self.db["name_claims"].find_one({"organization_id": org_t and org_t["_id"]})
        if org_t is None or admin_t is None or claim_t is None:
            raise RuntimeError("cannot find the template organization's documents to copy")
        batch = 2000
        for start in range(0, count, batch):
            orgs, admins, claims = [], [], []
            for i in range(start, min(count, start + batch)):
                org_id, admin_id = str(ObjectId()), str(ObjectId())
                slug = f"bench_seed_{self.run_id}_{i:06d}"
                email = f"seed-{self.run_id}-{i:06d}@bench.example.com"
                org = copy.deepcopy(org_t)
                org.update(
                    _id=org_id,
                    organization_name=f"Bench Seed {self.run_id} {i:06d}",
                    slug=slug,
                    collection_name="org_" + slug,
                )
                org["admin"].update(admin_id=admin_id, email=email)
                admin = {**admin_t, "_id": admin_id, "email": email, "email_lower": email}
                admin["organization_id"] = org_id
                claim = {**claim_t, "_id": slug, "organization_id": org_id}
                claim["op_id"] = uuid.uuid4().hex
                orgs.append(org)
                admins.append(admin)
                claims.append(claim)
            self.db["name_claims"].insert_many(claims, ordered=False)
            self.db["organizations"].insert_many(orgs, ordered=False)
            self.db["admins"].insert_many(admins, ordered=False)
        return count


# ------------------------------------------------------------------------------------ report
def noise_text(noise: Doc | None) -> str:
    if not noise:
        return "not measured"
    return (
        f"{noise['foreign_cores']:.2f} cores on average from processes outside the bench, "
        f"{noise['steal_cores']:.2f} stolen by the hypervisor"
    )


def render_markdown(b: Bench, elapsed: float, started: datetime) -> str:
    m = b.extra["machine"]
    a = b.args
    cores = f"**{m['cores']} cores** (usable by this process)"
    if m["os_cpu_count"] != m["cores"] or m["cgroup_cpu_quota"]:
        cores += f", {m['os_cpu_count']} in the machine, cgroup quota {m['cgroup_cpu_quota']}"
    launcher = (
        "`orgsvc serve` (as deployed: JSON access log on, written to a file)"
        if a.launcher == "orgsvc"
        else "`uvicorn app.main:create_app --factory --log-level warning` (no access log)"
    )
    lines = [
        f"## orgsvc benchmark — {started:%Y-%m-%d %H:%M} UTC, commit {git_revision()}",
        "",
        f"- Machine: {cores}, {m['cpu_model']}, Linux {m['kernel']}, Python {m['python']}",
        f"- bcrypt cost {a.bcrypt_rounds}, measured in the bench process: verify "
        f"**{b.t_verify * 1000:.1f} ms**, hash {b.t_hash * 1000:.1f} ms (median); "
        f"service hash pool: {a.hash_pool_size or 'default (= cores)'} threads",
        f"- Load generator: {b.loadgen}; {a.duration} s per phase. Service launched as "
        f"{launcher}, against nx-27017 {version_of('nx-27017')} (SQLite) on loopback",
        f"- Other work on the machine during the run: {noise_text(b.extra.get('noise'))}",
        "",
        "| # | figure | measured | value | target | met |",
        "|---|---|---|---|---|---|",
        *(f.row() for f in b.figures),
        "",
    ]
    c = b.extra.get("create")
    if c:
        share_cpu = c["bcrypt_share_of_service_cpu"]
        lines += [
            f"**Organization create:** {c['orgs_per_s']:.2f} orgs/s at {c['connections']} "
            f"connections (bcrypt limit {c['physical_limit_per_s']:.2f}/s = cores ÷ one hash; "
            f"p50 {c['p50_ms']:.0f} ms, {c['service_cpu_ms_per_create']:.0f} ms service CPU "
            "per create).  ",
            "bcrypt share of the service's CPU = creates x t_hash ÷ service CPU seconds = "
            + ("n/a" if share_cpu is None else f"**{share_cpu:.0%}**")
            + f"; of the machine = orgs/s x t_hash ÷ cores = {c['bcrypt_share_of_machine']:.0%}.",
            "",
        ]
    if b.notes:
        lines += ["Notes:", *(f"- {n}" for n in b.notes), ""]
    lines.append(f"Total run time: {elapsed:.0f} s.")
    return "\n".join(lines) + "\n"


def write_reports(b: Bench, out: Path, elapsed: float, started: datetime) -> str:
    md = render_markdown(b, elapsed, started)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(md)
    a = b.args
    data = {
        "started_at": started.isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 1),
        "commit": git_revision(),
        "machine": b.extra["machine"],
        "bcrypt": {
            "rounds": a.bcrypt_rounds,
            "verify_ms": round(b.t_verify * 1000, 2),
            "hash_ms": round(b.t_hash * 1000, 2),
        },
        "config": {k: v for k, v in vars(a).items() if k != "out"},
        "load_generator": b.loadgen,
        "versions": {
            d: version_of(d) for d in ("fastapi", "uvicorn", "pymongo", "bcrypt", "nx-27017")
        },
        "figures": [f.as_dict() for f in b.figures],
        "create": b.extra.get("create"),
        "phases": b.phases,
        "noise": b.extra.get("noise"),
        "notes": b.notes,
    }
    out.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return md


# -------------------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cores = usable_cores()
    p = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    p.add_argument("--duration", type=int, default=10, help="seconds per load phase (10)")
    p.add_argument("--quick", action="store_true", help="3 s phases, 1 s warm-ups (smoke run)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON path; .md goes beside it")
    p.add_argument("--bcrypt-rounds", type=int, default=12, help="BCRYPT_ROUNDS (12)")
    p.add_argument("--hash-pool-size", type=int, default=None, help="HASH_POOL_SIZE (= cores)")
    p.add_argument("--get-connections", type=int, default=16, help="figure 1 (16)")
    p.add_argument("--latency-connections", type=int, default=2, help="figures 3, 5 (2)")
    p.add_argument(
        "--login-connections",
        type=int,
        default=max(2 * cores, 2),
        help=f"figures 2, 3 and creates (2 x cores = {2 * cores})",
    )
    p.add_argument("--tenant-docs", type=int, default=100_000, help="figure 4 large (100000)")
    p.add_argument("--small-tenant-docs", type=int, default=10, help="figure 4 small (10)")
    p.add_argument("--orgs", type=int, default=10_000, help="figure 5 organizations (10000)")
    p.add_argument("--renames", type=int, default=3, help="timed renames of each size (3)")
    p.add_argument(
        "--launcher",
        choices=("orgsvc", "uvicorn"),
        default="orgsvc",
        help="orgsvc: `orgsvc serve` as deployed, JSON access log on (default); "
        "uvicorn: bare `uvicorn --factory`, no access log",
    )
    p.add_argument("--no-wrk", action="store_true", help="use the httpx fallback even with wrk")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs) for debugging")
    args = p.parse_args(argv)
    args.warmup = 2
    if args.quick:
        args.duration, args.warmup = min(args.duration, 3), 1
    return args


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    started = datetime.now(UTC)
    t0 = time.monotonic()
    bench = Bench(args)
    try:
        bench.run()
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except Exception as exc:
        say(f"FAILED: {exc}")
        for child in bench.children:
            if child.name == "service":
                say(f"service log tail:\n{child.log_tail()}")
        raise
    finally:
        bench.cleanup()
    elapsed = time.monotonic() - t0
    md = write_reports(bench, args.out, elapsed, started)
    print(md)
    say(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
