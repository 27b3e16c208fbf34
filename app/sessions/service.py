"""Sessions: opened by a login, kept alive by rotating refresh tokens, ended in every way the
contract lists, and listed for their member.

Ending one session (logout, `DELETE /admin/sessions/{id}`, a reused refresh token) stops its
access tokens at the next request on every replica through the same mechanism as a logged-out
token: the member's team entry is marked "a revocation may exist until T" first, then the
session's id is written to the denylist (`sid:<id>`), and authentication reads the denylist only
while the mark is in the future. Ending all of a member's sessions moves its token version
(logout-all, password change, reset) or removes its entry (removal): no session survives that,
and nothing per session needs writing (they are also marked ended, for the list).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import NoReturn

from app.audit.service import FAILURE, Actor, AuditService, RequestMeta
from app.auth.revocations import RevocationRepository
from app.auth.schemas import TokenResponse
from app.auth.tokens import TokenClaims, TokenManager
from app.kit.errors import AppError, NotFound, OrganizationSuspended
from app.kit.settings import Settings
from app.kit.store import epoch_ms, new_id, utcnow
from app.organizations.records import TeamEntry
from app.organizations.team import TeamRepository
from app.sessions.repository import Session, SessionRepository
from app.sessions.tokens import RefreshTokens, parse, token_hash

log = logging.getLogger("orgsvc.sessions")
REVOCATION_GRACE_SECONDS = 60
TOUCHES_KEPT = 10_000  # sessions whose last write this process remembers


class InvalidRefreshToken(AppError):
    status, code = 401, "invalid_refresh_token"
    detail = "Unknown, malformed, expired or ended refresh token."


class RefreshTokenReused(AppError):
    status, code = 401, "refresh_token_reused"
    detail = "This refresh token was already used: the session has been ended. Log in again."


class SessionNotFound(NotFound):
    detail = "No such live session of yours."


def sid_key(session_id: str) -> str:
    """The session's entry in the token denylist (beside jtis)."""
    return f"sid:{session_id}"


class SessionService:
    def __init__(
        self,
        *,
        sessions: SessionRepository,
        team: TeamRepository,
        revocations: RevocationRepository,
        tokens: TokenManager,
        refresh: RefreshTokens,
        audit: AuditService,
        settings: Settings,
    ) -> None:
        self.sessions = sessions
        self.team = team
        self.revocations = revocations
        self.tokens = tokens
        self.refresh_tokens = refresh
        self.audit = audit
        self.lifetime = timedelta(hours=settings.refresh_token_ttl_hours)
        self.remembered = timedelta(days=settings.refresh_token_remember_me_days)
        self.touch_every_ms = int(settings.session_touch_seconds * 1000)
        self._touched: OrderedDict[str, int] = OrderedDict()

    def _lifetime(self, remember_me: bool) -> timedelta:
        return self.remembered if remember_me else self.lifetime

    def _issue(
        self, session: Session, entry: TeamEntry, refresh_token: str, lifetime: timedelta
    ) -> TokenResponse:
        token, claims = self.tokens.issue(
            admin_id=session.member_id,
            organization_id=session.organization_id,
            version=entry.token_version,
            role=entry.role,
            session_id=session.session_id,
        )
        return TokenResponse(
            access_token=token,
            expires_in=claims.expires_at - claims.issued_at,
            admin_id=claims.admin_id,
            organization_id=claims.organization_id,
            refresh_token=refresh_token,
            refresh_expires_in=int(lifetime.total_seconds()),
            session_id=session.session_id,
        )

    # ------------------------------------------------------------------ open and refresh
    async def open(
        self,
        member_id: str,
        organization_id: str,
        entry: TeamEntry,
        *,
        meta: RequestMeta,
        remember_me: bool = False,
    ) -> TokenResponse:
        """A new session for a member who just proved who they are: its access and refresh
        tokens."""
        lifetime = self._lifetime(remember_me)
        session_id, nonce, now = new_id(), RefreshTokens.new_nonce(), utcnow()
        refresh_token = self.refresh_tokens.make(session_id, 0, nonce)
        session = Session(
            session_id=session_id,
            organization_id=organization_id,
            member_id=member_id,
            token_version=entry.token_version,
            refresh_hash=token_hash(refresh_token),
            nonce=nonce,
            remember_me=remember_me,
            created_at=now,
            last_used_ms=epoch_ms(),
            expires_ms=epoch_ms(lifetime.total_seconds()),
            ip=meta.ip,
            user_agent=meta.user_agent,
        )
        await self.sessions.create(session, expires_at=now + lifetime)
        self._remember_use(session_id, session.last_used_ms)  # just written
        await self.audit.record(
            "session.created", actor=Actor("admin", member_id), meta=meta,
            organization_id=organization_id,
            details={"session_id": session_id, "remember_me": remember_me},
        )  # fmt: skip
        return self._issue(session, entry, refresh_token, lifetime)

    async def refresh(self, token: str, *, meta: RequestMeta) -> TokenResponse:
        """New access and refresh tokens for a live session's current refresh token; a rotated
        one presented again ends the session (it was copied)."""
        presented = parse(token)
        session = await self.sessions.get(presented.session_id) if presented else None
        if (
            presented is None
            or session is None
            or session.ended
            or session.expired
            or not self.refresh_tokens.is_of(presented, session.nonce)
            or presented.generation > session.generation
        ):
            raise InvalidRefreshToken()
        if presented.generation < session.generation:
            await self._reused(session, meta)
        if token_hash(token) != session.refresh_hash:
            raise InvalidRefreshToken()  # cannot happen unless the store was edited
        org = await self.team.for_member(session.organization_id, session.member_id)
        entry = None if org is None or org.team is None else org.team.members.get(session.member_id)
        if org is not None and entry is not None and org.suspended:
            raise OrganizationSuspended()  # and dead after a restore: suspending moved versions
        if entry is None or entry.token_version != session.token_version:
            # Removed, or every session of the member was ended (password, logout-all).
            await self.sessions.end(session.session_id)
            raise InvalidRefreshToken()
        lifetime = self._lifetime(session.remember_me)
        next_token = self.refresh_tokens.make(
            session.session_id, session.generation + 1, session.nonce
        )
        rotated = await self.sessions.rotate(
            session.session_id,
            generation=presented.generation,
            refresh_hash=token_hash(next_token),
            expires_ms=epoch_ms(lifetime.total_seconds()),
            expires_at=utcnow() + lifetime,
        )
        if rotated is None:
            # Another refresh with this very token won a moment ago: two holders of one token.
            await self._reused(session, meta)
        return self._issue(session, entry, next_token, lifetime)

    async def _reused(self, session: Session, meta: RequestMeta) -> NoReturn:
        await self._end(session, meta, reason="refresh_token_reused")
        await self.audit.record(
            "session.refreshed", actor=Actor("admin", session.member_id), meta=meta,
            organization_id=session.organization_id, outcome=FAILURE,
            code=RefreshTokenReused.code, details={"session_id": session.session_id},
        )  # fmt: skip
        raise RefreshTokenReused()

    # ------------------------------------------------------------------ ending
    async def _end(self, session: Session, meta: RequestMeta, *, reason: str) -> bool:
        """End one session: its access tokens die at the next request on every replica."""
        until = datetime.now(UTC) + timedelta(
            seconds=self.tokens.lifetime_seconds + REVOCATION_GRACE_SECONDS
        )
        await self.deny(
            sid_key(session.session_id),
            organization_id=session.organization_id,
            member_id=session.member_id,
            until=until,
        )
        ended = await self.sessions.end(session.session_id)
        if ended is not None:
            await self.audit.record(
                "session.ended", actor=Actor("admin", session.member_id), meta=meta,
                organization_id=session.organization_id,
                details={"session_id": session.session_id, "reason": reason},
            )  # fmt: skip
        return ended is not None

    async def deny(
        self, key: str, *, organization_id: str, member_id: str, until: datetime
    ) -> None:
        """Refuse, on every replica until `until`, the tokens `key` names (a jti, or `sid:<id>`).
        The member's mark first, then the denylist entry: a crash in between only makes
        requests look at the denylist for nothing, never miss an entry."""
        await self.team.mark_denylist(
            organization_id, member_id, until_ms=int(until.timestamp() * 1000)
        )
        await self.revocations.revoke(
            key, admin_id=member_id, organization_id=organization_id, expires_at=until
        )

    async def end_one(
        self, claims: TokenClaims, session_id: str, *, meta: RequestMeta, reason: str
    ) -> None:
        """End one of the caller's own sessions; 404 for any other id."""
        session = await self.sessions.get(session_id)
        if (
            session is None
            or session.member_id != claims.admin_id
            or session.organization_id != claims.organization_id
            or session.ended
            or session.expired
        ):
            raise SessionNotFound()
        await self._end(session, meta, reason=reason)

    async def end_current(self, claims: TokenClaims, *, meta: RequestMeta) -> None:
        """Logout: the session of the presented token (tokens from before sessions have none)."""
        if claims.session_id is None:
            return
        session = await self.sessions.get(claims.session_id)
        if session is not None and not session.ended:
            await self._end(session, meta, reason="logout")

    async def ended_all(self, organization_id: str, member_id: str) -> None:
        """Every session of the member was ended by a new token version (or its removal):
        mark them so (their tokens are already refused)."""
        await self.sessions.end_all(organization_id, member_id)

    # ------------------------------------------------------------------ listing and use
    async def live(
        self, claims: TokenClaims, entry: TeamEntry, *, limit: int, after: str | None
    ) -> tuple[list[Session], str | None]:
        found = await self.sessions.live_of(
            claims.organization_id,
            claims.admin_id,
            token_version=entry.token_version,
            limit=limit + 1,
            after=after,
        )
        page = found[:limit]
        return page, (page[-1].session_id if len(found) > limit else None)

    async def used(self, session_id: str) -> None:
        """Note a request of this session: written at most once per SESSION_TOUCH_SECONDS by
        this process (a `$max`, so replicas never move it back)."""
        now = epoch_ms()
        last = self._touched.get(session_id)
        if last is not None and now - last < self.touch_every_ms:
            return
        self._remember_use(session_id, now)
        await self.sessions.touch(session_id, now_ms=now)

    def _remember_use(self, session_id: str, now_ms: int) -> None:
        self._touched[session_id] = now_ms
        self._touched.move_to_end(session_id)
        while len(self._touched) > TOUCHES_KEPT:
            self._touched.popitem(last=False)
