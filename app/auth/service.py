"""Login, logout and per-request authentication.

A request costs one primary-key read of the organization record with the caller's team entry
only (`app.organizations.team`): the member's role, `token_version` (password change, logout-all and
removal end its tokens) and `denylist_until_ms`, the time until which a logged-out token of
this member may still be unexpired; only then is the jti denylist read as well. Login is
rate-limited per email and per client IP before any password is checked, and every login, good
or bad, goes to the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from app.audit.service import ANONYMOUS, FAILURE, Actor, AuditService, RequestMeta
from app.auth.admins import AdminRepository
from app.auth.cache import AuthCache
from app.auth.passwords import PasswordHasher
from app.auth.rate_limit import LoginLimiter, RateLimited
from app.auth.revocations import RevocationRepository
from app.auth.roles import OWNER, Permission, require
from app.auth.schemas import LoginRequest, TokenResponse
from app.auth.tokens import InvalidToken, TokenClaims, TokenManager
from app.kit.errors import InvalidCredentials, OrganizationSuspended, Unauthorized
from app.kit.events import DomainEvent, EventHook
from app.kit.store import epoch_ms
from app.organizations.records import Organization, TeamEntry
from app.organizations.team import TeamRepository
from app.sessions.service import REVOCATION_GRACE_SECONDS, SessionService, sid_key

NO_META = RequestMeta()


def entry_of(org: Organization, member_id: str) -> TeamEntry | None:
    """The member's team entry; for a record of v1 (before the start-up upgrade), its admin."""
    if org.team is not None:
        return org.team.members.get(member_id)
    if org.admin.admin_id == member_id:
        admin = org.admin
        return TeamEntry(
            role=OWNER, token_version=admin.token_version, denylist_until_ms=admin.denylist_until_ms
        )
    return None


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated member, its role now, and the organization record read while checking
    the token."""

    claims: TokenClaims
    organization: Organization
    role: str

    @property
    def member_id(self) -> str:
        return self.claims.admin_id

    @property
    def actor(self) -> Actor:
        return Actor("admin", self.claims.admin_id)

    def require(self, permission: str) -> None:
        """403 `insufficient_role` unless the member's role grants `permission`
        (`app.auth.roles`), on its own organization only."""
        require(self.role, Permission(permission))


class AuthService:
    """Checks passwords and tokens."""

    def __init__(
        self,
        *,
        team: TeamRepository,
        sessions: SessionService,
        admins: AdminRepository,
        revocations: RevocationRepository,
        hasher: PasswordHasher,
        tokens: TokenManager,
        limiter: LoginLimiter | None = None,
        audit: AuditService | None = None,
        events: EventHook | None = None,
        cache: AuthCache | None = None,
    ) -> None:
        self.team = team
        self.cache = cache
        self.sessions = sessions
        self.admins = admins
        self.revocations = revocations
        self.hasher = hasher
        self.tokens = tokens
        self.limiter = limiter
        self.audit = audit
        self.events = events or EventHook()

    async def _audit(
        self,
        action: str,
        *,
        actor: Actor,
        meta: RequestMeta,
        organization_id: str | None,
        code: str | None = None,
    ) -> None:
        if self.audit is not None:
            outcome = FAILURE if code else "success"
            await self.audit.record(
                action, actor=actor, meta=meta, organization_id=organization_id,
                outcome=outcome, code=code,
            )  # fmt: skip

    async def login(self, body: LoginRequest, meta: RequestMeta = NO_META) -> TokenResponse:
        """A token for valid credentials; the same 401, in the same time, for any wrong pair."""
        reservation = None
        if self.limiter is not None:
            try:
                # Before bcrypt: a slot of this email and of this IP, or a cheap 429.
                reservation = await self.limiter.reserve(body.email, meta.ip)
            except RateLimited:
                await self._audit(
                    "admin.login", actor=ANONYMOUS, meta=meta, organization_id=None,
                    code="rate_limited",
                )  # fmt: skip
                raise
        admin = await self.admins.by_email(body.email)
        ok = await self.hasher.verify(body.password, admin.password_hash if admin else None)
        org = entry = None
        if ok and admin is not None:
            org = await self.team.for_member(admin.organization_id, admin.admin_id)
            entry = None if org is None else entry_of(org, admin.admin_id)
            # A password change writes the new hash (with a new password version) before it
            # revokes older tokens. Read after the organization: if the version verified above
            # is no longer current, the revocation may already be in `org`, and a token carrying
            # it would outlive the change: this login raced a change, and issues nothing.
            current = await self.admins.password_version(admin.admin_id)
            if current != admin.password_version:
                org = None
        if admin is None or org is None or entry is None:
            # The same writes for an unknown email and a wrong password: same time, same body.
            # The reserved slots stay taken: they are this failure's record.
            await self._audit(
                "admin.login",
                actor=Actor("admin", admin.admin_id) if admin else ANONYMOUS,
                meta=meta,
                organization_id=admin.organization_id if admin else None,
                code=InvalidCredentials.code,
            )
            raise InvalidCredentials()
        if org.suspended:
            # Only after the password: the answer tells nothing to whoever does not know it.
            await self._audit(
                "admin.login", actor=Actor("admin", admin.admin_id), meta=meta,
                organization_id=org.organization_id, code=OrganizationSuspended.code,
            )  # fmt: skip
            raise OrganizationSuspended()
        if self.limiter is not None and reservation is not None:
            await self.limiter.succeeded(reservation)
        if self.hasher.needs_rehash(admin.password_hash):
            # BCRYPT_ROUNDS changed since this hash was made: upgrade it now that we know the
            # password, so its login costs what an unknown email's does.
            new_hash = await self.hasher.hash(body.password)
            await self.admins.rehash(
                admin.admin_id, old_hash=admin.password_hash, new_hash=new_hash
            )
        org_id, admin_id = org.organization_id, admin.admin_id
        response = await self.token_for(
            admin_id, org_id, entry, meta=meta, remember_me=body.remember_me
        )
        await self.events.emit(DomainEvent("admin.logged_in", org_id, {"admin_id": admin_id}))
        return response

    async def token_for(
        self,
        member_id: str,
        organization_id: str,
        entry: TeamEntry,
        *,
        meta: RequestMeta,
        remember_me: bool = False,
    ) -> TokenResponse:
        """A new session, and its tokens, for a member who proved who they are (a login, or
        accepting an invitation with a new password); recorded as a login."""
        response = await self.sessions.open(
            member_id, organization_id, entry, meta=meta, remember_me=remember_me
        )
        await self.admins.logged_in(member_id)
        await self._audit(
            "admin.login", actor=Actor("admin", member_id), meta=meta,
            organization_id=organization_id,
        )  # fmt: skip
        return response

    async def authenticate(self, token: str) -> Principal:
        """The principal behind a bearer token, checked against the organization record (from
        the authentication cache while it may serve, else read; `app.auth.cache`)."""
        try:
            claims = self.tokens.verify(token)
        except InvalidToken:
            raise Unauthorized("Invalid or expired token.", code="invalid_token") from None
        org_id, member_id = claims.organization_id, claims.admin_id
        if self.cache is None:
            return await self._admit(claims, await self.team.for_member(org_id, member_id))
        org, remembered = await self.cache.member(
            org_id, member_id, lambda: self.team.for_member(org_id, member_id)
        )
        try:
            return await self._admit(claims, org, cached=remembered)
        except (Unauthorized, OrganizationSuspended):
            if not remembered:
                raise
        # Memory may be a few milliseconds behind the store (a change made on another replica,
        # e.g. the password change that issued this very token): it may delay a revocation,
        # never refuse what the store accepts. Ask the store before refusing.
        self.cache.forget(org_id)
        return await self._admit(claims, await self.team.for_member(org_id, member_id))

    async def _admit(
        self, claims: TokenClaims, org: Organization | None, *, cached: bool = False
    ) -> Principal:
        entry = None if org is None else entry_of(org, claims.admin_id)
        if org is not None and entry is not None and org.suspended:
            # Before the token version: suspending moved every member's (so that no token of
            # before works after a restore), and until the restore the answer is this one.
            raise OrganizationSuspended()
        if (
            org is None
            or entry is None  # not (or no longer) a member of this organization
            or entry.token_version != claims.version
            # The denylist is read only while the record says an entry may exist: most
            # members never log a token out, and their requests cost one read.
            or (
                epoch_ms() < entry.denylist_until_ms
                and await self._revoked(_denylist_keys(claims), cached=cached)
            )
        ):
            raise Unauthorized("Token has been revoked.", code="token_revoked")
        if claims.session_id is not None:
            await self.sessions.used(claims.session_id)
        return Principal(claims=claims, organization=org, role=entry.role)

    async def _revoked(self, keys: list[str], *, cached: bool) -> bool:
        if self.cache is None or not cached:
            return await self.revocations.any_revoked(keys)
        return await self.cache.revoked(keys, lambda: self.revocations.any_revoked(keys))

    async def logout(self, principal: Principal, meta: RequestMeta = NO_META) -> None:
        """Revoke the presented token on every replica, until it would have expired anyway, and
        end its session (every other token of that session too)."""
        claims = principal.claims
        # Kept a little past `exp`: verification allows a few seconds of clock leeway.
        until = datetime.fromtimestamp(claims.expires_at + REVOCATION_GRACE_SECONDS, UTC)
        await self.sessions.deny(
            claims.jti,
            organization_id=claims.organization_id,
            member_id=claims.admin_id,
            until=until,
        )
        await self.sessions.end_current(claims, meta=meta)  # and its refresh token with it
        await self._audit(
            "admin.logout", actor=principal.actor, meta=meta,
            organization_id=claims.organization_id,
        )  # fmt: skip
        await self.events.emit(
            DomainEvent("admin.logged_out", claims.organization_id, {"admin_id": claims.admin_id})
        )

    async def logout_all(self, principal: Principal, meta: RequestMeta = NO_META) -> None:
        """Revoke every token and session of this member (a new token version, as a password
        change does)."""
        claims = principal.claims
        bumped = await self.team.bump_token_version(claims.organization_id, claims.admin_id)
        if not bumped:
            raise Unauthorized("Token has been revoked.", code="token_revoked")
        await self.sessions.ended_all(claims.organization_id, claims.admin_id)
        await self._audit(
            "admin.logout_all", actor=principal.actor, meta=meta,
            organization_id=claims.organization_id,
        )  # fmt: skip
        await self.events.emit(
            DomainEvent(
                "admin.logged_out_all", claims.organization_id, {"admin_id": claims.admin_id}
            )
        )


def _denylist_keys(claims: TokenClaims) -> list[str]:
    """What may deny this token: its jti (logout of a token) and its session (ended)."""
    if claims.session_id is None:
        return [claims.jti]
    return [claims.jti, sid_key(claims.session_id)]
