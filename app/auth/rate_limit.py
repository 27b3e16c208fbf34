"""Brute-force protection for `/admin/login`: attempts limited per email and per client IP.

The slots live in MongoDB (`login_attempts`), so every replica shares them. A login reserves one
slot of its email and one of its IP atomically *before* any password is checked; with no free
slot it is refused with 429 and `Retry-After` (the cheap rejection). A failed attempt keeps its
slots for the window (that is its failure record); a successful one gives them back and frees
its email's other slots. So at most `LOGIN_MAX_FAILURES_PER_EMAIL` password checks of one email
(and `LOGIN_MAX_FAILURES_PER_IP` of one IP) run per window, however many requests arrive at once.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from dataclasses import dataclass, field

from app.auth.attempts import LoginAttemptRepository
from app.kit.errors import AppError
from app.kit.settings import Settings
from app.kit.store import epoch_ms


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


@dataclass(slots=True)
class Reservation:
    """The slots one login attempt holds."""

    rid: str
    email_key: str
    keys: list[str] = field(default_factory=list)


class LoginLimiter:
    """Reserves login-attempt slots per email and per client IP in a sliding window."""

    def __init__(self, repo: LoginAttemptRepository, settings: Settings) -> None:
        self.repo = repo
        self.window_ms = settings.login_failure_window_seconds * 1000
        self.limits = {
            "email": settings.login_max_failures_per_email,
            "ip": settings.login_max_failures_per_ip,
        }

    def _keys(self, email: str, ip: str | None) -> list[tuple[str, int]]:
        keys = [(email_key(email), self.limits["email"])]
        if ip:
            keys.append((ip_key(ip), self.limits["ip"]))
        return keys

    async def reserve(self, email: str, ip: str | None) -> Reservation:
        """Take a slot of this email and of this IP, or raise RateLimited (holding none)."""
        now = epoch_ms()
        until = now + self.window_ms
        reservation = Reservation(rid=uuid.uuid4().hex, email_key=email_key(email))
        for key, limit in self._keys(email, ip):
            if not await self._take(key, limit, now_ms=now, until_ms=until, rid=reservation.rid):
                await self.repo.release(reservation.keys, rid=reservation.rid)
                raise RateLimited(await self._retry_after(key, limit, now))
            reservation.keys.append(key)
        return reservation

    async def _take(self, key: str, limit: int, *, now_ms: int, until_ms: int, rid: str) -> bool:
        repo = self.repo
        if await repo.take_free(key, limit=limit, now_ms=now_ms, until_ms=until_ms, rid=rid):
            return True
        existing = {int(s["n"]) for s in await repo.slots(key, limit=limit)}
        for n in range(limit):
            if n not in existing and await repo.create_taken(key, n, until_ms=until_ms, rid=rid):
                return True
        # Every slot exists and was taken a moment ago; one may have been given back since.
        return await repo.take_free(key, limit=limit, now_ms=now_ms, until_ms=until_ms, rid=rid)

    async def _retry_after(self, key: str, limit: int, now_ms: int) -> int:
        """Seconds until the first of the key's slots frees."""
        untils = [int(s["until_ms"]) for s in await self.repo.slots(key, limit=limit)]
        soonest = min(untils, default=now_ms)
        return max(1, math.ceil((soonest - now_ms) / 1000))

    async def succeeded(self, reservation: Reservation) -> None:
        """The password was right: give the slots back, and forget the email's failures (never
        the IP's)."""
        others = [k for k in reservation.keys if k != reservation.email_key]
        await self.repo.release(others, rid=reservation.rid)  # the IP's slot (no-op without one)
        await self.repo.clear(reservation.email_key)  # the email's slots, this one included
