"""Test-only fault hook: kill this process with SIGKILL at a named step.

Inert unless `FAULT_POINTS` names the step; the settings refuse `FAULT_POINTS` in production.
Crash tests use it to stop a create, rename or delete exactly between two of its writes.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger("orgsvc.faults")


class FaultInjector:
    """Kills the process at the steps named in `points`."""

    def __init__(self, points: frozenset[str]) -> None:
        self.points = points

    def __call__(self, point: str) -> None:
        if point in self.points:
            log.error("fault injection: SIGKILL at %s", point)
            os.kill(os.getpid(), signal.SIGKILL)
