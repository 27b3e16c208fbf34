"""Figure 10: webhook delivery throughput to a local receiver.

A receiver (`tests/support/receiver.py`, kept alive, answering 200 at once) listens on a free
127.0.0.1 port. `ORGS` organizations are created through the API, then the receiver is
registered (`POST /webhooks`, types `organization.updated`, with a service key of scopes
`org:write,events:read,webhooks:manage`; the main service runs with
`WEBHOOK_ALLOW_PRIVATE_NETWORKS=true`, every other webhook setting at its default). Then `ORGS`
clients make `--webhook-events` changes in all, as fast as the service answers, each client
`PATCH /orgs/{id}` of its own organization (`metadata` changes: one `organization.updated` each).
The receiver records every request's arrival (`time.time()`); the figure is deliveries per
second from the first arrival to the last, with the event's `occurred_at` → arrival p50/p99
beside it. The expected event ids are read back from `GET /events`; every one must arrive (at
least once; duplicates are counted), and every signature is verified afterwards with the
`standardwebhooks` library and the secret `POST /webhooks` returned. The endpoint is deleted at
the end. Bounded: the receiver waits at most `SETTLE_S` after the last change.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import httpx

from bench.common import PASSWORD, Doc, say
from bench.context import Context
from bench.figures.common import feed_tail, note_problems
from bench.load import percentile
from bench.procs import CpuClock
from bench.record import Figure
from bench.seed import service_key
from tests.support.receiver import Receiver, verify

ORGS = 8  # organizations, and clients making the changes (one organization each)
SETTLE_S = 30.0
TYPE = "organization.updated"


@dataclass
class Run:
    expected: list[str] = field(default_factory=list)  # event ids, from GET /events
    occurred: dict[str, float] = field(default_factory=dict)  # event id -> occurred_at (epoch)
    changes_s: float = 0.0
    change_failures: list[str] = field(default_factory=list)
    secret: str = ""
    settled: bool = False
    cpu: dict[str, float] = field(default_factory=dict)  # from registration to the end


def measure(ctx: Context) -> None:
    scopes = "org:write,events:read,webhooks:manage"
    headers = {"X-API-Key": service_key(ctx, "bench-f10", scopes)}
    receiver = Receiver(keep_alive=True)
    run = asyncio.run(_run(ctx, headers, receiver))
    ctx.res.figures.append(figure(ctx, run, receiver, run.cpu))


async def _run(ctx: Context, headers: dict[str, str], receiver: Receiver) -> Run:
    run = Run()
    url = await receiver.start()
    limits = httpx.Limits(max_connections=ORGS + 2)
    try:
        async with httpx.AsyncClient(
            base_url=ctx.stack.url, timeout=60.0, trust_env=False, limits=limits
        ) as http:
            orgs = await asyncio.gather(*(_create(ctx, http, i) for i in range(ORGS)))
            hook = await _register(http, headers, url)
            run.secret = hook["secret"]
            clock = CpuClock(ctx.watch)
            try:
                after = await feed_tail(http, headers, TYPE)
                await _changes(ctx, http, headers, orgs, run)
                await _expected(http, headers, after, run, ctx.args.webhook_events)
                deadline = time.monotonic() + SETTLE_S
                want = set(run.expected)
                while time.monotonic() < deadline:
                    if want <= {a.event_id for a in receiver.arrivals}:
                        run.settled = True
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.2)  # a late duplicate would show here
                run.cpu = clock.stop()
            finally:
                resp = await http.delete(f"/webhooks/{hook['webhook_id']}", headers=headers)
                if resp.status_code != 204:
                    ctx.res.notes.append(f"figure 10: DELETE /webhooks: {resp.status_code}")
    finally:
        await receiver.close()
    return run


async def _create(ctx: Context, http: httpx.AsyncClient, i: int) -> str:
    body = {
        "organization_name": f"Bench Hooks {ctx.run_id} {i}",
        "email": f"hooks-{ctx.run_id}-{i}@bench.example.com",
        "password": PASSWORD,
    }
    resp = await http.post("/org/create", json=body)
    if resp.status_code != 201:
        raise RuntimeError(f"figure 10: create: {resp.status_code} {resp.text[:200]}")
    org_id: str = resp.json()["organization_id"]
    return org_id


async def _register(http: httpx.AsyncClient, headers: dict[str, str], url: str) -> Doc:
    body = {"url": url, "types": [TYPE], "description": "bench figure 10"}
    resp = await http.post("/webhooks", json=body, headers=headers)
    if resp.status_code != 201:
        raise RuntimeError(f"figure 10: POST /webhooks: {resp.status_code} {resp.text[:300]}")
    hook: Doc = resp.json()
    return hook


async def _changes(
    ctx: Context, http: httpx.AsyncClient, headers: dict[str, str], orgs: list[str], run: Run
) -> None:
    total = ctx.args.webhook_events

    async def client(i: int, org_id: str) -> None:
        for n in range(i, total, len(orgs)):
            body = {"metadata": {"bench": ctx.run_id, "n": n}}
            resp = await http.patch(f"/orgs/{org_id}", json=body, headers=headers)
            if resp.status_code != 200:
                run.change_failures.append(f"{resp.status_code} {resp.text[:120]}")

    started = time.monotonic()
    await asyncio.gather(*(client(i, org) for i, org in enumerate(orgs)))
    run.changes_s = time.monotonic() - started
    say(
        f"figure 10: {total - len(run.change_failures)} changes in {run.changes_s:.1f}s "
        f"({len(run.change_failures)} failed)"
    )


async def _expected(
    http: httpx.AsyncClient, headers: dict[str, str], after: str | None, run: Run, want: int
) -> None:
    """The changes' event ids and `occurred_at`, from the feed (waiting for them to be published,
    at most `SETTLE_S`)."""
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        params = {"types": TYPE, "limit": "100", **({"after": after} if after else {})}
        resp = await http.get("/events", params=params, headers=headers)
        resp.raise_for_status()
        body: Doc = resp.json()
        for item in body["items"]:
            run.expected.append(item["id"])
            run.occurred[item["id"]] = datetime.fromisoformat(item["occurred_at"]).timestamp()
        if body["next_cursor"] is not None:
            after = body["next_cursor"]
        elif len(run.expected) >= want:
            return
        else:
            await asyncio.sleep(0.05)


def figure(ctx: Context, run: Run, receiver: Receiver, cpu: dict[str, float]) -> Figure:
    arrivals = receiver.arrivals
    counts = Counter(a.event_id for a in arrivals)
    want = set(run.expected)
    missing = len(want - set(counts))
    duplicates = sum(n - 1 for eid, n in counts.items() if eid in want and n > 1)
    stray = sum(n for eid, n in counts.items() if eid not in want)
    first_at: dict[str, float] = {}
    for arrival in arrivals:
        first_at.setdefault(arrival.event_id, arrival.wall)
    lags = sorted(first_at[e] - run.occurred[e] for e in want if e in first_at)
    verified = verify(arrivals, run.secret)
    span = arrivals[-1].wall - arrivals[0].wall if len(arrivals) > 1 else 0.0
    rate = (len(arrivals) - 1) / span if span > 0 else None
    change_rate = ctx.args.webhook_events / run.changes_s if run.changes_s else None
    p50 = percentile(lags, 50) * 1000 if lags else None
    p99 = percentile(lags, 99) * 1000 if lags else None
    problems = []
    if len(run.expected) != ctx.args.webhook_events - len(run.change_failures):
        problems.append(
            f"{len(run.expected)} events in the feed for "
            f"{ctx.args.webhook_events - len(run.change_failures)} changes"
        )
    if missing:
        problems.append(f"{missing} events never arrived within {SETTLE_S:g} s")
    if verified != len(arrivals):
        problems.append(f"{len(arrivals) - verified} of {len(arrivals)} signatures did not verify")
    if stray:
        problems.append(f"{stray} deliveries of events not made by this figure")
    if run.change_failures:
        problems.append(f"{len(run.change_failures)} changes failed: {run.change_failures[0]}")
    note_problems(ctx, "10", problems, cpu)
    checks = (
        f"all {len(want)} arrived, {duplicates} duplicates, {verified}/{len(arrivals)} "
        "signatures verified"
        if not problems
        else "; ".join(problems) + f"; {duplicates} duplicates"
    )
    say(
        f"figure 10: {len(arrivals)} deliveries in {span:.2f}s = {rate or 0:.1f}/s; "
        f"lag p50 {p50 or 0:.0f} ms, p99 {p99 or 0:.0f} ms; {checks}"
    )
    measured = (
        "n/a"
        if rate is None or p50 is None or p99 is None
        else f"{len(arrivals)} deliveries in {span:.2f} s (changes made at "
        f"{change_rate or 0:.0f}/s by {ORGS} clients); occurred_at → arrival p50 {p50:.0f} ms, "
        f"p99 {p99:.0f} ms; {checks}"
    )
    service_cpu = cpu.get(ctx.stack.service.name)
    if not cpu:
        cpu = {"foreign_cores": 0.0, "steal_cores": 0.0}
    return Figure(
        "10",
        "Webhook delivery throughput to a local receiver (deliveries/s, first to last "
        "arrival; one endpoint, default worker settings)",
        rate,
        ">=",
        None,
        measured,
        {
            "changes": ctx.args.webhook_events,
            "change_failures": len(run.change_failures),
            "changes_s": round(run.changes_s, 3),
            "changes_per_s": round(change_rate, 2) if change_rate else None,
            "events_expected": len(run.expected),
            "arrivals": len(arrivals),
            "missing": missing,
            "duplicates": duplicates,
            "stray": stray,
            "signatures_verified": verified,
            "receiver_connections": receiver.connections,
            "span_s": round(span, 3),
            "deliveries_per_s": rate,
            "lag_p50_ms": p50,
            "lag_p90_ms": percentile(lags, 90) * 1000 if lags else None,
            "lag_p99_ms": p99,
            "lag_max_ms": lags[-1] * 1000 if lags else None,
            "all_arrived_in_time": run.settled,
            "service_cpu_ms_per_change_and_delivery": (
                round(service_cpu * 1000 / len(arrivals), 3)
                if service_cpu is not None and arrivals
                else None
            ),
            "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
        },
        unit="/s",
    )
