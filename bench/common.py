"""What every bench module shares: paths, the admins' password, progress lines, ratios."""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench" / "results" / "latest.json"
PASSWORD = "bench-password-123"
JSON_HEADERS = {"Content-Type": "application/json"}
FOREIGN_WARN_CORES = 0.15  # CPU used by processes outside the bench, averaged over a phase
SMALL_ORGS = 10  # organizations made through the API: #0 is read by every GET, all ten log in

Doc = dict[str, Any]

_started = time.monotonic()


def say(msg: str) -> None:
    """Progress on stderr (stdout carries only the final table)."""
    print(f"[bench {time.monotonic() - _started:6.1f}s] {msg}", file=sys.stderr, flush=True)


def own_cpu() -> float:
    """CPU seconds of this process plus its reaped children (wrk runs are children)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        total += ru.ru_utime + ru.ru_stime
    return total


def ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None
