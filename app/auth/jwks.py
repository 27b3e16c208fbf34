"""`GET /.well-known/jwks.json`: the public keys that verify this service's tokens."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict

from app.deps import State

router = APIRouter(tags=["keys"])


class Jwk(BaseModel):
    """A public JSON Web Key (RFC 7517): OKP/Ed25519 (`crv`, `x`) or RSA (`n`, `e`)."""

    model_config = ConfigDict(extra="allow")

    kty: str
    kid: str
    alg: str
    use: str
    crv: str | None = None
    x: str | None = None
    n: str | None = None
    e: str | None = None


class JwkSet(BaseModel):
    """The JWK Set; empty when tokens are signed with a shared secret (HS256) only."""

    keys: list[Jwk]


@router.get("/.well-known/jwks.json", response_model=JwkSet, response_model_exclude_none=True)
async def jwks(state: State, response: Response) -> JwkSet:
    """Public signing keys (current first, then previous ones still accepted), for verifiers."""
    response.headers["Cache-Control"] = "public, max-age=300"
    return JwkSet.model_validate(state.tokens.keys.jwks())
