"""Figure 1: service-process CPU per authenticated GET ÷ a bare FastAPI app's CPU per request."""

from __future__ import annotations

from bench.common import ratio, say
from bench.context import Context
from bench.load import LoadGenerator, LoadSpec, run
from bench.record import Figure


def start_baseline(ctx: Context) -> LoadGenerator:
    """The bare app, answering the exact JSON the service returned; a load generator on it."""
    first = ctx.stack.api("GET", ctx.get_path, token=ctx.main["token"])
    first.raise_for_status()
    bare_url = ctx.stack.start_bare(first.json())
    bare_gen = ctx.stack.load_generator(bare_url)
    say(f"bare FastAPI baseline {bare_url} (pid {ctx.stack.bare.pid})")
    return bare_gen


def measure(ctx: Context) -> None:
    """The same load (URL, headers, connections) against each server, CPU read from /proc."""
    a = ctx.args
    bare_gen = start_baseline(ctx)
    get_load = LoadSpec("GET", ctx.get_path, a.get_connections, a.duration, headers=ctx.auth)
    warm = LoadSpec("GET", ctx.get_path, a.get_connections, a.warmup, headers=ctx.auth)
    run(ctx.gen, warm)
    run(bare_gen, warm)
    svc_res, svc_cpu = ctx.res.loaded("f1_service_get", ctx.gen, get_load, ctx.watch)
    bare_res, bare_cpu = ctx.res.loaded("f1_bare_get", bare_gen, get_load, [ctx.stack.bare])
    svc_per = svc_cpu["service"] / max(svc_res.ok, 1)
    bare_per = bare_cpu["bare"] / max(bare_res.ok, 1)
    nx_per = svc_cpu["nx-27017"] / max(svc_res.ok, 1)
    ctx.res.figures.append(
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
