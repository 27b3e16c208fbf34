"""Stopping a background task for sure."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any], *, within: float | None = None) -> bool:
    """Cancel `task` until it has ended, for at most `within` seconds (None: until it ends);
    whether it has ended. An exception it ended with is retrieved (`task.exception()`), not
    raised.

    Cancelled again and again, not once: on Python 3.11 a cancellation that lands as the
    operation a task awaits completes inside `asyncio.wait_for` (the driver's socket reads and
    writes) is swallowed, and the task goes on as if it had not been cancelled.
    """
    loop = asyncio.get_running_loop()
    deadline = None if within is None else loop.time() + within
    while not task.done():
        if deadline is not None and loop.time() >= deadline:
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if not task.cancelled():
        task.exception()
    return True
