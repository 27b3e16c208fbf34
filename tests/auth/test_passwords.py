"""The bcrypt pool: off the event loop, at the configured cost, below the loop's priority."""

from __future__ import annotations

import os
import threading

from app.auth.passwords import BCRYPT_THREAD_NICENESS, PasswordHasher


async def test_hash_and_verify_at_the_configured_cost() -> None:
    hasher = PasswordHasher(rounds=5, workers=2)
    try:
        hashed = await hasher.hash("correct horse")
        assert hashed.startswith("$2b$05$")
        assert await hasher.verify("correct horse", hashed)
        assert not await hasher.verify("wrong horse", hashed)
        assert not await hasher.verify("x" * 100, hashed)  # over 72 bytes: never a match
        assert not await hasher.verify("anything", None)  # unknown user: dummy hash, False
    finally:
        hasher.close()


async def test_pool_threads_run_below_the_event_loop() -> None:
    hasher = PasswordHasher(rounds=4, workers=1)
    try:
        nice = await hasher._run(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        assert nice == BCRYPT_THREAD_NICENESS
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < nice  # loop unchanged
    finally:
        hasher.close()
