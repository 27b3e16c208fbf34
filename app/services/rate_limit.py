"""Brute-force protection for `/admin/login`: failed attempts counted per email and per client IP.

The counts live in MongoDB (`login_failures`), so every replica sees the same numbers. A key
with `limit` failures inside the sliding window is refused with 429 before any password is
checked (the cheap rejection), until its oldest counted failure leaves the window.
"""

from __future__ import annotations

import asyncio
import hashlib
import math

from app.config import Settings
from app.errors import AppError
from app.repositories.base import epoch_ms
from app.repositories.rate_limits import LoginFailureRepository


class RateLimited(AppError):
    status, code, detail = 429, "rate_limited", "Too many failed logins; retry later."

    def __init__(self, retry_after: int) -> None:
        super().__init__(headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


def email_key(email: str) -> str:
    # A hash, not the address: the collection needs to count, never to read an email back.
    return "email:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


def ip_key(ip: str) -> str:
    return "ip:" + ip


class LoginLimiter:
    """Counts failed logins per email and per client IP in a sliding window."""

    def __init__(self, repo: LoginFailureRepository, settings: Settings) -> None:
        self.repo = repo
        self.window_seconds = settings.login_failure_window_seconds
        self.limits = {
            "email": settings.login_max_failures_per_email,
            "ip": settings.login_max_failures_per_ip,
        }

    def _keys(self, email: str, ip: str | None) -> list[tuple[str, int]]:
        keys = [(email_key(email), self.limits["email"])]
        if ip:
            keys.append((ip_key(ip), self.limits["ip"]))
        return keys

    async def check(self, email: str, ip: str | None) -> None:
        """Raise RateLimited when this email or this IP has used up its failures."""
        now = epoch_ms()
        since = now - self.window_seconds * 1000
        keys = self._keys(email, ip)
        counts = await asyncio.gather(*(self.repo.count_since(k, since) for k, _ in keys))
        over = [(k, lim) for (k, lim), c in zip(keys, counts, strict=True) if c >= lim]
        if not over:
            return
        retry_after = 1
        for key, limit in over:
            # Allowed again when the limit-th newest failure leaves the window.
            oldest = await self.repo.nth_newest_ms(key, since, limit)
            until = (oldest if oldest is not None else now) + self.window_seconds * 1000
            retry_after = max(retry_after, math.ceil((until - now) / 1000))
        raise RateLimited(retry_after)

    async def record_failure(self, email: str, ip: str | None) -> None:
        keys = [k for k, _ in self._keys(email, ip)]
        await self.repo.record(keys, window_seconds=self.window_seconds)

    async def reset(self, email: str) -> None:
        """A successful login clears its email's failures (never the IP's)."""
        await self.repo.clear(email_key(email))
