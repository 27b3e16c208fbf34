"""Figure 5: GET p50 with 10,000 organizations ÷ with 10 (the rest seeded directly)."""

from __future__ import annotations

import time

from bench.common import SMALL_ORGS, ratio, say
from bench.context import Context
from bench.load import LoadResult, LoadSpec, run
from bench.record import Figure
from bench.seed import seed_organizations


def measure(ctx: Context) -> LoadResult:
    """Returns the GET run with every organization in place (figure 3's idle reference)."""
    a = ctx.args
    db = ctx.stack.db
    lat_load = ctx.latency_load()
    few, _ = ctx.res.loaded(f"get_latency_{SMALL_ORGS}_orgs", ctx.gen, lat_load, ctx.watch)
    before = db["organizations"].count_documents({})
    t0 = time.perf_counter()
    added = seed_organizations(ctx, max(0, a.orgs - before), template_org=ctx.main["org"])
    total = db["organizations"].count_documents({})
    say(f"seeded {added} organizations in {time.perf_counter() - t0:.1f}s: {total} in store")
    run(ctx.gen, LoadSpec("GET", ctx.get_path, a.latency_connections, a.warmup, headers=ctx.auth))
    many, _ = ctx.res.loaded(f"get_latency_{total}_orgs", ctx.gen, lat_load, ctx.watch)
    ctx.res.figures.append(
        Figure(
            "5",
            f"GET /org/get p50 with {total:,} organizations ÷ p50 with {SMALL_ORGS}",
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
    return many
