"""Login and per-request authentication (one indexed read that also carries revocation)."""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import InvalidCredentials, Unauthorized
from app.repositories.base import Doc
from app.schemas import LoginRequest, TokenResponse
from app.security.passwords import PasswordHasher
from app.security.tokens import InvalidToken, TokenClaims, TokenManager
from app.services.context import Stores


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated admin and the organization record read while checking the token."""

    claims: TokenClaims
    organization: Doc


class AuthService:
    """Checks passwords and tokens."""

    def __init__(self, stores: Stores, hasher: PasswordHasher, tokens: TokenManager) -> None:
        self.stores = stores
        self.hasher = hasher
        self.tokens = tokens

    async def login(self, body: LoginRequest) -> TokenResponse:
        """A token for valid credentials; the same 401, in the same time, for any wrong pair."""
        admin = await self.stores.admins.by_email(body.email)
        ok = await self.hasher.verify(body.password, admin["password_hash"] if admin else None)
        if not ok or admin is None:
            raise InvalidCredentials()
        org = await self.stores.orgs.get_active(admin["organization_id"])
        if org is None or org["admin"]["admin_id"] != admin["_id"]:
            raise InvalidCredentials()
        token, claims = self.tokens.issue(
            admin_id=admin["_id"],
            organization_id=org["_id"],
            version=int(org["admin"].get("token_version", 0)),
        )
        return TokenResponse(
            access_token=token,
            expires_in=claims.expires_at - claims.issued_at,
            admin_id=claims.admin_id,
            organization_id=claims.organization_id,
        )

    async def authenticate(self, token: str) -> Principal:
        """The principal behind a bearer token, checked against the database on every request."""
        try:
            claims = self.tokens.verify(token)
        except InvalidToken:
            raise Unauthorized("Invalid or expired token.", code="invalid_token") from None
        org = await self.stores.orgs.get_active(claims.organization_id)
        if (
            org is None
            or org["admin"]["admin_id"] != claims.admin_id
            or int(org["admin"].get("token_version", 0)) != claims.version
        ):
            raise Unauthorized("Token has been revoked.", code="token_revoked")
        return Principal(claims=claims, organization=org)
