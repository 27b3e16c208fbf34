"""Password recovery: the forgot request and the reset.

`forgot` does the same work for every well-formed address, known or not (so neither the answer
nor its time says whether an account exists): the rate limit, then one outbox entry (kind
`password_reset`, a fresh reset id and nonce) stored before the 202, the worker woken, one
audit entry. The mail's composer (`app.recovery.mail`) looks the address up in the background.

`reset` checks the token read-only first (so a flood of bad tokens costs no bcrypt), hashes the
new password, then takes the reset record with one conditional write (single use: of two
concurrent resets one wins), then changes the password through
`OrganizationService.change_password` (a crash-safe intent that moves the member's token version:
every access and refresh token of the member dies) and marks the member's sessions ended.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from app.audit.service import ANONYMOUS, Actor, AuditService, RequestMeta
from app.auth.admins import AdminRepository
from app.auth.passwords import PasswordHasher
from app.kit.errors import AppError
from app.kit.store import new_id
from app.mail.outbox import OutboxRepository
from app.organizations.service import OrganizationService
from app.organizations.team import TeamRepository
from app.recovery.limit import ResetLimiter
from app.recovery.mail import KIND
from app.recovery.repository import PasswordReset, ResetRepository
from app.recovery.tokens import ResetTokens, reset_id_of, same_hash, token_hash
from app.sessions.service import SessionService

log = logging.getLogger("orgsvc.recovery")


class ResetTokenInvalid(AppError):
    status, code = 410, "reset_token_invalid"
    detail = "This password-reset link is unknown, already used or expired."


class RecoveryService:
    def __init__(
        self,
        *,
        resets: ResetRepository,
        admins: AdminRepository,
        team: TeamRepository,
        outbox: OutboxRepository,
        limiter: ResetLimiter,
        orgs: OrganizationService,
        sessions: SessionService,
        hasher: PasswordHasher,
        audit: AuditService,
        mail_queued: Callable[[], None],
    ) -> None:
        self.resets = resets
        self.admins = admins
        self.team = team
        self.outbox = outbox
        self.limiter = limiter
        self.orgs = orgs
        self.sessions = sessions
        self.hasher = hasher
        self.audit = audit
        self.mail_queued = mail_queued  # wakes the mail worker

    async def forgot(self, email: str, *, meta: RequestMeta) -> None:
        """Queue a reset mail for `email` (sent only if an account has it); 429 past the limit."""
        await self.limiter.reserve(email, meta.ip)
        reset_id = new_id()
        ref = {"reset_id": reset_id, "email": email, "nonce": ResetTokens.new_nonce()}
        await self.outbox.enqueue(f"{KIND}:{reset_id}", kind=KIND, ref=ref, to=email)
        self.mail_queued()
        # No address in the log: whether it is an account's is exactly what must not leak.
        await self.audit.record(
            "password.reset_requested", actor=ANONYMOUS, meta=meta, organization_id=None,
            details={"reset_id": reset_id},
        )  # fmt: skip

    async def peek(self, token: str) -> PasswordReset | None:
        """The live (unused, unexpired) reset of `token`, read-only; None for any other."""
        reset_id = reset_id_of(token)
        reset = await self.resets.get(reset_id) if reset_id else None
        if reset is None or reset.used or reset.expired or not same_hash(token, reset.token_hash):
            return None
        return reset

    async def account_of(self, token: str) -> tuple[str, str] | None:
        """The email and organization name of the member whose live reset `token` is (for the
        reset page); None for any other token."""
        reset = await self.peek(token)
        if reset is None:
            return None
        email = await self.admins.email_of(reset.member_id)
        org = await self.team.get(reset.organization_id)
        if email is None or org is None:
            return None
        return email, org.organization_name

    async def reset(self, token: str, password: str, *, meta: RequestMeta) -> PasswordReset:
        """Set the member's new password with a live token (once); every session and token of
        the member ends. 410 `reset_token_invalid` for any other token."""
        if await self.peek(token) is None:
            raise ResetTokenInvalid()
        password_hash = await self.hasher.hash(password)
        reset_id = reset_id_of(token) or ""
        reset = await self.resets.use(reset_id, token_hash=token_hash(token))
        if reset is None:
            raise ResetTokenInvalid()  # used (or expired) meanwhile: another reset won
        if await self.admins.password_version(reset.member_id) is None:
            raise ResetTokenInvalid()  # the account is gone since the mail
        # Strictly single use: were this to fail (503), the link stays used and the member asks
        # for another mail; a committed change is finished by the reconciler.
        await self.orgs.change_password(reset.organization_id, reset.member_id, password_hash)
        await self.sessions.ended_all(reset.organization_id, reset.member_id)
        await self.audit.record(
            "password.reset", actor=Actor("admin", reset.member_id), meta=meta,
            organization_id=reset.organization_id, details={"reset_id": reset.reset_id},
        )  # fmt: skip
        return reset
