"""Figure 3: GET p99 while logins saturate the hash pool ÷ its p99 with no login load."""

from __future__ import annotations

import time

from bench.common import JSON_HEADERS, ratio
from bench.context import Context
from bench.load import LoadResult, LoadSpec
from bench.record import Figure
from bench.seed import login_bodies

LEAD = 2  # seconds the login load runs before and after the GET load


def measure(ctx: Context, idle: LoadResult) -> None:
    """`idle` is the same GET load run just before without logins (figure 5's second run)."""
    a = ctx.args
    sat_load = LoadSpec(
        "POST",
        "/admin/login",
        a.login_connections,
        a.duration + 2 * LEAD,
        headers=JSON_HEADERS,
        bodies=login_bodies(ctx),
    )
    running = ctx.gen.start(sat_load)
    time.sleep(LEAD)
    queue_before = ctx.stack.hash_queue()
    loaded_get, _ = ctx.res.loaded(
        "f3_get_under_login_load", ctx.gen, ctx.latency_load(), ctx.watch
    )
    queue_after = ctx.stack.hash_queue()
    ctx.res.record("f3_background_logins", running.wait())
    ctx.settle()
    ctx.res.figures.append(
        Figure(
            "3",
            "GET /org/get p99 while logins saturate the hash pool ÷ p99 with no login load",
            ratio(loaded_get.p99_ms, idle.p99_ms),
            "<=",
            3.0,
            f"{loaded_get.p99_ms:.2f} ms vs {idle.p99_ms:.2f} ms "
            f"({a.latency_connections} GET conns + {a.login_connections} login conns)",
            {
                "p99_ms_under_logins": loaded_get.p99_ms,
                "p99_ms_idle": idle.p99_ms,
                "p50_ms_under_logins": loaded_get.p50_ms,
                "p50_ms_idle": idle.p50_ms,
                "hash_queue_seen": [queue_before, queue_after],
            },
        )
    )
