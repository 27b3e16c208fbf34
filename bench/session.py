"""One run, in the documented order: figure 1, figure 5, figure 3, figure 2, creates, figure 4,
figure 7, figure 8, figure 9, figure 10, figure 11, figure 12, then figure 6 over all of it (or the
parts `--only` names)."""

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
    f7_listing,
    f8_revocation,
    f9_event_lag,
    f10_webhooks,
    f11_scale,
    f12_placement,
)
from bench.machine import machine_info, measure_bcrypt, usable_cores
from bench.procs import CpuClock
from bench.record import Results
from bench.seed import account
from bench.stack import Stack

PARTS = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "create")


def run(args: argparse.Namespace, stack: Stack, res: Results) -> None:
    want = set(PARTS) if args.only is None else args.only | ({"5"} if "3" in args.only else set())
    ctx = prepare(args, stack, res, accounts=bool(want - {"6", "7", "8", "9", "10", "11", "12"}))
    if "1" in want:
        f1_cpu.measure(ctx)
    if "5" in want:
        idle = f5_org_count.measure(ctx)
        if "3" in want:
            f3_latency_under_logins.measure(ctx, idle)
    if "2" in want:
        f2_login.measure(ctx)
    if "create" in want:
        create.measure(ctx)
    if "4" in want:
        f4_rename.measure(ctx)
    if "7" in want:
        f7_listing.measure(ctx)
    if "8" in want:
        f8_revocation.measure(ctx)
    if "9" in want:
        f9_event_lag.measure(ctx)
    if "10" in want:
        f10_webhooks.measure(ctx)
    if "11" in want:
        f11_scale.measure(ctx)
    if "12" in want:
        f12_placement.measure(ctx)
    noise = ctx.whole.stop()
    res.extra["noise"] = {k: round(v, 3) for k, v in noise.items()}
    if "6" in want:
        f6_rss.measure(ctx)
    res.figures.sort(key=lambda f: (len(f.num), f.num))  # 1, 2, ..., 9, 10


def prepare(args: argparse.Namespace, stack: Stack, res: Results, *, accounts: bool) -> Context:
    """Time bcrypt here, start the store and the service, make the ten accounts (if `accounts`:
    figures 6, 7, 9, 10, 11 and 12 need none)."""
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
    for i in range(SMALL_ORGS if accounts else 0):
        ctx.accounts.append(account(ctx, f"Bench Org {i:02d}", f"{i:02d}"))
    return ctx
