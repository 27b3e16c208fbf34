"""`python -m bench.run` (or `make bench`): the service's performance figures, each a ratio measured
within one run, printed as a markdown table and written to bench/results/latest.{md,json}.

Everything listens on 127.0.0.1, every phase is bounded in time, and every child process and
temporary directory is removed at the end. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from bench import session
from bench.common import DEFAULT_OUT, say
from bench.machine import usable_cores
from bench.record import Results
from bench.report import write_reports
from bench.seed import ListingMatch
from bench.stack import Stack


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cores = usable_cores()
    p = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    p.add_argument("--duration", type=int, default=10, help="seconds per load phase (10)")
    p.add_argument("--quick", action="store_true", help="3 s phases, 1 s warm-ups (smoke run)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON path; .md goes beside it")
    p.add_argument("--bcrypt-rounds", type=int, default=12, help="BCRYPT_ROUNDS (12)")
    p.add_argument("--hash-pool-size", type=int, default=None, help="HASH_POOL_SIZE (= cores)")
    p.add_argument("--get-connections", type=int, default=16, help="figure 1 (16)")
    p.add_argument("--latency-connections", type=int, default=2, help="figures 3, 5 (2)")
    p.add_argument(
        "--login-connections",
        type=int,
        default=max(2 * cores, 2),
        help=f"figures 2, 3 and creates (2 x cores = {2 * cores})",
    )
    p.add_argument("--tenant-docs", type=int, default=100_000, help="figure 4 large (100000)")
    p.add_argument("--small-tenant-docs", type=int, default=10, help="figure 4 small (10)")
    p.add_argument("--orgs", type=int, default=10_000, help="figure 5 organizations (10000)")
    p.add_argument("--renames", type=int, default=3, help="timed renames of each size (3)")
    p.add_argument("--list-orgs", type=int, default=10_000, help="figure 7 large (10000)")
    p.add_argument("--list-orgs-small", type=int, default=100, help="figure 7 small (100)")
    p.add_argument("--list-requests", type=int, default=300, help="figure 7 timed GETs (300)")
    p.add_argument(
        "--revocation-trials", type=int, default=50, help="figure 8: trials of each kind (50)"
    )
    p.add_argument(
        "--webhook-events", type=int, default=500, help="figure 10: changes to deliver (500)"
    )
    p.add_argument(
        "--placement-sizes",
        type=_sizes,
        default=None,
        metavar="N,N,...",
        help="figure 12: organizations at each size, ascending (1000,10000,50000; "
        "--quick: 200,1000,2000)",
    )
    p.add_argument(
        "--placement-creates",
        type=int,
        default=None,
        help="figure 12: timed creates per layout and size (96; --quick: 24)",
    )
    p.add_argument(
        "--placement-profile",
        action="store_true",
        help="figure 12: at the largest size, py-spy the service and stores during an untimed "
        "batch of creates, and the stores during the reconcile pass (top frames in the JSON)",
    )
    p.add_argument(
        "--only",
        type=lambda text: set(text.split(",")),
        default=None,
        metavar="FIGS",
        help=f"only these, comma-separated, of {','.join(session.PARTS)} "
        "(3 brings 5 with it: its idle reference)",
    )
    p.add_argument(
        "--launcher",
        choices=("orgsvc", "uvicorn"),
        default="orgsvc",
        help="orgsvc: `orgsvc serve` as deployed, JSON access log on (default); "
        "uvicorn: bare `uvicorn --factory`, no access log",
    )
    p.add_argument("--no-wrk", action="store_true", help="use the httpx fallback even with wrk")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs) for debugging")
    args = p.parse_args(argv)
    if args.only is not None and not args.only <= set(session.PARTS):
        p.error(f"--only: {','.join(sorted(args.only - set(session.PARTS)))} unknown")
    matching = ListingMatch().total
    if not matching <= args.list_orgs_small < args.list_orgs:
        p.error(f"figure 7 needs {matching} <= --list-orgs-small < --list-orgs")
    args.warmup = 2
    if args.quick:
        args.duration, args.warmup = min(args.duration, 3), 1
    return args


def _sizes(text: str) -> tuple[int, ...]:
    """`1000,10000,50000`: at least two sizes, ascending, each at least 10."""
    try:
        sizes = tuple(int(part.replace("_", "")) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if len(sizes) < 2 or list(sizes) != sorted(set(sizes)) or sizes[0] < 10:
        raise argparse.ArgumentTypeError("at least two sizes, ascending, each >= 10")
    return sizes


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    started = datetime.now(UTC)
    t0 = time.monotonic()
    stack = Stack(args)
    res = Results()
    try:
        session.run(args, stack, res)
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except Exception as exc:
        say(f"FAILED: {exc}")
        for child in stack.children:
            if child.name.startswith("service"):
                say(f"{child.name} log tail:\n{child.log_tail()}")
        raise
    finally:
        stack.cleanup()
    elapsed = time.monotonic() - t0
    md = write_reports(res, args, elapsed, started)
    print(md)
    say(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
