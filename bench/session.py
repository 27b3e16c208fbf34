"""One run, in the documented order: figure 1, figure 5, figure 3, figure 2, creates, figure 4,
then figure 6 over all of it."""

from __future__ import annotations

import argparse
import secrets

from bench.common import SMALL_ORGS, say
from bench.context import Context
from bench.figures import (
    create,
    f1_cpu,
    f2_login,
    f3_latency_under_logins,
    f4_rename,
    f5_org_count,
    f6_rss,
)
from bench.machine import machine_info, measure_bcrypt, usable_cores
from bench.procs import CpuClock
from bench.record import Results
from bench.seed import account
from bench.stack import Stack


def run(args: argparse.Namespace, stack: Stack, res: Results) -> None:
    ctx = prepare(args, stack, res)
    f1_cpu.measure(ctx)
    idle = f5_org_count.measure(ctx)
    f3_latency_under_logins.measure(ctx, idle)
    f2_login.measure(ctx)
    create.measure(ctx)
    f4_rename.measure(ctx)
    noise = ctx.whole.stop()
    res.extra["noise"] = {k: round(v, 3) for k, v in noise.items()}
    f6_rss.measure(ctx)
    res.figures.sort(key=lambda f: f.num)


def prepare(args: argparse.Namespace, stack: Stack, res: Results) -> Context:
    """Time bcrypt here, start the store and the service, make the ten accounts."""
    res.extra["machine"] = machine_info()
    whole = CpuClock([])
    say(f"measuring bcrypt at cost {args.bcrypt_rounds} in this process ...")
    res.t_verify, res.t_hash = measure_bcrypt(args.bcrypt_rounds)
    say(f"bcrypt verify {res.t_verify * 1000:.1f} ms, hash {res.t_hash * 1000:.1f} ms")

    svc_url = stack.start_service(stack.start_store())
    gen = stack.load_generator(svc_url)
    res.loadgen = gen.label
    if not gen.label.startswith("wrk"):
        res.notes.append(
            "no wrk (missing, or --no-wrk): load came from the in-process httpx FALLBACK"
        )
    say(f"service {svc_url} (pid {stack.service.pid}), load generator: {gen.label}")
    ctx = Context(args, stack, res, usable_cores(), secrets.token_hex(3), gen, whole)
    for i in range(SMALL_ORGS):
        ctx.accounts.append(account(ctx, f"Bench Org {i:02d}", f"{i:02d}"))
    return ctx
