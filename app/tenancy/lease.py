"""A process's hold on one operation: its fencing token, with the lease renewed while it works.

Every step of a create, rename or delete first calls `check()` (one conditional write that renews
the lease *and* proves the fence still holds), and passes its commit point with `commit()`. A
process that stalled past its lease (GC pause, SIGSTOP, slow disk) finds at its next check that
another replica took the operation over, and stops acting: the request answers 503
`operation_interrupted` and the reconciler that took over finishes or undoes the operation.
A background task renews the lease every third of its length during long steps.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

from app.kit.errors import AppError
from app.kit.store import StoreError
from app.kit.tasks import cancel_and_wait
from app.tenancy.operations import OperationRepository

log = logging.getLogger("orgsvc.lease")


class OperationLost(AppError):
    """This process no longer holds the operation: another replica took it over."""

    status, code = 503, "operation_interrupted"
    detail = (
        "This change was interrupted (the replica handling it stalled past its lease); another "
        "replica is completing or undoing it. Retry shortly."
    )

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "1"})


class Hold:
    """The fencing token of one operation held by this process (an async context manager that
    renews the lease in the background while the operation runs)."""

    def __init__(
        self, ops: OperationRepository, op_id: str, *, fence: int, lease_seconds: float
    ) -> None:
        self.ops = ops
        self.op_id = op_id
        self.fence = fence
        self.lease_seconds = lease_seconds
        self.lost = False
        self.committed = False
        self._closing = False
        self._renewer: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Hold:
        self._renewer = asyncio.create_task(self._renew_loop(), name=f"lease-{self.op_id}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        renewer, self._renewer = self._renewer, None
        if renewer is None:
            return
        # The loop also ends by itself at its next turn: on Python 3.11 a cancellation that
        # lands while a renewal's write completes can be lost (`asyncio.wait_for` in the
        # driver swallows it), and the renewals would go on, and this exit wait, for ever.
        self._closing = True
        await cancel_and_wait(renewer)
        if not renewer.cancelled() and renewer.exception() is not None:
            log.warning("lease renewal of %s ended: %r", self.op_id, renewer.exception())

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            if self.lost or self._closing:
                return
            try:
                if not await self.ops.renew(
                    self.op_id, fence=self.fence, lease_seconds=self.lease_seconds
                ):
                    self.lost = True
            except StoreError as exc:  # the next check decides; keep trying meanwhile
                log.warning("lease renewal of %s failed: %s", self.op_id, type(exc).__name__)

    async def check(self) -> None:
        """Renew the lease, or raise OperationLost when the fence has moved on."""
        if self.lost or not await self.ops.renew(
            self.op_id, fence=self.fence, lease_seconds=self.lease_seconds
        ):
            self.lost = True
            raise OperationLost()

    async def commit(self) -> None:
        """Pass the commit point, or raise OperationLost."""
        if self.lost or not await self.ops.commit(
            self.op_id, fence=self.fence, lease_seconds=self.lease_seconds
        ):
            self.lost = True
            raise OperationLost()
        self.committed = True

    async def finish(self) -> None:
        """Delete the intent while the fence holds (if it moved on, the new holder deletes it)."""
        await self.ops.finish(self.op_id, fence=self.fence)
