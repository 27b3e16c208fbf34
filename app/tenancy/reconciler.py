"""The reconciler: finishes or undoes operations whose process died, on any number of replicas.

It runs once at start-up and then every `RECONCILE_INTERVAL_SECONDS`. An operation is only
touched once its lease has expired, and is claimed with `find_one_and_update` first, so two
replicas never work on the same one at the same time. What finishing or undoing means is the
business of the feature that owns the operation's kind: it registers a handler per kind (the
composition root does, `app.wiring`); this module knows none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping

from app.kit.store import StoreError
from app.tenancy.context import OperationContext
from app.tenancy.lease import Hold, OperationLost
from app.tenancy.operations import Operation, OperationRepository

log = logging.getLogger("orgsvc.reconciler")

# Finish or undo one abandoned operation of a kind, holding it; returns the outcome's name.
Handler = Callable[[Operation, Hold], Awaitable[str]]


class Reconciler:
    """Completes or undoes abandoned operations, through the handler of each one's kind."""

    def __init__(
        self,
        ops: OperationRepository,
        handlers: Mapping[str, Handler],
        ctx: OperationContext,
        *,
        observers: list[Callable[[str, str], None]] | None = None,
        error_observers: list[Callable[[BaseException], None]] | None = None,
    ) -> None:
        self.ops = ops
        self.handlers = dict(handlers)
        self.ctx = ctx
        self.observers = observers or []  # (kind, outcome) for metrics
        self.error_observers = error_observers or []
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def run_once(self) -> Counter[str]:
        """One pass over every expired operation; returns what was done, by outcome."""
        done: Counter[str] = Counter()
        lease = self.ctx.settings.operation_lease_seconds
        for op_id in await self.ops.expired():
            op = await self.ops.take_over(op_id, owner=self.ctx.owner, lease_seconds=lease)
            if op is None:
                continue  # another replica took it
            kind = op.kind
            handler = self.handlers.get(kind)
            try:
                async with Hold(self.ops, op.op_id, fence=op.fence, lease_seconds=lease) as hold:
                    if handler is None:
                        log.error("unknown operation kind %r in %s; leaving it", kind, op.op_id)
                        outcome = "unknown"
                    else:
                        outcome = await handler(op, hold)
            except OperationLost:
                # This replica stalled past the lease it took: another one holds it now.
                outcome = "lost"
            except StoreError as exc:
                log.warning("reconcile of %s %s failed: %s", kind, op.op_id, exc)
                for observe_error in self.error_observers:
                    observe_error(exc)
                outcome = "failed"
            except Exception:
                # A bug or a record this release cannot read: logged, and the pass goes on (the
                # operation is tried again when the lease this pass took has run out).
                log.exception("reconcile of %s %s failed", kind, op.op_id)
                outcome = "failed"
            log.info(
                "reconciled operation",
                extra={
                    "op_id": op.op_id,
                    "kind": kind,
                    "outcome": outcome,
                    "organization_id": op.organization_id,
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
