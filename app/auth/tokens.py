"""JWT issue and verify with PyJWT: the algorithm pinned per `kid`, `iss` and `aud` checked, claims
required. Keys, rotation and the optional asymmetric algorithms live in `app.kit.keys`."""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt

from app.kit.keys import KeyRing

LEEWAY_SECONDS = 5  # clock skew allowed on `exp` and `iat`
REQUIRED_CLAIMS = ["sub", "admin_id", "organization_id", "iat", "exp", "jti", "iss", "aud", "ver"]


class InvalidToken(Exception):
    """The token is malformed, tampered, expired, or not meant for us."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified token says about its bearer."""

    admin_id: str
    organization_id: str
    jti: str
    issued_at: int
    expires_at: int
    version: int
    session_id: str | None = None  # tokens issued before sessions carry none


class TokenManager:
    """Issues and verifies the service's access tokens."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        expires_minutes: int,
        secret: str | None = None,
        keys: KeyRing | None = None,
        remember: int = 0,
    ) -> None:
        if keys is None:
            if secret is None:
                raise ValueError("give a secret or a key ring")
            keys = KeyRing.hmac(secret)
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.lifetime_seconds = expires_minutes * 60
        # Tokens verified already (signature, issuer, audience, claims), by their exact text:
        # checking a signature again proves nothing new, only its expiry can change. At most
        # `remember` (0: none), least recently used first out. Revocation is not decided here.
        self.remember = remember
        self._verified: OrderedDict[str, TokenClaims] = OrderedDict()

    def issue(
        self,
        *,
        admin_id: str,
        organization_id: str,
        version: int,
        role: str | None = None,
        session_id: str | None = None,
    ) -> tuple[str, TokenClaims]:
        """A signed token for this member, and its claims. `role` is a hint for clients only:
        authorization reads the member's role from the database on every request."""
        now = int(time.time())
        claims = TokenClaims(
            admin_id=admin_id,
            organization_id=organization_id,
            jti=uuid.uuid4().hex,
            issued_at=now,
            expires_at=now + self.lifetime_seconds,
            version=version,
            session_id=session_id,
        )
        payload: dict[str, Any] = {
            "sub": admin_id,
            "admin_id": admin_id,
            "organization_id": organization_id,
            "iat": claims.issued_at,
            "exp": claims.expires_at,
            "jti": claims.jti,
            "iss": self.issuer,
            "aud": self.audience,
            "ver": version,
        }
        if role is not None:
            payload["role"] = role
        if session_id is not None:
            payload["sid"] = session_id
        signing = self.keys.signing
        token = jwt.encode(
            payload, signing.key, algorithm=signing.algorithm, headers={"kid": signing.kid}
        )
        return token, claims

    def verify(self, token: str) -> TokenClaims:
        """The claims of a valid token; InvalidToken for anything else."""
        known = self._verified.get(token)
        if known is not None:
            if time.time() > known.expires_at + LEEWAY_SECONDS:
                del self._verified[token]
                raise InvalidToken("ExpiredSignatureError")
            self._verified.move_to_end(token)
            return known
        claims = self._verify(token)
        if self.remember:
            self._verified[token] = claims
            if len(self._verified) > self.remember:
                self._verified.popitem(last=False)
        return claims

    def _verify(self, token: str) -> TokenClaims:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise InvalidToken(type(exc).__name__) from exc
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("malformed kid")
        key = self.keys.for_kid(kid)
        if key is None:
            raise InvalidToken("unknown kid")
        try:
            payload = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": REQUIRED_CLAIMS},
                leeway=LEEWAY_SECONDS,
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(type(exc).__name__) from exc
        try:
            if payload["sub"] != payload["admin_id"]:
                raise InvalidToken("sub does not match admin_id")
            return TokenClaims(
                admin_id=_text(payload["admin_id"]),
                organization_id=_text(payload["organization_id"]),
                jti=_text(payload["jti"]),
                issued_at=int(payload["iat"]),
                expires_at=int(payload["exp"]),
                version=_integer(payload["ver"]),
                session_id=_text(payload["sid"]) if "sid" in payload else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidToken("malformed claims") from exc


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise ValueError("claim must be a short string")
    return value


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("claim must be an integer")
    return value
