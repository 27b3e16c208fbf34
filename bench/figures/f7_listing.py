"""Figure 7: `GET /orgs?q=<prefix>&limit=20` p50 with 10,000 organizations ÷ with 100.

Two nx-27017 stores and two service processes of its own (the main store holds figure 5's
organizations, and nx-27017 keeps every logical database of a store in one namespace), each
service with an API key of scope `org:list` made by `app.cli api-key create`. The organization
records are inserted directly, built with the app's own record type, before each service starts
(it creates its indexes at start-up): the same 100 in both stores, and 9,900 more in the
second. The same 36 of them match the prefix in both (by slug, by display
name, by both), spread over the listing order among the others, so the answer has the same size
at both sizes and the ratio shows whether the page and its `total` are found through indexes
rather than by reading every record. The answer is checked at each size (both pages through the
cursor, `total`, every item). Then one client sends a warm-up and the timed requests one at a
time, alternating between the two services, so a change in the machine's other load during the
run weighs on both sizes alike.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from pymongo import MongoClient

from app.organizations.profile import search_key
from app.organizations.records import Organization
from bench.common import FOREIGN_WARN_CORES, Doc, ratio, say
from bench.context import Context
from bench.load import LoadResult
from bench.procs import Child, CpuClock
from bench.record import Figure
from bench.seed import LISTING_PREFIX, ListingMatch, listing_records

MATCH = ListingMatch()
LIMIT = 20
WARMUP = 30  # untimed requests to each service before the timed ones
PARAMS = {"q": LISTING_PREFIX, "limit": str(LIMIT)}
BATCH = 2000


@dataclass
class Size:
    """One size: its store and service, its key, its organizations, the timed requests."""

    organizations: int
    store: Child
    service: Child
    url: str
    headers: dict[str, str]
    latencies: list[float] = field(default_factory=list)
    non_ok: int = 0
    load: LoadResult | None = None

    @property
    def label(self) -> str:
        return f"list_orgs_q_{self.organizations}_orgs"

    @property
    def p50_ms(self) -> float:
        assert self.load is not None
        return self.load.p50_ms


def measure(ctx: Context) -> None:
    a = ctx.args
    rng, now = random.Random(7), datetime.now(UTC)
    first = listing_records(0, a.list_orgs_small, now=now, rng=rng, match=MATCH)
    rest = listing_records(
        a.list_orgs_small, a.list_orgs - a.list_orgs_small, now=now, rng=rng, match=None
    )
    expected = {org.organization_id for org in first[: MATCH.total]}
    sizes: list[Size] = []
    try:
        for orgs in (first, first + rest):
            sizes.append(start_size(ctx, orgs))
        with httpx.Client(timeout=30.0, trust_env=False) as http:
            for size in sizes:
                check(ctx, http, size, expected)
            cpu = timed(ctx, http, sizes)
    finally:
        for size in sizes:  # (on a failure, the stack's cleanup stops them)
            size.service.stop()
            size.store.stop()
    ctx.res.figures.append(figure(sizes[0], sizes[1], cpu))


def start_size(ctx: Context, orgs: list[Organization]) -> Size:
    """A store holding `orgs`, then a service over it, and its key."""
    stack, n = ctx.stack, len(orgs)
    store, mongo_url = stack.launch_store(f"nx-27017-f7-{n}")
    t0 = time.perf_counter()
    client: MongoClient[Doc] = MongoClient(mongo_url, tz_aware=True)
    with client:
        col = client[stack.db_name]["organizations"]
        for start in range(0, n, BATCH):
            col.insert_many([org.to_doc() for org in orgs[start : start + BATCH]], ordered=False)
        count = col.count_documents({})
        say(f"figure 7: {count} organizations inserted in {time.perf_counter() - t0:.1f}s")
        service, url = stack.launch_service(f"service-f7-{n}", mongo_url)
        indexes = col.index_information()
    if not any("slug" in name for name in indexes) or not any(
        "display_key" in name for name in indexes
    ):
        ctx.res.notes.append(f"figure 7: no index on slug or display_key: {sorted(indexes)}")
    made = stack.cli(mongo_url, "api-key", "create", "--name", "bench-f7", "--scopes", "org:list")
    key = json.loads(made.splitlines()[0])["key"]
    return Size(count, store, service, url, {"X-API-Key": key})


def timed(ctx: Context, http: httpx.Client, sizes: list[Size]) -> dict[str, float]:
    """`WARMUP` requests to each, then `--list-requests` timed ones to each, alternating; the
    CPU seconds each service and each store used meanwhile."""
    for _ in range(WARMUP):
        for size in sizes:
            http.get(size.url + "/orgs", params=PARAMS, headers=size.headers).raise_for_status()
    clock = CpuClock([child for size in sizes for child in (size.service, size.store)])
    started = time.perf_counter()
    for _ in range(ctx.args.list_requests):
        for size in sizes:
            t0 = time.perf_counter()
            resp = http.get(size.url + "/orgs", params=PARAMS, headers=size.headers)
            size.latencies.append(time.perf_counter() - t0)
            size.non_ok += resp.status_code != 200
    elapsed = time.perf_counter() - started
    cpu = clock.stop()
    for size in sizes:
        size.load = LoadResult.of(
            size.latencies,
            tool="httpx, one client, one request at a time, alternating between the sizes",
            method="GET",
            path="/orgs?" + "&".join(f"{k}={v}" for k, v in PARAMS.items()),
            connections=1,
            duration_s=sum(size.latencies),
            ok=len(size.latencies) - size.non_ok,
        )
        own = {child.name: cpu[child.name] for child in (size.service, size.store)}
        ctx.res.record(size.label, size.load, own)
    ctx.res.phases["list_orgs_q_cpu_s"] = {
        "wall_s": round(elapsed, 3),
        **{k: round(v, 3) for k, v in cpu.items()},
    }
    if cpu["foreign_cores"] > FOREIGN_WARN_CORES or cpu["steal_cores"] > FOREIGN_WARN_CORES:
        ctx.res.notes.append(
            f"figure 7: other work on the machine used {cpu['foreign_cores']:.2f} cores and the "
            f"hypervisor stole {cpu['steal_cores']:.2f} (alternating requests share the noise)"
        )
    return cpu


def check(ctx: Context, http: httpx.Client, size: Size, expected: set[str]) -> None:
    """Both pages through the cursor: `LIMIT` items then the rest, `total` on each, every item
    matching the prefix, in listing order, exactly the organizations seeded to match."""
    problems: list[str] = []
    seen: list[Doc] = []
    cursor: str | None = None
    for page in (1, 2):
        params = {**PARAMS, **({"cursor": cursor} if cursor else {})}
        resp = http.get(size.url + "/orgs", params=params, headers=size.headers)
        if resp.status_code != 200:
            problems.append(f"page {page}: {resp.status_code} {resp.text[:200]}")
            break
        body = resp.json()
        want = min(LIMIT, MATCH.total - len(seen))
        if len(body["items"]) != want:
            problems.append(f"page {page}: {len(body['items'])} items, expected {want}")
        if body["total"] != MATCH.total:
            problems.append(f"page {page}: total {body['total']}, expected {MATCH.total}")
        seen += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    if cursor is not None:
        problems.append("a next_cursor after the last matching organization")
    prefix = search_key(LISTING_PREFIX)
    for item in seen:
        display = search_key(item["display_name"] or "")
        if not (item["slug"].startswith(prefix) or display.startswith(prefix)):
            problems.append(f"{item['slug']!r} / {item['display_name']!r} does not match")
    order = [(item["created_at"], item["organization_id"]) for item in seen]
    if order != sorted(order):
        problems.append("items not in creation order")
    if {item["organization_id"] for item in seen} != expected:
        problems.append("not the organizations seeded to match")
    verdict = "; ".join(problems) if problems else "ok"
    say(f"figure 7 check, {size.organizations} organizations: {len(seen)} items: {verdict}")
    ctx.res.phases[size.label + "_check"] = {"items": len(seen), "problems": problems}
    if problems:
        ctx.res.notes.append(f"figure 7 answer at {size.organizations} organizations: {verdict}")


def figure(few: Size, many: Size, cpu: dict[str, float]) -> Figure:
    return Figure(
        "7",
        f"GET /orgs?q=<prefix>&limit={LIMIT} p50 with {many.organizations:,} organizations "
        f"÷ p50 with {few.organizations:,}",
        ratio(many.p50_ms, few.p50_ms),
        "<=",
        1.5,
        f"{many.p50_ms:.2f} ms vs {few.p50_ms:.2f} ms (p50 of {len(few.latencies)} requests "
        f"each, 1 client alternating; the same {MATCH.total} match at both sizes: "
        f"{LIMIT} items + total checked)",
        {
            "organizations_many": many.organizations,
            "organizations_few": few.organizations,
            "matching": MATCH.total,
            "p50_ms_many": many.p50_ms,
            "p50_ms_few": few.p50_ms,
            "p99_ms_many": many.load.p99_ms if many.load else None,
            "p99_ms_few": few.load.p99_ms if few.load else None,
            "service_cpu_ms_per_request_many": _per_request(cpu[many.service.name], many),
            "service_cpu_ms_per_request_few": _per_request(cpu[few.service.name], few),
            "store_cpu_ms_per_request_many": _per_request(cpu[many.store.name], many),
            "store_cpu_ms_per_request_few": _per_request(cpu[few.store.name], few),
        },
    )


def _per_request(seconds: float, size: Size) -> float | None:
    return round(seconds * 1000 / len(size.latencies), 3) if size.latencies else None
