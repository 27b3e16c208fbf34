"""Figure 12 (issue 15's scale section): what 1,000, 10,000 and 50,000 organizations (`SIZES`;
the default run takes about 32 minutes on 2 cores, nearly all of it seeding one database), each
with its real tenant collection, cost in two layouts: (a) spread over 4 tenant databases on 2 store
processes (`TENANT_CLUSTERS` names the second `b`; `TENANT_DATABASES`
`main=tenants_a,tenants_b;b=tenants_c,tenants_d`), and (b) all in the control database on one
process (v1's layout, the default settings).

Three nx-27017 processes of the figure's own (two for layout (a), one for (b)) are grown in steps
to each size (`--placement-sizes`): the organizations are inserted directly with pymongo, as
figure 11 does, copied from the documents the service wrote for one made through the API
(record with its `placement`, admin, name claim), each with its tenant collection made as the
service makes it (`create` of `org_<slug>` in its placement's database; the service gives a
tenant collection no index), spread over the layout's databases by the service's own rule (the
database with fewest tenants), and the `placements` counts raised to match. Both layouts are
seeded at once (their stores are separate processes), and the seed's wall time is reported.

At each size, for each layout:
- start-up: `orgsvc serve` (bcrypt cost `BCRYPT_ROUNDS`) launched until `/ready` answers 200 (the
  median of `START_TRIES` launches, alternating between the layouts; the last one keeps running);
- `GET /org/get` p50: the one API-made organization's admin reading it, wrk with `CLIENTS`
  connections for `--duration` ÷ 2 s, `ROUNDS` rounds alternating between the layouts (the
  median of the rounds' p50s);
- create throughput: `--placement-creates` creates through `POST /org/create` (`CLIENTS` clients
  in this process, one create after another each, in `ROUNDS` batches alternating between the
  layouts): creates ÷ the time they took, with the service's and the stores' CPU per create;
- the reconciler's pass: with the service stopped, `ABANDONED` creates are left as a crash right
  after the tenant collection was made leaves them (intent `started`, lease expired, claim,
  `creating` record, admin, tenant collection, counted in `placements`), then one
  `Reconciler.run_once()` over the service's own state (`app.cli.base.service_state`, what
  `orgsvc reconcile` runs; in a process of its own, this module's `reconcile-pass`, timing the
  pass alone, after a ping of each cluster) undoes them all (`create_undone`: drop of the
  collection, admin, record, claim, count); `IDLE_PASSES` passes with nothing to do are timed
  after it. Before it, the webhook backlog gauge's count is timed on the store both ways: as the
  `count` command (what the service runs every 5 s) and as `count_documents` (an aggregation,
  what it ran before: on nx-27017 it grows with the collections in the control database).

A service that does not become ready, or whose admin cannot log in (the store not answering in
the driver's time), is recorded as such, and that layout is not measured further at that size.

The growth ratios (value at each size ÷ at the smallest) of each layout, and where each curve
bends, are in the figure's details and printed under the report's table (`bench/report.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
from bson import ObjectId
from pymongo import MongoClient, UpdateOne
from pymongo.database import Database

from app.kit.db import EmbeddedMongo, free_port
from app.kit.store import as_utc, epoch_ms, utcnow
from app.organizations.records import CREATING, order_key
from app.organizations.steps import CreateOp
from app.tenancy.names import collection_for, slugify
from app.tenancy.operations import STARTED
from app.tenancy.placement import MAIN, Placement
from bench.common import PASSWORD, Doc, say
from bench.context import Context
from bench.figures.common import note_problems, timed_creates
from bench.load import LoadGenerator, LoadResult, LoadSpec, run
from bench.procs import Child, CpuClock
from bench.record import Figure

# Organizations, each with its tenant collection. The seed is quadratic in one database (each
# new table's DDL scans SQLite's schema table): 50,000 takes about 27 minutes of the figure's 32
# on 2 cores (`--placement-sizes 1000,10000` for a quicker look).
SIZES = (1_000, 10_000, 50_000)
QUICK_SIZES = (200, 1_000, 2_000)
CREATES, QUICK_CREATES = 96, 24  # timed creates per layout and size
CLIENTS = 8  # GET connections, and create clients
ROUNDS = 2  # GET rounds and create batches per size, alternating between the layouts
START_TRIES, QUICK_START_TRIES = 3, 1
ABANDONED, QUICK_ABANDONED = 20, 10  # creates the reconciler's timed pass undoes
IDLE_PASSES = 5
BCRYPT_ROUNDS = 4
BATCH = 1000  # documents per insert_many
PROGRESS = 5000  # a progress line every so many tenant collections
SPREAD = {MAIN: ("tenants_a", "tenants_b"), "b": ("tenants_c", "tenants_d")}  # layout (a)
BEND = 1.25  # a step whose growth exceeds this is where a curve bends


@dataclass
class Point:
    """One layout at one size: what was measured."""

    organizations: int = 0
    tenant_collections: int = 0
    seed_s: float = 0.0
    starts: list[float] = field(default_factory=list)  # launch -> /ready 200, seconds
    gets: list[LoadResult] = field(default_factory=list)
    create_s: float = 0.0
    created: int = 0
    create_latencies: list[float] = field(default_factory=list)
    cpu_create: dict[str, float] = field(default_factory=dict)
    cpu_get: dict[str, float] = field(default_factory=dict)
    reconcile_s: float | None = None
    reconciled: dict[str, int] = field(default_factory=dict)
    idle_passes_s: list[float] = field(default_factory=list)
    start_failures: list[str] = field(default_factory=list)
    unavailable: str | None = None  # why the service was not measured at this size
    reconcile_error: str | None = None
    backlog_count_ms: float | None = None  # the backlog as count_documents (before), store only
    count_command_ms: float | None = None  # the same count as the `count` command

    @property
    def startup_s(self) -> float | None:
        return statistics.median(self.starts) if self.starts else None

    @property
    def get_p50_ms(self) -> float | None:
        return statistics.median(g.p50_ms for g in self.gets) if self.gets else None

    @property
    def creates_per_s(self) -> float | None:
        return self.created / self.create_s if self.create_s else None

    @property
    def reconcile_ms(self) -> float | None:
        return None if self.reconcile_s is None else self.reconcile_s * 1000

    @property
    def idle_pass_ms(self) -> float | None:
        return statistics.median(self.idle_passes_s) * 1000 if self.idle_passes_s else None

    def metrics(self) -> dict[str, float | None]:
        return {
            "creates_per_s": self.creates_per_s,
            "get_p50_ms": self.get_p50_ms,
            "reconcile_pass_ms": self.reconcile_ms,
            "startup_s": self.startup_s,
        }


@dataclass
class Layout:
    """One layout: its stores, its settings, its service while one runs, its measurements."""

    key: str  # "a" or "b"
    label: str
    stores: dict[str, tuple[Child, str]]  # cluster name -> (store process, URL)
    shared: tuple[Placement, ...]  # where its tenants go, in the settings' order
    settings: dict[str, str]  # the placement settings of its service
    service: Child | None = None
    url: str = ""
    gen: LoadGenerator | None = None
    account: Doc = field(default_factory=dict)  # {"name", "email", "token"}
    templates: tuple[Doc, Doc] | None = None  # the API-made organization's record and admin
    seeded: int = 0  # organizations inserted by this figure so far (their numbering)
    points: dict[int, Point] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)

    @property
    def main_url(self) -> str:
        return self.stores[MAIN][1]

    @property
    def children(self) -> list[Child]:
        return [child for child, _ in self.stores.values()]

    def watched(self) -> list[Child]:
        return ([self.service] if self.service is not None else []) + self.children


def sizes_of(ctx: Context) -> tuple[int, ...]:
    sizes: tuple[int, ...] | None = ctx.args.placement_sizes
    if sizes is None:
        sizes = QUICK_SIZES if ctx.args.quick else SIZES
    return sizes


def measure(ctx: Context) -> None:
    quick = bool(ctx.args.quick)
    sizes = sizes_of(ctx)
    creates = ctx.args.placement_creates or (QUICK_CREATES if quick else CREATES)
    tries = QUICK_START_TRIES if quick else START_TRIES
    abandoned = QUICK_ABANDONED if quick else ABANDONED
    layouts = [_spread_layout(ctx), _single_layout(ctx)]
    seeds: dict[int, float] = {}
    profiles: dict[str, Doc] = {}
    t_figure = time.perf_counter()
    try:
        for layout in layouts:  # one organization made through the API: template and GET
            _start_service(ctx, layout, f"service-f12-{layout.key}-account")
            _make_account(ctx, layout)
            _stop_service(layout)
        for n, size in enumerate(sizes):
            seeds[size] = _grow(ctx, layouts, size)
            for t in range(tries):
                for layout in layouts if (n + t) % 2 == 0 else layouts[::-1]:
                    started = _launch(ctx, layout, size, f"service-f12-{size}-{t}")
                    if started and t < tries - 1:
                        _stop_service(layout)
            live = [  # a layout whose service does not start at this size is measured no more
                x for x in layouts
                if x.service is not None or _launch(ctx, x, size, f"service-f12-{size}-last")
            ]  # fmt: skip
            for layout in list(live):
                if not _login(layout, size):
                    live.remove(layout)
                    _stop_service(layout)
                    continue
                assert layout.gen is not None
                spec = _get_spec(ctx, layout)
                run(layout.gen, LoadSpec("GET", spec.path, CLIENTS, ctx.args.warmup,
                                         headers=spec.headers))  # fmt: skip
            for r in range(ROUNDS):
                order = live if (n + r) % 2 == 0 else live[::-1]
                for layout in order:
                    _get_round(ctx, layout, size, r)
                for layout in order:
                    _create_round(ctx, layout, size, r, creates // ROUNDS)
            profile = bool(ctx.args.placement_profile) and size == sizes[-1]
            for layout in layouts:
                if profile and layout in live:  # an untimed batch of creates, py-spy sampling
                    with _spying(ctx, layout.watched(), f"{layout.key}-create") as found:
                        asyncio.run(_creates(ctx, layout, Point(), f"{size}-profile", creates))
                    profiles[f"({layout.key}) {creates} creates at {size:,}"] = found
                _stop_service(layout)
                _time_counts(ctx, layout, layout.points[size])
                with _spying(ctx, layout.children if profile else [], f"{layout.key}-rec") as found:
                    _reconcile_pass(ctx, layout, size, abandoned)
                if profile:
                    profiles[f"({layout.key}) reconcile pass at {size:,}, stores"] = found
    finally:
        for layout in layouts:  # (on a failure, the stack's cleanup stops them)
            _stop_service(layout)
            for child in layout.children:
                child.stop()
    elapsed = time.perf_counter() - t_figure
    for layout in layouts:
        for size, point in layout.points.items():
            if point.create_latencies:
                ctx.res.record(
                    f"f12_create_{layout.key}_{size}_orgs", _create_result(point), point.cpu_create
                )
    fig = figure(layouts, sizes, seeds, elapsed, creates=creates, abandoned=abandoned)
    fig.details["profiles"] = profiles
    ctx.res.figures.append(fig)
    ctx.res.extra["placement"] = fig.details
    problems = [p for layout in layouts for p in layout.failed[:5]]
    for layout in layouts:
        for point in layout.points.values():
            for g in point.gets:
                if g.non_ok or g.socket_errors:
                    problems.append(f"{g.non_ok} GETs not 200 in layout ({layout.key})")
    worst = max(
        (p.cpu_get for layout in layouts for p in layout.points.values() if p.cpu_get),
        key=lambda cpu: cpu.get("foreign_cores", 0.0),
        default={"foreign_cores": 0.0, "steal_cores": 0.0},
    )
    note_problems(ctx, "12", problems, worst)


# ------------------------------------------------------------------------------ the layouts
def _spread_layout(ctx: Context) -> Layout:
    stores = {cluster: ctx.stack.launch_store(f"nx-27017-f12-a-{cluster}") for cluster in SPREAD}
    shared = tuple(Placement(cluster=c, database=d) for c, dbs in SPREAD.items() for d in dbs)
    settings = {
        "TENANT_CLUSTERS": f"b={stores['b'][1]}",
        "TENANT_DATABASES": ";".join(f"{c}={','.join(dbs)}" for c, dbs in SPREAD.items()),
    }
    label = "4 databases on 2 store processes"
    return Layout("a", label, stores, shared, settings)


def _single_layout(ctx: Context) -> Layout:
    stores = {MAIN: ctx.stack.launch_store("nx-27017-f12-b")}
    shared = (Placement(cluster=MAIN, database=ctx.stack.db_name),)
    return Layout("b", "1 database on 1 store process (v1)", stores, shared, {})


def _env(ctx: Context, layout: Layout) -> dict[str, str]:
    env = ctx.stack.service_env(layout.main_url)
    env.update(layout.settings, BCRYPT_ROUNDS=str(BCRYPT_ROUNDS))
    return env


def _launch(ctx: Context, layout: Layout, size: int, name: str) -> bool:
    """Start the layout's service at this size, its start-up time or its failure recorded."""
    point = layout.points[size]
    try:
        point.starts.append(_start_service(ctx, layout, name))
    except ServiceDown as exc:
        point.start_failures.append(str(exc))
        say(f"figure 12: ({layout.key}) {size:,}: the service did not start: {exc}")
        return False
    return True


class ServiceDown(RuntimeError):
    """The service exited before it was ready (its last error line is the message)."""


def _start_service(ctx: Context, layout: Layout, name: str) -> float:
    """`orgsvc serve` over the layout's stores; seconds from launch until `/ready` is 200."""
    port = free_port()
    env = _env(ctx, layout)
    env.update(HOST="127.0.0.1", PORT=str(port))
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    child = ctx.stack.spawn(f"{name}-{layout.key}", ctx.stack.service_argv(port), env)
    layout.service = child
    try:
        took = _wait_ready(child, url + "/ready", expect=set(layout.stores)) - t0
    except ServiceDown:
        child.stop()
        layout.service = None
        raise
    layout.url = url
    layout.gen = ctx.stack.load_generator(url)
    return took


def _wait_ready(child: Child, url: str, *, expect: set[str], timeout: float = 600.0) -> float:
    """Poll `/ready` every 20 ms until it answers 200 with every cluster up; when it did."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if not child.alive():
                raise ServiceDown(_last_error(child))
            try:
                resp = client.get(url)
            except httpx.HTTPError:
                resp = None
            if resp is not None and resp.status_code == 200:
                at = time.perf_counter()
                up = {k for k, v in resp.json().get("clusters", {}).items() if v == "up"}
                if not expect <= up:
                    raise RuntimeError(f"{child.name}: /ready has clusters {up}, not {expect}")
                return at
            time.sleep(0.02)
    raise RuntimeError(f"{child.name} was not ready in {timeout:.0f}s:\n{child.log_tail()}")


def _last_error(child: Child) -> str:
    """The last error a service logged (its exception's last line), or its log's last line."""
    lines = child.log_tail(40).splitlines()
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        message = str(entry.get("msg", ""))
        if "Traceback" in message:
            return message.strip().splitlines()[-1][:300]
    return (lines[-1] if lines else "no log")[:300]


def _stop_service(layout: Layout) -> None:
    if layout.service is not None:
        layout.service.stop()
        layout.service = None
    if layout.gen is not None:
        layout.gen.close()
        layout.gen = None


def _make_account(ctx: Context, layout: Layout) -> None:
    """One organization through the API, its admin logged in, its documents kept as templates."""
    name = f"Bench Placement {ctx.run_id} {layout.key}"
    email = f"placement-{ctx.run_id}-{layout.key}@bench.example.com"
    body = {"organization_name": name, "email": email, "password": PASSWORD}
    with httpx.Client(base_url=layout.url, timeout=60.0, trust_env=False) as http:
        made = http.post("/org/create", json=body)
        if made.status_code != 201:
            raise RuntimeError(f"figure 12: create: {made.status_code} {made.text}")
    layout.account = {"name": name, "email": email}
    org_id = made.json()["organization_id"]
    with _mongo(layout.main_url) as mongo:
        db = mongo[ctx.stack.db_name]
        org = db["organizations"].find_one({"_id": org_id})
        admin = db["admins"].find_one({"organization_id": org_id})
    if org is None or admin is None:
        raise RuntimeError("figure 12: cannot find the API-made organization's documents")
    if org.get("placement", {}).get("database") != layout.shared[0].database:
        raise RuntimeError(f"figure 12: the first organization went to {org.get('placement')}")
    layout.templates = (org, admin)


def _login(layout: Layout, size: int, attempts: int = 5) -> bool:
    """The account's admin logs in (a 503, the store not answering in time, is tried again
    after a second, `attempts` times in all); False, and the layout marked unavailable at this
    size, when it never succeeds."""
    body = {"email": layout.account["email"], "password": PASSWORD}
    answers = []
    with httpx.Client(base_url=layout.url, timeout=60.0, trust_env=False) as http:
        for _ in range(attempts):
            login = http.post("/admin/login", json=body)
            if login.status_code == 200:
                layout.account["token"] = login.json()["access_token"]
                return True
            answers.append(f"{login.status_code} {login.text[:80]}")
            if login.status_code != 503:
                break
            time.sleep(1.0)
    point = layout.points[size]
    point.unavailable = f"login: {', '.join(answers)}"
    say(f"figure 12: ({layout.key}) {size:,}: not measured further: {point.unavailable}")
    return False


def _get_spec(ctx: Context, layout: Layout) -> LoadSpec:
    return LoadSpec(
        "GET", "/org/get?organization_name=" + quote(layout.account["name"]), CLIENTS,
        max(1, ctx.args.duration // 2),
        headers={"Authorization": f"Bearer {layout.account['token']}"},
    )  # fmt: skip


def _mongo(url: str) -> MongoClient[Doc]:
    return MongoClient(url, tz_aware=True)


# ----------------------------------------------------------------------------------- seeding
def _grow(ctx: Context, layouts: list[Layout], size: int) -> float:
    """Insert organizations into each layout until it holds `size`: its records, then its
    tenant collections, one thread per store process, all at once (the layout with the fewest
    databases first: its one store process is the long pole); the wall time."""
    say(f"figure 12: growing both layouts to {size:,} organizations ...")
    t_all = time.perf_counter()
    stop = threading.Event()  # set when the figure is interrupted or a job fails
    with ThreadPoolExecutor(max_workers=sum(len(x.stores) for x in layouts)) as pool:
        running: list[tuple[Layout, Future[float]]] = []
        try:
            for layout in sorted(layouts, key=lambda x: len(x.shared)):
                point = layout.points.setdefault(size, Point())
                t0 = time.perf_counter()
                made = _insert_records(ctx, layout, size)
                point.seed_s = time.perf_counter() - t0  # its records; its collections below
                for cluster, (_, url) in layout.stores.items():
                    names = [(p.database, name) for p, name in made if p.cluster == cluster]
                    if names:
                        job = _collections_job(url, names, f"{layout.key}/{cluster}", stop)
                        running.append((layout, pool.submit(job)))
            took: dict[str, float] = {}
            for layout, future in running:
                took[layout.key] = max(took.get(layout.key, 0.0), future.result())
        except BaseException:
            stop.set()  # the pool's exit waits for the jobs: end them at their next collection
            raise
    wall = time.perf_counter() - t_all
    for layout in layouts:
        point = layout.points[size]
        point.seed_s += took.get(layout.key, 0.0)
        point.organizations, point.tenant_collections = _census(ctx, layout)
        if point.tenant_collections != point.organizations:
            layout.failed.append(
                f"{point.organizations} organizations but {point.tenant_collections} tenant "
                f"collections at {size}"
            )
    say(
        f"figure 12: {size:,} organizations in each layout, seeded in {wall:.1f}s ("
        + ", ".join(f"({x.key}) {x.points[size].seed_s:.1f}s" for x in layouts)
        + ")"
    )
    return wall


def _insert_records(ctx: Context, layout: Layout, size: int) -> list[tuple[Placement, str]]:
    """Records, admins and claims of the organizations that bring the layout to `size`, each
    placed where the service would place it (fewest tenants), and the `placements` counts
    raised to match; their (placement, collection name)s."""
    assert layout.templates is not None
    org_t, admin_t = layout.templates
    made: list[tuple[Placement, str]] = []
    with _mongo(layout.main_url) as mongo:
        db = mongo[ctx.stack.db_name]
        todo = size - db["organizations"].count_documents({})
        counts = {str(d["_id"]): int(d.get("tenants", 0)) for d in db["placements"].find()}
        added: dict[str, int] = {}
        for first in range(0, max(0, todo), BATCH):
            orgs, admins, claims = [], [], []
            for _ in range(first, min(todo, first + BATCH)):
                where = min(layout.shared, key=lambda p: counts.get(p.key, 0))
                counts[where.key] = counts.get(where.key, 0) + 1
                added[where.key] = added.get(where.key, 0) + 1
                org, admin, claim = _copies(ctx.run_id, layout, org_t, admin_t, where)
                orgs.append(org)
                admins.append(admin)
                claims.append(claim)
                made.append((where, org["collection_name"]))
            db["name_claims"].insert_many(claims, ordered=False)
            db["organizations"].insert_many(orgs, ordered=False)
            db["admins"].insert_many(admins, ordered=False)
        _count(db, layout, added)
    return made


def _count(db: Database[Doc], layout: Layout, added: dict[str, int]) -> None:
    ops = [
        UpdateOne({"_id": p.key}, {"$inc": {"tenants": added[p.key]}, "$set": p.model_dump()},
                  upsert=True)
        for p in layout.shared
        if added.get(p.key)
    ]  # fmt: skip
    if ops:
        db["placements"].bulk_write(ops)


def _copies(
    run_id: str, layout: Layout, org_t: Doc, admin_t: Doc, where: Placement, *, op_id: str = ""
) -> tuple[Doc, Doc, Doc]:
    """The next organization of `layout`: its record (in `where`; `creating` and held by
    `op_id` when one is given), admin and name claim, copied from the API-made ones."""
    i = layout.seeded
    layout.seeded += 1
    org_id, admin_id = str(ObjectId()), str(ObjectId())
    name = f"Bench Placement {run_id} {layout.key} {i:06d}"
    slug = slugify(name)
    email = f"placement-{run_id}-{layout.key}-{i:06d}@bench.example.com"
    org = copy.deepcopy(org_t)
    org.update(
        _id=org_id,
        organization_name=name,
        slug=slug,
        collection_name=collection_for(slug),
        placement=where.model_dump(),
        order_key=order_key(as_utc(org_t["created_at"]), org_id),
        admin={"admin_id": admin_id, "email": email},
        team={"version": 1, "count": 1, "owners": [admin_id],
              "members": {admin_id: {"role": "owner", "token_version": 0,
                                     "denylist_until_ms": 0}},
              "invites": {}},
        outbox={},
    )  # fmt: skip
    org.pop("outbox_since_ms", None)
    if op_id:
        org.update(status=CREATING, pending_op=op_id)
    admin = {**admin_t, "_id": admin_id, "email": email, "email_lower": email}
    admin["organization_id"] = org_id
    claim = {"_id": slug, "organization_id": org_id, "op_id": op_id or uuid.uuid4().hex,
             "created_at": utcnow()}  # fmt: skip
    return org, admin, claim


def _collections_job(
    url: str, names: list[tuple[str, str]], label: str, stop: threading.Event
) -> Callable[[], float]:
    """Make these tenant collections on the store at `url`; the seconds it took."""

    def job() -> float:
        t0 = time.perf_counter()
        with _mongo(url) as mongo:
            for n, (database, name) in enumerate(names, 1):
                if stop.is_set():
                    break
                # As the service makes it (no PyMongo pre-check here: all are new).
                mongo[database].create_collection(name, check_exists=False)
                if n % PROGRESS == 0:
                    say(f"figure 12: {label}: {n:,} of {len(names):,} tenant collections")
        return time.perf_counter() - t0

    return job


def _census(ctx: Context, layout: Layout) -> tuple[int, int]:
    """The layout's organizations, and tenant collections in its databases."""
    orgs = collections = 0
    for cluster, (_, url) in layout.stores.items():
        with _mongo(url) as mongo:
            if cluster == MAIN:
                orgs = mongo[ctx.stack.db_name]["organizations"].count_documents({})
            for p in layout.shared:
                if p.cluster == cluster:
                    names = mongo[p.database].list_collection_names()
                    collections += sum(1 for name in names if name.startswith("org_"))
    return orgs, collections


# ------------------------------------------------------------------------------- measuring
def _add(total: dict[str, float], cpu: dict[str, float]) -> None:
    """Sum the CPU seconds; keep the worst round's share of other work (`*_cores`)."""
    for k, v in cpu.items():
        total[k] = max(total.get(k, 0.0), v) if k.endswith("_cores") else total.get(k, 0.0) + v


def _get_round(ctx: Context, layout: Layout, size: int, r: int) -> None:
    assert layout.gen is not None
    name = f"f12_get_{layout.key}_{size}_orgs_round_{r + 1}"
    got, cpu = ctx.res.loaded(name, layout.gen, _get_spec(ctx, layout), layout.watched())
    point = layout.points[size]
    point.gets.append(got)
    _add(point.cpu_get, _named(cpu))


def _named(cpu: dict[str, float]) -> dict[str, float]:
    """CPU seconds by role (`service`, `nx-27017-f12-...`): a service has a new name per start."""
    return {("service" if k.startswith("service") else k): v for k, v in cpu.items()}


def _create_round(ctx: Context, layout: Layout, size: int, r: int, n: int) -> None:
    point = layout.points[size]
    clock = CpuClock(layout.watched())
    started = time.perf_counter()
    asyncio.run(_creates(ctx, layout, point, f"{size}-{r}", n))
    point.create_s += time.perf_counter() - started
    _add(point.cpu_create, _named(clock.stop()))


async def _creates(ctx: Context, layout: Layout, point: Point, batch: str, n: int) -> None:
    tags = [f"{ctx.run_id}-{layout.key}-{batch}-{i}" for i in range(n)]
    for took, status, text in await timed_creates(
        layout.url, tags, kind="Placement", clients=CLIENTS
    ):
        point.create_latencies.append(took)
        if status == 201:
            point.created += 1
        else:
            layout.failed.append(f"({layout.key}) create, batch {batch}: {status} {text[:120]}")


def _create_result(point: Point) -> LoadResult:
    return LoadResult.of(
        point.create_latencies,
        tool=f"httpx, {CLIENTS} clients, {ROUNDS} batches",
        method="POST",
        path="/org/create",
        connections=CLIENTS,
        duration_s=point.create_s,
        ok=point.created,
    )


def _time_counts(ctx: Context, layout: Layout, point: Point, tries: int = 3) -> None:
    """The store's own time for the webhook worker's backlog count (every 5 s in the service) as
    the `count` command (what it runs) and as `count_documents` (an aggregation, what it ran
    before), in the control database, with no service running (medians of `tries`)."""
    query = {"status": "pending"}
    with _mongo(layout.main_url) as mongo:
        db = mongo[ctx.stack.db_name]
        runs: dict[str, list[float]] = {"aggregate": [], "count": []}
        for _ in range(tries):
            t0 = time.perf_counter()
            db["webhook_deliveries"].count_documents(query)
            runs["aggregate"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            db.command({"count": "webhook_deliveries", "query": query})
            runs["count"].append(time.perf_counter() - t0)
    point.backlog_count_ms = statistics.median(runs["aggregate"]) * 1000
    point.count_command_ms = statistics.median(runs["count"]) * 1000


# ------------------------------------------------------------------------------ profiling
@contextlib.contextmanager
def _spying(ctx: Context, children: list[Child], label: str) -> Iterator[Doc]:
    """py-spy records each of `children` (at 100 Hz, without pausing it) while the block runs;
    the dict it yields is then filled with each one's most sampled frames."""
    found: Doc = {}
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not children:
        yield found
        return
    if not Path(spy).exists():
        found["error"] = "py-spy is not installed"
        yield found
        return
    runs = []
    for child in children:
        out = ctx.stack.tmp / f"py-spy-{label}-{child.name}.txt"
        argv = [spy, "record", "-p", str(child.pid), "-r", "100", "--nonblocking", "-f", "raw",
                "-o", str(out), "-d", "600"]  # fmt: skip
        log = (ctx.stack.tmp / f"py-spy-{label}-{child.name}.log").open("wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        runs.append((child.name, proc, out, log))
    time.sleep(1.0)  # py-spy attaches
    try:
        yield found
    finally:
        for name, proc, out, log in runs:
            proc.send_signal(signal.SIGINT)  # py-spy writes its samples on SIGINT
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
            found[_role(name)] = _top_frames(out)


def _role(name: str) -> str:
    return "service" if name.startswith("service") else name


# Frames at the top of a stack that is waiting, not working: a thread pool's idle worker, the
# event loop in uvloop's C code (mostly its poll), and nx-27017 waiting for a database's lock (it
# runs one command at a time per database). py-spy counts some of them as active.
_IDLE_LEAVES = (
    "_worker (concurrent/futures/thread.py:",
    "Runner.run (asyncio/runners.py:",
    "_serialize.<locals>.wrapper (nx_27017/handler.py:161)",
)
# Frames every working stack passes through (threads, the loop, the CLI, the server).
_PLUMBING = ("threading.py", "runpy", "asyncio/", "concurrent/", "typer/", "click/",
             "uvicorn/", "contextlib.py", "nx_27017/daemon.py", "nx_27017/server.py",
             "app/cli/", "nxserver.py:56")  # fmt: skip


def _top_frames(path: Path, n: int = 8) -> Doc:
    """From py-spy's raw output (`frame;frame;... count` per stack), of the samples that were
    working (`busy`, not an idle leaf): each frame's share of them on the stack (`total`, the
    plumbing every stack passes through left out) and at the top (`self`)."""
    if not path.exists():
        return {"samples": 0}
    total: Counter[str] = Counter()
    own: Counter[str] = Counter()
    samples = busy = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        samples += int(count)
        if frames[-1].startswith(_IDLE_LEAVES):
            continue
        busy += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            if not any(part in frame for part in _PLUMBING):
                total[frame] += int(count)
    if not busy:
        return {"samples": samples, "busy": 0}
    return {
        "samples": samples,  # at 100 Hz: seconds x 100 x threads sampled
        "busy": busy,
        "total": {f: round(c / busy, 3) for f, c in total.most_common(n)},
        "self": {f: round(c / busy, 3) for f, c in own.most_common(n)},
    }


# ------------------------------------------------------------------------- the reconciler
def _reconcile_pass(ctx: Context, layout: Layout, size: int, abandoned: int) -> None:
    """Leave `abandoned` creates as a crash after their tenant collection leaves them, then
    time one reconciler pass over them (and idle passes) in a process of its own."""
    assert layout.templates is not None
    org_t, admin_t = layout.templates
    with _mongo(layout.main_url) as mongo:
        db = mongo[ctx.stack.db_name]
        counts = {str(d["_id"]): int(d.get("tenants", 0)) for d in db["placements"].find()}
        added: dict[str, int] = {}
        for _ in range(abandoned):
            where = min(layout.shared, key=lambda p: counts.get(p.key, 0))
            counts[where.key] = counts.get(where.key, 0) + 1
            added[where.key] = added.get(where.key, 0) + 1
            op_id = uuid.uuid4().hex
            org, admin, claim = _copies(ctx.run_id, layout, org_t, admin_t, where, op_id=op_id)
            op = CreateOp(
                op_id=op_id, organization_id=org["_id"], admin_id=admin["_id"],
                slug=org["slug"], placement=where,
            )  # fmt: skip
            db["operations"].insert_one(
                {**op.to_doc(), "owner": "bench-f12", "fence": 1, "state": STARTED,
                 "created_at": utcnow(), "lease_until": epoch_ms(-60)}
            )  # fmt: skip
            db["name_claims"].insert_one(claim)
            db["organizations"].insert_one(org)
            db["admins"].insert_one(admin)
            cluster_url = layout.stores[where.cluster][1]
            with _mongo(cluster_url) as tenant:
                tenant[where.database].create_collection(org["collection_name"])
        _count(db, layout, added)
    argv = [sys.executable, "-m", "bench.figures.f12_placement", "reconcile-pass"]
    env = _env(ctx, layout)
    child = ctx.stack.spawn(f"reconcile-f12-{layout.key}-{size}", argv, env)
    assert child.proc is not None
    try:
        code = child.proc.wait(timeout=600)
    finally:
        child.stop()
    lines = [ln for ln in child.log_path.read_text().splitlines() if ln.startswith("{")]
    point = layout.points[size]
    if code != 0 or not lines:
        tail = child.log_tail(5).splitlines()
        point.reconcile_error = f"exit {code}: {tail[-1] if tail else 'no output'}"[:300]
        layout.failed.append(f"reconcile pass at {size}: {point.reconcile_error}")
        say(f"figure 12: ({layout.key}) {size:,}: reconcile pass failed: {point.reconcile_error}")
        return
    got = json.loads(lines[-1])
    point.reconcile_s = float(got["pass_s"])
    point.reconciled = {str(k): int(v) for k, v in got["outcomes"].items()}
    point.idle_passes_s = [float(s) for s in got["idle_s"]]
    if point.reconciled != {"create_undone": abandoned}:
        layout.failed.append(f"reconcile pass at {size}: {point.reconciled}")
    say(
        f"figure 12: ({layout.key}) {size:,}: reconcile pass {point.reconcile_s * 1000:.0f} ms "
        f"({point.reconciled}), idle pass {point.idle_pass_ms or 0:.1f} ms"
    )


async def _timed_passes() -> Doc:
    """One reconciler pass over the service's own state, timed (and `IDLE_PASSES` idle ones)."""
    from app.cli.base import load_settings, service_state  # the CLI's own wiring

    async with service_state(load_settings()) as state:
        for client in state.repos.tenants.clusters.clients.values():
            await client.admin.command("ping")  # connections made before the clock starts
        t0 = time.perf_counter()
        done = await state.reconciler.run_once()
        pass_s = time.perf_counter() - t0
        idle = []
        for _ in range(IDLE_PASSES):
            t0 = time.perf_counter()
            await state.reconciler.run_once()
            idle.append(time.perf_counter() - t0)
    return {"pass_s": pass_s, "outcomes": dict(done), "idle_s": idle}


# ------------------------------------------------------------------------------- the figure
def _growth(layout: Layout, sizes: tuple[int, ...]) -> dict[str, dict[str, float | None]]:
    """Each metric's value at each size ÷ at the smallest, by metric then size."""
    base = layout.points[sizes[0]].metrics()
    out: dict[str, dict[str, float | None]] = {}
    for metric, first in base.items():
        out[metric] = {}
        for size in sizes[1:]:
            value = layout.points[size].metrics()[metric]
            out[metric][str(size)] = None if value is None or not first else value / first
    return out


def _cost(metric: str, value: float | None) -> float | None:
    """A metric as a cost (more is worse): throughput turned into seconds per create."""
    if value is None:
        return None
    return (1 / value if value else None) if metric == "creates_per_s" else value


def _bends(layout: Layout, sizes: tuple[int, ...]) -> list[str]:
    """Where each of the layout's costs first grows by more than `BEND` from one size to the
    next (or that none does)."""
    lines = []
    names = {
        "creates_per_s": "create cost (1 ÷ creates/s)",
        "get_p50_ms": "GET p50",
        "reconcile_pass_ms": "reconcile pass",
        "startup_s": "start-up",
    }
    for metric, label in names.items():
        steps = []
        for lo, hi in itertools.pairwise(sizes):
            a = _cost(metric, layout.points[lo].metrics()[metric])
            b = _cost(metric, layout.points[hi].metrics()[metric])
            steps.append((lo, hi, None if a is None or b is None or not a else b / a))
        first = next((s for s in steps if s[2] is not None and s[2] > BEND), None)
        text = ", ".join(
            f"{lo:,}->{hi:,} " + ("n/a" if g is None else f"x{g:.2f}") for lo, hi, g in steps
        )
        if first is None:
            lines.append(f"({layout.key}) {label}: flat within x{BEND} per step ({text})")
        else:
            lines.append(f"({layout.key}) {label}: bends at {first[0]:,}->{first[1]:,} ({text})")
    return lines


def _store_ms(point: Point, per: str) -> float | None:
    """The layout's stores' CPU milliseconds per create (`per` "create") or per GET."""
    if per == "create":
        cpu, n = point.cpu_create, point.created
    else:
        cpu, n = point.cpu_get, sum(g.requests for g in point.gets)
    return sum(v for k, v in cpu.items() if k.startswith("nx-27017")) * 1000 / n if n else None


def _failures(layouts: list[Layout]) -> list[str]:
    """A line for each layout and size where the service failed to start or the pass failed."""
    lines = []
    for x in layouts:
        for size, p in x.points.items():
            if p.start_failures:
                tried = len(p.start_failures) + len(p.starts)
                lines.append(
                    f"({x.key}) at {size:,}: {len(p.start_failures)} of {tried} launches of the "
                    f"service failed (not ready: {p.start_failures[0]})"
                    + ("; not measured further at this size" if not p.gets else "")
                )
            if p.unavailable:
                lines.append(f"({x.key}) at {size:,}: not measured: {p.unavailable}")
            failed = max(0, len(p.create_latencies) - p.created)
            if failed:
                lines.append(
                    f"({x.key}) at {size:,}: {failed} of {len(p.create_latencies)} timed creates "
                    "failed (see the run's notes)"
                )
            if p.reconcile_error:
                lines.append(f"({x.key}) at {size:,}: the reconcile pass failed: "
                             f"{p.reconcile_error}")  # fmt: skip
    return lines


def _why(layouts: list[Layout], sizes: tuple[int, ...]) -> list[str]:
    """What the stores' CPU and the store-only counts say of the curves, and why (from py-spy
    profiles of this figure, `--placement-profile`: the frames are in the details'
    `profiles`)."""
    lo, hi = sizes[0], sizes[-1]

    def span(x: Layout, value: Callable[[Point], float | None], spec: str) -> str:
        a, b = value(x.points[lo]), value(x.points[hi])
        return f"({x.key}) {_fmt(a, spec)} -> {_fmt(b, spec)}"

    creates = "; ".join(span(x, lambda p: _store_ms(p, "create"), ".1f") for x in layouts)
    counts = "; ".join(span(x, lambda p: p.backlog_count_ms, ".1f") for x in layouts)
    commands = "; ".join(span(x, lambda p: p.count_command_ms, ".1f") for x in layouts)
    return [
        f"From {lo:,} to {hi:,} organizations, the stores' CPU per create, ms: {creates}. The "
        f"webhook backlog gauge's count (the service runs it every 5 s), store alone, ms: as "
        f"the `count` command (what the service runs) {commands}; as count_documents (an "
        f"aggregation, what it ran before) {counts}.",
        "Why (py-spy): a tenant collection is DDL in SQLite (CREATE TABLE and its _id index), "
        "and SQLite scans its whole schema table for each DDL statement, so DDL costs in "
        "proportion to the collections already in that database file; nx-27017 runs an "
        "aggregation such as count_documents through a temporary table in the database queried, "
        "DDL again, holding that database's lock (which is why the gauge uses the `count` "
        "command, answered in SQL). In (b) every tenant is in the control database, so a "
        "create's DDL and the reconciler's drops grow with the tenants (and an aggregation on "
        "the control database would stall every command on it while it runs); in (a) each "
        "tenant file holds a quarter of them, on two processes, and the control database none: "
        "a create's DDL grows a quarter as fast. "
        "GET /org/get reads no tenant collection (the authentication cache answers from "
        "memory), and start-up is mostly the interpreter's imports (its scans of the records "
        "are a small part): neither has a reason to grow with the tenants.",
    ]


def _per(cpu: dict[str, float], n: int) -> dict[str, float]:
    """Each process's CPU milliseconds per operation (services and stores)."""
    return {
        k: round(v * 1000 / n, 2)
        for k, v in cpu.items()
        if n and (k.startswith("service") or k.startswith("nx-27017"))
    }


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def store_mode() -> str:
    """How the embedded store keeps databases (its launcher's command line says it)."""
    command = EmbeddedMongo("/nonexistent", port=1).command()
    if "--data-dir" in command:
        return "nx-27017 --data-dir: one SQLite file per database"
    return "nx-27017 --db: one SQLite file (one namespace) per store process"


def figure(
    layouts: list[Layout],
    sizes: tuple[int, ...],
    seeds: dict[int, float],
    elapsed: float,
    *,
    creates: int,
    abandoned: int,
) -> Figure:
    spread, single = layouts
    largest, smallest = sizes[-1], sizes[0]
    growth = {layout.key: _growth(layout, sizes) for layout in layouts}
    worst: float | None = None
    base = spread.points[smallest].metrics()
    top = spread.points[largest].metrics()
    for metric in base:
        a, b = _cost(metric, base[metric]), _cost(metric, top[metric])
        if a and b is not None:
            worst = b / a if worst is None else max(worst, b / a)
    notes = [
        *_bends(spread, sizes), *_bends(single, sizes), *_failures(layouts), *_why(layouts, sizes)
    ]  # fmt: skip
    for line in notes:
        say(f"figure 12: {line}")
    table = {
        layout.key: {
            str(size): {
                **{k: (None if v is None else round(v, 3)) for k, v in p.metrics().items()},
                "idle_pass_ms": None if p.idle_pass_ms is None else round(p.idle_pass_ms, 3),
                "backlog_count_documents_ms": p.backlog_count_ms and round(p.backlog_count_ms, 2),
                "backlog_count_command_ms": p.count_command_ms and round(p.count_command_ms, 2),
                "organizations": p.organizations,
                "tenant_collections": p.tenant_collections,
                "seed_s": round(p.seed_s, 1),
                "startups_s": [round(s, 3) for s in p.starts],
                "start_failures": p.start_failures,
                "unavailable": p.unavailable,
                "create_failures": max(0, len(p.create_latencies) - p.created),
                "reconcile_error": p.reconcile_error,
                "get_p50_ms_rounds": [g.p50_ms for g in p.gets],
                "created": p.created,
                "reconciled": p.reconciled,
                "cpu_ms_per_create": _per(p.cpu_create, p.created),
                "cpu_ms_per_get": _per(p.cpu_get, sum(g.requests for g in p.gets)),
            }
            for size, p in layout.points.items()
        }
        for layout in layouts
    }

    def at(layout: Layout, size: int) -> str:
        p = layout.points[size]
        return (
            f"{_fmt(p.creates_per_s, '.1f')}/s, GET {_fmt(p.get_p50_ms, '.2f')} ms, "
            f"reconcile {_fmt(p.reconcile_ms, '.0f')} ms, start {_fmt(p.startup_s, '.2f')} s"
        )

    measured = (
        f"(a) at {smallest:,}: {at(spread, smallest)}; at {largest:,}: {at(spread, largest)}. "
        f"(b) at {smallest:,}: {at(single, smallest)}; at {largest:,}: {at(single, largest)}. "
        f"Seeds {', '.join(f'{s:,}: {t:.0f} s' for s, t in seeds.items())}; "
        f"figure {elapsed:.0f} s"
    )
    return Figure(
        "12",
        f"Placement scale: cost at {largest:,} organizations (tenant collections) ÷ at "
        f"{smallest:,}, spread over 4 databases on 2 stores (a); the worst of create (1 ÷ "
        f"creates/s), GET /org/get p50, reconcile pass, start-up. (b): all in 1 database",
        worst,
        "<=",
        None,
        measured,
        {
            "sizes": list(sizes),
            "layouts": {layout.key: layout.label for layout in layouts},
            "settings_a": spread.settings | {"TENANT_CLUSTERS": "b=mongodb://127.0.0.1:<port>"},
            "store_mode": store_mode(),
            "clients": CLIENTS,
            "creates_per_size": creates,
            "rounds": ROUNDS,
            "abandoned_creates_per_pass": abandoned,
            "bcrypt_rounds": BCRYPT_ROUNDS,
            "seed_wall_s": {str(s): round(t, 1) for s, t in seeds.items()},
            "figure_s": round(elapsed, 1),
            "points": table,
            "growth": growth,
            "notes": notes,
        },
    )


def main(argv: Iterable[str]) -> int:
    """`python -m bench.figures.f12_placement reconcile-pass`, with a service's settings in the
    environment: one timed reconciler pass, as a JSON line on stdout."""
    if list(argv) != ["reconcile-pass"]:
        print("usage: python -m bench.figures.f12_placement reconcile-pass", file=sys.stderr)
        return 2
    print(json.dumps(asyncio.run(_timed_passes())), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
