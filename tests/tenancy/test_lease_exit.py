"""Leaving a `Hold` ends its lease renewals even when cancellations are lost: on Python 3.11 a
cancellation that lands while a renewal's write completes can be swallowed (`asyncio.wait_for`
in the driver), and the exit used to wait for the renewal loop for ever (a `tenants move` whose
target cluster had stopped hung so, about 1 run in 6)."""

from __future__ import annotations

import asyncio
from typing import cast

from app.tenancy.lease import Hold
from app.tenancy.operations import OperationRepository


class LosingOps:
    """Renewals that take a while and swallow every cancellation that lands in them (while
    `losing`)."""

    def __init__(self) -> None:
        self.renewals = 0
        self.lost = 0
        self.losing = True
        self.renewing = asyncio.Event()

    async def renew(self, op_id: str, *, fence: int, lease_seconds: float) -> bool:
        self.renewals += 1
        self.renewing.set()
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            if not self.losing:
                raise
            self.lost += 1  # the write completed as the cancellation landed: lost
        return True


async def test_leaving_a_hold_ends_its_renewals_even_when_cancellations_are_lost() -> None:
    ops = LosingOps()

    async def work() -> None:
        # Renewing nearly all the time (a wait of 0.1 ms between renewals of 50 ms).
        async with Hold(cast(OperationRepository, ops), "op", fence=1, lease_seconds=0.0003):
            await ops.renewing.wait()
            # Leave while a renewal is under way: its cancellation is lost.

    task = asyncio.create_task(work())
    done, _ = await asyncio.wait({task}, timeout=2)
    if not done:  # it hung: let the renewals be cancelled, so that the test ends
        ops.losing = False
        task.cancel()
        await asyncio.wait({task}, timeout=2)
    assert done, "leaving the hold waited for its renewals for ever"
    assert ops.lost >= 1
    renewals = ops.renewals
    await asyncio.sleep(0.2)
    assert ops.renewals == renewals  # none since the exit: the loop has ended


async def test_a_hold_leaves_at_once_between_renewals() -> None:
    ops = LosingOps()
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with Hold(cast(OperationRepository, ops), "op", fence=1, lease_seconds=30):
        await asyncio.sleep(0)
    assert loop.time() - started < 0.5  # the 10 s wait for the next renewal is not waited out
    assert ops.renewals == 0
