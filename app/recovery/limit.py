"""The forgot-password limit: PASSWORD_RESET_MAX_PER_EMAIL requests per email and
PASSWORD_RESET_MAX_PER_IP per client IP in PASSWORD_RESET_WINDOW_SECONDS.

The login's slot machinery (`app.auth.rate_limit.LoginLimiter` over `login_attempts`) with its
own keys (`reset:email:<hash>`, `reset:ip:<ip>`) and limits: each request takes a slot of its
email and one of its IP with one conditional write each (or creates it under a unique `_id`),
before anything else, and keeps them for the window. A burst of concurrent requests, on any
number of replicas, gets exactly `limit` through.
"""

from __future__ import annotations

from app.auth.attempts import LoginAttemptRepository
from app.auth.rate_limit import LoginLimiter, RateLimited, Reservation, email_key, ip_key
from app.kit.settings import Settings

PREFIX = "reset:"


class ResetRateLimited(RateLimited):
    detail = "Too many password-reset requests for this email or client IP; retry later."


class ResetLimiter(LoginLimiter):
    def __init__(self, repo: LoginAttemptRepository, settings: Settings) -> None:
        # Not LoginLimiter.__init__: the same machinery, other settings.
        self.repo = repo
        self.window_ms = settings.password_reset_window_seconds * 1000
        self.limits = {
            "email": settings.password_reset_max_per_email,
            "ip": settings.password_reset_max_per_ip,
        }

    def _keys(self, email: str, ip: str | None) -> list[tuple[str, int]]:
        keys = [(PREFIX + email_key(email), self.limits["email"])]
        if ip:
            keys.append((PREFIX + ip_key(ip), self.limits["ip"]))
        return keys

    async def reserve(self, email: str, ip: str | None) -> Reservation:
        """Take a slot of this email and of this IP (kept for the window), or raise
        ResetRateLimited (holding none)."""
        try:
            return await super().reserve(email, ip)
        except RateLimited as exc:
            raise ResetRateLimited(exc.retry_after) from None
