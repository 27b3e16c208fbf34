"""Organization-create throughput, and bcrypt's share of a create's CPU."""

from __future__ import annotations

import json

from bench.common import JSON_HEADERS, PASSWORD, ratio
from bench.context import Context
from bench.load import LoadSpec


def measure(ctx: Context) -> None:
    a = ctx.args
    template = json.dumps(
        {
            "organization_name": f"Bench Create {ctx.run_id}" + " {tid} {n}",
            "email": f"create-{ctx.run_id}-{{tid}}-{{n}}@bench.example.com",
            "password": PASSWORD,
        }
    )
    load = LoadSpec(
        "POST", "/org/create", a.login_connections, a.duration, headers=JSON_HEADERS,
        body_template=template,
    )  # fmt: skip
    service = ctx.stack.service
    cpu0 = service.cpu()
    cre, _ = ctx.res.loaded("create", ctx.gen, load, [service, ctx.stack.nx])
    ctx.settle()  # creates cut off by the end of the load still finish: count them too
    cpu = service.cpu() - cpu0
    slug_prefix = f"bench_create_{ctx.run_id}_"
    made = ctx.stack.db["organizations"].count_documents(
        {"slug": {"$gte": slug_prefix, "$lt": slug_prefix + "~"}}
    )
    made = max(made, cre.ok)
    orgs_per_s = cre.ok_rps
    t_hash = ctx.res.t_hash
    ctx.res.extra["create"] = {
        "orgs_per_s": round(orgs_per_s, 3),
        "connections": a.login_connections,
        "created_in_window": cre.ok,
        "created_incl_cut_off": made,
        "physical_limit_per_s": round(ctx.cores / t_hash, 3),
        "bcrypt_share_of_service_cpu": ratio(made * t_hash, cpu),
        "bcrypt_share_of_machine": orgs_per_s * t_hash / ctx.cores,
        "service_cpu_ms_per_create": round(cpu / max(made, 1) * 1000, 2),
        "p50_ms": cre.p50_ms,
        "p99_ms": cre.p99_ms,
    }
