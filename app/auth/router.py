"""`/admin/*`: login, logout (this token), logout-all (every token of this admin)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.auth.schemas import LoginRequest, TokenResponse
from app.deps import Auth, CurrentAdmin, Meta
from app.kit.errors import ErrorBody
from app.kit.responses import BODY_ERRORS, errors

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post(
    "/login",
    response_model=TokenResponse,
    responses={
        **errors(422, 429, 503),
        # Not an authentication challenge: no `WWW-Authenticate` on this 401.
        401: {
            "model": ErrorBody,
            "description": (
                "`invalid_credentials`: unknown email or wrong password (the same body and time)."
            ),
        },
        **BODY_ERRORS,
    },
)
async def login(body: LoginRequest, auth: Auth, response: Response, meta: Meta) -> TokenResponse:
    """Exchange an admin's email and password for an access token."""
    response.headers["Cache-Control"] = "no-store"
    return await auth.login(body, meta)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=errors(401, 503),
)
async def logout(caller: CurrentAdmin, auth: Auth, meta: Meta) -> Response:
    """Revoke the presented access token, on every replica."""
    await auth.logout(caller, meta)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/logout-all",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=errors(401, 503),
)
async def logout_all(caller: CurrentAdmin, auth: Auth, meta: Meta) -> Response:
    """Revoke every access token of the calling admin, on every replica."""
    await auth.logout_all(caller, meta)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
