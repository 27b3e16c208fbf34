"""bcrypt, off the event loop, in a bounded pool so logins queue instead of stalling requests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import bcrypt

MIN_PASSWORD_BYTES = 8
MAX_PASSWORD_BYTES = 72  # bcrypt ignores everything past 72 bytes: refuse it instead


# bcrypt threads run at the lowest CPU priority: with as many threads as cores, a burst of logins
# would otherwise compete with the event loop, and every lookup would wait behind the hashing.
# Logins still get all the CPU the loop leaves (the benchmark's login figure is unchanged).
BCRYPT_THREAD_NICENESS = 19


def _lower_priority() -> None:
    # Linux applies PRIO_PROCESS to a thread id; raising niceness needs no privilege.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BCRYPT_THREAD_NICENESS)


class PasswordHasher:
    """Hashes and verifies passwords in a pool of `workers` threads (bcrypt drops the GIL)."""

    def __init__(self, *, rounds: int, workers: int) -> None:
        self.rounds = rounds
        self.workers = workers
        self._pool = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="bcrypt", initializer=_lower_priority
        )
        self._dummy_hash: bytes | None = None
        self.queued = 0  # calls waiting for or running in the pool
        self.observers: list[Callable[[float], object]] = []  # wait seconds, for metrics

    async def _run(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        submitted = time.perf_counter()

        def timed() -> Any:
            waited = time.perf_counter() - submitted
            for observe in self.observers:
                observe(waited)
            return fn(*args)

        self.queued += 1
        try:
            return await loop.run_in_executor(self._pool, timed)
        finally:
            self.queued -= 1

    async def hash(self, password: str) -> str:
        """bcrypt hash of `password` at the configured cost."""
        salt = bcrypt.gensalt(rounds=self.rounds)
        hashed: bytes = await self._run(bcrypt.hashpw, password.encode(), salt)
        return hashed.decode()

    async def verify(self, password: str, hashed: str | None) -> bool:
        """True when `password` matches `hashed`; with no hash, takes as long and is False."""
        secret = password.encode()
        if hashed is None or len(secret) > MAX_PASSWORD_BYTES:
            # bcrypt >= 5 raises past 72 bytes, and no stored password is that long: such a
            # password cannot match, but it costs the same time as one that could.
            await self._run(bcrypt.checkpw, secret[:MAX_PASSWORD_BYTES], await self.dummy_hash())
            return False
        ok: bool = await self._run(bcrypt.checkpw, secret, hashed.encode())
        return ok

    def needs_rehash(self, hashed: str) -> bool:
        """True when `hashed` was made at another cost than the configured one."""
        parts = hashed.split("$")  # $2b$12$<salt+hash>
        return len(parts) < 4 or not parts[2].isdigit() or int(parts[2]) != self.rounds

    async def dummy_hash(self) -> bytes:
        """A hash of a random password at the configured cost, made once, for unknown emails."""
        if self._dummy_hash is None:
            salt = bcrypt.gensalt(rounds=self.rounds)
            self._dummy_hash = await self._run(bcrypt.hashpw, b"dummy-password-for-timing", salt)
        return self._dummy_hash

    def close(self) -> None:
        """Stop the pool after running calls finish."""
        self._pool.shutdown(wait=True, cancel_futures=True)
