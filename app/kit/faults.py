"""Test-only fault hook: kill or pause this process at a named step.

Inert unless `FAULT_POINTS` names the step; the settings refuse `FAULT_POINTS` in production.
`create.after_claim` SIGKILLs the process there (crash tests stop a create, rename or delete
exactly between two of its writes); `create.after_claim:stop` sends it SIGSTOP there, once, so a
test can hold it past its lease, let another replica take the operation over, then SIGCONT it.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger("orgsvc.faults")
STOP_SUFFIX = ":stop"


class FaultInjector:
    """Kills (or, once per point, stops) the process at the steps named in `points`."""

    def __init__(self, points: frozenset[str]) -> None:
        self.kill_points = {p for p in points if not p.endswith(STOP_SUFFIX)}
        self.stop_points = {p.removesuffix(STOP_SUFFIX) for p in points if p.endswith(STOP_SUFFIX)}

    @property
    def points(self) -> frozenset[str]:
        return frozenset(self.kill_points | {p + STOP_SUFFIX for p in self.stop_points})

    def __call__(self, point: str) -> None:
        if point in self.kill_points:
            log.error("fault injection: SIGKILL at %s", point)
            os.kill(os.getpid(), signal.SIGKILL)
        if point in self.stop_points:
            self.stop_points.discard(point)
            log.error("fault injection: SIGSTOP at %s", point)
            for handler in logging.getLogger().handlers:
                handler.flush()
            os.kill(os.getpid(), signal.SIGSTOP)
