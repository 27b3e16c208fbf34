"""Figure 4: rename time for a tenant of 100,000 documents ÷ for a tenant of 10.

The store's own renameCollection, timed directly, is reported beside it: nx-27017 rebuilds every
secondary index to rename it (SQLite cannot rename an index), so its renameCollection is
O(documents); what the service adds on top is shown apart.
"""

from __future__ import annotations

import statistics
import time

from bench.common import Doc, ratio, say
from bench.context import Context
from bench.record import Figure
from bench.seed import account, fill_tenant

SIZES = ("small", "large")


def measure(ctx: Context) -> None:
    a = ctx.args
    sizes = {"small": a.small_tenant_docs, "large": a.tenant_docs}
    accs = {
        "small": account(ctx, "Bench Rename Small", "rename-small"),
        "large": account(ctx, "Bench Rename Large", "rename-large"),
    }
    for key, acc in accs.items():
        col = ctx.stack.db[acc["org"]["collection_name"]]
        t0 = time.perf_counter()
        fill_tenant(col, sizes[key])
        say(f"seeded {sizes[key]} documents into {col.name} in {time.perf_counter() - t0:.1f}s")
    timings = service_renames(ctx, accs)
    store_med = store_renames(ctx, accs)
    counts = {
        key: ctx.stack.db[acc["org"]["collection_name"]].count_documents({})
        for key, acc in accs.items()
    }
    if counts != sizes:
        ctx.res.notes.append(f"rename check: documents after renames {counts} != seeded {sizes}")
    med = {key: statistics.median(v) for key, v in timings.items()}
    say(f"rename medians: small {med['small'] * 1000:.1f} ms, large {med['large'] * 1000:.1f}")
    ctx.res.phases["f4_rename"] = {
        "seconds": {k: [round(x, 5) for x in v] for k, v in timings.items()},
        "documents_after": counts,
    }
    ctx.res.figures.append(figure(sizes, med, store_med, a.renames))


def service_renames(ctx: Context, accs: dict[str, Doc]) -> dict[str, list[float]]:
    """`PUT /org/update` back and forth between two names: one warm-up pair, then the timed ones
    (client-side wall time, seconds)."""
    names = {key: [acc["name"], acc["name"] + " B"] for key, acc in accs.items()}
    timings: dict[str, list[float]] = {"small": [], "large": []}
    for rep in range(ctx.args.renames + 1):  # the first pair is a warm-up
        for key in SIZES:
            new_name = names[key][(rep + 1) % 2]
            t0 = time.perf_counter()
            resp = ctx.stack.api(
                "PUT",
                "/org/update",
                token=accs[key]["token"],
                json={"organization_name": new_name},
            )
            elapsed = time.perf_counter() - t0
            if resp.status_code != 200:
                raise RuntimeError(f"rename {key}: {resp.status_code} {resp.text}")
            accs[key]["org"] = resp.json()
            if rep:
                timings[key].append(elapsed)
    return timings


def store_renames(ctx: Context, accs: dict[str, Doc]) -> dict[str, float]:
    """The store's own renameCollection, timed directly (there and back): median ms."""
    store: dict[str, list[float]] = {"small": [], "large": []}
    for _ in range(ctx.args.renames):
        for key, acc in accs.items():
            name = acc["org"]["collection_name"]
            t0 = time.perf_counter()
            ctx.stack.db[name].rename(name + "_x")
            store[key].append(time.perf_counter() - t0)
            ctx.stack.db[name + "_x"].rename(name)
    return {key: statistics.median(v) * 1000 for key, v in store.items()}


def figure(
    sizes: dict[str, int], med: dict[str, float], store_med: dict[str, float], renames: int
) -> Figure:
    own = {key: max(med[key] * 1000 - store_med[key], 0.0) for key in med}
    return Figure(
        "4",
        f"Rename time, tenant of {sizes['large']:,} documents ÷ tenant of {sizes['small']:,}",
        ratio(med["large"], med["small"]),
        "<=",
        2.0,
        f"{med['large'] * 1000:.1f} ms vs {med['small'] * 1000:.1f} ms "
        f"(median of {renames}; the store's renameCollection alone: "
        f"{store_med['large']:.1f} vs {store_med['small']:.1f} ms, so the service's own "
        f"part: {own['large']:.1f} vs {own['small']:.1f} ms)",
        {
            "median_ms_large": med["large"] * 1000,
            "median_ms_small": med["small"] * 1000,
            "store_rename_only_ms_large": store_med["large"],
            "store_rename_only_ms_small": store_med["small"],
            "service_own_ms_large": own["large"],
            "service_own_ms_small": own["small"],
        },
    )
