"""`/admin/*`: login."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.deps import Auth
from app.api.responses import errors
from app.schemas import LoginRequest, TokenResponse

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post("/login", response_model=TokenResponse, responses=errors(401, 422, 429, 503))
async def login(body: LoginRequest, auth: Auth, response: Response) -> TokenResponse:
    """Exchange an admin's email and password for an access token."""
    response.headers["Cache-Control"] = "no-store"
    return await auth.login(body)
