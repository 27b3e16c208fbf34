"""Figure 2: login throughput ÷ the physical bcrypt limit (cores ÷ one verify)."""

from __future__ import annotations

from bench.common import JSON_HEADERS, ratio
from bench.context import Context
from bench.load import LoadSpec
from bench.record import Figure
from bench.seed import login_bodies


def measure(ctx: Context) -> None:
    a = ctx.args
    login_load = LoadSpec(
        "POST",
        "/admin/login",
        a.login_connections,
        a.duration,
        headers=JSON_HEADERS,
        bodies=login_bodies(ctx),
    )
    login_res, login_cpu = ctx.res.loaded("f2_login", ctx.gen, login_load, ctx.watch)
    ctx.settle()
    t_verify = ctx.res.t_verify
    limit = ctx.cores / t_verify
    ctx.res.figures.append(
        Figure(
            "2",
            f"Login throughput at {a.login_connections} connections ÷ (cores ÷ one bcrypt verify)",
            ratio(login_res.ok_rps, limit),
            ">=",
            0.85,
            f"{login_res.ok_rps:.2f} logins/s vs limit {limit:.2f}/s "
            f"({ctx.cores} cores ÷ {t_verify * 1000:.0f} ms)",
            {
                "logins_per_s": round(login_res.ok_rps, 3),
                "physical_limit_per_s": round(limit, 3),
                "service_cpu_cores_busy": round(login_cpu["service"] / login_res.duration_s, 2),
                "non_2xx": login_res.non_ok,
            },
        )
    )
