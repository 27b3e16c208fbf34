"""`Moves.stop()` at shutdown, with a copy that loses a cancellation (on Python 3.11 one that
lands inside `asyncio.wait_for`, in PyMongo's socket writes, can be lost): it is cancelled again
until it ends, and shutdown does not wait for a copy that never would."""

from __future__ import annotations

import asyncio

import pytest

from app.organizations import moves as moves_module
from tests.support.apps import custom_app


async def test_stop_cancels_again_a_copy_that_lost_its_first_cancellation() -> None:
    async with custom_app() as (_, app):
        moves = app.state.svc.moves
        lost = asyncio.Event()

        async def copy() -> None:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                lost.set()  # swallowed, as in wait_for on 3.11: the copy goes on
            await asyncio.sleep(30)

        task = asyncio.create_task(copy())
        moves._tasks.add(task)
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await moves.stop()
        assert lost.is_set() and task.cancelled()
        assert loop.time() - started < 2


async def test_stop_gives_up_on_a_copy_that_never_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(moves_module, "STOP_SECONDS", 0.3)
    async with custom_app() as (_, app):
        moves = app.state.svc.moves
        cancels = 0
        release = asyncio.Event()

        async def stubborn() -> None:
            nonlocal cancels
            while not release.is_set():
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    cancels += 1

        task = asyncio.create_task(stubborn())
        moves._tasks.add(task)
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await moves.stop()
            assert loop.time() - started < 1.5  # bounded by STOP_SECONDS, not by the copy
            assert not task.done() and cancels >= 2  # cancelled again and again, then left
        finally:
            release.set()
            task.cancel()
            await asyncio.wait({task}, timeout=1)
            moves._tasks.discard(task)
        assert task.done()
