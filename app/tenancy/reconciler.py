"""The reconciler: finishes or undoes operations whose process died, on any number of replicas.

It runs once at start-up and then every `RECONCILE_INTERVAL_SECONDS`. An operation is only
touched once its lease has expired, and is claimed with `find_one_and_update` first, so two
replicas never work on the same one at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable

from app.kit.store import StoreError
from app.tenancy.context import OperationContext, Stores
from app.tenancy.lease import Hold, OperationLost
from app.tenancy.steps import reconcile

log = logging.getLogger("orgsvc.reconciler")


class Reconciler:
    """Completes or undoes abandoned create, rename and delete operations."""

    def __init__(self, stores: Stores, ctx: OperationContext) -> None:
        self.stores = stores
        self.ctx = ctx
        self.observers: list[Callable[[str, str], None]] = []  # (kind, outcome) for metrics
        self.error_observers: list[Callable[[BaseException], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def run_once(self) -> Counter[str]:
        """One pass over every expired operation; returns what was done, by outcome."""
        done: Counter[str] = Counter()
        for candidate in await self.stores.ops.expired():
            op = await self.stores.ops.take_over(
                candidate["_id"],
                owner=self.ctx.owner,
                lease_seconds=self.ctx.settings.operation_lease_seconds,
            )
            if op is None:
                continue  # another replica took it
            kind = str(op.get("kind"))
            lease = self.ctx.settings.operation_lease_seconds
            try:
                async with Hold(
                    self.stores.ops, op["_id"], fence=int(op["fence"]), lease_seconds=lease
                ) as hold:
                    outcome = await reconcile(self.stores, op, hold, self.ctx.events)
            except OperationLost:
                # This replica stalled past the lease it took: another one holds it now.
                outcome = "lost"
            except StoreError as exc:
                log.warning("reconcile of %s %s failed: %s", kind, op["_id"], exc)
                for observe_error in self.error_observers:
                    observe_error(exc)
                outcome = "failed"
            log.info(
                "reconciled operation",
                extra={
                    "op_id": op["_id"],
                    "kind": kind,
                    "outcome": outcome,
                    "organization_id": op.get("organization_id"),
                },
            )
            for observe in self.observers:
                observe(kind, outcome)
            done[outcome] += 1
        return done

    def start(self) -> None:
        """Run passes in the background until `stop`."""
        self._task = asyncio.create_task(self._loop(), name="reconciler")

    async def _loop(self) -> None:
        interval = self.ctx.settings.reconcile_interval_seconds
        while not self._stop.is_set():
            try:
                await self.run_once()
            except StoreError as exc:
                log.warning("reconciler pass skipped: %s", type(exc).__name__)
                for observe_error in self.error_observers:
                    observe_error(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=interval)

    async def stop(self) -> None:
        """Let the current pass finish its operation, then stop."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, timeout=10)
            self._task = None
