"""The report: a markdown table (printed, and written as .md) and the raw numbers as JSON."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

from bench.common import Doc
from bench.machine import git_revision, version_of
from bench.record import Results


def noise_text(noise: Doc | None) -> str:
    if not noise:
        return "not measured"
    return (
        f"{noise['foreign_cores']:.2f} cores on average from processes outside the bench, "
        f"{noise['steal_cores']:.2f} stolen by the hypervisor"
    )


def header(res: Results, a: argparse.Namespace, started: datetime) -> list[str]:
    m = res.extra["machine"]
    cores = f"**{m['cores']} cores** (usable by this process)"
    if m["os_cpu_count"] != m["cores"] or m["cgroup_cpu_quota"]:
        cores += f", {m['os_cpu_count']} in the machine, cgroup quota {m['cgroup_cpu_quota']}"
    launcher = (
        "`orgsvc serve` (as deployed: JSON access log on, written to a file)"
        if a.launcher == "orgsvc"
        else "`uvicorn app.main:create_app --factory --log-level warning` (no access log)"
    )
    return [
        f"## orgsvc benchmark — {started:%Y-%m-%d %H:%M} UTC, commit {git_revision()}",
        "",
        f"- Machine: {cores}, {m['cpu_model']}, Linux {m['kernel']}, Python {m['python']}",
        f"- bcrypt cost {a.bcrypt_rounds}, measured in the bench process: verify "
        f"**{res.t_verify * 1000:.1f} ms**, hash {res.t_hash * 1000:.1f} ms (median); "
        f"service hash pool: {a.hash_pool_size or 'default (= cores)'} threads",
        f"- Load generator: {res.loadgen}; {a.duration} s per phase. Service launched as "
        f"{launcher}, against nx-27017 {version_of('nx-27017')} (SQLite) on loopback",
        f"- Other work on the machine during the run: {noise_text(res.extra.get('noise'))}",
        "",
    ]


def create_lines(c: Doc | None) -> list[str]:
    if not c:
        return []
    share_cpu = c["bcrypt_share_of_service_cpu"]
    return [
        f"**Organization create:** {c['orgs_per_s']:.2f} orgs/s at {c['connections']} "
        f"connections (bcrypt limit {c['physical_limit_per_s']:.2f}/s = cores ÷ one hash; "
        f"p50 {c['p50_ms']:.0f} ms, {c['service_cpu_ms_per_create']:.0f} ms service CPU "
        "per create).  ",
        "bcrypt share of the service's CPU = creates x t_hash ÷ service CPU seconds = "
        + ("n/a" if share_cpu is None else f"**{share_cpu:.0%}**")
        + f"; of the machine = orgs/s x t_hash ÷ cores = {c['bcrypt_share_of_machine']:.0%}.",
        "",
    ]


def placement_lines(p: Doc | None) -> list[str]:
    """Figure 12's table: each size and layout, then each layout's growth ratios (the value at
    a size ÷ at the smallest), then where each curve bends."""
    if not p:
        return []

    def num(value: float | None, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    specs = {"creates_per_s": ".1f", "get_p50_ms": ".2f", "reconcile_pass_ms": ".0f"}
    specs["startup_s"] = ".2f"
    n = p["abandoned_creates_per_pass"]
    lines = [
        f"**Figure 12, placement scale** ({p['store_mode']}; {p['clients']} clients, bcrypt cost "
        f"{p['bcrypt_rounds']}; reconcile pass: {n} abandoned creates undone):",
        "",
        "| organizations | layout | creates/s | GET p50 ms | reconcile pass ms (idle) | "
        "start-up s | seed s | backlog count ms: aggregation / `count` (store alone) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size in p["sizes"]:
        for key, label in p["layouts"].items():
            pt = p["points"][key][str(size)]
            cells = [num(pt[m], spec) for m, spec in specs.items()]
            cells[2] += f" ({num(pt['idle_pass_ms'], '.1f')})"
            if pt.get("create_failures"):
                cells[0] += f" ({pt['create_failures']} failed)"
            failed = len(pt.get("start_failures") or [])
            if failed:
                cells[3] += f" ({failed} of {failed + len(pt['startups_s'])} launches failed)"
            counts = (
                f"{num(pt.get('backlog_count_documents_ms'), '.1f')} / "
                f"{num(pt.get('backlog_count_command_ms'), '.1f')}"
            )
            lines.append(
                f"| {size:,} | ({key}) {label} | " + " | ".join(cells)
                + f" | {pt['seed_s']:.0f} | {counts} |"
            )  # fmt: skip
    lines += ["", "| growth | layout | creates/s | GET p50 | reconcile pass | start-up |"]
    lines.append("|---|---|---|---|---|---|")
    for size in p["sizes"][1:]:
        for key in p["layouts"]:
            g = p["growth"][key]
            cells = [num(g[m][str(size)], ".2f") for m in specs]
            lines.append(f"| {size:,} ÷ {p['sizes'][0]:,} | ({key}) | " + " | ".join(cells) + " |")
    lines += ["", *(f"- {note}" for note in p["notes"]), ""]
    return lines


def render_markdown(res: Results, a: argparse.Namespace, elapsed: float, started: datetime) -> str:
    lines = [
        *header(res, a, started),
        "| # | figure | measured | value | target | met |",
        "|---|---|---|---|---|---|",
        *(f.row() for f in res.figures),
        "",
        *create_lines(res.extra.get("create")),
        *placement_lines(res.extra.get("placement")),
    ]
    if res.notes:
        lines += ["Notes:", *(f"- {n}" for n in res.notes), ""]
    lines.append(f"Total run time: {elapsed:.0f} s.")
    return "\n".join(lines) + "\n"


def write_reports(res: Results, a: argparse.Namespace, elapsed: float, started: datetime) -> str:
    """Writes `a.out` (JSON) and the markdown beside it; returns the markdown."""
    out: Path = a.out
    md = render_markdown(res, a, elapsed, started)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(md)
    data = {
        "started_at": started.isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 1),
        "commit": git_revision(),
        "machine": res.extra["machine"],
        "bcrypt": {
            "rounds": a.bcrypt_rounds,
            "verify_ms": round(res.t_verify * 1000, 2),
            "hash_ms": round(res.t_hash * 1000, 2),
        },
        "config": {k: v for k, v in vars(a).items() if k != "out"},
        "load_generator": res.loadgen,
        "versions": {
            d: version_of(d) for d in ("fastapi", "uvicorn", "pymongo", "bcrypt", "nx-27017")
        },
        "figures": [f.as_dict() for f in res.figures],
        "create": res.extra.get("create"),
        "phases": res.phases,
        "noise": res.extra.get("noise"),
        "notes": res.notes,
    }
    out.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return md
