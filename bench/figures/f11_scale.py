"""Figure 11: create throughput and `GET /org/get` p50 with 5,000 organizations, each with its
tenant collection, ÷ with 500: does the cost of a request grow with the number of organizations?

Two stores and two services of the figure's own (the main store holds figure 5's organizations,
which have no tenant collections), the services at bcrypt cost 4 (`BCRYPT_ROUNDS`), so a create
is the store's and the service's work rather than one hash. In each store one organization is
made through the API and its admin logs in; the others are inserted directly, copied from the
documents the service wrote for it (as figure 5 does), each with its tenant collection made as
the service makes it (`create` of `org_<slug>`): 500 organizations in the first store, 5,000 in
the second. Then, after a GET warm-up of each, `ROUNDS` rounds alternate between the two sizes,
so that the machine's other load weighs on both alike: each round runs the GET load (`CLIENTS`
connections, `--duration` ÷ 2 s) against one size then the other, then `CREATES` ÷ `ROUNDS`
creates through the API (`CLIENTS` clients one after another each; an httpx client in this
process) against one then the other (so the creates add up to 200 organizations to each
size as the rounds go). A size's GET p50 is the median of its rounds' p50s; its
create throughput is all its creates ÷ the time they took. The figure is the worse of the two
ratios: creates per second at 500 ÷ at 5,000 (how much slower a create got) and GET p50 at
5,000 ÷ at 500.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx
from pymongo import MongoClient
from pymongo.database import Database

from app.kit.db import free_port
from bench.common import PASSWORD, Doc, ratio, say
from bench.context import Context
from bench.figures.common import note_problems, timed_creates
from bench.load import LoadGenerator, LoadResult, LoadSpec, run
from bench.procs import Child, CpuClock, wait_http
from bench.record import Figure
from bench.seed import _copies

SMALL, LARGE = 500, 5000  # organizations, each with its tenant collection
CLIENTS = 8  # GET connections, and create clients
CREATES = 200  # timed creates at each size, in `ROUNDS` batches
ROUNDS = 4
BCRYPT_ROUNDS = 4
TARGET = 1.3
BATCH = 1000


@dataclass
class Size:
    """One size: its store and service, the GET load against it, what was measured."""

    organizations: int
    store: Child
    service: Child
    url: str
    gen: LoadGenerator
    get: LoadSpec
    gets: list[LoadResult] = field(default_factory=list)
    create_s: float = 0.0
    created: int = 0
    create_latencies: list[float] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cpu_get: dict[str, float] = field(default_factory=dict)
    cpu_create: dict[str, float] = field(default_factory=dict)

    @property
    def get_p50_ms(self) -> float:
        return statistics.median(g.p50_ms for g in self.gets)

    @property
    def get_requests(self) -> int:
        return sum(g.requests for g in self.gets)

    @property
    def creates_per_s(self) -> float:
        return self.created / self.create_s if self.create_s else 0.0


def measure(ctx: Context) -> None:
    sizes: list[Size] = []
    try:
        for organizations in (SMALL, LARGE):
            sizes.append(start_size(ctx, organizations))
        small, large = sizes
        for size in sizes:
            warm = size.get
            run(
                size.gen, LoadSpec("GET", warm.path, CLIENTS, ctx.args.warmup, headers=warm.headers)
            )
        for r in range(ROUNDS):
            order = sizes if r % 2 == 0 else sizes[::-1]
            for size in order:
                _get_round(ctx, size, r)
            for size in order:
                _create_round(ctx, size, r)
    finally:
        for size in sizes:  # (on a failure, the stack's cleanup stops them)
            size.service.stop()
            size.store.stop()
    for size in sizes:
        cpu = {k: v for k, v in size.cpu_create.items() if not k.endswith("_cores")}
        ctx.res.record(f"f11_create_at_{size.organizations}_orgs", _create_result(size), cpu)
    problems = [p for size in sizes for p in size.failed[:3]]
    for size in sizes:
        for g in size.gets:
            if g.non_ok or g.socket_errors:
                problems.append(f"{g.non_ok} GETs not 200 at {size.organizations} organizations")
    ctx.res.figures.append(figure(small, large))
    note_problems(ctx, "11", problems, large.cpu_get)


def start_size(ctx: Context, organizations: int) -> Size:
    """A store and a service over it, one organization made through the API and its admin
    logged in, and the others seeded directly, each with its tenant collection."""
    stack = ctx.stack
    store, mongo_url = stack.launch_store(f"nx-27017-f11-{organizations}")
    service, url = _launch_service(ctx, mongo_url, f"service-f11-{organizations}")
    name = f"Bench Scale {ctx.run_id}"
    org, token = _account(url, name, f"scale-{ctx.run_id}@bench.example.com")
    t0 = time.perf_counter()
    mongo: MongoClient[Doc] = MongoClient(mongo_url, tz_aware=True)
    with mongo:
        db = mongo[stack.db_name]
        _seed(db, ctx.run_id, organizations - 1, org)
        count = db["organizations"].count_documents({})
        tenants = sum(1 for n in db.list_collection_names() if n.startswith("org_"))
    say(
        f"figure 11: {count} organizations, {tenants} tenant collections "
        f"({time.perf_counter() - t0:.1f}s to seed)"
    )
    get = LoadSpec(
        "GET", "/org/get?organization_name=" + quote(name), CLIENTS,
        max(1, ctx.args.duration // 2), headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    return Size(count, store, service, url, stack.load_generator(url), get)


def _launch_service(ctx: Context, mongo_url: str, name: str) -> tuple[Child, str]:
    """The service as `Stack.launch_service` starts it, but at bcrypt cost `BCRYPT_ROUNDS`."""
    stack, port = ctx.stack, free_port()
    env = stack.service_env(mongo_url)
    env.update(HOST="127.0.0.1", PORT=str(port), BCRYPT_ROUNDS=str(BCRYPT_ROUNDS))
    child = stack.spawn(name, stack.service_argv(port), env)
    url = f"http://127.0.0.1:{port}"
    wait_http(child, url + "/health")
    return child, url


def _account(url: str, name: str, email: str) -> tuple[Doc, str]:
    body = {"organization_name": name, "email": email, "password": PASSWORD}
    with httpx.Client(base_url=url, timeout=60.0, trust_env=False) as http:
        made = http.post("/org/create", json=body)
        if made.status_code != 201:
            raise RuntimeError(f"figure 11: create: {made.status_code} {made.text}")
        login = http.post("/admin/login", json={"email": email, "password": PASSWORD})
        if login.status_code != 200:
            raise RuntimeError(f"figure 11: login: {login.status_code} {login.text}")
    org: Doc = made.json()
    token: str = login.json()["access_token"]
    return org, token


def _seed(db: Database[Doc], run_id: str, count: int, template: Doc) -> None:
    """`count` organizations (organization, admin, name claim) copied from `template`'s, each
    with its tenant collection."""
    org_id = template["organization_id"]
    org_t = db["organizations"].find_one({"_id": org_id})
    admin_t = db["admins"].find_one({"organization_id": org_id})
    claim_t = db["name_claims"].find_one({"organization_id": org_id})
    if org_t is None or admin_t is None or claim_t is None:
        raise RuntimeError("figure 11: cannot find the template organization's documents")
    for first in range(0, count, BATCH):
        batch = [
            _copies(f"f11{run_id}", i, org_t, admin_t, claim_t)
            for i in range(first, min(count, first + BATCH))
        ]
        db["name_claims"].insert_many([claim for _, _, claim in batch], ordered=False)
        db["organizations"].insert_many([org for org, _, _ in batch], ordered=False)
        db["admins"].insert_many([admin for _, admin, _ in batch], ordered=False)
        for org, _, _ in batch:  # as the service makes it (no PyMongo pre-check: all are new)
            db.create_collection(org["collection_name"], check_exists=False)


def _add(total: dict[str, float], cpu: dict[str, float]) -> None:
    """Sum the CPU seconds; keep the worst round's share of other work (`*_cores`)."""
    for k, v in cpu.items():
        total[k] = max(total.get(k, 0.0), v) if k.endswith("_cores") else total.get(k, 0.0) + v


def _get_round(ctx: Context, size: Size, r: int) -> None:
    name = f"f11_get_{size.organizations}_orgs_round_{r + 1}"
    got, cpu = ctx.res.loaded(name, size.gen, size.get, [size.service, size.store])
    size.gets.append(got)
    _add(size.cpu_get, cpu)


def _create_round(ctx: Context, size: Size, r: int) -> None:
    clock = CpuClock([size.service, size.store])
    n = CREATES // ROUNDS
    started = time.perf_counter()
    asyncio.run(_creates(ctx, size, r, n))
    size.create_s += time.perf_counter() - started
    _add(size.cpu_create, clock.stop())


async def _creates(ctx: Context, size: Size, r: int, n: int) -> None:
    tags = [f"{ctx.run_id}-{size.organizations}-{r}-{i}" for i in range(n)]
    for took, status, text in await timed_creates(size.url, tags, kind="Scale", clients=CLIENTS):
        size.create_latencies.append(took)
        if status == 201:
            size.created += 1
        else:
            size.failed.append(f"create: {status} {text[:120]}")


def _create_result(size: Size) -> LoadResult:
    return LoadResult.of(
        size.create_latencies,
        tool=f"httpx, {CLIENTS} clients, {ROUNDS} batches of {CREATES // ROUNDS} creates",
        method="POST",
        path="/org/create",
        connections=CLIENTS,
        duration_s=size.create_s,
        ok=size.created,
    )


def figure(small: Size, large: Size) -> Figure:
    create_ratio = ratio(small.creates_per_s, large.creates_per_s)
    get_ratio = ratio(large.get_p50_ms, small.get_p50_ms)
    worse = None if create_ratio is None or get_ratio is None else max(create_ratio, get_ratio)
    say(
        f"figure 11: creates {small.creates_per_s:.1f}/s vs {large.creates_per_s:.1f}/s, "
        f"GET p50 {small.get_p50_ms:.2f} ms vs {large.get_p50_ms:.2f} ms"
    )
    return Figure(
        "11",
        f"Cost with {LARGE:,} organizations (tenant collections) ÷ with {SMALL}: create "
        f"throughput at {SMALL} ÷ at {LARGE:,}, and `GET /org/get` p50 at {LARGE:,} ÷ at "
        f"{SMALL}; the worse of the two",
        worse,
        "<=",
        TARGET,
        f"creates {large.creates_per_s:.1f}/s vs {small.creates_per_s:.1f}/s "
        f"(÷ {create_ratio or 0:.2f}); GET p50 {large.get_p50_ms:.2f} ms vs "
        f"{small.get_p50_ms:.2f} ms (÷ {get_ratio or 0:.2f}); {CLIENTS} clients, bcrypt cost "
        f"{BCRYPT_ROUNDS}, {ROUNDS} rounds alternating between the sizes",
        {
            "organizations_small": small.organizations,
            "organizations_large": large.organizations,
            "clients": CLIENTS,
            "creates_per_size": CREATES,
            "rounds": ROUNDS,
            "bcrypt_rounds": BCRYPT_ROUNDS,
            "create_ratio": create_ratio,
            "get_p50_ratio": get_ratio,
            "creates_per_s_small": round(small.creates_per_s, 3),
            "creates_per_s_large": round(large.creates_per_s, 3),
            "get_p50_ms_small": small.get_p50_ms,
            "get_p50_ms_large": large.get_p50_ms,
            "get_p50_ms_rounds_small": [g.p50_ms for g in small.gets],
            "get_p50_ms_rounds_large": [g.p50_ms for g in large.gets],
            "cpu_ms_per_create": {
                "small": _per(small.cpu_create, small.created),
                "large": _per(large.cpu_create, large.created),
            },
            "cpu_ms_per_get": {
                "small": _per(small.cpu_get, small.get_requests),
                "large": _per(large.cpu_get, large.get_requests),
            },
        },
    )


def _per(cpu: dict[str, float], n: int) -> dict[str, float]:
    """The service's and the store's CPU milliseconds per operation."""
    return {
        k.rsplit("-", 1)[0]: round(v * 1000 / n, 3)
        for k, v in cpu.items()
        if n and k.startswith(("service", "nx-27017"))
    }
